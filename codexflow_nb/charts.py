"""Plotly charts of runs. Each takes a tasks frame (``analysis.tasks_frame``; an events frame is
converted) and returns a ``plotly.graph_objects.Figure`` to show, compose or save.

plotly is imported when a chart is drawn, never by ``import codexflow_nb``.
"""

from __future__ import annotations

import copy
import hashlib
import os
import shutil
import sys
import warnings
from collections.abc import Mapping
from html import escape
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

#: One colour per task status, the same in every chart.
STATUS_COLORS = {"completed": "#2ca02c", "failed": "#d62728", "timeout": "#ff7f0e",
                 "cancelled": "#7f7f7f", "skipped": "#c7c7c7", "rejected": "#9467bd",
                 "unfinished": "#000000"}
_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
            "#7f7f7f", "#bcbd22", "#17becf"]
#: The keyword arguments every chart takes, named and meant as in plotly express.
CHART_OPTIONS = ("title", "color", "color_discrete_map", "color_discrete_sequence", "template",
                 "height", "width")
#: Colours of the token bars of :func:`usage` (``color_discrete_map`` may name them too).
TOKEN_COLORS = {"tokens in": "#9ecae1", "tokens out": "#3182bd"}
#: A box, violin or line-wide band narrower than this share of its median is drawn as points.
FLAT_SPREAD = 0.01
_NONE = "(none)"
_CLEAR = "rgba(255,255,255,0)"


def _tasks(frame: pd.DataFrame) -> pd.DataFrame:
    from .analysis import tasks_frame

    return tasks_frame(frame) if "kind" in frame.columns else frame


def _empty(title: str, message: str, template: Any = None, height: int | None = None,
           width: int | None = None) -> go.Figure:
    import plotly.graph_objects as go

    fig = go.Figure(layout={"title": title})
    fig.add_annotation(text=message, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
    _size(fig, template, height, width)
    return fig


def _size(fig: go.Figure, template: Any, height: int | None, width: int | None) -> None:
    if template is not None:
        fig.update_layout(template=template)
    if height is not None:
        fig.update_layout(height=height)
    if width is not None:
        fig.update_layout(width=width)


def _finish(fig: go.Figure, title: str, template: Any, height: int | None, width: int | None,
            *, legend_title: str | None = None) -> go.Figure:
    """Title, template and size; the title at the top and the legend in a row under it, above
    the plot (so it covers no data and is not cut off in a narrow notebook column)."""
    _size(fig, template, height, width)
    tall = fig.layout.height or 450
    fig.update_layout(
        height=tall,
        title={"text": title, "x": 0, "xref": "paper", "xanchor": "left", "yref": "container",
               "y": 1 - 12 / tall, "yanchor": "top"},
        legend={"orientation": "h", "x": 0, "xanchor": "left", "xref": "paper",
                "yref": "container", "y": 1 - 44 / tall, "yanchor": "top",
                "title": {"text": legend_title or ""}, "traceorder": "normal"},
        margin={"t": 100, "r": 24})
    return fig


def _check_color(frame: pd.DataFrame, color: str | None, chart: str) -> None:
    if color is not None and color not in frame.columns:
        raise ValueError(f"{chart}(color={color!r}): not a column of the frame (e.g. 'alias', "
                         f"'agent', 'status', 'model', 'phase', or None)")


def _labels(values: pd.Series) -> pd.Series:
    """Values as strings for legends and colours (missing: ``(none)``)."""
    return values.astype(object).where(values.notna(), _NONE).astype(str)


def _split(frame: pd.DataFrame, column: str | None) -> list[tuple[str, pd.DataFrame]]:
    """``frame`` split by ``column``: categories in their order, other values as they appear."""
    import pandas as pd

    if column is None:
        return [("all tasks", frame)]
    keys = frame[column]
    labels = _labels(keys)
    if isinstance(keys.dtype, pd.CategoricalDtype):
        seen = set(labels)
        order = [str(c) for c in keys.cat.categories if str(c) in seen]
        order += [_NONE] if _NONE in seen and _NONE not in order else []
    else:
        order = list(dict.fromkeys(labels))
    return [(value, frame[labels == value]) for value in order]


def _colorway(template: Any) -> list[str]:
    import plotly.graph_objects as go
    import plotly.io as pio

    chosen = pio.templates.default if template is None else template
    try:
        tmpl = pio.templates[chosen] if isinstance(chosen, str) else go.layout.Template(chosen)
        return list(tmpl.layout.colorway or [])
    except (KeyError, ValueError, TypeError):
        return []


def _colors(values: list[str], column: str | None, color_discrete_map: Mapping[str, str] | None,
            color_discrete_sequence: list[str] | None, template: Any) -> dict[str, str]:
    """A colour per value, as plotly express picks them: ``color_discrete_map`` first (statuses
    have :data:`STATUS_COLORS`), then the sequence (default: the template's colorway)."""
    sequence = list(color_discrete_sequence or _colorway(template) or _PALETTE)
    fixed = {**(STATUS_COLORS if column == "status" else {}),
             **{str(k): v for k, v in (color_discrete_map or {}).items()}}
    out: dict[str, str] = {}
    for value in values:
        out[value] = fixed.get(value) or sequence[len(out) % len(sequence)]
    return out


def _time_unit(ms: float) -> tuple[float, str]:
    """The divisor and tick suffix for durations up to ``ms``: ms, s, min or h."""
    if ms != ms or ms < 2_000:  # NaN too
        return 1.0, " ms"
    if ms < 120_000:
        return 1_000.0, " s"
    if ms < 7_200_000:
        return 60_000.0, " min"
    return 3_600_000.0, " h"


def _origin(tasks: pd.DataFrame) -> Any:
    """When the first task was queued (or started): the zero of the time axes."""
    import pandas as pd

    found = [v for v in (tasks["queued"].min(), tasks["started"].min(), tasks["finished"].min())
             if pd.notna(v)]
    return min(found) if found else None


def _since(ts: pd.Series, origin: Any, divisor: float) -> pd.Series:
    return (ts - origin).dt.total_seconds() * (1000.0 / divisor)


def _time_axis_title(origin: Any) -> str:
    return f"time since {origin:%Y-%m-%d %H:%M:%S} UTC" if origin is not None else "time"


def _lanes(tasks: pd.DataFrame) -> list[str]:
    """A row label per task: ``alias #n``, where n is the lowest slot free at its start."""
    import pandas as pd

    labels = pd.Series("", index=tasks.index, dtype=object)
    order = "start_seq" if "start_seq" in tasks and tasks["start_seq"].notna().all() else "started"
    for alias, group in tasks.sort_values(order).groupby("alias", observed=True, sort=False):
        busy: list[Any] = []  # finish time per slot
        for idx, start, end in zip(group.index, group["started"], group["finished"], strict=True):
            slot = next((i for i, until in enumerate(busy) if until is not None and until <= start),
                        len(busy))
            if slot == len(busy):
                busy.append(None)
            busy[slot] = end if pd.notna(end) else None
            labels[idx] = f"{alias} #{slot + 1}"
    return labels.tolist()


def _lane_key(lane: str) -> tuple[str, int]:
    alias, _, slot = lane.rpartition(" #")
    if alias and slot.isdigit():
        return alias, int(slot)
    return lane.removesuffix(_NOT_STARTED), 1 << 30


_NOT_STARTED = " · not started"


def timeline(tasks: pd.DataFrame, title: str = "Tasks over time", *, color: str | None = "status",
             color_discrete_map: Mapping[str, str] | None = None,
             color_discrete_sequence: list[str] | None = None, template: Any = None,
             height: int | None = None, width: int | None = None) -> go.Figure:
    """Gantt of tasks: one row per alias slot (``alias #n``, in slot order), bars coloured by
    ``color`` (a column, default the status), on an axis of ms, s, min or h since the first task
    was queued, with the task text, times and attempts on hover. Tasks that never started are
    ``x`` marks at their end, in a row of their own per alias (``alias · not started``)."""
    import plotly.graph_objects as go

    tasks = _tasks(tasks)
    if tasks.empty:
        return _empty(title, "no tasks", template, height, width)
    _check_color(tasks, color, "timeline")
    origin = _origin(tasks)
    ran = tasks[tasks["started"].notna()].copy()
    end = ran["finished"].fillna(tasks["finished"].max())
    ran["lane"] = _lanes(ran.assign(finished=end))
    never = tasks[tasks["started"].isna() & tasks["finished"].notna()]
    last = max((v for v in (end.max(), never["finished"].max()) if v == v), default=origin)
    divisor, unit = _time_unit((last - origin).total_seconds() * 1000 if origin is not None else 0)
    groups = _split(ran, color)
    shown = [v for v, _ in groups] + ([] if color is None else list(_labels(never[color])))
    colors = _colors(list(dict.fromkeys(shown)), color, color_discrete_map,
                     color_discrete_sequence, template)
    fig = go.Figure()
    for value, part in groups:
        if part.empty:
            continue
        start = _since(part["started"], origin, divisor)
        dur = (end[part.index] - part["started"]).dt.total_seconds() * (1000.0 / divisor)
        fig.add_trace(go.Bar(
            name=value, orientation="h", y=part["lane"], x=dur, base=start, legendgroup=value,
            marker={"color": colors.get(value, _PALETTE[0]), "line": {"color": "white", "width": 1}},
            customdata=_hover(part),
            hovertemplate="<b>%{customdata[0]}</b><br>%{customdata[1]}<br>run %{customdata[2]} ms"
                          " · queued %{customdata[3]} ms · attempts %{customdata[4]}<extra>"
                          + escape(value) + "</extra>"))
    lanes = list(ran["lane"])
    if not never.empty:
        rows = [f"{a}{_NOT_STARTED}" for a in never["alias"].astype(str)]
        lanes += rows
        marks = ([colors.get(v, "#000") for v in _labels(never[color])] if color is not None
                 else "#000")
        fig.add_trace(go.Scatter(
            name="not started", mode="markers", x=_since(never["finished"], origin, divisor),
            y=rows, marker={"symbol": "x", "size": 9, "color": marks},
            customdata=_hover(never), hovertemplate="<b>%{customdata[0]}</b><br>%{customdata[1]}"
                                                    "<br>%{customdata[5]}<extra>not started</extra>"))
    order = sorted(set(lanes), key=_lane_key)
    lane_px = 28 if len(order) <= 20 else max(14, 560 // len(order))
    fig.update_xaxes(title=_time_axis_title(origin), ticksuffix=unit, rangemode="tozero",
                     showgrid=True, zeroline=False, hoverformat=",.1f" if divisor == 1 else ",.2f")
    fig.update_yaxes(title=None, categoryorder="array", categoryarray=order, autorange="reversed",
                     tickfont={"size": 12 if lane_px >= 20 else 10})
    fig.update_layout(barmode="overlay", bargap=0.15,
                      height=max(320, lane_px * len(order) + 170))
    return _finish(fig, title, template, height, width, legend_title=color or "")


def _hover(part: pd.DataFrame) -> list[list[Any]]:
    return [[f"{a}/{k}", str(t)[:120], _fmt(r), _fmt(q), a_n if a_n == a_n else "-", str(st)]
            for a, k, t, r, q, a_n, st in zip(
                part["alias"].astype(str), part["key"], part["task"], part["run_ms"],
                part["queued_ms"], part["attempts"].astype("float64"), part["status"], strict=True)]


def _fmt(v: Any) -> str:
    return "-" if v != v else f"{v:,.0f}"


def _count_ticks(top: int, limit: Any = None, most: int = 4) -> list[int]:
    """Ticks for a count axis up to ``top``: multiples of 1, 2, 5, 10, 20, 50, ... (``most``
    steps at most) and the limit itself, so the dashed line has its number on the axis."""
    step = 1
    while top / step > most:
        step = step * 5 // 2 if str(step).startswith("2") else step * 2
    ticks = set(range(0, int(top) + 1, step))
    if limit is not None and limit == limit:
        ticks = {t for t in ticks if abs(t - int(limit)) * 2 >= step} | {int(limit)}
    return sorted(ticks)


def concurrency(tasks: pd.DataFrame, title: str = "Running tasks per alias", *,
                color: str | None = "alias", color_discrete_map: Mapping[str, str] | None = None,
                color_discrete_sequence: list[str] | None = None, template: Any = None,
                height: int | None = None, width: int | None = None) -> go.Figure:
    """Running tasks over time, one panel per value of ``color`` (default: per alias; None: the
    whole run), as a filled step line; each alias's limit is a dark dashed line over it, so a
    slot pool that is full shows as the fill touching the dashes. A concurrency frame
    (``analysis.concurrency_frame``) works as well as a tasks frame."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from .analysis import concurrency_frame

    if "running" in tasks.columns:
        steps = tasks
        _check_color(steps, color, "concurrency")
        origin = steps["ts"].min() if len(steps) else None
    else:
        frame = _tasks(tasks)
        _check_color(frame, color, "concurrency")
        steps = concurrency_frame(frame, by=color)
        origin = _origin(frame) if len(frame) else None
    if steps.empty:
        return _empty(title, "no task started", template, height, width)
    # One point per distinct time (the state after all changes at that millisecond): a slot
    # handed from one task to the next in the same millisecond is not drawn as a dip.
    keys = ["run", *([color] if color else [])]
    steps = steps.drop_duplicates([*keys, "ts"], keep="last")
    divisor, unit = _time_unit((steps["ts"].max() - origin).total_seconds() * 1000)
    groups = _split(steps, color)
    colors = _colors([v for v, _ in groups], color, color_discrete_map, color_discrete_sequence,
                     template)
    several_runs = steps["run"].nunique() > 1
    n = len(groups)
    row_px = 140 if n <= 3 else 115 if n <= 6 else 90
    limits = {v: part["limit"].max() if color == "alias" and "limit" in part else None
              for v, part in groups}
    titles = [f"{v} · limit {int(lim)}" if lim is not None and lim == lim else v
              for v, lim in ((v, limits[v]) for v, _ in groups)]
    fig = make_subplots(rows=n, cols=1, shared_xaxes=True, subplot_titles=titles,
                        vertical_spacing=min(0.9 / max(n - 1, 1), 40 / (n * row_px)))
    limit_shown = False
    for row, (value, part) in enumerate(groups, start=1):
        line_color = colors[value]
        peak = 0
        for run, run_part in part.groupby(part["run"].astype(str), sort=False):
            name = f"{value} ({run})" if several_runs else value
            x = _since(run_part["ts"], origin, divisor)
            peak = max(peak, int(run_part["running"].max()))
            fig.add_trace(go.Scatter(
                name=name, x=x, y=run_part["running"], mode="lines", legendgroup=value,
                showlegend=False, fill="tozeroy", fillcolor=_alpha(line_color, 0.3),
                line={"shape": "hv", "color": line_color, "width": 1.5},
                hovertemplate=f"{escape(name)}: %{{y}} running<extra></extra>"), row=row, col=1)
        limit = limits[value]
        top = max(peak, int(limit) if limit is not None and limit == limit else 0, 1)
        if limit is not None and limit == limit:
            fig.add_trace(go.Scatter(
                name="limit", x=[0, _since(part["ts"], origin, divisor).max()],
                y=[int(limit), int(limit)], mode="lines", legendgroup="limit",
                showlegend=not limit_shown, line={"dash": "dash", "color": "#212121", "width": 2},
                hovertemplate=f"{escape(value)} limit {int(limit)}<extra></extra>"), row=row, col=1)
            limit_shown = True
        fig.update_yaxes(range=[0, top * 1.15],
                         tickvals=_count_ticks(top, limit, 4 if row_px >= 110 else 2),
                         tickformat="d", row=row, col=1)
    for note in fig.layout.annotations:  # subplot titles: left-aligned, small
        note.update(x=0, xanchor="left", font={"size": 12})
    fig.update_xaxes(ticksuffix=unit, rangemode="tozero", hoverformat=",.1f")
    fig.update_xaxes(title=_time_axis_title(origin), row=n, col=1)
    fig.update_layout(height=max(300, row_px * n + 190), hovermode="x unified",
                      showlegend=limit_shown)
    if n == 1:
        fig.update_yaxes(title="running tasks")
    return _finish(fig, title, template, height, width)


def _alpha(color: str, alpha: float) -> str:
    """``#rrggbb`` (or ``rgb(...)``) with an alpha, for fills."""
    if color.startswith("#") and len(color) == 7:
        r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
        return f"rgba({r},{g},{b},{alpha})"
    if color.startswith("rgb(") and color.endswith(")"):
        return f"rgba({color[4:-1]},{alpha})"
    return color


def latency(tasks: pd.DataFrame, kind: str = "box", title: str = "Task time per alias", *,
            color: str | None = "alias", color_discrete_map: Mapping[str, str] | None = None,
            color_discrete_sequence: list[str] | None = None, template: Any = None,
            height: int | None = None, width: int | None = None) -> go.Figure:
    """Distribution of ``run_ms`` of completed tasks per alias, in ms, s, min or h. ``kind``:
    ``box`` (with every task as a point up to 200 per group), ``violin`` or ``strip`` (points
    only). A group whose times are all equal (within 1 %) is drawn as points whatever the kind,
    since its box would be a flat line. ``color`` (another column) splits each alias's times into
    side-by-side groups, as plotly express does."""
    import plotly.graph_objects as go

    if kind not in ("box", "violin", "strip"):
        raise ValueError(f"kind must be 'box', 'violin' or 'strip', not {kind!r}")
    tasks = _tasks(tasks)
    _check_color(tasks, color, "latency")
    done = tasks[(tasks["status"] == "completed") & tasks["run_ms"].notna()]
    if done.empty:
        return _empty(title, "no completed task", template, height, width)
    divisor, unit = _time_unit(float(done["run_ms"].max()))
    groups = _split(done, color)
    colors = _colors([v for v, _ in groups], color, color_discrete_map, color_discrete_sequence,
                     template)
    fig = go.Figure()
    for value, part in groups:
        y = part["run_ms"] / divisor
        common = {"name": value, "x": part["alias"].astype(str), "y": y, "text": part["key"],
                  "marker": {"color": colors[value], "size": 5}, "legendgroup": value,
                  "hovertemplate": "%{x} · %{text}: %{y}" + unit + "<extra></extra>"}
        points = "all" if len(part) <= 200 else "outliers"
        if kind == "strip" or _flat(part):
            fig.add_trace(go.Box(boxpoints="all", jitter=0.5, pointpos=0, hoveron="points",
                                 fillcolor=_CLEAR, line={"color": _CLEAR}, **common))
        elif kind == "box":
            fig.add_trace(go.Box(boxpoints=points, jitter=0.4, pointpos=0,
                                 marker_opacity=0.6, line={"color": colors[value]}, **common))
        else:
            fig.add_trace(go.Violin(box_visible=True, points=points, jitter=0.4, pointpos=0,
                                    line={"color": colors[value]}, **common))
    grouped = color not in (None, "alias")
    fig.update_layout(boxmode="group" if grouped else "overlay",
                      violinmode="group" if grouped else "overlay", showlegend=grouped)
    fig.update_yaxes(title="task time (start to end, retries included)", ticksuffix=unit,
                     hoverformat=",.1f" if divisor == 1 else ",.2f")
    fig.update_xaxes(title=None, categoryorder="array",
                     categoryarray=list(dict.fromkeys(done["alias"].astype(str))))
    return _finish(fig, title, template, height, width, legend_title=color if grouped else None)


def _flat(part: pd.DataFrame) -> bool:
    """True when every alias's times in ``part`` are equal (within :data:`FLAT_SPREAD`)."""
    for _, ms in part.groupby(part["alias"].astype(str))["run_ms"]:
        low, high, mid = ms.min(), ms.max(), abs(ms.median())
        if high - low > FLAT_SPREAD * mid:
            return False
    return True


def _money_format(top: float) -> str:
    """A d3 tick format for USD amounts up to ``top``: ``$`` and enough decimals, no more."""
    import math

    if top != top or top <= 0:  # NaN too
        return "$,.2f"
    decimals = max(2, 1 - math.floor(math.log10(top)) + 1)
    return f"$,.{min(decimals, 8)}~f"


def usage(tasks: pd.DataFrame, title: str = "Tokens and cost per alias", *,
          color: str | None = "alias", color_discrete_map: Mapping[str, str] | None = None,
          color_discrete_sequence: list[str] | None = None, template: Any = None,
          height: int | None = None, width: int | None = None) -> go.Figure:
    """Per value of ``color`` (default: per alias): tokens in and out (stacked bars, left) and
    cost in USD (bars coloured by ``color``, right, ``$`` ticks and, up to 5 bars, each bar's
    amount; a group with tokens but no cost, an unknown model, reads ``no price``)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    tasks = _tasks(tasks)
    if tasks.empty:
        return _empty(title, "no tasks", template, height, width)
    _check_color(tasks, color, "usage")
    groups = _split(tasks, color)
    names = [v for v, _ in groups]
    tokens_in = [_float(p["tokens_in"].sum(min_count=1)) for _, p in groups]
    tokens_out = [_float(p["tokens_out"].sum(min_count=1)) for _, p in groups]
    cost = [_float(p["cost"].sum(min_count=1)) for _, p in groups]
    colors = _colors(names, color, color_discrete_map, color_discrete_sequence, template)
    own = {**TOKEN_COLORS, **{k: v for k, v in (color_discrete_map or {}).items()
                              if k in TOKEN_COLORS}}
    fig = make_subplots(rows=1, cols=2, column_widths=[0.6, 0.4], horizontal_spacing=0.16)
    fig.add_trace(go.Bar(name="tokens in", x=names, y=tokens_in, marker_color=own["tokens in"],
                         hovertemplate="%{x}: %{y:,.0f} tokens in<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Bar(name="tokens out", x=names, y=tokens_out, marker_color=own["tokens out"],
                         hovertemplate="%{x}: %{y:,.0f} tokens out<extra></extra>"), row=1, col=1)
    priced = [c for c in cost if c == c]
    money = _money_format(max(priced, default=0.0))
    fig.add_trace(go.Bar(
        name="cost (USD)", x=names, y=cost, marker_color=[colors[n] for n in names],
        showlegend=False, cliponaxis=False, textposition="outside",
        text=[_usd(c, money) if c == c else "" for c in cost],
        texttemplate="%{text}" if len(names) <= 5 else "",  # more would shrink to nothing
        textfont={"size": 11}, hovertemplate="%{x}: %{text}<extra></extra>"), row=1, col=2)
    for i, c in enumerate(cost):  # tokens but no cost: an unknown model, said where the bar is
        if c != c and tokens_in[i] == tokens_in[i]:
            fig.add_annotation(x=names[i], y=0, text="no price", showarrow=False, yanchor="bottom",
                               xref="x2", yref="y2", font={"size": 11, "color": "#616161"})
    fig.update_layout(barmode="stack")
    fig.update_yaxes(title="tokens", tickformat="~s", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title="cost (USD)", tickformat=money, row=1, col=2,
                     range=[0, max(priced) * 1.2 if priced else 1])
    return _finish(fig, title, template, height, width)


def _float(value: Any) -> float:
    """A sum as a float (NaN when missing: pandas' NA included)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _usd(value: float, fmt: str) -> str:
    """``value`` as ``fmt`` (``$,.4~f``) would tick it."""
    decimals = int(fmt.split(".")[1].split("~")[0].rstrip("f"))
    text = f"{value:,.{decimals}f}"
    if "~" in fmt and "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"${text}"


def use_static_fallback(strict: bool = False) -> bool:
    """Make every figure shown from now on readable where plotly's JavaScript does not run.

    In a notebook kernel each figure's output carries, next to plotly's JSON (JupyterLab,
    VS Code), a ``text/html`` rendering (the interactive chart for nbconvert and nbviewer, with
    plotly.js included once per notebook, so it also works offline) holding a static copy that
    shows when no script runs (GitHub), and a PNG (``image/png``) when kaleido and a Chromium
    are installed. Without them the figure's static copy is a sketch or a line saying why there
    is no image; nothing is printed into the cell, so a notebook's outputs compare equal with
    and without kaleido (``nbval``). Returns whether PNGs are made; ``strict=True`` raises
    ConfigError when they cannot be.

    Outside a kernel (scripts, a terminal IPython) it sets ``plotly_mimetype+png`` when kaleido
    works and otherwise prints why to stderr and changes nothing.
    """
    import plotly.io as pio

    problem = static_images_problem()
    message = f"static chart images are off: {problem}; charts stay interactive only"
    if problem is not None and strict:
        from .errors import ConfigError

        raise ConfigError(message)
    if problem is None:
        import kaleido

        # One long-lived Chromium for every image: ~0.3 s per chart instead of ~5 s
        kaleido.start_sync_server(silence_warnings=True)
        warnings.filterwarnings("ignore", message="The kopts argument is ignored",
                                category=UserWarning)
    _STATIC.update(png=problem is None, problem=problem, plotlyjs_sent=False, figures=0)
    if _in_kernel():
        pio.renderers[RENDERER] = _notebook_renderer()
        pio.renderers.default = f"plotly_mimetype+{RENDERER}"
        return problem is None
    if problem is not None:
        print(message, file=sys.stderr)
        return False
    pio.renderers.default = "plotly_mimetype+png"
    return True


def static_images_problem() -> str | None:
    """Why no PNG copies of figures can be made here (None: kaleido and a Chromium are there)."""
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return "kaleido is not installed (pip install kaleido)"
    browser = os.environ.get("BROWSER_PATH") or next(
        (p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome"))
         if p), None)
    if not browser:
        return "no Chromium found (apt-get install chromium, or set BROWSER_PATH)"
    return None


# -- static copies of figures ----------------------------------------------------------------
#: The plotly renderer :func:`use_static_fallback` registers in a notebook kernel.
RENDERER = "codexflow"
_STATIC: dict[str, Any] = {"png": False, "problem": "use_static_fallback() was not called",
                           "plotlyjs_sent": False, "figures": 0}
#: Marks a static copy inside a figure's HTML (the same marker as widgets' static renderings,
#: see ``codexflow_nb.widgets.render.static_block``).
_STATIC_START = '<div class="codexflow-static">'
_STATIC_END = "</div><!--/codexflow-static-->"


def _in_kernel() -> bool:
    """True when running in a Jupyter kernel (where figure outputs are stored in a notebook)."""
    shell = sys.modules.get("IPython")
    shell = shell.get_ipython() if shell is not None else None  # type: ignore[attr-defined]
    return getattr(shell, "kernel", None) is not None


def static_png(fig: Any) -> bytes | None:
    """A PNG of ``fig`` (a Figure or its dict) when :func:`use_static_fallback` found kaleido,
    else None (also when kaleido fails on this figure)."""
    if not _STATIC["png"]:
        return None
    import plotly.io as pio

    return _png_with_retry(pio, _fig_dict(fig))  # a copy: to_image reorders a dict's keys


def static_figure_html(fig: Any) -> str:
    """A static copy of a figure as HTML: its PNG (:func:`static_png`), else an SVG sketch
    (:func:`figure_svg`, scatter traces), else a line naming the chart and why there is none."""
    fig = _fig_dict(fig)
    png = static_png(fig)
    title = _title(fig)
    if png is not None:
        import base64

        return _img(base64.b64encode(png).decode("ascii"), title)
    svg = figure_svg(fig)
    if svg is not None:
        return svg
    return (f"<p style='border:1px dashed #9e9e9e;padding:6px;color:#616161'>Chart "
            f"<b>{escape(title or 'without a title')}</b>: the interactive chart needs JavaScript "
            f"(plotly.js); no static image was made ({escape(str(_STATIC['problem']))}).</p>")


def chart_html(fig: Any, static: str | None = None) -> str:
    """A figure as ``text/html``: its static copy (shown where no script runs) and the
    interactive chart, which replaces the copy where plotly.js runs (nbconvert, nbviewer). The
    first chart of a session also carries plotly.js itself, so the page works offline.
    ``static`` is the copy to show (default: :func:`static_figure_html`)."""
    fig = _fig_dict(fig)
    n = _STATIC["figures"] = _STATIC["figures"] + 1
    script = ""
    if not _STATIC["plotlyjs_sent"]:
        script = plotlyjs_html(True)
        _STATIC["plotlyjs_sent"] = True
    static = static_figure_html(fig) if static is None else static
    return _chart_block(fig, n, static, script)


def _chart_block(fig: dict[str, Any], n: int, static: str, script: str = "") -> str:
    """The static copy and the interactive chart of one figure (see :func:`chart_html`)."""
    import json as _json

    from plotly.io.json import to_json_plotly

    data = to_json_plotly(fig.get("data", [])).replace("</", "<\\/")
    layout = to_json_plotly(fig.get("layout", {})).replace("</", "<\\/")
    config = _json.dumps({"responsive": True, "displaylogo": False, **(fig.get("config") or {})})
    digest = hashlib.sha1((data + layout).encode()).hexdigest()[:8]
    div_id = f"codexflow-chart-{n}-{digest}"
    height = (fig.get("layout") or {}).get("height") or 450
    return (f"<div class='codexflow-chart'>{script}{_STATIC_START}{static}"
            f"{_STATIC_END}<div id='{div_id}' class='plotly-graph-div' "
            f"style='display:none;height:{height}px;width:100%'></div>"
            "<script type='text/javascript'>(function () {\n"
            f"  var gd = document.getElementById('{div_id}');\n"
            "  if (!gd || !window.Plotly) { return; }\n"
            "  var copy = gd.parentNode.querySelector('.codexflow-static');\n"
            "  if (copy) { copy.style.display = 'none'; }\n"
            "  gd.style.display = 'block';\n"
            f"  window.Plotly.newPlot(gd, {data}, {layout}, {config});\n"
            "})();</script></div>")


#: Where :func:`figures_html` may take plotly.js from.
PLOTLYJS_MODES = ("cdn", "inline", "directory")


def plotlyjs_html(mode: str | bool = "cdn") -> str:
    """The one ``<script>`` a page needs for its charts: ``cdn`` (a reference to plotly.js on
    cdn.plot.ly, the version plotly bundles, with its integrity hash; a few hundred bytes),
    ``inline`` or True (plotly.js itself, about 4.8 MB, works offline), ``directory``
    (``plotly.min.js`` beside the page), or a URL or path ending in ``.js``."""
    from plotly.offline import get_plotlyjs

    config = ("<script type='text/javascript'>window.PlotlyConfig = {MathJaxConfig: 'local'};"
              "</script>")
    if mode is True or mode == "inline":
        return (f"{config}<script type='text/javascript' charset='utf-8'>{get_plotlyjs()}"
                "</script>")
    if mode == "cdn":
        import base64

        from plotly.io._utils import plotly_cdn_url

        digest = base64.b64encode(hashlib.sha256(get_plotlyjs().encode()).digest()).decode()
        return (f"{config}<script charset='utf-8' src='{escape(plotly_cdn_url())}' "
                f"integrity='sha256-{digest}' crossorigin='anonymous'></script>")
    if mode == "directory":
        mode = "plotly.min.js"
    if isinstance(mode, str) and mode.endswith(".js"):
        return f"{config}<script charset='utf-8' src='{escape(mode)}'></script>"
    raise ValueError(f"plotly.js from {mode!r}: use one of {', '.join(PLOTLYJS_MODES)} "
                     "or a URL or path ending in .js")


def figures_html(figures: list[Any], *, plotlyjs: str | bool = "cdn",
                 static_images: bool = True) -> str:
    """Figures for a standalone HTML page (``codex-flow report --html``), rendered as in a
    stored notebook (:func:`chart_html`): each is its static copy, replaced by the interactive
    chart where plotly.js loads. plotly.js is referenced once, before the first chart
    (:func:`plotlyjs_html`). With ``static_images`` and kaleido + a Chromium, the static copies
    are PNGs, so the charts show offline and where scripts are blocked too; otherwise a sketch
    or a line saying why there is none."""
    figs = [_fig_dict(f) for f in figures]
    head = plotlyjs_html(plotlyjs)
    problem = static_images_problem() if static_images else "static images were not asked for"
    pngs: list[bytes | None] = [None] * len(figs)
    if problem is None:
        pngs = _pngs(figs)
    blocks = []
    for i, (fig, png) in enumerate(zip(figs, pngs, strict=True), start=1):
        if png is not None:
            import base64

            static = _img(base64.b64encode(png).decode("ascii"), _title(fig))
        else:
            static = figure_svg(fig) or (
                f"<p style='border:1px dashed #9e9e9e;padding:6px;color:#616161'>Chart "
                f"<b>{escape(_title(fig) or 'without a title')}</b>: the interactive chart needs "
                f"plotly.js, which did not load; no static image was made "
                f"({escape(str(problem or 'kaleido failed on this chart'))}).</p>")
        blocks.append(_chart_block(fig, i, static))
    return head + "\n" + "\n".join(blocks)


def _pngs(figs: list[dict[str, Any]]) -> list[bytes | None]:
    """PNGs of ``figs`` with one Chromium (kaleido's server, started here unless
    :func:`use_static_fallback` did); None for a figure kaleido fails on."""
    import kaleido
    import plotly.io as pio

    started = not _STATIC["png"]
    if started:
        kaleido.start_sync_server(silence_warnings=True)
    out: list[bytes | None] = []
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The kopts argument is ignored",
                                    category=UserWarning)
            for fig in figs:
                out.append(_png_with_retry(pio, fig))
    finally:
        if started:
            kaleido.stop_sync_server(silence_warnings=True)
    return out


def _png_with_retry(pio: Any, fig: dict[str, Any]) -> bytes | None:
    """A PNG of ``fig``, asking kaleido twice: its first render after the server starts can
    time out on a loaded machine (seen in CI with three test workers on two cores)."""
    for _ in range(2):
        try:
            return bytes(pio.to_image(copy.deepcopy(fig), format="png"))
        except Exception:  # noqa: BLE001 - the interactive chart is still there
            continue
    return None


def _img(b64: str, title: str) -> str:
    return f"<img style='max-width:100%' alt='{escape(title)}' src='data:image/png;base64,{b64}'>"


def _fig_dict(fig: Any) -> dict[str, Any]:
    if hasattr(fig, "to_plotly_json"):
        fig = fig.to_plotly_json()
    return dict(fig or {})


def _title(fig: Mapping[str, Any]) -> str:
    title = (fig.get("layout") or {}).get("title")
    return str((title.get("text") if isinstance(title, Mapping) else title) or "")


def _notebook_renderer() -> Any:
    """A plotly renderer: ``text/html`` from :func:`chart_html` and, when kaleido works, the
    figure's PNG (``image/png``). Registered by :func:`use_static_fallback` in a kernel."""
    from plotly.io.base_renderers import MimetypeRenderer

    class NotebookRenderer(MimetypeRenderer):  # type: ignore[misc]
        def to_mimebundle(self, fig_dict: dict[str, Any]) -> dict[str, Any]:
            import base64

            png = static_png(fig_dict)
            if png is None:
                return {"text/html": chart_html(fig_dict)}
            b64 = base64.b64encode(png).decode("ascii")
            return {"text/html": chart_html(fig_dict, _img(b64, _title(fig_dict))),
                    "image/png": b64}

    return NotebookRenderer()


# -- an SVG sketch of simple figures (no kaleido needed) -------------------------------------
_SKETCH_TYPES = {"scatter", "scattergl"}


def figure_svg(fig: Any) -> str | None:
    """A plain SVG drawing of a figure made of scatter traces (markers, text, lines), rectangle
    and line shapes and annotations (arrows too): the plan graph and similar diagrams. None
    for figures with other traces (bars, boxes, ...), which need kaleido for a static copy."""
    fig = _fig_dict(fig)
    traces = [dict(t) for t in fig.get("data") or []]
    if any(t.get("type", "scatter") not in _SKETCH_TYPES for t in traces):
        return None
    layout = dict(fig.get("layout") or {})
    return _Sketch(traces, layout).svg()


def _values(v: Any) -> list[Any]:
    """A plotly array (list, scalar or ``{"dtype", "bdata"}``) as a list."""
    if v is None:
        return []
    if isinstance(v, Mapping) and "bdata" in v:
        import array
        import base64

        codes = {"f8": "d", "f4": "f", "i1": "b", "u1": "B", "i2": "h", "u2": "H", "i4": "i",
                 "u4": "I", "i8": "q", "u8": "Q"}
        arr = array.array(codes.get(str(v.get("dtype")), "d"))
        arr.frombytes(base64.b64decode(v["bdata"]))
        return list(arr)
    if isinstance(v, (list, tuple)):
        return list(v)
    return [v]


class _Sketch:
    MARGIN = {"l": 80, "r": 80, "t": 100, "b": 80}

    def __init__(self, traces: list[dict[str, Any]], layout: dict[str, Any]) -> None:
        self.traces, self.layout = traces, layout
        self.width = float(layout.get("width") or 700)
        self.height = float(layout.get("height") or 450)
        margin = {**self.MARGIN, **(layout.get("margin") or {})}
        names = [str(t.get("name")) for t in traces if t.get("name") and t.get("showlegend", True)]
        self.legend = names if layout.get("showlegend", len(traces) > 1) else []
        legend_w = 12 + 7 * max((len(n) for n in self.legend), default=0) if self.legend else 0
        self.left, self.top = float(margin["l"]), float(margin["t"])
        self.pw = max(40.0, self.width - self.left - float(margin["r"]) - legend_w)
        self.ph = max(40.0, self.height - self.top - float(margin["b"]))
        self.cats: dict[str, dict[str, int]] = {"x": {}, "y": {}}
        self.xr = self._range("x")
        self.yr = self._range("y")

    def _num(self, axis: str, v: Any) -> float | None:
        if v is None or isinstance(v, bool):
            return None
        if isinstance(v, (int, float)):
            return float(v) if v == v else None
        cats = self.cats[axis]
        return float(cats.setdefault(str(v), len(cats)))

    def _range(self, axis: str) -> tuple[float, float]:
        spec = self.layout.get(f"{axis}axis") or {}
        found = [self._num(axis, v) for t in self.traces for v in _values(t.get(axis))]
        for a in self.layout.get("annotations") or []:
            if a.get(f"{axis}ref", axis) == axis:
                found.append(self._num(axis, a.get(axis)))
            if a.get(f"a{axis}ref") == axis:
                found.append(self._num(axis, a.get(f"a{axis}")))
        values = [v for v in found if v is not None]
        rng = spec.get("range")
        if isinstance(rng, (list, tuple)) and len(rng) == 2 and all(
                isinstance(v, (int, float)) for v in rng):
            low, high = float(rng[0]), float(rng[1])
        elif values:
            low, high = min(values), max(values)
            pad = (high - low) * 0.15 or 0.5
            low, high = low - pad, high + pad
        else:
            low, high = 0.0, 1.0
        if spec.get("autorange") == "reversed":
            low, high = high, low
        return low, high

    def px(self, x: Any, ref: str = "x") -> float | None:
        if ref in ("paper", "x domain"):
            return self.left + float(x) * self.pw if isinstance(x, (int, float)) else None
        v = self._num("x", x)
        low, high = self.xr
        return None if v is None else self.left + (v - low) / ((high - low) or 1) * self.pw

    def py(self, y: Any, ref: str = "y") -> float | None:
        if ref in ("paper", "y domain"):
            return self.top + (1 - float(y)) * self.ph if isinstance(y, (int, float)) else None
        v = self._num("y", y)
        low, high = self.yr
        return None if v is None else self.top + self.ph - (v - low) / ((high - low) or 1) * self.ph

    def svg(self) -> str:
        parts = [self._shape(s) for s in self.layout.get("shapes") or []
                 if s.get("layer") == "below"]
        parts += self._axes()
        parts += [self._arrow(a) for a in self.layout.get("annotations") or [] if a.get("showarrow")]
        for i, trace in enumerate(self.traces):
            parts += self._trace(trace, _PALETTE[i % len(_PALETTE)])
        parts += [self._shape(s) for s in self.layout.get("shapes") or []
                  if s.get("layer") != "below"]
        parts += [self._note(a) for a in self.layout.get("annotations") or []
                  if not a.get("showarrow") and a.get("text")]
        parts += self._legend()
        title = _title({"layout": self.layout})
        if title:
            parts.append(f"<text x='{self.left:.0f}' y='{max(18.0, self.top / 2):.0f}' "
                         f"font-size='16'>{escape(_strip_tags(title))}</text>")
        return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{self.width:.0f}' "
                f"height='{self.height:.0f}' viewBox='0 0 {self.width:.0f} {self.height:.0f}' "
                "style='max-width:100%;height:auto;background:#fff;font-family:sans-serif' "
                "font-size='12'><defs><marker id='codexflow-arrow' viewBox='0 0 10 10' refX='9' "
                "refY='5' markerWidth='7' markerHeight='7' orient='auto-start-reverse'>"
                "<path d='M0,0 L10,5 L0,10 z' fill='#9e9e9e'/></marker></defs>"
                + "".join(p for p in parts if p) + "</svg>")

    def _axes(self) -> list[str]:
        out = []
        for axis in ("x", "y"):
            spec = self.layout.get(f"{axis}axis") or {}
            if spec.get("visible") is False:
                continue
            x0, y1 = self.left, self.top + self.ph
            if axis == "x":
                out.append(f"<line x1='{x0:.1f}' y1='{y1:.1f}' x2='{x0 + self.pw:.1f}' "
                           f"y2='{y1:.1f}' stroke='#bdbdbd'/>")
            else:
                out.append(f"<line x1='{x0:.1f}' y1='{self.top:.1f}' x2='{x0:.1f}' y2='{y1:.1f}' "
                           "stroke='#bdbdbd'/>")
            title = spec.get("title")
            text = title.get("text") if isinstance(title, Mapping) else title
            if text:
                if axis == "x":
                    out.append(f"<text x='{x0 + self.pw / 2:.1f}' y='{y1 + 30:.1f}' "
                               f"text-anchor='middle'>{escape(_strip_tags(str(text)))}</text>")
                else:
                    out.append(f"<text transform='translate({x0 - 30:.1f},{self.top + self.ph / 2:.1f}) "
                               f"rotate(-90)' text-anchor='middle'>{escape(_strip_tags(str(text)))}</text>")
        return out

    def _shape(self, s: Mapping[str, Any]) -> str:
        kind = s.get("type", "rect")
        x0, x1 = self.px(s.get("x0"), s.get("xref", "x")), self.px(s.get("x1"), s.get("xref", "x"))
        y0, y1 = self.py(s.get("y0"), s.get("yref", "y")), self.py(s.get("y1"), s.get("yref", "y"))
        if None in (x0, x1, y0, y1):
            return ""
        line = s.get("line") or {}
        stroke = (f"stroke='{escape(str(line.get('color') or '#444'))}' "
                  f"stroke-width='{line.get('width', 2)}'") if line.get("width", 2) else "stroke='none'"
        opacity = f" opacity='{s['opacity']}'" if s.get("opacity") is not None else ""
        if kind == "line":
            return f"<line x1='{x0:.1f}' y1='{y0:.1f}' x2='{x1:.1f}' y2='{y1:.1f}' {stroke}{opacity}/>"
        if kind != "rect":
            return ""
        fill = escape(str(s.get("fillcolor") or "none"))
        return (f"<rect x='{min(x0, x1):.1f}' y='{min(y0, y1):.1f}' width='{abs(x1 - x0):.1f}' "
                f"height='{abs(y1 - y0):.1f}' fill='{fill}' {stroke}{opacity}/>")

    def _arrow(self, a: Mapping[str, Any]) -> str:
        x, y = self.px(a.get("x"), a.get("xref", "x")), self.py(a.get("y"), a.get("yref", "y"))
        if x is None or y is None:
            return ""
        if a.get("axref", "pixel") == "pixel":
            ax, ay = x + float(a.get("ax", -10)), y + float(a.get("ay", -30))
        else:
            ax, ay = self.px(a.get("ax"), a.get("axref")), self.py(a.get("ay"), a.get("ayref"))
            if ax is None or ay is None:
                return ""
        length = ((x - ax) ** 2 + (y - ay) ** 2) ** 0.5
        if length < 1:
            return ""
        end, start = float(a.get("standoff", 0)), float(a.get("startstandoff", 0))
        if end + start >= length:
            return ""
        ux, uy = (x - ax) / length, (y - ay) / length
        color = escape(str(a.get("arrowcolor") or "#444"))
        return (f"<line x1='{ax + ux * start:.1f}' y1='{ay + uy * start:.1f}' "
                f"x2='{x - ux * end:.1f}' y2='{y - uy * end:.1f}' stroke='{color}' "
                f"stroke-width='{a.get('arrowwidth', 1)}' marker-end='url(#codexflow-arrow)'/>")

    def _note(self, a: Mapping[str, Any]) -> str:
        x, y = self.px(a.get("x"), a.get("xref", "x")), self.py(a.get("y"), a.get("yref", "y"))
        if x is None or y is None:
            return ""
        anchor = {"left": "start", "right": "end"}.get(str(a.get("xanchor")), "middle")
        dy = {"top": 14, "bottom": -4}.get(str(a.get("yanchor")), 4)
        return (f"<text x='{x:.1f}' y='{y + dy:.1f}' text-anchor='{anchor}' fill='#424242'>"
                f"{escape(_strip_tags(str(a.get('text'))))}</text>")

    def _trace(self, t: Mapping[str, Any], default: str) -> list[str]:
        xs, ys = _values(t.get("x")), _values(t.get("y"))
        if not ys and xs:
            ys = list(range(len(xs)))
        if not xs and ys:
            xs = list(range(len(ys)))
        pts = [(self.px(x), self.py(y)) for x, y in zip(xs, ys, strict=False)]
        mode = str(t.get("mode") or ("lines+markers" if len(pts) < 20 else "lines"))
        marker, line = dict(t.get("marker") or {}), dict(t.get("line") or {})
        out = []
        if "lines" in mode:
            color = escape(str(line.get("color") or default))
            dash = " stroke-dasharray='6,4'" if line.get("dash") not in (None, "solid") else ""
            segment: list[str] = []
            segments = [segment]
            last: tuple[float, float] | None = None
            for px, py in pts:
                if px is None or py is None:
                    segment = []
                    segments.append(segment)
                    last = None
                    continue
                if line.get("shape") == "hv" and last is not None:
                    segment.append(f"{px:.1f},{last[1]:.1f}")
                segment.append(f"{px:.1f},{py:.1f}")
                last = (px, py)
            out += [f"<polyline points='{' '.join(s)}' fill='none' stroke='{color}' "
                    f"stroke-width='{line.get('width', 2)}'{dash}/>" for s in segments if len(s) > 1]
        fills = _values(marker.get("color")) or [default]
        if "markers" in mode:
            edge = dict(marker.get("line") or {})
            radius = float(_values(marker.get("size"))[0] if marker.get("size") is not None else 6) / 2
            for i, (px, py) in enumerate(pts):
                if px is None or py is None:
                    continue
                fill = escape(str(fills[i % len(fills)]))
                stroke = (f" stroke='{escape(str(edge.get('color')))}' stroke-width='{edge.get('width', 1)}'"
                          if edge.get("color") else "")
                out.append(f"<circle cx='{px:.1f}' cy='{py:.1f}' r='{radius:.1f}' fill='{fill}'{stroke}/>")
        if "text" in mode:
            texts = _values(t.get("text"))
            where = str(t.get("textposition") or "middle center")
            dy = radius + 12 if "bottom" in where else -radius - 4 if "top" in where else 4
            anchor = "start" if "right" in where else "end" if "left" in where else "middle"
            for i, (px, py) in enumerate(pts):
                if px is None or py is None or not texts:
                    continue
                out.append(f"<text x='{px:.1f}' y='{py + dy:.1f}' text-anchor='{anchor}'>"
                           f"{escape(_strip_tags(str(texts[i % len(texts)])))}</text>")
        return out

    def _legend(self) -> list[str]:
        out = []
        x = self.left + self.pw + 12
        for i, name in enumerate(self.legend):
            trace = next(t for t in self.traces if str(t.get("name")) == name)
            marker = trace.get("marker") or {}
            fill = marker.get("color")
            colors = ([fill] if isinstance(fill, str) else
                      _values((marker.get("line") or {}).get("color")) or _values(fill))
            color = (colors[0] if colors else (trace.get("line") or {}).get("color")
                     or _PALETTE[i % len(_PALETTE)])
            y = self.top + 16 * i
            out.append(f"<circle cx='{x + 5:.1f}' cy='{y:.1f}' r='5' fill='{escape(str(color))}'/>"
                       f"<text x='{x + 14:.1f}' y='{y + 4:.1f}'>{escape(name)}</text>")
        return out


def _strip_tags(text: str) -> str:
    import re

    return re.sub(r"<[^>]+>", " ", text).strip()

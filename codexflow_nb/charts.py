"""Plotly charts of runs. Each takes a tasks frame (``analysis.tasks_frame``; an events frame is
converted) and returns a ``plotly.graph_objects.Figure`` to show, compose or save.

plotly is imported when a chart is drawn, never by ``import codexflow_nb``.
"""

from __future__ import annotations

import os
import shutil
import sys
import warnings
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


def _tasks(frame: pd.DataFrame) -> pd.DataFrame:
    from .analysis import tasks_frame

    return tasks_frame(frame) if "kind" in frame.columns else frame


def _empty(title: str, message: str) -> go.Figure:
    import plotly.graph_objects as go

    fig = go.Figure(layout={"title": title})
    fig.add_annotation(text=message, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
    return fig


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


def timeline(tasks: pd.DataFrame, title: str = "Tasks over time") -> go.Figure:
    """Gantt of tasks: one row per alias slot (``alias #n``), coloured by status, with the task
    text, times and attempts on hover. Tasks that never started show as ``x`` at their end."""
    import plotly.graph_objects as go

    tasks = _tasks(tasks)
    if tasks.empty:
        return _empty(title, "no tasks")
    ran = tasks[tasks["started"].notna()].copy()
    end = ran["finished"].fillna(tasks["finished"].max())
    ran["lane"] = _lanes(ran.assign(finished=end))
    fig = go.Figure()
    for status, color in STATUS_COLORS.items():
        part = ran[ran["status"] == status]
        if part.empty:
            continue
        dur = (end[part.index] - part["started"]).dt.total_seconds() * 1000
        fig.add_trace(go.Bar(
            name=status, orientation="h", y=part["lane"], x=dur, base=part["started"],
            marker={"color": color, "line": {"color": "white", "width": 1}}, customdata=_hover(part),
            hovertemplate="<b>%{customdata[0]}</b><br>%{customdata[1]}<br>run %{customdata[2]} ms"
                          " · queued %{customdata[3]} ms · attempts %{customdata[4]}<extra>"
                          + status + "</extra>"))
    never = tasks[tasks["started"].isna() & tasks["finished"].notna()]
    if not never.empty:
        fig.add_trace(go.Scatter(
            name="not started", mode="markers", x=never["finished"],
            y=[f"{a} #1" for a in never["alias"].astype(str)], marker={"symbol": "x", "size": 9,
            "color": [STATUS_COLORS.get(str(s), "#000") for s in never["status"]]},
            customdata=_hover(never), hovertemplate="<b>%{customdata[0]}</b><br>%{customdata[1]}"
                                                    "<br>%{customdata[5]}<extra>not started</extra>"))
    fig.update_xaxes(type="date", title="time (UTC)")
    fig.update_yaxes(autorange="reversed", title=None, categoryorder="category ascending")
    fig.update_layout(title=title, barmode="overlay", legend_title="status",
                      height=max(300, 28 * ran["lane"].nunique() + 160))
    return fig


def _hover(part: pd.DataFrame) -> list[list[Any]]:
    return [[f"{a}/{k}", str(t)[:120], _fmt(r), _fmt(q), a_n if a_n == a_n else "-", str(st)]
            for a, k, t, r, q, a_n, st in zip(
                part["alias"].astype(str), part["key"], part["task"], part["run_ms"],
                part["queued_ms"], part["attempts"].astype("float64"), part["status"], strict=True)]


def _fmt(v: Any) -> str:
    return "-" if v != v else f"{v:.0f}"


def concurrency(tasks: pd.DataFrame, title: str = "Running tasks per alias") -> go.Figure:
    """Running tasks over time per alias (step lines) with each alias's limit dashed."""
    import plotly.graph_objects as go

    from .analysis import concurrency_frame

    steps = tasks if "running" in tasks.columns else concurrency_frame(_tasks(tasks))
    if steps.empty:
        return _empty(title, "no task started")
    # One point per distinct time (the state after all changes at that millisecond): a slot
    # handed from one task to the next in the same millisecond is not drawn as a dip.
    steps = steps.drop_duplicates(["run", "alias", "ts"], keep="last")
    fig = go.Figure()
    several_runs = steps["run"].nunique() > 1
    for i, ((run, alias), part) in enumerate(steps.groupby(["run", "alias"], observed=True)):
        color = _PALETTE[i % len(_PALETTE)]
        name = f"{alias} ({run})" if several_runs else str(alias)
        fig.add_trace(go.Scatter(name=name, x=part["ts"], y=part["running"], mode="lines",
                                 line={"shape": "hv", "color": color}, legendgroup=name))
        limit = part["limit"].iloc[0] if "limit" in part else None
        if limit is not None and limit == limit:
            fig.add_trace(go.Scatter(name=f"{name} limit", x=[part["ts"].min(), part["ts"].max()],
                                     y=[int(limit), int(limit)], mode="lines", legendgroup=name,
                                     opacity=0.5, line={"dash": "dash", "color": color, "width": 3}))
    fig.update_layout(title=title, xaxis_title="time (UTC)", yaxis_title="running tasks")
    fig.update_yaxes(rangemode="tozero", dtick=1)
    return fig


def latency(tasks: pd.DataFrame, kind: str = "box", title: str = "Task time per alias") -> go.Figure:
    """Distribution of ``run_ms`` of completed tasks per alias (``kind``: box or violin)."""
    import plotly.graph_objects as go

    if kind not in ("box", "violin"):
        raise ValueError(f"kind must be 'box' or 'violin', not {kind!r}")
    tasks = _tasks(tasks)
    done = tasks[(tasks["status"] == "completed") & tasks["run_ms"].notna()]
    if done.empty:
        return _empty(title, "no completed task")
    fig = go.Figure()
    for i, (alias, part) in enumerate(done.groupby("alias", observed=True)):
        common = {"name": str(alias), "y": part["run_ms"], "marker_color": _PALETTE[i % len(_PALETTE)],
                  "text": part["key"]}
        fig.add_trace(go.Box(boxpoints="outliers", **common) if kind == "box"
                      else go.Violin(box_visible=True, points="outliers", **common))
    fig.update_layout(title=title, yaxis_title="ms (start to end, retries included)",
                      showlegend=False)
    return fig


def usage(tasks: pd.DataFrame, title: str = "Tokens and cost per alias") -> go.Figure:
    """Tokens in and out per alias (stacked bars) and cost in USD (markers, right axis)."""
    from plotly.subplots import make_subplots

    tasks = _tasks(tasks)
    if tasks.empty:
        return _empty(title, "no tasks")
    g = tasks.groupby("alias", observed=True)
    per = {"in": g["tokens_in"].sum(min_count=1), "out": g["tokens_out"].sum(min_count=1),
           "cost": g["cost"].sum(min_count=1)}
    aliases = [str(a) for a in per["in"].index]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    import plotly.graph_objects as go

    fig.add_trace(go.Bar(name="tokens in", x=aliases, y=per["in"].astype("float64")), secondary_y=False)
    fig.add_trace(go.Bar(name="tokens out", x=aliases, y=per["out"].astype("float64")),
                  secondary_y=False)
    fig.add_trace(go.Scatter(name="cost (USD)", x=aliases, y=per["cost"], mode="markers",
                             marker={"size": 12, "symbol": "diamond", "color": "#000"}),
                  secondary_y=True)
    fig.update_layout(title=title, barmode="stack")
    fig.update_yaxes(title_text="tokens", secondary_y=False)
    fig.update_yaxes(title_text="USD (unknown models: no point)", secondary_y=True, rangemode="tozero")
    return fig


def use_static_fallback(strict: bool = False) -> bool:
    """Store a PNG next to each figure's JSON (``plotly_mimetype+png``) so notebooks show the
    charts where plotly's JS does not run (GitHub). Needs kaleido and a Chromium; without them
    it prints why and returns False (``strict=True`` raises ConfigError instead)."""
    import plotly.io as pio

    problem = None
    try:
        import kaleido  # noqa: F401
    except ImportError:
        problem = "kaleido is not installed (pip install kaleido)"
    if problem is None:
        browser = os.environ.get("BROWSER_PATH") or next(
            (p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome"))
             if p), None)
        if not browser:
            problem = "no Chromium found (apt-get install chromium, or set BROWSER_PATH)"
    if problem is not None:
        message = f"static chart images are off: {problem}; charts stay interactive only"
        if strict:
            from .errors import ConfigError

            raise ConfigError(message)
        print(message, file=sys.stderr)
        return False
    import kaleido

    # One long-lived Chromium for every image: ~0.3 s per chart instead of ~5 s
    kaleido.start_sync_server(silence_warnings=True)
    warnings.filterwarnings("ignore", message="The kopts argument is ignored", category=UserWarning)
    pio.renderers.default = "plotly_mimetype+png"
    return True

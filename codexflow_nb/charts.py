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

    try:  # a copy: to_image reorders the keys of a dict it validates
        return pio.to_image(copy.deepcopy(fig), format="png")
    except Exception:  # noqa: BLE001 - a static copy is optional; the chart itself is not lost
        return None


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
    import json as _json

    from plotly.io.json import to_json_plotly

    fig = _fig_dict(fig)
    n = _STATIC["figures"] = _STATIC["figures"] + 1
    data = to_json_plotly(fig.get("data", [])).replace("</", "<\\/")
    layout = to_json_plotly(fig.get("layout", {})).replace("</", "<\\/")
    config = _json.dumps({"responsive": True, "displaylogo": False, **(fig.get("config") or {})})
    digest = hashlib.sha1((data + layout).encode()).hexdigest()[:8]
    div_id = f"codexflow-chart-{n}-{digest}"
    height = (fig.get("layout") or {}).get("height") or 450
    script = ""
    if not _STATIC["plotlyjs_sent"]:
        from plotly.offline import get_plotlyjs

        script = ("<script type='text/javascript'>window.PlotlyConfig = {MathJaxConfig: 'local'};"
                  f"</script><script type='text/javascript' charset='utf-8'>{get_plotlyjs()}"
                  "</script>")
        _STATIC["plotlyjs_sent"] = True
    static = static_figure_html(fig) if static is None else static
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

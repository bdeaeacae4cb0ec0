"""PlanGraph: a plan drawn with plotly as a DAG, its node colours following a run live.

Phases are columns (inside a phase, tasks that wait for others of the same phase move right),
tasks are nodes coloured by alias, dependency edges are arrows. During a run a node's fill
shows its status while its border keeps the alias colour. The figure is a plain
``go.Figure`` re-rendered into an ``Output`` at most every ``interval`` seconds (plotly's
``FigureWidget`` needs anywidget, which this package does not require).
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Hashable, Mapping
from html import escape
from typing import Any

import ipywidgets as w

from ..events import TERMINAL_KINDS, Event
from ..plan import Plan
from .coalesce import Throttle
from .render import STATUS_COLORS, static_bundle

PALETTE = ["#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3", "#ff6692",
           "#b6e880", "#ff97ff", "#fecb52"]
#: Beyond this many edges the arrows are left out (the count is shown instead).
MAX_EDGES = 300
PLOTLY_MIME = "application/vnd.plotly.v1+json"


def alias_colors(aliases: list[str]) -> dict[str, str]:
    return {a: PALETTE[i % len(PALETTE)] for i, a in enumerate(aliases)}


def layout_plan(plan: Plan) -> dict[str, tuple[float, float]]:
    """Node positions: x = phase (plus a step per dependency level inside the phase),
    y = slot, top to bottom."""
    deps = plan.edges()
    pos: dict[str, tuple[float, float]] = {}
    for i, phase in enumerate(plan.phases):
        level = _levels([t.key for t in phase.tasks], deps)
        top = max(level.values(), default=0)
        columns: dict[int, list[str]] = {}
        for t in phase.tasks:
            columns.setdefault(level[t.key], []).append(t.key)
        for lvl, col in columns.items():
            x = i + (0.6 * lvl / top if top else 0.0)
            for slot, key in enumerate(col):
                pos[key] = (x, (len(col) - 1) / 2 - slot)
    return pos


def _levels(keys: list[str], deps: Mapping[str, tuple[str, ...]]) -> dict[str, int]:
    """Longest chain of same-phase dependencies before each task (Kahn's order; tasks on a
    cycle, which validation rejects, stay at level 0)."""
    inside = set(keys)
    waits = {k: [d for d in deps.get(k, ()) if d in inside and d != k] for k in keys}
    users: dict[str, list[str]] = {k: [] for k in keys}
    for k, ds in waits.items():
        for d in ds:
            users[d].append(k)
    missing = {k: len(ds) for k, ds in waits.items()}
    level = dict.fromkeys(keys, 0)
    ready = [k for k in keys if not missing[k]]
    while ready:
        k = ready.pop()
        for user in users[k]:
            level[user] = max(level[user], level[k] + 1)
            missing[user] -= 1
            if not missing[user]:
                ready.append(user)
    return level


def build_figure(plan: Plan, statuses: Mapping[str, str] | None = None, *,
                 agents: Mapping[str, str] | None = None, title: str | None = None) -> Any:
    """The plan as a ``plotly.graph_objects.Figure`` (one node trace per alias)."""
    import plotly.graph_objects as go

    statuses = statuses or {}
    agents = agents or {}
    pos = layout_plan(plan)
    aliases = list(dict.fromkeys(t.alias for t in plan.tasks))
    colors = alias_colors(aliases)
    fig = go.Figure()
    for i, phase in enumerate(plan.phases):
        fig.add_vrect(x0=i - 0.3, x1=i + 0.9, fillcolor="#f2f2f2" if i % 2 == 0 else "#fafafa",
                      line_width=0, layer="below", annotation_text=f"{phase.name} ({phase.mode})",
                      annotation_position="top left")
    for alias in aliases:
        tasks = [t for t in plan.tasks if t.alias == alias]
        status = [statuses.get(t.key, "planned") for t in tasks]
        fill = ([STATUS_COLORS.get(s, "#616161") for s in status] if statuses else colors[alias])
        hover = [f"<b>{escape(t.key)}</b> · {escape(alias)} → {escape(agents.get(alias, alias))}<br>"
                 + "<br>".join(escape(line) for line in textwrap.wrap(t.text, 60)[:6])
                 + f"<br>status: {s}" for t, s in zip(tasks, status, strict=True)]
        fig.add_trace(go.Scatter(
            x=[pos[t.key][0] for t in tasks], y=[pos[t.key][1] for t in tasks],
            mode="markers+text", name=alias, text=[t.key for t in tasks], textposition="bottom center",
            hovertext=hover, hoverinfo="text",
            customdata=status,
            marker={"size": 22, "color": fill, "line": {"color": colors[alias], "width": 4}}))
    if statuses:
        for s in dict.fromkeys(statuses.values()):
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=f"status: {s}",
                                     legendgroup="status",
                                     marker={"size": 12, "color": STATUS_COLORS.get(s, "#616161")}))
    edges = [(d, k) for k, ds in plan.edges().items() for d in ds if d in pos and k in pos]
    for dep, key in edges[:MAX_EDGES]:
        (x0, y0), (x1, y1) = pos[dep], pos[key]
        fig.add_annotation(x=x1, y=y1, ax=x0, ay=y0, xref="x", yref="y", axref="x", ayref="y",
                           text="", showarrow=True, arrowhead=3, arrowsize=1.2, arrowwidth=1.2,
                           arrowcolor="#9e9e9e", standoff=12, startstandoff=12)
    heading = title or f"Plan: {len(plan)} task(s), {len(plan.phases)} phase(s), {len(edges)} edge(s)"
    if len(edges) > MAX_EDGES:
        heading += f" ({len(edges) - MAX_EDGES} edges not drawn)"
    rows = max([len([k for k, p in pos.items() if p[0] == x]) for x in {p[0] for p in pos.values()}]
               or [1])
    fig.update_layout(title=heading, showlegend=True, plot_bgcolor="white",
                      height=max(260, 70 * rows + 120), margin={"l": 20, "r": 20, "t": 60, "b": 20},
                      xaxis={"visible": False, "range": [-0.4, len(plan.phases) - 0.05]},
                      yaxis={"visible": False})
    return fig


def figure_bundle(fig: Any) -> dict[str, Any]:
    """A display bundle for a figure: plotly JSON (JupyterLab, VS Code) and a text line."""
    data = json.loads(fig.to_json())
    data.setdefault("config", {"displaylogo": False, "responsive": True})
    title = (data.get("layout", {}).get("title") or {}).get("text", "plotly figure")
    return {PLOTLY_MIME: data, "text/plain": title}


class PlanGraph(w.VBox):
    """The plan as a DAG; feed it run events (``on_event``) to colour nodes by status."""

    def __init__(self, plan: Plan | None = None, *, agents: Mapping[str, str] | None = None,
                 interval: float = 0.5) -> None:
        self.plan = plan
        self.agents = dict(agents or {})
        self.statuses: dict[str, str] = {}
        self.renders = 0
        self.message = w.HTML()
        self.out = w.Output()
        self._throttle = Throttle(self._flush, interval)
        super().__init__([self.message, self.out])
        self.render()

    def set_plan(self, plan: Plan | None, agents: Mapping[str, str] | None = None,
                 problems: list[str] | None = None) -> None:
        """Show another plan (clears statuses); ``problems`` are shown above it."""
        self.plan = plan
        if agents is not None:
            self.agents = dict(agents)
        self.statuses = {}
        self.message.value = "".join(f"<div style='color:#e53935'>⚠ {escape(p)}</div>"
                                     for p in problems or [])
        self.render()

    def figure(self) -> Any:
        if self.plan is None or not len(self.plan):
            return None
        return build_figure(self.plan, self.statuses, agents=self.agents)

    def on_event(self, event: Event) -> None:
        kind = event.get("kind")
        key = event.get("key")
        if kind == "run_started":
            self.statuses = {t.key: "planned" for t in self.plan.tasks} if self.plan else {}
        elif kind == "run_complete":
            self._throttle.flush("graph")
            return
        elif isinstance(key, str):
            if kind == "task_queued":
                self.statuses[key] = "queued"
            elif kind == "task_started":
                self.statuses[key] = "running"
            elif kind in TERMINAL_KINDS:
                self.statuses[key] = TERMINAL_KINDS[kind]
            else:
                return
        else:
            return
        self._throttle.request("graph")

    def render(self) -> None:
        """Draw now."""
        fig = self.figure()
        self.renders += 1
        if fig is None:
            self.out.outputs = ({"output_type": "display_data", "metadata": {},
                                 "data": {"text/plain": "no tasks to draw"}},)
            return
        self.out.outputs = ({"output_type": "display_data", "metadata": {},
                             "data": figure_bundle(fig)},)

    def _flush(self, _key: Hashable) -> None:
        self.render()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        # a static copy (text/html) for front ends without widgets: GitHub, nbconvert, ...
        return static_bundle(self, super()._repr_mimebundle_(**kwargs))

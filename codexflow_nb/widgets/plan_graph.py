"""PlanGraph: a plan as a graph whose node fills follow a run live.

Two views, both under about 700 px high at any size:

- **tasks** (up to :data:`AGGREGATE_ABOVE` tasks, or one expanded group): phases are columns;
  inside a phase, tasks that wait for others of the same phase step right, and each step is a
  grid (one column per alias, wrapped every few rows). Arrows only for dependencies that
  exist (``dependsOn`` and the chain of a sequential phase; a task without ``dependsOn``
  waiting for the whole previous phase is what the columns already say).
- **groups** (above the threshold): one row per alias, one column per phase, each group a
  bar split by status with its counts; the **show** dropdown expands one group into the
  tasks view.

Status is the fill (Okabe-Ito), the alias is the outline colour and the marker shape, and the
legend says so. The widget draws SVG (:mod:`.plan_svg`), at most once per ``interval``
seconds (1 s) during a run and not while hidden; :func:`build_figure` gives the same views
as plotly figures (plotly JSON built without plotly by :func:`plan_spec`).
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Hashable, Iterable, Mapping
from html import escape
from typing import Any

import ipywidgets as w

from ..events import TERMINAL_KINDS, Event
from ..plan import _UNSET, Plan, PlanTask
from .coalesce import Throttle
from .lifecycle import Composed
from .palette import (
    ALIAS_COLORS,
    MAIN_STATUSES,
    STATUS_FILLS,
    STATUS_ORDER,
    alias_style,
    status_fill,
)
from .render import static_bundle

#: Above this many tasks the graph shows one node per alias and phase.
AGGREGATE_ABOVE = 60
#: Tallest figure, in pixels.
MAX_HEIGHT = 680
#: Grid rows per phase step: with labels, and dense (no labels, small markers).
ROWS, DENSE_ROWS = 11, 20
#: Beyond this many arrows the rest are left out (the title says how many).
MAX_EDGES = 150
#: Beyond this many grid columns the task labels are left out (hover shows them).
LABEL_COLUMNS = 18
PLOTLY_MIME = "application/vnd.plotly.v1+json"
#: The "show" dropdown's value for the groups view.
ALL_GROUPS = "all groups"
CONFIG = {"displaylogo": False, "responsive": True,
          "modeBarButtonsToRemove": ["select2d", "lasso2d", "autoScale2d"]}
#: Kept for callers of the first version: the alias outline colours.
PALETTE = ALIAS_COLORS
_FONT = {"family": "Open Sans, verdana, arial, sans-serif", "size": 12, "color": "#2a3f5f"}


def alias_colors(aliases: list[str]) -> dict[str, str]:
    """Outline colour per alias, in order of first appearance."""
    return {a: alias_style(i)[0] for i, a in enumerate(aliases)}


def drawn_edges(plan: Plan, keys: Iterable[str] | None = None) -> list[tuple[str, str]]:
    """The dependencies worth an arrow: explicit ``dependsOn`` and the chain of a sequential
    phase. A task without ``dependsOn`` waits for the whole previous phase; the columns show
    that, so those edges (phase size squared) are not drawn. ``keys`` limits both ends."""
    inside = set(keys) if keys is not None else None
    out: list[tuple[str, str]] = []
    for phase in plan.phases:
        before: str | None = None
        for t in phase.tasks:
            own = () if t.depends_on is _UNSET else t.depends_on
            out.extend((d, t.key) for d in own)
            if phase.mode == "sequential" and before is not None and before not in own:
                out.append((before, t.key))
            before = t.key
    if inside is not None:
        out = [(d, k) for d, k in out if d in inside and k in inside]
    return list(dict.fromkeys(out))


def _levels(keys: list[str], deps: Mapping[str, list[str]]) -> dict[str, int]:
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


class _Grid:
    """Positions of a tasks view: x in grid columns, y = -row."""

    def __init__(self, plan: Plan, tasks: list[PlanTask], aliases: list[str]) -> None:
        deps: dict[str, list[str]] = {}
        for d, k in drawn_edges(plan, [t.key for t in tasks]):
            deps.setdefault(k, []).append(d)
        order = {a: i for i, a in enumerate(aliases)}
        # blocks: per phase, per level, per alias -> keys in plan order
        phases: list[tuple[int, list[list[list[str]]]]] = []
        wanted = {t.key for t in tasks}
        for i, phase in enumerate(plan.phases):
            mine = [t for t in phase.tasks if t.key in wanted]
            if not mine:
                continue
            level = _levels([t.key for t in mine], deps)
            steps: list[list[list[str]]] = []
            for lvl in range(max(level.values()) + 1):
                by_alias: dict[str, list[str]] = {}
                for t in sorted((t for t in mine if level[t.key] == lvl),
                                key=lambda t: order[t.alias]):
                    by_alias.setdefault(t.alias, []).append(t.key)
                if by_alias:
                    steps.append(list(by_alias.values()))
            phases.append((i, steps))
        self.dense = len(tasks) > AGGREGATE_ABOVE
        biggest = max((len(b) for _i, steps in phases for step in steps for b in step), default=1)
        if self.dense:  # about three columns per row, at most DENSE_ROWS rows
            step_size = max((sum(map(len, step)) for _i, steps in phases for step in steps),
                            default=1)
            limit = min(DENSE_ROWS, max(3, math.ceil(math.sqrt(step_size / 3))))
            biggest = max(biggest, step_size)
        else:
            limit = ROWS
        self.rows = max(1, math.ceil(biggest / math.ceil(biggest / limit)))  # balanced columns
        self.pos: dict[str, tuple[float, float]] = {}
        #: (phase index, first x, last x) per drawn phase
        self.spans: list[tuple[int, float, float]] = []
        x = 0.0
        for i, steps in phases:
            first = x
            for step in steps:
                if self.dense and len(step) > 1:  # aliases share columns: a dense block
                    step = [[k for b in step for k in b]]
                for block in step:
                    for n in range(0, len(block), self.rows):
                        for row, key in enumerate(block[n:n + self.rows]):
                            self.pos[key] = (x, -float(row))
                        x += 1
            self.spans.append((i, first, x - 1))
            x += 0.8  # the gap between phases
        self.columns = int(sum(last - first + 1 for _i, first, last in self.spans))


def layout_plan(plan: Plan, tasks: list[PlanTask] | None = None) -> dict[str, tuple[float, float]]:
    """Node positions of the tasks view: x = grid column (phases left to right, a step per
    same-phase dependency level), y = -row."""
    tasks = list(plan.tasks) if tasks is None else tasks
    aliases = list(dict.fromkeys(t.alias for t in plan.tasks))
    return _Grid(plan, tasks, aliases).pos


def _hover(t: PlanTask, agent: str) -> str:
    return (f"<b>{escape(t.key)}</b> · {escape(t.alias)} → {escape(agent)}<br>"
            + "<br>".join(escape(line) for line in textwrap.wrap(t.text, 60)[:4]))


def _legend_status(statuses: Iterable[str]) -> list[str]:
    present = set(statuses)
    return [s for s in STATUS_ORDER if s in MAIN_STATUSES or s in present]


def _status_traces(names: list[str]) -> list[dict[str, Any]]:
    return [{"type": "scatter", "x": [None], "y": [None], "mode": "markers", "name": s,
             "legendgroup": "status", "legendgrouptitle": {"text": "status (fill)"},
             "marker": {"size": 12, "symbol": "square", "color": STATUS_FILLS[s],
                        "line": {"color": "#555555", "width": 1}}, "hoverinfo": "skip"}
            for s in names]


def _base_layout(title: str, height: int) -> dict[str, Any]:
    return {"title": {"text": title, "x": 0.01, "font": {"size": 15}}, "height": height,
            "font": _FONT, "paper_bgcolor": "white", "plot_bgcolor": "white",
            "margin": {"l": 20, "r": 20, "t": 70, "b": 20}, "showlegend": True,
            "legend": {"groupclick": "toggleitem", "tracegroupgap": 14,
                       "traceorder": "grouped"},
            "hoverlabel": {"align": "left"}, "shapes": [], "annotations": []}


# -- the tasks view -------------------------------------------------------------------------------

def _edge_trace(points: list[tuple[tuple[float, float], tuple[float, float]]],
                gap: float, nodes: Iterable[tuple[float, float]]) -> dict[str, Any]:
    """All arrows in one trace: a line per dependency (bent over the nodes between the two
    when they share a row) ending in an arrow head ``gap`` columns before its target."""
    rows: dict[float, list[float]] = {}
    for x, y in nodes:
        rows.setdefault(y, []).append(x)
    xs: list[float | None] = []
    ys: list[float | None] = []
    sizes: list[int] = []
    for (x0, y0), (x1, y1) in points:
        dx, dy = x1 - x0, y1 - y0
        if dx:
            sx, ex = x0 + math.copysign(gap, dx), x1 - math.copysign(gap, dx)
            sy, ey = y0, y1
        else:
            sx = ex = x0
            sy, ey = y0 + math.copysign(0.3, dy), y1 - math.copysign(0.3, dy)
        xs.append(sx)
        ys.append(sy)
        sizes.append(0)
        if not dy and any(min(x0, x1) < x < max(x0, x1) for x in rows.get(y0, ())):
            # other nodes sit between the two on this row: bend over them
            xs.append((sx + ex) / 2)
            ys.append(y0 + 0.42)
            sizes.append(0)
        xs += [ex, None]
        ys += [ey, None]
        sizes += [9, 0]
    return {"type": "scatter", "mode": "lines+markers", "name": "dependencies", "x": xs,
            "y": ys, "showlegend": False, "hoverinfo": "skip", "connectgaps": False,
            "line": {"color": "#9e9e9e", "width": 1.2, "shape": "spline"},
            "marker": {"symbol": "arrow", "angleref": "previous", "size": sizes,
                       "color": "#8c8c8c"}}


def _alias_legend(aliases: list[str], present: set[str]) -> list[dict[str, Any]]:
    """Legend entries for the aliases: outline colour and shape on a white fill (the data
    traces themselves stay out of the legend, whose swatch would show a status fill)."""
    out = []
    for a, alias in enumerate(aliases):
        if alias not in present:
            continue
        color, symbol = alias_style(a)
        out.append({"type": "scatter", "x": [None], "y": [None], "mode": "markers",
                    "name": alias, "legendgroup": "alias",
                    "legendgrouptitle": {"text": "alias (outline, shape)"}, "hoverinfo": "skip",
                    "marker": {"size": 12, "symbol": symbol, "color": "white",
                               "line": {"color": color, "width": 2.5}}})
    return out


def tasks_spec(plan: Plan, statuses: Mapping[str, str] | None = None, *,
               agents: Mapping[str, str] | None = None, keys: Iterable[str] | None = None,
               title: str | None = None) -> tuple[dict[str, Any], dict[str, tuple[int, int]]]:
    """The tasks view as plotly JSON, and where each task's point is (trace, index)."""
    statuses = statuses or {}
    agents = agents or {}
    wanted = set(keys) if keys is not None else None
    tasks = [t for t in plan.tasks if wanted is None or t.key in wanted]
    aliases = list(dict.fromkeys(t.alias for t in plan.tasks))
    grid = _Grid(plan, tasks, aliases)
    labels = not grid.dense and grid.columns <= LABEL_COLUMNS
    size = 12 if grid.dense else 20
    edges = drawn_edges(plan, [t.key for t in tasks])
    data: list[dict[str, Any]] = []
    if edges:
        data.append(_edge_trace([(grid.pos[d], grid.pos[k]) for d, k in edges[:MAX_EDGES]],
                                0.2 if grid.dense else 0.24, grid.pos.values()))
    index: dict[str, tuple[int, int]] = {}
    by_alias: dict[str, list[PlanTask]] = {}
    for t in tasks:
        by_alias.setdefault(t.alias, []).append(t)
    for a, alias in enumerate(aliases):
        mine = by_alias.get(alias)
        if not mine:
            continue
        color, symbol = alias_style(a)
        status = [statuses.get(t.key, "planned") for t in mine]
        for j, t in enumerate(mine):
            index[t.key] = (len(data), j)
        data.append({
            "type": "scatter", "name": alias, "x": [grid.pos[t.key][0] for t in mine],
            "y": [grid.pos[t.key][1] for t in mine], "showlegend": False,
            "mode": "markers+text" if labels else "markers",
            "text": [t.key for t in mine], "textposition": "bottom center",
            "textfont": {"size": 10}, "customdata": status,
            "hovertext": [_hover(t, agents.get(alias, alias)) for t in mine],
            "hovertemplate": "%{hovertext}<br>status: %{customdata}<extra></extra>",
            "marker": {"size": size, "symbol": symbol, "color": [status_fill(s) for s in status],
                       "line": {"color": color, "width": 2 if grid.dense else 3}}})
    data += _alias_legend(aliases, set(by_alias))
    data += _status_traces(_legend_status(statuses.values()))
    pitch = 26 if grid.dense else 50
    legend = sum(1 for d in data if d.get("legendgroup")) + 3
    height = min(MAX_HEIGHT, max(260, 110 + pitch * grid.rows, 90 + 20 * legend))
    heading = title or (f"Plan: {len(tasks)} task(s), {len(grid.spans)} phase(s), "
                        f"{len(edges)} dependenc{'y' if len(edges) == 1 else 'ies'}")
    if len(edges) > MAX_EDGES:
        heading += f" ({len(edges) - MAX_EDGES} not drawn)"
    layout = _base_layout(heading, height)
    top, bottom = 0.75, -(grid.rows - 1) - (0.9 if labels else 0.6)
    for n, (i, first, last) in enumerate(grid.spans):
        phase = plan.phases[i]
        layout["shapes"].append({"type": "rect", "xref": "x", "yref": "y", "x0": first - 0.45,
                                 "x1": last + 0.45, "y0": bottom, "y1": top, "layer": "below",
                                 "line": {"width": 0},
                                 "fillcolor": "#f2f2f2" if n % 2 == 0 else "#fafafa"})
        layout["annotations"].append({"x": first - 0.4, "y": top, "xref": "x", "yref": "y",
                                      "xanchor": "left", "yanchor": "bottom", "showarrow": False,
                                      "text": f"<b>{escape(phase.name)}</b> ({phase.mode})",
                                      "font": {"size": 11}})
    right = max((last for _i, _f, last in grid.spans), default=0)
    layout["xaxis"] = {"visible": False, "range": [-0.8, right + 0.8]}
    layout["yaxis"] = {"visible": False, "range": [bottom - 0.2, top + 0.45]}
    return {"data": data, "layout": layout, "config": dict(CONFIG)}, index


# -- the groups view ------------------------------------------------------------------------------

def groups_of(plan: Plan) -> list[tuple[str, int, list[str]]]:
    """(alias, phase index, task keys) per group, phases first, aliases in plan order."""
    aliases = list(dict.fromkeys(t.alias for t in plan.tasks))
    out = []
    for i, phase in enumerate(plan.phases):
        for alias in aliases:
            keys = [t.key for t in phase.tasks if t.alias == alias]
            if keys:
                out.append((alias, i, keys))
    return out


_BAR = 0.84  # a group's bar spans this part of its phase column


def _group_counts(groups: list[tuple[str, int, list[str]]],
                  statuses: Mapping[str, str]) -> list[dict[str, int]]:
    out = []
    for _a, _i, keys in groups:
        counts: dict[str, int] = {}
        for k in keys:
            s = statuses.get(k, "planned")
            counts[s] = counts.get(s, 0) + 1
        out.append(counts)
    return out


TERMINAL_STATUSES = frozenset(TERMINAL_KINDS.values())


def _group_text(alias: str, phase: str, keys: list[str], counts: dict[str, int]) -> str:
    done = sum(n for s, n in counts.items() if s in TERMINAL_STATUSES)
    running = counts.get("running", 0)
    extra = f" · {running} running" if running else ""
    return f"<b>{escape(alias)}</b> · {escape(phase)}: {done}/{len(keys)} done{extra}"


def groups_spec(plan: Plan, statuses: Mapping[str, str] | None = None, *,
                agents: Mapping[str, str] | None = None,
                title: str | None = None) -> tuple[dict[str, Any], list[tuple[str, int, list[str]]]]:
    """The groups view as plotly JSON (one bar trace per status, one text trace), and the
    groups in the order of the bars."""
    statuses = statuses or {}
    agents = agents or {}
    groups = groups_of(plan)
    aliases = list(dict.fromkeys(t.alias for t in plan.tasks))
    row = {a: i for i, a in enumerate(aliases)}
    data: list[dict[str, Any]] = []
    for status in STATUS_ORDER:
        data.append({
            "type": "bar", "orientation": "h", "name": status, "legendgroup": "status",
            "legendgrouptitle": {"text": "status (fill)"},
            "showlegend": status in MAIN_STATUSES, "y": [row[a] for a, _i, _k in groups],
            "x": [0.0] * len(groups), "base": [0.0] * len(groups), "width": 0.42,
            "marker": {"color": STATUS_FILLS[status], "line": {"color": "white", "width": 0.5}},
            "customdata": [[0, len(k), escape(a), escape(plan.phases[i].name)]
                           for a, i, k in groups],
            "hovertemplate": ("%{customdata[2]} · %{customdata[3]}: %{customdata[0]} of "
                              f"%{{customdata[1]}} {status}<extra></extra>")})
    data.append({"type": "scatter", "mode": "text", "name": "groups", "showlegend": False,
                 "x": [i + 0.5 for _a, i, _k in groups], "y": [row[a] - 0.36 for a, _i, _k in groups],
                 "text": [""] * len(groups), "textfont": {"size": 11}, "hoverinfo": "skip"})
    for a, alias in enumerate(aliases):  # the alias legend: outline and shape, as in the tasks view
        color, symbol = alias_style(a)
        xs = [i + (1 - _BAR) / 2 - 0.035 for al, i, _k in groups if al == alias]
        data.append({"type": "scatter", "mode": "markers", "name": alias, "legendgroup": "alias",
                     "legendgrouptitle": {"text": "alias (outline, shape)"},
                     "x": xs, "y": [a] * len(xs),
                     "marker": {"size": 11, "symbol": symbol, "color": "white",
                                "line": {"color": color, "width": 2.5}},
                     "hovertext": [escape(f"{alias} → {agents.get(alias, alias)}")] * len(xs),
                     "hoverinfo": "text"})
    n_rows = max(1, len(aliases))
    legend = len(aliases) + len(MAIN_STATUSES) + 3
    height = min(MAX_HEIGHT, max(260, 120 + 64 * n_rows, 90 + 20 * legend))
    edges = _group_edges(plan, groups)
    heading = title or (f"Plan: {len(plan)} tasks in {len(groups)} groups (alias × phase), "
                        f"{len(plan.phases)} phase(s); pick a group under 'show' for its tasks")
    layout = _base_layout(heading, height)
    layout["barmode"] = "overlay"
    for i, phase in enumerate(plan.phases):
        layout["shapes"].append({"type": "rect", "xref": "x", "yref": "paper", "x0": i + 0.02,
                                 "x1": i + 0.98, "y0": 0, "y1": 1, "layer": "below",
                                 "line": {"width": 0},
                                 "fillcolor": "#f2f2f2" if i % 2 == 0 else "#fafafa"})
        layout["annotations"].append({"x": i + 0.5, "y": 1, "xref": "x", "yref": "paper",
                                      "yanchor": "bottom", "showarrow": False,
                                      "text": f"<b>{escape(phase.name)}</b> ({phase.mode}, "
                                              f"{len(phase.tasks)} tasks)", "font": {"size": 11}})
    for (g0, g1), count in list(edges.items())[:MAX_EDGES]:
        (a0, i0, _k0), (a1, i1, _k1) = groups[g0], groups[g1]
        if i0 == i1:
            x0 = x1 = i0 + 0.5
        else:
            x0, x1 = i0 + 0.5 + _BAR / 2, i1 + 0.5 - _BAR / 2
        layout["annotations"].append({
            "x": x1, "y": row[a1], "ax": x0, "ay": row[a0], "xref": "x", "yref": "y",
            "axref": "x", "ayref": "y", "text": "", "showarrow": True, "arrowhead": 3,
            "arrowwidth": 1.2, "arrowcolor": "#9e9e9e", "standoff": 10, "startstandoff": 10,
            "hovertext": f"{count} dependenc{'y' if count == 1 else 'ies'}"})
    layout["xaxis"] = {"visible": False, "range": [-0.02, len(plan.phases) + 0.02]}
    layout["yaxis"] = {"range": [n_rows - 0.4, -0.75], "tickvals": list(range(n_rows)),
                       "ticktext": [escape(a) for a in aliases], "showgrid": False,
                       "zeroline": False, "automargin": True}
    spec = {"data": data, "layout": layout, "config": dict(CONFIG)}
    restyle_groups(spec, plan, groups, statuses)
    return spec, groups


def _group_edges(plan: Plan, groups: list[tuple[str, int, list[str]]]) -> dict[tuple[int, int], int]:
    """Dependencies between different groups, counted."""
    where = {k: g for g, (_a, _i, keys) in enumerate(groups) for k in keys}
    out: dict[tuple[int, int], int] = {}
    for dep, key in drawn_edges(plan):
        pair = (where[dep], where[key])
        if pair[0] != pair[1]:
            out[pair] = out.get(pair, 0) + 1
    return out


def restyle_groups(spec: dict[str, Any], plan: Plan, groups: list[tuple[str, int, list[str]]],
                   statuses: Mapping[str, str]) -> None:
    """Patch the bars (status segments) and counts of a groups view in place."""
    counts = _group_counts(groups, statuses)
    bars = {d["name"]: d for d in spec["data"] if d["type"] == "bar"}
    left = [i + (1 - _BAR) / 2 for _a, i, _k in groups]
    for status in STATUS_ORDER:
        bar = bars[status]
        for g, (_a, _i, keys) in enumerate(groups):
            n = counts[g].get(status, 0)
            width = _BAR * n / len(keys)
            bar["x"][g], bar["base"][g] = width, left[g]
            bar["customdata"][g][0] = n
            left[g] += width
        if not bar["showlegend"] and any(c.get(status) for c in counts):
            bar["showlegend"] = True
    text = next(d for d in spec["data"] if d.get("name") == "groups" and d["type"] == "scatter")
    text["text"] = [_group_text(a, plan.phases[i].name, k, c)
                    for (a, i, k), c in zip(groups, counts, strict=True)]


# -- figures and bundles ----------------------------------------------------------------------------

def build_figure(plan: Plan, statuses: Mapping[str, str] | None = None, *,
                 agents: Mapping[str, str] | None = None, title: str | None = None,
                 aggregate: bool | None = None, group: tuple[str, int] | None = None) -> Any:
    """The plan as a ``plotly.graph_objects.Figure``: the tasks view (one node trace per alias,
    status legend entries), or above :data:`AGGREGATE_ABOVE` tasks (``aggregate=None``) the
    groups view; ``group=(alias, phase index)`` draws one group's tasks."""
    import plotly.graph_objects as go

    spec = plan_spec(plan, statuses, agents=agents, title=title, aggregate=aggregate,
                     group=group)
    fig = go.Figure(data=spec["data"], layout=spec["layout"])
    fig.update_layout(template="none")
    return fig


def plan_spec(plan: Plan, statuses: Mapping[str, str] | None = None, *,
              agents: Mapping[str, str] | None = None, title: str | None = None,
              aggregate: bool | None = None, group: tuple[str, int] | None = None) -> dict[str, Any]:
    """Plotly JSON of :func:`build_figure` (without plotly)."""
    if group is not None:
        keys = next((k for a, i, k in groups_of(plan) if (a, i) == tuple(group)), [])
        alias, i = group
        return tasks_spec(plan, statuses, agents=agents, keys=keys, title=title or (
            f"{alias} · {plan.phases[i].name}: {len(keys)} task(s) (choose 'all groups' under "
            "'show' to go back)"))[0]
    if aggregate if aggregate is not None else len(plan) > AGGREGATE_ABOVE:
        return groups_spec(plan, statuses, agents=agents, title=title)[0]
    return tasks_spec(plan, statuses, agents=agents, title=title)[0]


def figure_bundle(fig: Any) -> dict[str, Any]:
    """A display bundle for a figure: plotly JSON (JupyterLab, VS Code) and a text line."""
    data = json.loads(fig.to_json()) if not isinstance(fig, dict) else fig
    data.setdefault("config", {"displaylogo": False, "responsive": True})
    title = (data.get("layout", {}).get("title") or {}).get("text", "plotly figure")
    return {PLOTLY_MIME: data, "text/plain": title}


class PlanGraph(Composed, w.VBox):
    """The plan as a graph; feed it run events (``on_event``) to fill nodes by status.

    Drawn as SVG in an ``HTML`` widget (:mod:`.plan_svg`): one cheap swap per redraw.
    ``interval`` is the least time between two redraws during a run; while ``visible`` is
    False (the dashboard's Plan tab is not shown) nothing is sent, and the graph catches up
    when it is shown again. :meth:`figure` gives the same view as a plotly figure.
    """

    def __init__(self, plan: Plan | None = None, *, agents: Mapping[str, str] | None = None,
                 interval: float = 1.0, aggregate_above: int = AGGREGATE_ABOVE) -> None:
        self.plan = plan
        self.agents = dict(agents or {})
        self.statuses: dict[str, str] = {}
        self.aggregate_above = aggregate_above
        self.renders = 0  # drawings sent to the front end
        self.visible = True
        self._stale = False
        self._syncing = False
        self.message = w.HTML()
        self.show = w.Dropdown(options=[(ALL_GROUPS, ALL_GROUPS)], value=ALL_GROUPS,
                               description="show",
                               layout=w.Layout(width="420px", display="none"))
        self.show.add_class("codexflow-show")
        self.view = w.HTML(layout=w.Layout(min_height="120px"))
        self._throttle = Throttle(self._flush, interval)
        self.show.observe(lambda _c: self._show_changed(), names="value")
        super().__init__([self.message, self.show, self.view])
        self.set_plan(plan)

    # -- what is shown -----------------------------------------------------------------------
    @property
    def aggregated(self) -> bool:
        """The groups view is shown (a big plan, no group expanded)."""
        return (self.plan is not None and len(self.plan) > self.aggregate_above
                and self.group is None)

    @property
    def group(self) -> tuple[str, int] | None:
        """The expanded group (alias, phase index), or None."""
        value = self.show.value
        return value if isinstance(value, tuple) else None

    def set_plan(self, plan: Plan | None, agents: Mapping[str, str] | None = None,
                 problems: list[str] | None = None) -> None:
        """Show another plan (clears statuses). ``problems`` are shown above it (the
        dashboard shows them next to their fields instead)."""
        self.plan = plan
        if agents is not None:
            self.agents = dict(agents)
        self.statuses = {}
        self.message.value = "".join(f"<div style='color:#d55e00'>⚠ {escape(p)}</div>"
                                     for p in problems or [])
        big = plan is not None and len(plan) > self.aggregate_above
        options: list[tuple[str, Any]] = [(ALL_GROUPS, ALL_GROUPS)]
        if big:
            assert plan is not None
            options += [(f"{a} · {plan.phases[i].name} ({len(k)} tasks)", (a, i))
                        for a, i, k in groups_of(plan)]
        keep = self.show.value if self.show.value in [v for _l, v in options] else ALL_GROUPS
        self._syncing = True
        try:
            if list(self.show.options) != options:
                self.show.options = options
            self.show.value = keep
        finally:
            self._syncing = False
        self.show.layout.display = None if big else "none"
        self.render()

    def expand(self, alias: str | None, phase: int = 0) -> None:
        """Show one group's tasks (``None``: all groups)."""
        self.show.value = ALL_GROUPS if alias is None else (alias, phase)

    def _show_changed(self) -> None:
        if not self._syncing:
            self.render()

    def figure(self) -> Any:
        """The view shown now as a plotly ``go.Figure`` (None without tasks)."""
        if self.plan is None or not len(self.plan):
            return None
        return build_figure(self.plan, self.statuses, agents=self.agents,
                            aggregate=len(self.plan) > self.aggregate_above, group=self.group)

    def html(self) -> str:
        """The view shown now (HTML with an inline SVG)."""
        from .plan_svg import groups_svg, tasks_svg

        plan = self.plan
        if plan is None or not len(plan):
            return "<i>no tasks to draw</i>"
        group = self.group
        if group is None and len(plan) > self.aggregate_above:
            return groups_svg(plan, self.statuses, agents=self.agents)
        if group is None:
            return tasks_svg(plan, self.statuses, agents=self.agents)
        keys = next((k for a, i, k in groups_of(plan) if (a, i) == tuple(group)), [])
        return tasks_svg(plan, self.statuses, agents=self.agents, keys=keys, title=(
            f"{group[0]} · {plan.phases[group[1]].name}: {len(keys)} task(s) (choose "
            f"'{ALL_GROUPS}' under 'show' to go back)"))

    def set_visible(self, visible: bool) -> None:
        """Hidden graphs send nothing; shown again, they draw what they missed."""
        self.visible = visible
        if visible and self._stale:
            self._throttle.flush("graph")

    # -- events -------------------------------------------------------------------------------
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

    # -- drawing ------------------------------------------------------------------------------
    def render(self) -> None:
        """Draw now."""
        self._throttle.cancel()
        self._publish()

    def _flush(self, _key: Hashable) -> None:
        if not self.visible:
            self._stale = True
            return
        self._publish()

    def _publish(self) -> None:
        self._stale = False
        self.renders += 1
        self.view.value = self.html()

    def _stop(self) -> None:
        self._throttle.cancel()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        # a static copy (text/html) for front ends without widgets: GitHub, nbconvert, ...
        return static_bundle(self, super()._repr_mimebundle_(**kwargs))

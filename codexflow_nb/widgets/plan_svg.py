"""The plan graph as inline SVG: what :class:`~.plan_graph.PlanGraph` shows.

A plotly figure in an ``Output`` is rebuilt by the browser on every update (a new plot, and
JupyterLab's plotly renderer also draws a PNG of it each time): measured at 0.5-1 s of main
thread and about 6,000 DOM mutation records per redraw of a 15-trace figure. The same graph
as SVG text in an ``HTML`` widget is one ``innerHTML`` swap: a few milliseconds, one
mutation record, whatever the status changes. Layout (grid, groups, dependencies) comes from
:mod:`.plan_graph`, colours from :mod:`.palette`; hover shows each node's ``<title>``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from html import escape

from ..plan import Plan
from .palette import MAIN_STATUSES, STATUS_FILLS, STATUS_ORDER, alias_style

#: Pixels between grid columns and rows: with labels, and dense (no labels).
PITCH = {False: (92, 52), True: (20, 20)}
LEGEND_WIDTH = 170
MAX_HEIGHT = 680
_CSS = ("<style>.cfpg text{font:11px var(--jp-ui-font-family,sans-serif);fill:#2a3f5f}"
        ".cfpg .lbl{font-size:10px}.cfpg .hd{font-weight:600}.cfpg .edge{fill:none;"
        "stroke:#9e9e9e;stroke-width:1.2}"
        + "".join(f".cfpg .s-{s}{{fill:{c}}}" for s, c in STATUS_FILLS.items()) + "</style>")


def _shape(symbol: str, x: float, y: float, r: float, attrs: str) -> str:
    """An SVG element for a plotly-like marker ``symbol`` centred on (x, y), radius ``r``."""
    if symbol == "circle":
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}" {attrs}/>'
    if symbol == "square":
        s = r * 0.9
        return f'<rect x="{x - s:.1f}" y="{y - s:.1f}" width="{2 * s:.1f}" height="{2 * s:.1f}" {attrs}/>'
    shapes = {  # (angles in degrees from the top, radius factors)
        "diamond": ([0, 90, 180, 270], [1.15] * 4),
        "triangle-up": ([0, 120, 240], [1.2] * 3),
        "triangle-down": ([180, 300, 60], [1.2] * 3),
        "hexagon": ([30, 90, 150, 210, 270, 330], [1.05] * 6),
        "pentagon": ([0, 72, 144, 216, 288], [1.1] * 5),
        "star": ([i * 36 for i in range(10)], [1.25, 0.55] * 5),
        "hourglass": ([315, 45, 135, 225], [1.2] * 4),
        "cross": ([i * 45 + 22.5 for i in range(8)], [1.0] * 8),
    }
    angles, factors = shapes.get(symbol, shapes["diamond"])
    if symbol == "hourglass":
        pts = [(x - r, y - r), (x + r, y - r), (x - r, y + r), (x + r, y + r)]
    else:
        pts = [(x + r * f * math.sin(math.radians(a)), y - r * f * math.cos(math.radians(a)))
               for a, f in zip(angles, factors, strict=True)]
    return ('<polygon points="' + " ".join(f"{px:.1f},{py:.1f}" for px, py in pts)
            + f'" {attrs}/>')


def _legend(x: float, y: float, statuses: Iterable[str],
            aliases: list[tuple[int, str]]) -> tuple[str, float]:
    """The legend: status swatches (fill), then alias marks (outline, shape)."""
    x, y = round(x, 1), round(y, 1)
    parts = [f'<text class="hd" x="{x}" y="{y}">status (fill)</text>']
    y += 18
    for s in statuses:
        parts.append(f'<rect class="s-{s}" x="{x}" y="{y - 9}" width="11" height="11" '
                     f'stroke="#555" stroke-width="0.6"/><text x="{x + 18}" y="{y}">{s}</text>')
        y += 17
    y += 10
    if aliases:
        parts.append(f'<text class="hd" x="{x}" y="{y}">alias (outline, shape)</text>')
        y += 18
    for a, alias in aliases:
        color, symbol = alias_style(a)
        parts.append(_shape(symbol, x + 6, y - 4, 5.5,
                            f'fill="white" stroke="{color}" stroke-width="2.2"')
                     + f'<text x="{x + 18}" y="{y}">{escape(alias[:22])}</text>')
        y += 17
    return "".join(parts), y


def _legend_statuses(statuses: Iterable[str]) -> list[str]:
    present = set(statuses)
    return [s for s in STATUS_ORDER if s in MAIN_STATUSES or s in present]


def _svg(width: float, height: float, body: str, label: str) -> str:
    return (f'<svg class="cfpg" role="img" aria-label="{escape(label)}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}" width="100%" '
            f'style="max-width:{width:.0f}px;height:auto;display:block">'
            f'{_CSS}<defs><marker id="cfpg-arrow" viewBox="0 0 10 10" refX="9" refY="5" '
            'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
            '<path d="M0,0 L10,5 L0,10 z" fill="#8c8c8c"/></marker></defs>'
            f"{body}</svg>")


def tasks_svg(plan: Plan, statuses: Mapping[str, str] | None = None, *,
              agents: Mapping[str, str] | None = None, keys: Iterable[str] | None = None,
              title: str | None = None) -> str:
    """The tasks view (phases as columns, a grid per step, arrows for real dependencies) as
    HTML: a heading and an SVG."""
    from .plan_graph import MAX_EDGES, _Grid, drawn_edges

    statuses = statuses or {}
    agents = agents or {}
    wanted = set(keys) if keys is not None else None
    tasks = [t for t in plan.tasks if wanted is None or t.key in wanted]
    aliases = list(dict.fromkeys(t.alias for t in plan.tasks))
    index = {a: i for i, a in enumerate(aliases)}
    grid = _Grid(plan, tasks, aliases)
    right = max((last for _i, _f, last in grid.spans), default=0)
    dense = grid.dense or (right + 1) * PITCH[False][0] > 1700
    px, py = PITCH[dense]
    r = 6.5 if dense else 10
    left, top = 24, 34
    xs = {k: left + px / 2 + x * px for k, (x, _y) in grid.pos.items()}
    ys = {k: top + py / 2 + (-y) * py for k, (_x, y) in grid.pos.items()}
    plot_w = left + (right + 1) * px + 10
    plot_h = top + grid.rows * py + (0 if dense else 8)
    parts = []
    for n, (i, first, last) in enumerate(grid.spans):  # phase bands with their names
        x0, x1 = left + first * px + 2, left + (last + 1) * px - 2
        phase = plan.phases[i]
        parts.append(f'<rect x="{x0:.1f}" y="{top - 4}" width="{x1 - x0:.1f}" '
                     f'height="{plot_h - top + 4:.1f}" fill="{"#f2f2f2" if n % 2 == 0 else "#f9f9f9"}"/>'
                     f'<text x="{x0 + 4:.1f}" y="{top - 10}"><tspan class="hd">'
                     f'{escape(phase.name)}</tspan> ({phase.mode})</text>')
    edges = drawn_edges(plan, [t.key for t in tasks])
    occupied: dict[float, list[float]] = {}
    for k in xs:
        occupied.setdefault(ys[k], []).append(xs[k])
    for dep, key in edges[:MAX_EDGES]:
        x0, y0, x1, y1 = xs[dep], ys[dep], xs[key], ys[key]
        dx, dy = x1 - x0, y1 - y0
        length = math.hypot(dx, dy) or 1
        gap = r + 3
        sx, sy = x0 + dx / length * gap, y0 + dy / length * gap
        ex, ey = x1 - dx / length * gap, y1 - dy / length * gap
        if not dy and any(min(x0, x1) < x < max(x0, x1) for x in occupied.get(y0, ())):
            bump = py * 0.55  # bend over the nodes in between
            parts.append(f'<path class="edge" d="M{sx:.1f},{sy - 4:.1f} Q{(sx + ex) / 2:.1f},'
                         f'{sy - bump:.1f} {ex:.1f},{ey - 4:.1f}" marker-end="url(#cfpg-arrow)"/>')
        else:
            parts.append(f'<path class="edge" d="M{sx:.1f},{sy:.1f} L{ex:.1f},{ey:.1f}" '
                         'marker-end="url(#cfpg-arrow)"/>')
    labels = not dense
    for t in tasks:
        status = statuses.get(t.key, "planned")
        color, symbol = alias_style(index[t.alias])
        tip = (f"{t.key} · {t.alias} → {agents.get(t.alias, t.alias)} · {status}\n"
               f"{t.text[:300]}")
        parts.append(f"<g><title>{escape(tip)}</title>"
                     + _shape(symbol, xs[t.key], ys[t.key], r,
                              f'class="s-{status}" stroke="{color}" '
                              f'stroke-width="{1.6 if dense else 2.6}"')
                     + (f'<text class="lbl" x="{xs[t.key]:.1f}" y="{ys[t.key] + r + 12:.1f}" '
                        f'text-anchor="middle">{escape(t.key[:14])}</text>' if labels else "")
                     + "</g>")
    legend, legend_h = _legend(plot_w + 16, top + 4, _legend_statuses(statuses.values()),
                               [(index[a], a) for a in aliases
                                if any(t.alias == a for t in tasks)])
    width = plot_w + 16 + LEGEND_WIDTH
    height = min(MAX_HEIGHT, max(plot_h, legend_h) + 12)
    heading = title or (f"Plan: {len(tasks)} task(s), {len(grid.spans)} phase(s), "
                        f"{len(edges)} dependenc{'y' if len(edges) == 1 else 'ies'}"
                        + (f" ({len(edges) - MAX_EDGES} not drawn)" if len(edges) > MAX_EDGES
                           else ""))
    return (f"<div class='codexflow-plan'><div style='font-size:14px;margin:2px 0 4px'>"
            f"{escape(heading)}</div>"
            + _svg(width, height, "".join(parts) + legend, heading) + "</div>")


def groups_svg(plan: Plan, statuses: Mapping[str, str] | None = None, *,
               agents: Mapping[str, str] | None = None, title: str | None = None) -> str:
    """The groups view (a row per alias, a column per phase, each group a bar split by
    status with its counts; arrows between groups that depend on each other) as HTML."""
    from .plan_graph import MAX_EDGES, TERMINAL_STATUSES, _group_counts, _group_edges, groups_of

    statuses = statuses or {}
    agents = agents or {}
    groups = groups_of(plan)
    aliases = list(dict.fromkeys(t.alias for t in plan.tasks))
    row = {a: i for i, a in enumerate(aliases)}
    counts = _group_counts(groups, statuses)
    name_w = 44 + 7 * min(20, max((len(a) for a in aliases), default=4))
    col_w = max(260, min(420, 1100 // max(1, len(plan.phases))))
    row_h = 54 if len(aliases) <= 9 else max(26, (MAX_HEIGHT - 60) // len(aliases))
    bar_h = min(18, row_h * 0.38)
    left, top = name_w, 40
    parts = []
    for i, phase in enumerate(plan.phases):
        x0 = left + i * col_w
        parts.append(f'<rect x="{x0 + 3}" y="{top - 8}" width="{col_w - 6}" '
                     f'height="{len(aliases) * row_h + 8}" '
                     f'fill="{"#f2f2f2" if i % 2 == 0 else "#f9f9f9"}"/>'
                     f'<text x="{x0 + col_w / 2:.1f}" y="{top - 16}" text-anchor="middle">'
                     f'<tspan class="hd">{escape(phase.name)}</tspan> ({phase.mode}, '
                     f'{len(phase.tasks)} tasks)</text>')
    for a, alias in enumerate(aliases):
        y = top + a * row_h + row_h / 2
        color, symbol = alias_style(a)
        parts.append(f'<text x="{name_w - 26}" y="{y + 10:.1f}" text-anchor="end">'
                     f'<title>{escape(alias)} → {escape(agents.get(alias, alias))}</title>'
                     f'{escape(alias[:20])}</text>'
                     + _shape(symbol, name_w - 14, y + 6, 5.5,
                              f'fill="white" stroke="{color}" stroke-width="2.2"'))
    where = {}
    for g, ((alias, i, keys), c) in enumerate(zip(groups, counts, strict=True)):
        x0 = left + i * col_w + 14
        width = col_w - 28
        y = top + row[alias] * row_h + row_h / 2
        where[g] = (x0, width, y)
        done = sum(n for s, n in c.items() if s in TERMINAL_STATUSES)
        running = c.get("running", 0)
        parts.append(f'<text x="{x0:.1f}" y="{y - bar_h / 2 - 5:.1f}"><tspan class="hd">'
                     f'{escape(alias)}</tspan> · {done}/{len(keys)} done'
                     f'{f" · {running} running" if running else ""}</text>')
        x = x0
        for s in STATUS_ORDER:
            n = c.get(s, 0)
            if not n:
                continue
            w = width * n / len(keys)
            parts.append(f'<rect class="s-{s}" x="{x:.1f}" y="{y - bar_h / 2 + 4:.1f}" '
                         f'width="{w:.1f}" height="{bar_h:.1f}"><title>{escape(alias)} · '
                         f'{escape(plan.phases[i].name)}: {n} of {len(keys)} {s}</title></rect>')
            x += w
    for (g0, g1), n in list(_group_edges(plan, groups).items())[:MAX_EDGES]:
        (x0, w0, y0), (x1, _w1, y1) = where[g0], where[g1]
        if groups[g0][1] == groups[g1][1]:  # same phase: down the column
            sx = ex = x0 + w0 / 2
            sy, ey = (y0 + bar_h + 6, y1 - bar_h - 2) if y1 > y0 else (y0 - bar_h - 10, y1 + bar_h + 6)
        else:
            sx, sy, ex, ey = x0 + w0 + 2, y0 + 4, x1 - 4, y1 + 4
        parts.append(f'<path class="edge" d="M{sx:.1f},{sy:.1f} L{ex:.1f},{ey:.1f}" '
                     f'marker-end="url(#cfpg-arrow)"><title>{n} dependenc'
                     f'{"y" if n == 1 else "ies"}</title></path>')
    plot_w = left + len(plan.phases) * col_w
    legend, legend_h = _legend(plot_w + 16, top, [s for s in STATUS_ORDER if s in MAIN_STATUSES
                                                  or any(c.get(s) for c in counts)], [])
    height = min(MAX_HEIGHT, max(top + len(aliases) * row_h + 10, legend_h + 8))
    heading = title or (f"Plan: {len(plan)} tasks in {len(groups)} groups (alias × phase), "
                        f"{len(plan.phases)} phase(s) · choose a group under 'show' for its "
                        "tasks")
    return (f"<div class='codexflow-plan'><div style='font-size:14px;margin:2px 0 4px'>"
            f"{escape(heading)}</div>"
            + _svg(plot_w + 16 + LEGEND_WIDTH, height, "".join(parts) + legend, heading)
            + "</div>")

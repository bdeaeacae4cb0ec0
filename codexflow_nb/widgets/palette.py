"""Colours and marks shared by the plan graph and the progress bars.

Status is always a *fill* (node fill, bar segment, progress bar), from the Okabe-Ito palette
(readable with the common colour-vision deficiencies, and telling cancelled from failed);
an alias is an *outline colour and a marker shape*, from Paul Tol's muted palette, so the two
never compete for the same channel.
"""

from __future__ import annotations

#: Fill per task status (Okabe-Ito, greys for "not yet" and "stopped").
STATUS_FILLS = {
    "planned": "#e6e6e6", "queued": "#f0e442", "running": "#56b4e9", "completed": "#009e73",
    "failed": "#d55e00", "timeout": "#e69f00", "cancelled": "#8c8c8c", "skipped": "#cc79a7",
    "rejected": "#000000",
}
#: Statuses in the order they are drawn (bars, legends): ended ones first, then the rest.
STATUS_ORDER = ("completed", "failed", "timeout", "rejected", "skipped", "cancelled", "running",
                "queued", "planned")
#: Statuses every live legend lists (others join when they occur).
MAIN_STATUSES = ("planned", "queued", "running", "completed", "failed", "cancelled")
#: Outline colour per alias (Paul Tol's muted scheme, darkest first).
ALIAS_COLORS = ["#332288", "#882255", "#117733", "#aa4499", "#999933", "#44aa99", "#cc6677",
                "#ddcc77", "#88ccee"]
#: Marker shape per alias (plotly symbol names).
ALIAS_SYMBOLS = ["circle", "square", "diamond", "triangle-up", "hexagon", "pentagon",
                 "triangle-down", "star", "hourglass", "cross"]
#: Statuses that mean "something went wrong" (the task list's "failed" filter).
FAILED_STATUSES = ("failed", "timeout", "rejected", "skipped")


def status_fill(status: str) -> str:
    return STATUS_FILLS.get(status, "#616161")


def alias_style(index: int) -> tuple[str, str]:
    """(outline colour, marker symbol) of the ``index``-th alias."""
    return ALIAS_COLORS[index % len(ALIAS_COLORS)], ALIAS_SYMBOLS[index % len(ALIAS_SYMBOLS)]

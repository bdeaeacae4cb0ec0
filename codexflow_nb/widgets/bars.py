"""Progress bars split by status: completed, failed, ..., cancelled and running side by side,
each in its status colour (:mod:`.palette`), the rest of the bar the empty track.

A bar is a small inline SVG in an ``HTML`` widget (:class:`StatusBar`): one value swap per
redraw, and in a saved notebook's static copy the SVG becomes an image (GitHub keeps images,
not inline SVG or styles) whose ``alt`` text says the same counts. An ``IntProgress`` has one
colour, so a stopped run showed a grey bar where most tasks had completed.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

import ipywidgets as w

from .palette import STATUS_FILLS, STATUS_ORDER

#: Statuses drawn as segments, in order: the ended ones, then those running now.
BAR_STATUSES = tuple(s for s in STATUS_ORDER if s not in ("queued", "planned"))
#: The empty part of a bar (tasks planned or queued).
TRACK = STATUS_FILLS["planned"]
#: Width of a bar's drawing (its viewBox); the live bar stretches to its widget's width.
BAR_WIDTH, BAR_HEIGHT = 300, 14


def ended(counts: Mapping[str, int]) -> int:
    """How many of these tasks have ended (every bar status but running)."""
    return sum(counts.get(s, 0) for s in BAR_STATUSES if s != "running")


def bar_text(counts: Mapping[str, int], total: int, label: str = "") -> str:
    """``a1: 40/100 done · 40 completed · 60 cancelled · 3 running`` (what the bar shows)."""
    done = ended(counts)
    parts = [f"{counts[s]} {s}" for s in BAR_STATUSES if counts.get(s)]
    return (f"{label}: " if label else "") + f"{done}/{total} done" + "".join(
        f" · {p}" for p in parts)


def status_bar_svg(counts: Mapping[str, int], total: int, label: str = "") -> str:
    """The bar as inline SVG: one ``rect`` per status present (``data-status``, a ``title``
    with its count), left to right in :data:`BAR_STATUSES` order, on a grey track."""
    text = escape(bar_text(counts, total, label))
    parts = [f'<rect width="{BAR_WIDTH}" height="{BAR_HEIGHT}" fill="{TRACK}"/>']
    before = 0
    for status in BAR_STATUSES:
        n = counts.get(status, 0)
        if not n or total <= 0:
            continue
        x0 = BAR_WIDTH * min(before, total) / total
        before += n
        x1 = BAR_WIDTH * min(before, total) / total
        parts.append(f'<rect data-status="{status}" x="{x0:.2f}" width="{x1 - x0:.2f}" '
                     f'height="{BAR_HEIGHT}" fill="{STATUS_FILLS[status]}">'
                     f"<title>{status}: {n} of {total}</title></rect>")
    return (f'<svg class="codexflow-bar" xmlns="http://www.w3.org/2000/svg" width="100%" '
            f'height="{BAR_HEIGHT}" viewBox="0 0 {BAR_WIDTH} {BAR_HEIGHT}" '
            f'preserveAspectRatio="none" role="img" aria-label="{text}" '
            f'style="display:block;min-width:120px"><title>{text}</title>'
            + "".join(parts) + "</svg>")


class StatusBar(w.HTML):
    """A progress bar split by status (see :func:`status_bar_svg`): ``bar.show(counts,
    total)`` with tasks per status (planned and queued ones are the empty track).
    ``done`` counts ended tasks, whatever their status."""

    def __init__(self, description: str = "", **kwargs: Any) -> None:
        super().__init__(description=description, **kwargs)
        self.add_class("codexflow-statusbar")
        self.counts: dict[str, int] = {}
        self.total = 0
        self.show({}, 0)

    def show(self, counts: Mapping[str, int], total: int) -> None:
        self.counts = {s: n for s, n in counts.items() if s in BAR_STATUSES and n}
        self.total = total
        self.value = status_bar_svg(self.counts, total, self.description)

    @property
    def done(self) -> int:
        return ended(self.counts)

    @property
    def running(self) -> int:
        return self.counts.get("running", 0)

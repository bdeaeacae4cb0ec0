"""ConcurrencyView: how many tasks run at once per alias, against its limit, live from events.

``ConcurrencyView`` is an ``on_event`` subscriber, like :class:`~.render.LiveView`: it never
reaches into the engine, it counts ``task_started`` and the terminal events of a run (limits
and the global cap come from ``run_started``) and remembers the peaks::

    view = ConcurrencyView()
    display(view)
    result = await codexflow_nb.run_async(tasks, aliases=aliases, on_event=view)
    view.peak                      # Counter({'coders': 4, 'fast-review': 3, 'deep-review': 1})

The counting is :class:`Concurrency` (plain data, no widgets: ``Concurrency.replay(events)``
gives the same peaks from an event log). The view redraws at most every ``interval`` seconds
(a run can send thousands of events a second) and at once when the run ends; its slots are a
small SVG, which a saved notebook's static copy keeps as an image.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Mapping
from html import escape
from typing import Any

import ipywidgets as w

from ..events import TERMINAL_KINDS, Event
from .coalesce import Throttle
from .lifecycle import Composed
from .palette import STATUS_FILLS
from .render import static_bundle

#: Up to this many slots each is drawn as a box; above it the row is one bar.
SLOT_BOXES = 24


class Concurrency:
    """Running tasks per alias from run events: now (``running``), at most (``peak``), ended
    (``done``), and the same over all aliases (``total_running``, ``total_peak``). A new
    ``run_started`` starts over (and says each alias's limit and the run's cap)."""

    def __init__(self, limits: Mapping[str, int] | None = None) -> None:
        self.limits: dict[str, int] = dict(limits or {})
        self.max_concurrency: int | None = None
        self.run_id: str | None = None
        self.complete = False
        self._clear()

    def _clear(self) -> None:
        self._running: dict[str, set[str]] = {a: set() for a in self.limits}
        self.peak: Counter[str] = Counter()
        self.done: Counter[str] = Counter()
        self.total_running = self.total_peak = 0

    @property
    def running(self) -> Counter[str]:
        return Counter({a: len(keys) for a, keys in self._running.items()})

    @property
    def aliases(self) -> list[str]:
        """Aliases in the order they became known (limits first)."""
        return list(dict.fromkeys([*self.limits, *self._running, *self.done]))

    def apply(self, event: Event) -> bool:
        """Count one event; True if it changed anything shown."""
        kind = event.get("kind")
        if kind == "run_started":
            self.run_id, self.complete = event.get("runId"), False
            self.max_concurrency = event.get("maxConcurrency")
            for alias, info in (event.get("aliases") or {}).items():
                if isinstance(info, Mapping) and isinstance(info.get("limit"), int):
                    self.limits[alias] = info["limit"]
            self._clear()
            return True
        if kind == "run_complete":
            self.complete = True
            return True
        alias, key = event.get("alias"), event.get("key") or event.get("taskId")
        if not isinstance(alias, str) or not isinstance(key, str):
            return False
        if kind == "task_started":
            keys = self._running.setdefault(alias, set())
            if key in keys:  # a retry's new attempt: still one slot
                return False
            keys.add(key)
            self.total_running += 1
            self.peak[alias] = max(self.peak[alias], len(keys))
            self.total_peak = max(self.total_peak, self.total_running)
            return True
        if kind in TERMINAL_KINDS:
            self.done[alias] += 1
            keys = self._running.setdefault(alias, set())
            if key in keys:
                keys.discard(key)
                self.total_running -= 1
            return True
        return False

    @classmethod
    def replay(cls, events: Iterable[Event], limits: Mapping[str, int] | None = None,
               run_id: str | None = None) -> Concurrency:
        """The counts after ``events`` (of one run: ``run_id``, else all of them in order)."""
        counts = cls(limits)
        counts.feed(events, run_id)
        return counts

    def feed(self, events: Iterable[Event], run_id: str | None = None) -> None:
        """Apply ``events`` in order (only those of run ``run_id`` when given)."""
        for event in events:
            if run_id is None or event.get("runId") == run_id:
                self.apply(event)


#: Slot fills: a task runs in it now, it was in use at the busiest moment, never used.
RUNNING_FILL, PEAK_FILL, FREE_FILL = STATUS_FILLS["running"], "#cfe8f6", "#ffffff"


def _slots_svg(running: int, peak: int, limit: int | None, label: str) -> str:
    """The alias's slots: one box per slot (blue while a task runs in it, light blue up to
    the peak), or above :data:`SLOT_BOXES` slots one bar filled to the share in use."""
    fill, empty = RUNNING_FILL, FREE_FILL
    title = escape(f"{label}: {running} running" + (f" of {limit}" if limit else "")
                   + f", at most {peak}")
    if limit and limit <= SLOT_BOXES:
        size, gap = 12, 3
        width = limit * (size + gap)
        boxes = "".join(
            f'<rect x="{i * (size + gap) + 0.5}" y="0.5" width="{size}" height="{size}" '
            f'fill="{fill if i < running else PEAK_FILL if i < peak else empty}" '
            'stroke="#8c8c8c"/>' for i in range(limit))
        over = running - limit  # more than the limit: never expected, shown if it happens
        if over > 0:
            boxes += (f'<text x="{width + 2}" y="11" font-size="11" fill="#d55e00">'
                      f"+{over}</text>")
            width += 30
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="14" '
                f'viewBox="0 0 {width} 14" role="img" aria-label="{title}">'
                f"<title>{title}</title>{boxes}</svg>")
    share = min(1.0, running / limit) if limit else 0.0
    high = min(1.0, peak / limit) if limit else 0.0
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="180" height="14" '
            f'viewBox="0 0 180 14" role="img" aria-label="{title}"><title>{title}</title>'
            f'<rect x="0.5" y="0.5" width="179" height="13" fill="{empty}" stroke="#8c8c8c"/>'
            f'<rect x="0.5" y="0.5" width="{179 * high:.1f}" height="13" fill="{PEAK_FILL}"/>'
            f'<rect x="0.5" y="0.5" width="{179 * share:.1f}" height="13" fill="{fill}"/></svg>')


def concurrency_html(counts: Concurrency) -> str:
    """A table: per alias its slots, running/limit, the peak and the tasks ended; then all
    aliases together (against the run's cap, if it has one)."""
    running = counts.running
    rows = []
    for alias in counts.aliases:
        limit = counts.limits.get(alias)
        rows.append(
            f"<tr><td><code>{escape(alias)}</code></td>"
            f"<td>{_slots_svg(running[alias], counts.peak[alias], limit, alias)}</td>"
            f"<td style='text-align:right'>{running[alias]}/{limit if limit else '-'}</td>"
            f"<td style='text-align:right'>{counts.peak[alias]}</td>"
            f"<td style='text-align:right'>{counts.done[alias]}</td></tr>")
    cap = counts.max_concurrency
    rows.append(
        "<tr style='border-top:1px solid #bdbdbd'><td><i>all</i></td>"
        f"<td>{_slots_svg(counts.total_running, counts.total_peak, cap, 'all') if cap else ''}"
        "</td>"
        f"<td style='text-align:right'>{counts.total_running}"
        f"{f'/{cap}' if cap else ''}</td><td style='text-align:right'>{counts.total_peak}</td>"
        f"<td style='text-align:right'>{sum(counts.done.values())}</td></tr>")
    state = ("finished" if counts.complete else "running" if counts.run_id else "not started")
    head = f"run <code>{escape(counts.run_id)}</code> · {state}" if counts.run_id else state
    return ("<div class='codexflow-concurrency'>"
            f"<div style='margin:2px 0 4px'>Tasks running at once · {head}</div>"
            "<table><thead><tr><th style='text-align:left'>alias</th>"
            "<th style='text-align:left'>slots</th><th>running/limit</th><th>peak</th>"
            "<th>done</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
            f"<div style='font-size:85%;color:#616161;margin-top:2px'>"
            f"<span style='color:{RUNNING_FILL}'>■</span> running now · "
            f"<span style='color:{PEAK_FILL}'>■</span> in use at the busiest moment (peak)"
            "</div></div>")


class ConcurrencyView(Composed, w.HTML):
    """Tasks running at once per alias against its limit, with the peaks, live from run
    events: pass the view as ``on_event=`` (or subscribe it) and display it. ``limits``
    (alias -> max parallel tasks) shows the rows before the run starts; the run's own
    ``run_started`` event brings them otherwise. Counts: ``running``, ``peak``, ``done``,
    ``total_peak`` (see :class:`Concurrency`, in ``counts``)."""

    def __init__(self, limits: Mapping[str, int] | None = None, *, interval: float = 0.1,
                 **kwargs: Any) -> None:
        self.counts = Concurrency(limits)
        self.renders = 0  # drawings sent to the front end
        self._throttle = Throttle(self._flush, interval)
        super().__init__(**kwargs)
        self._draw()

    # the counts, as attributes of the view
    @property
    def running(self) -> Counter[str]:
        return self.counts.running

    @property
    def peak(self) -> Counter[str]:
        return self.counts.peak

    @property
    def done(self) -> Counter[str]:
        return self.counts.done

    @property
    def total_peak(self) -> int:
        return self.counts.total_peak

    @property
    def limits(self) -> dict[str, int]:
        return self.counts.limits

    def __call__(self, event: Event) -> None:
        """One run event (the view is an ``on_event`` subscriber)."""
        if not self.counts.apply(event):
            return
        if event.get("kind") in ("run_complete", "run_started"):
            self._throttle.flush("view")  # the start and the end are drawn at once
        else:
            self._throttle.request("view")

    on_event = __call__

    def replay(self, events: Iterable[Event], run_id: str | None = None) -> None:
        """Count ``events`` (of one run: ``run_id``) and draw once."""
        self.counts.feed(events, run_id)
        self._throttle.flush("view")

    def _flush(self, _key: Hashable) -> None:
        self._draw()

    def _draw(self) -> None:
        self.renders += 1
        self.value = concurrency_html(self.counts)

    def _stop(self) -> None:
        self._throttle.cancel()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        # a static copy (text/html) for front ends without widgets: GitHub, nbconvert, ...
        return static_bundle(self, super()._repr_mimebundle_(**kwargs))

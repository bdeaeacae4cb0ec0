"""Coalescing of front-end updates: at most one update per key per interval.

Streams can deliver thousands of chunks a second; a front end needs about ten updates a
second to look live. :class:`Throttle` sends the first update of a burst at once (leading
edge), folds everything that arrives during the interval into one update at its end
(trailing edge), and lets the caller flush a key immediately (a task that just ended).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable


class Throttle:
    """Calls ``flush(key)`` at most once per ``interval`` seconds for each key.

    Trailing updates run on a timer of the event loop that is running when :meth:`request`
    is called (without a running loop there is nothing to schedule on, so every request
    flushes at once). With ``timers=False`` the owner calls :meth:`poll` instead: code that
    holds the thread of a blocked loop (a cell magic) cannot rely on that loop's timers.
    """

    def __init__(self, flush: Callable[[Hashable], None], interval: float = 0.1, *,
                 clock: Callable[[], float] = time.monotonic, timers: bool = True) -> None:
        if interval < 0:
            raise ValueError("interval must be >= 0")
        self._flush = flush
        self.interval = interval
        self._clock = clock
        self._last: dict[Hashable, float] = {}
        self._timers: dict[Hashable, asyncio.TimerHandle | None] = {}
        self._use_timers = timers
        self.flushes = 0

    @property
    def pending(self) -> list[Hashable]:
        """Keys with a trailing update still to come."""
        return list(self._timers)

    def request(self, key: Hashable) -> None:
        """Ask for an update of ``key``: now if the interval has passed, else at its end."""
        if key in self._timers:
            return  # the scheduled update will carry this change too
        wait = self._last.get(key, float("-inf")) + self.interval - self._clock()
        if wait <= 0:
            self._run(key)
            return
        if not self._use_timers:
            self._timers[key] = None
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._run(key)
            return
        self._timers[key] = loop.call_later(wait, self._fire, key)

    def flush(self, key: Hashable) -> None:
        """Update ``key`` now, cancelling its scheduled update."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._run(key)

    def poll(self) -> None:
        """Run the pending updates whose interval has passed (for ``timers=False``)."""
        now = self._clock()
        for key in list(self._timers):
            if self._last.get(key, float("-inf")) + self.interval <= now:
                self.flush(key)

    def flush_pending(self) -> None:
        """Run every scheduled update now."""
        for key in list(self._timers):
            self.flush(key)

    def cancel(self) -> None:
        """Drop scheduled updates without running them."""
        for timer in self._timers.values():
            if timer is not None:
                timer.cancel()
        self._timers.clear()

    def _fire(self, key: Hashable) -> None:
        self._timers.pop(key, None)
        self._run(key)

    def _run(self, key: Hashable) -> None:
        self._last[key] = self._clock()
        self.flushes += 1
        self._flush(key)

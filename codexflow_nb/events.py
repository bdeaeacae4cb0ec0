"""Engine events: the bus every view subscribes to, and the append-only JSONL sink.

The schema is documented in ``docs/EVENTS.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import threading
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from .errors import RunStorageError

SCHEMA_VERSION = 1

Event = dict[str, Any]
Subscriber = Callable[[Event], None]

#: Terminal event kind for each task status. Every task gets exactly one of these.
TERMINAL_KINDS: dict[str, str] = {
    "task_complete": "completed",
    "task_failed": "failed",
    "task_timeout": "timeout",
    "task_cancelled": "cancelled",
    "task_skipped": "skipped",
    "task_rejected": "rejected",
}
STATUS_KIND = {status: kind for kind, status in TERMINAL_KINDS.items()}


_ts_cache: list[Any] = [-1, ""]
_LINE_OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS


def dump_line(event: Event) -> bytes:
    """One event as a JSON line (orjson: ~8x the stdlib's speed; this is the engine's hot path).
    Values JSON cannot hold are written with ``str``."""
    return orjson.dumps(event, default=str, option=_LINE_OPTIONS)


def utc_now_iso() -> str:
    """UTC ISO-8601 with milliseconds and a ``Z`` (the seconds part is cached: this is hot)."""
    ms = int(time.time() * 1000)
    sec = ms // 1000
    if sec != _ts_cache[0]:
        _ts_cache[0], _ts_cache[1] = sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    return f"{_ts_cache[1]}.{ms % 1000:03d}Z"


def parse_ts(ts: str) -> datetime:
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


class EventBus:
    """Synchronous fan-out of events to subscribers, in subscription order."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        """Add a subscriber; returns a function that removes it."""
        self._subscribers.append(fn)
        return lambda: self._subscribers.remove(fn) if fn in self._subscribers else None

    def emit(self, event: Event) -> None:
        """Deliver to every subscriber. A storage failure (the log sink) does not keep the event
        from the others and is raised after all of them have run. Any other error is a broken
        view (a closed pipe, a widget bug): that subscriber is dropped with a warning, and the
        run goes on, since a view must never stop the engine."""
        failure: RunStorageError | None = None
        for fn in self._subscribers:
            try:
                fn(event)
            except RunStorageError as exc:
                failure = failure or exc
            except Exception as exc:  # noqa: BLE001 - isolate views from the engine
                self._drop(fn, exc)
        if failure is not None:
            raise failure

    def _drop(self, fn: Subscriber, exc: Exception) -> None:
        self._subscribers = [s for s in self._subscribers if s is not fn]
        if not isinstance(exc, BrokenPipeError):
            warnings.warn(f"event subscriber {fn!r} failed and was removed: "
                          f"{type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=3)


#: Lines waiting for the end of a loop iteration are written at once beyond this size, so a
#: burst (100,000 ``task_queued`` at the start of a run) does not sit in memory.
PENDING_BYTES = 256 * 1024


class JsonlSink:
    """Appends one JSON object per line with ``write`` (O_APPEND) calls that hold whole lines,
    so concurrent writers never interleave within a line and a crash tears at most the last.

    Inside a running event loop, the lines of one loop iteration go out in one ``write`` at the
    end of it (``call_soon``): a write costs ~25 µs of kernel time here, four per task, which
    was a fifth of the engine's time per HTTP task. Lines wait only while the loop runs other
    callbacks, so a crash loses at most what the last iteration emitted, as a crash a moment
    earlier would; a write error is raised by the next ``write`` (the engine then stops the
    run) and by ``flush``/``close``. Outside a loop, and with ``fsync="every"``, each line is
    written (and synced) at once.

    ``fsync``: ``every`` event, ``batch`` (a background timer syncs within about a second of
    a write, and ``close`` syncs the rest; the writer never waits for the disk) or ``never``.
    """

    def __init__(self, path: str | os.PathLike[str], fsync: str = "batch") -> None:
        if fsync not in ("every", "batch", "never"):
            raise ValueError(f"fsync must be every, batch or never, not {fsync!r}")
        self.path = Path(path)
        self.fsync = fsync
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RunStorageError(f"{self.path}: cannot open the event log: "
                                  f"{exc.strerror or exc}") from None
        self._writes = 0  # lines written, and how many of them are known to be synced
        self._synced = 0
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()  # the timer's fsync against close()
        self._torn = False  # a short write left part of a line: end it before the next one
        self._pending: list[bytes] = []  # lines of this loop iteration, written by _flush
        self._pending_bytes = 0
        self._error: str | None = None  # a failed deferred write, raised by the next write

    def __call__(self, event: Event) -> None:
        self.write(event)

    def write(self, event: Event) -> None:
        if self._error is not None:
            raise RunStorageError(self._error)
        data = dump_line(event)
        if self.fsync != "every":
            loop = asyncio._get_running_loop()
            if loop is not None:
                if not self._pending:
                    loop.call_soon(self._flush_soon)
                self._pending.append(data)
                self._pending_bytes += len(data)
                if self._pending_bytes >= PENDING_BYTES:  # a burst (100k task_queued at start)
                    self.flush()
                return
        self._write(data)

    def flush(self) -> None:
        """Write the lines still waiting for the end of the loop iteration."""
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            self._pending_bytes = 0
            self._write(data)
        if self._error is not None:
            raise RunStorageError(self._error)

    def _flush_soon(self) -> None:
        try:
            self.flush()
        except RunStorageError as exc:
            self._error = str(exc)

    def _write(self, data: bytes) -> None:
        if self._fd < 0:
            raise RunStorageError(f"{self.path}: the event log is closed")
        if self._torn:
            data = b"\n" + data
        try:
            written = os.write(self._fd, data)
            if written != len(data):  # only on a full disk; never leave half a line unexplained
                self._torn = not self._end_torn_line(written, data)
                raise OSError(errno.ENOSPC, "short write (disk full or file too large)")
            self._torn = False
            self._writes += 1
            if self.fsync == "every":
                os.fsync(self._fd)
                self._synced = self._writes
            elif self.fsync == "batch" and self._timer is None:
                self._sync_later()
        except OSError as exc:
            raise RunStorageError(f"{self.path}: cannot write the event log: "
                                  f"{exc.strerror or exc}") from None

    def _end_torn_line(self, written: int, data: bytes) -> bool:
        """After a short write, try to end the fragment with a newline so that a later line
        (ours or another process's) does not glue onto it. True when the line is ended."""
        if written == 0 or data[written - 1:written] == b"\n":
            return True
        try:
            return os.write(self._fd, b"\n") == 1
        except OSError:
            return False

    def _sync_later(self) -> None:
        with self._lock:
            if self._timer is None and self._fd >= 0:
                self._timer = threading.Timer(1.0, self._timed_sync)
                self._timer.daemon = True
                self._timer.start()

    def _timed_sync(self) -> None:
        with self._lock:  # the timer stays set while syncing, so writers do not wait on it
            if self._fd >= 0:
                seen = self._writes
                try:
                    os.fsync(self._fd)
                    self._synced = seen
                except OSError:  # a failing disk shows up on the next write
                    pass
            self._timer = None
        if self._fd >= 0 and self._writes != self._synced:  # lines written meanwhile
            self._sync_later()

    def close(self) -> None:
        """Write what is pending, sync (unless ``never``) and close. Never raises: call
        :meth:`flush` first to learn whether the last lines were written."""
        if self._pending and self._fd >= 0:
            with contextlib.suppress(RunStorageError):
                self.flush()
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._fd < 0:
                return
            try:
                if self.fsync != "never" and self._writes != self._synced:
                    os.fsync(self._fd)
            except OSError:
                pass
            finally:
                os.close(self._fd)
                self._fd = -1

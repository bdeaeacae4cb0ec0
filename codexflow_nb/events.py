"""Engine events: the bus every view subscribes to, and the append-only JSONL sink.

The schema is documented in ``docs/EVENTS.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import stat
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
#: burst (100,000 ``task_queued`` at the start of a run) does not sit in memory. Kept well
#: under 128 KiB: on this machine's file system two processes' O_APPEND writes of 256 KiB
#: were seen interleaving at the 128 KiB mark (test_crash_safety's two-writer test).
PENDING_BYTES = 64 * 1024


#: A writer that finds the log's lock held exclusively (``codex-flow cleanup`` is trimming the
#: log) waits this long for the trim to end before it gives up.
LOCK_WAIT_S = 600.0
#: ``flock`` errors that mean "this file system cannot lock" (some network mounts).
_NO_LOCKING = (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS)


def log_lock_path(log_file: str | os.PathLike[str]) -> Path:
    """The lock file next to an event log (``events.jsonl.lock``). Every :class:`JsonlSink`
    holds a shared ``flock`` on it for as long as it has the log open; trimming the log
    (``codex-flow cleanup``) takes it exclusively, so no writer can hold the file that the
    trim is about to replace. The lock file is never removed or replaced."""
    path = Path(log_file)
    return path.with_name(path.name + ".lock")


def open_log_lock(log_file: str | os.PathLike[str], *, create: bool = True) -> int:
    """A read-only descriptor on the log's lock file (created if missing and ``create``)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    return os.open(log_lock_path(log_file), flags, 0o644)


def flock_within(fd: int, operation: int, timeout: float) -> bool:
    """``flock(fd, operation)`` retried without blocking until ``timeout`` seconds have passed
    (0: one try). True when the lock is held; OSError when the file system cannot lock."""
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.05)


def _regular_or_missing(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except FileNotFoundError:
        return True


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

    Sharing the log with a trim: from before the log is opened until it is closed, the sink
    holds a shared ``flock`` on ``<log>.lock`` (:func:`log_lock_path`). ``codex-flow cleanup``
    trims the log (copy of the tail, renamed over it) only while it holds that lock
    exclusively, so it never replaces a file a writer still has open; a sink opened during a
    trim waits for it (up to :data:`LOCK_WAIT_S`) and then opens the new file. The lock costs
    nothing per line. A log whose last byte is not a newline (a writer crashed mid-line) is
    ended with one before the first line, so that line does not glue onto the fragment.
    """

    def __init__(self, path: str | os.PathLike[str], fsync: str = "batch") -> None:
        if fsync not in ("every", "batch", "never"):
            raise ValueError(f"fsync must be every, batch or never, not {fsync!r}")
        self.path = Path(path)
        self.fsync = fsync
        self._fd = -1
        self._lock_fd = -1  # shared flock on <log>.lock for as long as the log is open
        self._writes = 0  # lines written, and how many of them are known to be synced
        self._synced = 0
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()  # the timer's fsync against close()
        self._torn = False  # a short write left part of a line: end it before the next one
        self._pending: list[bytes] = []  # lines of this loop iteration, written by _flush
        self._pending_bytes = 0
        self._error: str | None = None  # a failed deferred write, raised by the next write
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if _regular_or_missing(self.path):  # not /dev/null, a pipe: nothing to trim there
                self._lock_fd = open_log_lock(self.path)
                self._lock_shared()
            try:  # read access to look at the last byte; appends go to the end all the same
                self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            except PermissionError:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            else:
                if stat.S_ISREG(os.fstat(self._fd).st_mode):
                    self._start_on_a_new_line()
        except OSError as exc:
            self._release()
            raise RunStorageError(f"{self.path}: cannot open the event log: "
                                  f"{exc.strerror or exc}") from None

    def _lock_shared(self) -> None:
        """Take the shared lock before the log is opened: a trim in progress replaces the file,
        and this sink must open the new one."""
        try:
            held = flock_within(self._lock_fd, fcntl.LOCK_SH, LOCK_WAIT_S)
        except OSError as exc:
            if exc.errno in _NO_LOCKING:  # cleanup cannot lock here either, so it never trims
                return
            raise
        if not held:
            self._release()
            raise RunStorageError(f"{self.path}: cannot open the event log: it has been locked "
                                  f"for more than {LOCK_WAIT_S:.0f} s by a process trimming it "
                                  f"(codex-flow cleanup; see {log_lock_path(self.path)})")

    def _start_on_a_new_line(self) -> None:
        """End a torn last line (a writer that crashed mid-line) so our first line starts on a
        line of its own. The check and the newline happen under an exclusive flock on the log
        itself, so two writers opening it at once add one newline, not an empty line."""
        if self._last_byte_is_newline():
            return
        with contextlib.suppress(OSError):
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            if not self._last_byte_is_newline():
                self._torn = os.write(self._fd, b"\n") != 1
        except OSError:
            self._torn = True  # the first write starts with the newline instead
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _last_byte_is_newline(self) -> bool:
        size = os.fstat(self._fd).st_size
        return size == 0 or os.pread(self._fd, 1, size - 1) == b"\n"

    def _release(self) -> None:
        """Close the log, then the lock file (which drops the shared lock)."""
        for name in ("_fd", "_lock_fd"):
            fd = getattr(self, name, -1)
            if fd >= 0:
                setattr(self, name, -1)
                with contextlib.suppress(OSError):
                    os.close(fd)

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
                self._release()
                return
            try:
                if self.fsync != "never" and self._writes != self._synced:
                    os.fsync(self._fd)
            except OSError:
                pass
            finally:
                os.close(self._fd)
                self._fd = -1
                self._release()  # the lock goes only after the log is closed

    def __del__(self) -> None:  # a sink never closed (a prepared run never executed)
        if getattr(self, "_lock_fd", -1) >= 0 or getattr(self, "_fd", -1) >= 0:
            with contextlib.suppress(Exception):
                self.close()

"""The run store: ``.runs/<alias>/<taskId>/input.json`` and ``output.json``.

Files are written by background threads so the engine never waits on the disk. A task's two
files are written into a staging folder ``.<taskId>.tmp`` next to it, which is then renamed to
``<taskId>``: a task folder is whole or absent, and a crash can leave only a staging folder
(``codex-flow cleanup`` removes old ones). That is one rename per task instead of one per file
(32 instead of 40 µs per task on tmpfs here).

One writer thread starts with the first task, and a second joins when writing turns out to be
slow. Measured on the VM these numbers come from, creating a file costs 0.1-2 ms of kernel CPU
time depending on the moment: then two threads store ~1.7x as many tasks per second as one
(773-914 against 443-620 for 3,000-task runs). On tmpfs a second thread only adds GIL traffic:
an HTTP run with ``.runs`` on tmpfs went from ~4,000 to ~3,500 tasks/s with two from the start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from .errors import RunStorageError


def dump_json(data: Any) -> bytes:
    return orjson.dumps(data, default=str, option=orjson.OPT_NON_STR_KEYS)


def atomic_write_bytes(path: str, payload: bytes) -> None:
    """Write ``payload`` to ``path`` via a temp file and rename (whole or absent, never torn)."""
    head, name = os.path.split(path)
    tmp = os.path.join(head, f".{name}.tmp")
    try:
        _write_file(tmp, payload, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as JSON to ``path``, atomically."""
    atomic_write_bytes(os.fspath(path), dump_json(data))


_Item = tuple[str, str, bytes, bytes]  # alias folder, task id, input.json, output.json
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL
#: The name of a task's staging folder (``cleanup`` removes old ones).
STAGING_SUFFIX = ".tmp"


def _write_file(path: str, payload: bytes, flags: int) -> None:
    fd = os.open(path, flags, 0o644)
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _create(path: str, payload: bytes) -> None:
    """Write a new file (it must not exist yet)."""
    _write_file(path, payload, _NEW_FILE)


#: At most this many writer threads; a task's files always go to one of them.
WRITERS = 2
#: Kernel CPU time per task above which storage counts as slow (tmpfs: ~0.04 ms).
SLOW_TASK_S = 0.0003
#: Consecutive slow tasks before a second writer joins.
SLOW_STREAK = 8


class RunStore:
    """Writes task inputs and outputs under ``root``; ``close()`` waits for pending writes."""

    def __init__(self, root: str | os.PathLike[str], *, background: bool = True,
                 writers: int = WRITERS) -> None:
        self.root = Path(root)
        self._background = background
        self._queues: list[queue.SimpleQueue[_Item | None]] = [
            queue.SimpleQueue() for _ in range(max(1, writers))]
        self._threads: list[threading.Thread] = []
        self._error: BaseException | None = None
        self._queued = 0  # items handed to the writer threads
        self._written = [0] * len(self._queues)  # finished, per thread (each changes only its own)
        self._slow = False  # set by the first writer when storage is slow: start another

    def check_writable(self) -> None:
        """Fail early (before a run) when the store cannot be created or written."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / ".write-probe"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise RunStorageError(f"{self.root}: run store not writable: {exc.strerror or exc}") from None

    def task_dir(self, alias: str, task_id: str) -> Path:
        return self.root / alias / task_id

    def save(self, alias: str, task_id: str, input_doc: dict[str, Any], output_doc: dict[str, Any]) -> None:
        """Queue ``input.json`` and ``output.json`` of one finished task. The documents are
        encoded here, so a backlog behind a slow disk holds compact bytes, not object trees."""
        if self._error is not None:
            raise RunStorageError(f"{self.root}: run store write failed: {self._error}")
        alias_dir = os.path.join(self.root, alias)
        item = (alias_dir, task_id, dump_json(input_doc), dump_json(output_doc))
        if not self._background:
            self._write(item)
            return
        if len(self._threads) < (2 if self._slow else 1) <= len(self._queues):
            self._start_writer()
        self._queued += 1
        # by task id: saves of one task keep their order (the engine saves each task once per
        # run; only a save made while the second writer is joining could overtake an earlier one)
        self._queues[hash(task_id) % len(self._threads)].put(item)

    def _start_writer(self) -> None:
        """Started from the thread that saves (never by a writer), so ``close`` sees them all."""
        index = len(self._threads)
        thread = threading.Thread(target=self._loop, args=(index,), daemon=True,
                                  name=f"codexflow-runstore-{index}")
        self._threads.append(thread)
        thread.start()

    @property
    def backlog(self) -> int:
        """Tasks queued for the writer threads and not yet on disk."""
        return self._queued - sum(self._written)

    async def drained(self, below: int) -> None:
        """Wait (without blocking the loop) until the backlog is under ``below``."""
        while self.backlog >= below and self._threads and self._error is None:
            await asyncio.sleep(0.005)

    @staticmethod
    def _write(item: _Item) -> None:
        alias_dir, task_id, input_bytes, output_bytes = item
        staging = os.path.join(alias_dir, f".{task_id}{STAGING_SUFFIX}")
        try:
            os.mkdir(staging)
        except FileNotFoundError:  # the alias's first task
            os.makedirs(staging)
        except FileExistsError:  # left by a crash: write it afresh
            shutil.rmtree(staging)
            os.mkdir(staging)
        try:
            _create(os.path.join(staging, "input.json"), input_bytes)
            _create(os.path.join(staging, "output.json"), output_bytes)
            final = os.path.join(alias_dir, task_id)
            try:
                os.rename(staging, final)
                return
            except OSError:
                if not os.path.isdir(final):
                    raise
            # the task was saved before (again on --resume): replace each file atomically
            for name in ("input.json", "output.json"):
                os.replace(os.path.join(staging, name), os.path.join(final, name))
            os.rmdir(staging)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def _loop(self, index: int) -> None:
        inbox, written = self._queues[index], self._written
        streak = 0
        while True:
            item = inbox.get()
            if item is None:
                return
            cpu = time.thread_time()  # CPU time: waiting for the GIL does not count
            try:
                self._write(item)
            except OSError as exc:
                self._error = exc
            written[index] += 1
            if index == 0 and not self._slow:
                streak = streak + 1 if time.thread_time() - cpu > SLOW_TASK_S else 0
                self._slow = streak >= SLOW_STREAK

    def close(self) -> None:
        """Flush pending writes. Raises RunStorageError if any write failed."""
        threads, self._threads = self._threads, []
        for inbox in self._queues[:len(threads)]:
            inbox.put(None)
        for thread in threads:
            thread.join()
        if self._error is not None:
            err, self._error = self._error, None
            raise RunStorageError(f"{self.root}: run store write failed: {err}")

    def load_output(self, alias: str, task_id: str) -> dict[str, Any] | None:
        path = self.task_dir(alias, task_id) / "output.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

"""The run store: ``.runs/<alias>/<taskId>/input.json`` and ``output.json``.

Files are written by one background thread so the engine never waits on the disk, and each is
written to a temporary name and renamed, so a crash never leaves half a JSON file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import threading
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
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as JSON to ``path``, atomically."""
    atomic_write_bytes(os.fspath(path), dump_json(data))


_Item = tuple[str, bytes, bytes]


class RunStore:
    """Writes task inputs and outputs under ``root``; ``close()`` waits for pending writes."""

    def __init__(self, root: str | os.PathLike[str], *, background: bool = True) -> None:
        self.root = Path(root)
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._background = background
        self._queued = 0  # items handed to the writer thread
        self._written = 0  # items it has finished (only the writer thread changes this)

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
        item = (os.path.join(self.root, alias, task_id), dump_json(input_doc), dump_json(output_doc))
        if not self._background:
            self._write(item)
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="codexflow-runstore", daemon=True)
            self._thread.start()
        self._queued += 1
        self._queue.put(item)

    @property
    def backlog(self) -> int:
        """Tasks queued for the writer thread and not yet on disk."""
        return self._queued - self._written

    async def drained(self, below: int) -> None:
        """Wait (without blocking the loop) until the backlog is under ``below``."""
        while self.backlog >= below and self._thread is not None and self._error is None:
            await asyncio.sleep(0.005)

    @staticmethod
    def _write(item: _Item) -> None:
        directory = item[0]
        try:
            os.mkdir(directory)
        except FileNotFoundError:
            os.makedirs(directory, exist_ok=True)
        except FileExistsError:
            pass
        atomic_write_bytes(os.path.join(directory, "input.json"), item[1])
        atomic_write_bytes(os.path.join(directory, "output.json"), item[2])

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._write(item)
            except OSError as exc:
                self._error = exc
            self._written += 1

    def close(self) -> None:
        """Flush pending writes. Raises RunStorageError if any write failed."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            raise RunStorageError(f"{self.root}: run store write failed: {err}")

    def load_output(self, alias: str, task_id: str) -> dict[str, Any] | None:
        path = self.task_dir(alias, task_id) / "output.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

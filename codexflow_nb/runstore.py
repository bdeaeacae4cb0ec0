"""The run store: ``.runs/<alias>/<taskId>/input.json`` and ``output.json``.

Files are written by one background thread so the engine never waits on the disk, and each is
written to a temporary name and renamed, so a crash never leaves half a JSON file.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import threading
from pathlib import Path
from typing import Any

import orjson

from .errors import RunStorageError


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write JSON to ``path`` via a temp file and rename (whole or absent, never torn)."""
    path = os.fspath(path)
    head, name = os.path.split(path)
    tmp = os.path.join(head, f".{name}.tmp")
    payload = orjson.dumps(data, default=str, option=orjson.OPT_NON_STR_KEYS)
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


class RunStore:
    """Writes task inputs and outputs under ``root``; ``close()`` waits for pending writes."""

    def __init__(self, root: str | os.PathLike[str], *, background: bool = True) -> None:
        self.root = Path(root)
        self._queue: queue.SimpleQueue[tuple[Path, dict[str, Any], dict[str, Any]] | None] = (
            queue.SimpleQueue())
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._background = background

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
        """Queue ``input.json`` and ``output.json`` of one finished task."""
        if self._error is not None:
            raise RunStorageError(f"{self.root}: run store write failed: {self._error}")
        item = (self.task_dir(alias, task_id), input_doc, output_doc)
        if not self._background:
            self._write(item)
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="codexflow-runstore", daemon=True)
            self._thread.start()
        self._queue.put(item)

    @staticmethod
    def _write(item: tuple[Path, dict[str, Any], dict[str, Any]]) -> None:
        directory = os.fspath(item[0])
        try:
            os.mkdir(directory)
        except FileNotFoundError:
            os.makedirs(directory, exist_ok=True)
        except FileExistsError:
            pass
        atomic_write_json(os.path.join(directory, "input.json"), item[1])
        atomic_write_json(os.path.join(directory, "output.json"), item[2])

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._write(item)
            except OSError as exc:
                self._error = exc

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

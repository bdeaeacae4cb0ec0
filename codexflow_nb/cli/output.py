"""Standard output that writes a command's whole output, however slow its reader."""

from __future__ import annotations

import contextlib
import io
import os
import select
import sys
from collections.abc import Iterator


class _WholeWrites(io.RawIOBase):
    """A file descriptor whose ``write`` returns only when every byte is written: a short
    write (a signal during a write to a full pipe) goes on with the rest, a full non-blocking
    pipe is waited on."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd
        self.discard = False  # set once the output is given up (its reader went away)

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return os.isatty(self._fd)

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(data).cast("B")
        size = len(view)
        while view and not self.discard:
            try:
                view = view[os.write(self._fd, view):]
            except BlockingIOError:
                select.select([], [self._fd], [])
        return size


@contextlib.contextmanager
def whole_stdout() -> Iterator[None]:
    """``sys.stdout`` writes whole while the block runs. ``print`` alone does not ensure that:
    under ``python -u`` / ``PYTHONUNBUFFERED`` the stream is a raw file whose short writes
    dropped the rest silently (`run --json` lost all but 64 KiB of 359 KiB to a slow reader).
    A stream with no file descriptor (a test's capture) is left as it is."""
    stream = sys.stdout
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation, ValueError):
        yield
        return
    stream.flush()
    raw = _WholeWrites(fd)
    whole = io.TextIOWrapper(io.BufferedWriter(raw),
                             encoding=stream.encoding or "utf-8", errors=stream.errors,
                             line_buffering=stream.line_buffering)
    sys.stdout = whole
    try:
        yield
        whole.flush()
    finally:
        sys.stdout = stream
        try:
            whole.flush()
        except OSError:  # a reader that went away (already reported): drop what is left
            raw.discard = True
        whole.detach().detach()  # the descriptor stays open: it is the process's stdout

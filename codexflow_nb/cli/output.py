"""Writing a command's whole output, however slow its reader."""

from __future__ import annotations

import io
import os
import select
import sys


def write_out(text: str) -> None:
    """Write ``text`` to standard output and return only when every byte is written.
    ``print`` does not ensure that: under ``python -u`` / ``PYTHONUNBUFFERED`` the stream is a
    raw file whose short writes (a signal during a write to a full pipe) drop the rest silently:
    `run --json` lost all but 64 KiB of 359 KiB to a slow reader."""
    stream = sys.stdout
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):  # a replaced stream (tests)
        stream.write(text)
        stream.flush()
        return
    stream.flush()
    view = memoryview(text.encode(stream.encoding or "utf-8", errors="replace"))
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:  # a non-blocking pipe that is full: wait until it is not
            select.select([], [fd], [])

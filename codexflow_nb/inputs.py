"""Reading user input safely: one bounded reader for every input file, and a shape check for
everything parsed from one (depth, self-references).

Every file a user hands us (task maps, plans, alias maps, agent cards, bundle indexes) goes
through :func:`read_bounded`: regular files only (a FIFO, ``/dev/zero`` or a link to one is
refused before it can hang or fill memory), read up to a limit and no further.
"""

from __future__ import annotations

import os
import stat
import sys
from typing import Any

from .errors import ConfigError

#: Deepest nesting accepted in a parsed document (task maps, plans, aliases, agent cards).
MAX_DEPTH = 64
#: Most values accepted in one document, counting each use of a YAML alias (a "billion
#: laughs" document expands to far more).
MAX_VALUES = 2_000_000
MIB = 1024 * 1024
_LEAVE = object()


def _limit_text(max_bytes: int) -> str:
    return f"{max_bytes / MIB:g} MiB" if max_bytes >= MIB else f"{max_bytes} bytes"


def read_bounded(path: str | os.PathLike[str], max_bytes: int, what: str = "file") -> bytes:
    """The bytes of ``path`` (``-``: standard input), at most ``max_bytes``; a ConfigError for a
    missing file, a special file (FIFO, device, socket), a folder, a file that cannot be read
    (``PATH: cannot read the WHAT: Permission denied``) or a file over the limit."""
    source = "<stdin>" if str(path) == "-" else str(path)
    if str(path) == "-":
        raw = sys.stdin.buffer.read(max_bytes + 1)
    else:
        fd, size = _open_regular(path, source, what)
        try:
            if size > max_bytes:
                raise ConfigError(f"{source}: {what} is {size / MIB:.1f} MiB, larger than "
                                  f"the {_limit_text(max_bytes)} limit")
            chunks, left = [], max_bytes + 1
            while left > 0:
                chunk = os.read(fd, min(left, MIB))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
            raw = b"".join(chunks)
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read the {what}: {exc.strerror or exc}") from None
        finally:
            os.close(fd)
    if len(raw) > max_bytes:
        raise ConfigError(f"{source}: {what} larger than the {_limit_text(max_bytes)} limit")
    return raw


def check_readable(path: str | os.PathLike[str], what: str = "file") -> None:
    """What :func:`read_bounded` checks before reading, for a file read some other way (an
    event log handed to pyarrow, with no size limit): it exists, is a regular file (not a
    folder, FIFO, device or socket) and can be opened for reading; a ConfigError line
    otherwise. The file is opened without blocking (a FIFO never waits) and closed again."""
    os.close(_open_regular(path, str(path), what)[0])


def _open_regular(path: str | os.PathLike[str], source: str, what: str) -> tuple[int, int]:
    """A read-only descriptor of the regular file ``path`` (the caller closes it), and its
    size."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ConfigError(f"{source}: {what} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{source}: a folder, not {_a(what)}") from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read the {what}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ConfigError(f"{source}: a folder, not {_a(what)}")
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{source}: not a regular file (a FIFO, device or socket "
                              f"cannot be {_a(what)})")
    except OSError as exc:
        os.close(fd)
        raise ConfigError(f"{source}: cannot read the {what}: {exc.strerror or exc}") from None
    except ConfigError:
        os.close(fd)
        raise
    return fd, st.st_size


def _a(what: str) -> str:
    return f"{'an' if what[:1] in 'aeiou' else 'a'} {what}"


def read_text(path: str | os.PathLike[str], max_bytes: int, what: str = "file") -> str:
    """:func:`read_bounded`, decoded as UTF-8 (a ConfigError naming the offset otherwise)."""
    raw = read_bounded(path, max_bytes, what)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        source = "<stdin>" if str(path) == "-" else str(path)
        raise ConfigError(f"{source}: not UTF-8 text (invalid byte at offset {exc.start})") from None


def check_shape(data: Any, source: str, max_depth: int = MAX_DEPTH) -> Any:
    """Refuse a document nested deeper than ``max_depth`` or holding itself (a YAML anchor
    that refers to itself); walks iteratively, so it cannot overflow the stack itself."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    on_path: dict[int, int] = {}  # containers being walked -> depth (detects self-reference)
    exits: list[tuple[int, int]] = []
    seen = 0
    while stack:
        node, depth = stack.pop()
        seen += 1
        if seen > MAX_VALUES:
            raise ConfigError(f"{source}: more than {MAX_VALUES:,} values (YAML aliases "
                              "expanding too far?)")
        if node is _LEAVE:  # leaving a container
            key, _ = exits.pop()
            on_path.pop(key, None)
            continue
        if not isinstance(node, (dict, list)):
            continue
        if id(node) in on_path:
            raise ConfigError(f"{source}: a YAML anchor refers to itself (a value that contains "
                              "itself cannot be used)")
        if depth > max_depth:
            raise ConfigError(f"{source}: nested more than {max_depth} levels deep")
        on_path[id(node)] = depth
        exits.append((id(node), depth))
        stack.append((_LEAVE, depth))
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children)
    return data

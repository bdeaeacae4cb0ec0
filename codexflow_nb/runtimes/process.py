"""Running an agent CLI as a child process: its own process group, lines read as they come,
and the whole tree ended on timeout or cancellation (no orphan is left behind)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: The longest stdout line accepted (a JSON event): 16 MiB.
LINE_LIMIT = 16 * 1024 * 1024
#: How long a process tree gets after SIGTERM before SIGKILL.
GRACE_S = 2.0
STDERR_KEEP = 4096


@dataclass
class Finished:
    returncode: int
    stderr: str


class OutputTooLong(Exception):
    """A stdout line over :data:`LINE_LIMIT`."""


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc; empty where there is none)."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def run_processes(run_ids: set[str]) -> list[int]:
    """Processes started for one of ``run_ids`` (their environment holds
    ``CODEXFLOW_RUN_ID=<id>``, which every agent process and its children inherit): what a run
    killed with ``kill -9`` leaves behind."""
    wanted = {f"CODEXFLOW_RUN_ID={r}".encode() for r in run_ids}
    found = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                env = set(fh.read().split(b"\0"))
        except OSError:
            continue
        if env & wanted:
            found.append(int(entry))
    return found


def kill_processes(pids: Sequence[int]) -> None:
    """SIGKILL each pid (gone ones are skipped)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _signal_all(pgid: int, pids: Sequence[int], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
    for pid in pids:  # children that started their own session or group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


async def end_tree(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the process's group and every descendant, SIGKILL what is left after
    :data:`GRACE_S`."""
    pids = descendants(proc.pid)
    _signal_all(proc.pid, pids, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), GRACE_S)
    pids = sorted(set(pids) | set(descendants(proc.pid)))
    _signal_all(proc.pid, pids, signal.SIGKILL)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), GRACE_S)


async def finish_uncancelled(job: asyncio.Future[Any]) -> None:
    """Wait for ``job`` to finish even if the waiter is cancelled again meanwhile (an engine
    that stops cancels its workers more than once): the process tree must be gone before the
    cancellation goes on."""
    while not job.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(job)


async def _end_spawned(spawn: asyncio.Future[asyncio.subprocess.Process]) -> None:
    await end_tree(await spawn)


async def run_lines(argv: Sequence[str], *, cwd: str, env: Mapping[str, str] | None,
                    stdin: bytes, on_line: Callable[[bytes], None],
                    on_stderr: Callable[[bytes], None] | None = None) -> Finished:
    """Run ``argv`` with ``stdin``, calling ``on_line`` for each stdout line as it arrives.
    Cancellation (a timeout, Stop, Ctrl-C) ends the whole process tree before it propagates;
    so does a normal exit that leaves background children behind."""
    spawn = asyncio.ensure_future(asyncio.create_subprocess_exec(
        *argv, cwd=cwd, env=dict(env) if env is not None else None,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, start_new_session=True, limit=LINE_LIMIT))
    try:
        proc = await asyncio.shield(spawn)
    except asyncio.CancelledError:  # cancelled while starting: the process may exist already
        with contextlib.suppress(Exception):
            await finish_uncancelled(asyncio.ensure_future(_end_spawned(spawn)))
        raise
    assert proc.stdin and proc.stdout and proc.stderr
    tail: deque[bytes] = deque()
    kept = 0

    async def drain_stderr() -> None:
        nonlocal kept
        assert proc.stderr
        while chunk := await proc.stderr.read(65536):
            if on_stderr is not None:
                on_stderr(chunk)
            tail.append(chunk)
            kept += len(chunk)
            while kept - len(tail[0]) > STDERR_KEEP and len(tail) > 1:
                kept -= len(tail.popleft())

    async def feed_stdin() -> None:
        assert proc.stdin
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.write(stdin)
            await proc.stdin.drain()
            proc.stdin.close()

    err_task = asyncio.ensure_future(drain_stderr())
    in_task = asyncio.ensure_future(feed_stdin())
    try:
        while True:
            try:
                line = await proc.stdout.readline()
            except ValueError:  # asyncio's LimitOverrunError, re-raised by readline
                raise OutputTooLong(f"an output line over {LINE_LIMIT} bytes") from None
            if not line:
                break
            on_line(line)
        returncode = await proc.wait()
        await err_task
    except BaseException:
        await finish_uncancelled(asyncio.ensure_future(end_tree(proc)))
        err_task.cancel()
        in_task.cancel()
        raise
    finally:
        in_task.cancel()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # background children the agent left running
    text = b"".join(tail).decode(errors="replace")
    return Finished(returncode, text[-STDERR_KEEP:])

"""Running an agent CLI as a child process: its own process group, lines read as they come,
and the whole tree ended on timeout or cancellation (no orphan is left behind).

Processes start in a worker thread (``subprocess.Popen``, which vforks), never on the event
loop's thread: a fork of a large Python process (uvloop forks) or a slow exec would stall every
other task's output. The loop only reads the pipes and learns of the exit through a pidfd.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import subprocess
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

#: The longest stdout line accepted (a JSON event): 16 MiB.
LINE_LIMIT = 16 * 1024 * 1024
#: How long a process tree gets after SIGTERM before SIGKILL.
GRACE_S = 2.0
STDERR_KEEP = 4096
#: Marks every process of one agent run in its environment (children inherit it, also those
#: that start their own session): how the tree is found once its parent is gone.
MARK_VAR = "CODEXFLOW_PROCESS"
#: Worker threads per pool (``spawn``: starting agents and reading /proc; ``git``: workspace
#: commands; ``io``: a task's files).
POOL_SIZES = {"spawn": 4, "git": 8, "io": 4}

_pools: dict[str, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _forget_pools() -> None:  # a forked child has none of the parent's threads
    _pools.clear()


os.register_at_fork(after_in_child=_forget_pools)


async def in_thread(pool: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` in one of our worker threads, so that the loop never blocks on a
    process start or a git command. Cancelling the caller waits for ``fn`` to return first
    (half a git step is worse than a late cancellation)."""
    with _pools_lock:
        executor = _pools.get(pool)
        if executor is None:
            executor = _pools[pool] = ThreadPoolExecutor(
                POOL_SIZES.get(pool, 4), thread_name_prefix=f"codexflow-{pool}")
    job = asyncio.get_running_loop().run_in_executor(
        executor, functools.partial(fn, *args, **kwargs))
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        await finish_uncancelled(job)
        raise


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


def _with_env(entries: set[bytes]) -> list[int]:
    """Live processes (not zombies: theirs is empty) whose environment has one of
    ``entries``."""
    found = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                env = set(fh.read().split(b"\0"))
        except OSError:
            continue
        if env & entries:
            found.append(int(entry))
    return found


def run_processes(run_ids: set[str]) -> list[int]:
    """Processes started for one of ``run_ids`` (their environment holds
    ``CODEXFLOW_RUN_ID=<id>``, which every agent process and its children inherit): what a run
    killed with ``kill -9`` leaves behind."""
    return _with_env({f"CODEXFLOW_RUN_ID={r}".encode() for r in run_ids})


def marked_processes(mark: str) -> list[int]:
    """The live processes of one :func:`run_lines` call."""
    return _with_env({f"{MARK_VAR}={mark}".encode()})


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


class Child:
    """A started process (``subprocess.Popen``) whose exit the loop learns of through a pidfd
    (a waiting thread where pidfds are missing), and the mark its tree carries."""

    def __init__(self, proc: subprocess.Popen[bytes], mark: str) -> None:
        self.proc, self.pid, self.mark = proc, proc.pid, mark
        self._loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[int] = self._loop.create_future()
        self._fd = -1
        try:
            self._fd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            threading.Thread(target=self._wait_in_thread, daemon=True,
                             name=f"codexflow-wait-{proc.pid}").start()
        else:
            self._loop.add_reader(self._fd, self._on_exit)

    def _on_exit(self) -> None:
        self._close_fd()
        self._set(self.proc.wait())  # exited: reaps at once

    def _wait_in_thread(self) -> None:
        code = self.proc.wait()
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            self._loop.call_soon_threadsafe(self._set, code)

    def _set(self, code: int) -> None:
        if not self.exited.done():
            self.exited.set_result(code)

    def _close_fd(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1

    async def wait(self, timeout: float | None = None) -> int | None:
        """The exit status, or None after ``timeout`` seconds."""
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(asyncio.shield(self.exited), timeout)
        return None

    def close(self) -> None:
        """Stop watching (a process that outlived SIGKILL); the pipes are the caller's."""
        self._close_fd()


def _popen(argv: Sequence[str], cwd: str, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(list(argv), cwd=cwd, env=dict(env), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def _tree(child: Child) -> set[int]:
    return set(descendants(child.pid)) | set(marked_processes(child.mark))


async def end_tree(child: Child) -> None:
    """SIGTERM the process's group and every descendant, SIGKILL what is left after
    :data:`GRACE_S`, then every process that still carries the mark (started meanwhile, or
    already handed to init when its parent died) until none is left. /proc is read in a
    worker thread."""
    pids = await in_thread("spawn", _tree, child)
    _signal_all(child.pid, sorted(pids), signal.SIGTERM)
    await child.wait(GRACE_S)
    pids |= await in_thread("spawn", _tree, child)
    _signal_all(child.pid, sorted(pids), signal.SIGKILL)
    await child.wait(GRACE_S)
    await sweep(child.mark)


async def sweep(mark: str, timeout: float = GRACE_S) -> None:
    """SIGKILL the processes carrying ``mark`` until none is alive (or ``timeout``)."""
    deadline = time.monotonic() + timeout
    while left := await in_thread("spawn", marked_processes, mark):
        kill_processes(left)
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(0.02)


async def finish_uncancelled(job: asyncio.Future[Any]) -> None:
    """Wait for ``job`` to finish even if the waiter is cancelled again meanwhile (an engine
    that stops cancels its workers more than once): the process tree must be gone before the
    cancellation goes on."""
    while not job.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(job)


async def _end_spawned(spawn: asyncio.Future[subprocess.Popen[bytes]], mark: str) -> None:
    proc = await spawn
    child = Child(proc, mark)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    await end_tree(child)
    child.close()


async def run_lines(argv: Sequence[str], *, cwd: str, env: Mapping[str, str] | None,
                    stdin: bytes, on_line: Callable[[bytes], None],
                    on_stderr: Callable[[bytes], None] | None = None) -> Finished:
    """Run ``argv`` with ``stdin``, calling ``on_line`` for each stdout line as it arrives.
    Cancellation (a timeout, Stop, Ctrl-C) ends the whole process tree before it propagates;
    so does a normal exit that leaves background children behind."""
    loop = asyncio.get_running_loop()
    mark = uuid.uuid4().hex
    full_env = {**(env if env is not None else os.environ), MARK_VAR: mark}
    spawn = asyncio.ensure_future(in_thread("spawn", _popen, argv, cwd, full_env))
    try:
        proc = await asyncio.shield(spawn)
    except asyncio.CancelledError:  # cancelled while starting: the process may exist already
        with contextlib.suppress(Exception):
            await finish_uncancelled(asyncio.ensure_future(_end_spawned(spawn, mark)))
        raise
    child = Child(proc, mark)
    assert proc.stdin and proc.stdout and proc.stderr
    transports: list[asyncio.BaseTransport] = []
    tail: deque[bytes] = deque()
    kept = 0

    async def drain_stderr(reader: asyncio.StreamReader) -> None:
        nonlocal kept
        while chunk := await reader.read(65536):
            if on_stderr is not None:
                on_stderr(chunk)
            tail.append(chunk)
            kept += len(chunk)
            while kept - len(tail[0]) > STDERR_KEEP and len(tail) > 1:
                kept -= len(tail.popleft())

    err_task: asyncio.Future[None] | None = None
    try:
        out = asyncio.StreamReader(limit=LINE_LIMIT)
        err = asyncio.StreamReader()
        for pipe, reader in ((proc.stdout, out), (proc.stderr, err)):
            transport, _ = await loop.connect_read_pipe(
                functools.partial(asyncio.StreamReaderProtocol, reader), pipe)
            transports.append(transport)
        writer, _ = await loop.connect_write_pipe(asyncio.Protocol, proc.stdin)
        transports.append(writer)
        writer.write(stdin)  # type: ignore[attr-defined]
        writer.close()  # after the buffer is written; a child that never reads: see below
        err_task = asyncio.ensure_future(drain_stderr(err))
        while True:
            try:
                line = await out.readline()
            except ValueError:  # asyncio's LimitOverrunError, re-raised by readline
                raise OutputTooLong(f"an output line over {LINE_LIMIT} bytes") from None
            if not line:
                break
            on_line(line)
        returncode = await child.exited
        # stderr ends with the process, unless a background child holds it open
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(err_task), GRACE_S)
    except BaseException:
        await finish_uncancelled(asyncio.ensure_future(end_tree(child)))
        raise
    finally:
        if err_task is not None:
            err_task.cancel()
        for transport in transports:
            transport.close()
        child.close()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)  # background children the agent left running
    await sweep(mark)  # and those that started their own session
    text = b"".join(tail).decode(errors="replace")
    return Finished(returncode, text[-STDERR_KEEP:])

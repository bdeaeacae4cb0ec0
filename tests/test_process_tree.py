"""The agent process runner: lines as they come, stdin fed without blocking, and no process of
the tree left behind, even one started in its own session while the tree was being ended."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest

from codexflow_nb.runtimes.process import in_thread, run_lines, run_processes

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")


def _env() -> tuple[dict[str, str], str]:
    run_id = f"test-{uuid.uuid4().hex}"
    return {**os.environ, "CODEXFLOW_RUN_ID": run_id}, run_id


def _run(coro_fn, loop_kind: str):  # type: ignore[no-untyped-def]
    if loop_kind == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro_fn())
    finally:
        loop.close()


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_kind(request: pytest.FixtureRequest) -> str:
    if request.param == "uvloop":
        pytest.importorskip("uvloop")
    return str(request.param)


def test_lines_stdin_and_status(loop_kind: str) -> None:
    lines: list[bytes] = []
    errors: list[bytes] = []

    async def main():  # type: ignore[no-untyped-def]
        big = await run_lines(["sh", "-c", "wc -c; echo oops >&2; exit 3"], cwd="/tmp", env=None,
                              stdin=b"x" * 300_000, on_line=lines.append,
                              on_stderr=errors.append)
        # a child that never reads its (large) stdin still ends normally
        deaf = await run_lines(["sh", "-c", "echo hi"], cwd="/tmp", env=None,
                               stdin=b"y" * 1_000_000, on_line=lines.append)
        return big, deaf

    big, deaf = _run(main, loop_kind)
    assert lines == [b"300000\n", b"hi\n"]
    assert (big.returncode, big.stderr, b"".join(errors)) == (3, "oops\n", b"oops\n")
    assert deaf.returncode == 0


def test_cancel_ends_a_child_started_in_its_own_session_while_ending(loop_kind: str) -> None:
    """On SIGTERM the process starts a child in a new session and exits at once: the child is
    in no process group we signal and, its parent gone, no longer its descendant. It carries
    the run's mark, which is how it is still found and ended."""
    env, run_id = _env()
    script = ("trap 'setsid sleep 300 & exit 0' TERM; echo ready; "
              "while :; do sleep 0.05; done")

    async def main() -> None:
        ready = asyncio.Event()
        job = asyncio.ensure_future(run_lines(["sh", "-c", script], cwd="/tmp", env=env,
                                              stdin=b"", on_line=lambda _: ready.set()))
        await asyncio.wait_for(ready.wait(), 30)
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job

    _run(main, loop_kind)
    assert run_processes({run_id}) == []


def test_normal_exit_leaves_no_background_process(loop_kind: str) -> None:
    env, run_id = _env()

    async def main():  # type: ignore[no-untyped-def]
        return await run_lines(["sh", "-c", "setsid sleep 300 >/dev/null 2>&1 & "
                                "sleep 300 >/dev/null 2>&1 & echo done"],
                               cwd="/tmp", env=env, stdin=b"", on_line=lambda _: None)

    assert _run(main, loop_kind).returncode == 0
    assert run_processes({run_id}) == []


def test_in_thread_lets_the_loop_run_and_finishes_before_a_cancel_goes_on() -> None:
    import threading
    import time

    done = threading.Event()

    def slow() -> str:
        time.sleep(0.3)
        done.set()
        return "ok"

    async def main() -> tuple[int, bool]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticker = asyncio.ensure_future(tick())
        job = asyncio.ensure_future(in_thread("io", slow))
        await asyncio.sleep(0.05)
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job
        ticker.cancel()
        return ticks, done.is_set()

    ticks, finished = _run(main, "asyncio")
    assert finished  # the cancellation waited for the thread's work
    assert ticks > 5  # the loop kept running meanwhile

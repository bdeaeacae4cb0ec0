"""Engine behaviour, measured inside the tests with instrumented runtimes (no wall-clock limits)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import pytest

from codexflow_nb import prepare_run, run, run_async
from codexflow_nb.events import TERMINAL_KINDS
from codexflow_nb.runtimes import Reply, RuntimeCall, RuntimeFailure, StubRuntime

ALIASES = {
    "rev": {"id": "code-analyzer", "overrides": {"runtime": {"concurrency": {"max_parallel_tasks": 2}}}},
    "arch": {"id": "system-architect", "overrides": {"runtime": {"concurrency": {"max_parallel_tasks": 1}}}},
    "wide": {"id": "coder", "overrides": {"runtime": {"concurrency": {"max_parallel_tasks": 3}}}},
}


class Recorder(StubRuntime):
    """A stub that records how many tasks of each alias run at once, and overlaps."""

    def __init__(self, latency_ms: float = 15.0) -> None:
        super().__init__(latency_ms)
        self.running: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.overlap_seen = False

    async def run(self, call: RuntimeCall, on_chunk=None) -> Reply:
        self.running[call.alias] += 1
        self.peak[call.alias] = max(self.peak[call.alias], self.running[call.alias])
        if sum(1 for v in self.running.values() if v) > 1:
            self.overlap_seen = True
        try:
            return await super().run(call, on_chunk)
        finally:
            self.running[call.alias] -= 1


def read_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def tasks_for(n_rev=8, n_arch=3, n_wide=9):
    return {"rev": [f"review {i}" for i in range(n_rev)], "arch": [f"design {i}" for i in range(n_arch)],
            "wide": [f"code {i}" for i in range(n_wide)]}


def test_limits_hold_and_aliases_overlap(workdir):
    rt = Recorder()
    result = run(tasks_for(), aliases=ALIASES, runtime=rt)
    assert result.ok and len(result.tasks) == 20
    assert rt.peak == {"rev": 2, "arch": 1, "wide": 3}
    assert rt.overlap_seen
    events = read_events(workdir / "data/logs/events.jsonl")
    # the log alone shows the same: replay starts/ends and check the running count per alias
    running: Counter[str] = Counter()
    peak: Counter[str] = Counter()
    for e in events:
        if e["kind"] == "task_started":
            running[e["alias"]] += 1
            peak[e["alias"]] = max(peak[e["alias"]], running[e["alias"]])
        elif e["kind"] in TERMINAL_KINDS:
            running[e["alias"]] -= 1
    assert peak == {"rev": 2, "arch": 1, "wide": 3}
    assert sum(1 for e in events if e["kind"] in TERMINAL_KINDS) == 20


def test_global_cap(workdir):
    rt = Recorder()
    run(tasks_for(), aliases=ALIASES, runtime=rt, max_concurrency=2)
    # with a global cap of 2 no more than 2 tasks ever ran at once in total
    events = read_events(workdir / "data/logs/events.jsonl")
    running = peak = 0
    for e in events:
        if e["kind"] == "task_started":
            running += 1
            peak = max(peak, running)
        elif e["kind"] in TERMINAL_KINDS:
            running -= 1
    assert peak == 2


def test_event_schema_and_run_store(workdir):
    result = run({"rev": ["look at x"]}, aliases=ALIASES, runtime=StubRuntime(0))
    events = read_events(workdir / "data/logs/events.jsonl")
    kinds = [e["kind"] for e in events]
    assert kinds == ["run_started", "task_queued", "task_started", "telemetry", "task_complete",
                     "run_complete"]
    for e in events:
        assert e["v"] == 1 and e["runId"] == result.run_id
        assert e["ts"].endswith("Z") and len(e["ts"]) == 24
    done = events[4]
    assert done["ok"] is True and done["usage"]["tokensIn"] > 0 and done["attempt"] == 1
    task = result.tasks[0]
    d = workdir / ".runs" / "rev" / task.task_id
    inp = json.loads((d / "input.json").read_text())
    out = json.loads((d / "output.json").read_text())
    assert inp["agentId"] == "code-analyzer" and inp["task"]["task"] == "look at x"
    assert inp["settings"]["maxParallelTasks"] == 2
    assert out["ok"] is True and out["summary"] == task.summary and out["output"] == task.output


def test_stub_is_deterministic(workdir):
    a = run({"rev": ["same"]}, aliases=ALIASES, runtime=StubRuntime(0), log_file=None, runs_dir=None)
    b = run({"rev": ["same"]}, aliases=ALIASES, runtime=StubRuntime(0), log_file=None, runs_dir=None)
    assert a.tasks[0].output == b.tasks[0].output and a.tasks[0].summary == b.tasks[0].summary
    assert a.tasks[0].usage == b.tasks[0].usage


def test_task_ids_unique_sortable_and_safe(workdir):
    r1 = run(tasks_for(3, 1, 2), aliases=ALIASES, runtime=StubRuntime(0))
    r2 = run(tasks_for(3, 1, 2), aliases=ALIASES, runtime=StubRuntime(0))
    ids = [t.task_id for t in r1.tasks + r2.tasks]
    assert len(set(ids)) == len(ids)
    assert [t.task_id for t in r1.tasks] == sorted(t.task_id for t in r1.tasks)
    assert max(t.task_id for t in r1.tasks) < min(t.task_id for t in r2.tasks)
    assert all(t.replace("-", "").isalnum() for t in ids)


class Slow(StubRuntime):
    async def run(self, call, on_chunk=None):
        if "slow" in call.task:
            await asyncio.sleep(30)
        return await super().run(call, on_chunk)


def test_timeout_is_recorded_and_others_go_on(workdir):
    result = run({"rev": ["slow one", "fast one", "fast two"]}, aliases=ALIASES,
                 runtime=Slow(1), timeout_ms=200)
    status = {t.task: t.status for t in result.tasks}
    assert status == {"slow one": "timeout", "fast one": "completed", "fast two": "completed"}
    events = read_events(workdir / "data/logs/events.jsonl")
    timeout = [e for e in events if e["kind"] == "task_timeout"]
    assert len(timeout) == 1 and timeout[0]["error"]["type"] == "Timeout"
    assert not result.ok


def test_cancellation_gives_every_task_a_terminal_event(workdir):
    async def scenario():
        prepared = prepare_run({"rev": ["slow a", "slow b", "slow c"], "arch": ["slow d"]},
                               aliases=ALIASES, runtime=Slow(1))
        task = asyncio.create_task(prepared.execute())
        while sum(1 for n in prepared.engine.nodes.values() if n.result.attempts) < 3:
            await asyncio.sleep(0.01)
        prepared.cancel("test says stop")
        return await task

    result = asyncio.run(scenario())
    assert {t.status for t in result.tasks} == {"cancelled"}
    assert result.cancelled == "test says stop" and not result.ok
    events = read_events(workdir / "data/logs/events.jsonl")
    terminal = [e for e in events if e["kind"] in TERMINAL_KINDS]
    assert len(terminal) == 4 and {e["kind"] for e in terminal} == {"task_cancelled"}
    assert len({e["taskId"] for e in terminal}) == 4
    assert events[-1]["kind"] == "run_complete" and events[-1]["cancelled"] == "test says stop"
    # cancelled tasks that had started still leave an output.json saying so
    outs = list((workdir / ".runs").rglob("output.json"))
    assert len(outs) == 4
    assert all(json.loads(p.read_text())["status"] == "cancelled" for p in outs)


class Flaky(StubRuntime):
    def __init__(self, fail_times: int, retryable: bool = True) -> None:
        super().__init__(0)
        self.calls: Counter[str] = Counter()
        self.fail_times, self.retryable = fail_times, retryable

    async def run(self, call, on_chunk=None):
        self.calls[call.key] += 1
        if self.calls[call.key] <= self.fail_times:
            raise RuntimeFailure("HTTP 503: busy", type="HTTPError", status=503,
                                 retryable=self.retryable)
        return await super().run(call, on_chunk)


def test_retries_with_backoff(workdir):
    rt = Flaky(2)
    result = run({"rev": ["a"]}, aliases=ALIASES, runtime=rt, retries=2, backoff_base_ms=1)
    assert result.ok and result.tasks[0].attempts == 3
    events = read_events(workdir / "data/logs/events.jsonl")
    assert [e["attempt"] for e in events if e["kind"] == "task_retry"] == [1, 2]
    assert [e for e in events if e["kind"] == "task_complete"][0]["attempt"] == 3


def test_retries_exhausted_and_non_retryable(workdir):
    result = run({"rev": ["a"]}, aliases=ALIASES, runtime=Flaky(5), retries=1, backoff_base_ms=1)
    t = result.tasks[0]
    assert (t.status, t.attempts, t.error["status"]) == ("failed", 2, 503)
    result = run({"rev": ["a"]}, aliases=ALIASES, runtime=Flaky(5, retryable=False), retries=3)
    assert result.tasks[0].attempts == 1 and result.tasks[0].status == "failed"


def test_stub_retries_default_to_zero(workdir):
    prepared = prepare_run({"rev": ["a"]}, aliases=ALIASES)
    assert prepared.engine._retries == 0


def test_streaming_chunks_are_events_and_saved(workdir):
    result = run({"rev": ["stream me"]}, aliases=ALIASES, runtime=StubRuntime(0, stream=True),
                 stream=True)
    events = read_events(workdir / "data/logs/events.jsonl")
    chunks = [e for e in events if e["kind"] == "task_chunk"]
    assert len(chunks) >= 2 and [c["seq"] for c in chunks] == list(range(1, len(chunks) + 1))
    out = json.loads((workdir / ".runs" / "rev" / result.tasks[0].task_id / "output.json").read_text())
    assert out["chunks"] == "".join(c["content"] for c in chunks) == out["output"]["text"]


def test_run_async_inside_a_running_loop_and_sync_run_too(workdir):
    async def inside():
        a = await run_async({"rev": ["x"]}, aliases=ALIASES, runtime=StubRuntime(0))
        b = run({"rev": ["y"]}, aliases=ALIASES, runtime=StubRuntime(0))  # sync call within a loop
        return a, b

    a, b = asyncio.run(inside())
    assert a.ok and b.ok


def test_outputs_live_on_disk_when_not_kept(workdir):
    result = run({"rev": ["x"]}, aliases=ALIASES, runtime=StubRuntime(0), keep_outputs=False)
    t = result.tasks[0]
    assert t._output is None and t.output["text"].startswith("Code Analyzer")


def test_summary_numbers(workdir):
    result = run(tasks_for(4, 2, 3), aliases=ALIASES, runtime=StubRuntime(1))
    s = result.summary()
    assert s["totalTasks"] == 9
    assert {a: (v["tasks"], v["completed"], v["limit"]) for a, v in s["aliases"].items()} == {
        "rev": (4, 4, 2), "arch": (2, 2, 1), "wide": (3, 3, 3)}
    assert all(v["p95Ms"] >= v["avgMs"] * 0.5 for v in s["aliases"].values())
    text = result.summary_text()
    assert text.startswith("Orchestration Summary") and "system-architect" in text


def test_unknown_option_is_a_clear_error(workdir):
    from codexflow_nb import ConfigError

    with pytest.raises(ConfigError, match="unknown option"):
        prepare_run({"rev": ["x"]}, aliases=ALIASES, bogus=1)


def test_a_failing_view_never_stops_the_engine(workdir):
    seen = []

    def broken(event):
        seen.append(event["kind"])
        raise ValueError("view bug")

    with pytest.warns(RuntimeWarning, match="view bug"):
        result = run(tasks_for(2, 1, 1), aliases=ALIASES, runtime=StubRuntime(0), on_event=broken)
    assert result.ok and len(result.tasks) == 4
    assert seen == ["run_started"]  # dropped after its first failure
    events = read_events(workdir / "data/logs/events.jsonl")
    assert events[-1]["kind"] == "run_complete"


def test_a_slow_run_store_pauses_workers_instead_of_growing_memory(workdir, monkeypatch):
    import time as _time

    from codexflow_nb import engine as engine_mod
    from codexflow_nb.runstore import RunStore

    monkeypatch.setattr(engine_mod, "STORE_BACKLOG", 4)
    real_write = RunStore._write

    def slow_write(item):
        _time.sleep(0.01)
        real_write(item)

    monkeypatch.setattr(RunStore, "_write", staticmethod(slow_write))
    backlog: list[int] = []

    async def scenario():
        prepared = prepare_run({"wide": [f"t{i}" for i in range(40)]}, aliases=ALIASES,
                               runtime=StubRuntime(0))
        store = prepared.engine._store
        prepared.bus.subscribe(lambda e: backlog.append(store.backlog)
                               if e["kind"] == "task_started" else None)
        return await prepared.execute()

    result = asyncio.run(scenario())
    assert result.ok and len(list((workdir / ".runs" / "wide").iterdir())) == 40
    # workers wait while 4 or more tasks are unwritten; at most one per worker slips past
    assert max(backlog) <= 4 + 3


class Instant(StubRuntime):
    """Fails at once, without ever suspending."""

    async def run(self, call, on_chunk=None):
        raise RuntimeFailure("no", type="Refused")


def test_instant_tasks_do_not_starve_the_event_loop(workdir):
    ticks = 0
    seen_at_terminal: list[int] = []

    async def ticker(stop: asyncio.Event) -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    async def scenario():
        stop = asyncio.Event()
        tick_task = asyncio.create_task(ticker(stop))
        result = await run_async({"wide": [f"t{i}" for i in range(200)]}, aliases=ALIASES,
                                 runtime=Instant(0), on_event=lambda e: seen_at_terminal.append(
                                     ticks) if e["kind"] == "task_failed" else None)
        stop.set()
        await tick_task
        return result

    result = asyncio.run(scenario())
    assert len(result.tasks) == 200 and {t.status for t in result.tasks} == {"failed"}
    # other coroutines kept running while the 200 instant tasks went through
    assert seen_at_terminal[-1] - seen_at_terminal[0] >= 50

"""Run analysis on logs written by the engine in the test (stub runtime, small latencies)."""

from __future__ import annotations

import asyncio
import json
import math
import re
import subprocess
import sys
import warnings

import pandas as pd
import pytest

import codexflow_nb
from codexflow_nb import ConfigError, Plan, run_async
from codexflow_nb.analysis import (
    STATUSES,
    EventLogWarning,
    alias_summary,
    concurrency_frame,
    critical_path,
    load_events,
    load_pricing,
    reprice,
    run_summary,
    tasks_frame,
    to_otel,
)
from codexflow_nb.analysis.frames import TASK_COLUMNS
from codexflow_nb.analysis.load import COLUMNS
from codexflow_nb.runtimes import RuntimeFailure, StubRuntime


def limits(**aliases: tuple[str, int]) -> dict:
    return {name: {"id": agent, "overrides": {"runtime": {"concurrency": {"max_parallel_tasks": n}}}}
            for name, (agent, n) in aliases.items()}


class Scripted(StubRuntime):
    """Stub replies, except: ``boom`` fails, ``flaky`` fails its first attempt (retryable),
    ``slow`` never answers in time, ``design`` takes 120 ms."""

    def __init__(self) -> None:
        super().__init__(30)

    async def run(self, call, on_chunk=None):
        if "boom" in call.task:
            raise RuntimeFailure("exploded", type="HTTPError", status=500)
        if "flaky" in call.task and call.attempt == 1:
            raise RuntimeFailure("busy", type="HTTPError", status=503, retryable=True, retry_after=0.05)
        if "slow" in call.task:
            await asyncio.sleep(5)
        if "design" in call.task:
            await asyncio.sleep(0.09)
        return await super().run(call, on_chunk)


STATUS_PLAN = {"phases": [
    {"name": "build", "tasks": [
        *({"id": f"rev-{i}", "alias": "rev", "task": f"Review part {i}"} for i in range(1, 10)),
        {"id": "arch-1", "alias": "arch", "task": "design the module layout"},
        {"id": "arch-2", "alias": "arch", "task": "design the events", "dependsOn": ["arch-1"]},
        {"id": "flaky", "alias": "dev", "task": "flaky fix of the parser"},
        {"id": "boom", "alias": "dev", "task": "boom goes the build"},
        {"id": "slow", "alias": "dev", "task": "slow migration"},
        {"id": "odd", "alias": "rev", "task": "odd request", "tools": ["definitely-not-a-tool"]},
    ]},
    {"name": "ship", "tasks": [
        {"id": "after-boom", "alias": "dev", "task": "package it", "dependsOn": ["boom"]},
        {"id": "final", "alias": "rev", "task": "final review", "dependsOn": ["arch-2"]},
    ]},
]}
STATUS_ALIASES = limits(rev=("code-analyzer", 3), arch=("system-architect", 1), dev=("coder", 3))


@pytest.fixture(scope="module")
def status_run(tmp_path_factory, registry):
    base = tmp_path_factory.mktemp("statuses")
    result = asyncio.run(run_async(
        plan=STATUS_PLAN, aliases=STATUS_ALIASES, runtime=Scripted(), registry=registry,
        log_file=base / "events.jsonl", runs_dir=base / "runs", retries=1, backoff_base_ms=10,
        timeout_ms=400, strict_tools=True))
    return base, result


@pytest.fixture(scope="module")
def packed_run(tmp_path_factory, registry):
    """1 alias, limit 2, 8 equal tasks: a perfectly packed run."""
    base = tmp_path_factory.mktemp("packed")
    result = asyncio.run(run_async(
        {"w": [f"job {i}" for i in range(8)]}, aliases=limits(w=("code-analyzer", 2)),
        registry=registry, latency_ms=120, log_file=base / "events.jsonl", runs_dir=base / "runs"))
    return base, result


@pytest.fixture(scope="module")
def status_tasks(status_run):
    return tasks_frame(load_events(status_run[0] / "events.jsonl"))


def test_events_columns_and_types(status_run):
    base, result = status_run
    ev = load_events(base / "events.jsonl")
    lines = (base / "events.jsonl").read_text().splitlines()
    assert list(ev.columns) == [*COLUMNS, "seq"]
    assert len(ev) == len(lines)
    assert str(ev["ts"].dtype) == "datetime64[us, UTC]"
    for col in ("kind", "run", "alias", "agent", "model", "error_type", "runtime", "source"):
        assert isinstance(ev[col].dtype, pd.CategoricalDtype), col
    assert ev["ms"].dtype == "float64" and ev["delay_ms"].dtype == "float64"
    for col in ("tokens_in", "tokens_out", "attempt", "phase", "limit", "error_status", "v"):
        assert str(ev[col].dtype) == "Int64", col
    assert str(ev["ok"].dtype) == "boolean"
    assert ev["seq"].tolist() == list(range(len(ev)))
    assert set(ev["run"].astype(str)) == {result.run_id}
    # every field of every line came through: compare with the JSON itself
    raw = [json.loads(line) for line in lines]
    assert ev["kind"].astype(str).tolist() == [r["kind"] for r in raw]
    for row, r in zip(ev.itertuples(), raw, strict=True):
        assert row.ts == pd.Timestamp(r["ts"])
        assert (None if pd.isna(row.task_id) else row.task_id) == r.get("taskId")
        usage = r.get("usage") or {}
        assert (None if pd.isna(row.tokens_in) else row.tokens_in) == usage.get("tokensIn")
        assert (None if pd.isna(row.tokens_out) else row.tokens_out) == usage.get("tokensOut")
        err = r.get("error") or {}
        assert (None if pd.isna(row.error_type) else row.error_type) == err.get("type")
        assert (None if pd.isna(row.error_message) else row.error_message) == err.get("message")
        if "dependsOn" in r:
            assert row.depends_on == ",".join(r["dependsOn"])
        if "delayMs" in r:
            assert row.delay_ms == r["delayMs"]
        if "limit" in r:
            assert row.limit == r["limit"]


def test_tasks_statuses_and_columns(status_run, status_tasks):
    base, result = status_run
    t = status_tasks.set_index("key")
    assert list(status_tasks.columns) == TASK_COLUMNS
    assert len(t) == len(result.tasks) == 17
    by_key = {r.key: r for r in result.tasks}
    for key, row in t.iterrows():
        assert row["status"] == by_key[key].status, key
        assert row["task_id"] == by_key[key].task_id
        assert (0 if pd.isna(row["attempts"]) else row["attempts"]) == by_key[key].attempts
    assert t.loc["rev-1", "status"] == "completed" and t.loc["boom", "status"] == "failed"
    assert t.loc["slow", "status"] == "timeout" and t.loc["after-boom", "status"] == "skipped"
    assert t.loc["odd", "status"] == "rejected"
    assert t.loc["boom", "error_type"] == "HTTPError" and t.loc["boom", "error_message"] == "exploded"
    assert t.loc["slow", "error_type"] == "Timeout"
    assert t.loc["after-boom", "error_type"] == "DependencyFailed"
    done = t[t["status"] == "completed"]
    assert done["ok"].all() and not t[t["status"] != "completed"]["ok"].any()
    assert (done["model"] == "stub").all()
    assert (done["tokens_in"] == [by_key[k].usage["tokensIn"] for k in done.index]).all()
    assert (done["tokens_out"] == [by_key[k].usage["tokensOut"] for k in done.index]).all()
    assert (done["run_ms"] == [by_key[k].ms for k in done.index]).all()
    assert (done["finished"] >= done["started"]).all() and (done["started"] >= done["queued"]).all()
    assert (t["queued_ms"].dropna() >= 0).all()
    assert t.loc["rev-1", "task"] == "Review part 1" and t.loc["rev-1", "phase"] == 0
    assert t.loc["final", "phase"] == 1 and t.loc["final", "depends_on"] == "arch-2"
    assert (t.loc[[f"rev-{i}" for i in range(1, 10)], "limit"] == 3).all()
    assert t.loc["rev-1", "agent"] == "code-analyzer" and t.loc["arch-1", "alias"] == "arch"
    # never started: no start, no run time, no queue time
    for key in ("after-boom", "odd"):
        assert pd.isna(t.loc[key, "started"]) and pd.isna(t.loc[key, "run_ms"])
    # the flaky task retried once after a 50 ms Retry-After
    assert t.loc["flaky", "status"] == "completed" and t.loc["flaky", "attempts"] == 2
    assert t.loc["flaky", "retries"] == 1 and t.loc["flaky", "backoff_ms"] >= 50
    assert 50 <= t.loc["flaky", "retry_ms"] <= t.loc["flaky", "run_ms"]
    assert t.loc["rev-1", "retries"] == 0 and t.loc["rev-1", "retry_ms"] == 0
    assert set(t["status"].cat.categories) == set(STATUSES)


def test_slot_wait_is_queued_ms(status_tasks):
    t = status_tasks.set_index("key")
    reviews = t.loc[[f"rev-{i}" for i in range(1, 10)]]
    # 9 reviews on 3 slots: the first three start at once, the others wait for a slot
    assert (reviews["queued_ms"] > 20).sum() >= 6
    # arch-2 was queued only when arch-1 finished (dependency), not at the start
    assert t.loc["arch-2", "queued"] >= t.loc["arch-1", "finished"]


def test_cost_from_pricing(status_tasks):
    price = load_pricing().lookup("stub")
    done = status_tasks[status_tasks["status"] == "completed"]
    expected = done["tokens_in"].astype(float) / 1000 * price.input + \
        done["tokens_out"].astype(float) / 1000 * price.output
    assert (done["cost"] - expected).abs().max() < 1e-12
    assert status_tasks.loc[status_tasks["status"] == "failed", "cost"].isna().all()


def test_alias_summary_numbers(status_tasks):
    s = alias_summary(status_tasks)
    assert list(s.index) == ["rev", "arch", "dev"]
    rev = s.loc["rev"]
    assert rev["tasks"] == 11 and rev["completed"] == 10 and rev["rejected"] == 1
    assert rev["limit"] == 3 and rev["peak_concurrency"] == 3  # limit reached under load
    assert rev["success_rate"] == round(10 / 11, 3)  # rounded to 0.1 %
    done = status_tasks[(status_tasks["alias"] == "rev") & (status_tasks["status"] == "completed")]
    assert rev["mean_ms"] == round(done["run_ms"].mean(), 1)  # times to 0.1 ms
    assert rev["p95_ms"] == round(done["run_ms"].quantile(0.95), 1)
    assert rev["max_ms"] == round(done["run_ms"].max(), 1)
    assert rev["tokens_in"] == done["tokens_in"].sum()
    assert rev["cost"] == round(done["cost"].sum(), 8)  # costs to 1e-8 USD
    dev = s.loc["dev"]
    assert (dev["completed"], dev["failed"], dev["timeout"], dev["skipped"]) == (1, 1, 1, 1)
    assert dev["retries"] == 1 and s.loc["arch", "peak_concurrency"] == 1
    assert s[STATUSES].sum(axis=1).tolist() == s["tasks"].tolist()


def test_packed_run_efficiency_and_peak(packed_run):
    base, result = packed_run
    ev = load_events(base / "events.jsonl")
    runs = run_summary(ev)
    assert len(runs) == 1
    r = runs.iloc[0]
    assert r["tasks"] == 8 and r["completed"] == 8 and r["cap"] == 2
    assert r["peak_concurrency"] == 2 and r["sessions"] == 1
    assert r["task_ms"] == pytest.approx(sum(t.ms for t in result.tasks), abs=0.05)
    assert r["efficiency"] > 0.8 and r["efficiency"] <= 1.05
    steps = concurrency_frame(ev)
    assert steps["running"].max() == 2 and steps["running"].min() == 0
    assert steps["running"].iloc[-1] == 0 and (steps["limit"] == 2).all()
    # a step function: +1 per start, -1 per end
    assert len(steps) == 16 and steps["running"].diff().dropna().abs().eq(1).all()


def test_concurrency_resample(packed_run):
    tasks = tasks_frame(load_events(packed_run[0] / "events.jsonl"))
    binned = concurrency_frame(tasks, freq="20ms")
    assert binned["running"].max() == 2
    assert binned["ts"].diff().dropna().eq(pd.Timedelta("20ms")).all()
    per_run = concurrency_frame(tasks, by=None)
    assert list(per_run.columns) == ["run", "ts", "running"] and per_run["running"].max() == 2


def test_run_summary_of_mixed_run(status_run, status_tasks):
    base, result = status_run
    ev = load_events(base / "events.jsonl")
    r = run_summary(status_tasks, ev).iloc[0]
    assert r["tasks"] == 17 and r["completed"] == 13
    # one column per status: a timeout, a skipped or a rejected task is not "failed"
    assert (r["failed"], r["timeout"], r["skipped"], r["rejected"], r["cancelled"]) == (1, 1, 1, 1, 0)
    assert r["cap"] == 7 and r["peak_concurrency"] <= 7
    assert r["retries"] == 1 and r["backoff_ms"] >= 50
    first, last = ev["ts"].min(), ev["ts"].max()
    assert r["makespan_ms"] == pytest.approx((last - first).total_seconds() * 1000)
    assert r["efficiency"] == pytest.approx(r["task_ms"] / (r["makespan_ms"] * 7), abs=5e-4)
    assert r["cost"] == pytest.approx(status_tasks["cost"].sum(), abs=5e-9)


def test_critical_path_follows_dependencies(tmp_path, registry):
    plan = {"phases": [{"name": "all", "tasks": [
        {"id": "a", "alias": "arch", "task": "design the layout"},
        {"id": "b", "alias": "arch", "task": "design the events", "dependsOn": ["a"]},
        {"id": "c", "alias": "rev", "task": "final review", "dependsOn": ["b"]},
        *({"id": f"x{i}", "alias": "rev", "task": f"quick look {i}"} for i in range(4)),
        {"id": "y", "alias": "rev", "task": "after a quick look", "dependsOn": ["x0"]},
    ]}]}
    asyncio.run(run_async(plan=plan, aliases=limits(arch=("system-architect", 1),
                                                    rev=("code-analyzer", 4)),
                          runtime=Scripted(), registry=registry, log_file=tmp_path / "e.jsonl",
                          runs_dir=None))
    ev = load_events(tmp_path / "e.jsonl")
    crit = critical_path(ev)
    # c (after b, after a) ends last: the design chain set the makespan
    assert crit["key"].tolist() == ["a", "b", "c"] and crit["step"].tolist() == [1, 2, 3]
    t = tasks_frame(ev).set_index("key")
    assert crit["finished"].tolist() == t.loc[["a", "b", "c"], "finished"].tolist()
    assert (crit["gap_ms"].iloc[1:] >= 0).all() and crit["offset_ms"].iloc[0] >= 0
    assert crit["offset_ms"].iloc[1] == pytest.approx(
        (t.loc["b", "started"] - ev["ts"].min()).total_seconds() * 1000)
    assert run_summary(ev)["critical_path"].iloc[0] == "a -> b -> c"
    assert critical_path(tasks_frame(ev), run="no-such-run").empty


def test_reprice(status_tasks):
    again = reprice(status_tasks, "gpt-4o")
    price = load_pricing().lookup("openai/gpt-4o")
    done = again[again["status"] == "completed"]
    assert (done["model"] == "gpt-4o").all()
    expected = done["tokens_in"].astype(float) * price.input / 1000 + \
        done["tokens_out"].astype(float) * price.output / 1000
    assert (done["cost"] - expected).abs().max() < 1e-12
    assert (done["cost_before"] == status_tasks.loc[done.index, "cost"]).all()
    with pytest.raises(ConfigError, match="no price for model 'gpt-17'"):
        reprice(status_tasks, "gpt-17")


def test_pricing_lookup_and_user_file(tmp_path, monkeypatch):
    table = load_pricing()
    assert table.lookup("gpt-4o-2024-08-06").model == "gpt-4o"
    assert table.lookup("gpt-4o-mini-2024-07-18").model == "gpt-4o-mini"
    assert table.lookup("anthropic/claude-sonnet-4-20250514").model == "claude-sonnet-4"
    assert table.lookup("llama3.1:8b").provider == "ollama"
    assert table.lookup("gpt-4") is None and table.lookup(None) is None
    assert "illustrative" in table.lookup("stub").note
    user = tmp_path / "prices.yaml"
    user.write_text("providers:\n  acme:\n    rocket-1: {input: 0.5, output: 1.5}\n"
                    "  stub:\n    stub: {input: 0.0, output: 0.0}\n")
    monkeypatch.setenv("CODEXFLOW_PRICING", str(user))
    merged = load_pricing()
    assert merged.lookup("rocket-1").cost(1000, 2000) == pytest.approx(3.5)
    assert merged.lookup("stub").input == 0.0 and merged.lookup("gpt-4o") is not None
    user.write_text("providers:\n  acme:\n    rocket-1: {input: -1}\n")
    with pytest.raises(ConfigError) as exc:
        load_pricing(user)
    assert any("rocket-1.input: expected a number >= 0" in p for p in exc.value.problems)
    assert any("rocket-1.output" in p for p in exc.value.problems)
    with pytest.raises(ConfigError, match="missing.yaml: pricing file not found"):
        load_pricing(tmp_path / "missing.yaml")


def test_unknown_model_costs_nan(status_run):
    base, _ = status_run
    ev = load_events(base / "events.jsonl")
    ev["model"] = ev["model"].cat.rename_categories({"stub": "mystery-model"})
    t = tasks_frame(ev)
    assert t["cost"].isna().all()
    assert math.isnan(alias_summary(t).loc["rev", "cost"])


def test_with_outputs_joins_run_store(status_run):
    base, result = status_run
    t = tasks_frame(load_events(base / "events.jsonl"), with_outputs=True, runs_dir=base / "runs")
    t = t.set_index("key")
    by_key = {r.key: r for r in result.tasks}
    assert t.loc["rev-1", "output"] == by_key["rev-1"].output
    assert t.loc["rev-1", "output"]["alias"] == "rev"
    assert t.loc["boom", "output"] is None
    with pytest.raises(ConfigError, match="no run store"):
        tasks_frame(load_events(base / "events.jsonl"), with_outputs=True, runs_dir=base / "nope")


def test_torn_and_bad_lines_are_skipped_and_reported(packed_run, tmp_path):
    good = (packed_run[0] / "events.jsonl").read_bytes()
    n = good.count(b"\n")
    log = tmp_path / "events.jsonl"
    # a bad line in the middle, a non-UTF-8 line, and a torn last line
    lines = good.splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:5]) + b"this is not json\n" + b"".join(lines[5:9])
                    + b'{"v":1,"kind":"x","ts":"2026-11-25T14:40:55.204Z","alias":"\xff\xfe"}\n'
                    + b"".join(lines[9:]) + b'{"v":1,"ts":"2026-11-25T14:4')
    with pytest.warns(EventLogWarning, match=rf"skipped 3 bad line\(s\): 6, 11, {n + 3}"):
        ev = load_events(log)
    assert len(ev) == n
    assert [b["line"] for b in ev.attrs["bad_lines"]] == [6, 11, n + 3]
    assert ev.attrs["bad_lines"][1]["reason"] == "not UTF-8"
    assert tasks_frame(ev)["status"].eq("completed").sum() == 8


def test_only_torn_last_line_keeps_fast_path(packed_run, tmp_path):
    good = (packed_run[0] / "events.jsonl").read_bytes()
    log = tmp_path / "events.jsonl"
    log.write_bytes(good + b'{"v":1,"ts":"2026-11-25T14:40:55.2')
    with pytest.warns(EventLogWarning, match=r"skipped 1 bad line"):
        ev = load_events(log)
    assert len(ev) == good.count(b"\n")
    assert ev.attrs["bad_lines"][0]["line"] == good.count(b"\n") + 1


def test_torn_line_followed_by_a_later_append(packed_run, tmp_path):
    """A crash tears a line; a resumed run appends after it on the same line."""
    good = (packed_run[0] / "events.jsonl").read_bytes().splitlines(keepends=True)
    log = tmp_path / "events.jsonl"
    log.write_bytes(b"".join(good[:3]) + b'{"v":1,"ts":"2026-11' + b"".join(good[3:]))
    with pytest.warns(EventLogWarning, match="event after it kept"):
        ev = load_events(log)
    assert len(ev) == len(good)


def test_wrong_field_type_is_dropped_not_the_line(packed_run, tmp_path):
    good = (packed_run[0] / "events.jsonl").read_text()
    row = json.loads(good.splitlines()[0])
    row["maxConcurrency"] = "lots"
    log = tmp_path / "events.jsonl"
    log.write_text(json.dumps(row) + "\n" + "\n".join(good.splitlines()[1:]) + "\n")
    with pytest.warns(EventLogWarning, match=r"maxConcurrency \(1 line"):
        ev = load_events(log)
    assert len(ev) == len(good.splitlines()) and pd.isna(ev["max_concurrency"].iloc[0])


NODE_LOG = """\
{"ts":"2025-03-01T10:00:00.000Z","kind":"task_started","alias":"reviewer","agentId":"code-analyzer","taskId":"t1","engine":"codex"}
{"ts":"2025-03-01T10:00:00.010Z","kind":"task_started","alias":"reviewer","agentId":"code-analyzer","taskId":"t2","engine":"codex"}
{"ts":"2025-03-01T10:00:01.500Z","kind":"telemetry","alias":"reviewer","agentId":"code-analyzer","taskId":"t1","ms":1500,"engine":"codex"}
{"ts":"2025-03-01T10:00:01.500Z","kind":"task_complete","alias":"reviewer","agentId":"code-analyzer","taskId":"t1","ok":true,"ms":1500,"engine":"codex"}
{"ts":"2025-03-01T10:00:02.010Z","kind":"task_complete","alias":"reviewer","agentId":"code-analyzer","taskId":"t2","ok":false,"ms":2000,"engine":"codex"}
"""


def test_node_tool_log_loads(tmp_path):
    log = tmp_path / "old-run.jsonl"
    log.write_text(NODE_LOG)
    ev = load_events(log)
    assert len(ev) == 5 and set(ev["run"].astype(str)) == {"node:old-run.jsonl"}
    assert ev["v"].isna().all() and (ev["runtime"] == "codex").all()
    assert ev["kind"].astype(str).tolist()[-1] == "task_failed"  # ok:false on task_complete
    t = tasks_frame(ev).set_index("key")
    assert t.loc["t1", "status"] == "completed" and t.loc["t1", "run_ms"] == 1500
    assert t.loc["t2", "status"] == "failed" and t.loc["t2", "run_ms"] == 2000
    assert pd.isna(t.loc["t1", "queued"]) and t.loc["t1", "agent"] == "code-analyzer"
    r = run_summary(ev).iloc[0]
    assert r["peak_concurrency"] == 2 and r["tasks"] == 2 and pd.isna(r["cap"])
    both = load_events([log, tmp_path / "old-run.jsonl"])  # the same file twice: same run
    assert len(both) == 10 and both["ts"].is_monotonic_increasing


def test_resumed_run_is_one_run(tmp_path, registry, monkeypatch):
    monkeypatch.chdir(tmp_path)

    class Flaky(StubRuntime):
        fail = True

        async def run(self, call, on_chunk=None):
            if self.fail and "flaky" in call.task:
                raise RuntimeFailure("no", type="HTTPError", status=500)
            return await super().run(call, on_chunk)

    tasks = {"rev": ["first", "flaky one", "third"]}
    opts = {"aliases": limits(rev=("code-analyzer", 2)), "registry": registry,
            "log_file": "events.jsonl", "runs_dir": "runs"}
    first = asyncio.run(run_async(tasks, runtime=Flaky(5), **opts))
    fixed = Flaky(5)
    fixed.fail = False
    second = asyncio.run(run_async(tasks, runtime=fixed, resume=first.run_id, **opts))
    assert second.run_id == first.run_id
    ev = load_events("events.jsonl")
    t = tasks_frame(ev)
    assert len(t) == 3 and (t["status"] == "completed").all()  # the latest terminal event wins
    r = run_summary(ev).iloc[0]
    assert r["sessions"] == 2 and r["completed"] == 3


def test_cancelled_tasks(tmp_path, cancelled_run):
    cancelled_run(tmp_path / "e.jsonl", limits(rev=("code-analyzer", 2)), tmp_path / "runs")
    ev = load_events(tmp_path / "e.jsonl")
    t = tasks_frame(ev)
    assert (t["status"] == "cancelled").all() and len(t) == 6
    assert t["started"].notna().sum() == 2 and (t["error_message"] == "enough").all()
    # counted as cancelled, never as failed
    r = run_summary(ev).iloc[0]
    assert (r["tasks"], r["completed"], r["cancelled"], r["failed"]) == (6, 0, 6, 0)
    assert r[STATUSES].sum() == r["tasks"]
    s = alias_summary(t).loc["rev"]
    assert (s["cancelled"], s["failed"], s["timeout"]) == (6, 0, 0)
    # the critical path is made of tasks that ran, not the last task cancelled before it started
    crit = critical_path(ev)
    ran = set(t.loc[t["started"].notna(), "key"])
    assert len(crit) == 1 and set(crit["key"]) <= ran


def test_displayed_tables_are_rounded(status_run, status_tasks):
    ev = load_events(status_run[0] / "events.jsonl")
    tables = {"aliases": alias_summary(status_tasks), "runs": run_summary(status_tasks, ev),
              "critical path": critical_path(status_tasks, ev)}
    for name, frame in tables.items():
        for col in frame.select_dtypes("float").columns:
            values = frame[col].dropna()
            places = 8 if col == "cost" else 3 if col in ("success_rate", "efficiency",
                                                          "retry_share") else 1
            assert (values.round(places) == values).all(), (name, col)
        # as a notebook shows them (the run summary is shown transposed: object columns)
        for text in (frame.to_string(), frame.T.to_string(), frame.to_html()):
            assert not re.search(r"\d\.\d{9,}", text), name
    assert tables["runs"]["efficiency"].iloc[0] == round(tables["runs"]["efficiency"].iloc[0], 3)


def test_filters_runs_and_since(packed_run, status_run, tmp_path):
    log = tmp_path / "both.jsonl"
    log.write_bytes((packed_run[0] / "events.jsonl").read_bytes()
                    + (status_run[0] / "events.jsonl").read_bytes())
    ev = load_events(log)
    assert ev["run"].nunique() == 2
    only = load_events(log, runs=status_run[1].run_id)
    assert set(only["run"].astype(str)) == {status_run[1].run_id}
    cut = ev["ts"].iloc[len(ev) // 2]
    later = load_events(log, since=cut.isoformat())
    assert len(later) == (ev["ts"] >= cut).sum() and later["ts"].min() >= cut
    assert len(load_events(log, since="1000D")) == len(ev)
    with pytest.raises(ConfigError, match="neither a time"):
        load_events(log, since="yesterday-ish")


def test_missing_and_empty_logs(tmp_path):
    with pytest.raises(ConfigError, match="no such event log"):
        load_events(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("")
    ev = load_events(tmp_path / "empty.jsonl")
    assert len(ev) == 0 and list(ev.columns) == [*COLUMNS, "seq"]
    t = tasks_frame(ev)
    assert len(t) == 0 and list(t.columns) == TASK_COLUMNS
    assert len(alias_summary(t)) == 0 and len(run_summary(t)) == 0
    assert len(concurrency_frame(t)) == 0 and len(critical_path(t)) == 0
    assert to_otel(ev)["resourceSpans"][0]["scopeSpans"][0]["spans"] == []


def test_otlp_export(status_run, status_tasks):
    base, result = status_run
    doc = to_otel(load_events(base / "events.jsonl"))
    rs = doc["resourceSpans"][0]
    assert {"key": "service.name", "value": {"stringValue": "codex-flow"}} in rs["resource"]["attributes"]
    spans = rs["scopeSpans"][0]["spans"]
    root, children = spans[0], spans[1:]
    assert len(children) == 17 and "parentSpanId" not in root
    assert len(root["traceId"]) == 32 and all(len(s["spanId"]) == 16 for s in spans)
    assert all(s["traceId"] == root["traceId"] and s["parentSpanId"] == root["spanId"]
               for s in children)
    assert len({s["spanId"] for s in spans}) == len(spans)
    for s in spans:
        assert int(s["startTimeUnixNano"]) <= int(s["endTimeUnixNano"])
        assert isinstance(s["startTimeUnixNano"], str)

    def attrs(span):
        return {a["key"]: next(iter(a["value"].values())) for a in span["attributes"]}

    by_key = {attrs(s)["codexflow.task.key"]: s for s in children}
    rev = attrs(by_key["rev-1"])
    t = status_tasks.set_index("key")
    assert rev["gen_ai.operation.name"] == "invoke_agent" and rev["gen_ai.agent.name"] == "rev"
    assert rev["gen_ai.agent.id"] == "code-analyzer" and rev["gen_ai.response.model"] == "stub"
    assert rev["gen_ai.usage.input_tokens"] == str(t.loc["rev-1", "tokens_in"])
    assert rev["gen_ai.usage.output_tokens"] == str(t.loc["rev-1", "tokens_out"])
    assert by_key["rev-1"]["status"] == {"code": 1}
    assert by_key["boom"]["status"] == {"code": 2, "message": "exploded"}
    assert attrs(by_key["slow"])["error.type"] == "Timeout"
    assert by_key["after-boom"]["status"]["code"] == 0
    started = pd.Timestamp(t.loc["rev-1", "started"])
    assert int(by_key["rev-1"]["startTimeUnixNano"]) == started.value
    retry = by_key["flaky"]["events"]
    assert len(retry) == 1 and retry[0]["name"] == "retry"
    assert attrs(root)["gen_ai.operation.name"] == "invoke_workflow"
    assert root["status"]["code"] == 2 and "4 of 17" in root["status"]["message"]
    json.dumps(doc)  # serialisable as is


def test_import_stays_light():
    code = ("import sys, codexflow_nb, codexflow_nb.cli; "
            "print(sorted(m for m in ('pandas', 'pyarrow', 'plotly') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert codexflow_nb.load_events is load_events  # the lazy attribute


def test_plan_keys_match_engine(status_run):
    """The fixture's plan is valid as written (guards the fixture itself)."""
    assert len(Plan.from_data(STATUS_PLAN)) == 17
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_events(status_run[0] / "events.jsonl")  # a clean log loads without warnings


def _load_in_a_child(cwd, target: str, prefix: list[str] | None = None) -> str:
    """``load_events(target)`` in a fresh interpreter (a hang fails instead of stalling the
    run; ``prefix`` runs it without read rights): the ConfigError's message."""
    import os
    from pathlib import Path

    code = ("from codexflow_nb import ConfigError\nfrom codexflow_nb.analysis import load_events\n"
            f"try:\n    load_events({target!r})\nexcept ConfigError as exc:\n"
            "    print(repr(str(exc)))\nelse:\n    print(repr('no error'))\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.run([*(prefix or []), sys.executable, "-c", code], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    return eval(proc.stdout.strip())


@pytest.mark.parametrize("target, problem", [
    ("pipe", "pipe: not a regular file (a FIFO, device or socket cannot be an event log)"),
    ("/dev/zero", "/dev/zero: not a regular file"),
    ("logs", "logs/pipe.jsonl: not a regular file"),  # a FIFO among a folder's logs
])
def test_load_events_refuses_special_files_in_one_line(tmp_path, target, problem):
    import os

    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "a.jsonl").write_text("")
    os.mkfifo(tmp_path / "logs" / "pipe.jsonl")
    line = _load_in_a_child(tmp_path, target)
    assert "\n" not in line and problem in line, line


def test_load_events_names_an_unreadable_log_or_folder(status_run, tmp_path, no_read_rights):
    """Python API users get the ConfigError line the CLI prints, not a bare PermissionError."""
    prefix = no_read_rights
    base, _ = status_run
    secret = tmp_path / "secret.jsonl"
    secret.write_bytes((base / "events.jsonl").read_bytes())
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "events.jsonl").write_bytes(secret.read_bytes())
    for path in (secret, locked):
        path.chmod(0)
    try:
        assert _load_in_a_child(tmp_path, "secret.jsonl", prefix) == (
            "secret.jsonl: cannot read the event log: Permission denied")
        assert _load_in_a_child(tmp_path, "locked", prefix) == (
            "locked: cannot read the folder: Permission denied")
    finally:
        for path in (secret, locked):
            path.chmod(0o700)

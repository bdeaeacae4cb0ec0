"""Resume (``resume=RUN_ID``): only tasks without a successful terminal event run again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codexflow_nb import ConfigError, prepare_run, run
from codexflow_nb.events import TERMINAL_KINDS
from codexflow_nb.resume import completed_keys, scan_run
from codexflow_nb.runtimes import RuntimeCall, RuntimeFailure, StubRuntime

ALIASES = {
    "rev": {"id": "code-analyzer", "overrides": {"runtime": {"concurrency": {"max_parallel_tasks": 2}}}},
    # share everything with everyone so dependants see their dependencies' outputs
    "dev": {"id": "coder", "overrides": {"memory": {"sharing_policy": {"share_with": ["*"]}}}},
}
LOG = Path("data/logs/events.jsonl")


class Recording(StubRuntime):
    """A stub that fails tasks whose text contains ``flaky`` (when told to) and records calls."""

    def __init__(self, fail_flaky: bool) -> None:
        super().__init__(0)
        self.fail_flaky = fail_flaky
        self.calls: list[RuntimeCall] = []

    async def run(self, call, on_chunk=None):
        self.calls.append(call)
        if self.fail_flaky and "flaky" in call.task:
            raise RuntimeFailure("upstream said no", type="HTTPError", status=500)
        return await super().run(call, on_chunk)


def plan_data() -> dict:
    return {"phases": [
        {"name": "build", "tasks": [
            {"id": "a", "alias": "dev", "task": "write module a"},
            {"id": "b", "alias": "dev", "task": "write flaky module b"},
            {"id": "c", "alias": "rev", "task": "review something"}]},
        {"name": "check", "tasks": [
            {"id": "after-a", "alias": "rev", "task": "review a", "dependsOn": ["a"]},
            {"id": "after-b", "alias": "rev", "task": "review b", "dependsOn": ["b"]},
            {"id": "after-ab", "alias": "rev", "task": "review a and b", "dependsOn": ["a", "b"]}]},
    ]}


def events_of(run_id: str) -> list[dict]:
    out = []
    for line in LOG.read_text().splitlines():
        event = json.loads(line)
        if event["runId"] == run_id:
            out.append(event)
    return out


def test_resume_reruns_only_unsuccessful_tasks_under_the_same_run_id(workdir):
    first_rt = Recording(fail_flaky=True)
    first = run(plan=plan_data(), aliases=ALIASES, runtime=first_rt)
    status = {t.key: t.status for t in first.tasks}
    assert status == {"a": "completed", "b": "failed", "c": "completed", "after-a": "completed",
                      "after-b": "skipped", "after-ab": "skipped"}
    ids_before = {t.key: t.task_id for t in first.tasks}

    rt = Recording(fail_flaky=False)
    resumed = run(plan=plan_data(), aliases=ALIASES, runtime=rt, resume=first.run_id)
    assert resumed.run_id == first.run_id and resumed.ok
    assert sorted(c.key for c in rt.calls) == ["after-ab", "after-b", "b"]
    # the same task ids (so the same .runs folders), and restored results for resumed tasks
    assert {t.key: t.task_id for t in resumed.tasks} == ids_before
    by_key = {t.key: t for t in resumed.tasks}
    assert by_key["a"].summary and by_key["a"].output["text"]
    # a re-run dependant receives the saved output of a dependency that ran in the first pass
    ctx = {c["key"]: c for c in next(c for c in rt.calls if c.key == "after-ab").context}
    assert ctx["a"]["output"] == first.tasks[0].output and ctx["a"]["summary"]

    events = events_of(first.run_id)
    starts = [e for e in events if e["kind"] == "run_started"]
    assert len(starts) == 2 and starts[1]["resumed"] == 3
    assert [e["kind"] for e in events].count("run_complete") == 2
    ok_keys = {e["key"] for e in events if e["kind"] == "task_complete" and e["ok"]}
    assert ok_keys == set(status)
    # the second segment starts only the re-run tasks
    second = events[events.index(starts[1]):]
    assert sorted(e["key"] for e in second if e["kind"] == "task_started") == ["after-ab", "after-b", "b"]
    for key, task_id in ids_before.items():
        out = json.loads(Path(".runs", "dev" if key in "ab" else "rev", task_id, "output.json").read_text())
        assert out["ok"] is True, key


def test_resuming_a_finished_run_runs_nothing(workdir):
    first = run({"rev": ["x", "y"]}, aliases=ALIASES, runtime=StubRuntime(0))
    rt = Recording(fail_flaky=False)
    again = run({"rev": ["x", "y"]}, aliases=ALIASES, runtime=rt, resume=first.run_id)
    assert again.ok and rt.calls == []
    assert [t.summary for t in again.tasks] == [t.summary for t in first.tasks]


def test_a_logged_success_without_its_output_runs_again(workdir):
    first = run({"rev": ["x", "y", "z"]}, aliases=ALIASES, runtime=StubRuntime(0))
    lost = first.tasks[1]
    (Path(".runs") / lost.alias / lost.task_id / "output.json").unlink()
    rt = Recording(fail_flaky=False)
    run({"rev": ["x", "y", "z"]}, aliases=ALIASES, runtime=rt, resume=first.run_id)
    assert [c.key for c in rt.calls] == [lost.key]
    # without a run store the log alone decides
    plan_keys = completed_keys(LOG, first.run_id, prepare_run(
        {"rev": ["x", "y", "z"]}, aliases=ALIASES, log_file=None).engine.plan)
    assert plan_keys == {"rev-1", "rev-2", "rev-3"}


def test_torn_last_line_and_foreign_lines_are_ignored(workdir):
    first = run({"rev": ["x", "y"]}, aliases=ALIASES, runtime=StubRuntime(0))
    with LOG.open("a") as fh:
        fh.write('{"v":1,"kind":"task_complete","runId":"' + first.run_id + '","key":"rev-')
    found = scan_run(LOG, first.run_id)
    assert set(found.succeeded) == {"rev-1", "rev-2"} and found.segments == 1


@pytest.mark.parametrize("tasks, problem", [
    ({"rev": ["x", "y", "extra"]}, "the run had 2 tasks, this plan has 3"),
    ({"rev": ["x", "changed"]}, "task 'rev-2' has a different text"),
    ({"dev": ["x", "y"]}, "task 'rev-1' of the run is not in this plan"),
])
def test_resume_refuses_a_different_plan(workdir, tasks, problem):
    first = run({"rev": ["x", "y"]}, aliases=ALIASES, runtime=StubRuntime(0))
    with pytest.raises(ConfigError) as info:
        prepare_run(tasks, aliases=ALIASES, resume=first.run_id)
    assert any(problem in p and first.run_id in p for p in info.value.problems), info.value.problems


def test_resume_errors_are_clear(workdir):
    with pytest.raises(ConfigError, match="no event log at"):
        prepare_run({"rev": ["x"]}, aliases=ALIASES, resume="20260101T000000000-abcdef")
    run({"rev": ["x"]}, aliases=ALIASES, runtime=StubRuntime(0))
    with pytest.raises(ConfigError, match="no such run"):
        prepare_run({"rev": ["x"]}, aliases=ALIASES, resume="20260101T000000000-abcdef")
    with pytest.raises(ConfigError, match="not a safe name"):
        prepare_run({"rev": ["x"]}, aliases=ALIASES, resume="../../etc")
    with pytest.raises(ConfigError, match="without an event log"):
        prepare_run({"rev": ["x"]}, aliases=ALIASES, resume="20260101T000000000-abcdef",
                    log_file=None)


def test_every_task_of_a_resumed_run_has_one_terminal_event_per_segment(workdir):
    first = run(plan=plan_data(), aliases=ALIASES, runtime=Recording(fail_flaky=True))
    run(plan=plan_data(), aliases=ALIASES, runtime=Recording(fail_flaky=False), resume=first.run_id)
    events = events_of(first.run_id)
    split = [i for i, e in enumerate(events) if e["kind"] == "run_started"][1]
    first_terms = [e["key"] for e in events[:split] if e["kind"] in TERMINAL_KINDS]
    second_terms = [e["key"] for e in events[split:] if e["kind"] in TERMINAL_KINDS]
    assert sorted(first_terms) == sorted(t.key for t in first.tasks)
    assert sorted(second_terms) == ["after-ab", "after-b", "b"]

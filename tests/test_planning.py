"""Plans and the planner: validation, dependency-driven scheduling, skip-on-failure, the selector,
the heuristic and LLM decomposers (against a local ``planner`` endpoint), and ``--revise-plan``."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from servers import ServerThread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from codexflow_nb import prepare_run
from codexflow_nb.aliases import Aliases
from codexflow_nb.cli import main
from codexflow_nb.errors import ConfigError, PlanError
from codexflow_nb.events import TERMINAL_KINDS
from codexflow_nb.plan import Plan
from codexflow_nb.planner import (
    AliasBook,
    PlannerWarning,
    decompose_heuristic,
    decompose_llm,
    make_reviser,
    plan_data_from_reply,
    select_agents,
)
from codexflow_nb.registry import BUNDLED_AGENTS, load_registry
from codexflow_nb.runtimes import Reply, RuntimeCall, RuntimeFailure, make_runtime

# -- helpers ----------------------------------------------------------------------------------


class ScriptedRuntime:
    """A runtime whose tasks can wait for one another and fail on purpose; it stamps every call
    with ``time.perf_counter()`` at start and end."""

    name = "scripted"
    default_retries = 0

    def __init__(self, *, fail: set[str] = frozenset(), outputs: dict[str, Any] | None = None,
                 wait_for: dict[str, str] | None = None) -> None:
        self.fail = set(fail)
        self.outputs = outputs or {}
        self.wait_for = wait_for or {}  # key -> key whose start it waits for
        self.started: dict[str, asyncio.Event] = {}
        self.start: dict[str, float] = {}
        self.end: dict[str, float] = {}
        self.calls: dict[str, RuntimeCall] = {}

    def _event(self, key: str) -> asyncio.Event:
        return self.started.setdefault(key, asyncio.Event())

    async def open(self, max_connections: int) -> None:
        return None

    async def close(self) -> None:
        return None

    async def run(self, call: RuntimeCall, on_chunk: Any = None) -> Reply:
        self.start[call.key] = time.perf_counter()
        self.calls[call.key] = call
        self._event(call.key).set()
        try:
            if call.key in self.wait_for:
                await asyncio.wait_for(self._event(self.wait_for[call.key]).wait(), 5)
            else:
                await asyncio.sleep(0)
            if call.key in self.fail:
                raise RuntimeFailure(f"{call.key} failed on purpose", type="Scripted")
            output = self.outputs.get(call.key, {"text": f"did {call.task}"})
            return Reply(summary=f"summary of {call.key}", output=output)
        finally:
            self.end[call.key] = time.perf_counter()


def run_plan(plan: Any, runtime: Any, **kw: Any) -> tuple[Any, list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    kw.setdefault("log_file", None)
    kw.setdefault("runs_dir", None)
    run = prepare_run(plan=plan, runtime=runtime, on_event=events.append, **kw)
    return asyncio.run(run.execute()), events


def index_of(events: list[dict[str, Any]], kind: str, key: str) -> int:
    return next(i for i, e in enumerate(events) if e["kind"] == kind and e.get("key") == key)


def terminal_counts(events: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in events:
        if e["kind"] in TERMINAL_KINDS:
            out[e["key"]] = out.get(e["key"], 0) + 1
    return out


class PlannerServer(ServerThread):
    """A local endpoint playing the ``planner`` agent (``POST /run``), on a free 127.0.0.1 port."""

    def __init__(self) -> None:
        self.replies: list[Any] = []
        self.requests: list[dict[str, Any]] = []

        async def handle(request: Request) -> JSONResponse:
            doc = json.loads(await request.body())
            self.requests.append(doc)
            reply = self.replies.pop(0) if self.replies else {"summary": "none", "output": "nothing"}
            return JSONResponse(reply)

        super().__init__(Starlette(routes=[Route("/run", handle, methods=["POST"])]))


@pytest.fixture
def planner_server():
    with PlannerServer() as server:
        yield server


GOAL = "Add a REST endpoint for user profiles with a database schema migration and unit tests"
VALID_PLAN = {"phases": [
    {"name": "design", "tasks": [{"id": "schema", "alias": "database-architect",
                                  "task": "Design the profile table"}]},
    {"name": "build", "mode": "parallel", "tasks": [
        {"id": "api", "alias": "backend-dev", "task": "Implement GET /profiles/{id}"},
        {"id": "tests", "alias": "unit-tester", "task": "Unit tests for the endpoint",
         "dependsOn": ["api"]}]},
]}


# -- validation -------------------------------------------------------------------------------

def _problems(data: Any, registry, aliases: Aliases | None = None) -> str:
    with pytest.raises(PlanError) as info:
        Plan.from_data(data).validate(registry, aliases or Aliases())
    return "\n".join(info.value.problems)


def test_validation_empty_plan(registry):
    assert "the plan is empty" in _problems({"phases": []}, registry)
    assert "the plan is empty" in _problems({"phases": [{"tasks": []}]}, registry)


def test_validation_duplicate_id(registry):
    text = _problems({"phases": [{"tasks": [{"id": "a", "alias": "coder", "task": "x"}]},
                                 {"tasks": [{"id": "a", "alias": "tester", "task": "y"}]}]}, registry)
    assert "duplicate task id 'a'" in text


def test_validation_unknown_alias(registry):
    text = _problems([{"tasks": [{"id": "a", "alias": "no-such-agent", "task": "x"}]}], registry)
    assert "'no-such-agent' is neither an alias" in text


def test_validation_unknown_dependency(registry):
    text = _problems([{"tasks": [{"id": "a", "alias": "coder", "task": "x", "dependsOn": ["ghost"]}]}],
                     registry)
    assert "task 'a' depends on unknown task 'ghost'" in text


def test_validation_self_dependency(registry):
    text = _problems([{"tasks": [{"id": "a", "alias": "coder", "task": "x", "dependsOn": ["a"]}]}],
                     registry)
    assert "task 'a' depends on itself" in text


def test_validation_cycle_names_the_tasks(registry):
    text = _problems([{"tasks": [
        {"id": "a", "alias": "coder", "task": "x", "dependsOn": ["c"]},
        {"id": "b", "alias": "coder", "task": "y", "dependsOn": ["a"]},
        {"id": "c", "alias": "coder", "task": "z", "dependsOn": ["b"]},
        {"id": "free", "alias": "coder", "task": "w"}]}], registry)
    assert "dependency cycle: a -> c -> b -> a" in text


def test_validation_reports_every_problem_at_once(registry):
    text = _problems([{"tasks": [{"id": "a", "alias": "nobody", "task": "x", "dependsOn": ["zz"]},
                                 {"id": "a", "alias": "coder", "task": "y"}]}], registry)
    assert "duplicate task id 'a'" in text and "nobody" in text and "unknown task 'zz'" in text


def test_malformed_plan_documents(registry):
    with pytest.raises(PlanError, match="'phases'"):
        Plan.from_data("just text")
    with pytest.raises(PlanError, match="mode: must be 'parallel' or 'sequential'"):
        Plan.from_data([{"mode": "sideways", "tasks": [{"alias": "coder", "task": "x"}]}])


# -- scheduling -------------------------------------------------------------------------------

def test_task_starts_when_its_dependency_is_done_not_at_the_phase_border(workdir):
    # "slow" cannot finish until "early" has started: if "early" waited for the whole first
    # phase, "slow" would wait forever (the runtime gives up after 5 s and the test fails).
    plan = {"phases": [
        {"name": "one", "tasks": [{"id": "slow", "alias": "coder", "task": "slow"},
                                  {"id": "dep", "alias": "tester", "task": "quick"}]},
        {"name": "two", "tasks": [{"id": "early", "alias": "researcher", "task": "needs dep",
                                   "dependsOn": ["dep"]},
                                  {"id": "late", "alias": "planner", "task": "needs all"}]}]}
    rt = ScriptedRuntime(wait_for={"slow": "early"})
    result, events = run_plan(plan, rt)
    assert result.ok, [t.error for t in result.tasks]
    # ordering from the event stream: dep done -> early queued/started -> slow done -> late
    assert index_of(events, "task_complete", "dep") < index_of(events, "task_queued", "early") \
        < index_of(events, "task_started", "early") < index_of(events, "task_complete", "slow") \
        < index_of(events, "task_started", "late")
    # and from the runtime's perf counters: early began after dep ended, while slow still ran
    assert rt.end["dep"] <= rt.start["early"] < rt.end["slow"] <= rt.start["late"]
    # "late" has the implicit phase dependency on both tasks of phase one
    queued = {e["key"]: e["dependsOn"] for e in events if e["kind"] == "task_queued"}
    assert queued["early"] == ["dep"] and sorted(queued["late"]) == ["dep", "slow"]


def test_sequential_phase_runs_in_order(workdir):
    plan = [{"mode": "sequential", "tasks": [{"id": k, "alias": "coder", "task": k}
                                              for k in ("s1", "s2", "s3")]}]
    rt = ScriptedRuntime()
    _, events = run_plan(plan, rt)
    assert rt.end["s1"] <= rt.start["s2"] and rt.end["s2"] <= rt.start["s3"]
    assert index_of(events, "task_complete", "s1") < index_of(events, "task_started", "s2")


def test_failed_dependency_skips_dependants_transitively(workdir):
    plan = [{"tasks": [{"id": "a", "alias": "coder", "task": "a"},
                       {"id": "ok", "alias": "tester", "task": "fine"}]},
            {"tasks": [{"id": "b", "alias": "coder", "task": "b", "dependsOn": ["a"]},
                       {"id": "c", "alias": "tester", "task": "c", "dependsOn": ["ok"]}]},
            {"tasks": [{"id": "d", "alias": "coder", "task": "d", "dependsOn": ["b"]}]}]
    result, events = run_plan(plan, ScriptedRuntime(fail={"a"}))
    status = {t.key: t.status for t in result.tasks}
    assert status == {"a": "failed", "ok": "completed", "b": "skipped", "c": "completed",
                      "d": "skipped"}
    skipped = {e["key"]: e for e in events if e["kind"] == "task_skipped"}
    assert skipped["b"]["error"] == {"type": "DependencyFailed",
                                     "message": "dependency 'a' ended failed"}
    assert skipped["d"]["error"]["message"] == "dependency 'b' ended skipped"
    assert not any(e["kind"] == "task_started" and e["key"] in ("b", "d") for e in events)
    assert terminal_counts(events) == {k: 1 for k in status}
    assert not result.ok


def test_continue_on_failure_runs_dependants(workdir):
    plan = [{"tasks": [{"id": "a", "alias": "coder", "task": "a"}]},
            {"tasks": [{"id": "b", "alias": "coder", "task": "b"}]}]
    rt = ScriptedRuntime(fail={"a"})
    result, _ = run_plan(plan, rt, continue_on_failure=True)
    assert {t.key: t.status for t in result.tasks} == {"a": "failed", "b": "completed"}
    assert rt.calls["b"].context is None  # a failed dependency passes no context


# -- selector and heuristic decomposer --------------------------------------------------------

def test_selector_scores_with_reasons(registry):
    shortlist = select_agents(GOAL, registry)
    by_agent = {c.agent: c for c in shortlist}
    assert shortlist[0].agent == "database-architect"
    assert "trigger keyword 'endpoint'" in by_agent["backend-dev"].why()
    assert any(r.startswith("trigger regex (priority 8) matched 'unit tests'")
               for r in by_agent["unit-tester"].reasons)
    assert any("description mentions" in r for r in by_agent["api-designer"].reasons)
    assert [c.score for c in shortlist] == sorted((c.score for c in shortlist), reverse=True)
    assert select_agents("zzz qqq", registry) == []


def test_alias_book_picks_sensible_aliases(registry):
    book = AliasBook(registry, Aliases())  # default aliases: reviewer -> code-analyzer, architect
    assert book.alias_for("system-architect") == "architect"
    assert book.alias_for("coder") == "coder"
    assert book.alias_for("reviewer") == "reviewer-agent"  # "reviewer" is taken
    assert book.alias_for("reviewer") == "reviewer-agent"  # once: the same alias again
    resolved = book.aliases().resolve("reviewer-agent", registry)
    assert resolved.agent_id == "reviewer"
    assert list(book.extra) == ["reviewer-agent"]


def test_alias_book_numbers_further_aliases_and_never_hides_an_agent(registry):
    taken = Aliases({"reviewer": {"id": "code-analyzer"}, "reviewer-agent": {"id": "coder"},
                     "tester": {"id": "tester", "overrides": {"runtime": {"autonomy_level": 0.1}}}})
    book = AliasBook(registry, taken)
    assert book.alias_for("reviewer") == "reviewer-agent-2"
    assert book.alias_for("tester") == "tester-agent"  # the user's "tester" has overrides
    assert book.alias_for("coder") == "reviewer-agent"  # an alias bound to it as it is
    resolved = book.aliases()
    assert resolved.resolve("reviewer-agent-2", registry).agent_id == "reviewer"
    assert resolved.resolve("tester-agent", registry).effective == registry.get("tester").data


def test_alias_book_names_agents_of_a_shared_id_by_their_path(tmp_path):
    agents = tmp_path / "agents"
    shutil.copytree(BUNDLED_AGENTS, agents)
    (agents / "index.json").unlink()
    (agents / "triggers.json").unlink()
    (agents / "quality").mkdir()
    shutil.copy(agents / "core" / "reviewer.codex.yaml", agents / "quality")
    registry = load_registry(agents)
    assert {a.key for a in registry if a.id == "reviewer"} == {"core/reviewer", "quality/reviewer"}
    book = AliasBook(registry, Aliases())
    assert book.alias_for("core/reviewer") == "core-reviewer"
    assert book.alias_for("quality/reviewer") == "quality-reviewer"
    resolved = book.aliases()
    assert resolved.resolve("core-reviewer", registry).agent.key == "core/reviewer"
    planned = decompose_heuristic("zzz qqq", registry)
    assert [t.alias for t in planned.plan.tasks] == ["planner", "coder", "tester",
                                                      "quality-reviewer"]


def test_heuristic_decomposer_phases(registry):
    planned = decompose_heuristic(GOAL, registry)
    plan = planned.plan
    assert [p.name for p in plan.phases] == ["plan & design", "build", "test & validate"]
    agents = [[planned.aliases.resolve(t.alias, registry).agent_id for t in p.tasks]
              for p in plan.phases]
    assert agents[0][0] == "planner" and "database-architect" in agents[0]
    assert "backend-dev" in agents[1]
    assert "unit-tester" in agents[2] and "reviewer" in agents[2]
    assert all(t.meta["routedBy"] for t in plan.tasks)
    assert all(t.phase == i for i, p in enumerate(plan.phases) for t in p.tasks)
    plan.validate(registry, planned.aliases)
    with pytest.raises(ConfigError, match="empty"):
        decompose_heuristic("   ", registry)


def test_heuristic_decomposer_defaults_without_matches(registry):
    planned = decompose_heuristic("zzz qqq", registry)
    agents = [t.alias for t in planned.plan.tasks]
    assert agents == ["planner", "coder", "tester", "reviewer-agent"]


# -- LLM decomposer ---------------------------------------------------------------------------

def _llm(server: PlannerServer, registry) -> Any:
    runtime = make_runtime("codex", url=server.url)
    return asyncio.run(decompose_llm(GOAL, registry, None, runtime=runtime))


def test_llm_decomposer_valid_plan(planner_server, registry):
    planner_server.replies.append({"summary": "plan", "output": VALID_PLAN})
    planned = _llm(planner_server, registry)
    assert not planned.warnings and not planned.plan.events
    assert [t.key for t in planned.plan.tasks] == ["schema", "api", "tests"]
    assert planned.plan.edges()["tests"] == ("api",) and planned.plan.edges()["api"] == ("schema",)
    request = planner_server.requests[0]
    assert request["agentId"] == "planner" and GOAL in request["task"]
    assert "reviewer-agent: Reviewer" in request["task"]  # the catalog names usable aliases


def test_llm_decomposer_accepts_json_text(planner_server, registry):
    text = "Here you go:\n```json\n" + json.dumps(VALID_PLAN) + "\n```"
    planner_server.replies.append({"summary": "plan", "output": {"text": text}})
    assert [t.key for t in _llm(planner_server, registry).plan.tasks] == ["schema", "api", "tests"]


def test_llm_decomposer_cycle_falls_back_loudly(planner_server, registry, workdir):
    cyclic = {"phases": [{"tasks": [
        {"id": "x", "alias": "coder", "task": "x", "dependsOn": ["y"]},
        {"id": "y", "alias": "tester", "task": "y", "dependsOn": ["x"]}]}]}
    planner_server.replies.append({"summary": "plan", "output": cyclic})
    with pytest.warns(PlannerWarning, match="using the heuristic plan instead: planner reply: "
                                            "dependency cycle: x -> y -> x"):
        planned = _llm(planner_server, registry)
    assert planned.plan.source == "planner (heuristic)"
    assert "dependency cycle: x -> y -> x" in planned.warnings[0]
    (note,) = planned.plan.events
    assert note["kind"] == "decomposer_invalid" and "x -> y -> x" in note["reason"]
    # the note lands in the run's log right after run_started
    run = prepare_run(plan=planned.plan, aliases=planned.aliases, registry=registry,
                      runtime="stub", latency_ms=0)
    asyncio.run(run.execute())
    events = [json.loads(x) for x in (workdir / "data/logs/events.jsonl").read_text().splitlines()]
    assert [e["kind"] for e in events[:2]] == ["run_started", "decomposer_invalid"]
    assert events[1]["runId"] == run.run_id and events[1]["fallback"] == "heuristic"


def test_llm_decomposer_not_json_falls_back(planner_server, registry):
    planner_server.replies.append({"summary": "Sure! First, design. Then build.",
                                   "output": "Phase 1: design the schema. Phase 2: build it."})
    with pytest.warns(PlannerWarning):
        planned = _llm(planner_server, registry)
    assert planned.plan.source == "planner (heuristic)"
    assert "the planner reply is not JSON" in planned.plan.events[0]["reason"]


def test_llm_decomposer_unknown_alias_is_invalid(planner_server, registry):
    planner_server.replies.append({"summary": "p", "output": [
        {"tasks": [{"alias": "wizard", "task": "magic"}]}]})
    with pytest.warns(PlannerWarning):
        planned = _llm(planner_server, registry)
    assert "'wizard' is neither an alias" in planned.plan.events[0]["reason"]


def test_llm_decomposer_unreachable_endpoint_is_a_config_error(registry):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    runtime = make_runtime("codex", url=f"http://127.0.0.1:{port}")
    with pytest.raises(ConfigError, match="the planner agent failed"):
        asyncio.run(decompose_llm(GOAL, registry, runtime=runtime))


def test_plan_data_from_reply_shapes():
    assert plan_data_from_reply(Reply("s", {"plan": VALID_PLAN})) == VALID_PLAN
    assert plan_data_from_reply(Reply(json.dumps(VALID_PLAN), None)) == VALID_PLAN
    with pytest.raises(ValueError, match="not JSON"):
        plan_data_from_reply(Reply("no", "no plan here"))


# -- --revise-plan ----------------------------------------------------------------------------

def test_heuristic_revision_adds_follow_up_and_holds_later_phases(registry, workdir):
    plan = Plan.from_data([{"name": "look", "tasks": [{"id": "scan", "alias": "coder",
                                                       "task": "scan the repo"}]},
                           {"name": "next", "tasks": [{"id": "check", "alias": "tester",
                                                       "task": "run the checks"}]}])
    plan.reviser = make_reviser(registry, Aliases())
    rt = ScriptedRuntime(outputs={"scan": {"text": "the terraform module leaks state"}})
    result, events = run_plan(plan, rt, registry=registry)
    revised = [e for e in events if e["kind"] == "plan_revised"]
    assert len(revised) == 1 and revised[0]["phase"] == 0 and revised[0]["removed"] == []
    (added,) = revised[0]["added"]
    assert added["alias"] == "infra-engineer" and added["dependsOn"] == ["scan"]
    assert "terraform" in added["meta"]["routedBy"]
    assert revised[0]["aliases"]["infra-engineer"]["agentId"] == "infra-engineer"
    # nothing of phase two was queued before the revision, and the new task ran
    rev_at = events.index(revised[0])
    assert index_of(events, "task_queued", "check") > rev_at
    assert {t.key: t.status for t in result.tasks}[added["id"]] == "completed"
    assert terminal_counts(events) == {t.key: 1 for t in result.tasks}
    assert len(result.tasks) == 3


def test_heuristic_revision_adds_fix_task_after_failure(registry, workdir):
    plan = Plan.from_data([{"tasks": [{"id": "build", "alias": "coder", "task": "build it"}]},
                           {"tasks": [{"id": "ship", "alias": "release-manager", "task": "ship",
                                       "dependsOn": []}]}])
    plan.reviser = make_reviser(registry, Aliases())
    result, events = run_plan(plan, ScriptedRuntime(fail={"build"}), registry=registry)
    (revised,) = [e for e in events if e["kind"] == "plan_revised"]
    assert [a["id"] for a in revised["added"]] == ["fix-build"]
    assert "build failed on purpose" in revised["added"][0]["task"]
    assert {t.key: t.status for t in result.tasks} == {
        "build": "failed", "ship": "completed", "fix-build": "completed"}


def test_llm_revision_replaces_remaining_phases(planner_server, registry, workdir):
    plan = Plan.from_data(VALID_PLAN)
    plan.reviser = make_reviser(registry, Aliases(), decomposer="llm",
                                runtime=make_runtime("codex", url=planner_server.url), goal=GOAL)
    revised_phase = [{"name": "build", "tasks": [
        {"id": "api", "alias": "backend-dev", "task": "Implement GET and PUT /profiles/{id}"},
        {"id": "docs", "alias": "api-docs-writer", "task": "Document the endpoint",
         "dependsOn": ["schema"]}]},
        {"name": "verify", "tasks": [{"id": "verify", "alias": "unit-tester", "task": "Test it"}]}]
    planner_server.replies += [{"summary": "revised", "output": {"phases": revised_phase}},
                               {"summary": "revised", "output": "no more changes"}]
    rt = ScriptedRuntime(outputs={"schema": {"table": "profiles", "secrets": "hunter2"}})
    result, events = run_plan(plan, rt, registry=registry)
    revised = [e for e in events if e["kind"] == "plan_revised"]
    assert len(revised) == 1
    assert revised[0]["removed"] == ["tests"]
    assert [a["id"] for a in revised[0]["added"]] == ["docs", "verify"]
    assert [c["id"] for c in revised[0]["changed"]] == ["api"]
    assert {t.key: t.status for t in result.tasks} == {
        "schema": "completed", "api": "completed", "docs": "completed", "verify": "completed"}
    assert rt.end["api"] <= rt.start["verify"] and rt.end["docs"] <= rt.start["verify"]
    assert rt.calls["api"].task == "Implement GET and PUT /profiles/{id}"
    # the planner saw the finished task's summary; not its output: database-architect's
    # sharing policy does not name the planner
    (ctx,) = planner_server.requests[0]["context"]
    assert ctx["key"] == "schema" and ctx["summary"] == "summary of schema"
    assert "output" not in ctx
    # the second revision (after "build") was not JSON: logged, plan unchanged
    invalid = [e for e in events if e["kind"] == "decomposer_invalid"]
    assert len(invalid) == 1 and invalid[0]["stage"] == "revise" and invalid[0]["phase"] == 1
    assert terminal_counts(events) == {"schema": 1, "api": 1, "docs": 1, "verify": 1}


def test_llm_revision_with_cycle_is_rejected(planner_server, registry, workdir):
    plan = Plan.from_data(VALID_PLAN)
    plan.reviser = make_reviser(registry, Aliases(), decomposer="llm",
                                runtime=make_runtime("codex", url=planner_server.url))
    planner_server.replies.append({"summary": "r", "output": {"phases": [{"tasks": [
        {"id": "api", "alias": "backend-dev", "task": "x", "dependsOn": ["tests"]},
        {"id": "tests", "alias": "unit-tester", "task": "y", "dependsOn": ["api"]}]}]}})
    result, events = run_plan(plan, ScriptedRuntime(), registry=registry)
    (invalid,) = [e for e in events if e["kind"] == "decomposer_invalid"]
    assert "dependency cycle" in invalid["reason"]
    assert not any(e["kind"] == "plan_revised" for e in events)
    assert result.ok and [t.key for t in result.tasks] == ["schema", "api", "tests"]


# -- CLI --------------------------------------------------------------------------------------

def test_cli_goal_plans_and_runs(workdir, capsys):
    code = main(["run", "--goal", GOAL, "--stub-latency-ms", "1", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Plan (" in captured.err and "routed: selector: trigger keyword 'endpoint'" in captured.err
    summary = json.loads(captured.out)
    assert summary["ok"] and "database-architect" in summary["aliases"]
    assert summary["aliases"]["reviewer-agent"]["agentId"] == "reviewer"


def test_cli_goal_with_llm_decomposer(workdir, capsys, planner_server):
    planner_server.replies.append({"summary": "plan", "output": VALID_PLAN})
    code = main(["run", "--goal", GOAL, "--decomposer", "llm", "--codex-url", planner_server.url,
                 "--stub-latency-ms", "1"])
    out = capsys.readouterr().out
    assert code == 0 and "Plan (3 tasks, 2 phases" in out


def test_cli_goal_llm_invalid_warns_and_falls_back(workdir, capsys, planner_server):
    planner_server.replies.append({"summary": "plan", "output": "not a plan"})
    code = main(["run", "--goal", GOAL, "--decomposer", "llm", "--codex-url", planner_server.url,
                 "--stub-latency-ms", "1"])
    captured = capsys.readouterr()
    assert code == 0
    assert captured.err.count("the planner's plan is invalid") == 1  # said once, as a CLI line
    assert "codex-flow: warning: the planner's plan is invalid, using the heuristic plan" \
        in captured.err
    log = (workdir / "data/logs/events.jsonl").read_text()
    assert '"kind":"decomposer_invalid"' in log


def test_cli_revise_plan_with_plan_file(workdir, capsys):
    Path("plan.json").write_text(json.dumps(VALID_PLAN))
    code = main(["run", "--plan-file", "plan.json", "--revise-plan", "--stub-latency-ms", "1"])
    assert code == 0, capsys.readouterr().err
    kinds = [json.loads(x)["kind"] for x in Path("data/logs/events.jsonl").read_text().splitlines()]
    assert kinds.count("plan_revised") == 1  # after phase one; nothing follows phase two


@pytest.mark.parametrize("argv, message", [
    (["--revise-plan", "--example"], "--revise-plan needs --goal or --plan-file"),
    (["--goal", "x y", "--example"], "choose one of --goal, --example"),
    (["--goal", "build it", "--decomposer", "llm"], "--decomposer llm asks the endpoint"),
    (["--goal", "   "], "the goal is empty"),
])
def test_cli_planning_errors_exit_2(workdir, capsys, argv, message):
    assert main(["run", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not Path("data").exists() and not Path(".runs").exists()


def test_reviser_error_is_logged_and_the_plan_goes_on(registry, workdir):
    plan = Plan.from_data(VALID_PLAN)

    async def broken(engine: Any, phase: int) -> None:
        raise ValueError("reviser bug")

    plan.reviser = broken
    result, events = run_plan(plan, ScriptedRuntime(), registry=registry)
    (failed,) = [e for e in events if e["kind"] == "plan_revision_failed"]
    assert failed["phase"] == 0 and failed["error"] == {"type": "ValueError",
                                                        "message": "reviser bug"}
    assert result.ok and len(result.tasks) == 3


def test_cancel_during_revision_ends_every_task(registry, workdir):
    plan = Plan.from_data(VALID_PLAN)
    revising = asyncio.Event()

    async def stuck(engine: Any, phase: int) -> None:
        revising.set()
        await asyncio.sleep(60)

    plan.reviser = stuck
    events: list[dict[str, Any]] = []
    run = prepare_run(plan=plan, runtime=ScriptedRuntime(), registry=registry, log_file=None,
                      runs_dir=None, on_event=events.append)

    async def main_() -> Any:
        task = asyncio.create_task(run.execute())
        await asyncio.wait_for(revising.wait(), 5)
        run.cancel("stop")
        return await task

    result = asyncio.run(main_())
    assert {t.key: t.status for t in result.tasks} == {
        "schema": "completed", "api": "cancelled", "tests": "skipped"}  # after api: skipped
    assert terminal_counts(events) == {"schema": 1, "api": 1, "tests": 1}
    assert not any(e["kind"] == "task_started" and e["key"] != "schema" for e in events)


def test_revise_plan_refuses_dependencies_on_later_phases(registry, workdir, capsys):
    data = [{"tasks": [{"id": "a", "alias": "coder", "task": "a", "dependsOn": ["b"]}]},
            {"tasks": [{"id": "b", "alias": "tester", "task": "b", "dependsOn": []}]}]
    plan = Plan.from_data(data)
    result, _ = run_plan(plan, ScriptedRuntime())  # fine without a reviser
    assert result.ok
    Path("plan.json").write_text(json.dumps(data))
    assert main(["run", "--plan-file", "plan.json", "--revise-plan"]) == 2
    err = capsys.readouterr().err
    assert "task 'a' (phase 1) depends on 'b' of a later phase (phase 2)" in err
    assert not Path("data").exists()
    plan.reviser = make_reviser(registry)  # the engine refuses it too (Python API)
    with pytest.raises(PlanError, match="of a later phase"):
        run_plan(plan, ScriptedRuntime())

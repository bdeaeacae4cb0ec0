"""Collaboration: context from dependencies (sharing policy, redaction), the context bus, and
``--strict-tools``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from servers import ServerThread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from codexflow_nb import prepare_run
from codexflow_nb.cli import main
from codexflow_nb.context import publish, read
from codexflow_nb.events import TERMINAL_KINDS
from codexflow_nb.runtimes import Reply, RuntimeCall

SECRET_OUTPUT = {"patch": "fix the parser", "secrets": {"token": "s3cr3t"},
                 "nested": [{"api_keys": ["k-123"], "keep": 1}]}
REDACTED = {"patch": "fix the parser", "nested": [{"keep": 1}]}  # coder redacts both keys


class Collaborator:
    """A runtime that records each call; tasks can publish and read bus notes while they run."""

    name = "collab"
    default_retries = 0

    def __init__(self, outputs: dict[str, Any] | None = None,
                 notes: dict[str, tuple[str, Any]] | None = None) -> None:
        self.outputs = outputs or {}
        self.notes = notes or {}  # key -> (topic, data) to publish
        self.calls: dict[str, RuntimeCall] = {}
        self.read: dict[str, list[dict[str, Any]]] = {}

    async def open(self, max_connections: int) -> None:
        return None

    async def close(self) -> None:
        return None

    async def run(self, call: RuntimeCall, on_chunk: Any = None) -> Reply:
        self.calls[call.key] = call
        await asyncio.sleep(0)
        if call.key in self.notes:
            publish(*self.notes[call.key])
        self.read[call.key] = read("findings")
        return Reply(summary=f"summary of {call.key}", output=self.outputs.get(call.key, {"ok": 1}))


def run_plan(plan: Any, runtime: Any, **kw: Any) -> tuple[Any, list[dict[str, Any]], Any]:
    events: list[dict[str, Any]] = []
    kw.setdefault("log_file", None)
    kw.setdefault("runs_dir", None)
    run = prepare_run(plan=plan, runtime=runtime, on_event=events.append, **kw)
    return asyncio.run(run.execute()), events, run


TWO_PHASES = {"phases": [
    {"name": "build", "tasks": [{"id": "impl", "alias": "coder", "task": "implement it"},
                                {"id": "design", "alias": "system-architect", "task": "design"}]},
    {"name": "check", "tasks": [
        {"id": "check", "alias": "tester", "task": "test it", "dependsOn": ["impl", "design"]},
        {"id": "explore", "alias": "researcher", "task": "look around",
         "dependsOn": ["impl", "design"]},
        {"id": "solo", "alias": "tester", "task": "no deps", "dependsOn": []}]},
]}


# -- context ----------------------------------------------------------------------------------

def test_context_carries_summaries_and_shared_redacted_outputs(workdir):
    rt = Collaborator(outputs={"impl": SECRET_OUTPUT,
                               "design": {"diagram": "boxes", "api_keys": "x"}})
    result, _, _ = run_plan(TWO_PHASES, rt)
    assert result.ok
    check = {c["key"]: c for c in rt.calls["check"].context}
    # coder shares with tester: output given, with coder's redact keys removed at any depth
    assert check["impl"]["summary"] == "summary of impl"
    assert check["impl"]["output"] == REDACTED
    assert check["impl"]["alias"] == "coder" and check["impl"]["agentId"] == "coder"
    assert check["impl"]["taskId"] == next(t.task_id for t in result.tasks if t.key == "impl")
    # system-architect shares with "*": every reader gets it, redacted
    assert check["design"]["output"] == {"diagram": "boxes"}
    # coder does not share with researcher: the summary only
    explore = {c["key"]: c for c in rt.calls["explore"].context}
    assert "output" not in explore["impl"] and explore["impl"]["summary"] == "summary of impl"
    assert explore["design"]["output"] == {"diagram": "boxes"}
    assert rt.calls["solo"].context is None  # no dependencies, no context
    assert rt.calls["impl"].context is None


def test_share_with_names_aliases_too(workdir):
    aliases = {
        "writer": {"id": "coder", "overrides": {"memory": {"sharing_policy": {
            "share_with": ["qa"], "redact": ["secrets"]}}}},
        "qa": {"id": "researcher"},
        "other": {"id": "tester"},
    }
    plan = [{"tasks": [{"id": "w", "alias": "writer", "task": "write"}]},
            {"tasks": [{"id": "q", "alias": "qa", "task": "read"},
                       {"id": "o", "alias": "other", "task": "read"}]}]
    rt = Collaborator(outputs={"w": {"text": "t", "secrets": "x", "api_keys": "kept"}})
    run_plan(plan, rt, aliases=aliases)
    assert rt.calls["q"].context[0]["output"] == {"text": "t", "api_keys": "kept"}
    assert "output" not in rt.calls["o"].context[0]  # tester is not named by the override


class EchoEndpoint(ServerThread):
    """A local codex endpoint that records request bodies and replies per task."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

        async def handle(request: Request) -> JSONResponse:
            doc = json.loads(await request.body())
            self.bodies.append(doc)
            return JSONResponse({"summary": f"did {doc['task']}", "output": SECRET_OUTPUT})

        super().__init__(Starlette(routes=[Route("/run", handle, methods=["POST"])]))


def test_context_reaches_the_codex_endpoint(workdir):
    plan = [{"tasks": [{"id": "impl", "alias": "coder", "task": "implement"}]},
            {"tasks": [{"id": "check", "alias": "tester", "task": "verify"}]}]
    with EchoEndpoint() as endpoint:
        result, _, _ = run_plan(plan, "codex", url=endpoint.url)
    assert result.ok, [t.error for t in result.tasks]
    first, second = endpoint.bodies
    assert "context" not in first
    (item,) = second["context"]
    assert item["key"] == "impl" and item["summary"] == "did implement"
    assert item["output"] == REDACTED
    assert "s3cr3t" not in json.dumps(second)


# -- context bus ------------------------------------------------------------------------------

def test_context_bus_sharing_and_redaction(workdir):
    plan = [{"tasks": [{"id": "impl", "alias": "coder", "task": "find bugs"}]},
            {"tasks": [{"id": "check", "alias": "tester", "task": "read notes"},
                       {"id": "explore", "alias": "researcher", "task": "read notes"}]}]
    rt = Collaborator(notes={"impl": ("findings", {"bug": "off by one", "secrets": "pw",
                                                   "api_keys": ["k"]})})
    result, events, run = run_plan(plan, rt, log_file="data/logs/events.jsonl")
    assert result.ok
    note = {"topic": "findings", "alias": "coder", "data": {"bug": "off by one"}}
    assert rt.read["check"] == [note]  # coder shares with tester, redacted
    assert rt.read["explore"] == []  # ...but not with researcher
    assert rt.read["impl"] == [note]  # a publisher reads its own notes
    (published,) = [e for e in events if e["kind"] == "context_published"]
    assert published["data"] == {"bug": "off by one"} and published["key"] == "impl"
    assert published["alias"] == "coder" and published["topic"] == "findings"
    assert published["shareWith"] == ["reviewer", "tester", "planner"]
    # the note persists with the run, redacted
    log = Path("data/logs/events.jsonl").read_text()
    assert '"kind":"context_published"' in log and "pw" not in log
    # and the bus can be read after the run through the API
    assert run.engine.context_bus.read("tester", "findings") == [note]
    assert run.engine.context_bus.read("researcher") == []
    assert run.engine.context_bus.subscribe("tester", "other-topic") == []


def test_bus_functions_need_a_running_task():
    with pytest.raises(RuntimeError, match="only inside a running task"):
        publish("t", {})
    with pytest.raises(RuntimeError, match="only inside a running task"):
        read()


# -- strict tools -----------------------------------------------------------------------------

STRICT_PLAN = [{"tasks": [
    {"id": "field", "alias": "planner", "task": "sketch the plan", "tools": ["shell"]},
    {"id": "backticks", "alias": "coder", "task": "tag the release; use `git` for it"},
    {"id": "not-allowed", "alias": "coder", "task": "Run browser checks on the page"},
    {"id": "allowed", "alias": "coder", "task": "use grep to find callers"},
    {"id": "plain", "alias": "coder", "task": "use a cache and run quickly"},
    {"id": "field-ok", "alias": "tester", "task": "check", "tools": ["run_tests"]},
]}, {"tasks": [{"id": "after", "alias": "tester", "task": "verify",
                "dependsOn": ["backticks"]}]}]


def test_strict_tools_rejects_before_running(workdir):
    rt = Collaborator()
    result, events, _ = run_plan(STRICT_PLAN, rt, strict_tools=True)
    status = {t.key: t.status for t in result.tasks}
    assert status == {"field": "rejected", "backticks": "rejected", "not-allowed": "rejected",
                      "allowed": "completed", "plain": "completed", "field-ok": "completed",
                      "after": "skipped"}
    rejected = {e["key"]: e for e in events if e["kind"] == "task_rejected"}
    assert rejected["field"]["error"] == {
        "type": "ToolNotAllowed",
        "message": "tool 'shell' is restricted for agent planner (alias planner)"}
    assert "tool 'git' is restricted for agent coder" in rejected["backticks"]["error"]["message"]
    assert rejected["not-allowed"]["error"]["message"] == (
        "tool 'browser' is not in the allowed tools of agent coder (alias coder): read_file, "
        "write_file, grep, search, run_tests, shell")
    # rejected tasks never reached the runtime and never started
    assert set(rt.calls) == {"allowed", "plain", "field-ok"}
    assert not any(e["kind"] == "task_started" and e["key"] in rejected for e in events)
    counts: dict[str, int] = {}
    for e in events:
        if e["kind"] in TERMINAL_KINDS:
            counts[e["key"]] = counts.get(e["key"], 0) + 1
    assert counts == {k: 1 for k in status}


def test_without_strict_tools_everything_runs(workdir):
    result, _, _ = run_plan(STRICT_PLAN, Collaborator())
    assert result.ok


def test_cli_strict_tools(workdir, capsys):
    Path("tasks.json").write_text(json.dumps({"planner": [{"task": "plan", "tools": ["git"]}],
                                              "coder": ["use grep to look"]}))
    code = main(["run", "-f", "tasks.json", "--strict-tools", "--stub-latency-ms", "1"])
    assert code == 1
    kinds = [json.loads(x) for x in Path("data/logs/events.jsonl").read_text().splitlines()]
    (rejected,) = [e for e in kinds if e["kind"] == "task_rejected"]
    assert rejected["alias"] == "planner" and "tool 'git'" in rejected["error"]["message"]
    capsys.readouterr()

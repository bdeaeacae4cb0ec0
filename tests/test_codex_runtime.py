"""The codex runtime end to end: the engine against the real demo endpoint (uvicorn on a free
loopback port) and against a misbehaving endpoint for each failure mode."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import RawServer, ServerThread, closed_port, misbehaving_app

from codexflow_nb.api import RunResult, run_async
from codexflow_nb.events import TERMINAL_KINDS
from codexflow_nb.registry import Registry
from codexflow_nb.runtimes import make_runtime
from codexflow_nb.runtimes.codex import CodexRuntime, parse_retry_after, reply_from
from codexflow_nb.server import create_app

TOKEN = "sk-test-Zq81-never-log-me"
TASKS = {"reviewer": ["Review engine.py for races", "Review the task-map parser"],
         "system-architect": ["Design the event schema versioning policy"]}
ONE = {"reviewer": ["Review engine.py for races"]}


@pytest.fixture(scope="module")
def echo_url(registry: Registry) -> Iterator[str]:
    with ServerThread(create_app(registry)) as server:
        yield server.url


@pytest.fixture(scope="module")
def auth_url(registry: Registry) -> Iterator[str]:
    with ServerThread(create_app(registry, token=TOKEN, chunk_delay_ms=1)) as server:
        yield server.url


@pytest.fixture(scope="module")
def bad_url() -> Iterator[str]:
    with ServerThread(misbehaving_app()) as server:
        yield server.url


def run_codex(tmp_path: Path, url: str, tasks: dict[str, list[str]] = TASKS,
              **options: Any) -> tuple[RunResult, list[dict[str, Any]]]:
    """Run ``tasks`` with the codex runtime; check one terminal event per task."""
    options.setdefault("backoff_base_ms", 5)
    result = asyncio.run(run_async(tasks, runtime="codex", url=url, log_file=tmp_path / "events.jsonl",
                                   runs_dir=tmp_path / ".runs", **options))
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    terminal = [e for e in events if e["kind"] in TERMINAL_KINDS]
    assert len(terminal) == len(result.tasks) == sum(len(v) for v in tasks.values())
    assert sorted(e["taskId"] for e in terminal) == sorted(t.task_id for t in result.tasks)
    return result, events


def output_of(tmp_path: Path, event: dict[str, Any]) -> dict[str, Any]:
    return json.loads((tmp_path / ".runs" / event["alias"] / event["taskId"] / "output.json").read_text())


def terminal_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["kind"] in TERMINAL_KINDS]


# -- success --------------------------------------------------------------------------------
def test_json_run_against_the_echo_endpoint(tmp_path: Path, echo_url: str) -> None:
    result, events = run_codex(tmp_path, echo_url)
    assert result.ok and result.runtime == "codex"
    for event in terminal_events(events):
        assert event["kind"] == "task_complete" and event["attempt"] == 1
        assert event["usage"]["tokensIn"] > 0 and event["usage"]["tokensOut"] > 0
        out = output_of(tmp_path, event)
        assert out["ok"] and out["output"]["provider"] == "echo"
        assert out["output"]["agentId"] == event["agentId"]
    by_alias = {e["alias"]: output_of(tmp_path, e) for e in terminal_events(events)}
    assert by_alias["reviewer"]["summary"].startswith("Review outline:")
    assert by_alias["system-architect"]["summary"].startswith("Design outline:")
    assert not [e for e in events if e["kind"] == "task_chunk"]


def test_streaming_run_emits_chunks_and_saves_them(tmp_path: Path, auth_url: str) -> None:
    result, events = run_codex(tmp_path, auth_url, api_key=TOKEN, stream=True)
    assert result.ok
    for event in terminal_events(events):
        chunks = [e for e in events if e["kind"] == "task_chunk" and e["taskId"] == event["taskId"]]
        assert len(chunks) >= 3
        assert [c["seq"] for c in chunks] == list(range(1, len(chunks) + 1))
        out = output_of(tmp_path, event)
        assert out["chunks"] == "".join(c["content"] for c in chunks) == out["output"]["text"]
        assert out["usage"] == event["usage"]


def test_context_from_earlier_phases_reaches_the_endpoint(tmp_path: Path, echo_url: str) -> None:
    plan = {"phases": [{"name": "design", "tasks": [
                {"id": "d1", "alias": "system-architect", "task": "Design the cache"}]},
               {"name": "review", "tasks": [
                   {"id": "r1", "alias": "reviewer", "task": "Review the cache design",
                    "dependsOn": ["d1"]}]}]}
    result = asyncio.run(run_async(plan=plan, runtime="codex", url=echo_url,
                                   log_file=tmp_path / "e.jsonl", runs_dir=tmp_path / ".runs"))
    assert result.ok
    review = next(t for t in result.tasks if t.key == "r1")
    assert "Builds on 1 earlier result(s): d1" in review.output["text"]


# -- auth ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", [None, "sk-wrong-key"])
def test_missing_or_wrong_token_fails_without_retry(tmp_path: Path, auth_url: str,
                                                   key: str | None) -> None:
    result, events = run_codex(tmp_path, auth_url, api_key=key)
    assert not result.ok
    assert not [e for e in events if e["kind"] == "task_retry"]
    for event in terminal_events(events):
        assert event["kind"] == "task_failed"
        assert event["error"]["status"] == 401 and event["error"]["type"] == "HttpError"
        assert "bearer token" in event["error"]["message"]
        out = output_of(tmp_path, event)
        assert out["ok"] is False and out["output"] is None and out["error"]["status"] == 401


def test_the_key_never_reaches_the_run_directory(tmp_path: Path, auth_url: str,
                                                 bad_url: str) -> None:
    run_codex(tmp_path / "ok", auth_url, api_key=TOKEN)
    run_codex(tmp_path / "stream", auth_url, api_key=TOKEN, stream=True)
    run_codex(tmp_path / "fail", f"{bad_url}/notfound", ONE, api_key=TOKEN)
    run_codex(tmp_path / "refused", f"http://127.0.0.1:{closed_port()}", ONE, api_key=TOKEN,
              retries=0)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) > 10
    for path in files:
        assert TOKEN.encode() not in path.read_bytes(), path
    assert TOKEN not in repr(CodexRuntime("http://x", api_key=TOKEN))


# -- retryable failures ---------------------------------------------------------------------------
def test_500_then_success_on_retry(tmp_path: Path, bad_url: str) -> None:
    result, events = run_codex(tmp_path, f"{bad_url}/flaky", retries=1)
    assert result.ok
    retries = [e for e in events if e["kind"] == "task_retry"]
    assert len(retries) == len(result.tasks)
    assert all(r["error"]["status"] == 500 and "upstream exploded" in r["error"]["message"]
               for r in retries)
    for event in terminal_events(events):
        assert event["kind"] == "task_complete" and event["attempt"] == 2
        assert output_of(tmp_path, event)["attempts"] == 2


def test_retries_default_to_one_for_the_codex_runtime(tmp_path: Path, bad_url: str) -> None:
    result, events = run_codex(tmp_path, f"{bad_url}/flaky", {"coder": ["Implement X"]})
    assert result.ok and result.tasks[0].attempts == 2
    assert events[0]["kind"] == "run_started" and events[0]["retries"] == 1


def test_429_honours_retry_after(tmp_path: Path, bad_url: str) -> None:
    result, events = run_codex(tmp_path, f"{bad_url}/ratelimit", ONE, retries=2)
    assert result.ok
    (retry,) = [e for e in events if e["kind"] == "task_retry"]
    assert retry["error"]["status"] == 429
    assert retry["delayMs"] >= 1000  # from Retry-After: 1, far above the 5 ms backoff
    (done,) = terminal_events(events)
    assert done["kind"] == "task_complete" and done["attempt"] == 2


def test_connection_refused_is_retried_then_failed(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    result, events = run_codex(tmp_path, url, ONE, retries=2)
    assert not result.ok
    assert len([e for e in events if e["kind"] == "task_retry"]) == 2
    (event,) = terminal_events(events)
    assert event["kind"] == "task_failed" and event["attempt"] == 3
    assert event["error"]["type"] == "ConnectionError"
    assert "cannot reach" in event["error"]["message"]
    assert output_of(tmp_path, event)["error"]["type"] == "ConnectionError"


@pytest.mark.parametrize("stream", [False, True])
def test_a_slow_endpoint_times_out(tmp_path: Path, bad_url: str, stream: bool) -> None:
    result, events = run_codex(tmp_path, f"{bad_url}/slow", ONE, timeout_ms=300, stream=stream)
    (event,) = terminal_events(events)
    assert event["kind"] == "task_timeout" and not event["ok"]
    assert event["error"]["type"] == "Timeout"
    out = output_of(tmp_path, event)
    assert out["status"] == "timeout" and out["output"] is None


# -- non-retryable failures ------------------------------------------------------------------------
def test_404_is_not_retried(tmp_path: Path, bad_url: str) -> None:
    result, events = run_codex(tmp_path, f"{bad_url}/notfound", ONE, retries=3)
    (event,) = terminal_events(events)
    assert event["kind"] == "task_failed" and event["attempt"] == 1
    assert event["error"]["status"] == 404


@pytest.mark.parametrize(("fault", "expected"), [
    ("malformed", "malformed reply: not JSON: <html>oops</html>"),
    ("badshape", "malformed reply: reply: 'summary' must be a string"),
])
def test_malformed_replies_fail_clearly(tmp_path: Path, bad_url: str, fault: str,
                                        expected: str) -> None:
    result, events = run_codex(tmp_path, f"{bad_url}/{fault}", ONE, retries=3)
    (event,) = terminal_events(events)
    assert event["kind"] == "task_failed" and event["attempt"] == 1
    assert event["error"] == {"type": "MalformedReply", "message": expected}
    assert output_of(tmp_path, event)["ok"] is False


@pytest.mark.parametrize("fault", ["cut", "reset"])
def test_a_stream_cut_before_complete_fails(tmp_path: Path, bad_url: str, fault: str) -> None:
    result, events = run_codex(tmp_path, f"{bad_url}/{fault}", ONE, stream=True, retries=0)
    (event,) = terminal_events(events)
    assert event["kind"] == "task_failed"
    assert event["error"]["type"] == "StreamEndedEarly"
    assert event["error"]["message"].startswith("stream ended early after 1 chunk(s)")
    chunks = [e for e in events if e["kind"] == "task_chunk"]
    assert [c["content"] for c in chunks] == ["partial "]
    out = output_of(tmp_path, event)
    assert out["ok"] is False and out["output"] is None and out["chunks"] == "partial "


def test_a_cut_stream_is_retried(tmp_path: Path, bad_url: str) -> None:
    result, events = run_codex(tmp_path, f"{bad_url}/cut", ONE, stream=True, retries=1)
    assert len([e for e in events if e["kind"] == "task_retry"]) == 1
    (event,) = terminal_events(events)
    assert event["kind"] == "task_failed" and event["attempt"] == 2


@pytest.mark.parametrize(("fault", "kind", "text"), [
    ("streamerror", "StreamError", "endpoint error: model overloaded"),
    ("badstream", "MalformedReply", "malformed reply: stream event is not JSON"),
])
def test_stream_errors_fail_without_retry(tmp_path: Path, bad_url: str, fault: str, kind: str,
                                          text: str) -> None:
    result, events = run_codex(tmp_path, f"{bad_url}/{fault}", ONE, stream=True, retries=2)
    (event,) = terminal_events(events)
    assert event["kind"] == "task_failed" and event["attempt"] == 1
    assert event["error"]["type"] == kind and event["error"]["message"].startswith(text)


def test_the_run_goes_on_after_failures(tmp_path: Path, registry: Registry) -> None:
    with ServerThread(create_app(registry, fail_rate=0.5, fail_seed=7)) as server:
        tasks = {"reviewer": [f"Review module {i}" for i in range(12)],
                 "coder": [f"Implement feature {i}" for i in range(12)]}
        result, events = run_codex(tmp_path, server.url, tasks, retries=0)
    kinds = [e["kind"] for e in terminal_events(events)]
    assert 0 < kinds.count("task_failed") < len(kinds)
    assert kinds.count("task_failed") + kinds.count("task_complete") == len(kinds)
    failed = [e for e in terminal_events(events) if e["kind"] == "task_failed"]
    assert all(e["error"]["status"] == 500 and "injected failure" in e["error"]["message"]
               for e in failed)


# -- client unit bits ---------------------------------------------------------------------------
def test_parse_retry_after() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert 0 < parse_retry_after("Fri, 01 Jan 2100 00:00:00 GMT") < 4e9  # type: ignore[operator]


def test_reply_validation() -> None:
    reply = reply_from({"summary": "s", "output": {"a": 1}, "usage": {"tokensIn": 1, "tokensOut": 2},
                        "logs": ["x"], "model": "m"}, "reply")
    assert (reply.summary, reply.output, reply.usage, reply.logs, reply.model) == (
        "s", {"a": 1}, {"tokensIn": 1, "tokensOut": 2}, ["x"], "m")
    for bad, message in [([], "not a JSON object"), ({"summary": 1, "output": 1}, "'summary'"),
                         ({"summary": "s"}, "'output' is missing"),
                         ({"summary": "s", "output": 1, "usage": {"tokensIn": "1"}}, "'usage'"),
                         ({"summary": "s", "output": 1, "logs": "x"}, "'logs'")]:
        with pytest.raises(Exception, match=message):
            reply_from(bad, "reply")


def test_make_runtime_builds_the_codex_runtime() -> None:
    rt = make_runtime("codex", url="http://127.0.0.1:1/", api_key="k", provider="echo", stream=True)
    assert isinstance(rt, CodexRuntime) and rt.url == "http://127.0.0.1:1" and rt.stream
    assert rt.default_retries == 1 and rt.name == "codex"


def test_a_bad_url_is_a_config_error() -> None:
    from codexflow_nb.errors import ConfigError

    with pytest.raises(ConfigError, match="http://host:port"):
        CodexRuntime("127.0.0.1:8787")


# -- CLI --------------------------------------------------------------------------------------
def test_cli_codex_without_url_exits_2(workdir: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "codexflow_nb", "run", "--example",
                           "--runtime", "codex"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--runtime codex needs an endpoint" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (workdir / "data").exists() and not (workdir / ".runs").exists()


def test_cli_run_against_the_endpoint_streams_verbosely(workdir: Path, echo_url: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "codexflow_nb", "run", "--example", "--runtime",
                           "codex", "--codex-url", echo_url, "--stream", "--verbose"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "[reviewer/reviewer-1] Review outline:" in proc.stdout
    assert "[architect/architect-1] Design outline:" in proc.stdout
    assert "runtime codex" in proc.stdout


def test_a_key_with_control_characters_is_a_config_error() -> None:
    from codexflow_nb.errors import ConfigError

    with pytest.raises(ConfigError, match="printable ASCII") as info:
        CodexRuntime("http://127.0.0.1:1", api_key="abc\r\nx-evil: 1")
    assert "evil" not in str(info.value)
    assert CodexRuntime("http://127.0.0.1:1", api_key=" k1 \n")._api_key == "k1"


@pytest.mark.parametrize(("behaviour", "stream"), [("reset", False), ("half", False),
                                                  ("reset", True)])
def test_broken_connections_are_retryable_connection_errors(tmp_path: Path, behaviour: str,
                                                            stream: bool) -> None:
    with RawServer(behaviour) as raw:
        result, events = run_codex(tmp_path, raw.url, ONE, retries=1, stream=stream)
    assert len([e for e in events if e["kind"] == "task_retry"]) == 1
    (event,) = terminal_events(events)
    assert event["kind"] == "task_failed" and event["attempt"] == 2
    assert event["error"]["type"] == "ConnectionError"
    assert event["error"]["message"].startswith("connection broke talking to")
    assert output_of(tmp_path, event)["output"] is None


def test_a_stalled_server_times_out(tmp_path: Path) -> None:
    with RawServer("stall") as raw:
        result, events = run_codex(tmp_path, raw.url, ONE, timeout_ms=300)
    (event,) = terminal_events(events)
    assert event["kind"] == "task_timeout"

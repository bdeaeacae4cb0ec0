"""The demo endpoint over real HTTP: auth, limits, validation, SSE format, the echo and cli
providers, fault injection, and `codex-flow serve` itself."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import ServerThread

from codexflow_nb.cli.serve_cmd import is_loopback
from codexflow_nb.registry import Registry
from codexflow_nb.server import MAX_BODY_BYTES, create_app

TOKEN = "serve-token-4711"
PROBE = "ZZ-reflected-value-ZZ"
GOOD = {"agentId": "reviewer", "alias": "rev", "task": "Review the retry policy in engine.py"}


@pytest.fixture(scope="module")
def server(registry: Registry) -> Iterator[ServerThread]:
    with ServerThread(create_app(registry, token=TOKEN, max_body_bytes=200_000)) as s:
        yield s


@pytest.fixture
def client(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {TOKEN}"},
                      timeout=10) as c:
        yield c


def sse_events(text: str) -> list[dict[str, Any]]:
    """The JSON documents of a ``data:``-only event stream, checking its framing."""
    blocks = [b for b in text.split("\n\n") if b]
    assert all(b.startswith("data: ") and "\n" not in b for b in blocks), text
    return [json.loads(b[len("data: "):]) for b in blocks]


# -- routes, auth, limits, validation ------------------------------------------------------------
def test_health_is_open(server: ServerThread) -> None:
    reply = httpx.get(f"{server.url}/health")
    assert reply.status_code == 200
    assert reply.json() == {"status": "ok", "provider": "echo", "agents": 24, "auth": True}


@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Bearer {TOKEN}x", TOKEN, "Basic abc"])
def test_run_needs_the_exact_bearer_token(server: ServerThread, header: str | None) -> None:
    headers = {"authorization": header} if header else {}
    reply = httpx.post(f"{server.url}/run", json=GOOD, headers=headers)
    assert reply.status_code == 401
    assert reply.headers["www-authenticate"] == "Bearer"
    assert reply.json()["error"]["type"] == "Unauthorized"


def test_json_reply_follows_the_contract(client: httpx.Client) -> None:
    reply = client.post("/run", json=GOOD)
    assert reply.status_code == 200
    doc = reply.json()
    assert set(doc) == {"summary", "output", "usage", "model"}
    assert doc["summary"] == "Review outline: Review the retry policy in engine.py"
    assert doc["output"]["agentId"] == "reviewer" and doc["output"]["alias"] == "rev"
    assert set(doc["usage"]) == {"tokensIn", "tokensOut"}
    assert client.post("/run", json=GOOD).json() == doc  # deterministic


def test_stream_reply_follows_the_contract(client: httpx.Client) -> None:
    reply = client.post("/run?stream=1", json=GOOD)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    events = sse_events(reply.text)
    assert events[0] == {"event": "start", "agentId": "reviewer", "alias": "rev", "provider": "echo"}
    chunks = [e["content"] for e in events[1:-1]]
    assert len(chunks) >= 3 and all(e["event"] == "chunk" for e in events[1:-1])
    complete = events[-1]
    assert complete["event"] == "complete"
    assert "".join(chunks) == complete["output"]["text"] == client.post("/run", json=GOOD).json()[
        "output"]["text"]
    assert complete["usage"]["tokensOut"] > 0


def test_body_limit(client: httpx.Client) -> None:
    big = {**GOOD, "task": "x" * 200_001}
    assert client.post("/run", json=big).status_code == 413

    def chunked() -> Iterator[bytes]:  # no content-length: the limit holds while reading
        yield json.dumps(big).encode()

    reply = client.post("/run", content=chunked())
    assert reply.status_code == 413 and reply.json()["error"]["type"] == "PayloadTooLarge"


def test_default_body_limit_is_one_mib(registry: Registry) -> None:
    assert MAX_BODY_BYTES == 1 << 20
    filler = "y" * (MAX_BODY_BYTES - len(json.dumps({**GOOD, "task": ""})))
    with ServerThread(create_app(registry)) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        assert c.post("/run", content=json.dumps({**GOOD, "task": filler})).status_code == 200
        assert c.post("/run", content=json.dumps({**GOOD, "task": filler + "y"})).status_code == 413


@pytest.mark.parametrize(("body", "field"), [
    (b"{not json " + PROBE.encode(), "body: not valid JSON"),
    (b"[" * 100_000, "body: not valid JSON"),
    (b"\xff\xfe" + PROBE.encode(), "body: not valid JSON"),
    ([PROBE], "body: must be a JSON object with agentId, alias and task"),
    ({"alias": "a", "task": PROBE}, "agentId: missing"),
    ({**GOOD, "agentId": 5}, "agentId: must be a non-empty string"),
    ({**GOOD, "alias": ""}, "alias: must be a non-empty string"),
    ({**GOOD, "alias": PROBE * 20}, "alias: longer than 200 characters"),
    ({"agentId": "reviewer", "alias": "a"}, "task: missing"),
    ({**GOOD, "task": [PROBE]}, "task: must be a non-empty string"),
    ({**GOOD, "provider": PROBE}, "provider: must be one of echo, openai, anthropic, ollama, cli, codex-cli, claude-code"),
    ({**GOOD, "context": [PROBE]}, "context: must be a list of objects"),
])
def test_bad_bodies_get_422_naming_the_field(client: httpx.Client, body: Any, field: str) -> None:
    reply = client.post("/run", content=body if isinstance(body, bytes) else json.dumps(body))
    assert reply.status_code == 422
    assert reply.json() == {"error": {"type": "ValidationError", "message": field}}
    assert PROBE not in reply.text


def test_unknown_agent_is_404_without_echoing_it(client: httpx.Client) -> None:
    reply = client.post("/run", json={**GOOD, "agentId": PROBE})
    assert reply.status_code == 404 and PROBE not in reply.text
    assert reply.json()["error"]["type"] == "UnknownAgent"


def test_unconfigured_provider_is_400(registry: Registry) -> None:
    with ServerThread(create_app(registry, env={})) as s:
        for name in ("openai", "anthropic", "cli"):
            reply = httpx.post(f"{s.url}/run", json={**GOOD, "provider": name})
            assert reply.status_code == 400, name
            assert f"provider '{name}' is not configured" in reply.json()["error"]["message"]


# -- echo provider ---------------------------------------------------------------------------
@pytest.mark.parametrize(("agent", "title"), [
    ("code-analyzer", "Review outline"), ("system-architect", "Design outline"),
    ("api-designer", "Design outline"), ("unit-tester", "Test plan"),
    ("tutorial-writer", "Documentation outline"), ("planner", "Work plan"),
    ("ci-engineer", "Delivery plan"), ("backend-dev", "Implementation plan"),
])
def test_echo_outline_fits_the_agent(client: httpx.Client, registry: Registry, agent: str,
                                     title: str) -> None:
    doc = client.post("/run", json={**GOOD, "agentId": agent}).json()
    assert doc["summary"].startswith(f"{title}: Review the retry policy")
    text = doc["output"]["text"]
    first_duty = registry.get(agent).data["responsibilities"]["primary"][0]
    assert f"1. {first_duty}" in text
    assert registry.get(agent).name in text


def test_fail_rate_is_seeded_and_answers_500(registry: Registry) -> None:
    def statuses(seed: int) -> list[int]:
        with ServerThread(create_app(registry, fail_rate=0.5, fail_seed=seed)) as s, \
                httpx.Client(base_url=s.url) as c:
            return [c.post("/run", json=GOOD).status_code for _ in range(20)]

    first = statuses(3)
    assert first == statuses(3)
    assert set(first) == {200, 500}
    with ServerThread(create_app(registry, fail_rate=1.0)) as s:
        reply = httpx.post(f"{s.url}/run?stream=1", json=GOOD)
        assert reply.status_code == 500 and reply.json()["error"]["type"] == "InjectedFailure"


def test_latency_ms_delays_replies(tmp_path: Path, registry: Registry) -> None:
    from codexflow_nb.api import run_async

    with ServerThread(create_app(registry, latency_ms=1500)) as s:
        result = asyncio.run(run_async({"reviewer": ["Review x"]}, runtime="codex", url=s.url,
                                       timeout_ms=100, log_file=tmp_path / "e.jsonl",
                                       runs_dir=tmp_path / ".runs"))
    assert result.tasks[0].status == "timeout"


def test_create_app_rejects_bad_settings(registry: Registry) -> None:
    from codexflow_nb.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        create_app(registry, provider="gpt", fail_rate=2, latency_ms=-1)
    assert len(info.value.problems) == 3


# -- cli provider --------------------------------------------------------------------------------
def cli_app(registry: Registry, script: str, **kw: Any) -> Any:
    return create_app(registry, provider="cli", cli_command=[sys.executable, "-c", script], **kw)


UPPER = ("import os, sys; data = sys.stdin.read(); "
         "print('CLI ' + os.environ['CODEXFLOW_ALIAS'] + ': ' + data.splitlines()[-1].upper())")


def test_cli_provider_gets_the_prompt_on_stdin(registry: Registry, workdir: Path) -> None:
    task = {**GOOD, "task": "say hi; rm -rf / $(touch pwned)"}
    with ServerThread(cli_app(registry, UPPER)) as s, httpx.Client(base_url=s.url) as c:
        doc = c.post("/run", json=task).json()
        assert doc["output"]["text"] == "CLI rev: SAY HI; RM -RF / $(TOUCH PWNED)\n"
        assert doc["summary"] == "CLI rev: SAY HI; RM -RF / $(TOUCH PWNED)"
        assert "usage" not in doc  # a command reports no token usage
        events = sse_events(c.post("/run?stream=1", json=task).text)
        assert events[-1]["event"] == "complete"
        assert "".join(e["content"] for e in events if e["event"] == "chunk") == doc["output"]["text"]
    assert not (workdir / "pwned").exists()


@pytest.mark.parametrize(("script", "kw", "status", "message"), [
    ("import time; time.sleep(5)", {"cli_timeout_s": 0.3}, 504, "cli command timed out after 0.3 s"),
    ("print('x' * 5000)", {"cli_max_output_bytes": 1000}, 424,
     "cli command output exceeded 1000 bytes"),
    ("import sys; sys.stderr.write('boom'); sys.exit(3)", {}, 424,
     "cli command exited with status 3"),
])
def test_cli_provider_limits(registry: Registry, script: str, kw: dict[str, Any], status: int,
                             message: str) -> None:
    with ServerThread(cli_app(registry, script, **kw)) as s, httpx.Client(base_url=s.url) as c:
        reply = c.post("/run", json=GOOD)
        assert reply.status_code == status
        assert reply.json()["error"]["message"] == message


def test_cli_failure_mid_stream_is_an_error_event(registry: Registry) -> None:
    script = "import sys; print('partial', flush=True); sys.exit(2)"
    with ServerThread(cli_app(registry, script)) as s:
        events = sse_events(httpx.post(f"{s.url}/run?stream=1", json=GOOD).text)
    assert events[0]["event"] == "start"
    assert "".join(e["content"] for e in events if e["event"] == "chunk") == "partial\n"
    assert events[-1] == {"event": "error", "message": "cli command exited with status 2",
                          "status": 424, "retryable": False}


# -- codex-flow serve --------------------------------------------------------------------------
def serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("CODEX_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
    return subprocess.run([sys.executable, "-m", "codexflow_nb", "serve", *args],
                          capture_output=True, text=True, timeout=60, env={**clean, **(env or {})})


@pytest.mark.parametrize(("args", "message"), [
    (["--host", "0.0.0.0"], "--host 0.0.0.0 is reachable from other machines"),
    (["--provider", "cli"], "--provider cli needs --cli-command"),
    (["--provider", "openai"], "--provider openai needs $OPENAI_API_KEY"),
    (["--cli-command", "'unclosed"], "--cli-command cannot be parsed"),
])
def test_serve_refuses_unsafe_or_incomplete_settings(args: list[str], message: str) -> None:
    proc = serve(*args)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_serve_reports_a_busy_port(server: ServerThread) -> None:
    proc = serve("--port", str(server.port))
    assert proc.returncode == 2
    assert f"cannot listen on 127.0.0.1:{server.port}" in proc.stderr


def test_serve_runs_and_stops_on_sigint(tmp_path: Path) -> None:
    env = {**os.environ, "CODEX_API_KEY": TOKEN}  # the token from the environment
    proc = subprocess.Popen([sys.executable, "-m", "codexflow_nb", "serve", "--port", "0",
                             "--host", "0.0.0.0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        assert "auth on" in banner and "provider echo" in banner
        url = banner.split()[2].replace("0.0.0.0", "127.0.0.1")
        assert httpx.get(f"{url}/health", timeout=10).json()["auth"] is True
        assert httpx.post(f"{url}/run", json=GOOD, timeout=10).status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and "Traceback" not in err


def test_loopback_detection() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "[::1]", "127.5.0.1"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.2", "example.com"))

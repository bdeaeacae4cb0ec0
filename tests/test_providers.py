"""The openai, anthropic and ollama providers against local fake vendor servers that answer in
each vendor's wire format (JSON and streaming), and the engine running through them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import FakeVendor, ServerThread, closed_port, vendors_app

from codexflow_nb.api import run_async
from codexflow_nb.events import TERMINAL_KINDS
from codexflow_nb.registry import Registry
from codexflow_nb.server import create_app

OPENAI_KEY = "sk-openai-fake-123"
ANTHROPIC_KEY = "sk-ant-fake-456"
BODY = {"agentId": "system-architect", "alias": "arch", "task": "Design the cache layer"}
#: (provider, text, usage in JSON mode, usage when streaming, chunks when streaming)
EXPECTED = {
    "openai": ("Plan ready.\nStep 1.", (11, 7), (12, 3), ["Plan ", "ready.", "\nStep 1."]),
    "anthropic": ("Design drafted.\nDetails.", (21, 9), (25, 4), ["Design ", "drafted."]),
    "ollama": ("Tests listed.\nA.", (31, 6), (33, 2), ["Tests ", "listed."]),
}


class Vendors:
    def __init__(self) -> None:
        self.fakes = {name: FakeVendor() for name in EXPECTED}


@pytest.fixture(scope="module")
def vendors() -> Iterator[tuple[Vendors, str]]:
    v = Vendors()
    app = vendors_app(v.fakes["openai"], v.fakes["anthropic"], v.fakes["ollama"],
                      OPENAI_KEY, ANTHROPIC_KEY)
    with ServerThread(app) as server:
        yield v, server.url


def vendor_env(base: str) -> dict[str, str]:
    return {"OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": f"{base}/openai/v1",
            "ANTHROPIC_API_KEY": ANTHROPIC_KEY, "ANTHROPIC_BASE_URL": f"{base}/anthropic",
            "OLLAMA_URL": f"{base}/ollama", "OPENAI_MODEL": "gpt-test",
            "ANTHROPIC_MODEL": "claude-test", "OLLAMA_MODEL": "llama-test"}


@pytest.fixture(scope="module")
def endpoint(registry: Registry, vendors: tuple[Vendors, str]) -> Iterator[str]:
    with ServerThread(create_app(registry, env=vendor_env(vendors[1]))) as server:
        yield server.url


@pytest.fixture(autouse=True)
def reset(vendors: tuple[Vendors, str]) -> None:
    for fake in vendors[0].fakes.values():
        fake.requests.clear()
        fake.fail_status = None


def sse_events(text: str) -> list[dict[str, Any]]:
    return [json.loads(b[len("data: "):]) for b in text.split("\n\n") if b]


@pytest.mark.parametrize("name", list(EXPECTED))
def test_json_reply_and_usage_come_from_the_vendor(endpoint: str, vendors: tuple[Vendors, str],
                                                   name: str) -> None:
    text, usage, _, _ = EXPECTED[name]
    reply = httpx.post(f"{endpoint}/run", json={**BODY, "provider": name}, timeout=10)
    assert reply.status_code == 200, reply.text
    doc = reply.json()
    assert doc["output"]["text"] == text and doc["output"]["provider"] == name
    assert doc["summary"] == text.splitlines()[0]
    assert doc["usage"] == {"tokensIn": usage[0], "tokensOut": usage[1]}
    assert doc["model"] == f"{ {'openai': 'gpt', 'anthropic': 'claude', 'ollama': 'llama'}[name]}-test"
    (sent,) = vendors[0].fakes[name].requests
    wire = json.dumps(sent["json"])
    assert "System Architect" in wire and "Design the cache layer" in wire
    assert sent["json"].get("stream") in (None, False)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_streamed_chunks_and_usage_come_from_the_vendor(endpoint: str,
                                                        vendors: tuple[Vendors, str],
                                                        name: str) -> None:
    _, _, usage, chunks = EXPECTED[name]
    reply = httpx.post(f"{endpoint}/run?stream=1", json={**BODY, "provider": name}, timeout=10)
    events = sse_events(reply.text)
    assert [e["event"] for e in events] == ["start", *["chunk"] * len(chunks), "complete"]
    assert [e["content"] for e in events[1:-1]] == chunks
    assert events[-1]["output"]["text"] == "".join(chunks)
    assert events[-1]["usage"] == {"tokensIn": usage[0], "tokensOut": usage[1]}
    (sent,) = vendors[0].fakes[name].requests
    assert sent["json"]["stream"] is True
    if name == "openai":
        assert sent["json"]["stream_options"] == {"include_usage": True}


def test_vendor_auth_headers(endpoint: str, vendors: tuple[Vendors, str]) -> None:
    for name in ("openai", "anthropic"):
        httpx.post(f"{endpoint}/run", json={**BODY, "provider": name}, timeout=10)
    openai_sent = vendors[0].fakes["openai"].requests[0]["headers"]
    anthropic_sent = vendors[0].fakes["anthropic"].requests[0]["headers"]
    assert openai_sent["authorization"] == f"Bearer {OPENAI_KEY}"
    assert anthropic_sent["x-api-key"] == ANTHROPIC_KEY
    assert anthropic_sent["anthropic-version"] == "2023-06-01"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("vendor_status", "status", "message"), [
    (429, 429, "rate limit: HTTP 429 (fake_code)"),
    (503, 502, "upstream error: HTTP 503 (fake_code)"),
    (400, 424, "refused the request: HTTP 400 (fake_code)"),
])
def test_vendor_failures_map_to_endpoint_statuses(endpoint: str, vendors: tuple[Vendors, str],
                                                  vendor_status: int, status: int, message: str,
                                                  stream: bool) -> None:
    for name, fake in vendors[0].fakes.items():
        fake.fail_status = vendor_status
        url = f"{endpoint}/run" + ("?stream=1" if stream else "")
        reply = httpx.post(url, json={**BODY, "provider": name}, timeout=10)
        assert reply.status_code == status, (name, reply.text)
        assert reply.json()["error"]["message"] == f"{name} {message}"
        assert "do not quote me" not in reply.text
        if status == 429:
            assert reply.headers["retry-after"] == "7"


def test_unreachable_vendor_is_502(registry: Registry) -> None:
    env = {"OLLAMA_URL": f"http://127.0.0.1:{closed_port()}"}
    with ServerThread(create_app(registry, provider="ollama", env=env)) as s:
        reply = httpx.post(f"{s.url}/run", json=BODY, timeout=10)
    assert reply.status_code == 502
    assert reply.json()["error"]["message"].startswith("cannot reach ollama")


def test_wrong_vendor_key_is_424_and_never_quoted(registry: Registry,
                                                  vendors: tuple[Vendors, str]) -> None:
    env = {**vendor_env(vendors[1]), "OPENAI_API_KEY": "sk-wrong-openai"}
    with ServerThread(create_app(registry, provider="openai", env=env)) as s:
        reply = httpx.post(f"{s.url}/run", json=BODY, timeout=10)
    assert reply.status_code == 424
    assert reply.json()["error"]["message"] == "openai refused the request: HTTP 401 (invalid_api_key)"
    assert "sk-wrong" not in reply.text


@pytest.mark.parametrize("stream", [False, True])
def test_engine_through_endpoint_to_a_vendor(tmp_path: Path, endpoint: str, stream: bool) -> None:
    tasks = {"system-architect": ["Design the cache layer", "Design the queue"]}
    result = asyncio.run(run_async(tasks, runtime="codex", url=endpoint, provider="anthropic",
                                   stream=stream, log_file=tmp_path / "events.jsonl",
                                   runs_dir=tmp_path / ".runs"))
    assert result.ok
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    terminal = [e for e in events if e["kind"] in TERMINAL_KINDS]
    assert len(terminal) == 2
    expected = {"tokensIn": 25, "tokensOut": 4} if stream else {"tokensIn": 21, "tokensOut": 9}
    for event in terminal:
        assert event["usage"] == expected
        out = json.loads((tmp_path / ".runs" / event["alias"] / event["taskId"] / "output.json")
                         .read_text())
        assert out["output"]["provider"] == "anthropic" and out["output"]["model"] == "claude-test"
        assert (out.get("chunks") == "Design drafted.") is stream

"""Size caps on what servers send back, and the API key in error previews, against real local
servers (uvicorn on loopback; ``codex-flow serve`` in its own process for the vendor side).

- The codex runtime: an endless JSON body, an endless SSE line, an endless SSE event and an
  endless stream of valid chunks each fail the task at once with a non-retryable
  ``ReplyTooLarge``, and the client process's peak RSS stays bounded (measured in a child
  process, so nothing else in the test session moves the high-water mark).
- Error previews: the key placed at every offset around the 200-character cut (and around the
  64 KiB an error body is read to) leaves no 4-character piece of it in the event log or the
  run store.
- The endpoint's vendor providers (openai, anthropic, ollama): a vendor that streams forever
  gets a 502 ("reply too large") and the endpoint's peak RSS stays bounded; a vendor error code
  that echoes the vendor key is not quoted.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import ServerThread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from codexflow_nb import httpclient
from codexflow_nb.api import run_async
from codexflow_nb.events import TERMINAL_KINDS
from codexflow_nb.runtimes import codex

MiB = 1 << 20
#: The "endless" servers stop after this much, so that a client without caps fails the test
#: (its RSS passes the bounds below many times over) without exhausting the machine.
SAFETY_BYTES = 1 << 30
#: Peak RSS growth allowed for one capped reply at the default caps (16/16/32 MiB); without
#: the caps the same replies take over 1 GiB.
RSS_BOUND_MIB = 200
PIECE = b"x" * (64 << 10)
#: The key of the leak tests: letters and signs that no log line holds by chance, so any
#: 4-character piece of it found on disk came from the key.
KEY = "".join(random.Random(7).choices("QXZJVKW~^|", k=40))
KEY_PIECES = {KEY[i:i + 4] for i in range(len(KEY) - 3)}


# -- servers ----------------------------------------------------------------------------------
def endless(head: bytes, piece: bytes = PIECE, tail: bytes = b"") -> Callable[[], AsyncIterator[bytes]]:
    """A body generator: ``head``, then ``piece + tail`` until :data:`SAFETY_BYTES`."""
    async def gen() -> AsyncIterator[bytes]:
        yield head
        sent = len(head)
        while sent < SAFETY_BYTES:
            yield piece + tail
            sent += len(piece) + len(tail)
    return gen


def leak_body(mode: str, n: int) -> str:
    """An error text holding the key: ``n`` filler characters, then ``Bearer KEY``; for
    ``far``, the key starts ``n`` bytes before the end of what an error body is read to."""
    if mode == "far":
        return " " * (httpclient.ERROR_BODY_BYTES - n) + KEY + " and more"
    return "." * n + " Bearer " + KEY + " rejected"


def abusive_app() -> Starlette:
    """Endpoints at ``/<name>/run`` (point the runtime at ``/<name>``): ``body`` (an endless
    JSON body), ``line`` (an SSE line that never ends), ``event`` (an SSE event that never
    ends), ``chunks`` (valid chunk events, forever), ``gzip`` (a 64 MiB reply in a 64 KiB
    gzip body with Content-Length), ``sized`` (a reply of exactly the size the task names),
    ``leak`` (errors quoting the key; the task says how, see :func:`leak_body`)."""
    sse = "text/event-stream"
    start = b'data: {"event":"start"}\n\n'
    chunk = b'data: {"event":"chunk","content":"' + PIECE + b'"}\n\n'
    bomb = gzip.compress(b'{"summary": "' + b" " * (64 * MiB) + b'", "output": 1}', 9)

    def streaming(make: Callable[[], AsyncIterator[bytes]], media: str) -> Callable[..., Any]:
        async def handler(request: Request) -> Response:
            await request.body()
            return StreamingResponse(make(), media_type=media)
        return handler

    async def gzipped(request: Request) -> Response:
        await request.body()
        return Response(bomb, media_type="application/json", headers={"content-encoding": "gzip"})

    async def sized(request: Request) -> Response:
        how, size = json.loads(await request.body())["task"].split()
        head = b'{"summary": "ok", "output": "'
        body = head + b"x" * (int(size) - len(head) - 2) + b'"}'
        if how == "length":
            return Response(body, media_type="application/json")

        async def pieces() -> AsyncIterator[bytes]:
            for i in range(0, len(body), 100_000):
                yield body[i:i + 100_000]
        return StreamingResponse(pieces(), media_type="application/json")

    async def leak(request: Request) -> Response:
        mode, n = json.loads(await request.body())["task"].split()
        text = leak_body(mode, int(n))
        if mode == "notjson":
            return Response(text, 200, media_type="text/plain")
        if mode == "event":
            doc = {"event": "error", "message": text}
            return Response(b"data: " + json.dumps(doc).encode() + b"\n\n", media_type=sse)
        if mode == "errorjson":
            return Response(json.dumps({"error": {"message": text}}), 503,
                            media_type="application/json")
        return Response(text, 503, media_type="text/plain")

    return Starlette(routes=[
        Route("/body/run", streaming(endless(b'{"summary": "'), "application/json"),
              methods=["POST"]),
        Route("/line/run", streaming(endless(start + b"data: "), sse), methods=["POST"]),
        Route("/event/run", streaming(endless(start, b"data: " + PIECE[:1000], b"\n"), sse),
              methods=["POST"]),
        Route("/chunks/run", streaming(endless(start, chunk), sse), methods=["POST"]),
        Route("/gzip/run", gzipped, methods=["POST"]),
        Route("/sized/run", sized, methods=["POST"]),
        Route("/leak/run", leak, methods=["POST"]),
    ])


@pytest.fixture(scope="module")
def abusive() -> Iterator[str]:
    with ServerThread(abusive_app()) as server:
        yield server.url


def run_tasks(tmp_path: Path, runtime: Any, tasks: dict[str, list[str]], **options: Any
              ) -> list[dict[str, Any]]:
    """Run ``tasks``; the terminal events (one per task, checked)."""
    options.setdefault("backoff_base_ms", 1)
    result = asyncio.run(run_async(tasks, runtime=runtime, log_file=tmp_path / "events.jsonl",
                                   runs_dir=tmp_path / ".runs", **options))
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    terminal = [e for e in events if e["kind"] in TERMINAL_KINDS]
    assert len(terminal) == len(result.tasks) == sum(len(v) for v in tasks.values())
    return terminal


# -- the codex runtime: endless replies -----------------------------------------------------------
CHILD = r"""
import asyncio, json, sys, time
from pathlib import Path

import aiohttp, orjson  # imported before the baseline, like everything the run needs
import codexflow_nb.runtimes.codex
from codexflow_nb.api import run_async


def peak_kib():  # VmHWM starts afresh at exec; ru_maxrss would carry the parent's peak over
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])


url, stream, tmp = sys.argv[1], sys.argv[2] == "1", Path(sys.argv[3])
before = peak_kib()
t0 = time.monotonic()
result = asyncio.run(run_async({"reviewer": ["answer at length"]}, runtime="codex", url=url,
                               stream=stream, retries=2, backoff_base_ms=1, timeout_ms=120_000,
                               log_file=tmp / "events.jsonl", runs_dir=tmp / ".runs"))
elapsed = time.monotonic() - t0
(task,) = result.tasks
print(json.dumps({"elapsed": elapsed, "attempts": task.attempts, "error": task.error,
                  "before_mib": before / 1024, "grew_mib": (peak_kib() - before) / 1024}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
@pytest.mark.parametrize(("fault", "stream", "what", "option"), [
    ("body", False, "reply body larger than 16 MiB", "max_reply_bytes"),
    ("line", True, "stream line larger than 16 MiB", "max_event_bytes"),
    ("event", True, "stream event larger than 16 MiB", "max_event_bytes"),
    ("chunks", True, "stream larger than 32 MiB", "max_stream_bytes"),
])
def test_an_endless_reply_fails_fast_with_bounded_memory(tmp_path: Path, abusive: str, fault: str,
                                                         stream: bool, what: str,
                                                         option: str) -> None:
    """The default caps, through ``run_async(runtime="codex")``, in a fresh process (its
    peak RSS from ``/proc/self/status``)."""
    proc = subprocess.run([sys.executable, "-c", CHILD, f"{abusive}/{fault}", str(int(stream)),
                           str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.splitlines()[-1])
    assert report["grew_mib"] < RSS_BOUND_MIB, report
    assert report["elapsed"] < 20, report
    assert report["error"]["type"] == "ReplyTooLarge", report
    assert what in report["error"]["message"] and option in report["error"]["message"]
    assert report["attempts"] == 1  # not retried


@pytest.mark.parametrize(("fault", "stream", "what"), [
    ("body", False, "reply body larger than 1 MiB"),
    ("gzip", False, "reply body larger than 1 MiB"),
    ("line", True, "stream line larger than 256 KiB"),
    ("event", True, "stream event larger than 256 KiB"),
    ("chunks", True, "stream larger than 2 MiB"),
])
def test_caps_are_configurable(tmp_path: Path, abusive: str, fault: str, stream: bool,
                               what: str) -> None:
    runtime = codex.CodexRuntime(f"{abusive}/{fault}", stream=stream, max_reply_bytes=MiB,
                                 max_event_bytes=256 << 10, max_stream_bytes=2 * MiB)
    t0 = time.monotonic()
    (event,) = run_tasks(tmp_path, runtime, {"reviewer": ["answer"]}, retries=2)
    assert time.monotonic() - t0 < 10
    assert event["kind"] == "task_failed" and event["attempt"] == 1
    assert event["error"]["type"] == "ReplyTooLarge"
    assert event["error"]["message"].startswith(f"reply too large: {what}")
    if stream:  # the chunks that did arrive are kept, as for any failed stream
        assert event["error"]["message"].count("chunk(s)") == 1


@pytest.mark.parametrize("how", ["length", "chunked"])
def test_a_reply_of_exactly_the_cap_passes(tmp_path: Path, abusive: str, how: str) -> None:
    cap = 300_000
    runtime = codex.CodexRuntime(f"{abusive}/sized", max_reply_bytes=cap)
    (ok,) = run_tasks(tmp_path / "at", runtime, {"reviewer": [f"{how} {cap}"]}, retries=0)
    assert ok["kind"] == "task_complete", ok
    (over,) = run_tasks(tmp_path / "over", runtime, {"reviewer": [f"{how} {cap + 1}"]}, retries=0)
    assert over["kind"] == "task_failed" and over["error"]["type"] == "ReplyTooLarge"


def test_limits_must_be_positive() -> None:
    from codexflow_nb.errors import ConfigError

    for bad in (0, -1, 1.5, True, "16"):
        with pytest.raises(ConfigError, match="max_reply_bytes"):
            codex.CodexRuntime("http://127.0.0.1:9", max_reply_bytes=bad)  # type: ignore[arg-type]
    runtime = codex.CodexRuntime("http://127.0.0.1:9")
    assert runtime.limits == httpclient.ReplyLimits(16 * MiB, 16 * MiB, 32 * MiB)


# -- the line splitter and event decoder -----------------------------------------------------------
def lines_of(chunks: list[bytes], **caps: int) -> list[str]:
    async def feed() -> AsyncIterable[bytes]:
        for c in chunks:
            yield c

    async def collect() -> list[str]:
        return [line async for line in httpclient.aiter_lines(feed(), **caps)]
    return asyncio.run(collect())


def test_line_cap_counts_a_line_across_chunks() -> None:
    ten = [b"abc", b"defg", b"hij\r", b"\nx\n"]
    assert lines_of(ten, max_line=10) == ["abcdefghij", "x"]
    with pytest.raises(httpclient.ReplyTooLarge, match="stream line larger than 9 bytes"):
        lines_of(ten, max_line=9)
    with pytest.raises(httpclient.ReplyTooLarge):  # one long line inside one chunk
        lines_of([b"ok\n" + b"y" * 11 + b"\nok\n"], max_line=10)
    with pytest.raises(httpclient.ReplyTooLarge):  # never terminated
        lines_of([b"z" * 6, b"z" * 5], max_line=10)
    assert lines_of([b"a\r\nb\rc\n", b"\n"], max_line=1) == ["a", "b", "c", ""]
    assert lines_of([b"12345\n", b"6789\n"], max_total=11) == ["12345", "6789"]
    with pytest.raises(httpclient.ReplyTooLarge, match="stream larger than 10 bytes"):
        lines_of([b"12345\n", b"6789\n"], max_total=10)


def test_event_cap_counts_the_joined_data() -> None:
    decoder = httpclient.SSEDecoder(max_data=7)
    for line in ("data: abc", "data: def", ""):  # "abc\ndef": exactly 7
        sse = decoder.decode(line)
    assert sse is not None and sse.data == "abc\ndef"
    decoder.decode("data: abcd")
    with pytest.raises(httpclient.ReplyTooLarge, match="stream event"):
        decoder.decode("data: def")


# -- error previews never keep a piece of the key ------------------------------------------------
def test_masking_comes_before_the_cut() -> None:
    for n in range(120, 240):
        for body in (leak_body("pad", n), json.dumps({"error": leak_body("pad", n)})):
            shown = codex.preview(codex.mask_secret(body, KEY))
            assert not any(p in shown for p in KEY_PIECES), (n, shown)
    for n in range(1, len(KEY) + 2):  # the key cut where reading an error body stops
        head = leak_body("far", n)[:httpclient.ERROR_BODY_BYTES]
        shown = codex.preview(codex.mask_secret(head, KEY, cut=True))
        assert not any(p in shown for p in KEY_PIECES), (n, shown)
    # quoting signs and backslashes in a key are masked in their JSON-escaped form too
    odd = 'ab"cd\\ef'
    assert codex.mask_secret(json.dumps({"k": odd}), odd) == '{"k": "***"}'


@pytest.mark.parametrize("stream", [False, True])
def test_the_key_at_every_offset_never_reaches_the_logs(tmp_path: Path, abusive: str,
                                                        stream: bool) -> None:
    modes = ["error", "errorjson", "event" if stream else "notjson"]
    tasks = [f"{mode} {n}" for mode in modes for n in range(140, 240)]
    tasks += [f"far {n}" for n in range(1, len(KEY) + 2)]
    runtime = codex.CodexRuntime(f"{abusive}/leak", api_key=KEY, stream=stream)
    terminal = run_tasks(tmp_path, runtime, {"reviewer": tasks}, retries=0)
    assert {e["kind"] for e in terminal} == {"task_failed"}
    files = [tmp_path / "events.jsonl", *(p for p in (tmp_path / ".runs").rglob("*") if p.is_file())]
    assert len(files) > len(tasks)
    for path in files:
        text = path.read_text(errors="replace")
        found = [p for p in KEY_PIECES if p in text]
        assert not found, f"{path}: {found}"
    # the key (masked) shows wherever it starts inside the preview: offsets below ~190 of each
    # mode, and every "far" body (all whitespace before it)
    shown = [e["error"]["message"] for e in terminal]
    assert sum("***" in m for m in shown) > 3 * 40 + len(KEY)


# -- the endpoint's vendor providers ------------------------------------------------------------
def endless_vendor_app() -> Starlette:
    """Fake OpenAI, Anthropic and Ollama APIs that never stop talking: a JSON request gets an
    endless body; a streaming one gets an endless first line when the prompt says
    ``endless-line``, an endless event (``endless-event``, SSE vendors), or valid text events
    forever."""
    text = "y" * 60_000

    def events(vendor: str) -> Callable[[], AsyncIterator[bytes]]:
        if vendor == "openai":
            doc: dict[str, Any] = {"model": "m", "choices": [{"index": 0, "delta": {"content": text}}]}
            return endless(b"", b"data: " + json.dumps(doc).encode() + b"\n\n")
        if vendor == "anthropic":
            doc = {"type": "content_block_delta", "index": 0,
                   "delta": {"type": "text_delta", "text": text}}
            return endless(b"", b"event: content_block_delta\ndata: " + json.dumps(doc).encode()
                           + b"\n\n")
        doc = {"model": "m", "done": False, "message": {"role": "assistant", "content": text}}
        return endless(b"", json.dumps(doc).encode() + b"\n")

    def handler(vendor: str) -> Callable[..., Any]:
        media = "application/x-ndjson" if vendor == "ollama" else "text/event-stream"

        async def answer(request: Request) -> Response:
            doc = json.loads(await request.body())
            prompt = json.dumps(doc["messages"])
            if not doc.get("stream"):
                return StreamingResponse(endless(b'{"choices": [{"message": {"content": "')(),
                                         media_type="application/json")
            if "endless-line" in prompt:
                return StreamingResponse(endless(b"data: " if vendor != "ollama" else b"{")(),
                                         media_type=media)
            if "endless-event" in prompt:
                return StreamingResponse(endless(b"", b"data: " + PIECE[:1000], b"\n")(),
                                         media_type=media)
            return StreamingResponse(events(vendor)(), media_type=media)
        return answer

    return Starlette(routes=[
        Route("/openai/v1/chat/completions", handler("openai"), methods=["POST"]),
        Route("/anthropic/v1/messages", handler("anthropic"), methods=["POST"]),
        Route("/ollama/api/chat", handler("ollama"), methods=["POST"]),
    ])


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@contextlib.contextmanager
def serve(env: dict[str, str]) -> Iterator[tuple[str, int]]:
    """``codex-flow serve --port 0`` in its own process; yields its URL and pid."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_")}
    proc = subprocess.Popen([sys.executable, "-m", "codexflow_nb", "serve", "--port", "0"],
                            env={**clean, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        assert banner.startswith("codex-flow serve: http://"), banner
        yield banner.split()[2], proc.pid
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_a_vendor_that_never_stops_gets_a_502_and_bounded_memory() -> None:
    with ServerThread(endless_vendor_app()) as vendor:
        env = {"OPENAI_API_KEY": "sk-o", "OPENAI_BASE_URL": f"{vendor.url}/openai/v1",
               "ANTHROPIC_API_KEY": "sk-a", "ANTHROPIC_BASE_URL": f"{vendor.url}/anthropic",
               "OLLAMA_URL": f"{vendor.url}/ollama"}
        with serve(env) as (url, pid), httpx.Client(timeout=60) as client:
            body = {"agentId": "coder", "alias": "c"}
            assert client.post(f"{url}/run", json={**body, "task": "warm up"}).status_code == 200
            before = peak_rss_mib(pid)
            for provider in ("openai", "anthropic", "ollama"):
                t0 = time.monotonic()
                reply = client.post(f"{url}/run", json={**body, "task": "go", "provider": provider})
                assert reply.status_code == 502, (provider, reply.text)
                assert reply.json()["error"]["message"] == (
                    f"{provider} reply too large: reply body larger than 16 MiB")
                for task, what in (("endless-line", "stream line larger than 16 MiB"),
                                   ("endless-event", "stream event larger than 16 MiB")):
                    if provider == "ollama" and task == "endless-event":
                        continue  # NDJSON has no events: each line is one
                    reply = client.post(f"{url}/run?stream=1", json={
                        **body, "task": task, "provider": provider})
                    assert reply.status_code == 502, (provider, task, reply.text[:300])
                    assert reply.json()["error"]["message"] == f"{provider} reply too large: {what}"
                # valid text forever: the stream has begun, so the error is its last event
                last, chunks = None, 0
                with client.stream("POST", f"{url}/run?stream=1", json={
                        **body, "task": "talk", "provider": provider}) as streamed:
                    assert streamed.status_code == 200
                    for line in streamed.iter_lines():
                        if line.startswith("data: "):
                            last = json.loads(line[6:])
                            chunks += last["event"] == "chunk"
                assert last is not None and last["event"] == "error", last
                assert last["status"] == 502 and chunks > 100
                assert last["message"] == f"{provider} reply too large: stream larger than 32 MiB"
                assert time.monotonic() - t0 < 60
            grew = peak_rss_mib(pid) - before
    assert grew < RSS_BOUND_MIB, f"the endpoint's peak RSS grew {grew:.0f} MiB"


def test_a_vendor_error_code_holding_the_key_is_not_quoted(registry: Any) -> None:
    """Only the vendor's error code is quoted; not when it echoes (a piece of) the key."""
    from codexflow_nb.server import create_app

    async def refuse(request: Request) -> Response:
        await request.body()
        code = KEY if "whole" in request.url.path else KEY[5:25]
        return Response(json.dumps({"error": {"code": code, "type": code}}), 401,
                        media_type="application/json")

    vendor_app = Starlette(routes=[
        Route(f"/{how}/v1/chat/completions", refuse, methods=["POST"]) for how in ("whole", "piece")
    ] + [Route(f"/{how}/v1/messages", refuse, methods=["POST"]) for how in ("whole", "piece")])
    with ServerThread(vendor_app) as vendor:
        for how in ("whole", "piece"):
            env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": f"{vendor.url}/{how}/v1",
                   "ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": f"{vendor.url}/{how}"}
            with ServerThread(create_app(registry, env=env)) as endpoint, httpx.Client() as client:
                for provider in ("openai", "anthropic"):
                    for path in ("/run", "/run?stream=1"):
                        reply = client.post(endpoint.url + path, json={
                            "agentId": "coder", "alias": "c", "task": "t", "provider": provider})
                        assert reply.status_code == 424
                        assert reply.json()["error"]["message"] == (
                            f"{provider} refused the request: HTTP 401")

"""Test helpers: real uvicorn servers on free loopback ports, a misbehaving endpoint, and fake
vendor APIs (OpenAI, Anthropic, Ollama) that answer in each vendor's wire format."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route

from codexflow_nb.rehearsal import ServerThread  # noqa: F401  (the tests' server thread)


def closed_port() -> int:
    """A loopback port with nothing listening (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reply(doc: dict[str, Any]) -> dict[str, Any]:
    return {"summary": f"done: {doc['task'][:40]}", "output": {"text": doc["task"]},
            "usage": {"tokensIn": 3, "tokensOut": 5}}


def misbehaving_app() -> Starlette:
    """One endpoint per fault, each at ``/<fault>/run`` (point the runtime at ``/<fault>``):

    flaky (500 on each task's first attempt), ratelimit (429 + Retry-After: 1 first), slow
    (answers after 3 s), cut (stream ends without complete), reset (stream dies mid-body),
    streamerror (an error event), malformed (200 with text), badshape (JSON without summary),
    notfound (404), badstream (a non-JSON SSE event).
    """
    attempts: Counter[str] = Counter()

    async def body(request: Request) -> dict[str, Any]:
        return json.loads(await request.body())

    async def flaky(request: Request) -> Response:
        doc = await body(request)
        attempts[doc["task"]] += 1
        if attempts[doc["task"]] == 1:
            return JSONResponse({"error": {"message": "upstream exploded"}}, 500)
        return JSONResponse(_reply(doc))

    async def ratelimit(request: Request) -> Response:
        doc = await body(request)
        attempts["429:" + doc["task"]] += 1
        if attempts["429:" + doc["task"]] == 1:
            return JSONResponse({"error": "slow down"}, 429, headers={"retry-after": "1"})
        return JSONResponse(_reply(doc))

    async def slow(request: Request) -> Response:
        await asyncio.sleep(3)
        return JSONResponse(_reply(await body(request)))

    def stream(events: list[bytes], *, crash: bool = False) -> Callable[[Request], Any]:
        async def handler(request: Request) -> Response:
            async def gen() -> AsyncIterator[bytes]:
                for event in events:
                    yield event
                if crash:
                    raise RuntimeError("connection dropped on purpose")
            return StreamingResponse(gen(), media_type="text/event-stream")
        return handler

    start = b'data: {"event":"start"}\n\n'
    chunk = b'data: {"event":"chunk","content":"partial "}\n\n'
    routes = [
        Route("/flaky/run", flaky, methods=["POST"]),
        Route("/ratelimit/run", ratelimit, methods=["POST"]),
        Route("/slow/run", slow, methods=["POST"]),
        Route("/cut/run", stream([start, chunk]), methods=["POST"]),
        Route("/reset/run", stream([start, chunk], crash=True), methods=["POST"]),
        Route("/streamerror/run", stream([start, chunk, b'data: {"event":"error","message":'
                                                        b'"model overloaded"}\n\n']),
              methods=["POST"]),
        Route("/badstream/run", stream([start, b"data: {not json\n\n"]), methods=["POST"]),
        Route("/malformed/run", lambda r: Response("<html>oops</html>", 200), methods=["POST"]),
        Route("/badshape/run", lambda r: JSONResponse({"output": 1}), methods=["POST"]),
        Route("/notfound/run", lambda r: JSONResponse({"error": "no"}, 404), methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.state.attempts = attempts
    return app


# -- fake vendors ---------------------------------------------------------------------------
class FakeVendor:
    """Records the requests a fake vendor received (method, path, headers, JSON body)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail_status: int | None = None

    async def record(self, request: Request) -> dict[str, Any]:
        doc = json.loads(await request.body())
        self.requests.append({"path": request.url.path, "headers": dict(request.headers),
                              "json": doc})
        return doc

    def failure(self) -> Response | None:
        if self.fail_status is None:
            return None
        headers = {"retry-after": "7"} if self.fail_status == 429 else None
        return JSONResponse({"error": {"type": "fake_error", "code": "fake_code",
                                       "message": "do not quote me: secret-ish"}},
                            self.fail_status, headers=headers)


def _sse(doc: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + (doc if isinstance(doc, bytes) else json.dumps(doc).encode()) + b"\n\n"


def fake_openai(vendor: FakeVendor, key: str) -> Starlette:
    async def chat(request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {key}":
            return JSONResponse({"error": {"code": "invalid_api_key"}}, 401)
        doc = await vendor.record(request)
        if failed := vendor.failure():
            return failed
        if not doc.get("stream"):
            return JSONResponse({"id": "c1", "model": doc["model"], "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "Plan ready.\nStep 1."},
                 "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}})

        async def gen() -> AsyncIterator[bytes]:
            for piece in ("Plan ", "ready.", "\nStep 1."):
                yield _sse({"model": doc["model"], "choices": [
                    {"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
            yield _sse({"model": doc["model"], "choices": [
                {"index": 0, "delta": {}, "finish_reason": "stop"}]})
            if doc.get("stream_options", {}).get("include_usage"):
                yield _sse({"model": doc["model"], "choices": [],
                            "usage": {"prompt_tokens": 12, "completion_tokens": 3}})
            yield _sse(b"[DONE]")
        return StreamingResponse(gen(), media_type="text/event-stream")
    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


def fake_anthropic(vendor: FakeVendor, key: str) -> Starlette:
    async def messages(request: Request) -> Response:
        if request.headers.get("x-api-key") != key or not request.headers.get("anthropic-version"):
            return JSONResponse({"type": "error", "error": {"type": "authentication_error"}}, 401)
        doc = await vendor.record(request)
        if failed := vendor.failure():
            return failed
        if not doc.get("stream"):
            return JSONResponse({"id": "m1", "type": "message", "model": doc["model"],
                                 "content": [{"type": "text", "text": "Design drafted.\nDetails."}],
                                 "usage": {"input_tokens": 21, "output_tokens": 9}})

        async def gen() -> AsyncIterator[bytes]:
            yield _sse({"type": "message_start", "message": {
                "id": "m1", "model": doc["model"], "content": [],
                "usage": {"input_tokens": 25, "output_tokens": 1}}}, "message_start")
            yield _sse({"type": "content_block_start", "index": 0,
                        "content_block": {"type": "text", "text": ""}}, "content_block_start")
            yield _sse({"type": "ping"}, "ping")
            for piece in ("Design ", "drafted."):
                yield _sse({"type": "content_block_delta", "index": 0,
                            "delta": {"type": "text_delta", "text": piece}}, "content_block_delta")
            yield _sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
            yield _sse({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                        "usage": {"output_tokens": 4}}, "message_delta")
            yield _sse({"type": "message_stop"}, "message_stop")
        return StreamingResponse(gen(), media_type="text/event-stream")
    return Starlette(routes=[Route("/v1/messages", messages, methods=["POST"])])


def fake_ollama(vendor: FakeVendor) -> Starlette:
    async def chat(request: Request) -> Response:
        doc = await vendor.record(request)
        if failed := vendor.failure():
            return failed
        if not doc.get("stream", True):
            return JSONResponse({"model": doc["model"], "done": True,
                                 "message": {"role": "assistant", "content": "Tests listed.\nA."},
                                 "prompt_eval_count": 31, "eval_count": 6})

        async def gen() -> AsyncIterator[bytes]:
            for piece in ("Tests ", "listed."):
                yield json.dumps({"model": doc["model"], "done": False,
                                  "message": {"role": "assistant", "content": piece}}).encode() + b"\n"
            yield json.dumps({"model": doc["model"], "done": True, "done_reason": "stop",
                              "message": {"role": "assistant", "content": ""},
                              "prompt_eval_count": 33, "eval_count": 2}).encode() + b"\n"
        return StreamingResponse(gen(), media_type="application/x-ndjson")
    return Starlette(routes=[Route("/api/chat", chat, methods=["POST"])])


def vendors_app(openai: FakeVendor, anthropic: FakeVendor, ollama: FakeVendor,
                openai_key: str, anthropic_key: str) -> Starlette:
    """All three fakes on one server: ``/openai/v1``, ``/anthropic``, ``/ollama``."""
    return Starlette(routes=[Mount("/openai", fake_openai(openai, openai_key)),
                             Mount("/anthropic", fake_anthropic(anthropic, anthropic_key)),
                             Mount("/ollama", fake_ollama(ollama))])


class RawServer:
    """A bare TCP server for faults HTTP servers will not produce. ``behaviour``:
    ``reset`` (read the request, then RST), ``half`` (headers promising 100 bytes, 20 sent,
    then close), ``stall`` (read the request, never answer)."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._stop = threading.Event()
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            conn.settimeout(5)
            try:
                conn.recv(65536)
            except OSError:
                conn.close()
                continue
            if self.behaviour == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
            elif self.behaviour == "half":
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                             b"content-length: 100\r\n\r\n" + b'{"summary": "half a ')
                conn.close()
            else:
                self._held.append(conn)

    def __enter__(self) -> RawServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in self._held:
            conn.close()
        self._sock.close()

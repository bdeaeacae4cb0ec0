"""Rehearsal: scripted local model servers for the real agent CLIs (Codex CLI, Claude Code),
and helpers that point each CLI at them, so a run of real coding agents can be rehearsed
offline, without an account or tokens (the tests and the coding-agents tutorial use them).
Needs the ``serve`` extra (Starlette, uvicorn).

``ResponsesServer`` speaks the OpenAI Responses API (SSE) that ``codex exec`` uses;
``MessagesServer`` speaks the Anthropic Messages API (SSE) that ``claude -p`` uses. Each runs
in a background thread on a free 127.0.0.1 port (``with ResponsesServer() as server:`` or
``server.start()`` / ``server.stop()``), has ``.url`` / ``.port``, and logs every request it
receives (``.requests``: a thread-safe snapshot; ``.model_requests()``: the model calls only).

What the "model" does is scripted in the task text, so one server serves many concurrent CLI
processes. Directives are lines in the user's prompt (the CLIs wrap the prompt in context
blocks of their own, which are skipped):

``@shell: CMD``
    one tool call per line, in order (Codex: ``exec_command`` ``{"cmd": CMD}``; Claude:
    ``Bash`` ``{"command": CMD, "description": ...}``).
``@write: PATH TEXT``
    a file-editing tool call, in order with the ``@shell`` lines: PATH (relative to the CLI's
    working folder, no spaces) gets TEXT plus a newline (Codex: the ``apply_patch`` custom
    tool, which Codex offers for models such as ``gpt-5.5``, else, as for ``gpt-5-codex``, a
    shell command; Claude: ``Write``).
``@say: TEXT``
    the final assistant message (default ``done: <first 40 chars of the task>``), sent once
    the last tool call's output has come back.
``@fail: MESSAGE``
    every model request of this task fails (Codex: a ``response.failed`` event, or HTTP
    ``fail_status`` when given; Claude: HTTP ``fail_status``, 500 by default).
    ``codex_home`` / ``claude_env`` turn the CLIs' retries off so a failed turn ends at once.
``@sleep: SECONDS``
    wait this long before answering each model request.
``@usage: INPUT CACHED OUTPUT REASONING``
    usage reported on each response (default ``100 10 20 5``).
``@cache_write: FIVE_MINUTE [ONE_HOUR]``
    Claude: input tokens written to the prompt cache on each response, by lifetime (default
    none), reported as Anthropic does: ``cache_creation_input_tokens`` (their sum) and
    ``cache_creation: {ephemeral_5m_input_tokens, ephemeral_1h_input_tokens}``.
``@chunks: N``
    stream the final text in N deltas.

Which step a request is at comes from the request alone (the number of tool outputs it
already carries), never from server-side session state, so concurrency is safe.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

DEFAULT_USAGE = (100, 10, 20, 5)
TEST_KEY_VAR = "CODEXFLOW_TEST_KEY"
CHUNK_DELAY = 0.05  # seconds between streamed deltas, so that streaming can be observed

_DIRECTIVE = re.compile(
    r"^[ \t]*@(shell|write|say|fail|sleep|usage|cache_write|chunks):[ \t]?(.*)$", re.M)
_WRAPPER = re.compile(r"\s*<([A-Za-z_-]+)>.*</\1>\s*", re.S)
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


# -- the script -------------------------------------------------------------------------------
@dataclass
class Script:
    """The directives found in a task's text. ``steps`` are the tool calls in order:
    ``("shell", command)`` or ``("write", "path text")``."""

    task: str = ""
    steps: list[tuple[str, str]] = field(default_factory=list)
    say: str | None = None
    fail: str | None = None
    sleep: float = 0.0
    usage: tuple[int, int, int, int] = DEFAULT_USAGE
    cache_write: tuple[int, int] = (0, 0)  # 5-minute, 1-hour
    chunks: int = 1

    @property
    def shell(self) -> list[str]:
        return [arg for kind, arg in self.steps if kind == "shell"]

    @property
    def final_text(self) -> str:
        return self.say if self.say is not None else f"done: {self.task[:40]}"


def parse_script(texts: list[str]) -> Script:
    """The script in the last of ``texts`` that holds directives (else an empty script whose
    task is the last text)."""
    texts = [t for t in texts if t and t.strip()]
    chosen = next((t for t in reversed(texts) if _DIRECTIVE.search(t)), texts[-1] if texts else "")
    script = Script(task=chosen.strip())
    for name, raw in _DIRECTIVE.findall(chosen):
        value = raw.strip()
        if name in ("shell", "write"):
            script.steps.append((name, value))
        elif name == "say":
            script.say = value
        elif name == "fail":
            script.fail = value or "scripted failure"
        elif name == "sleep":
            script.sleep = float(value)
        elif name == "usage":
            numbers = [int(n) for n in value.split()][:4]
            inp, cached, out, reasoning = numbers + list(DEFAULT_USAGE[len(numbers):])
            script.usage = (inp, cached, out, reasoning)
        elif name == "cache_write":
            numbers = [int(n) for n in value.split()][:2]
            five, hour = numbers + [0] * (2 - len(numbers))
            script.cache_write = (five, hour)
        elif name == "chunks":
            script.chunks = max(1, int(value))
    return script


def split_chunks(text: str, n: int) -> list[str]:
    """``text`` in ``n`` non-empty pieces (fewer when the text is shorter than ``n``)."""
    n = max(1, min(n, len(text) or 1))
    size, extra = divmod(len(text), n)
    pieces, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        pieces.append(text[start:end])
        start = end
    return pieces


def _split_write(arg: str) -> tuple[str, str]:
    path, _, text = arg.partition(" ")
    return path, text


def _texts(content: Any) -> list[str]:
    """The text parts of a message ``content`` (a string or a list of typed parts), leaving
    out the context blocks the CLIs add (``<system-reminder>...</system-reminder>``,
    ``<environment_context>...</environment_context>``)."""
    parts = [content] if isinstance(content, str) else [
        part["text"] for part in content or []
        if isinstance(part, dict) and isinstance(part.get("text"), str)
        and part.get("type") in ("text", "input_text", None)]
    return [text for text in parts if text.strip() and not _WRAPPER.fullmatch(text)]


def _texts_all(content: Any) -> list[str]:
    """Every text part of ``content``, context blocks included."""
    if isinstance(content, str):
        return [content]
    return [p["text"] for p in content or []
            if isinstance(p, dict) and isinstance(p.get("text"), str)]


def _sse(event: str, doc: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(doc)}\n\n".encode()


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


# -- the common server ------------------------------------------------------------------------
class ServerThread:
    """An ASGI app served by uvicorn in a background thread on a free 127.0.0.1 port."""

    def __init__(self, app: Any, lifespan: str = "auto") -> None:
        self.app = app
        # IPPROTO_TCP so that asyncio sets TCP_NODELAY on accepted connections
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", access_log=False,
                                timeout_graceful_shutdown=1, lifespan=lifespan)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]},
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("scripted model server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(10)
        self._sock.close()

class _ScriptedServer:
    """A Starlette app on a ``ServerThread`` (uvicorn) that logs every request."""

    MODEL_PATH = ""

    def __init__(self, fail_status: int | None = None) -> None:
        self.fail_status = fail_status
        self._lock = threading.Lock()
        self._requests: list[dict[str, Any]] = []
        self._thread: ServerThread | None = None
        self._port: int | None = None

    # lifecycle
    def start(self) -> _ScriptedServer:
        if self._thread is None:
            thread = ServerThread(Starlette(routes=self._routes()))
            thread.__enter__()
            self._thread, self._port = thread, thread.port
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.__exit__(None, None, None)
            self._thread = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("server not started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # the log
    @property
    def requests(self) -> list[dict[str, Any]]:
        """A snapshot of the requests so far, each a dict: ``method``, ``path``, ``query``,
        ``headers``, ``json`` (the parsed body or None), ``body`` (text), ``time``."""
        with self._lock:
            return list(self._requests)

    def model_requests(self) -> list[dict[str, Any]]:
        """The logged requests to the model endpoint."""
        return [r for r in self.requests if r["method"] == "POST" and r["path"] == self.MODEL_PATH]

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    async def _record(self, request: Request) -> dict[str, Any]:
        raw = await request.body()
        try:
            doc = json.loads(raw) if raw else None
        except ValueError:
            doc = None
        entry = {"method": request.method, "path": request.url.path,
                 "query": request.url.query, "headers": dict(request.headers),
                 "json": doc, "body": raw.decode("utf-8", "replace"), "time": time.time()}
        with self._lock:
            self._requests.append(entry)
        return entry

    def _routes(self) -> list[Route]:
        return [Route(self.MODEL_PATH, self._model, methods=["POST"]),
                Route("/{path:path}", self._other, methods=_METHODS)]

    async def _other(self, request: Request) -> Response:
        await self._record(request)
        if request.method == "HEAD":
            return Response(status_code=200)
        return JSONResponse({})

    async def _model(self, request: Request) -> Response:
        entry = await self._record(request)
        doc = entry["json"] if isinstance(entry["json"], dict) else {}
        try:
            script, done = self.script_of(doc)
        except ValueError as exc:  # e.g. "@sleep: soon": a 400, which neither CLI retries
            return JSONResponse({"type": "error", "error": {
                "type": "invalid_request_error", "message": f"bad test script: {exc}"}}, 400)
        if script.sleep:
            await asyncio.sleep(script.sleep)
        if script.fail is not None and self.fail_status is not None:
            return self._http_error(script.fail)
        if not doc.get("stream") and (whole := self._whole(doc, script, done)) is not None:
            return JSONResponse(whole)
        return StreamingResponse(self._events(doc, script, done), media_type="text/event-stream",
                                 headers={"cache-control": "no-cache"})

    def _whole(self, doc: dict[str, Any], script: Script, done: int) -> dict[str, Any] | None:
        """The answer as one JSON document for a request without ``stream``, or None to
        stream anyway."""
        return None

    @staticmethod
    def script_of(doc: dict[str, Any]) -> tuple[Script, int]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _http_error(self, message: str) -> Response:  # pragma: no cover - abstract
        raise NotImplementedError

    def _events(self, doc: dict[str, Any], script: Script,
                done: int) -> AsyncIterator[bytes]:  # pragma: no cover - abstract
        raise NotImplementedError


# -- Codex: the Responses API -----------------------------------------------------------------
class ResponsesServer(_ScriptedServer):
    """OpenAI Responses API (``POST /v1/responses``, SSE) for the Codex CLI.

    ``@fail`` sends ``response.created`` then ``response.failed`` with error ``fail_code``
    (``server_error``: Codex retries it ``stream_max_retries`` times; ``invalid_prompt``:
    never retried, message shown verbatim). With ``fail_status`` (e.g. 500) the request
    fails with that HTTP status instead (Codex retries 5xx ``request_max_retries`` x
    ``stream_max_retries`` times and shows a generic "high demand" message)."""

    MODEL_PATH = "/v1/responses"

    def __init__(self, fail_status: int | None = None, fail_code: str = "server_error") -> None:
        super().__init__(fail_status)
        self.fail_code = fail_code

    @staticmethod
    def script_of(doc: dict[str, Any]) -> tuple[Script, int]:
        """The script in a request body, and how many tool outputs it already carries."""
        items = doc.get("input") or []
        if isinstance(items, str):
            items = [{"type": "message", "role": "user", "content": items}]
        texts: list[str] = []
        outputs = 0
        for item in items:
            if not isinstance(item, dict):
                continue
            kind = item.get("type", "message")
            if kind == "message" and item.get("role") == "user":
                texts.extend(_texts(item.get("content")))
            elif kind in ("function_call_output", "custom_tool_call_output"):
                outputs += 1
        return parse_script(texts), outputs

    @staticmethod
    def shell_call(doc: dict[str, Any], command: str) -> tuple[str, dict[str, Any]]:
        """The function call that runs ``command`` with the shell tool the request offers:
        ``exec_command {"cmd": ...}`` (Codex 0.169), else the older ``shell_command`` /
        ``shell`` tools."""
        offered = {t.get("name") for t in doc.get("tools") or [] if isinstance(t, dict)}
        if "exec_command" not in offered:
            if "shell_command" in offered:
                return "shell_command", {"command": command}
            if "shell" in offered:
                return "shell", {"command": ["bash", "-lc", command]}
        return "exec_command", {"cmd": command}

    @classmethod
    def write_call(cls, doc: dict[str, Any], path: str, text: str) -> dict[str, Any]:
        """The output item that writes ``text`` to ``path``: an ``apply_patch`` call when the
        request offers that tool (custom or function), else a shell command."""
        tools = {t.get("name"): t.get("type") for t in doc.get("tools") or []
                 if isinstance(t, dict)}
        patch = f"*** Begin Patch\n*** Add File: {path}\n+{text}\n*** End Patch\n"
        if tools.get("apply_patch") == "custom":
            return {"type": "custom_tool_call", "id": _id("ctc"), "call_id": _id("call"),
                    "name": "apply_patch", "input": patch, "status": "completed"}
        if tools.get("apply_patch") == "function":
            name, arguments = "apply_patch", {"input": patch}
        else:
            folder = os.path.dirname(path)
            command = (f"mkdir -p {shlex.quote(folder)} && " if folder else "") + \
                f"printf '%s\\n' {shlex.quote(text)} > {shlex.quote(path)}"
            name, arguments = cls.shell_call(doc, command)
        return {"type": "function_call", "id": _id("fc"), "call_id": _id("call"), "name": name,
                "arguments": json.dumps(arguments), "status": "completed"}

    def _http_error(self, message: str) -> Response:
        return JSONResponse({"error": {"type": self.fail_code, "code": self.fail_code,
                                       "message": message}}, self.fail_status or 500)

    async def _other(self, request: Request) -> Response:
        if request.url.path.rstrip("/").endswith("/models"):
            await self._record(request)
            return JSONResponse({"object": "list", "data": [], "models": []})
        return await super()._other(request)

    async def _events(self, doc: dict[str, Any], script: Script,
                      done: int) -> AsyncIterator[bytes]:
        rid = _id("resp")
        base = {"id": rid, "object": "response", "model": doc.get("model", ""),
                "created_at": int(time.time())}
        yield _sse("response.created", {"type": "response.created",
                                        "response": {**base, "status": "in_progress"}})
        if script.fail is not None:
            yield _sse("response.failed", {"type": "response.failed", "response": {
                **base, "status": "failed",
                "error": {"code": self.fail_code, "message": script.fail}}})
            return
        if done < len(script.steps):
            kind, arg = script.steps[done]
            if kind == "shell":
                name, arguments = self.shell_call(doc, arg)
                item: dict[str, Any] = {
                    "type": "function_call", "id": _id("fc"), "call_id": _id("call"),
                    "name": name, "arguments": json.dumps(arguments), "status": "completed"}
            else:
                item = self.write_call(doc, *_split_write(arg))
            yield _sse("response.output_item.added", {
                "type": "response.output_item.added", "output_index": 0, "item": item})
            yield _sse("response.output_item.done", {
                "type": "response.output_item.done", "output_index": 0, "item": item})
        else:
            mid = _id("msg")
            text = script.final_text
            if script.chunks > 1:
                yield _sse("response.output_item.added", {
                    "type": "response.output_item.added", "output_index": 0,
                    "item": {"type": "message", "id": mid, "role": "assistant",
                             "status": "in_progress", "content": []}})
                yield _sse("response.content_part.added", {
                    "type": "response.content_part.added", "item_id": mid,
                    "output_index": 0, "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": []}})
                for piece in split_chunks(text, script.chunks):
                    yield _sse("response.output_text.delta", {
                        "type": "response.output_text.delta", "item_id": mid,
                        "output_index": 0, "content_index": 0, "delta": piece})
                    await asyncio.sleep(CHUNK_DELAY)
            item = {"type": "message", "id": mid, "role": "assistant", "status": "completed",
                    "content": [{"type": "output_text", "text": text, "annotations": []}]}
            yield _sse("response.output_item.done", {
                "type": "response.output_item.done", "output_index": 0, "item": item})
        inp, cached, out, reasoning = script.usage
        usage = {"input_tokens": inp, "input_tokens_details": {"cached_tokens": cached},
                 "output_tokens": out, "output_tokens_details": {"reasoning_tokens": reasoning},
                 "total_tokens": inp + out}
        yield _sse("response.completed", {"type": "response.completed", "response": {
            **base, "status": "completed", "usage": usage}})


# -- Claude Code: the Messages API ------------------------------------------------------------
class MessagesServer(_ScriptedServer):
    """Anthropic Messages API (``POST /v1/messages``, SSE) for Claude Code.

    Usage maps to ``input_tokens`` = INPUT, ``cache_read_input_tokens`` = CACHED, the
    ``@cache_write`` tokens (in ``message_start``) and ``output_tokens`` = OUTPUT (in
    ``message_delta``); REASONING is not reported. ``@fail`` answers HTTP ``fail_status`` (500 by default; Claude Code retries 5xx
    unless ``CLAUDE_CODE_MAX_RETRIES=0``, and never retries 400)."""

    MODEL_PATH = "/v1/messages"

    def __init__(self, fail_status: int = 500) -> None:
        super().__init__(fail_status)

    @staticmethod
    def script_of(doc: dict[str, Any]) -> tuple[Script, int]:
        texts: list[str] = []
        outputs = 0
        for message in doc.get("messages") or []:
            if not isinstance(message, dict) or message.get("role") != "user":
                continue
            content = message.get("content")
            if isinstance(content, list):
                outputs += sum(1 for p in content
                               if isinstance(p, dict) and p.get("type") == "tool_result")
            texts.extend(_texts(content))
        return parse_script(texts), outputs

    @staticmethod
    def working_dir(doc: dict[str, Any]) -> str | None:
        """The working folder Claude Code states in its system prompt."""
        system = doc.get("system")
        text = system if isinstance(system, str) else "\n".join(_texts_all(system))
        match = re.search(r"[Ww]orking directory: (\S+)", text)
        return match.group(1) if match else None

    def tool_use(self, doc: dict[str, Any], kind: str, arg: str) -> tuple[str, dict[str, Any]]:
        """The tool and input for one scripted step."""
        if kind == "shell":
            return "Bash", {"command": arg, "description": f"Run {arg[:40]}"}
        path, text = _split_write(arg)
        if not os.path.isabs(path) and (cwd := self.working_dir(doc)):
            path = os.path.join(cwd, path)
        return "Write", {"file_path": path, "content": text + "\n"}

    def _routes(self) -> list[Route]:
        return [Route("/v1/messages/count_tokens", self._count, methods=["POST"]),
                *super()._routes()]

    async def _count(self, request: Request) -> Response:
        await self._record(request)
        return JSONResponse({"input_tokens": DEFAULT_USAGE[0]})

    def _http_error(self, message: str) -> Response:
        kind = "invalid_request_error" if (self.fail_status or 500) < 500 else "api_error"
        return JSONResponse({"type": "error", "error": {"type": kind, "message": message}},
                            self.fail_status or 500)

    async def _events(self, doc: dict[str, Any], script: Script,
                      done: int) -> AsyncIterator[bytes]:
        inp, cached, out, _reasoning = script.usage
        yield _sse("message_start", {"type": "message_start", "message": {
            "id": _id("msg"), "type": "message", "role": "assistant",
            "model": doc.get("model", "claude-test"), "content": [], "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": inp, "cache_read_input_tokens": cached,
                      **_cache_writes(script), "output_tokens": 1}}})
        if done < len(script.steps):
            name, tool_input = self.tool_use(doc, *script.steps[done])
            yield _sse("content_block_start", {
                "type": "content_block_start", "index": 0, "content_block": {
                    "type": "tool_use", "id": _id("toolu"), "name": name, "input": {}}})
            yield _sse("content_block_delta", {
                "type": "content_block_delta", "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": json.dumps(tool_input)}})
            stop = "tool_use"
        else:
            yield _sse("content_block_start", {"type": "content_block_start", "index": 0,
                                               "content_block": {"type": "text", "text": ""}})
            for piece in split_chunks(script.final_text, script.chunks):
                yield _sse("content_block_delta", {
                    "type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": piece}})
                if script.chunks > 1:
                    await asyncio.sleep(CHUNK_DELAY)
            stop = "end_turn"
        yield _sse("content_block_stop", {"type": "content_block_stop", "index": 0})
        yield _sse("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": stop, "stop_sequence": None},
                                     "usage": {"output_tokens": out}})
        yield _sse("message_stop", {"type": "message_stop"})

    def _whole(self, doc: dict[str, Any], script: Script, done: int) -> dict[str, Any]:
        """The same answer as one JSON message (for ``stream: false`` requests)."""
        inp, cached, out, _ = script.usage
        if done < len(script.steps):
            name, tool_input = self.tool_use(doc, *script.steps[done])
            content: list[dict[str, Any]] = [{"type": "tool_use", "id": _id("toolu"),
                                              "name": name, "input": tool_input}]
            stop = "tool_use"
        else:
            content = [{"type": "text", "text": script.final_text}]
            stop = "end_turn"
        return {"id": _id("msg"), "type": "message", "role": "assistant",
                "model": doc.get("model", "claude-test"), "content": content,
                "stop_reason": stop, "stop_sequence": None,
                "usage": {"input_tokens": inp, "cache_read_input_tokens": cached,
                          **_cache_writes(script), "output_tokens": out}}



def _cache_writes(script: Script) -> dict[str, Any]:
    """The prompt-cache writes of one Messages API response, as Anthropic reports them."""
    five, hour = script.cache_write
    return {"cache_creation_input_tokens": five + hour,
            "cache_creation": {"ephemeral_5m_input_tokens": five,
                               "ephemeral_1h_input_tokens": hour}}


# -- finding and configuring the CLIs ---------------------------------------------------------
def _find_bin(env_var: str, name: str) -> str | None:
    """``$env_var`` (None when it names no executable), else
    ``$CODEXFLOW_AGENTS_CACHE/node_modules/.bin/NAME`` (default cache
    ``~/.cache/codexflow-agents``), else NAME on PATH, else None."""
    if explicit := os.environ.get(env_var):
        return shutil.which(explicit)  # a path or a name on PATH; None when missing
    cache = Path(os.environ.get("CODEXFLOW_AGENTS_CACHE")
                 or Path.home() / ".cache" / "codexflow-agents")
    candidate = cache / "node_modules" / ".bin" / name
    if candidate.exists():
        return str(candidate)
    return shutil.which(name)


CODEX_BIN = _find_bin("CODEXFLOW_CODEX_BIN", "codex")
CLAUDE_BIN = _find_bin("CODEXFLOW_CLAUDE_BIN", "claude")
def codex_config(server: ResponsesServer, model: str = "gpt-5-codex",
                 sandbox: str = "danger-full-access", approval: str = "never",
                 retries: int = 0) -> str:
    """The text of a ``config.toml`` that points Codex at ``server`` only: provider
    ``local`` with ``retries`` request and stream retries (0: a failed request ends the turn
    at once), no analytics, no plugin sync (both would look up chatgpt.com / github.com)."""
    return (
        f'model = "{model}"\n'
        'model_provider = "local"\n'
        f'approval_policy = "{approval}"\n'
        f'sandbox_mode = "{sandbox}"\n'
        "check_for_update_on_startup = false\n"
        "\n"
        "[analytics]\n"
        "enabled = false\n"
        "\n"
        "[features]\n"
        "plugins = false\n"
        "\n"
        "[model_providers.local]\n"
        'name = "codexflow test server"\n'
        f'base_url = "{server.url}/v1"\n'
        f'env_key = "{TEST_KEY_VAR}"\n'
        'wire_api = "responses"\n'
        f"request_max_retries = {retries}\n"
        f"stream_max_retries = {retries}\n"
        "stream_idle_timeout_ms = 300000\n")


def codex_home(tmp_path: Path, server: ResponsesServer, model: str = "gpt-5-codex",
               sandbox: str = "danger-full-access", approval: str = "never",
               retries: int = 0) -> Path:
    """A fresh ``CODEX_HOME`` (``tmp_path/codex-home``) holding ``codex_config(...)``.

    ``sandbox``: ``read-only`` | ``workspace-write`` | ``danger-full-access`` (all three work
    as root here); ``approval``: ``never`` | ``on-request`` | ``on-failure`` (``untrusted`` is
    refused by Codex 0.169)."""
    home = Path(tmp_path) / "codex-home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(codex_config(server, model, sandbox, approval, retries))
    return home


def codex_env(home: Path) -> dict[str, str]:
    """The environment for a ``codex`` process using ``home`` as its ``CODEX_HOME``, with
    the provider key set and a scratch ``HOME`` next to it."""
    scratch = Path(home).parent / "home"
    scratch.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CODEX_", "OPENAI_"))}
    env.update({"CODEX_HOME": str(home), TEST_KEY_VAR: "test-key", "HOME": str(scratch),
                "NO_COLOR": "1"})
    return env


def claude_env(tmp_path: Path, server: MessagesServer) -> dict[str, str]:
    """The environment for a ``claude`` process that talks to ``server`` only: a scratch
    ``HOME``, no retries (``CLAUDE_CODE_MAX_RETRIES=0``: a failed request ends the turn at
    once), and no non-essential traffic (without it Claude Code looks up api.anthropic.com)."""
    scratch = Path(tmp_path) / "claude-home"
    scratch.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ANTHROPIC_", "CLAUDE_CODE_", "CLAUDECODE"))}
    env.update({
        "HOME": str(scratch),
        "ANTHROPIC_BASE_URL": server.url,
        "ANTHROPIC_API_KEY": "test-key",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",
        "NO_COLOR": "1",
    })
    return env

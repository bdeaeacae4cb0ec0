"""The demo endpoint as a Starlette app: ``GET /health``, ``POST /run`` (JSON) and
``POST /run?stream=1`` (SSE), speaking the contract in ``docs/RUNTIME.md``.

Safety rules: bearer token compared in constant time, bodies capped (413) and timed (408),
bodies validated (422 names the field, never echoes a value), unknown agents 404, and no error
message ever quotes the request.

:func:`server_config` runs the app under uvicorn with :class:`ServerLimits`: request heads capped
in size and header count (431), heads, bodies and slow readers timed, connections capped (503).
See docs/RELIABILITY.md, "Hostile clients".
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import aiohttp
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..errors import ConfigError
from ..httpclient import client_timeout, make_session
from ..registry import Registry
from .providers import (
    PROVIDER_NAMES,
    AgentRequest,
    Provider,
    ProviderError,
    ProviderReply,
    ProviderSettings,
    first_line,
    make_provider,
)

log = logging.getLogger("codexflow_nb.server")
MAX_BODY_BYTES = 1 << 20
MAX_NAME_CHARS = 200
#: Connections the endpoint keeps open to each vendor.
UPSTREAM_CONNECTIONS = 64
UPSTREAM_TIMEOUT = client_timeout(300.0, connect_s=10.0)
#: A JSON escape that may encode half of a surrogate pair (only then is the slow check needed).
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


@dataclass(frozen=True)
class ServerLimits:
    """What one client may hold of the endpoint. The app enforces ``body_timeout_s`` (408);
    :func:`server_config` the rest, in the HTTP protocol, before the app sees a request."""

    #: Bytes of a request head (request line and header fields); more is a 431 and a close.
    max_header_bytes: int = 16 * 1024
    #: Header fields in one request; more is a 431 and a close.
    max_headers: int = 100
    #: Seconds from a connection's first byte (or its opening) to the end of a request head.
    header_timeout_s: float = 10.0
    #: Seconds for a whole request body, read by the app (408) or discarded after a reply.
    body_timeout_s: float = 30.0
    #: Seconds a reply may wait on a client that does not read it; then the connection drops.
    send_timeout_s: float = 30.0
    #: Open connections; the next one is answered 503 and closed at once.
    max_connections: int = 1000
    #: Seconds an idle connection stays open between requests (uvicorn's keep-alive).
    keep_alive_s: float = 5.0

    def problems(self) -> list[str]:
        return [f"{f.name} must be positive" for f in fields(self)
                if not getattr(self, f.name) > 0]


def error_response(status: int, type_: str, message: str,
                   headers: Mapping[str, str] | None = None) -> JSONResponse:
    """``{"error": {"type", "message"}}`` with ``status``."""
    return JSONResponse({"error": {"type": type_, "message": message}}, status, headers=headers)


def _encodable(text: str) -> bool:
    """False for lone surrogates, which JSON allows but UTF-8 cannot carry."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def validate_body(doc: Any, raw: bytes | None = None) -> str | None:
    """``"field: problem"`` for the first problem in a ``/run`` body, or None when valid.
    ``raw`` (the body's bytes) lets a body without ``\\uD8xx`` escapes skip the check for lone
    surrogates in ``context``."""
    if not isinstance(doc, dict):
        return "body: must be a JSON object with agentId, alias and task"
    for name in ("agentId", "alias"):
        value = doc.get(name)
        if value is None:
            return f"{name}: missing"
        if not isinstance(value, str) or not value.strip():
            return f"{name}: must be a non-empty string"
        if len(value) > MAX_NAME_CHARS:
            return f"{name}: longer than {MAX_NAME_CHARS} characters"
        if not value.isprintable() or not _encodable(value):
            return f"{name}: must hold printable characters only"
    task = doc.get("task")
    if task is None:
        return "task: missing"
    if not isinstance(task, str) or not task.strip():
        return "task: must be a non-empty string"
    if not _encodable(task):
        return "task: must be valid Unicode (a lone surrogate is not)"
    provider = doc.get("provider")
    if provider is not None and provider not in PROVIDER_NAMES:
        return f"provider: must be one of {', '.join(PROVIDER_NAMES)}"
    context = doc.get("context")
    if context is not None and (not isinstance(context, list)
                                or not all(isinstance(c, dict) for c in context)):
        return "context: must be a list of objects"
    if context and (raw is None or SURROGATE_ESCAPE.search(raw)
                    or json.detect_encoding(raw) not in ("utf-8", "utf-8-sig")):
        try:
            json.dumps(context, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            return "context: must be valid Unicode (a lone surrogate is not)"
    return None


def reply_document(request: AgentRequest, provider: str, reply: ProviderReply) -> dict[str, Any]:
    """The contract's reply ``{summary, output, usage?, model}`` for a provider's reply."""
    output = {"text": reply.text, "agentId": request.agent.id, "alias": request.alias,
              "provider": provider, "model": reply.model, **reply.extra}
    doc: dict[str, Any] = {"summary": first_line(reply.text) or f"{request.agent.name}: empty reply",
                           "output": output, "model": reply.model}
    if reply.usage is not None:
        doc["usage"] = reply.usage
    return doc


def sse(doc: Mapping[str, Any]) -> bytes:
    """One SSE event: a single ``data:`` line of compact JSON."""
    return b"data: " + json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


class Endpoint:
    """The request handlers and their shared state (providers, upstream client, fault dice)."""

    def __init__(self, registry: Registry, *, provider: str, token: str | None, latency_ms: float,
                 fail_rate: float, fail_seed: int | None, model: str | None,
                 settings: ProviderSettings, max_body_bytes: int, body_timeout_s: float,
                 cli_pass_env: Sequence[str] = ()) -> None:
        self.registry = registry
        self.default_provider = provider
        self.model = model
        self.settings = settings
        self.latency = latency_ms / 1000.0
        self.fail_rate = fail_rate
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.cli_pass_env = tuple(cli_pass_env)
        self._expected = f"Bearer {token}".encode() if token else None
        self._rng = random.Random(fail_seed)
        self._providers: dict[str, Provider] = {}
        self._client: aiohttp.ClientSession | None = None

    # -- shared resources -----------------------------------------------------------------
    def provider(self, name: str) -> Provider:
        found = self._providers.get(name)
        if found is None:
            if name == "cli":  # with its explicit environment
                from .providers.cli import CliProvider, cli_env

                found = CliProvider(self.settings.cli_command,
                                    timeout_s=self.settings.cli_timeout_s,
                                    max_output_bytes=self.settings.cli_max_output_bytes,
                                    env=cli_env(self.cli_pass_env))
            else:
                model = self.model if name == self.default_provider else None
                found = make_provider(name, self.settings, self._upstream, model)
            self._providers[name] = found
        return found

    def _upstream(self) -> aiohttp.ClientSession:
        """The client for vendor APIs, made on first use (echo and cli never need it)."""
        if self._client is None:
            self._client = make_session(UPSTREAM_CONNECTIONS, timeout=UPSTREAM_TIMEOUT)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    # -- handlers ---------------------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "provider": self.default_provider,
                             "agents": len(self.registry), "auth": self._expected is not None})

    async def run(self, request: Request) -> Response:
        if self._expected is not None and not hmac.compare_digest(
                request.headers.get("authorization", "").encode(), self._expected):
            return error_response(401, "Unauthorized", "missing or wrong bearer token",
                                  {"www-authenticate": "Bearer"})
        body = await self._read_body(request)
        if isinstance(body, Response):
            return body
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            return error_response(422, "ValidationError", "body: not valid JSON")
        problem = validate_body(doc, body)
        if problem:
            return error_response(422, "ValidationError", problem)
        try:
            agent = self.registry.find(doc["agentId"])
        except ConfigError:
            return error_response(422, "ValidationError", "agentId: ambiguous, use domain/id")
        if agent is None:
            return error_response(404, "UnknownAgent", "agentId: no such agent on this endpoint")
        if self.fail_rate and self._rng.random() < self.fail_rate:
            return error_response(500, "InjectedFailure", "injected failure (--fail-rate)")
        if self.latency:
            await asyncio.sleep(self.latency)
        name = doc.get("provider") or self.default_provider
        req = AgentRequest(agent, doc["alias"], doc["task"], doc.get("context") or None)
        try:
            provider = self.provider(name)
            if request.query_params.get("stream") in ("1", "true"):
                return await self._stream(req, name, provider)
            reply = await provider.complete(req)
        except ProviderError as exc:
            return self._provider_error(exc)
        return JSONResponse(reply_document(req, name, reply))

    async def _read_body(self, request: Request) -> bytes | Response:
        """The body, or the reply to send instead: 413 past ``max_body_bytes``, 408 when it
        takes longer than ``body_timeout_s`` in all (a trickle is no way round it)."""
        too_big = error_response(413, "PayloadTooLarge",
                                 f"body larger than {self.max_body_bytes} bytes")
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            return too_big
        body = bytearray()
        try:
            async with asyncio.timeout(self.body_timeout_s):
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > self.max_body_bytes:
                        return too_big
        except TimeoutError:
            return error_response(408, "RequestTimeout",
                                  f"body not received within {self.body_timeout_s:g} s",
                                  {"connection": "close"})
        except ClientDisconnect:  # nobody to answer, nothing worth a log line
            return Response(status_code=400)
        return bytes(body)

    @staticmethod
    def _provider_error(exc: ProviderError) -> Response:
        headers = ({"retry-after": str(max(0, round(exc.retry_after)))}
                   if exc.retry_after is not None else None)
        return error_response(exc.status, "ProviderError", str(exc), headers)

    async def _stream(self, req: AgentRequest, name: str, provider: Provider) -> Response:
        items = provider.stream(req)
        try:  # the first item decides between an HTTP error and a 200 stream
            first = await anext(items)
        except StopAsyncIteration:
            first = None
        except BaseException:
            await items.aclose()  # type: ignore[attr-defined]
            raise
        return StreamingResponse(self._events(req, name, first, items),
                                 media_type="text/event-stream",
                                 headers={"cache-control": "no-cache", "x-accel-buffering": "no"})

    async def _events(self, req: AgentRequest, name: str, first: str | ProviderReply | None,
                      items: AsyncIterator[str | ProviderReply]) -> AsyncIterator[bytes]:
        yield sse({"event": "start", "agentId": req.agent.id, "alias": req.alias, "provider": name})
        item = first
        try:
            while item is not None:
                if isinstance(item, ProviderReply):
                    yield sse({"event": "complete", **reply_document(req, name, item)})
                    return
                yield sse({"event": "chunk", "content": item})
                item = await anext(items, None)
            yield sse({"event": "error", "message": "provider ended without a reply"})
        except ProviderError as exc:
            yield sse({"event": "error", "message": str(exc), "status": exc.status,
                       "retryable": exc.retryable})
        except Exception:
            log.exception("provider %s failed mid-stream", name)
            yield sse({"event": "error", "message": "internal error"})
        finally:
            with contextlib.suppress(Exception):
                await items.aclose()  # type: ignore[attr-defined]


def create_app(registry: Registry, *, provider: str = "echo", token: str | None = None,
               latency_ms: float = 0.0, fail_rate: float = 0.0, fail_seed: int | None = None,
               chunk_delay_ms: float = 0.0, model: str | None = None,
               cli_command: Sequence[str] | None = None, cli_timeout_s: float = 120.0,
               cli_max_output_bytes: int = 256 * 1024, env: Mapping[str, str] | None = None,
               max_body_bytes: int = MAX_BODY_BYTES, agent_runtime: Any = None,
               agent_runs_dir: str | None = None, cli_pass_env: Sequence[str] = (),
               limits: ServerLimits | None = None) -> Starlette:
    """The endpoint app. ``provider`` is the default for requests that name none; ``env``
    (default ``os.environ``) holds the provider keys and base URLs. The ``cli`` command gets
    only the variables of ``providers.cli.ENV_ALLOW`` and ``cli_pass_env``. ``limits``
    (default :class:`ServerLimits`) is kept as ``app.state.limits`` for :func:`server_config`;
    the app itself enforces its ``body_timeout_s``."""
    limits = limits or ServerLimits()
    problems = []
    if provider not in PROVIDER_NAMES:
        problems.append(f"provider: must be one of {', '.join(PROVIDER_NAMES)}")
    if latency_ms < 0 or chunk_delay_ms < 0:
        problems.append("latency_ms and chunk_delay_ms must be 0 or more")
    if not 0.0 <= fail_rate <= 1.0:
        problems.append("fail_rate must be between 0 and 1")
    if cli_timeout_s <= 0 or cli_max_output_bytes <= 0 or max_body_bytes <= 0:
        problems.append("cli_timeout_s, cli_max_output_bytes and max_body_bytes must be positive")
    problems += limits.problems()
    problems += [f"cli_pass_env: {name!r} is not a variable name" for name in cli_pass_env
                 if not name or "=" in name or "\0" in name]
    if problems:
        raise ConfigError(problems)
    settings = ProviderSettings(chunk_delay_ms=chunk_delay_ms, cli_command=cli_command,
                                cli_timeout_s=cli_timeout_s,
                                cli_max_output_bytes=cli_max_output_bytes,
                                agent_runtime=agent_runtime, agent_runs_dir=agent_runs_dir)
    if env is not None:
        settings.env = env
    endpoint = Endpoint(registry, provider=provider, token=token or None, latency_ms=latency_ms,
                        fail_rate=fail_rate, fail_seed=fail_seed, model=model, settings=settings,
                        max_body_bytes=max_body_bytes, body_timeout_s=limits.body_timeout_s,
                        cli_pass_env=cli_pass_env)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await endpoint.aclose()

    async def internal_error(request: Request, exc: Exception) -> Response:
        log.error("internal error", exc_info=exc)
        return error_response(500, "InternalError", "internal error")

    app = Starlette(routes=[Route("/health", endpoint.health, methods=["GET"]),
                            Route("/run", endpoint.run, methods=["POST"])],
                    lifespan=lifespan, exception_handlers={Exception: internal_error})
    app.state.endpoint = endpoint
    app.state.limits = limits
    return app


# -- the HTTP server -----------------------------------------------------------------------------
#: Bytes of an unwanted request body (after the reply was sent) read and thrown away so that the
#: reply is not lost to a reset; past this the connection is closed.
DRAIN_BYTES = 8 << 20
#: A guard writes at most one log line per kind of event in this many seconds.
LOG_EVERY_S = 10.0


class _GuardLog:
    """One line per kind of event every ``LOG_EVERY_S`` at most (hostile clients must not be
    able to flood the log), saying how many were left out."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def __call__(self, level: int, kind: str, message: str) -> None:
        now = time.monotonic()
        if now - self._last.get(kind, -LOG_EVERY_S) < LOG_EVERY_S:
            self._skipped[kind] = self._skipped.get(kind, 0) + 1
            return
        self._last[kind] = now
        skipped = self._skipped.pop(kind, 0)
        log.log(level, "%s%s", message, f" (and {skipped} more since the last line)"
                if skipped else "")


def _raw_reply(status: int, type_: str, message: str, headers: Mapping[str, str] | None = None
               ) -> bytes:
    """A whole ``connection: close`` HTTP/1.1 reply with the endpoint's error body."""
    import http

    body = json.dumps({"error": {"type": type_, "message": message}}).encode()
    head = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}",
            "content-type: application/json", f"content-length: {len(body)}",
            "connection: close", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def guarded_protocol(limits: ServerLimits) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with ``limits`` enforced per connection:

    - a request head over ``max_header_bytes`` (counted as bytes arrive while it is incomplete,
      and as target plus header fields once parsed) or with more than ``max_headers`` fields:
      431, closed;
    - a head not complete ``header_timeout_s`` after the connection opened or its first byte
      arrived (slowloris, or a connection that never speaks): 408 when part of a head came,
      closed;
    - a body not complete ``body_timeout_s`` after its head: 408 (unless a reply was sent:
      a body nobody reads, e.g. after a 401/404, is drained for that long and ``DRAIN_BYTES``
      at most), closed. The app's own timer of the same length starts later: it is the
      backstop when the app is served some other way;
    - a reply the client does not read for ``send_timeout_s``: connection aborted;
    - more than ``max_connections`` open: 503 with ``retry-after: 1``, closed at once;
    - a request httptools cannot parse: 400, closed; an ``Upgrade`` request is answered as plain
      HTTP and the connection closed after it (no WebSockets here).

    None of these reach the app, and none writes more than one log line.
    """
    import httptools
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    guard_log = _GuardLog()
    head_limit = limits.max_header_bytes
    head_s, body_s = f"{limits.header_timeout_s:g}", f"{limits.body_timeout_s:g}"
    #: kind -> (the reply, log level, log line); replies built once, not per hostile client
    refusals = {
        "cap": (_raw_reply(503, "ServiceUnavailable", "too many connections, retry later",
                           {"retry-after": "1"}), logging.WARNING,
                f"connection refused: {limits.max_connections} already open"),
        "invalid": (_raw_reply(400, "BadRequest", "invalid HTTP request"), logging.WARNING,
                    "invalid HTTP request: connection closed"),
        "head-size": (_raw_reply(431, "HeadersTooLarge",
                                 f"request head larger than {head_limit} bytes"),
                      logging.WARNING, "request head too large: connection closed"),
        "head-count": (_raw_reply(431, "HeadersTooLarge",
                                  f"more than {limits.max_headers} header fields"),
                       logging.WARNING, "too many header fields: connection closed"),
        "head-time": (_raw_reply(408, "RequestTimeout",
                                 f"request head not received within {head_s} s"),
                      logging.INFO, "request head too slow: connection closed"),
        "body-time": (_raw_reply(408, "RequestTimeout", f"body not received within {body_s} s"),
                      logging.INFO, "request body too slow: connection closed"),
    }

    class _Rejected(Exception):
        """Raised from a parser callback to stop parsing a request already answered."""

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._reading_head = True  # between requests, or inside a head
            self._head_bytes = 0
            self._header_count = 0
            self._header_bytes = 0
            self._drained = 0
            self._tail = b""  # the last bytes of the head so far, for an end split over reads
            self._done = False  # answered by the guard, or an upgrade: ignore what comes
            self._head_timer: asyncio.TimerHandle | None = None
            self._body_timer: asyncio.TimerHandle | None = None
            self._send_timer: asyncio.TimerHandle | None = None

        # -- connection ------------------------------------------------------------------
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)  # type: ignore[arg-type]
            if len(self.connections) > limits.max_connections:
                self._refuse("cap")
                return
            self._head_timer = self.loop.call_later(limits.header_timeout_s, self._head_late)

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_timers()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._done:
                return
            self._unset_keepalive_if_required()
            if self._reading_head:
                budget = head_limit - self._head_bytes
                self._head_bytes += len(data)
                if self._head_bytes > head_limit and not self._head_ends(data, budget):
                    # refused before parsing: an endless line costs one read, not a parse
                    self._refuse("head-size")
                    return
                self._tail = data[-3:]
                if self._head_timer is None:
                    self._head_timer = self.loop.call_later(limits.header_timeout_s,
                                                            self._head_late)
            elif self.cycle is not None and self.cycle.response_complete:
                self._drained += len(data)
                if self._drained > DRAIN_BYTES:
                    self._drop("drain", "connection closed: unread request body too large")
                    return
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                # answered as plain HTTP; what follows is not HTTP/1.1 we could parse
                self._done = True
                if self.cycle is not None:
                    self.cycle.keep_alive = False
                    if self.cycle.response_complete:
                        self.transport.close()
                return
            except httptools.HttpParserError:
                if not self._done:
                    self._refuse("invalid")
                return
            if self._reading_head and self._head_bytes > head_limit:
                self._refuse("head-size")

        def _head_ends(self, data: bytes, budget: int) -> bool:
            """Whether an empty line (the end of a head) comes within ``budget`` more bytes."""
            window = self._tail + data[:max(0, budget) + 3]
            return b"\n\n" in window or b"\n\r\n" in window

        # -- parser callbacks ----------------------------------------------------------
        def on_message_begin(self) -> None:
            self._header_count = 0
            self._header_bytes = 0
            super().on_message_begin()

        def on_header(self, name: bytes, value: bytes) -> None:
            self._header_count += 1
            if self._header_count > limits.max_headers:
                self._refuse("head-count")
                raise _Rejected
            self._header_bytes += len(name) + len(value) + 4
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            # a head that came whole in one read was not counted by data_received
            if len(self.url) + self._header_bytes > head_limit:
                self._refuse("head-size")
                raise _Rejected
            self._reading_head = False
            self._head_bytes = 0
            self._drained = 0
            self._cancel("_head_timer")
            self._body_timer = self.loop.call_later(limits.body_timeout_s, self._body_late)
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._cancel("_body_timer")
            self._reading_head = True
            self._head_bytes = 0
            super().on_message_complete()

        # -- writing -----------------------------------------------------------------------
        def pause_writing(self) -> None:
            super().pause_writing()
            if self._send_timer is None:
                self._send_timer = self.loop.call_later(limits.send_timeout_s, self._send_late)

        def resume_writing(self) -> None:
            self._cancel("_send_timer")
            super().resume_writing()

        # -- the guard's own moves -----------------------------------------------------------
        def _head_late(self) -> None:
            self._head_timer = None
            if self.transport.is_closing() or not self._reading_head:
                return
            if self.cycle is not None and not self.cycle.response_complete:
                # a request is being answered: the client waits for us, not we for it
                self._head_timer = self.loop.call_later(limits.header_timeout_s,
                                                        self._head_late)
                return
            if self._head_bytes:
                self._refuse("head-time")
            else:
                self._drop("idle", "idle connection closed", logging.DEBUG)

        def _body_late(self) -> None:
            self._body_timer = None
            if self.transport.is_closing():
                return
            if self.cycle is not None and self.cycle.response_started:  # answered: stop draining
                self._drop("body-time", "request body too slow: connection closed")
            else:
                self._refuse("body-time")

        def _send_late(self) -> None:
            self._send_timer = None
            if not self.transport.is_closing():
                self._done = True
                guard_log(logging.INFO, "send-time", "client does not read its reply: "
                                                     "connection dropped")
                self.transport.abort()  # close() would wait for the buffer to drain

        def _refuse(self, kind: str) -> None:
            """Send the reply of ``kind`` unless one is under way (then the client has one
            coming), and close."""
            if self._done:
                return
            reply, level, line = refusals[kind]
            cycle = self.cycle
            if cycle is None or cycle.response_complete or not cycle.response_started:
                self.transport.write(reply)
            self._drop(kind, line, level)

        def _drop(self, kind: str, line: str, level: int = logging.INFO) -> None:
            self._done = True
            self._stop_timers()
            guard_log(level, kind, line)
            self.transport.close()

        def _cancel(self, name: str) -> None:
            timer = getattr(self, name)
            if timer is not None:
                timer.cancel()
                setattr(self, name, None)

        def _stop_timers(self) -> None:
            for name in ("_head_timer", "_body_timer", "_send_timer"):
                self._cancel(name)

    return GuardedHttpToolsProtocol


def server_config(app: Starlette, *, log_level: str = "warning", access_log: bool = False,
                  timeout_graceful_shutdown: int | None = 5) -> Any:
    """The ``uvicorn.Config`` that serves ``app`` with its :class:`ServerLimits`
    (``app.state.limits``): the guarded httptools protocol, no WebSockets, uvicorn's
    keep-alive set to ``keep_alive_s``."""
    import uvicorn

    limits: ServerLimits = getattr(app.state, "limits", None) or ServerLimits()
    return uvicorn.Config(app, http=guarded_protocol(limits), ws="none", lifespan="auto",
                          log_level=log_level, access_log=access_log,
                          timeout_graceful_shutdown=timeout_graceful_shutdown,
                          timeout_keep_alive=limits.keep_alive_s)  # type: ignore[arg-type]

"""The demo endpoint as a Starlette app: ``GET /health``, ``POST /run`` (JSON) and
``POST /run?stream=1`` (SSE), speaking the contract in ``docs/RUNTIME.md``.

Safety rules: bearer token compared in constant time, bodies capped (413), bodies validated
(422 names the field, never echoes a value), unknown agents 404, and no error message ever
quotes the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import random
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import aiohttp
from starlette.applications import Starlette
from starlette.requests import Request
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


def validate_body(doc: Any) -> str | None:
    """``"field: problem"`` for the first problem in a ``/run`` body, or None when valid."""
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
    provider = doc.get("provider")
    if provider is not None and provider not in PROVIDER_NAMES:
        return f"provider: must be one of {', '.join(PROVIDER_NAMES)}"
    context = doc.get("context")
    if context is not None and (not isinstance(context, list)
                                or not all(isinstance(c, dict) for c in context)):
        return "context: must be a list of objects"
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
                 settings: ProviderSettings, max_body_bytes: int) -> None:
        self.registry = registry
        self.default_provider = provider
        self.model = model
        self.settings = settings
        self.latency = latency_ms / 1000.0
        self.fail_rate = fail_rate
        self.max_body_bytes = max_body_bytes
        self._expected = f"Bearer {token}".encode() if token else None
        self._rng = random.Random(fail_seed)
        self._providers: dict[str, Provider] = {}
        self._client: aiohttp.ClientSession | None = None

    # -- shared resources -----------------------------------------------------------------
    def provider(self, name: str) -> Provider:
        found = self._providers.get(name)
        if found is None:
            model = self.model if name == self.default_provider else None
            found = self._providers[name] = make_provider(name, self.settings, self._upstream,
                                                          model)
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
        problem = validate_body(doc)
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
        too_big = error_response(413, "PayloadTooLarge",
                                 f"body larger than {self.max_body_bytes} bytes")
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            return too_big
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_body_bytes:
                return too_big
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
               agent_runs_dir: str | None = None) -> Starlette:
    """The endpoint app. ``provider`` is the default for requests that name none; ``env``
    (default ``os.environ``) holds the provider keys and base URLs."""
    problems = []
    if provider not in PROVIDER_NAMES:
        problems.append(f"provider: must be one of {', '.join(PROVIDER_NAMES)}")
    if latency_ms < 0 or chunk_delay_ms < 0:
        problems.append("latency_ms and chunk_delay_ms must be 0 or more")
    if not 0.0 <= fail_rate <= 1.0:
        problems.append("fail_rate must be between 0 and 1")
    if cli_timeout_s <= 0 or cli_max_output_bytes <= 0 or max_body_bytes <= 0:
        problems.append("cli_timeout_s, cli_max_output_bytes and max_body_bytes must be positive")
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
                        max_body_bytes=max_body_bytes)

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
    return app

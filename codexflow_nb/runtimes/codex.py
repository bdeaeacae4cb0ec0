"""The ``codex`` runtime: one HTTP request per task attempt to an endpoint that speaks the
contract in ``docs/RUNTIME.md`` (``POST {url}/run``, JSON or SSE with ``?stream=1``).

HTTP goes through httpx's API over the aiohttp transport (``httpx-aiohttp``): on loopback it
served ~2,200 requests/s against ~600 for httpx's default transport (issue 9), and a 900-task
run spent ~40% less client CPU per task; timeouts, streaming and connection errors behave the
same (covered by the tests). Failures become :class:`RuntimeFailure`: 429, 5xx, connection
errors and cut streams are retryable; other 4xx, malformed replies and ``error`` stream events
are not. The API key is sent as a bearer token and never appears in a message.
"""

from __future__ import annotations

import json
import math
import time
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport
from httpx_sse import SSEError, aconnect_sse

from ..errors import ConfigError
from .base import ChunkCallback, Reply, RuntimeCall, RuntimeFailure

#: Characters of an error body kept in a failure message.
BODY_PREVIEW = 200
#: Cap on the connect phase when the agent has no timeout.
CONNECT_TIMEOUT_S = 30.0
#: Idle pooled connections are dropped before common server keep-alive limits (uvicorn: 5 s),
#: so a request rarely lands on a connection the server is closing.
KEEPALIVE_S = 3.0


def make_http_client(max_connections: int, headers: dict[str, str] | None = None, *,
                     timeout: httpx.Timeout | None = None, tls: bool = True) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` over the aiohttp transport, pooled for ``max_connections``.

    ``tls=False`` (plain-http endpoints) skips loading the CA store, ~0.1 s per client.
    Proxy variables are ignored (``trust_env=False``): httpx would route proxied requests
    through its default transport, and we keep one HTTP stack.
    """
    limits = httpx.Limits(max_connections=max(1, max_connections),
                          max_keepalive_connections=max(1, max_connections),
                          keepalive_expiry=KEEPALIVE_S)
    transport = AiohttpTransport(limits=limits, verify=tls, trust_env=False)
    return httpx.AsyncClient(transport=transport, headers=headers, limits=limits,
                             timeout=timeout or httpx.Timeout(5.0), verify=tls, trust_env=False)


def is_timeout(exc: BaseException) -> bool:
    """True for a timeout. The aiohttp transport maps most aiohttp errors to
    ``httpx.ConnectTimeout``, so the original error (``__cause__``) decides when there is one."""
    cause = exc.__cause__
    if cause is not None and not isinstance(cause, httpx.HTTPError):
        return isinstance(cause, TimeoutError)
    return isinstance(exc, httpx.TimeoutException)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


def preview(text: str, limit: int = BODY_PREVIEW) -> str:
    """The first ``limit`` characters of ``text`` on one line."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "..."


def reply_from(doc: Any, where: str) -> Reply:
    """Validate a reply document ``{summary, output, logs?, usage?, model?}``."""
    if not isinstance(doc, dict):
        raise _malformed(f"{where} is {type(doc).__name__}, not a JSON object")
    summary = doc.get("summary")
    if not isinstance(summary, str):
        raise _malformed(f"{where}: 'summary' must be a string")
    if "output" not in doc:
        raise _malformed(f"{where}: 'output' is missing")
    usage = doc.get("usage")
    if usage is not None:
        if not isinstance(usage, dict) or not all(
                isinstance(usage.get(k), int) and not isinstance(usage.get(k), bool)
                for k in ("tokensIn", "tokensOut")):
            raise _malformed(f"{where}: 'usage' must be {{tokensIn: int, tokensOut: int}}")
        usage = {"tokensIn": usage["tokensIn"], "tokensOut": usage["tokensOut"]}
    logs = doc.get("logs")
    if logs is not None and not isinstance(logs, list):
        raise _malformed(f"{where}: 'logs' must be a list")
    model = doc.get("model")
    return Reply(summary=summary, output=doc["output"], usage=usage, logs=logs,
                 model=model if isinstance(model, str) else None)


def _malformed(message: str) -> RuntimeFailure:
    return RuntimeFailure(f"malformed reply: {message}", type="MalformedReply")


class CodexRuntime:
    """Runs each task attempt as ``POST {url}/run`` (JSON) or ``POST {url}/run?stream=1`` (SSE)."""

    name = "codex"
    default_retries = 1

    def __init__(self, url: str, api_key: str | None = None, provider: str | None = None,
                 stream: bool = False) -> None:
        parts = urlsplit(url or "")
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError("codex endpoint URL must look like http://host:port "
                              "(from --codex-url or $CODEX_URL)")
        self.url = url.rstrip("/")
        self._run_url = httpx.URL(f"{self.url}/run")
        self._stream_url = httpx.URL(f"{self.url}/run?stream=1")
        self.provider = provider
        self.stream = stream
        self._api_key = (api_key or "").strip() or None
        if self._api_key and not all(33 <= ord(ch) < 127 for ch in self._api_key):
            raise ConfigError("the codex API key (--codex-key or $CODEX_API_KEY) must be printable "
                              "ASCII without spaces")
        self._client: httpx.AsyncClient | None = None
        self._timeouts: dict[float | None, httpx.Timeout] = {}

    def __repr__(self) -> str:  # never show the key
        key = ", api_key=***" if self._api_key else ""
        return f"CodexRuntime(url={self.url!r}{key}, provider={self.provider!r}, stream={self.stream})"

    async def open(self, max_connections: int) -> None:
        headers = {"content-type": "application/json", "user-agent": "codexflow-nb"}
        if self._api_key:
            headers["authorization"] = f"Bearer {self._api_key}"
        self._client = make_http_client(max_connections, headers,
                                        tls=self._run_url.scheme == "https")

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def body(self, call: RuntimeCall) -> bytes:
        """The request body for one call."""
        doc: dict[str, Any] = {"agentId": call.agent_id, "alias": call.alias, "task": call.task}
        if self.provider:
            doc["provider"] = self.provider
        if call.context:
            doc["context"] = call.context
        return json.dumps(doc, ensure_ascii=False, default=str).encode()

    async def run(self, call: RuntimeCall, on_chunk: ChunkCallback | None = None) -> Reply:
        if self._client is None:
            raise RuntimeFailure("codex runtime used before open()", type="RuntimeError")
        timeout = self._timeout(call.timeout_s)
        try:
            if self.stream:
                return await self._run_stream(self._client, call, timeout, on_chunk)
            response = await self._client.post(self._run_url, content=self.body(call),
                                               timeout=timeout)
        except httpx.HTTPError as exc:
            raise self._transport_failure(exc) from None
        if response.status_code != 200:
            raise self._status_failure(response.status_code, response.text,
                                       response.headers.get("retry-after"))
        try:
            doc = response.json()
        except ValueError:
            raise _malformed(f"not JSON: {self._clean(preview(response.text))}") from None
        return reply_from(doc, "reply")

    async def _run_stream(self, client: httpx.AsyncClient, call: RuntimeCall,
                          timeout: httpx.Timeout, on_chunk: ChunkCallback | None) -> Reply:
        chunks: list[str] = []
        async with aconnect_sse(client, "POST", str(self._stream_url),
                                content=self.body(call), timeout=timeout) as source:
            response = source.response
            if response.status_code != 200:
                text = (await response.aread()).decode("utf-8", "replace")
                raise self._status_failure(response.status_code, text,
                                           response.headers.get("retry-after"))
            try:
                async for sse in source.aiter_sse():
                    if not sse.data:
                        continue
                    try:
                        event = json.loads(sse.data)
                    except ValueError:
                        raise _malformed(
                            f"stream event is not JSON: {self._clean(preview(sse.data))}") from None
                    kind = event.get("event") if isinstance(event, dict) else None
                    if kind == "chunk":
                        content = event.get("content")
                        if not isinstance(content, str):
                            raise _malformed("chunk event without string 'content'")
                        chunks.append(content)
                        if on_chunk is not None:
                            on_chunk(content)
                    elif kind == "complete":
                        reply = reply_from(event, "complete event")
                        reply.chunks = chunks
                        return reply
                    elif kind == "error":
                        message = event.get("message")
                        raise RuntimeFailure(
                            "endpoint error: " + self._clean(preview(str(message or "no message"))),
                            type="StreamError", retryable=event.get("retryable") is True)
                    # "start" and unknown kinds are informational
            except SSEError as exc:
                raise _malformed(self._clean(str(exc))) from None
            except httpx.HTTPError as exc:
                if is_timeout(exc):
                    raise TimeoutError(str(exc)) from None
                raise RuntimeFailure(f"stream ended early after {len(chunks)} chunk(s): "
                                     f"{self._clean(str(exc) or type(exc).__name__)}",
                                     type="StreamEndedEarly", retryable=True) from None
        raise RuntimeFailure(f"stream ended early after {len(chunks)} chunk(s) without a "
                             "complete event", type="StreamEndedEarly", retryable=True)

    # -- helpers ------------------------------------------------------------------------------
    def _timeout(self, seconds: float | None) -> httpx.Timeout:
        timeout = self._timeouts.get(seconds)
        if timeout is None:
            connect = min(seconds, CONNECT_TIMEOUT_S) if seconds else CONNECT_TIMEOUT_S
            timeout = self._timeouts[seconds] = httpx.Timeout(seconds, connect=connect)
        return timeout

    def _clean(self, text: str) -> str:
        """``text`` with the API key masked (belt and braces: it should never be there)."""
        return text.replace(self._api_key, "***") if self._api_key else text

    def _status_failure(self, status: int, body: str, retry_after: str | None) -> RuntimeFailure:
        retryable = status == 429 or status >= 500
        message = f"HTTP {status}"
        if body.strip():
            message += f": {self._clean(preview(body))}"
        return RuntimeFailure(message, type="HttpError", retryable=retryable, status=status,
                              retry_after=parse_retry_after(retry_after) if retryable else None)

    def _transport_failure(self, exc: httpx.HTTPError) -> BaseException:
        """A timeout becomes ``TimeoutError`` (the engine records ``task_timeout``); anything
        else on the wire is a retryable connection error."""
        cause = exc.__cause__
        detail = str(cause or exc) or type(cause or exc).__name__
        if is_timeout(exc):
            return TimeoutError(self._clean(detail))
        connecting = isinstance(cause, aiohttp.ClientConnectorError) or (
            cause is None and isinstance(exc, httpx.ConnectError))
        what = "cannot reach" if connecting else "connection broke talking to"
        return RuntimeFailure(f"{what} {self.url}: {self._clean(preview(detail))}",
                              type="ConnectionError", retryable=True)

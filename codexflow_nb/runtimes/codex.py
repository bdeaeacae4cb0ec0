"""The ``codex`` runtime: one HTTP request per task attempt to an endpoint that speaks the
contract in ``docs/RUNTIME.md`` (``POST {url}/run``, JSON or SSE with ``?stream=1``).

HTTP goes through aiohttp directly (:mod:`codexflow_nb.httpclient` says why): our own session,
with the proxy from the environment and an optional private CA bundle, or a client the user
passes (``http_client=``: an ``aiohttp.ClientSession`` or an ``httpx.AsyncClient``, used as
configured and never closed by us). Either way the reply is read by the same code. Failures become
:class:`RuntimeFailure`: 429, 5xx, connection errors and cut streams are retryable; other 4xx,
malformed replies, ``error`` stream events and replies past a size cap (``ReplyTooLarge``:
``max_reply_bytes``, ``max_event_bytes``, ``max_stream_bytes``) are not. The API key is sent as a
bearer token and never appears in a message: text from the server is masked before it is cut.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import orjson

from ..errors import ConfigError
from ..httpclient import (
    ERROR_BODY_BYTES,
    MAX_EVENT_BYTES,
    MAX_REPLY_BYTES,
    MAX_STREAM_BYTES,
    AiohttpPoster,
    HttpxPoster,
    Proxy,
    ReplyLimits,
    ReplyTooLarge,
    SSEError,
    ca_context,
    certificate_error,
    env_proxy,
    error_detail,
    format_size,
    is_connect_error,
    is_timeout,
    json_body,
    make_session,
    user_client_kind,
)
from .base import ChunkCallback, Reply, RuntimeCall, RuntimeFailure

#: Characters of an error body kept in a failure message.
BODY_PREVIEW = 200
#: The size caps of :class:`CodexRuntime`, as ``make_runtime``/``prepare_run`` options.
LIMIT_OPTION_NAMES = ("max_reply_bytes", "max_event_bytes", "max_stream_bytes")
_LIMIT_HINTS = {"reply body": "max_reply_bytes", "stream line": "max_event_bytes",
                "stream event": "max_event_bytes", "stream": "max_stream_bytes"}


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
    """The first ``limit`` characters of ``text`` on one line. Cuts blindly: mask secrets
    first (:func:`mask_secret`), or a cut may keep the start of one."""
    flat = " ".join(text.split(None, limit))  # the first ``limit`` words hold the cut
    return flat if len(flat) <= limit else flat[:limit] + "..."


def mask_secret(text: str, secret: str | None, *, cut: bool = False) -> str:
    """``text`` with each occurrence of ``secret`` (as is, or escaped in a JSON string) shown
    as ``***``. ``cut``: the text is the start of something longer, so a piece of the secret's
    start at its very end is masked too."""
    if not secret:
        return text
    forms = [secret]
    escaped = json.dumps(secret)[1:-1]
    if escaped != secret:
        forms.append(escaped)
    for form in forms:
        if form in text:
            text = text.replace(form, "***")
    if cut:
        for form in forms:
            for n in range(min(len(form) - 1, len(text)), 0, -1):
                if text.endswith(form[:n]):
                    text = text[:-n] + "***"
                    break
    return text


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
                 stream: bool = False, *, max_reply_bytes: int | None = None,
                 max_event_bytes: int | None = None, max_stream_bytes: int | None = None,
                 http_client: Any = None, proxy_env: bool = True,
                 ca_bundle: str | os.PathLike[str] | None = None) -> None:
        parts = urlsplit(url or "")
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError("codex endpoint URL must look like http://host:port "
                              "(from --codex-url or $CODEX_URL)")
        self.url = url.rstrip("/")
        self._tls = parts.scheme == "https"
        self._run_url = f"{self.url}/run"
        self._stream_url = f"{self.url}/run?stream=1"
        self.provider = provider
        self.stream = stream
        self._api_key = (api_key or "").strip() or None
        if self._api_key and not all(33 <= ord(ch) < 127 for ch in self._api_key):
            raise ConfigError("the codex API key (--codex-key or $CODEX_API_KEY) must be printable "
                              "ASCII without spaces")
        try:
            self.limits = ReplyLimits(
                MAX_REPLY_BYTES if max_reply_bytes is None else max_reply_bytes,
                MAX_EVENT_BYTES if max_event_bytes is None else max_event_bytes,
                MAX_STREAM_BYTES if max_stream_bytes is None else max_stream_bytes)
        except ValueError:
            raise ConfigError("max_reply_bytes, max_event_bytes and max_stream_bytes must be "
                              "positive numbers of bytes") from None
        self.http_client = http_client
        self._client_kind = None if http_client is None else _check_client(http_client)
        self.proxy: Proxy | None = None
        self._ssl: Any = None  # our session's TLS context; None: the default one
        self._ca_hint = "pass --ca-bundle PATH or set SSL_CERT_FILE (Python: ca_bundle=)"
        if self._client_kind is not None:
            if ca_bundle is not None or proxy_env is False:
                raise ConfigError("ca_bundle and proxy_env apply to codexflow's own HTTP session: "
                                  "configure certificates and proxies on the http_client you pass")
            self._ca_hint = f"configure the certificates of your {self._client_kind} client"
        else:
            if proxy_env:
                self.proxy = env_proxy(self.url)
            if ca_bundle is not None:
                self._ssl = ca_context(ca_bundle, "--ca-bundle")
            elif self._tls and os.environ.get("SSL_CERT_FILE"):
                self._ssl = ca_context(os.environ["SSL_CERT_FILE"], "$SSL_CERT_FILE")
        self._poster: AiohttpPoster | HttpxPoster | None = None

    def __repr__(self) -> str:  # never show the key
        key = ", api_key=***" if self._api_key else ""
        return f"CodexRuntime(url={self.url!r}{key}, provider={self.provider!r}, stream={self.stream})"

    async def open(self, max_connections: int) -> None:
        client = self.http_client
        if client is None:
            headers = {"content-type": "application/json", "user-agent": "codexflow-nb"}
            if self._api_key:
                headers["authorization"] = f"Bearer {self._api_key}"
            session = make_session(max_connections, headers, tls=self._tls,
                                   ssl_context=self._ssl)
            self._poster = AiohttpPoster(session, owned=True, proxy=self.proxy)
            return
        headers = {"content-type": "application/json"}
        if self._api_key and not _has_own_auth(client):
            headers["authorization"] = f"Bearer {self._api_key}"
        if self._client_kind == "httpx":
            self._poster = HttpxPoster(client, headers)
            return
        if client.closed:
            raise ConfigError("the aiohttp.ClientSession passed as http_client is closed")
        loop = getattr(client, "_loop", None)
        if loop is not None and loop is not asyncio.get_running_loop():
            raise ConfigError("the aiohttp.ClientSession passed as http_client belongs to another "
                              "event loop: run with `await codexflow_nb.run_async(...)` on the "
                              "loop that made it (in a notebook: `await` it in a cell)")
        self._poster = AiohttpPoster(client, owned=False, headers=headers)

    async def close(self) -> None:
        poster, self._poster = self._poster, None
        if poster is not None:
            await poster.close()  # only a session we made

    def body(self, call: RuntimeCall) -> bytes:
        """The request body for one call."""
        doc: dict[str, Any] = {"agentId": call.agent_id, "alias": call.alias, "task": call.task}
        if self.provider:
            doc["provider"] = self.provider
        if call.context:
            doc["context"] = call.context
        return json_body(doc)

    async def run(self, call: RuntimeCall, on_chunk: ChunkCallback | None = None) -> Reply:
        poster = self._poster
        if poster is None:
            raise RuntimeFailure("codex runtime used before open()", type="RuntimeError")
        timeout = poster.timeout(call.timeout_s)
        if self.stream:
            return await self._run_stream(poster, call, timeout, on_chunk)
        try:
            async with poster.post(self._run_url, self.body(call), timeout) as reply:
                if reply.status != 200:
                    head, cut = await reply.head(ERROR_BODY_BYTES)
                    raise self._status_failure(reply.status, head.decode("utf-8", "replace"),
                                               reply.header("retry-after"), cut)
                payload = await reply.read(self.limits.reply)
        except poster.errors as exc:
            raise self._transport_failure(exc) from None
        except ReplyTooLarge as exc:
            raise self._too_large(exc) from None
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError:
            text = payload.decode("utf-8", "replace")
            raise _malformed(f"not JSON: {self._preview(text)}") from None
        return reply_from(doc, "reply")

    async def _run_stream(self, poster: AiohttpPoster | HttpxPoster, call: RuntimeCall,
                          timeout: Any, on_chunk: ChunkCallback | None) -> Reply:
        chunks: list[str] = []
        try:
            async with poster.post(self._stream_url, self.body(call), timeout,
                                   _STREAM_HEADERS) as reply:
                if reply.status != 200:
                    head, cut = await reply.head(ERROR_BODY_BYTES)
                    raise self._status_failure(reply.status, head.decode("utf-8", "replace"),
                                               reply.header("retry-after"), cut)
                try:
                    async for sse in reply.events(self.limits.event, self.limits.stream):
                        result = self._on_event(sse.data, chunks, on_chunk)
                        if result is not None:
                            return result
                except SSEError as exc:
                    raise _malformed(self._clean(str(exc))) from None
                except ReplyTooLarge as exc:
                    reply.close()  # never drain the rest: drop the connection
                    raise self._too_large(exc, len(chunks)) from None
                except poster.errors as exc:
                    if is_timeout(exc):
                        raise TimeoutError(self._clean(error_detail(exc))) from None
                    raise RuntimeFailure(f"stream ended early after {len(chunks)} chunk(s): "
                                         f"{self._clean(error_detail(exc))}",
                                         type="StreamEndedEarly", retryable=True) from None
        except poster.errors as exc:  # before the first byte of the body
            raise self._transport_failure(exc) from None
        raise RuntimeFailure(f"stream ended early after {len(chunks)} chunk(s) without a "
                             "complete event", type="StreamEndedEarly", retryable=True)

    def _on_event(self, data: str, chunks: list[str], on_chunk: ChunkCallback | None) -> Reply | None:
        """Handle one stream event; the reply once ``complete`` arrives."""
        if not data:
            return None
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise _malformed(f"stream event is not JSON: {self._preview(data)}") from None
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
                "endpoint error: " + self._preview(str(message or "no message")),
                type="StreamError", retryable=event.get("retryable") is True)
        return None  # "start" and unknown kinds are informational

    # -- helpers ------------------------------------------------------------------------------
    def _clean(self, text: str, cut: bool = False) -> str:
        """``text`` with the API key masked (belt and braces: it should never be there)."""
        return mask_secret(text, self._api_key, cut=cut)

    def _preview(self, text: str, cut: bool = False) -> str:
        """The start of ``text`` for a message: masked first, then cut (cutting first could
        keep the start of a key that straddles the cut)."""
        return preview(self._clean(text, cut))

    def _too_large(self, exc: ReplyTooLarge, chunks: int | None = None) -> RuntimeFailure:
        option = _LIMIT_HINTS.get(exc.what, "max_reply_bytes")
        where = f" after {chunks} chunk(s)" if chunks is not None else ""
        return RuntimeFailure(f"reply too large: {exc}{where} (the limit is {option}="
                              f"{exc.limit}, {format_size(exc.limit)}; raise it if the endpoint "
                              "really sends that much)", type="ReplyTooLarge", retryable=False)

    def _status_failure(self, status: int, body: str, retry_after: str | None,
                        cut: bool = False) -> RuntimeFailure:
        retryable = status == 429 or status >= 500
        message = f"HTTP {status}"
        if body.strip():
            message += f": {self._preview(body, cut)}"
        return RuntimeFailure(message, type="HttpError", retryable=retryable, status=status,
                              retry_after=parse_retry_after(retry_after) if retryable else None)

    def _transport_failure(self, exc: BaseException) -> BaseException:
        """A timeout becomes ``TimeoutError`` (the engine records ``task_timeout``); a
        certificate that cannot be verified fails without retry and says how to trust it;
        anything else on the wire is a retryable connection error."""
        detail = error_detail(exc)
        if is_timeout(exc):
            return TimeoutError(self._clean(detail))
        response = getattr(exc, "response", None)  # an httpx client made to raise on status
        status = getattr(response, "status_code", None)
        if isinstance(status, int):
            return self._status_failure(status, "", response.headers.get("retry-after"))
        via = f" via proxy {self.proxy.url}" if self.proxy else ""
        bad_cert = certificate_error(exc)
        if bad_cert is not None:
            reason = bad_cert.verify_message or bad_cert.reason or str(bad_cert)
            return RuntimeFailure(f"TLS certificate of {self.url} not trusted{via} "
                                  f"({self._preview(str(reason))}): {self._ca_hint}",
                                  type="CertificateError", retryable=False)
        what = "cannot reach" if is_connect_error(exc) else "connection broke talking to"
        return RuntimeFailure(f"{what} {self.url}{via} ({self._preview(detail)})",
                              type="ConnectionError", retryable=True)


#: Per-request headers of a streamed request.
_STREAM_HEADERS = {"accept": "text/event-stream"}


def _check_client(client: Any) -> str:
    """The kind of a user's client, or one ConfigError saying what is accepted."""
    kind = user_client_kind(client)
    if kind is None:
        name = f"{type(client).__module__}.{type(client).__qualname__}"
        raise ConfigError(f"http_client must be an aiohttp.ClientSession or an httpx.AsyncClient, "
                          f"not {name}" + (" (a synchronous client)" if name == "httpx.Client"
                                           else ""))
    if kind == "httpx" and client.is_closed:
        raise ConfigError("the httpx.AsyncClient passed as http_client is closed")
    if kind == "aiohttp" and client.closed:
        raise ConfigError("the aiohttp.ClientSession passed as http_client is closed")
    return kind


def _has_own_auth(client: Any) -> bool:
    """The user's client authenticates by itself (``auth=`` or an ``Authorization`` header):
    then ``api_key`` is not added on top (aiohttp refuses both at once)."""
    if getattr(client, "auth", None) is not None:
        return True
    headers = getattr(client, "headers", None)
    return headers is not None and "authorization" in {k.lower() for k in headers}

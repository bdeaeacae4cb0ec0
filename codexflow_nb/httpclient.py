"""The one HTTP client stack of codexflow_nb: aiohttp, used directly.

Issue 9 measured clients on loopback at 6 concurrent requests: httpx's default transport
~600 requests/s, httpx over the aiohttp transport ~2,200-3,400, aiohttp itself ~7,700. The
engine's HTTP throughput target (3,000 tasks/s with events and ``.runs`` on) is out of reach
behind httpx's request/response layer, so the codex runtime and the demo endpoint's vendor
providers all use aiohttp, and this module holds what they share: session setup, timeouts,
timeout detection and a Server-Sent Events decoder (the WHATWG event-stream format).
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

#: Idle pooled connections are dropped before common server keep-alive limits (uvicorn: 5 s),
#: so a request rarely lands on a connection the server is closing.
KEEPALIVE_S = 3.0
#: Cap on the connect phase when there is no other timeout.
CONNECT_TIMEOUT_S = 30.0
EVENT_STREAM = "text/event-stream"

_ssl_context: ssl.SSLContext | None = None


def _default_ssl() -> ssl.SSLContext:
    global _ssl_context
    if _ssl_context is None:  # loading the CA store costs ~0.1 s; only https needs it
        _ssl_context = ssl.create_default_context()
    return _ssl_context


def make_session(max_connections: int, headers: Mapping[str, str] | None = None, *,
                 tls: bool = True, timeout: aiohttp.ClientTimeout | None = None,
                 ) -> aiohttp.ClientSession:
    """An ``aiohttp.ClientSession`` pooled for ``max_connections``; call inside a running loop.

    ``tls=False`` (plain-http endpoints) skips loading the CA store. Proxy variables are not
    read (``trust_env=False``) and cookies are not kept. ``timeout`` is the default for each
    request (none when omitted); a request may pass its own.
    """
    connector = aiohttp.TCPConnector(limit=max(1, max_connections), limit_per_host=0,
                                     keepalive_timeout=KEEPALIVE_S,
                                     ssl=_default_ssl() if tls else False)
    return aiohttp.ClientSession(connector=connector, headers=dict(headers or {}),
                                 cookie_jar=aiohttp.DummyCookieJar(), trust_env=False,
                                 timeout=timeout or aiohttp.ClientTimeout(total=None))


def json_body(doc: Any) -> bytes:
    """A request body as UTF-8 JSON: orjson, values JSON cannot hold written with ``str``, and
    the stdlib for what orjson refuses (an integer wider than 64 bits)."""
    try:
        return orjson.dumps(doc, default=str, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:
        return json.dumps(doc, ensure_ascii=False, default=str).encode()


def client_timeout(read_s: float | None, connect_s: float | None = None) -> aiohttp.ClientTimeout:
    """At most ``read_s`` between reads (None: no limit) and ``connect_s`` to connect (default:
    ``read_s`` capped at 30 s). A task's overall deadline is the engine's, not the client's."""
    if connect_s is None:
        connect_s = min(read_s, CONNECT_TIMEOUT_S) if read_s else CONNECT_TIMEOUT_S
    return aiohttp.ClientTimeout(total=None, sock_connect=connect_s, sock_read=read_s)


def is_timeout(exc: BaseException) -> bool:
    """True for a client timeout (aiohttp's timeout errors are ``TimeoutError`` subclasses)."""
    return isinstance(exc, TimeoutError)


def is_connect_error(exc: BaseException) -> bool:
    """True when the server could not be reached at all (nothing was sent)."""
    return isinstance(exc, aiohttp.ClientConnectorError)


def error_detail(exc: BaseException) -> str:
    """A short description of a client error, never empty."""
    return str(exc) or type(exc).__name__


class SSEError(ValueError):
    """The response is not an event stream."""


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event: ``event`` defaults to ``"message"``."""

    data: str
    event: str = "message"
    id: str = ""
    retry: int | None = None


def check_event_stream(response: aiohttp.ClientResponse) -> None:
    """Raise :class:`SSEError` unless ``response`` declares ``text/event-stream``."""
    if response.content_type != EVENT_STREAM:
        raise SSEError(f"expected {EVENT_STREAM}, got {response.content_type or 'no content type'!r}")


class SSEDecoder:
    """Turns event-stream lines into :class:`ServerSentEvent` (WHATWG HTML, 9.2.6)."""

    __slots__ = ("_data", "_event", "_id", "_retry")

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event = ""
        self._id = ""
        self._retry: int | None = None

    def decode(self, line: str) -> ServerSentEvent | None:
        """Feed one line without its terminator; a blank line returns the pending event."""
        if not line:
            if not self._data:
                self._event = ""
                return None
            sse = ServerSentEvent("\n".join(self._data), self._event or "message", self._id,
                                  self._retry)
            self._data, self._event = [], ""
            return sse
        if line[0] == ":":
            return None
        field, sep, value = line.partition(":")
        if sep and value[:1] == " ":
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id":
            if "\0" not in value:
                self._id = value
        elif field == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)
        return None


async def aiter_lines(chunks: AsyncIterable[bytes]) -> AsyncIterator[str]:
    """Decoded lines of a body arriving in ``chunks``, split on CRLF, LF or a lone CR, without
    terminators; a line is yielded as soon as its terminator has arrived. Each chunk is scanned
    once, so a long line arriving in many chunks costs linear time."""
    parts: list[bytes] = []  # the current line's pieces, until its terminator arrives
    after_cr = False  # the last chunk ended with CR: a LF opening the next one belongs to it
    async for chunk in chunks:
        if not chunk:
            continue
        if after_cr and chunk[:1] == b"\n":
            chunk = chunk[1:]
        after_cr = False
        for piece in chunk.splitlines(keepends=True):
            after_cr = False
            if piece[-1:] == b"\n":
                parts.append(piece[:-2] if piece[-2:] == b"\r\n" else piece[:-1])
            elif piece[-1:] == b"\r":
                parts.append(piece[:-1])
                after_cr = True  # matters only if this is the chunk's last piece
            else:
                parts.append(piece)  # no terminator yet: the chunk's last piece
                continue
            yield b"".join(parts).decode("utf-8", "replace")
            parts.clear()
    if parts:
        yield b"".join(parts).decode("utf-8", "replace")


async def aiter_sse(response: aiohttp.ClientResponse) -> AsyncIterator[ServerSentEvent]:
    """The events of an event-stream response, as they arrive."""
    check_event_stream(response)
    decoder = SSEDecoder()
    async for line in aiter_lines(response.content.iter_any()):
        sse = decoder.decode(line)
        if sse is not None:
            yield sse

"""The one HTTP client stack of codexflow_nb: aiohttp, used directly.

Issue 9 measured clients on loopback at 6 concurrent requests: httpx's default transport
~600 requests/s, httpx over the aiohttp transport ~2,200-3,400, aiohttp itself ~7,700. The
engine's HTTP throughput target (3,000 tasks/s with events and ``.runs`` on) is out of reach
behind httpx's request/response layer, so the codex runtime and the demo endpoint's vendor
providers all use aiohttp, and this module holds what they share: session setup, timeouts,
timeout detection, bounded reads of reply bodies (:class:`ReplyLimits`, :func:`read_body`) and a
Server-Sent Events decoder (the WHATWG event-stream format) that enforces the same limits.
"""

from __future__ import annotations

import json
import os
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
#: Default caps on what a server may send back: a whole JSON reply, one stream line or event,
#: and everything one streamed reply carries (chunks plus the ``complete`` event that may
#: repeat them). Far above any model reply, far below what would hurt the process.
MAX_REPLY_BYTES = 16 << 20
MAX_EVENT_BYTES = 16 << 20
MAX_STREAM_BYTES = 32 << 20
#: Bytes of an error reply read for its message; the rest is never read.
ERROR_BODY_BYTES = 64 << 10

_ssl_context: ssl.SSLContext | None = None
_NO_CAP = 1 << 62


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
    """A short description of a client error, never empty: the operating system's reason
    (``connection refused``) when there is one, else the client's message."""
    os_error = getattr(exc, "os_error", None) or exc.__cause__
    if isinstance(os_error, OSError) and os_error.errno:
        return os.strerror(os_error.errno).lower()
    return str(exc) or type(exc).__name__


def format_size(n: int) -> str:
    """``n`` bytes for a message: ``16 MiB``, ``1.5 KiB``, ``200 bytes``."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            value = n / (1 << shift)
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} bytes"


@dataclass(frozen=True, slots=True)
class ReplyLimits:
    """Caps on a reply, in bytes: ``reply`` (a whole non-streamed body), ``event`` (one line
    or one event of a stream) and ``stream`` (all bytes of one streamed body)."""

    reply: int = MAX_REPLY_BYTES
    event: int = MAX_EVENT_BYTES
    stream: int = MAX_STREAM_BYTES

    def __post_init__(self) -> None:
        for name in ("reply", "event", "stream"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"reply limit {name!r} must be a positive number of bytes, "
                                 f"not {value!r}")


class ReplyTooLarge(ValueError):
    """A reply went past one of its :class:`ReplyLimits`; ``what`` names the part
    (``reply body``, ``stream line``, ``stream event``, ``stream``) and ``limit`` the cap."""

    def __init__(self, what: str, limit: int) -> None:
        super().__init__(f"{what} larger than {format_size(limit)}")
        self.what = what
        self.limit = limit


def _is_plain(response: aiohttp.ClientResponse) -> bool:
    """No content coding: ``Content-Length`` is the size of the body we get."""
    coding = response.headers.get("content-encoding")
    return not coding or coding.strip().lower() == "identity"


async def read_body(response: aiohttp.ClientResponse, limit: int,
                    what: str = "reply body") -> bytes:
    """The whole body of ``response``, or :class:`ReplyTooLarge` as soon as it is known to be
    longer than ``limit`` bytes (after decompression); the rest is never read and the
    connection is closed instead of being reused."""
    length = response.content_length
    if length is not None and _is_plain(response):
        if length > limit:
            response.close()
            raise ReplyTooLarge(what, limit)
        return await response.read()  # the parser stops at Content-Length
    parts: list[bytes] = []
    total = 0
    async for chunk in response.content.iter_any():
        total += len(chunk)
        if total > limit:
            response.close()
            raise ReplyTooLarge(what, limit)
        parts.append(chunk)
    return b"".join(parts)


async def read_head(response: aiohttp.ClientResponse,
                    limit: int = ERROR_BODY_BYTES) -> tuple[bytes, bool]:
    """At most the first ``limit`` bytes of the body, and whether there was more (then the
    rest is not read and the connection is closed). For error replies, read for a message."""
    parts: list[bytes] = []
    total = 0
    async for chunk in response.content.iter_any():
        parts.append(chunk)
        total += len(chunk)
        if total > limit:
            response.close()
            return b"".join(parts)[:limit], True
    return b"".join(parts), False


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
    """Turns event-stream lines into :class:`ServerSentEvent` (WHATWG HTML, 9.2.6).
    ``max_data`` caps the characters of one event's data (:class:`ReplyTooLarge` past it)."""

    __slots__ = ("_data", "_event", "_id", "_max", "_retry", "_size")

    def __init__(self, max_data: int | None = None) -> None:
        self._data: list[str] = []
        self._event = ""
        self._id = ""
        self._retry: int | None = None
        self._size = 0
        self._max = max_data

    def decode(self, line: str) -> ServerSentEvent | None:
        """Feed one line without its terminator; a blank line returns the pending event."""
        if not line:
            if not self._data:
                self._event = ""
                return None
            sse = ServerSentEvent("\n".join(self._data), self._event or "message", self._id,
                                  self._retry)
            self._data, self._event, self._size = [], "", 0
            return sse
        if line[0] == ":":
            return None
        field, sep, value = line.partition(":")
        if sep and value[:1] == " ":
            value = value[1:]
        if field == "data":
            if self._max is not None:  # the event's data: its lines joined with "\n"
                self._size += len(value) + (1 if self._data else 0)
                if self._size > self._max:
                    raise ReplyTooLarge("stream event", self._max)
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id":
            if "\0" not in value:
                self._id = value
        elif field == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)
        return None


async def aiter_lines(chunks: AsyncIterable[bytes], max_line: int | None = None,
                      max_total: int | None = None) -> AsyncIterator[str]:
    """Decoded lines of a body arriving in ``chunks``, split on CRLF, LF or a lone CR, without
    terminators; a line is yielded as soon as its terminator has arrived. Each chunk is scanned
    once, so a long line arriving in many chunks costs linear time. :class:`ReplyTooLarge` when
    a line passes ``max_line`` bytes or the body ``max_total`` bytes (None: no cap)."""
    line_cap = _NO_CAP if max_line is None else max_line
    total_cap = _NO_CAP if max_total is None else max_total
    parts: list[bytes] = []  # the current line's pieces, until its terminator arrives
    pending = 0  # bytes in parts
    total = 0
    after_cr = False  # the last chunk ended with CR: a LF opening the next one belongs to it
    async for chunk in chunks:
        if not chunk:
            continue
        total += len(chunk)
        if total > total_cap:
            raise ReplyTooLarge("stream", total_cap)
        if after_cr and chunk[:1] == b"\n":
            chunk = chunk[1:]
        after_cr = False
        for piece in chunk.splitlines(keepends=True):
            after_cr = False
            if piece[-1:] == b"\n":
                piece = piece[:-2] if piece[-2:] == b"\r\n" else piece[:-1]
            elif piece[-1:] == b"\r":
                piece = piece[:-1]
                after_cr = True  # matters only if this is the chunk's last piece
            else:  # no terminator yet: the chunk's last piece
                pending += len(piece)
                if pending > line_cap:
                    raise ReplyTooLarge("stream line", line_cap)
                parts.append(piece)
                continue
            if pending:
                if pending + len(piece) > line_cap:
                    raise ReplyTooLarge("stream line", line_cap)
                parts.append(piece)
                yield b"".join(parts).decode("utf-8", "replace")
                parts.clear()
                pending = 0
            elif len(piece) > line_cap:
                raise ReplyTooLarge("stream line", line_cap)
            else:
                yield piece.decode("utf-8", "replace")
    if parts:
        yield b"".join(parts).decode("utf-8", "replace")


async def aiter_sse(response: aiohttp.ClientResponse, *, max_event_bytes: int | None = None,
                    max_stream_bytes: int | None = None) -> AsyncIterator[ServerSentEvent]:
    """The events of an event-stream response, as they arrive. :class:`ReplyTooLarge` when a
    line or an event's data passes ``max_event_bytes`` or the body ``max_stream_bytes``."""
    check_event_stream(response)
    decoder = SSEDecoder(max_event_bytes)
    async for line in aiter_lines(response.content.iter_any(), max_event_bytes, max_stream_bytes):
        sse = decoder.decode(line)
        if sse is not None:
            yield sse

"""The one HTTP client stack of codexflow_nb: aiohttp, used directly.

Issue 9 measured clients on loopback at 6 concurrent requests: httpx's default transport
~600 requests/s, httpx over the aiohttp transport ~2,200-3,400, aiohttp itself ~7,700. The
engine's HTTP throughput target (3,000 tasks/s with events and ``.runs`` on) is out of reach
behind httpx's request/response layer, so the codex runtime and the demo endpoint's vendor
providers all use aiohttp, and this module holds what they share: session setup, timeouts,
timeout detection, bounded reads of reply bodies (:class:`ReplyLimits`, :func:`read_body`) and a
Server-Sent Events decoder (the WHATWG event-stream format) that enforces the same limits.

The codex runtime can also post through a client the user made (:class:`UserAiohttp` for an
``aiohttp.ClientSession``, :class:`UserHttpx` for an ``httpx.AsyncClient``): both hand the runtime
the same :class:`AiohttpReply`-shaped replies, read with the same caps and SSE decoder. httpx is
optional and never imported here: an httpx client's module is already loaded. For our own
session, :func:`env_proxy` reads the proxy variables the way curl, requests and httpx do and
:func:`ca_context` loads a private CA bundle.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import sys
from collections.abc import AsyncIterable, AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import aiohttp
import orjson

from .errors import ConfigError

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
_ca_contexts: dict[tuple[str, int, int], ssl.SSLContext] = {}
_NO_CAP = 1 << 62


def _default_ssl() -> ssl.SSLContext:
    global _ssl_context
    if _ssl_context is None:  # loading the CA store costs ~0.1 s; only https needs it
        _ssl_context = ssl.create_default_context()
    return _ssl_context


def make_session(max_connections: int, headers: Mapping[str, str] | None = None, *,
                 tls: bool = True, timeout: aiohttp.ClientTimeout | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> aiohttp.ClientSession:
    """An ``aiohttp.ClientSession`` pooled for ``max_connections``; call inside a running loop.

    ``tls=False`` (plain-http endpoints) skips loading the CA store; ``ssl_context`` replaces
    the default one (a private CA: :func:`ca_context`). The session reads no environment
    (``trust_env=False``: no per-request proxy look-up, no ``~/.netrc``): a caller that honours
    proxy variables resolves them once (:func:`env_proxy`) and passes ``proxy=`` per request.
    Cookies are not kept. ``timeout`` is the default for each request (none when omitted); a
    request may pass its own.
    """
    if ssl_context is None:
        ssl_context = _default_ssl() if tls else None
    connector = aiohttp.TCPConnector(limit=max(1, max_connections), limit_per_host=0,
                                     keepalive_timeout=KEEPALIVE_S,
                                     ssl=ssl_context if ssl_context is not None else False)
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


def _connect_s(read_s: float | None) -> float:
    return min(read_s, CONNECT_TIMEOUT_S) if read_s else CONNECT_TIMEOUT_S


def client_timeout(read_s: float | None, connect_s: float | None = None) -> aiohttp.ClientTimeout:
    """At most ``read_s`` between reads (None: no limit) and ``connect_s`` to connect (default:
    ``read_s`` capped at 30 s). A task's overall deadline is the engine's, not the client's."""
    if connect_s is None:
        connect_s = _connect_s(read_s)
    return aiohttp.ClientTimeout(total=None, sock_connect=connect_s, sock_read=read_s)


def _httpx() -> Any:
    """The httpx module if something already imported it (an httpx client exists), else None."""
    return sys.modules.get("httpx")


def is_timeout(exc: BaseException) -> bool:
    """True for a client timeout (aiohttp's timeout errors are ``TimeoutError`` subclasses,
    httpx's ``TimeoutException`` ones)."""
    if isinstance(exc, TimeoutError):
        return True
    httpx = _httpx()
    return httpx is not None and isinstance(exc, httpx.TimeoutException)


def is_connect_error(exc: BaseException) -> bool:
    """True when the server (or the proxy on the way) could not be reached at all."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return True
    httpx = _httpx()
    return httpx is not None and isinstance(exc, (httpx.ConnectError, httpx.ProxyError))


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the errors behind it, a few levels deep: ``raise ... from``, an error
    wrapping another (``httpcore.ConnectError(ssl_error)``), or raised while handling one."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        yield current
        seen += 1
        wrapped = current.args[0] if current.args else None
        current = current.__cause__ or (wrapped if isinstance(wrapped, BaseException)
                                        else current.__context__)


def certificate_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification failure behind a client error, if that is what it is."""
    for each in _causes(exc):
        inner = getattr(each, "certificate_error", None)  # aiohttp's wrapper (a subclass too)
        if isinstance(inner, ssl.SSLCertVerificationError):
            return inner
        if isinstance(each, ssl.SSLCertVerificationError):
            return each
    return None


def error_detail(exc: BaseException) -> str:
    """A short description of a client error, never empty: the operating system's reason
    (``connection refused``) when there is one, else the client's message."""
    for each in _causes(exc):
        os_error = getattr(each, "os_error", None) or each
        if isinstance(os_error, socket.gaierror) and os_error.strerror:
            return os_error.strerror.lower()  # a name lookup: its errno is a getaddrinfo code
        if isinstance(os_error, OSError) and os_error.errno and not isinstance(os_error,
                                                                               ssl.SSLError):
            return os.strerror(os_error.errno).lower()
    return str(exc) or type(exc).__name__


# -- proxies and certificates for our own session ------------------------------------------
@dataclass(frozen=True, slots=True)
class Proxy:
    """A forward proxy: ``url`` without credentials (safe to show) and the request options
    aiohttp needs (``Proxy-Authorization`` from the credentials, if any)."""

    url: str
    headers: Mapping[str, str] | None = None

    def request_options(self) -> dict[str, Any]:
        return {"proxy": self.url, **({"proxy_headers": dict(self.headers)} if self.headers else {})}


def env_proxy(url: str) -> Proxy | None:
    """The proxy for ``url`` from the environment, as curl, requests and httpx read it:
    ``https_proxy``/``HTTPS_PROXY`` or ``http_proxy``/``HTTP_PROXY`` by the URL's scheme, else
    ``all_proxy``/``ALL_PROXY``; none when ``no_proxy``/``NO_PROXY`` matches the host (a name,
    a domain suffix, ``host:port``, or ``*``). Lower-case names win over upper-case ones.
    ConfigError for a proxy scheme aiohttp cannot use (SOCKS)."""
    from urllib.request import getproxies_environment, proxy_bypass_environment

    proxies = getproxies_environment()
    parts = urlsplit(url)
    host = parts.hostname or ""
    value = proxies.get(parts.scheme) or proxies.get("all")
    where = f"{host}:{parts.port}" if parts.port and ":" not in host else host
    if not host or not value or proxy_bypass_environment(where, proxies):
        return None
    if "://" not in value:
        value = "http://" + value  # ``proxy:3128``, as curl reads it
    proxy = urlsplit(value)
    if proxy.scheme not in ("http", "https") or not proxy.hostname:
        shown = urlunsplit((proxy.scheme, proxy.hostname or "", "", "", ""))
        raise ConfigError(f"the proxy for {parts.scheme} from the environment ({shown}) is not "
                          "an http:// or https:// proxy: pass http_client=httpx.AsyncClient("
                          "proxy=...) (with httpx[socks] for SOCKS), or ignore the proxy "
                          "variables with --no-proxy-env (proxy_env=False)")
    netloc = proxy.hostname if ":" not in proxy.hostname else f"[{proxy.hostname}]"
    if proxy.port:
        netloc += f":{proxy.port}"
    headers = None
    if proxy.username is not None:
        pair = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}".encode()
        headers = {"Proxy-Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}
    return Proxy(urlunsplit((proxy.scheme, netloc, "", "", "")), headers)


def ca_context(path: str | os.PathLike[str], where: str) -> ssl.SSLContext:
    """A client TLS context that trusts the CA certificates in the PEM file ``path`` (only
    them, as ``curl --cacert`` and httpx's ``verify=`` do). One-line ConfigError naming
    ``where`` (``--ca-bundle``, ``$SSL_CERT_FILE``) when the file is missing or holds none."""
    shown = os.fspath(path)
    try:
        stat = os.stat(shown)
        key = (os.path.abspath(shown), stat.st_mtime_ns, stat.st_size)
        context = _ca_contexts.get(key)
        if context is None:  # a notebook's runs share one load of the file
            context = _ca_contexts[key] = ssl.create_default_context(cafile=shown)
        return context
    except FileNotFoundError:
        problem = "no such file"
    except IsADirectoryError:
        problem = "is a directory, not a PEM file"
    except PermissionError:
        problem = "permission denied"
    except (ssl.SSLError, ValueError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "reason", None) or str(exc)
        problem = f"not a PEM file of CA certificates ({str(reason).lower().replace('_', ' ')})"
    except OSError as exc:
        problem = os.strerror(exc.errno).lower() if exc.errno else str(exc)
    raise ConfigError(f"{where} {shown}: {problem}")


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


# -- the clients the codex runtime posts through -------------------------------------------
def media_type(value: str | None) -> str:
    """``text/event-stream`` from ``Text/Event-Stream; charset=utf-8``."""
    return (value or "").partition(";")[0].strip().lower()


async def read_capped(chunks: AsyncIterable[bytes], limit: int, what: str = "reply body",
                      length: int | None = None) -> bytes:
    """:func:`read_body` for any client: the body arriving in (decoded) ``chunks``, or
    :class:`ReplyTooLarge` as soon as it is known to pass ``limit`` bytes (``length``: a
    ``Content-Length`` of an uncompressed body, checked before anything is read). The caller
    drops the connection on the error."""
    if length is not None and length > limit:
        raise ReplyTooLarge(what, limit)
    parts: list[bytes] = []
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise ReplyTooLarge(what, limit)
        parts.append(chunk)
    return b"".join(parts)


async def read_prefix(chunks: AsyncIterable[bytes], limit: int = ERROR_BODY_BYTES,
                      ) -> tuple[bytes, bool]:
    """:func:`read_head` for any client: at most ``limit`` bytes, and whether there was more."""
    parts: list[bytes] = []
    total = 0
    async for chunk in chunks:
        parts.append(chunk)
        total += len(chunk)
        if total > limit:
            return b"".join(parts)[:limit], True
    return b"".join(parts), False


async def sse_events(chunks: AsyncIterable[bytes], content_type: str | None, *,
                     max_event_bytes: int | None = None, max_stream_bytes: int | None = None,
                     ) -> AsyncIterator[ServerSentEvent]:
    """:func:`aiter_sse` for any client: the events of a body arriving in ``chunks``."""
    kind = media_type(content_type)
    if kind != EVENT_STREAM:
        raise SSEError(f"expected {EVENT_STREAM}, got {kind or 'no content type'!r}")
    decoder = SSEDecoder(max_event_bytes)
    async for line in aiter_lines(chunks, max_event_bytes, max_stream_bytes):
        sse = decoder.decode(line)
        if sse is not None:
            yield sse


class AiohttpReply:
    """One reply as the codex runtime reads it: ``status``, ``header()``, ``read()`` (capped),
    ``head()`` (the start of an error body), ``events()`` (SSE) and ``close()`` (drop the
    connection). This one wraps an ``aiohttp.ClientResponse``; :class:`HttpxReply` an
    ``httpx.Response``."""

    __slots__ = ("response", "status")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.status = response.status

    def header(self, name: str) -> str | None:
        return self.response.headers.get(name)

    def read(self, limit: int, what: str = "reply body") -> Any:
        return read_body(self.response, limit, what)

    def head(self, limit: int = ERROR_BODY_BYTES) -> Any:
        return read_head(self.response, limit)

    def events(self, max_event_bytes: int | None, max_stream_bytes: int | None,
               ) -> AsyncIterator[ServerSentEvent]:
        return aiter_sse(self.response, max_event_bytes=max_event_bytes,
                         max_stream_bytes=max_stream_bytes)

    def close(self) -> None:
        self.response.close()


class _Posting:
    """``async with client.post(...) as reply``: the client's own context manager, its
    response wrapped for the runtime."""

    __slots__ = ("_cm", "_wrap")

    def __init__(self, cm: Any, wrap: Any) -> None:
        self._cm = cm
        self._wrap = wrap

    async def __aenter__(self) -> Any:
        return self._wrap(await self._cm.__aenter__())

    async def __aexit__(self, *exc: Any) -> Any:
        return await self._cm.__aexit__(*exc)


class AiohttpPoster:
    """Posts through an ``aiohttp.ClientSession``: ours (``owned``: closed with the runtime)
    or the user's (never closed by us; its own proxy and TLS settings apply). ``headers`` go
    with every request; ``proxy`` is our session's proxy from the environment."""

    errors: tuple[type[BaseException], ...] = (aiohttp.ClientError, TimeoutError)

    def __init__(self, session: aiohttp.ClientSession, *, owned: bool,
                 headers: Mapping[str, str] | None = None, proxy: Proxy | None = None) -> None:
        self.session = session
        self.owned = owned
        self.headers = dict(headers) if headers else None
        self.proxy = proxy
        self._options: dict[str, Any] = proxy.request_options() if proxy else {}
        if not owned:  # a session made with raise_for_status: we read error replies ourselves
            self._options["raise_for_status"] = False
        self._timeouts: dict[float | None, aiohttp.ClientTimeout] = {}

    def timeout(self, seconds: float | None) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get(seconds)
        if timeout is None:
            timeout = self._timeouts[seconds] = client_timeout(seconds)
        return timeout

    def post(self, url: str, body: bytes, timeout: aiohttp.ClientTimeout,
             headers: Mapping[str, str] | None = None) -> _Posting:
        if self.headers:
            headers = {**self.headers, **headers} if headers else self.headers
        return _Posting(self.session.post(url, data=body, timeout=timeout, headers=headers,
                                          **self._options), AiohttpReply)

    async def close(self) -> None:
        if self.owned:
            await self.session.close()


class HttpxReply:
    """:class:`AiohttpReply` for an ``httpx.Response`` opened with ``client.stream()``."""

    __slots__ = ("response", "status")

    def __init__(self, response: Any) -> None:
        self.response = response
        self.status = response.status_code

    def header(self, name: str) -> str | None:
        return self.response.headers.get(name)

    def _length(self) -> int | None:
        headers = self.response.headers
        coding = headers.get("content-encoding")
        if coding and coding.strip().lower() != "identity":
            return None
        try:
            return int(headers.get("content-length", ""))
        except ValueError:
            return None

    def read(self, limit: int, what: str = "reply body") -> Any:
        return read_capped(self.response.aiter_bytes(), limit, what, self._length())

    def head(self, limit: int = ERROR_BODY_BYTES) -> Any:
        return read_prefix(self.response.aiter_bytes(), limit)

    def events(self, max_event_bytes: int | None, max_stream_bytes: int | None,
               ) -> AsyncIterator[ServerSentEvent]:
        return sse_events(self.response.aiter_bytes(), self.response.headers.get("content-type"),
                          max_event_bytes=max_event_bytes, max_stream_bytes=max_stream_bytes)

    def close(self) -> None:
        """Nothing to do: leaving ``client.stream()`` closes a reply that was not read to the
        end, and httpx then drops its connection."""


class HttpxPoster:
    """Posts through the user's ``httpx.AsyncClient`` with ``client.stream("POST", ...)``:
    its transport, auth, proxies and certificates as configured, our timeouts, caps and SSE
    decoding. Never closed by us."""

    owned = False
    proxy = None

    def __init__(self, client: Any, headers: Mapping[str, str] | None = None) -> None:
        import httpx  # loaded already: the client is an httpx one

        self._httpx = httpx
        self.client = client
        self.headers = dict(headers) if headers else {}
        self.errors: tuple[type[BaseException], ...] = (httpx.RequestError, httpx.HTTPStatusError,
                                                        TimeoutError)
        self._timeouts: dict[float | None, Any] = {}

    def timeout(self, seconds: float | None) -> Any:
        """The same limits as :func:`client_timeout`: ``seconds`` between reads, connect capped
        at 30 s, no overall, write or pool limit."""
        timeout = self._timeouts.get(seconds)
        if timeout is None:
            timeout = self._timeouts[seconds] = self._httpx.Timeout(
                connect=_connect_s(seconds), read=seconds, write=None, pool=None)
        return timeout

    def post(self, url: str, body: bytes, timeout: Any,
             headers: Mapping[str, str] | None = None) -> _Posting:
        merged = {**self.headers, **headers} if headers else self.headers
        return _Posting(self.client.stream("POST", url, content=body, headers=merged,
                                           timeout=timeout), HttpxReply)

    async def close(self) -> None:
        return None


def user_client_kind(client: Any) -> str | None:
    """``"aiohttp"`` or ``"httpx"`` for a client the runtime can post through, else None."""
    if isinstance(client, aiohttp.ClientSession):
        return "aiohttp"
    httpx = _httpx()
    if httpx is not None and isinstance(client, httpx.AsyncClient):
        return "httpx"
    return None

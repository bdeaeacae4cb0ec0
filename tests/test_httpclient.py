"""The shared HTTP helpers: the event-stream decoder (any chunking gives the same events) and
the session against a real loopback server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from servers import RawServer, ServerThread, closed_port
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from codexflow_nb.httpclient import (
    ServerSentEvent,
    SSEDecoder,
    SSEError,
    aiter_lines,
    aiter_sse,
    client_timeout,
    is_connect_error,
    is_timeout,
    make_session,
)

STREAM = (b": a comment\r\n"
          b"event: start\r\n"
          b"data: {\"a\": 1}\r\n\r\n"
          b"data:first\n"
          b"data: second\n"
          b"id: 7\n"
          b"retry: 1500\n\n"
          b"data: lone cr\r\r"
          b"id: bad\0id\n"
          b"event: ignored\n\n"
          b"data: caf\xc3\xa9\n\n")
EXPECTED = [ServerSentEvent('{"a": 1}', "start"),
            ServerSentEvent("first\nsecond", "message", "7", 1500),
            ServerSentEvent("lone cr", "message", "7", 1500),
            ServerSentEvent("café", "message", "7", 1500)]


async def _chunks(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def decode(parts: list[bytes]) -> list[ServerSentEvent]:
    async def go() -> list[ServerSentEvent]:
        decoder, events = SSEDecoder(), []
        async for line in aiter_lines(_chunks(parts)):
            event = decoder.decode(line)
            if event is not None:
                events.append(event)
        return events
    return asyncio.run(go())


def test_decoder_follows_the_event_stream_rules() -> None:
    assert decode([STREAM]) == EXPECTED


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_any_chunking_gives_the_same_events(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(STREAM)]
    assert decode([STREAM[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]) == EXPECTED


def test_an_event_without_data_is_not_dispatched() -> None:
    assert decode([b"event: ping\n\n", b"data: x\n\n"]) == [ServerSentEvent("x")]


def test_lines_end_at_the_end_of_the_body() -> None:
    async def go() -> list[str]:
        return [line async for line in aiter_lines(_chunks([b"a\r\nb\rc", b"d"]))]
    assert asyncio.run(go()) == ["a", "b", "cd"]


async def _sse(request: Request) -> Response:
    return Response(b"data: one\n\ndata: two\n\n", media_type="text/event-stream")


async def _json(request: Request) -> Response:
    return JSONResponse({})


def test_aiter_sse_reads_a_real_stream_and_refuses_other_content() -> None:
    async def go(url: str) -> list[str]:
        async with make_session(2, tls=False) as session, session.get(url) as response:
            return [e.data async for e in aiter_sse(response)]

    app = Starlette(routes=[Route("/sse", _sse), Route("/json", _json)])
    with ServerThread(app) as server:
        assert asyncio.run(go(server.url + "/sse")) == ["one", "two"]
        with pytest.raises(SSEError, match="application/json"):
            asyncio.run(go(server.url + "/json"))


def test_timeouts_and_refused_connections_are_classified() -> None:
    async def fetch(url: str, timeout: aiohttp.ClientTimeout) -> BaseException:
        async with make_session(1, tls=False) as session:
            try:
                async with session.get(url, timeout=timeout):
                    pass
            except (aiohttp.ClientError, TimeoutError) as exc:
                return exc
        raise AssertionError("no error")

    with RawServer("stall") as server:
        exc = asyncio.run(fetch(server.url, client_timeout(0.2)))
    assert is_timeout(exc) and not is_connect_error(exc)
    exc = asyncio.run(fetch(f"http://127.0.0.1:{closed_port()}", client_timeout(1.0)))
    assert is_connect_error(exc) and not is_timeout(exc)


def test_a_long_line_in_many_chunks_is_one_line() -> None:
    line = b"data: " + b"x" * 1_000_000
    body = line + b"\r\n\r\n"
    events = decode([body[i:i + 4096] for i in range(0, len(body), 4096)])
    assert events == [ServerSentEvent("x" * 1_000_000)]

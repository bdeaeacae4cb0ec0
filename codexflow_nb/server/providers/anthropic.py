"""The ``anthropic`` provider: the Messages API (``POST {base}/v1/messages``), JSON and the
streaming event format (``message_start`` ... ``content_block_delta`` ... ``message_delta``,
``message_stop``), with usage from ``message_start`` and ``message_delta``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import orjson

from ...httpclient import ReplyLimits, ReplyTooLarge, SSEError, aiter_sse, json_body
from .base import (
    JSON_HEADERS,
    SSE_HEADERS,
    UPSTREAM_LIMITS,
    AgentRequest,
    ProviderError,
    ProviderReply,
    failed_reply,
    malformed,
    post_ok,
    system_prompt,
    too_large,
    transport_failure,
    user_prompt,
)

DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_MODEL = "claude-sonnet-4-5"
API_VERSION = "2023-06-01"
VENDOR = "anthropic"


class AnthropicProvider:
    """Needs ``ANTHROPIC_API_KEY``; ``ANTHROPIC_BASE_URL``, ``ANTHROPIC_MODEL`` and
    ``ANTHROPIC_MAX_TOKENS`` (default 1024) are optional."""

    name = "anthropic"

    def __init__(self, client: aiohttp.ClientSession, env: Mapping[str, str],
                 model: str | None = None, limits: ReplyLimits = UPSTREAM_LIMITS) -> None:
        key = env.get("ANTHROPIC_API_KEY")
        if not key:
            raise ProviderError(400, "provider 'anthropic' is not configured on this endpoint: "
                                     "set ANTHROPIC_API_KEY where `codex-flow serve` runs")
        self._client = client
        self._key = key
        self.limits = limits
        self._headers = {"x-api-key": key, "anthropic-version": API_VERSION, **JSON_HEADERS}
        self._stream_headers = {**self._headers, **SSE_HEADERS}
        self._url = (env.get("ANTHROPIC_BASE_URL") or DEFAULT_BASE_URL).rstrip("/") + "/v1/messages"
        self.model = model or env.get("ANTHROPIC_MODEL") or DEFAULT_MODEL
        try:
            self.max_tokens = int(env.get("ANTHROPIC_MAX_TOKENS") or 1024)
        except ValueError:
            raise ProviderError(400, "ANTHROPIC_MAX_TOKENS must be an integer") from None

    def _body(self, request: AgentRequest, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "max_tokens": self.max_tokens,
                                "system": system_prompt(request.agent),
                                "messages": [{"role": "user", "content": user_prompt(request)}]}
        if stream:
            body["stream"] = True
        return body

    async def complete(self, request: AgentRequest) -> ProviderReply:
        payload = await post_ok(self._client, VENDOR, self._url, self._body(request, False),
                                self._headers, self.limits, self._key)
        try:
            doc = orjson.loads(payload)
            text = "".join(block.get("text", "") for block in doc["content"]
                           if block.get("type") == "text")
            usage = {"tokensIn": int(doc["usage"]["input_tokens"]),
                     "tokensOut": int(doc["usage"]["output_tokens"])}
        except (ValueError, KeyError, TypeError, AttributeError):
            raise malformed(VENDOR, "no content blocks or usage") from None
        return ProviderReply(text=text, model=str(doc.get("model") or self.model), usage=usage)

    async def stream(self, request: AgentRequest) -> AsyncIterator[str | ProviderReply]:
        parts: list[str] = []
        tokens_in = tokens_out = None
        model = self.model
        stopped = False
        try:
            async with self._client.post(self._url, data=json_body(self._body(request, True)),
                                         headers=self._stream_headers) as response:
                if response.status != 200:
                    raise await failed_reply(VENDOR, response, self._key)
                async for sse in aiter_sse(response, max_event_bytes=self.limits.event,
                                           max_stream_bytes=self.limits.stream):
                    try:
                        doc = orjson.loads(sse.data) if sse.data else {}
                    except ValueError:
                        raise malformed(VENDOR, "stream event is not JSON") from None
                    kind = doc.get("type") or sse.event
                    if kind == "message_start":
                        message = doc.get("message") or {}
                        model = str(message.get("model") or model)
                        usage = message.get("usage") or {}
                        tokens_in = usage.get("input_tokens", tokens_in)
                        tokens_out = usage.get("output_tokens", tokens_out)
                    elif kind == "content_block_delta":
                        delta = doc.get("delta") or {}
                        if delta.get("type") == "text_delta" and delta.get("text"):
                            parts.append(delta["text"])
                            yield delta["text"]
                    elif kind == "message_delta":
                        usage = doc.get("usage") or {}
                        tokens_in = usage.get("input_tokens", tokens_in)
                        tokens_out = usage.get("output_tokens", tokens_out)
                    elif kind == "message_stop":
                        stopped = True
                        break
                    elif kind == "error":
                        code = (doc.get("error") or {}).get("type")
                        status = 429 if code in ("overloaded_error", "rate_limit_error") else 502
                        raise ProviderError(status, f"{VENDOR} stream error"
                                                    + (f" ({code})" if isinstance(code, str) else ""))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise transport_failure(VENDOR, exc) from None
        except SSEError:
            raise malformed(VENDOR, "not an event stream") from None
        except ReplyTooLarge as exc:
            raise too_large(VENDOR, exc) from None
        if not stopped:
            raise malformed(VENDOR, "stream ended without message_stop")
        if not isinstance(tokens_in, int) or not isinstance(tokens_out, int):
            raise malformed(VENDOR, "stream carried no usage")
        yield ProviderReply(text="".join(parts), model=model,
                            usage={"tokensIn": tokens_in, "tokensOut": tokens_out})

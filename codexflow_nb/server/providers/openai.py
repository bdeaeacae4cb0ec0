"""The ``openai`` provider: Chat Completions (``POST {base}/chat/completions``), JSON and SSE
streaming with ``stream_options.include_usage`` so the usage comes with the stream too."""

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

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-mini"
VENDOR = "openai"


class OpenAIProvider:
    """Needs ``OPENAI_API_KEY``; ``OPENAI_BASE_URL`` and ``OPENAI_MODEL`` are optional."""

    name = "openai"

    def __init__(self, client: aiohttp.ClientSession, env: Mapping[str, str],
                 model: str | None = None, limits: ReplyLimits = UPSTREAM_LIMITS) -> None:
        key = env.get("OPENAI_API_KEY")
        if not key:
            raise ProviderError(400, "provider 'openai' is not configured on this endpoint: "
                                     "set OPENAI_API_KEY where `codex-flow serve` runs")
        self._client = client
        self._key = key
        self.limits = limits
        self._headers = {"authorization": f"Bearer {key}", **JSON_HEADERS}
        self._stream_headers = {**self._headers, **SSE_HEADERS}
        self._url = (env.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/") + "/chat/completions"
        self.model = model or env.get("OPENAI_MODEL") or DEFAULT_MODEL

    def _body(self, request: AgentRequest, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": [
            {"role": "system", "content": system_prompt(request.agent)},
            {"role": "user", "content": user_prompt(request)}]}
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    async def complete(self, request: AgentRequest) -> ProviderReply:
        payload = await post_ok(self._client, VENDOR, self._url, self._body(request, False),
                                self._headers, self.limits, self._key)
        try:
            doc = orjson.loads(payload)
            text = doc["choices"][0]["message"]["content"] or ""
            usage = _usage(doc["usage"])
        except (ValueError, KeyError, IndexError, TypeError):
            raise malformed(VENDOR, "no choices[0].message.content or usage") from None
        return ProviderReply(text=text, model=str(doc.get("model") or self.model), usage=usage)

    async def stream(self, request: AgentRequest) -> AsyncIterator[str | ProviderReply]:
        parts: list[str] = []
        usage: dict[str, int] | None = None
        model = self.model
        try:
            async with self._client.post(self._url, data=json_body(self._body(request, True)),
                                         headers=self._stream_headers) as response:
                if response.status != 200:
                    raise await failed_reply(VENDOR, response, self._key)
                done = False
                async for sse in aiter_sse(response, max_event_bytes=self.limits.event,
                                           max_stream_bytes=self.limits.stream):
                    if sse.data.strip() == "[DONE]":
                        done = True
                        break
                    try:
                        doc = orjson.loads(sse.data)
                    except ValueError:
                        raise malformed(VENDOR, "stream event is not JSON") from None
                    if "error" in doc:
                        raise ProviderError(502, f"{VENDOR} stream error")
                    model = str(doc.get("model") or model)
                    if doc.get("usage"):
                        usage = _usage(doc["usage"])
                    for choice in doc.get("choices") or []:
                        content = (choice.get("delta") or {}).get("content")
                        if content:
                            parts.append(content)
                            yield content
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise transport_failure(VENDOR, exc) from None
        except SSEError:
            raise malformed(VENDOR, "not an event stream") from None
        except ReplyTooLarge as exc:
            raise too_large(VENDOR, exc) from None
        if not done:
            raise malformed(VENDOR, "stream ended without [DONE]")
        if usage is None:
            raise malformed(VENDOR, "stream carried no usage")
        yield ProviderReply(text="".join(parts), model=model, usage=usage)


def _usage(doc: Any) -> dict[str, int]:
    try:
        return {"tokensIn": int(doc["prompt_tokens"]), "tokensOut": int(doc["completion_tokens"])}
    except (KeyError, TypeError, ValueError):
        raise malformed(VENDOR, "usage without prompt_tokens/completion_tokens") from None

"""The ``openai`` provider: Chat Completions (``POST {base}/chat/completions``), JSON and SSE
streaming with ``stream_options.include_usage`` so the usage comes with the stream too."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
from httpx_sse import SSEError, aconnect_sse

from .base import (
    AgentRequest,
    ProviderError,
    ProviderReply,
    malformed,
    post_ok,
    system_prompt,
    transport_failure,
    upstream_failure,
    user_prompt,
)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-mini"
VENDOR = "openai"


class OpenAIProvider:
    """Needs ``OPENAI_API_KEY``; ``OPENAI_BASE_URL`` and ``OPENAI_MODEL`` are optional."""

    name = "openai"

    def __init__(self, client: httpx.AsyncClient, env: Mapping[str, str],
                 model: str | None = None) -> None:
        key = env.get("OPENAI_API_KEY")
        if not key:
            raise ProviderError(400, "provider 'openai' is not configured on this endpoint: "
                                     "set OPENAI_API_KEY where `codex-flow serve` runs")
        self._client = client
        self._headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
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
        response = await post_ok(self._client, VENDOR, self._url,
                                 json=self._body(request, False), headers=self._headers)
        try:
            doc = response.json()
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
            async with aconnect_sse(self._client, "POST", self._url,
                                    json=self._body(request, True), headers=self._headers) as src:
                if src.response.status_code != 200:
                    raise upstream_failure(VENDOR, src.response, await src.response.aread())
                done = False
                async for sse in src.aiter_sse():
                    if sse.data.strip() == "[DONE]":
                        done = True
                        break
                    try:
                        doc = json.loads(sse.data)
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
        except httpx.HTTPError as exc:
            raise transport_failure(VENDOR, exc) from None
        except SSEError:
            raise malformed(VENDOR, "not an event stream") from None
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

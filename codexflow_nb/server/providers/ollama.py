"""The ``ollama`` provider: ``POST {OLLAMA_URL}/api/chat``, one JSON reply or NDJSON lines when
streaming; usage from ``prompt_eval_count`` / ``eval_count`` of the final (``done``) object."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import orjson

from ...httpclient import ReplyLimits, ReplyTooLarge, aiter_lines, json_body
from .base import (
    JSON_HEADERS,
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

DEFAULT_URL = "http://127.0.0.1:11434"
DEFAULT_MODEL = "llama3.2"
VENDOR = "ollama"


class OllamaProvider:
    """``OLLAMA_URL`` (default a local Ollama) and ``OLLAMA_MODEL`` are optional."""

    name = "ollama"

    def __init__(self, client: aiohttp.ClientSession, env: Mapping[str, str],
                 model: str | None = None, limits: ReplyLimits = UPSTREAM_LIMITS) -> None:
        self._client = client
        self.limits = limits
        self._url = (env.get("OLLAMA_URL") or DEFAULT_URL).rstrip("/") + "/api/chat"
        self.model = model or env.get("OLLAMA_MODEL") or DEFAULT_MODEL

    def _body(self, request: AgentRequest, stream: bool) -> dict[str, Any]:
        return {"model": self.model, "stream": stream, "messages": [
            {"role": "system", "content": system_prompt(request.agent)},
            {"role": "user", "content": user_prompt(request)}]}

    async def complete(self, request: AgentRequest) -> ProviderReply:
        payload = await post_ok(self._client, VENDOR, self._url, self._body(request, False),
                                JSON_HEADERS, self.limits)
        try:
            doc = orjson.loads(payload)
            text = doc["message"]["content"]
        except (ValueError, KeyError, TypeError):
            raise malformed(VENDOR, "no message.content") from None
        return ProviderReply(text=text, model=str(doc.get("model") or self.model), usage=_usage(doc))

    async def stream(self, request: AgentRequest) -> AsyncIterator[str | ProviderReply]:
        parts: list[str] = []
        final: dict[str, Any] | None = None
        try:
            async with self._client.post(self._url, data=json_body(self._body(request, True)),
                                         headers=JSON_HEADERS) as response:
                if response.status != 200:
                    raise await failed_reply(VENDOR, response)
                async for line in aiter_lines(response.content.iter_any(), self.limits.event,
                                              self.limits.stream):
                    if not line.strip():
                        continue
                    try:
                        doc = orjson.loads(line)
                    except ValueError:
                        raise malformed(VENDOR, "stream line is not JSON") from None
                    if not isinstance(doc, dict):
                        raise malformed(VENDOR, "stream line is not an object")
                    if doc.get("error"):
                        raise ProviderError(502, f"{VENDOR} stream error")
                    content = (doc.get("message") or {}).get("content")
                    if content:
                        parts.append(content)
                        yield content
                    if doc.get("done"):
                        final = doc
                        break
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise transport_failure(VENDOR, exc) from None
        except ReplyTooLarge as exc:
            raise too_large(VENDOR, exc) from None
        if final is None:
            raise malformed(VENDOR, "stream ended without a done object")
        yield ProviderReply(text="".join(parts), model=str(final.get("model") or self.model),
                            usage=_usage(final))


def _usage(doc: dict[str, Any]) -> dict[str, int]:
    # Ollama leaves out prompt_eval_count when the whole prompt came from its cache
    tokens_in, tokens_out = doc.get("prompt_eval_count", 0), doc.get("eval_count")
    if not isinstance(tokens_in, int) or not isinstance(tokens_out, int):
        raise malformed(VENDOR, "no prompt_eval_count/eval_count")
    return {"tokensIn": tokens_in, "tokensOut": tokens_out}

"""What every provider gets (an :class:`AgentRequest`) and gives back (a :class:`ProviderReply`),
plus the prompts built from an agent definition, bounded reading of vendor replies and the
mapping of upstream failures."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from ...httpclient import ReplyLimits, ReplyTooLarge, is_timeout, json_body, read_body, read_head
from ...prompts import agent_card, task_prompt
from ...prompts import first_line as first_line  # re-exported for the providers
from ...registry import AgentDef
from ...runtimes.codex import parse_retry_after

#: Sent with every vendor request: the body is JSON.
JSON_HEADERS = {"content-type": "application/json"}
#: Added to streaming requests: the reply must be an event stream, never a cached one.
SSE_HEADERS = {"accept": "text/event-stream", "cache-control": "no-store"}
#: Caps on what a vendor may send back (a JSON reply, one stream line or event, one whole
#: stream): past them the request fails with a 502 instead of filling the endpoint's memory.
UPSTREAM_LIMITS = ReplyLimits()


@dataclass(frozen=True)
class AgentRequest:
    """One validated ``POST /run`` body, with the agent definition it names."""

    agent: AgentDef
    alias: str
    task: str
    context: list[dict[str, Any]] | None = None


@dataclass
class ProviderReply:
    """The text a provider produced, its usage (``tokensIn``/``tokensOut``) and extra output."""

    text: str
    model: str
    usage: dict[str, int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class ProviderError(Exception):
    """A request the provider could not serve. ``status`` is the endpoint's HTTP status:
    429 (rate limited, with ``retry_after``), 502/504 (upstream failed, worth a retry),
    424 (upstream refused, a retry will not help) or 400 (provider not configured).
    Messages never quote the task or the provider's key."""

    def __init__(self, status: int, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.status == 429 or self.status >= 500


class Provider(Protocol):
    """A model behind the endpoint. ``stream`` yields text pieces and ends with the reply."""

    name: str

    async def complete(self, request: AgentRequest) -> ProviderReply: ...

    def stream(self, request: AgentRequest) -> AsyncIterator[str | ProviderReply]: ...


def system_prompt(agent: AgentDef) -> str:
    """The agent's card as a system prompt (shared with the coding-agent runtimes)."""
    return agent_card(agent.data)


def user_prompt(request: AgentRequest) -> str:
    """The task, followed by the results of earlier tasks when there are any."""
    return task_prompt(request.task, request.context)


def upstream_failure(vendor: str, status: int, headers: Mapping[str, str],
                     body: bytes, secret: str | None = None) -> ProviderError:
    """Map a vendor's non-200 reply to a :class:`ProviderError`, quoting only the vendor's
    error code (never its message, which may echo the request or part of a key), and not even
    that when it holds the ``secret`` (the provider's key) or a piece of it."""
    code = _error_code(body)
    if code and secret and (secret in code or (len(code) >= 8 and code in secret)):
        code = None
    detail = f"HTTP {status}" + (f" ({code})" if code else "")
    if status == 429:
        return ProviderError(429, f"{vendor} rate limit: {detail}",
                             retry_after=parse_retry_after(headers.get("retry-after")))
    if status >= 500:
        return ProviderError(502, f"{vendor} upstream error: {detail}")
    return ProviderError(424, f"{vendor} refused the request: {detail}")


async def post_ok(session: aiohttp.ClientSession, vendor: str, url: str, body: Any,
                  headers: Mapping[str, str], limits: ReplyLimits = UPSTREAM_LIMITS,
                  secret: str | None = None) -> bytes:
    """POST ``body`` as JSON to a vendor and return the reply's body (at most
    ``limits.reply`` bytes); a transport error, a non-200 reply or a reply past the cap
    becomes a ProviderError."""
    try:
        async with session.post(url, data=json_body(body), headers=headers) as response:
            if response.status != 200:
                raise await failed_reply(vendor, response, secret)
            return await read_body(response, limits.reply)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise transport_failure(vendor, exc) from None
    except ReplyTooLarge as exc:
        raise too_large(vendor, exc) from None


async def failed_reply(vendor: str, response: aiohttp.ClientResponse,
                       secret: str | None = None) -> ProviderError:
    """The ProviderError for a vendor's non-200 ``response``, reading only the start of its
    body (enough for the error code)."""
    head, _ = await read_head(response)
    return upstream_failure(vendor, response.status, response.headers, head, secret)


def too_large(vendor: str, exc: ReplyTooLarge) -> ProviderError:
    """A vendor reply past one of the :data:`UPSTREAM_LIMITS` (502: the upstream misbehaved)."""
    return ProviderError(502, f"{vendor} reply too large: {exc}")


def transport_failure(vendor: str, exc: BaseException) -> ProviderError:
    """Map a connection problem or timeout talking to the vendor."""
    if is_timeout(exc):
        return ProviderError(504, f"{vendor} did not answer in time")
    return ProviderError(502, f"cannot reach {vendor}: {type(exc).__name__}")


def malformed(vendor: str, what: str) -> ProviderError:
    return ProviderError(502, f"{vendor} sent a malformed reply: {what}")


def _error_code(body: bytes) -> str | None:
    try:
        doc = json.loads(body)
    except (ValueError, TypeError):
        return None
    err = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(err, dict):
        for key in ("code", "type"):
            value = err.get(key)
            if isinstance(value, str) and len(value) <= 80:
                return value
    return None

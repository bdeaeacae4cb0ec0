"""Providers behind the demo endpoint: ``echo`` (offline), ``openai``, ``anthropic``, ``ollama``,
``cli``, and the coding agents ``codex-cli`` and ``claude-code``. :class:`ProviderSettings` holds what the endpoint was started with; providers are
built on first use, so a missing key only matters to requests that pick that provider."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .base import AgentRequest, Provider, ProviderError, ProviderReply, first_line

PROVIDER_NAMES = ("echo", "openai", "anthropic", "ollama", "cli", "codex-cli", "claude-code")

__all__ = ["PROVIDER_NAMES", "AgentRequest", "Provider", "ProviderError", "ProviderReply",
           "ProviderSettings", "first_line", "make_provider"]


@dataclass
class ProviderSettings:
    """Start-up configuration of the providers (flags and environment)."""

    chunk_delay_ms: float = 0.0
    cli_command: Sequence[str] | None = None
    cli_timeout_s: float = 120.0
    cli_max_output_bytes: int = 256 * 1024
    env: Mapping[str, str] = field(default_factory=lambda: os.environ)
    #: The coding-agent runtime (``codex-cli`` / ``claude-code``), built and checked at start.
    agent_runtime: Any = None
    agent_runs_dir: str | None = None


def make_provider(name: str, settings: ProviderSettings,
                  client: Callable[[], aiohttp.ClientSession], model: str | None = None) -> Provider:
    """Build provider ``name``; ``client()`` gives the shared HTTP session for vendor APIs and
    ``model`` overrides the vendor's model variable. ProviderError(400) when not configured."""
    if name == "echo":
        from .echo import EchoProvider

        return EchoProvider(settings.chunk_delay_ms)
    if name == "openai":
        from .openai import OpenAIProvider

        return OpenAIProvider(client(), settings.env, model)
    if name == "anthropic":
        from .anthropic import AnthropicProvider

        return AnthropicProvider(client(), settings.env, model)
    if name == "ollama":
        from .ollama import OllamaProvider

        return OllamaProvider(client(), settings.env, model)
    if name == "cli":
        from .cli import CliProvider

        return CliProvider(settings.cli_command, timeout_s=settings.cli_timeout_s,
                           max_output_bytes=settings.cli_max_output_bytes)
    if name in ("codex-cli", "claude-code"):
        runtime = settings.agent_runtime
        if runtime is None or runtime.name != name:
            raise ProviderError(400, f"provider {name!r} is not configured on this endpoint: "
                                     f"start it with --provider {name}")
        import tempfile

        from .agent import AgentCliProvider

        runs_dir = settings.agent_runs_dir or tempfile.mkdtemp(prefix="codexflow-serve-")
        return AgentCliProvider(runtime, timeout_s=settings.cli_timeout_s, runs_dir=runs_dir)
    raise ProviderError(400, f"unknown provider: choose one of {', '.join(PROVIDER_NAMES)}")

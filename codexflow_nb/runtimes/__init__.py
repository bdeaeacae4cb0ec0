"""Runtimes: ``stub`` (default, offline) and ``codex`` (HTTP)."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .base import Reply, Runtime, RuntimeCall, RuntimeFailure
from .stub import StubRuntime

__all__ = ["Reply", "Runtime", "RuntimeCall", "RuntimeFailure", "StubRuntime", "make_runtime"]


def make_runtime(name: str | Runtime, **options: Any) -> Runtime:
    """Build a runtime by name (``stub`` or ``codex``) from keyword options, or pass one through."""
    if not isinstance(name, str):
        return name
    if name == "stub":
        keys = {"latency_ms", "jitter", "cpu_ms", "stream", "chunks"}
        return StubRuntime(**{k: v for k, v in options.items() if k in keys and v is not None})
    if name == "codex":
        from .codex import CodexRuntime

        keys = {"url", "api_key", "provider", "stream"}
        return CodexRuntime(**{k: v for k, v in options.items() if k in keys})
    raise ConfigError(f"unknown runtime {name!r}: choose stub or codex")

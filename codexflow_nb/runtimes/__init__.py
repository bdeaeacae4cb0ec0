"""Runtimes: ``stub`` (default, offline), ``codex`` (HTTP) and the coding-agent CLIs
``codex-cli`` and ``claude-code`` (each task in its own workspace)."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..registry import ENGINES
from .base import Reply, Runtime, RuntimeCall, RuntimeFailure
from .stub import StubRuntime

__all__ = ["Reply", "Runtime", "RuntimeCall", "RuntimeFailure", "StubRuntime", "make_runtime"]


#: Every runtime name, for ``--runtime``, the dashboard and ``runtime.engine`` in an alias.
RUNTIME_NAMES = ENGINES
#: Options of the coding-agent runtimes (``codex-cli``, ``claude-code``).
AGENT_OPTION_NAMES = {"agent_bin", "agent_model", "codex_config", "permission_mode",
                      "allowed_tools", "workspace", "repo", "base", "workspaces_dir"}


def make_runtime(name: str | Runtime, **options: Any) -> Runtime:
    """Build a runtime by name (``stub``, ``codex``, ``codex-cli``, ``claude-code``) from
    keyword options, or pass one through."""
    if not isinstance(name, str):
        return name
    if name == "stub":
        keys = {"latency_ms", "jitter", "cpu_ms", "stream", "chunks"}
        return StubRuntime(**{k: v for k, v in options.items() if k in keys and v is not None})
    if name == "codex":
        from .codex import CodexRuntime

        keys = {"url", "api_key", "provider", "stream", "max_reply_bytes", "max_event_bytes",
                "max_stream_bytes", "http_client", "proxy_env", "ca_bundle"}
        return CodexRuntime(**{k: v for k, v in options.items() if k in keys})
    if name in ("codex-cli", "claude-code"):
        return _agent_runtime(name, options)
    raise ConfigError(f"unknown runtime {name!r}: choose {', '.join(RUNTIME_NAMES)}")


def _agent_runtime(name: str, options: dict[str, Any]) -> Runtime:
    from pathlib import Path

    from ..workspaces import Workspaces, is_git_repo
    from .agent_cli import AgentCliRuntime

    repo = Path(options.get("repo") or ".")
    kind = options.get("workspace") or ("worktree" if is_git_repo(repo) else "copy")
    workspaces = Workspaces(kind, repo, options.get("base") or "HEAD",
                            Path(options["workspaces_dir"]) if options.get("workspaces_dir")
                            else None, private=tuple(Path(p) for p in options.get("private") or ()))
    return AgentCliRuntime(name, binary=options.get("agent_bin"), model=options.get("agent_model"),
                           config_args=options.get("codex_config") or (),
                           permission_mode=options.get("permission_mode"),
                           allowed_tools=options.get("allowed_tools"), workspaces=workspaces,
                           env=options.get("env"))

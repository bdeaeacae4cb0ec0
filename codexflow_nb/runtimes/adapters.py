"""One adapter per coding-agent CLI: the command line it is started with, and the reading of
its JSON-lines event stream into chunks, steps, usage and a final message.

Codex CLI (``codex exec --json``) prints ``thread.started``, ``turn.started``,
``item.started``/``item.completed`` (items ``agent_message``, ``command_execution``,
``file_change``, ``mcp_tool_call``, ``web_search``, ``error``...), then ``turn.completed`` with
usage or ``turn.failed``. Claude Code (``claude -p --output-format stream-json --verbose``)
prints a ``system`` line, ``assistant`` and ``user`` messages (text, ``tool_use``,
``tool_result``) and a closing ``result`` line.

Usage (``Turn.usage``, the ``usage`` of the task's events) has the same meaning for both:
``tokensIn`` counts every input token the model took, ``cachedTokensIn`` the part of it read
from the provider's prompt cache, ``tokensOut`` every output token. Claude Code adds
``cacheWriteTokensIn``, the part of ``tokensIn`` written to the prompt cache (billed above
the input price), and ``cacheWrite1hTokensIn``, the part of those writes with the 1-hour
lifetime (the rest have the default 5 minutes; the key is left out when the stream does not
split the writes by lifetime).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .binaries import CLAUDE, CODEX, CliSpec

Step = dict[str, Any]
#: Characters of a command's output kept in its step event (the transcript keeps it all).
OUTPUT_PREVIEW = 300


@dataclass
class Turn:
    """What one CLI run has said so far."""

    on_chunk: Callable[[str], None] | None = None
    on_step: Callable[[Step], None] | None = None
    final: str | None = None
    usage: dict[str, int] | None = None
    model: str | None = None
    session: str | None = None
    error: str | None = None  # the agent's own failure message
    finished: bool = False
    steps: int = 0
    warnings: list[str] = field(default_factory=list)
    started: dict[str, float] = field(default_factory=dict)  # item / tool id -> monotonic start
    pending: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)

    def chunk(self, text: str) -> None:
        if text and self.on_chunk is not None:
            self.on_chunk(text)

    def step(self, step: Step, key: str | None = None) -> None:
        self.steps += 1
        t0 = self.started.pop(key, None) if key else None
        if t0 is not None:
            step["durationMs"] = round((time.monotonic() - t0) * 1000, 1)
        if self.on_step is not None:
            self.on_step({k: v for k, v in step.items() if v is not None})

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        self.step({"stepType": "warning", "message": message[:500]})


class Adapter(Protocol):
    spec: CliSpec

    def command(self, binary: str, settings: Mapping[str, Any], workdir: str,
                git_repo: bool) -> list[str]: ...

    def feed(self, event: Mapping[str, Any], turn: Turn) -> None: ...


def _preview(text: Any) -> str | None:
    if not isinstance(text, str) or not text:
        return None
    return text if len(text) <= OUTPUT_PREVIEW else text[:OUTPUT_PREVIEW] + "..."


def _toml_value(value: Any) -> str:
    """A YAML value as a TOML value for ``codex -c key=value``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


class CodexAdapter:
    """``codex exec --json -``: prompt on stdin, the workspace as ``-C``."""

    spec = CODEX

    def command(self, binary: str, settings: Mapping[str, Any], workdir: str,
                git_repo: bool) -> list[str]:
        argv = [binary, "exec", "--json", "-C", workdir]
        if not git_repo:
            argv.append("--skip-git-repo-check")
        if settings.get("model"):
            argv += ["-m", str(settings["model"])]
        if settings.get("profile"):
            argv += ["-p", str(settings["profile"])]
        if settings.get("sandbox"):
            argv += ["-s", str(settings["sandbox"])]
        if settings.get("approval"):
            argv += ["-c", f"approval_policy={_toml_value(settings['approval'])}"]
        for key, value in (settings.get("config") or {}).items():
            argv += ["-c", f"{key}={_toml_value(value)}"]
        for pair in settings.get("config_args") or ():  # --codex-config KEY=VALUE, as given
            argv += ["-c", str(pair)]
        return [*argv, "-"]

    def feed(self, event: Mapping[str, Any], turn: Turn) -> None:
        kind = event.get("type")
        item = event.get("item") if isinstance(event.get("item"), Mapping) else {}
        item_id = str(item.get("id", ""))
        if kind == "thread.started":
            turn.session = event.get("thread_id")
        elif kind == "item.started":
            turn.started[item_id] = time.monotonic()
        elif kind == "item.completed":
            self._item(item, item_id, turn)
        elif kind == "turn.completed":
            turn.finished = True
            usage = event.get("usage") or {}
            turn.usage = {
                "tokensIn": int(usage.get("input_tokens") or 0),
                "tokensOut": int(usage.get("output_tokens") or 0),
                "cachedTokensIn": int(usage.get("cached_input_tokens") or 0),
                "reasoningTokens": int(usage.get("reasoning_output_tokens") or 0)}
        elif kind == "turn.failed":
            error = event.get("error") or {}
            turn.error = str(error.get("message") if isinstance(error, Mapping) else error
                             ) or "turn failed"
        elif kind == "error":  # a stream problem the CLI reports (it may still recover)
            turn.warn(str(event.get("message") or "error"))

    @staticmethod
    def _item(item: Mapping[str, Any], item_id: str, turn: Turn) -> None:
        itype = item.get("type") or item.get("item_type")
        if itype == "agent_message":
            text = str(item.get("text") or "")
            turn.final = text
            turn.chunk(text if text.endswith("\n") else text + "\n")
        elif itype == "command_execution":
            exit_code = item.get("exit_code")
            turn.step({"stepType": "command", "command": item.get("command"),
                       "exitCode": exit_code, "status": item.get("status"),
                       "output": _preview(item.get("aggregated_output"))}, item_id)
        elif itype == "file_change":
            changes = item.get("changes") or []
            turn.step({"stepType": "file_change", "status": item.get("status"),
                       "files": [c.get("path") for c in changes if isinstance(c, Mapping)]},
                      item_id)
        elif itype == "mcp_tool_call":
            turn.step({"stepType": "tool", "tool": f"{item.get('server')}.{item.get('tool')}",
                       "status": item.get("status")}, item_id)
        elif itype == "web_search":
            turn.step({"stepType": "web_search", "query": item.get("query")}, item_id)
        elif itype == "error":
            turn.warn(str(item.get("message") or "error"))


#: The agent card's tool names as Claude Code tools (``--allowedTools`` / ``--disallowedTools``).
CLAUDE_TOOLS: dict[str, list[str]] = {
    "read_file": ["Read"], "read": ["Read"], "grep": ["Grep"], "search": ["Grep", "Glob"],
    "glob": ["Glob"], "write_file": ["Write", "Edit"], "edit": ["Edit"], "write": ["Write"],
    "shell": ["Bash"], "bash": ["Bash"], "python": ["Bash(python:*)", "Bash(python3:*)"],
    "git": ["Bash(git:*)"], "web": ["WebFetch", "WebSearch"], "web_search": ["WebSearch"],
    "fetch": ["WebFetch"], "notebook": ["NotebookEdit"],
}
#: Claude Code tools that change files, reported as ``file_change`` steps.
_EDIT_TOOLS = {"Edit", "Write", "MultiEdit", "NotebookEdit"}


def claude_tools(names: Any) -> list[str]:
    """Map card tool names (``shell``, ``read_file``...) to Claude Code tools; names that are
    already Claude's (``Bash``, ``Bash(git:*)``) pass through."""
    out: list[str] = []
    for name in names or []:
        for tool in CLAUDE_TOOLS.get(str(name).lower(), [str(name)] if str(name)[:1].isupper()
                                     else []):
            if tool not in out:
                out.append(tool)
    return out


class ClaudeAdapter:
    """``claude -p --output-format stream-json --verbose``: prompt on stdin, run in the
    workspace, tools and permission mode from the card and the settings."""

    spec = CLAUDE

    def command(self, binary: str, settings: Mapping[str, Any], workdir: str,
                git_repo: bool) -> list[str]:
        argv = [binary, "-p", "--output-format", "stream-json", "--verbose",
                "--permission-mode", str(settings.get("permission_mode") or "acceptEdits")]
        if settings.get("model"):
            argv += ["--model", str(settings["model"])]
        allowed = settings.get("allowed_tools") or []
        # Only whole tools are denied: a pattern such as Bash(git:*) among the denials makes
        # Claude Code 2.1 ask approval for every part of a compound command (`a && b`), which
        # non-interactive runs cannot give. Such card rules stay in the prompt.
        denied = [t for t in settings.get("disallowed_tools") or []
                  if "(" not in t and not any(a.split("(")[0] == t for a in allowed)]
        if allowed:
            argv += ["--allowedTools", ",".join(allowed)]
        if denied:
            argv += ["--disallowedTools", ",".join(denied)]
        return argv

    def feed(self, event: Mapping[str, Any], turn: Turn) -> None:
        kind = event.get("type")
        message = event.get("message") if isinstance(event.get("message"), Mapping) else {}
        content = message.get("content") if isinstance(message.get("content"), list) else []
        if kind == "system" and event.get("subtype") == "init":
            turn.session, turn.model = event.get("session_id"), event.get("model")
        elif kind == "assistant":
            turn.model = message.get("model") or turn.model
            for block in content:
                if not isinstance(block, Mapping):
                    continue
                if block.get("type") == "text":
                    text = str(block.get("text") or "")
                    turn.final = text
                    turn.chunk(text if text.endswith("\n") else text + "\n")
                elif block.get("type") == "tool_use":
                    key = str(block.get("id"))
                    turn.started[key] = time.monotonic()
                    turn.pending[key] = (str(block.get("name")), dict(block.get("input") or {}))
        elif kind == "user":
            for block in content:
                if isinstance(block, Mapping) and block.get("type") == "tool_result":
                    self._tool_result(block, turn)
        elif kind == "result":
            turn.finished = True
            turn.usage = claude_usage(event.get("usage"))
            if isinstance(event.get("result"), str) and event["result"]:
                turn.final = event["result"]
            if event.get("is_error") or str(event.get("subtype", "success")) != "success":
                turn.error = (str(event.get("result") or "")
                              or f"claude ended with {event.get('subtype', 'an error')}")

    @staticmethod
    def _tool_result(block: Mapping[str, Any], turn: Turn) -> None:
        key = str(block.get("tool_use_id"))
        name, args = turn.pending.pop(key, ("tool", {}))
        failed = bool(block.get("is_error"))
        body = block.get("content")
        if isinstance(body, list):
            body = "\n".join(str(b.get("text", "")) for b in body if isinstance(b, Mapping))
        step: Step = {"tool": name, "status": "failed" if failed else "completed",
                      "output": _preview(body)}
        if name == "Bash":
            step.update(stepType="command", command=args.get("command"),
                        exitCode=_exit_code(body, failed))
        elif name in _EDIT_TOOLS:
            step.update(stepType="file_change", files=[args.get("file_path")
                                                       or args.get("notebook_path")])
        elif name in ("WebSearch", "WebFetch"):
            step.update(stepType="web_search", query=args.get("query") or args.get("url"))
        else:
            step.update(stepType="tool")
        turn.step(step, key)


def claude_usage(usage: Any) -> dict[str, int]:
    """Claude Code's ``result`` usage (the run's model requests summed) in the Codex adapter's
    terms. Anthropic's ``input_tokens`` counts only the input that was neither read from nor
    written to the prompt cache, so ``tokensIn`` is input + cache reads + cache writes, with
    the reads as ``cachedTokensIn`` and the writes (``cache_creation_input_tokens``) as
    ``cacheWriteTokensIn``. Where the stream splits the writes by lifetime
    (``cache_creation: {ephemeral_5m_input_tokens, ephemeral_1h_input_tokens}``, as Claude
    Code 2.1 prints), the 1-hour part is ``cacheWrite1hTokensIn`` (at most the writes)."""
    usage = usage if isinstance(usage, Mapping) else {}
    split = usage.get("cache_creation")
    split = split if isinstance(split, Mapping) else None
    cached = _count(usage.get("cache_read_input_tokens"))
    if "cache_creation_input_tokens" in usage or split is None:
        written = _count(usage.get("cache_creation_input_tokens"))
    else:  # only the split given: the writes are its sum
        written = (_count(split.get("ephemeral_5m_input_tokens"))
                   + _count(split.get("ephemeral_1h_input_tokens")))
    out = {"tokensIn": _count(usage.get("input_tokens")) + cached + written,
           "tokensOut": _count(usage.get("output_tokens")),
           "cachedTokensIn": cached, "cacheWriteTokensIn": written}
    if split is not None:
        out["cacheWrite1hTokensIn"] = min(_count(split.get("ephemeral_1h_input_tokens")), written)
    return out


def _count(value: Any) -> int:
    """A token count from the stream: a non-negative int (0 for anything else)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return 0
    return max(0, int(value))


def _exit_code(body: Any, failed: bool) -> int:
    """Claude reports a failed Bash call as an error result ("Exit code N ...")."""
    if not failed:
        return 0
    if isinstance(body, str) and body.startswith("Exit code "):
        head = body[len("Exit code "):].split(None, 1)[0]
        if head.lstrip("-").isdigit():
            return int(head)
    return 1


ADAPTERS: dict[str, Adapter] = {"codex-cli": CodexAdapter(), "claude-code": ClaudeAdapter()}

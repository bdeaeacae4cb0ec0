"""Prompts built from an agent card: one text for every model behind the project.

The demo endpoint's providers send :func:`agent_card` as the system prompt and
:func:`task_prompt` as the user message; the coding-agent runtimes (Codex CLI, Claude Code)
take the two joined by :func:`agent_prompt` on their standard input.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def _tools(data: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    detail = (data.get("capabilities") or {}).get("detail") or {}
    tools = detail.get("tools") or {} if isinstance(detail, Mapping) else {}
    if not isinstance(tools, Mapping):
        return [], []
    return ([str(t) for t in tools.get("allowed") or []],
            [str(t) for t in tools.get("restricted") or []])


def agent_card(data: Mapping[str, Any]) -> str:
    """The agent's role, responsibilities, capabilities and tool rules (a system prompt)."""
    agent = data.get("agent") or {}
    classification = agent.get("classification") or {}
    agent_id = agent.get("id", "agent")
    lines = [f"You are {agent.get('name', agent_id)} (agent id {agent_id}), a "
             f"{classification.get('tier') or 'general'} agent in the "
             f"{classification.get('domain', 'general')} domain.",
             str(agent.get("description", "")).strip()]
    primary = (data.get("responsibilities") or {}).get("primary") or []
    if primary:
        lines.append("Your responsibilities:")
        lines.extend(f"- {item}" for item in primary)
    core = (data.get("capabilities") or {}).get("core") or []
    if core:
        lines.append("Core capabilities: " + ", ".join(str(c) for c in core))
    allowed, restricted = _tools(data)
    if allowed:
        lines.append("Tools you may use: " + ", ".join(allowed))
    if restricted:
        lines.append("Tools you must not use: " + ", ".join(restricted))
    lines.append("Answer with a short first line that summarises your result, then the details.")
    return "\n".join(line for line in lines if line)


def task_prompt(task: str, context: list[dict[str, Any]] | None = None) -> str:
    """The task, followed by the results of earlier tasks when there are any."""
    text = task
    if context:
        text += "\n\nResults of earlier tasks (JSON):\n" + json.dumps(
            context, ensure_ascii=False, default=str, indent=1)
    return text


def agent_prompt(data: Mapping[str, Any], task: str,
                 context: list[dict[str, Any]] | None = None) -> str:
    """One prompt for a coding-agent CLI: the agent card, then the task and its context."""
    return f"{agent_card(data)}\n\n# Task\n{task_prompt(task, context)}\n"


def first_line(text: str, limit: int = 200) -> str:
    """A one-line summary: the first non-empty line of ``text``, shortened."""
    for line in text.splitlines():
        line = line.strip().lstrip("#").strip()
        if line:
            return line if len(line) <= limit else line[:limit - 3] + "..."
    return ""

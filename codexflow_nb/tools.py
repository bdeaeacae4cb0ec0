"""Strict tools: which tools a task asks for, and whether its agent may use them.

A task asks for a tool in two ways:

* a ``tools: [...]`` list on the task object;
* an instruction in its text: ``use <tool>`` or ``run <tool>``, where ``<tool>`` is written in
  backticks (``use `shell` ``) or is one of the tool names known to the bundle (``KNOWN_TOOLS``)
  or to the agent itself. Other words after "use"/"run" ("use a cache") are not tools.
"""

from __future__ import annotations

import re

from .aliases import ResolvedAlias
from .plan import PlanTask

KNOWN_TOOLS = frozenset({
    "read_file", "write_file", "grep", "search", "shell", "run_tests", "git", "http_fetch",
    "python", "sql", "browser",
})
_INSTRUCTION = re.compile(r"\b(?:use|run)\s+(?:the\s+)?(`[^`\s]+`|[A-Za-z_][\w-]*)", re.IGNORECASE)


def requested_tools(task: PlanTask, agent_tools: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """Tools a task asks for, in order, without duplicates."""
    found = list(task.tools)
    vocabulary = KNOWN_TOOLS | agent_tools
    for match in _INSTRUCTION.finditer(task.text):
        word = match.group(1)
        if word.startswith("`"):
            found.append(word.strip("`"))
        elif word.lower() in vocabulary:
            found.append(word.lower())
    return list(dict.fromkeys(found))


def tool_violation(task: PlanTask, resolved: ResolvedAlias) -> str | None:
    """Why the task must be rejected under ``--strict-tools``, or None when it may run."""
    allowed = resolved.tools_allowed
    restricted = set(resolved.tools_restricted)
    own = set(allowed or []) | restricted
    for tool in requested_tools(task, frozenset(own)):
        if tool in restricted:
            return f"tool {tool!r} is restricted for agent {resolved.agent_id} (alias {resolved.alias})"
        if allowed is not None and tool not in allowed:
            return (f"tool {tool!r} is not in the allowed tools of agent {resolved.agent_id} "
                    f"(alias {resolved.alias}): {', '.join(allowed) or 'none'}")
    return None

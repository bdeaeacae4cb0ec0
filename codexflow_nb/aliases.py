"""Aliases: nicknames for agents with per-instance overrides, deep-merged into the definition.

Lookup of a name in a task map or plan: the alias map first (the ``--aliases`` file, or the
defaults when none is given), then the agent names of the bundle (key, id, path name such as
``core/reviewer``, ``domain/id``). An alias always wins over an agent id of the same name; when
one of the *default* aliases does that (``reviewer`` means ``code-analyzer``, as in the Node
tool, while a bundle may hold an agent ``reviewer``), the resolved alias carries a ``warning``
line and :meth:`Aliases.hidden_agents` lists it.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError, UnknownAgentError
from .registry import AgentDef, Registry, did_you_mean, read_yaml_file, validate_agent_data

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # always fullmatch

DEFAULT_ALIASES: dict[str, dict[str, Any]] = {
    "reviewer": {"id": "code-analyzer", "overrides": {"runtime": {"autonomy_level": 0.7}}},
    "reviewer2": {"id": "code-analyzer", "overrides": {"runtime": {"autonomy_level": 0.9}}},
    "architect": {"id": "system-architect", "overrides": {}},
}


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Return a new dict: mappings merge recursively; lists and scalars in ``overrides`` replace."""
    merged: dict[str, Any] = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def check_safe_name(name: str, what: str) -> str | None:
    """A problem line when ``name`` cannot be used as a directory name under ``.runs/``."""
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name) or name in {".", ".."}:
        return f"{what} {name!r} is not a safe name (letters, digits, '.', '_', '-'; no '/' or '..')"
    return None


@dataclass(frozen=True)
class ResolvedAlias:
    """An alias bound to an agent, with the effective (merged) definition."""

    alias: str
    agent: AgentDef
    effective: dict[str, Any]
    #: Set when a default alias hides an agent of the same name (see Aliases.hidden_agents).
    warning: str | None = field(default=None, compare=False)

    @property
    def agent_id(self) -> str:
        return self.agent.key

    @property
    def max_parallel_tasks(self) -> int:
        return int(self.effective["runtime"]["concurrency"]["max_parallel_tasks"])

    @property
    def timeout_ms(self) -> int | None:
        value = self.effective["runtime"].get("timeout_ms")
        return int(value) if value is not None else None

    @property
    def tools_allowed(self) -> list[str] | None:
        tools = ((self.effective.get("capabilities") or {}).get("detail") or {}).get("tools") or {}
        allowed = tools.get("allowed")
        return list(allowed) if allowed is not None else None

    @property
    def tools_restricted(self) -> list[str]:
        tools = ((self.effective.get("capabilities") or {}).get("detail") or {}).get("tools") or {}
        return list(tools.get("restricted") or [])

    @property
    def sharing_policy(self) -> dict[str, Any]:
        return dict((self.effective.get("memory") or {}).get("sharing_policy") or {})


class Aliases:
    """An alias map ``{alias: {id, overrides}}``."""

    def __init__(self, mapping: Mapping[str, Any] | None = None, source: str = "aliases") -> None:
        self.source = source
        #: True for the built-in defaults (no alias map given).
        #: The names that still mean the default aliases (not replaced by the user's map).
        self.default_names: set[str] = set(DEFAULT_ALIASES) if mapping is None else set()
        raw = DEFAULT_ALIASES if mapping is None else mapping
        problems = []
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{source}: an alias map must be a mapping of alias -> {{id, overrides}}")
        self.entries: dict[str, dict[str, Any]] = {}
        for alias, spec in raw.items():
            bad = check_safe_name(alias, "alias")
            if bad:
                problems.append(f"{source}: {bad}")
                continue
            if isinstance(spec, str):
                spec = {"id": spec}
            if not isinstance(spec, Mapping) or not isinstance(spec.get("id"), str):
                problems.append(f"{source}: {alias}: expected {{id: <agent id>, overrides: {{...}}}}")
                continue
            overrides = spec.get("overrides") or {}
            if not isinstance(overrides, Mapping):
                problems.append(f"{source}: {alias}.overrides: expected a mapping")
                continue
            self.entries[alias] = {"id": spec["id"], "overrides": dict(overrides)}
        if problems:
            raise ConfigError(problems)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, with_defaults: bool = False) -> Aliases:
        """Read an alias map from a YAML or JSON file. ``with_defaults``: the file adds to the
        default aliases and overrides them by name (``codex-flow run --aliases FILE``)."""
        data = read_yaml_file(Path(path))
        loaded = cls(data if data is not None else {}, source=str(path))
        if with_defaults:
            merged = cls()
            merged.entries.update(loaded.entries)
            merged.default_names -= set(loaded.entries)
            merged.source = loaded.source
            return merged
        return loaded

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return copy.deepcopy(self.entries)

    def __contains__(self, alias: object) -> bool:
        return alias in self.entries

    def __iter__(self):  # noqa: ANN204 - plain iteration over alias names
        return iter(self.entries)

    def hidden_agents(self, registry: Registry, names: Any = None) -> list[str]:
        """One warning line per default alias (of ``names``, default all) that has the name of an
        agent of ``registry`` it does not point at: in a task map that name means the alias."""
        if not self.default_names:
            return []
        lines = []
        for alias in self.entries if names is None else names:
            line = self._hidden(alias, registry)
            if line:
                lines.append(line)
        return lines

    def _hidden(self, alias: str, registry: Registry) -> str | None:
        spec = self.entries.get(alias)
        agent = (registry.find(alias) if alias in self.default_names and spec is not None
                 else None)
        if agent is None or spec is None:
            return None
        target = registry.find(spec["id"])
        if target is not None and target.key == agent.key:
            return None
        return (f"{alias!r} is a default alias for {spec['id']} (as in the Node tool), so a task "
                f"map's {alias!r} does not run this bundle's agent {alias!r} ({agent.rel}); to "
                f"run that agent, give it an alias of its own in --aliases, or pass "
                f"--no-default-aliases")

    def resolve(self, name: str, registry: Registry) -> ResolvedAlias:
        """Resolve an alias, or a bare agent name used as its own alias (see the module doc)."""
        if name in self.entries:
            spec = self.entries[name]
            try:
                agent = registry.get(spec["id"])
            except UnknownAgentError as exc:  # name the alias map that holds the bad id
                raise UnknownAgentError(f"{self.source}: {name}.id: {exc}") from None
            effective = deep_merge(agent.data, spec["overrides"])
        else:
            agent = registry.find(name)
            if agent is None:
                usable = [n for n in registry.names() if "/" not in n]  # task-map names
                hint = did_you_mean(name, [*self.entries, *usable])
                raise ConfigError(f"{name!r} is neither an alias ({', '.join(self.entries) or 'none'}) "
                                  f"nor an agent id{hint}")
            effective = copy.deepcopy(agent.data)
        if name in self.entries:  # the merged definition must pass the agent-file schema
            problems = validate_agent_data(effective, f"{self.source}: {name}")
            if problems:
                raise ConfigError(problems)
        return ResolvedAlias(name, agent, effective, self._hidden(name, registry))

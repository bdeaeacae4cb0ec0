"""AgentPicker: search and filter the agent bundle, read an agent's card, add it as an alias."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from html import escape
from typing import Any

import ipywidgets as w

from ..registry import AgentDef, Registry, load_registry
from .lifecycle import Composed
from .render import static_bundle

ALL = "(all)"


def filter_agents(agents: Iterable[AgentDef], query: str = "", domain: str = ALL,
                  tier: str = ALL) -> list[AgentDef]:
    """Agents matching every word of ``query`` (id, name, description, keywords, capabilities)
    in the given domain and tier."""
    words = query.lower().split()
    out = []
    for a in agents:
        if domain not in (ALL, "", None) and a.domain != domain:
            continue
        if tier not in (ALL, "", None) and a.tier != tier:
            continue
        caps = (a.data.get("capabilities") or {}).get("core") or []
        hay = " ".join([a.key, a.name, a.description, *a.keywords, *map(str, caps)]).lower()
        if all(word in hay for word in words):
            out.append(a)
    return out


def agent_card(agent: AgentDef) -> str:
    """HTML card: description, responsibilities, limit and tools of one agent."""
    data = agent.data
    primary = (data.get("responsibilities") or {}).get("primary") or []
    tools = ((data.get("capabilities") or {}).get("detail") or {}).get("tools") or {}
    allowed = ", ".join(map(str, tools.get("allowed") or [])) or "any"
    restricted = ", ".join(map(str, tools.get("restricted") or [])) or "none"
    timeout = f"{agent.timeout_ms} ms" if agent.timeout_ms else "none"
    items = "".join(f"<li>{escape(str(r))}</li>" for r in primary)
    return (f"<b>{escape(agent.name)}</b> <code>{escape(agent.key)}</code> · {escape(agent.domain)}"
            f" · {escape(agent.tier)}<p>{escape(agent.description)}</p>"
            f"<p><b>limit</b> {agent.max_parallel_tasks} parallel task(s) · <b>timeout</b> "
            f"{timeout} · <b>autonomy</b> {agent.autonomy_level if agent.autonomy_level is not None else '-'}</p>"
            f"<p><b>tools</b> allowed: {escape(allowed)} · restricted: {escape(restricted)}</p>"
            f"<b>responsibilities</b><ul>{items}</ul>")


class AgentPicker(Composed, w.VBox):
    """Search box, domain and tier filters, a list of agents and the selected agent's card.

    "Add as alias" calls ``on_add(alias, agent_id)`` (the dashboard connects it to the
    alias editor); the alias name defaults to the agent id.
    """

    def __init__(self, registry: Registry | None = None, *,
                 on_add: Callable[[str, str], str | None] | None = None) -> None:
        self.registry = registry or load_registry()
        self.on_add = on_add
        self.added: list[tuple[str, str]] = []
        agents = list(self.registry)
        self.search = w.Text(placeholder="search agents (words in id, name, description, keywords)",
                             continuous_update=True, layout=w.Layout(width="60%"))
        self.domain = w.Dropdown(options=[ALL, *self.registry.domains], value=ALL, description="domain")
        self.tier = w.Dropdown(options=[ALL, *sorted({a.tier for a in agents})], value=ALL,
                               description="tier")
        self.list = w.Select(options=[], rows=10, layout=w.Layout(width="40%"))
        self.card = w.HTML(layout=w.Layout(width="60%"))
        self.alias_name = w.Text(placeholder="alias (default: the agent id)", description="alias")
        self.add_button = w.Button(description="Add as alias", icon="plus", button_style="primary")
        self.message = w.HTML()
        for control in (self.search, self.domain, self.tier):
            control.observe(lambda _change: self.refresh(), names="value")
        self.list.observe(lambda _change: self._show_card(), names="value")
        self.add_button.on_click(lambda _b: self.add_selected())
        super().__init__([w.HBox([self.search, self.domain, self.tier]),
                          w.HBox([self.list, self.card]),
                          w.HBox([self.alias_name, self.add_button]), self.message])
        self.refresh()

    @property
    def matches(self) -> list[str]:
        """Agent ids currently listed."""
        return [value for _label, value in self.list.options]

    @property
    def selected(self) -> AgentDef | None:
        return self.registry.find(self.list.value) if self.list.value else None

    def refresh(self) -> None:
        """Re-apply search and filters, keeping the selection when it still matches."""
        found = filter_agents(self.registry, self.search.value, self.domain.value, self.tier.value)
        keep = self.list.value
        self.list.options = [(f"{a.key} — {a.name}", a.key) for a in found]
        keys = [a.key for a in found]
        self.list.value = keep if keep in keys else (keys[0] if keys else None)
        if not found:
            self.card.value = "<i>no agent matches</i>"
        self._show_card()

    def select(self, agent_id: str) -> None:
        """Select an agent by id (clears filters that would hide it)."""
        if agent_id not in self.matches:
            self.search.value, self.domain.value, self.tier.value = "", ALL, ALL
        agent = self.registry.get(agent_id)
        self.list.value = agent.key

    def _show_card(self) -> None:
        agent = self.selected
        if agent is not None:
            self.card.value = agent_card(agent)

    def add_selected(self) -> str | None:
        """Add the selected agent as an alias; returns the alias name used (None if nothing)."""
        agent = self.selected
        if agent is None:
            self.message.value = "<span style='color:#e53935'>select an agent first</span>"
            return None
        alias = self.alias_name.value.strip() or agent.id
        if self.on_add is not None:
            alias = self.on_add(alias, agent.key) or alias
        self.added.append((alias, agent.key))
        self.alias_name.value = ""
        self.message.value = f"added alias <code>{escape(alias)}</code> → <code>{escape(agent.key)}</code>"
        return alias

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        # a static copy (text/html) for front ends without widgets: GitHub, nbconvert, ...
        return static_bundle(self, super()._repr_mimebundle_(**kwargs))

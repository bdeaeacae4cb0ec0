"""Context passing between tasks, governed by each publisher's ``memory.sharing_policy``.

* A task receives, for each task it depends on, ``{taskId, key, alias, agentId, summary}`` and,
  when the publisher's ``share_with`` names the reader (alias or agent id) or ``*``, its
  ``output`` with every ``redact`` key removed (at any depth).
* Tasks may also publish notes on topics (``ContextBus.publish``); readers see only the notes
  whose publisher shares with them. Every note is a ``context_published`` event.
* Code running inside a task (a runtime's ``run``) uses the module functions :func:`publish`
  and :func:`read`, which act as the current task's alias.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .aliases import ResolvedAlias
    from .engine import Engine, _Node


def redact(value: Any, keys: Iterable[str]) -> Any:
    """A copy of ``value`` without the given keys in any nested mapping."""
    drop = set(keys)
    if not drop:
        return value
    if isinstance(value, dict):
        return {k: redact(v, drop) for k, v in value.items() if k not in drop}
    if isinstance(value, list):
        return [redact(v, drop) for v in value]
    return value


def shares_with(publisher: ResolvedAlias, reader: ResolvedAlias) -> bool:
    """True when the publisher's policy lets the reader see its outputs."""
    targets = publisher.sharing_policy.get("share_with") or []
    return "*" in targets or reader.alias in targets or reader.agent.id in targets \
        or reader.agent_id in targets or publisher.alias == reader.alias


def build_context(engine: Engine, node: _Node) -> list[dict[str, Any]]:
    """The context a task receives from the tasks it depends on."""
    items: list[dict[str, Any]] = []
    for key in node.deps:
        dep = engine.nodes[key]
        r = dep.result
        if r.status != "completed":
            continue
        item: dict[str, Any] = {"taskId": r.task_id, "key": r.key, "alias": r.alias,
                                "agentId": r.agent_id, "summary": r.summary}
        if shares_with(dep.resolved, node.resolved):
            policy = dep.resolved.sharing_policy
            item["output"] = redact(dep.output, policy.get("redact") or [])
        items.append(item)
    return items


class ContextBus:
    """Topic notes shared between the tasks of one run."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._notes: list[tuple[str, str, Any]] = []  # (topic, publisher alias, data)

    def publish(self, alias: str, topic: str, data: Any, *, key: str | None = None) -> None:
        """Publish ``data`` under ``topic`` as ``alias`` (from task ``key``, when known); the
        event and every reader get it with the publisher's ``redact`` keys removed."""
        self._notes.append((topic, alias, data))
        publisher = self._engine.resolved[alias]
        self._engine.emit("context_published", None, alias=alias, agentId=publisher.agent_id,
                          topic=topic, data=redact(data, publisher.sharing_policy.get("redact") or []),
                          shareWith=list(publisher.sharing_policy.get("share_with") or []),
                          **({"key": key} if key else {}))

    def read(self, alias: str, topic: str | None = None) -> list[dict[str, Any]]:
        """Notes ``alias`` may read (optionally one topic), oldest first, redacted."""
        reader = self._engine.resolved[alias]
        out = []
        for t, pub_alias, data in self._notes:
            if topic is not None and t != topic:
                continue
            publisher = self._engine.resolved[pub_alias]
            if shares_with(publisher, reader):
                out.append({"topic": t, "alias": pub_alias,
                            "data": redact(data, publisher.sharing_policy.get("redact") or [])})
        return out

    subscribe = read


_CURRENT: ContextVar[tuple[ContextBus, str, str] | None] = ContextVar("codexflow_task", default=None)


def enter_task(bus: ContextBus, alias: str, key: str) -> Token[tuple[ContextBus, str, str] | None]:
    """Mark the running asyncio task as working on ``key`` (the engine does this)."""
    return _CURRENT.set((bus, alias, key))


def leave_task(token: Token[tuple[ContextBus, str, str] | None]) -> None:
    _CURRENT.reset(token)


def _current() -> tuple[ContextBus, str, str]:
    current = _CURRENT.get()
    if current is None:
        raise RuntimeError("publish()/read() work only inside a running task")
    return current


def publish(topic: str, data: Any) -> None:
    """Publish a note from inside a running task, as that task's alias."""
    bus, alias, key = _current()
    bus.publish(alias, topic, data, key=key)


def read(topic: str | None = None) -> list[dict[str, Any]]:
    """Notes the running task's alias may read (one topic, or all), redacted, oldest first."""
    bus, alias, _ = _current()
    return bus.read(alias, topic)


subscribe = read

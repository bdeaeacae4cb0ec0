"""Plans: phases of tasks with dependencies (a DAG), and their validation."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .aliases import Aliases, ResolvedAlias, check_safe_name
from .errors import ConfigError, PlanError
from .registry import Registry
from .tasks import TaskItem, TaskMap, coerce_task_map, parse_text, read_source

_UNSET: tuple[str, ...] = ("\0unset",)


@dataclass(frozen=True, slots=True)
class PlanTask:
    """One task in a plan. ``key`` is its plan-level id, used by ``dependsOn``."""

    key: str
    alias: str
    text: str
    phase: int = 0
    depends_on: tuple[str, ...] = _UNSET
    meta: dict[str, Any] = field(default_factory=dict)
    tools: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.key, "alias": self.alias, "task": self.text}
        if self.depends_on is not _UNSET:
            out["dependsOn"] = list(self.depends_on)
        if self.meta:
            out["meta"] = self.meta
        if self.tools:
            out["tools"] = list(self.tools)
        return out


@dataclass(frozen=True)
class Phase:
    name: str
    tasks: tuple[PlanTask, ...]
    mode: str = "parallel"  # or "sequential"


@dataclass
class Plan:
    """A list of phases. Without an explicit ``dependsOn``, a task waits for the whole previous
    phase; in a sequential phase each task also waits for the one before it."""

    phases: list[Phase]
    source: str = "plan"
    #: Events the planner wants in the run's log (e.g. ``decomposer_invalid``); the engine
    #: emits them right after ``run_started``.
    events: list[dict[str, Any]] = field(default_factory=list, repr=False, compare=False)
    #: ``--revise-plan``: ``async reviser(engine, phase_index) -> PlanRevision | None``, called
    #: when every task of a phase has ended (see ``planner.make_reviser``).
    reviser: Callable[[Any, int], Awaitable[PlanRevision | None]] | None = field(
        default=None, repr=False, compare=False)

    @property
    def tasks(self) -> list[PlanTask]:
        return [t for p in self.phases for t in p.tasks]

    def __len__(self) -> int:
        return sum(len(p.tasks) for p in self.phases)

    @classmethod
    def from_task_map(cls, tasks: TaskMap | Mapping[str, Any], source: str = "tasks") -> Plan:
        """One parallel phase; tasks keep their explicit ``dependsOn``."""
        tmap = coerce_task_map(tasks, source)
        used = {item.id for items in tmap.values() for item in items if item.id}
        plan_tasks = []
        for alias, items in tmap.items():
            for n, item in enumerate(items, 1):
                key = item.id or _fresh_key(f"{alias}-{n}", used)
                plan_tasks.append(_task_from_item(item, key, alias, 0, explicit_deps=True))
        return cls([Phase("main", tuple(plan_tasks))], source)

    @classmethod
    def from_data(cls, data: Any, source: str = "plan") -> Plan:
        """Build a plan from parsed YAML/JSON: ``{phases: [{name, mode, tasks: [...]}]}`` or a list."""
        phases_raw = data.get("phases") if isinstance(data, Mapping) else data
        if not isinstance(phases_raw, list):
            raise PlanError(f"{source}: a plan must be an object with 'phases' (a list), "
                            f"got {type(data).__name__}")
        problems: list[str] = []
        used = {t.get("id") for p in phases_raw if isinstance(p, Mapping)
                for t in (p.get("tasks") or []) if isinstance(t, Mapping) and isinstance(t.get("id"), str)}
        phases: list[Phase] = []
        counters: dict[str, int] = {}
        for i, raw in enumerate(phases_raw):
            where = f"{source}: phases[{i}]"
            if not isinstance(raw, Mapping) or not isinstance(raw.get("tasks"), list):
                problems.append(f"{where}: expected an object with 'tasks' (a list)")
                continue
            mode = raw.get("mode", "parallel")
            if mode not in ("parallel", "sequential"):
                problems.append(f"{where}.mode: must be 'parallel' or 'sequential', got {mode!r}")
            tasks = []
            for j, t in enumerate(raw["tasks"]):
                tw = f"{where}.tasks[{j}]"
                if not isinstance(t, Mapping) or not isinstance(t.get("alias"), str):
                    problems.append(f"{tw}: expected an object with 'alias' and 'task'")
                    continue
                bad_alias = check_safe_name(t["alias"], "alias")
                if bad_alias:
                    problems.append(f"{tw}: {bad_alias}")
                    continue
                tm = parse_task_map_item(t, tw, problems)
                if tm is None:
                    continue
                counters[t["alias"]] = counters.get(t["alias"], 0) + 1
                key = tm.id or _fresh_key(f"{t['alias']}-{counters[t['alias']]}", used)
                tasks.append(_task_from_item(tm, key, t["alias"], i,
                                             explicit_deps="dependsOn" in t))
            phases.append(Phase(str(raw.get("name") or f"phase-{i + 1}"), tuple(tasks), mode))
        if problems:
            raise PlanError(problems)
        return cls(phases, source)

    @classmethod
    def from_file(cls, path: str) -> Plan:
        source = "<stdin>" if path == "-" else path
        return cls.from_data(parse_text(read_source(path), source), source)

    def to_dict(self) -> dict[str, Any]:
        return {"phases": [{"name": p.name, "mode": p.mode, "tasks": [t.to_dict() for t in p.tasks]}
                           for p in self.phases]}

    def edges(self) -> dict[str, tuple[str, ...]]:
        """Effective dependencies of every task (explicit, or the implicit phase rules)."""
        return dict(self._edge_list())

    def _edge_list(self) -> list[tuple[str, tuple[str, ...]]]:
        """Like :meth:`edges`, one entry per task even when ids repeat (for validation)."""
        deps: list[tuple[str, tuple[str, ...]]] = []
        previous: tuple[str, ...] = ()
        for phase in self.phases:
            before: str | None = None
            for t in phase.tasks:
                own = previous if t.depends_on is _UNSET else t.depends_on
                if phase.mode == "sequential" and before is not None and before not in own:
                    own = (*own, before)
                deps.append((t.key, own))
                before = t.key
            if phase.tasks:
                previous = tuple(t.key for t in phase.tasks)
        return deps

    def later_phase_dependencies(self) -> list[str]:
        """Problems for tasks that depend on a task of a later phase. Fine in a normal run, but
        ``--revise-plan`` holds each phase until the ones before it have ended."""
        phase_of = {t.key: i for i, p in enumerate(self.phases) for t in p.tasks}
        edges = self.edges()
        return [f"{self.source}: task {t.key!r} (phase {i + 1}) depends on {d!r} of a later "
                f"phase (phase {phase_of[d] + 1}); with --revise-plan a task may only depend on "
                "tasks of its own or earlier phases"
                for i, p in enumerate(self.phases) for t in p.tasks
                for d in edges.get(t.key, ()) if phase_of.get(d, -1) > i]

    def validate(self, registry: Registry, aliases: Aliases) -> dict[str, ResolvedAlias]:
        """Check everything before a run; return the resolved aliases. Raises PlanError."""
        problems: list[str] = []
        if not self.tasks:
            raise PlanError(f"{self.source}: the plan is empty")
        seen: set[str] = set()
        duplicates: set[str] = set()  # a later phase's implicit edge to a twin is no self-loop
        for t in self.tasks:
            if t.key in seen:
                problems.append(f"{self.source}: duplicate task id {t.key!r}")
                duplicates.add(t.key)
            seen.add(t.key)
        resolved: dict[str, ResolvedAlias] = {}
        for alias in dict.fromkeys(t.alias for t in self.tasks):
            try:
                resolved[alias] = aliases.resolve(alias, registry)
            except ConfigError as exc:
                problems.extend(f"{self.source}: {p}" for p in exc.problems)
        deps = self.edges()
        for key, ds in self._edge_list():
            for d in ds:
                if d == key and key not in duplicates:
                    problems.append(f"{self.source}: task {key!r} depends on itself")
                elif d not in deps:
                    problems.append(f"{self.source}: task {key!r} depends on unknown task {d!r}")
        if not problems:
            cycle = find_cycle(deps)
            if cycle:
                problems.append(f"{self.source}: dependency cycle: {' -> '.join(cycle)}")
        if problems:
            raise PlanError(problems)
        return resolved


@dataclass
class PlanRevision:
    """A validated revision: the whole new plan (finished phases unchanged) and its aliases."""

    plan: Plan
    resolved: dict[str, ResolvedAlias]
    reason: str = ""


def parse_task_map_item(t: Mapping[str, Any], where: str, problems: list[str]) -> TaskItem | None:
    from .tasks import _parse_item  # one parser for task objects everywhere

    return _parse_item(dict(t), where, problems)


def _fresh_key(candidate: str, used: set[Any]) -> str:
    key, n = candidate, 1
    while key in used:
        n += 1
        key = f"{candidate}.{n}"
    used.add(key)
    return key


def _task_from_item(item: TaskItem, key: str, alias: str, phase: int, explicit_deps: bool) -> PlanTask:
    bad = check_safe_name(key, "task id")
    if bad:
        raise PlanError(bad)
    deps = item.depends_on if (explicit_deps or item.depends_on) else _UNSET
    return PlanTask(key, alias, item.text, phase, deps, item.meta, item.tools)


def find_cycle(deps: Mapping[str, tuple[str, ...]]) -> list[str] | None:
    """A dependency cycle as a list of task ids (first repeated at the end), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []
    for start in deps:
        if state.get(start):
            continue
        work = [(start, iter(deps.get(start, ())))]
        state[start], _ = 1, stack.append(start)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is None:
                work.pop()
                stack.pop()
                state[node] = 2
            elif state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            elif not state.get(nxt) and nxt in deps:
                state[nxt] = 1
                stack.append(nxt)
                work.append((nxt, iter(deps.get(nxt, ()))))
    return None


def with_phase(task: PlanTask, phase: int) -> PlanTask:
    return replace(task, phase=phase)

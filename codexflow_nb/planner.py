"""The planner: pick agents for a goal, turn the goal into a phased plan, revise it between phases.

* Selector (``heuristic``): scores every agent by its triggers (keywords, regex rules), and by
  the router's ranker (:mod:`codexflow_nb.ranking`: BM25 over every agent card, the same one
  ``--route`` and ``codex-flow route`` use); returns a shortlist with reasons.
* Decomposer ``heuristic``: plan & design -> build (in parallel) -> test & validate.
* Decomposer ``llm``: asks the endpoint's ``planner`` agent (the codex runtime contract) for a JSON
  plan and validates it. A reply that is not a valid plan is logged as ``decomposer_invalid`` and
  the heuristic plan is used instead, loudly: a :class:`PlannerWarning`, ``Planned.warnings``, and
  the event in the run's log.
* Revision (``--revise-plan``): after each phase, :func:`make_reviser` revises the phases left.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .aliases import Aliases, ResolvedAlias
from .context import redact, shares_with
from .errors import ConfigError
from .plan import Phase, Plan, PlanRevision, PlanTask, _fresh_key
from .ranking import rank
from .registry import AgentDef, Registry
from .routing import route_text
from .runtimes.base import Reply, Runtime, RuntimeCall, RuntimeFailure

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger(__name__)

DESIGN_AGENTS = {"system-architect", "api-designer", "database-architect", "researcher"}
VALIDATE_AGENTS = {"tester", "unit-tester", "e2e-tester", "reviewer", "code-analyzer",
                   "security-auditor", "performance-analyzer"}
MAX_FOLLOW_UPS = 2  # per heuristic revision, so a chatty output cannot flood the plan
_STOPWORDS = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "has", "have", "in", "into",
    "is", "it", "its", "of", "on", "or", "our", "that", "the", "their", "them", "then", "this",
    "to", "was", "we", "will", "with", "you", "your", "all", "any", "can", "do", "does", "should",
    "would", "add", "make", "new", "use", "using", "via", "when", "where", "which", "who", "how",
    "what", "each", "per", "these", "those", "than", "also"})
_WORD = re.compile(r"[a-z][a-z0-9]+")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")  # characters an alias name cannot hold


def words(text: str) -> set[str]:
    """Content words of ``text``: lowercase, 3+ letters, no stop words, a plural 's' dropped."""
    out = set()
    for w in _WORD.findall(text.lower()):
        if len(w) < 3 or w in _STOPWORDS:
            continue
        out.add(w[:-1] if len(w) > 4 and w.endswith("s") and not w.endswith("ss") else w)
    return out


# -- aliases ----------------------------------------------------------------------------------

class AliasBook:
    """Chooses the alias a planned task runs under, adding one only when it must.

    Prefers an alias bound to the agent without overrides (``architect``), then the agent's own
    id (``coder``). When an alias of that name points elsewhere (the default ``reviewer`` alias
    is ``code-analyzer``), it adds ``<id>-agent`` (``reviewer-agent``), then ``<id>-agent-2``,
    ``-3``; ``<id>-2`` would read like the default ``reviewer2``, another agent. An agent whose
    id several files share is named by its path (``core/reviewer``: ``core-reviewer``). A name
    it adds is never one that another alias or agent already answers to.
    """

    def __init__(self, registry: Registry, aliases: Aliases | None = None) -> None:
        self.registry = registry
        self.base = aliases if aliases is not None else Aliases()
        self.extra: dict[str, dict[str, Any]] = {}

    def alias_for(self, agent_key: str) -> str:
        agent = self.registry.get(agent_key)
        for name, spec in {**self.base.entries, **self.extra}.items():
            found = self.registry.find(spec["id"])
            if found is not None and found.key == agent.key and not spec["overrides"]:
                return name
        if self._free(agent.key, agent):  # the agent's own name: no alias needed
            return agent.key
        stem = _UNSAFE.sub("-", agent.key).strip("-.") or "agent"
        candidates = [stem] if "/" in agent.key else []
        candidates += [f"{stem}-agent", *(f"{stem}-agent-{n}" for n in range(2, 1000))]
        name = next(c for c in candidates if self._free(c, agent))
        self.extra[name] = {"id": agent.key, "overrides": {}}
        return name

    def _free(self, name: str, agent: AgentDef) -> bool:
        """True when ``name`` is no alias yet and no other agent answers to it."""
        if name in self.base.entries or name in self.extra or "/" in name:
            return False
        found = self.registry.find(name)
        return found is None or found.key == agent.key

    def aliases(self) -> Aliases:
        """The alias map to run the plan with: the given one plus any added aliases."""
        if not self.extra:
            return self.base
        return Aliases({**self.base.to_dict(), **self.extra}, source=self.base.source)


# -- selector ---------------------------------------------------------------------------------

@dataclass
class Candidate:
    """An agent picked for a goal, with its score and the reasons behind it."""

    agent: str
    score: float
    reasons: list[str] = field(default_factory=list)

    def why(self) -> str:
        return "; ".join(self.reasons)


#: Points the ranker's best card gets in the selector (the others in proportion to their score).
RANKER_POINTS = 4.0
#: Where a goal splits into parts that the selector also ranks on their own: punctuation, and
#: "with", "then", "plus" between clauses ("Add invoice export to the billing API, with tests").
_CLAUSES = re.compile(r"[,;:]+|\s(?:and\s+then|then|with|plus)\s", re.IGNORECASE)


def goal_parts(goal: str) -> list[str]:
    """The goal, then its clauses when it has more than one."""
    clauses = [c.strip() for c in _CLAUSES.split(goal) if c and c.strip()]
    return [goal, *clauses] if len(clauses) > 1 else [goal]


def select_agents(goal: str, registry: Registry, *, limit: int = 6,
                  triggers: dict[str, Any] | None = None) -> list[Candidate]:
    """Shortlist agents for ``goal``: trigger keyword 3 points, regex 1 + priority/2, and the
    ranker's score scaled so the best card gets RANKER_POINTS, for the whole goal and for each
    of its clauses (:func:`goal_parts`; an agent keeps its best); each reason names the card
    fields that share words with the goal (``description mentions ...``)."""
    scores: dict[str, float] = {}
    reasons: dict[str, list[str]] = {}

    def add(agent: str, points: float, reason: str) -> None:
        scores[agent] = scores.get(agent, 0.0) + points
        reasons.setdefault(agent, []).append(reason)

    route = route_text(goal, registry, triggers=triggers)
    for note in route.notes:  # a skipped rule: its agents may be missing from the shortlist
        warnings.warn(f"--goal: {note}", PlannerWarning, stacklevel=2)
    for m in route.trace:
        if m.via == "keyword":
            add(m.agent, 3.0, f"trigger keyword {m.rule!r}")
        else:
            add(m.agent, 1.0 + (m.priority or 0) / 2, f"trigger regex (priority {m.priority}) "
                                                       f"matched {m.matched!r}")
    # the whole goal and each of its clauses are ranked; an agent takes the points of the part
    # that ranks it highest, so each part of a goal brings its own best agents
    ranked_by: dict[str, tuple[float, str]] = {}
    for part in goal_parts(goal):
        ranking = rank(part, registry)
        if not (ranking.informative and ranking.scored):
            continue
        best = ranking.scored[0].score
        for s in ranking.scored:
            points = RANKER_POINTS * s.score / best
            if points <= ranked_by.get(s.agent, (0.0, ""))[0]:
                continue
            in_desc = list(s.fields.get("description", ()))
            elsewhere = [w for w in s.words if w not in in_desc]
            why = ([f"description mentions {', '.join(in_desc)}"] if in_desc else []) \
                + ([f"card mentions {', '.join(elsewhere)}"] if elsewhere else [])
            where = "" if part == goal else f"for {part!r}: "
            ranked_by[s.agent] = (points, where + "; ".join(why)
                                  + f" (ranker score {s.score:.2f})")
    for agent, (points, reason) in ranked_by.items():
        add(agent, points, reason)
    ranked = sorted(scores, key=lambda a: (-scores[a], a))
    return [Candidate(a, scores[a], reasons[a]) for a in ranked[:limit]]


# -- heuristic decomposer ---------------------------------------------------------------------

@dataclass
class Planned:
    """A plan for a goal, the alias map to run it with, and any warnings to show the user."""

    plan: Plan
    aliases: Aliases
    shortlist: list[Candidate] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _focus(agent: AgentDef) -> str:
    core = (agent.data.get("capabilities") or {}).get("core") or []
    return ", ".join(str(c).replace("-", " ") for c in core[:2]) or agent.name


def decompose_heuristic(goal: str, registry: Registry, aliases: Aliases | None = None, *,
                        shortlist: list[Candidate] | None = None) -> Planned:
    """Three phases: plan & design, build (parallel), test & validate, from the shortlist."""
    goal = goal.strip()
    if not goal:
        raise ConfigError("--goal: the goal is empty")
    book = AliasBook(registry, aliases)
    picks = shortlist if shortlist is not None else select_agents(goal, registry)
    why = {c.agent: f"selector: {c.why()}" for c in picks}
    design = [c.agent for c in picks if registry.get(c.agent).id in DESIGN_AGENTS]
    validate = [c.agent for c in picks if registry.get(c.agent).id in VALIDATE_AGENTS]
    build = [c.agent for c in picks if c.agent not in design and c.agent not in validate
             and registry.get(c.agent).id != "planner"][:4]
    used: set[str] = set()

    def task(stage: str, agent_key: str, text: str, phase: int, default: str) -> PlanTask:
        alias = book.alias_for(agent_key)
        key = _fresh_key(f"{stage}-{alias}", used)
        return PlanTask(key, alias, text, phase, meta={"routedBy": why.get(agent_key, default)})

    plan_tasks = [task("plan", "planner", "Break this goal into concrete tasks, each with a "
                       f"definition of done, and say which can run in parallel: {goal}", 0,
                       "the planner always opens a goal")]
    plan_tasks += [task("design", a, f"Design the solution ({_focus(registry.get(a))}) for: {goal}",
                        0, "") for a in design]
    build_tasks = [task("build", a, f"Build your part ({_focus(registry.get(a))}) of: {goal}", 1, "")
                   for a in build or ["coder"]]
    if not build:
        build_tasks[0].meta["routedBy"] = "no build agent matched the goal: the generalist coder"
    checks = validate if any(registry.get(a).id in {"tester", "unit-tester", "e2e-tester"}
                             for a in validate) else ["tester", *validate]
    if not any(registry.get(a).id in {"reviewer", "code-analyzer"} for a in checks):
        checks.append("reviewer")
    check_tasks = []
    for a in dict.fromkeys(checks):
        agent = registry.get(a)
        verb = "Review the changes made" if agent.id in {"reviewer", "code-analyzer"} else \
            f"Test and validate ({_focus(agent)}) the result"
        check_tasks.append(task("check", a, f"{verb} for: {goal}", 2,
                                "every plan ends with tests and a review"))
    plan = Plan([Phase("plan & design", tuple(plan_tasks)), Phase("build", tuple(build_tasks)),
                 Phase("test & validate", tuple(check_tasks))], source="planner (heuristic)")
    return Planned(plan, book.aliases(), picks)


# -- llm decomposer ---------------------------------------------------------------------------

PLAN_FORMAT = ('{"phases": [{"name": "...", "mode": "parallel" or "sequential", "tasks": '
               '[{"id": "...", "alias": "...", "task": "...", "dependsOn": ["<task id>", ...]}]}]}')


class PlannerWarning(UserWarning):
    """The planner's output was unusable and a fallback was taken, or the selector skipped a
    routing rule (a regex that ran out of time)."""


class PlannerOutputError(ValueError):
    """The planner agent replied with something that is not a usable plan."""


def plan_data_from_reply(reply: Reply) -> Any:
    """The plan document inside a planner reply: ``output`` itself, ``output.plan``, or JSON text
    in ``output`` / ``output.text`` / ``summary`` (a fenced ```json block is accepted)."""
    output = reply.output
    if isinstance(output, dict):
        if "phases" in output:
            return output
        if isinstance(output.get("plan"), (dict, list)):
            return output["plan"]
        output = output.get("text") if isinstance(output.get("text"), str) else None
    if isinstance(output, list):
        return output
    text = output if isinstance(output, str) and output.strip() else reply.summary
    fenced = re.search(r"```(?:json)?\s*\n(.*?)```", text, re.DOTALL)
    candidate = (fenced.group(1) if fenced else text).strip()
    try:
        return json.loads(candidate)
    except ValueError as exc:
        snippet = " ".join(candidate.split())[:80]
        raise PlannerOutputError(f"the planner reply is not JSON ({exc.msg} at line {exc.lineno}, "
                                 f"column {exc.colno}): {snippet!r}") from None


def _catalog(registry: Registry, book: AliasBook) -> str:
    lines = []
    for agent in registry:
        lines.append(f"- {book.alias_for(agent.key)}: {agent.name}: {agent.description[:140]}")
    return "\n".join(lines)


class PlannerAgent:
    """Talks to the ``planner`` agent of an endpoint through a :class:`Runtime` (``codex``)."""

    def __init__(self, registry: Registry, book: AliasBook, runtime: Runtime) -> None:
        self.registry = registry
        self.book = book
        self.runtime = runtime
        self.alias = book.alias_for("planner")
        self.resolved: ResolvedAlias = book.aliases().resolve(self.alias, registry)

    async def ask(self, task: str, context: list[dict[str, Any]] | None = None,
                  run_id: str = "planning") -> Reply:
        """One planner call (a retryable failure is tried once more). Raises RuntimeFailure."""
        r = self.resolved
        timeout = r.timeout_ms / 1000 if r.timeout_ms else None
        await self.runtime.open(1)
        attempt = 1
        try:
            while True:
                call = RuntimeCall(run_id, f"{run_id}-planner", "planner", self.alias, r.agent_id,
                                   r.effective, task, attempt, context or None, {}, timeout)
                try:
                    async with asyncio.timeout(timeout):
                        return await self.runtime.run(call, None)
                except TimeoutError:
                    raise RuntimeFailure(f"the planner gave no reply within {r.timeout_ms} ms",
                                         type="Timeout") from None
                except RuntimeFailure as exc:
                    if not exc.retryable or attempt >= 2:
                        raise
                    await asyncio.sleep(min(exc.retry_after or 0.5, 5.0))
                attempt += 1
        finally:
            await self.runtime.close()


def validate_plan_data(data: Any, registry: Registry, aliases: Aliases,
                       source: str) -> tuple[Plan, dict[str, ResolvedAlias]]:
    """Parse and validate a plan document; ConfigError lines become one PlannerOutputError."""
    try:
        plan = Plan.from_data(data, source)
        return plan, plan.validate(registry, aliases)
    except ConfigError as exc:
        raise PlannerOutputError("; ".join(exc.problems)) from None


async def decompose_llm(goal: str, registry: Registry, aliases: Aliases | None = None, *,
                        runtime: Runtime) -> Planned:
    """Ask the ``planner`` agent for a JSON plan; fall back to the heuristic plan, loudly."""
    goal = goal.strip()
    if not goal:
        raise ConfigError("--goal: the goal is empty")
    book = AliasBook(registry, aliases)
    agent = PlannerAgent(registry, book, runtime)
    prompt = (f"Decompose this goal into a plan of phases for the agents below.\nGoal: {goal}\n"
              f"Agents (use these aliases exactly):\n{_catalog(registry, book)}\n"
              "Reply with JSON only, no prose, in this shape (a phase waits for the one before "
              f"it unless a task names its dependsOn):\n{PLAN_FORMAT}")
    try:
        reply = await agent.ask(prompt)
    except RuntimeFailure as exc:
        raise ConfigError(f"--decomposer llm: the planner agent failed: {exc}") from None
    try:
        plan, _ = validate_plan_data(plan_data_from_reply(reply), registry, book.aliases(),
                                     "planner reply")
    except PlannerOutputError as exc:
        fallback = decompose_heuristic(goal, registry, book.aliases())
        reason = str(exc)
        message = f"the planner's plan is invalid, using the heuristic plan instead: {reason}"
        warnings.warn(message, PlannerWarning, stacklevel=2)
        fallback.plan.events.append({"kind": "decomposer_invalid", "decomposer": "llm", "stage": "decompose",
                                     "fallback": "heuristic", "reason": reason})
        fallback.warnings.append(message)
        return fallback
    plan.source = "planner (llm)"
    return Planned(plan, book.aliases())


# -- revision ---------------------------------------------------------------------------------

Reviser = Callable[["Engine", int], Awaitable[PlanRevision | None]]


def _result_text(node: Any) -> str:
    out = node.output
    text = out if isinstance(out, str) else json.dumps(out, default=str) if out is not None else ""
    return f"{node.result.summary or ''}\n{text}"[:4000]


def _heuristic_additions(engine: Engine, phase: int, book: AliasBook,
                         registry: Registry) -> list[PlanTask]:
    """Fix tasks for failures, and follow-ups for agents the finished outputs route to."""
    nodes = [n for n in engine.nodes.values() if n.task.phase == phase]
    planned_agents = {n.resolved.agent.key for n in engine.nodes.values()}
    used = set(engine.nodes)
    added: list[PlanTask] = []
    for n in nodes:
        if n.result.status in ("failed", "timeout"):
            error = (n.result.error or {}).get("message", n.result.status)
            added.append(PlanTask(_fresh_key(f"fix-{n.task.key}", used), n.task.alias,
                                  f"Investigate and fix why {n.task.key!r} ended "
                                  f"{n.result.status} ({error[:160]}): {n.task.text}", phase + 1,
                                  (), {"routedBy": f"revision: {n.task.key} {n.result.status}"}))
    follow_ups = 0
    for n in nodes:
        if n.result.status != "completed":
            continue
        route = route_text(_result_text(n), registry)
        for note in route.notes:  # a skipped rule: never silent, in the run's log
            engine.emit("run_warning", message=f"--revise-plan: output of {n.task.key}: {note}")
        for agent in route.candidates:
            if follow_ups >= MAX_FOLLOW_UPS or agent in planned_agents:
                continue
            planned_agents.add(agent)
            follow_ups += 1
            why = route.reasons(agent)[0].describe()
            added.append(PlanTask(_fresh_key(f"follow-up-{agent}", used), book.alias_for(agent),
                                  f"Follow up on the findings of {n.task.key} ({why}): "
                                  f"{(n.result.summary or n.task.text)[:200]}", phase + 1,
                                  (n.task.key,), {"routedBy": f"revision: output of {n.task.key} "
                                                              f"has {why}"}))
    return added


def _with_additions(plan: Plan, phase: int, added: list[PlanTask]) -> Plan:
    phases = list(plan.phases)
    target = phase + 1
    if target >= len(phases):
        phases.append(Phase("revision", ()))
        target = len(phases) - 1
    added = [PlanTask(t.key, t.alias, t.text, target, t.depends_on, t.meta, t.tools) for t in added]
    p = phases[target]
    phases[target] = Phase(p.name, (*p.tasks, *added), p.mode)
    return Plan(phases, plan.source, reviser=plan.reviser)


def _revision_context(engine: Engine, planner: ResolvedAlias) -> list[dict[str, Any]]:
    items = []
    for n in engine.nodes.values():
        if not n.done:
            continue
        r = n.result
        item: dict[str, Any] = {"key": r.key, "alias": r.alias, "agentId": r.agent_id,
                                "status": r.status, "summary": r.summary}
        if r.status == "completed" and shares_with(n.resolved, planner):
            item["output"] = redact(n.output, n.resolved.sharing_policy.get("redact") or [])
        items.append(item)
    return items


def make_reviser(registry: Registry, aliases: Aliases | None = None, *,
                 decomposer: str = "heuristic", runtime: Runtime | None = None,
                 goal: str | None = None) -> Reviser:
    """A ``--revise-plan`` callback for :attr:`Plan.reviser`.

    ``heuristic``: adds a fix task for each failed task of the finished phase, and a follow-up
    (up to two) for agents that the finished outputs route to and that the plan does not use yet.
    ``llm``: sends the results so far and the remaining phases to the ``planner`` agent and uses
    the phases it replies with. An invalid revision is a ``decomposer_invalid`` event; the plan
    then goes on unchanged.
    """
    if decomposer not in ("heuristic", "llm"):
        raise ConfigError(f"unknown decomposer {decomposer!r}: choose heuristic or llm")
    if decomposer == "llm" and runtime is None:
        raise ConfigError("--revise-plan with --decomposer llm needs the codex endpoint")
    book = AliasBook(registry, aliases)

    def finish(engine: Engine, phase: int, plan: Plan, reason: str) -> PlanRevision:
        plan.reviser = engine.plan.reviser
        resolved = plan.validate(registry, book.aliases())
        return PlanRevision(plan, resolved, reason)

    async def heuristic(engine: Engine, phase: int) -> PlanRevision | None:
        added = _heuristic_additions(engine, phase, book, registry)
        plan = _with_additions(engine.plan, phase, added) if added else engine.plan
        return finish(engine, phase, plan, "heuristic revision")

    async def llm(engine: Engine, phase: int) -> PlanRevision | None:
        assert runtime is not None
        agent = PlannerAgent(registry, book, runtime)
        data = engine.plan.to_dict()
        done, remaining = data["phases"][:phase + 1], data["phases"][phase + 1:]
        prompt = ((f"Goal: {goal}\n" if goal else "") +
                  f"Phase {phase + 1} of the plan has finished; the results so far are in the "
                  "context. Revise the REMAINING phases: keep, change, drop or add tasks. Tasks "
                  f"may depend on finished task ids.\nRemaining phases:\n{json.dumps(remaining)}\n"
                  f"Agents (use these aliases exactly):\n{_catalog(registry, book)}\n"
                  f"Reply with JSON only, the remaining phases in this shape:\n{PLAN_FORMAT}")
        try:
            reply = await agent.ask(prompt, _revision_context(engine, agent.resolved),
                                    engine.run_id)
            new = plan_data_from_reply(reply)
            new_phases = new.get("phases") if isinstance(new, dict) else new
            if not isinstance(new_phases, list):
                raise PlannerOutputError("the planner reply has no 'phases' list")
            plan, _ = validate_plan_data({"phases": done + new_phases}, registry, book.aliases(),
                                         "planner revision")
            if plan.later_phase_dependencies():
                raise PlannerOutputError("; ".join(plan.later_phase_dependencies()))
        except (RuntimeFailure, PlannerOutputError) as exc:
            log.warning("plan revision after phase %d rejected: %s", phase + 1, exc)
            engine.emit("decomposer_invalid", decomposer="llm", stage="revise", phase=phase,
                        fallback="unchanged plan", reason=str(exc))
            return None
        plan.source = engine.plan.source
        return finish(engine, phase, plan, "planner revision")

    return llm if decomposer == "llm" else heuristic

"""What a run looks like from its events: plain data that every notebook view renders.

A view never reaches into the engine: it feeds each event to :meth:`RunState.apply` and
draws the result (widgets, HTML, text). The plan, which the view built itself, gives the
totals before the first event arrives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..events import TERMINAL_KINDS, Event
from ..plan import Plan

#: Status of a task before it reaches the engine's queue.
PLANNED = "planned"
ACTIVE = ("queued", "running")
#: Which tasks a long listing keeps first (:meth:`RunState.listed`).
LIST_ORDER = ("failed", "timeout", "rejected", "skipped", "running", "queued", "cancelled",
              "completed", PLANNED)


def step_level(step: Event) -> str:
    """How a ``task_step`` went: ``failed`` (a command with a non-zero exit, or a failed
    step), ``warning``, or ``ok``."""
    if step.get("stepType") == "warning":
        return "warning"
    code = step.get("exitCode")
    if (code is not None and code != 0) or step.get("status") in ("failed", "declined"):
        return "failed"
    return "ok"


@dataclass
class TaskState:
    """One task as seen through events."""

    key: str
    alias: str
    text: str
    phase: int = 0
    status: str = PLANNED
    chunks: list[str] = field(default_factory=list)
    chars: int = 0
    attempt: int = 0
    ms: float | None = None
    summary: str | None = None
    error: str | None = None
    #: ``task_step`` events of the current attempt (commands, file changes, tools, warnings)
    steps: list[Event] = field(default_factory=list)
    #: what the task did, in order: lists of text chunks (one list per run of messages)
    #: and step events
    log: list[list[str] | Event] = field(default_factory=list)
    workspace: dict[str, Any] | None = None
    #: the terminal event's ``changes`` (files with +/- counts), ``usage`` and ``model``
    changes: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None
    model: str | None = None

    @property
    def failed_steps(self) -> int:
        return sum(1 for s in self.steps if step_level(s) == "failed")

    def _text(self, content: str) -> None:
        if self.log and isinstance(self.log[-1], list):
            self.log[-1].append(content)
        else:
            self.log.append([content])

    def _restart(self) -> None:
        self.chunks.clear()
        self.chars = 0
        self.steps.clear()
        self.log.clear()

    @property
    def streamed(self) -> str:
        """All streamed text so far (chunks of the current attempt)."""
        if len(self.chunks) > 1:  # keep joins cheap when a view reads often
            self.chunks[:] = ["".join(self.chunks)]
        return self.chunks[0] if self.chunks else ""

    @property
    def finished(self) -> bool:
        return self.status not in (PLANNED, *ACTIVE)


@dataclass
class AliasState:
    """Per-alias counters: done/total and running against the limit."""

    alias: str
    total: int = 0
    done: int = 0
    running: int = 0
    limit: int | None = None
    agent_id: str | None = None
    counts: dict[str, int] = field(default_factory=dict)


#: Event fields a kept step does not need (they say which task and run it belongs to).
_STEP_SKIP = {"v", "kind", "runId", "alias", "agentId", "taskId", "key", "phase"}


class RunState:
    """The state of one run, rebuilt from its events."""

    def __init__(self, plan: Plan | None = None) -> None:
        self.tasks: dict[str, TaskState] = {}
        self.aliases: dict[str, AliasState] = {}
        self.run_id: str | None = None
        self.runtime: str | None = None
        self.started = False
        self.complete = False
        self.ok: bool | None = None
        self.cancelled: str | None = None
        self.ms: float | None = None
        self.error: str | None = None
        self.has_workspaces = False  # a task ran in a workspace (coding-agent runtimes)
        self._counts: dict[str, int] = {}  # tasks per status, kept as events arrive
        if plan is not None:
            for t in plan.tasks:
                self._task(t.key, t.alias, t.text, t.phase)

    def _task(self, key: str, alias: str, text: str = "", phase: int = 0) -> TaskState:
        task = self.tasks.get(key)
        if task is None:
            task = self.tasks[key] = TaskState(key, alias, text, phase)
            self.aliases.setdefault(alias, AliasState(alias)).total += 1
            self._counts[PLANNED] = self._counts.get(PLANNED, 0) + 1
        return task

    def _status(self, task: TaskState, status: str) -> None:
        if task.status != status:
            self._counts[task.status] -= 1
            self._counts[status] = self._counts.get(status, 0) + 1
            task.status = status

    @property
    def total(self) -> int:
        return len(self.tasks)

    @property
    def done(self) -> int:
        """Tasks that have ended, whatever their status."""
        return sum(a.done for a in self.aliases.values())

    @property
    def running(self) -> int:
        return sum(a.running for a in self.aliases.values())

    def counts(self) -> dict[str, int]:
        """Tasks per status (statuses with none left out)."""
        return {s: n for s, n in self._counts.items() if n}

    def begin(self, run_id: str | None, runtime: str | None) -> None:
        """A run of this plan is prepared and starts now (its ``run_started`` will say the
        same): views show its id and progress from here on."""
        self.started, self.run_id, self.runtime = True, run_id, runtime

    def apply(self, event: Event) -> str | None:
        """Update from one event; returns the key of the task it concerns (or None)."""
        kind = event.get("kind")
        if kind == "run_started":
            self.begin(event.get("runId"), event.get("runtime"))
            for alias, info in (event.get("aliases") or {}).items():
                a = self.aliases.setdefault(alias, AliasState(alias))
                a.limit, a.agent_id = info.get("limit"), info.get("agentId")
            return None
        if kind == "run_complete":
            self.complete, self.ok, self.ms = True, bool(event.get("ok")), event.get("ms")
            self.cancelled = event.get("cancelled")
            err = event.get("error")
            self.error = err.get("message") if isinstance(err, dict) else None
            return None
        key = event.get("key")
        if not isinstance(key, str):
            return None
        task = self._task(key, str(event.get("alias")), str(event.get("task") or ""),
                          int(event.get("phase") or 0))
        alias = self.aliases[task.alias]
        if kind == "task_queued":
            self._status(task, "queued")
            if event.get("task"):
                task.text = str(event["task"])
        elif kind == "task_started":
            if task.status != "running":
                alias.running += 1
            self._status(task, "running")
            task.attempt = int(event.get("attempt") or 1)
        elif kind == "task_chunk":
            content = str(event.get("content") or "")
            task.chunks.append(content)
            task.chars += len(content)
            task._text(content)
        elif kind == "task_step":
            step = {k: v for k, v in event.items() if k not in _STEP_SKIP}
            task.steps.append(step)
            task.log.append(step)
        elif kind == "task_workspace":
            ws = event.get("workspace")
            task.workspace = dict(ws) if isinstance(ws, dict) else None
            self.has_workspaces = self.has_workspaces or task.workspace is not None
        elif kind == "task_retry":
            task._restart()  # the engine starts the reply over on a retry
            task.attempt = int(event.get("attempt") or task.attempt) + 1
        elif kind in TERMINAL_KINDS:
            if task.status == "running":
                alias.running -= 1
            if not task.finished:
                alias.done += 1
            status = TERMINAL_KINDS[kind]
            alias.counts[status] = alias.counts.get(status, 0) + 1
            self._status(task, status)
            task.ms = event.get("ms")
            task.summary = event.get("summary")
            for name in ("changes", "usage"):
                if isinstance(event.get(name), dict):
                    setattr(task, name, event[name])
            task.model = event.get("model") or task.model
            err = event.get("error")
            task.error = err.get("message") if isinstance(err, dict) else None
        return key

    def listed(self, limit: int | None) -> tuple[list[TaskState], int]:
        """The tasks a rendering lists, in plan order, and how many it leaves out: all of
        them up to ``limit``; beyond it, those that need a look first (failed, timed out,
        rejected, skipped, then running and queued), then cancelled, completed and planned."""
        tasks = list(self.tasks.values())
        if limit is None or len(tasks) <= limit:
            return tasks, 0
        rank = {s: i for i, s in enumerate(LIST_ORDER)}
        chosen = sorted(range(len(tasks)), key=lambda i: (rank.get(tasks[i].status, 0), i))[:limit]
        return [tasks[i] for i in sorted(chosen)], len(tasks) - limit

    def summary_rows(self) -> list[dict[str, Any]]:
        """Per-alias rows for summary tables."""
        rows = []
        for a in self.aliases.values():
            times = [t.ms for t in self.tasks.values()
                     if t.alias == a.alias and t.status == "completed" and t.ms is not None]
            rows.append({"alias": a.alias, "agent": a.agent_id or "", "limit": a.limit,
                         "tasks": a.total, "completed": a.counts.get("completed", 0),
                         "other": a.done - a.counts.get("completed", 0),
                         "avg_ms": round(sum(times) / len(times), 1) if times else None})
        return rows

"""The async engine: runs a plan's tasks concurrently under per-alias limits.

The engine knows nothing of terminals or widgets; it reports everything as events.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from .aliases import ResolvedAlias
from .context import ContextBus, build_context, enter_task, leave_task
from .errors import ConfigError, PlanError, RunStorageError
from .events import SCHEMA_VERSION, STATUS_KIND, Event, EventBus, utc_now_iso
from .loops import loop_kind
from .plan import Plan, PlanRevision, PlanTask
from .resume import restore_result
from .runstore import RunStore
from .runtimes.base import Reply, Runtime, RuntimeCall, RuntimeFailure
from .tools import tool_violation

#: Finished tasks whose files may wait for the run store's writer before workers pause.
STORE_BACKLOG = 2_000


def new_run_id() -> str:
    """Time-sortable, unique, safe as a directory name: ``20261125T143601123-3fa2c1``."""
    now = time.time()
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{int(now * 1000) % 1000:03d}-{secrets.token_hex(3)}"


@dataclass
class RunOptions:
    """Engine settings; the CLI flags map onto these one to one."""

    max_concurrency: int | None = None
    timeout_ms: int | None = None
    retries: int | None = None
    backoff_base_ms: float = 250.0
    backoff_max_ms: float = 30_000.0
    continue_on_failure: bool = False
    strict_tools: bool = False
    stream: bool = False
    log_file: str | os.PathLike[str] | None = "data/logs/events.jsonl"
    runs_dir: str | os.PathLike[str] | None = ".runs"
    fsync: str = "batch"
    keep_outputs: bool = True
    runtime_name: str = ""


@dataclass(slots=True)
class TaskResult:
    """The outcome of one task."""

    alias: str
    agent_id: str
    task_id: str
    key: str
    task: str
    status: str = "pending"
    ok: bool = False
    ms: float | None = None
    summary: str | None = None
    error: dict[str, Any] | None = None
    attempts: int = 0
    usage: dict[str, int] | None = None
    phase: int = 0
    _output: Any = field(default=None, repr=False)
    _store: RunStore | None = field(default=None, repr=False)

    @property
    def output(self) -> Any:
        """The task's output (read back from ``.runs`` when not kept in memory)."""
        if self._output is None and self._store is not None and self.status == "completed":
            doc = self._store.load_output(self.alias, self.task_id)
            return doc.get("output") if doc else None
        return self._output

    def to_dict(self) -> dict[str, Any]:
        return {"alias": self.alias, "agentId": self.agent_id, "taskId": self.task_id,
                "key": self.key, "task": self.task, "status": self.status, "ok": self.ok,
                "ms": self.ms, "attempts": self.attempts, "summary": self.summary,
                "error": self.error, "usage": self.usage}


@dataclass(slots=True)
class _Node:
    task: PlanTask
    resolved: ResolvedAlias
    result: TaskResult
    deps: tuple[str, ...]
    dependants: list[str] = field(default_factory=list)
    waiting: int = 0
    done: bool = False
    output: Any = None


class Engine:
    """Runs one plan once. Create it, then ``await engine.run()``; ``cancel()`` from anywhere
    on the same loop (or ``cancel_threadsafe()`` from another thread)."""

    def __init__(self, plan: Plan, resolved: dict[str, ResolvedAlias], runtime: Runtime, *,
                 options: RunOptions | None = None, bus: EventBus | None = None,
                 run_id: str | None = None, skip: set[str] | None = None) -> None:
        self.plan = plan
        self.resolved = resolved
        self.runtime = runtime
        self.options = options or RunOptions()
        self.bus = bus or EventBus()
        self.run_id = run_id or new_run_id()
        self.context_bus = ContextBus(self)
        self._skip = skip or set()
        self._cancel_reason: str | None = None
        #: The first event-log or run-store write failure; it cancels the run.
        self.storage_error: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._running: dict[str, asyncio.Task[Any]] = {}
        self._done_event: asyncio.Event | None = None
        self._remaining = 0
        self._store: RunStore | None = (RunStore(self.options.runs_dir)
                                        if self.options.runs_dir is not None else None)
        retries = self.options.retries
        self._retries = runtime.default_retries if retries is None else max(0, retries)
        self.nodes: dict[str, _Node] = {}
        deps = plan.edges()
        for seq, t in enumerate(plan.tasks, 1):
            r = resolved[t.alias]
            task_id = f"{self.run_id}-{seq:06d}"
            result = TaskResult(t.alias, r.agent_id, task_id, t.key, t.text, phase=t.phase,
                                _store=self._store)
            self.nodes[t.key] = _Node(t, r, result, deps[t.key])
        for key, node in self.nodes.items():
            for d in node.deps:
                self.nodes[d].dependants.append(key)
        self._seq = len(self.nodes)
        self._alias_workers: dict[str, int] = {}
        #: --revise-plan: tasks of a later phase are held until the phases before it are revised.
        self._reviser = plan.reviser
        if self._reviser is not None and plan.later_phase_dependencies():
            raise PlanError(plan.later_phase_dependencies())
        self._gate = 0
        self._held: list[_Node] = []
        self._revising = False

    # -- events ---------------------------------------------------------------------------
    def emit(self, kind: str, node: _Node | None = None, **fields: Any) -> None:
        event: Event = {"v": SCHEMA_VERSION, "ts": utc_now_iso(), "kind": kind, "runId": self.run_id}
        if node is not None:
            r = node.result
            event.update(alias=r.alias, agentId=r.agent_id, taskId=r.task_id, key=r.key, phase=r.phase)
        event.update(fields)
        try:
            self.bus.emit(event)
        except RunStorageError as exc:
            self._storage_failed(str(exc))

    def _storage_failed(self, message: str) -> None:
        """Stop the run once on a storage failure; tasks in flight end cancelled."""
        if self.storage_error is None:
            self.storage_error = message
            self.cancel(f"storage failure: {message}")

    # -- public -----------------------------------------------------------------------------
    @property
    def results(self) -> list[TaskResult]:
        return [n.result for n in self.nodes.values()]

    def limit_of(self, alias: str) -> int:
        return self.resolved[alias].max_parallel_tasks

    def cancel(self, reason: str = "cancelled by user") -> None:
        """Stop scheduling, cancel running tasks; every task still gets a terminal event."""
        if self._cancel_reason is not None:
            return
        self._cancel_reason = reason
        for task in list(self._running.values()):
            task.cancel()
        for worker in self._workers:
            worker.cancel()
        if self._done_event is not None:
            self._done_event.set()

    def cancel_threadsafe(self, reason: str = "cancelled by user") -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.cancel, reason)

    async def run(self) -> list[TaskResult]:
        """Run every task; returns the results in plan order."""
        self._loop = asyncio.get_running_loop()
        self._done_event = asyncio.Event()
        opts = self.options
        aliases = {a: {"agentId": r.agent_id, "limit": r.max_parallel_tasks}
                   for a, r in self.resolved.items()}
        cap = opts.max_concurrency
        self._global = asyncio.Semaphore(cap) if cap else None
        self._queues: dict[str, deque[_Node]] = {a: deque() for a in self.resolved}
        self._wakeups: dict[str, asyncio.Condition] = {a: asyncio.Condition() for a in self.resolved}
        self.emit("run_started", runtime=opts.runtime_name or self.runtime.name, tasks=len(self.nodes),
                  aliases=aliases, maxConcurrency=cap, retries=self._retries,
                  phases=[p.name for p in self.plan.phases], pid=os.getpid(),
                  loop=loop_kind(self._loop),
                  **({"resumed": len(self._skip)} if self._skip else {}))
        for note in self.plan.events:  # planner notes (e.g. decomposer_invalid) join the log
            self.emit(**note)
        started = time.perf_counter()
        connections = sum(min(r.max_parallel_tasks, cap or r.max_parallel_tasks)
                          for r in self.resolved.values())
        await self.runtime.open(min(connections, cap or connections))
        try:
            self._remaining = len(self.nodes)
            for key in self._skip:  # resumed runs: already done
                node = self.nodes[key]
                node.done, node.result.status, node.result.ok = True, "completed", True
                node.output = restore_result(node.result, self._store)
                self._remaining -= 1
            for node in self.nodes.values():
                if not node.done:
                    node.waiting = sum(1 for d in node.deps if not self.nodes[d].done)
            for node in self.nodes.values():
                if not node.done and node.waiting == 0:
                    self._make_ready(node)
            counts = Counter(n.task.alias for n in self.nodes.values())
            for alias in self.resolved:
                self._ensure_workers(alias, counts[alias])
            if self._remaining:
                try:
                    await self._done_event.wait()
                except asyncio.CancelledError:
                    self.cancel("cancelled")
                    raise
        finally:
            for w in self._workers:
                w.cancel()
            await asyncio.gather(*self._workers, return_exceptions=True)
            self._workers.clear()
            self._finish_cancelled()
            await self.runtime.close()
            store_error = None
            if self._store is not None:
                try:
                    self._store.close()
                except RunStorageError as exc:
                    store_error = str(exc)
                    self.storage_error = self.storage_error or store_error
            results = self.results
            counts: dict[str, int] = {}
            for r in results:
                counts[r.status] = counts.get(r.status, 0) + 1
            self.emit("run_complete", ok=all(r.ok for r in results) and not self._cancel_reason,
                      ms=round((time.perf_counter() - started) * 1000, 3), counts=counts,
                      **({"cancelled": self._cancel_reason} if self._cancel_reason else {}),
                      **({"error": {"type": "RunStorageError", "message": store_error}}
                         if store_error else {}))
        return results

    # -- scheduling ---------------------------------------------------------------------------
    def _make_ready(self, node: _Node) -> None:
        if self._reviser is not None and node.task.phase > self._gate:
            self._held.append(node)
            return
        self.emit("task_queued", node, task=node.task.text, dependsOn=list(node.deps),
                  limit=node.resolved.max_parallel_tasks)
        self._queues[node.task.alias].append(node)
        cond = self._wakeups[node.task.alias]
        if cond._waiters:  # type: ignore[attr-defined]  # cheap check before scheduling a notify
            asyncio.get_running_loop().create_task(self._notify(cond))

    def _ensure_workers(self, alias: str, tasks: int) -> None:
        """One worker per slot of ``alias``, but no more than its ``tasks``."""
        if alias not in self._queues:  # an alias added by a plan revision
            self._queues[alias], self._wakeups[alias] = deque(), asyncio.Condition()
        want = min(self.resolved[alias].max_parallel_tasks, tasks)
        for _ in range(want - self._alias_workers.get(alias, 0)):
            self._workers.append(asyncio.create_task(self._worker(alias)))
        self._alias_workers[alias] = max(want, self._alias_workers.get(alias, 0))

    @staticmethod
    async def _notify(cond: asyncio.Condition) -> None:
        async with cond:
            cond.notify()

    async def _worker(self, alias: str) -> None:
        queue, cond = self._queues[alias], self._wakeups[alias]
        loop = asyncio.get_running_loop()
        while self._cancel_reason is None:
            if not queue:
                async with cond:
                    await cond.wait_for(lambda: bool(queue) or self._cancel_reason is not None)
                continue
            if self._store is not None and self._store.backlog > STORE_BACKLOG:
                await self._store.drained(STORE_BACKLOG // 2)  # a slow disk bounds memory
                continue
            node = queue.popleft()
            # A task that ends without suspending (rejected, instant failure) must not let this
            # worker drain its whole queue in one go while the other workers and views wait, so
            # such a task is followed by a yield. A callback scheduled now runs only if the loop
            # turned meanwhile, i.e. if the task suspended; then the next task starts at once
            # (a yield after every task cost ~0.5 ms per task when slots finish together).
            turned = [False]
            probe = loop.call_soon(turned.append, True)
            if self._global is not None:
                async with self._global:
                    await self._run_node(node)
            else:
                await self._run_node(node)
            if len(turned) == 1:
                probe.cancel()
                await asyncio.sleep(0)

    async def _run_node(self, node: _Node) -> None:
        if self._cancel_reason is not None:
            queue = self._queues[node.task.alias]
            queue.appendleft(node)
            return
        task = asyncio.current_task()
        assert task is not None
        self._running[node.result.task_id] = task
        scope = enter_task(self.context_bus, node.task.alias, node.task.key)
        try:
            await self._attempts(node)
        except asyncio.CancelledError:
            if not node.done:
                self._finish(node, "cancelled", error={"type": "Cancelled",
                                                       "message": self._cancel_reason or "cancelled"})
            if self._cancel_reason is None:
                raise
        finally:
            self._running.pop(node.result.task_id, None)
            leave_task(scope)

    async def _attempts(self, node: _Node) -> None:
        res, opts, r = node.result, self.options, node.resolved
        violation = tool_violation(node.task, r) if opts.strict_tools else None
        if violation:
            self._finish(node, "rejected", error={"type": "ToolNotAllowed", "message": violation})
            return
        timeout_ms = opts.timeout_ms or r.timeout_ms
        timeout_s = timeout_ms / 1000.0 if timeout_ms else None
        context = build_context(self, node)
        t0 = time.perf_counter()
        self.emit("task_started", node, attempt=1, limit=r.max_parallel_tasks)
        chunks: list[str] = []
        seq = 0

        def on_chunk(content: str) -> None:
            nonlocal seq
            seq += 1
            chunks.append(content)
            self.emit("task_chunk", node, seq=seq, content=content)

        deps = tuple((self.nodes[d].result.alias, self.nodes[d].result.task_id)
                     for d in node.deps)
        task_dir = (str(self._store.task_dir(res.alias, res.task_id))
                    if self._store is not None else None)

        def emit(kind: str, **fields: Any) -> None:
            self.emit(kind, node, **fields)

        attempt = 0
        while True:
            attempt += 1
            res.attempts = attempt
            call = RuntimeCall(self.run_id, res.task_id, res.key, res.alias, res.agent_id,
                               r.effective, node.task.text, attempt, context or None,
                               node.task.meta, timeout_s, deps, task_dir, emit)
            try:
                async with asyncio.timeout(timeout_s):
                    reply = await self.runtime.run(call, on_chunk if opts.stream else None)
            except TimeoutError:
                self._finish(node, "timeout", t0=t0, error={
                    "type": "Timeout", "message": f"no reply within {timeout_ms} ms"}, chunks=chunks)
                return
            except RuntimeFailure as exc:
                error = {"type": exc.type, "message": str(exc)}
                if exc.status is not None:
                    error["status"] = exc.status
                if exc.retryable and attempt <= self._retries and self._cancel_reason is None:
                    delay = self._backoff(attempt, exc.retry_after)
                    self.emit("task_retry", node, attempt=attempt, error=error,
                              delayMs=round(delay * 1000, 1))
                    await asyncio.sleep(delay)
                    chunks.clear()
                    continue
                self._finish(node, "failed", t0=t0, error=error, chunks=chunks,
                             annotations=exc.annotations)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a runtime bug must not lose the task
                self._finish(node, "failed", t0=t0, chunks=chunks,
                             error={"type": type(exc).__name__, "message": str(exc)[:500]})
                return
            self._finish(node, "completed", t0=t0, reply=reply, chunks=chunks)
            return

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        base = self.options.backoff_base_ms / 1000.0
        delay = min(self.options.backoff_max_ms / 1000.0, base * 2 ** (attempt - 1))
        delay = delay / 2 + random.uniform(0, delay / 2)  # "equal jitter"
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.options.backoff_max_ms / 1000.0))
        return delay

    # -- completion ---------------------------------------------------------------------------
    def _finish(self, node: _Node, status: str, *, t0: float | None = None, reply: Reply | None = None,
                error: dict[str, Any] | None = None, chunks: list[str] | None = None,
                annotations: dict[str, Any] | None = None) -> None:
        if node.done:
            return
        node.done = True
        res = node.result
        res.status, res.ok, res.error = status, status == "completed", error
        if t0 is not None:
            res.ms = round((time.perf_counter() - t0) * 1000, 3)
        fields: dict[str, Any] = {"ok": res.ok, "attempt": res.attempts or None, "ms": res.ms}
        if reply is not None:
            res.summary, res.usage = reply.summary, reply.usage
            if reply.usage:
                self.emit("telemetry", node, usage=reply.usage, model=reply.model, ms=res.ms)
                fields["usage"] = reply.usage
            fields["summary"] = reply.summary[:200]
        if error is not None:
            fields["error"] = error
        extra = reply.annotations if reply is not None else annotations
        if extra:
            fields.update(extra)
        self.emit(STATUS_KIND[status], node, **fields)
        output = reply.output if reply is not None else None
        if node.dependants:
            node.output = output
        if self.options.keep_outputs or self._store is None:
            res._output = output
        if self._store is not None:
            try:
                self._save(node, reply, chunks)
            except RunStorageError as exc:
                self._storage_failed(str(exc))
        self._remaining -= 1
        for key in node.dependants:
            dep = self.nodes[key]
            if dep.done:
                continue
            if not res.ok and not self.options.continue_on_failure:
                self._finish(dep, "skipped", error={
                    "type": "DependencyFailed", "message": f"dependency {res.key!r} ended {status}"})
                continue
            dep.waiting -= 1
            if dep.waiting == 0 and self._cancel_reason is None:
                self._make_ready(dep)
        if self._reviser is not None:
            self._maybe_revise()
        if self._remaining <= 0 and self._done_event is not None:
            self._done_event.set()

    # -- plan revision (--revise-plan) ----------------------------------------------------------
    def _maybe_revise(self) -> None:
        """Start the reviser once every task up to the current phase has ended."""
        if self._revising or self._cancel_reason is not None:
            return
        pending = [n.task.phase for n in self.nodes.values() if not n.done]
        if not pending or min(pending) <= self._gate:
            return
        self._revising = True  # the task joins the workers so that cancel() stops it too
        self._workers.append(asyncio.get_running_loop().create_task(self._revise(self._gate)))

    async def _revise(self, phase: int) -> None:
        assert self._reviser is not None
        revision = None
        try:
            revision = await self._reviser(self, phase)
        except ConfigError as exc:
            self.emit("plan_revision_failed", phase=phase, error={
                "type": type(exc).__name__, "message": "; ".join(exc.problems)})
        except Exception as exc:  # a reviser bug must not stall the run
            self.emit("plan_revision_failed", phase=phase, error={
                "type": type(exc).__name__, "message": str(exc)[:500]})
        if revision is not None and self._cancel_reason is None:
            self._apply_revision(phase, revision)
        self._gate = min((n.task.phase for n in self.nodes.values() if not n.done),
                         default=self._gate)
        self._revising = False
        held, self._held = self._held, []
        for node in held:
            if not node.done:
                self._make_ready(node)  # held again when still beyond the gate
        self._maybe_revise()

    def _apply_revision(self, phase: int, revision: PlanRevision) -> None:
        """Swap the not-yet-started tasks for the revision's; log the diff as ``plan_revised``."""
        new = {t.key: t for t in revision.plan.tasks}
        edges = revision.plan.edges()
        pending = {k: n for k, n in self.nodes.items() if not n.done}
        removed = [k for k in pending if k not in new]
        changed = [k for k, n in pending.items()
                   if k in new and (new[k] != n.task or edges[k] != n.deps)]
        added = [k for k in new if k not in self.nodes]
        for k in removed + changed:
            del self.nodes[k]
        self._held = [n for n in self._held if self.nodes.get(n.task.key) is n]
        self._remaining += len(added) - len(removed)
        new_aliases = {new[k].alias for k in changed + added} - set(self.resolved)
        self.resolved.update(revision.resolved)
        for k in changed + added:
            t, r = new[k], self.resolved[new[k].alias]
            self._seq += 1
            result = TaskResult(t.alias, r.agent_id, f"{self.run_id}-{self._seq:06d}", k, t.text,
                                phase=t.phase, _store=self._store)
            self.nodes[k] = _Node(t, r, result, edges[k])
        for n in self.nodes.values():
            n.dependants = []
        for k, n in self.nodes.items():
            for d in n.deps:
                self.nodes[d].dependants.append(k)
        self.plan = revision.plan
        self.emit("plan_revised", phase=phase, reason=revision.reason,
                  added=[new[k].to_dict() for k in added], removed=removed,
                  changed=[new[k].to_dict() for k in changed], tasks=len(self.nodes),
                  aliases={a: {"agentId": self.resolved[a].agent_id,
                               "limit": self.resolved[a].max_parallel_tasks} for a in new_aliases})
        counts = Counter(n.task.alias for n in self.nodes.values())
        for alias in dict.fromkeys(new[k].alias for k in changed + added):
            self._ensure_workers(alias, counts[alias])
        for k in changed + added:
            node = self.nodes[k]
            failed = [d for d in node.deps if self.nodes[d].done and not self.nodes[d].result.ok]
            if failed and not self.options.continue_on_failure:
                self._finish(node, "skipped", error={
                    "type": "DependencyFailed", "message": f"dependency {failed[0]!r} did not complete"})
                continue
            node.waiting = sum(1 for d in node.deps if not self.nodes[d].done)
            if node.waiting == 0:
                self._make_ready(node)

    def _save(self, node: _Node, reply: Reply | None, chunks: list[str] | None) -> None:
        assert self._store is not None
        res, r = node.result, node.resolved
        runtime_doc = {"runtime": self.options.runtime_name or self.runtime.name,
                       "maxParallelTasks": r.max_parallel_tasks,
                       "timeoutMs": self.options.timeout_ms or r.timeout_ms,
                       "autonomyLevel": r.effective.get("runtime", {}).get("autonomy_level"),
                       "retries": self._retries, "stream": self.options.stream}
        input_doc = {"runId": self.run_id, "taskId": res.task_id, "key": res.key, "alias": res.alias,
                     "agentId": res.agent_id, "phase": res.phase, "dependsOn": list(node.deps),
                     "settings": runtime_doc, "task": node.task.to_dict()}
        output_doc: dict[str, Any] = {"ok": res.ok, "status": res.status, "summary": res.summary,
                                      "output": reply.output if reply else None,
                                      "usage": res.usage, "ms": res.ms, "attempts": res.attempts,
                                      "error": res.error}
        if reply is not None and reply.logs is not None:
            output_doc["logs"] = reply.logs
        if chunks:
            output_doc["chunks"] = "".join(chunks)
        self._store.save(res.alias, res.task_id, input_doc, output_doc)

    def _finish_cancelled(self) -> None:
        reason = self._cancel_reason or "run ended before the task started"
        for node in self.nodes.values():
            if not node.done:
                self._finish(node, "cancelled", error={"type": "Cancelled", "message": reason})

    def check_storage(self) -> None:
        if self._store is not None:
            self._store.check_writable()

"""The Python API: ``run``, ``run_async`` and ``prepare_run`` drive the one engine."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from . import loops
from .aliases import Aliases, ResolvedAlias
from .engine import Engine, RunOptions, TaskResult
from .errors import ConfigError, RunStorageError
from .events import Event, EventBus, JsonlSink
from .plan import Plan
from .registry import Registry, load_registry
from .runtimes import AGENT_OPTION_NAMES, Runtime, make_runtime

T = TypeVar("T")

_OPTION_NAMES = {f.name for f in fields(RunOptions)}
_RUNTIME_OPTION_NAMES = {"latency_ms", "jitter", "cpu_ms", "chunks", "url", "api_key", "provider",
                         "max_reply_bytes", "max_event_bytes", "max_stream_bytes",
                         "http_client", "proxy_env", "ca_bundle", *AGENT_OPTION_NAMES}
_AGENT_RUNTIMES = ("codex-cli", "claude-code")
EXAMPLE_TASKS = Path(__file__).parent / "data" / "orchestrator-tasks.json"


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass
class RunResult:
    """What a run did: one TaskResult per task, plus the run's settings and timing."""

    run_id: str
    runtime: str
    tasks: list[TaskResult]
    aliases: dict[str, ResolvedAlias] = field(repr=False)
    elapsed_ms: float = 0.0
    log_file: Path | None = None
    runs_dir: Path | None = None
    cancelled: str | None = None

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tasks) and self.cancelled is None

    def by_alias(self) -> dict[str, list[TaskResult]]:
        out: dict[str, list[TaskResult]] = {a: [] for a in self.aliases}
        for t in self.tasks:
            out.setdefault(t.alias, []).append(t)
        return out

    def summary(self) -> dict[str, Any]:
        """Machine-readable summary (what ``--json`` prints)."""
        per_alias = {}
        for alias, items in self.by_alias().items():
            times = [t.ms for t in items if t.ms is not None and t.ok]
            counts: dict[str, int] = {}
            for t in items:
                counts[t.status] = counts.get(t.status, 0) + 1
            r = self.aliases[alias]
            per_alias[alias] = {
                "agentId": r.agent_id, "limit": r.max_parallel_tasks, "tasks": len(items),
                "completed": counts.get("completed", 0),
                "failed": len(items) - counts.get("completed", 0) - counts.get("cancelled", 0),
                "cancelled": counts.get("cancelled", 0), "statuses": counts,
                "avgMs": round(sum(times) / len(times), 1) if times else None,
                "p95Ms": round(percentile(times, 95), 1) if times else None,
            }
        return {"runId": self.run_id, "runtime": self.runtime, "ok": self.ok,
                "totalTasks": len(self.tasks), "elapsedMs": round(self.elapsed_ms, 1),
                "cancelled": self.cancelled, "aliases": per_alias,
                "failureReasons": self.failure_reasons(),
                "logFile": str(self.log_file) if self.log_file else None,
                "runsDir": str(self.runs_dir) if self.runs_dir else None}

    def failure_reasons(self, limit: int = 8) -> list[dict[str, Any]]:
        """The distinct reasons tasks failed (cancelled ones are not failures), most frequent
        first: ``{type, message, count, example}`` (``example``: one ``alias/key``)."""
        groups: dict[tuple[str, str], list[TaskResult]] = {}
        for t in self.tasks:
            if t.ok or t.status == "cancelled" or not t.error:
                continue
            key = (str(t.error.get("type", t.status)), str(t.error.get("message", ""))[:300])
            groups.setdefault(key, []).append(t)
        ranked = sorted(groups.items(), key=lambda kv: -len(kv[1]))[:limit]
        return [{"type": k[0], "message": k[1], "count": len(v),
                 "example": f"{v[0].alias}/{v[0].key}"} for k, v in ranked]

    def summary_text(self, verbose: bool = False) -> str:
        """The human "Orchestration Summary"."""
        s = self.summary()
        lines = ["Orchestration Summary",
                 f"  run {s['runId']}  runtime {s['runtime']}  tasks {s['totalTasks']}  "
                 f"elapsed {s['elapsedMs'] / 1000:.2f} s"]
        if self.cancelled:
            lines.append(f"  cancelled: {self.cancelled}")
        width = max([len(a) for a in s["aliases"]] + [5])
        agent_w = max([len(v["agentId"]) for v in s["aliases"].values()] + [5])
        lines.append(f"  {'alias':<{width}}  {'agent':<{agent_w}}  limit  done  failed  "
                     f"cancelled   avg ms   p95 ms")
        for alias, v in s["aliases"].items():
            avg = f"{v['avgMs']:.1f}" if v["avgMs"] is not None else "-"
            p95 = f"{v['p95Ms']:.1f}" if v["p95Ms"] is not None else "-"
            lines.append(f"  {alias:<{width}}  {v['agentId']:<{agent_w}}  {v['limit']:>5}  "
                         f"{v['completed']:>4}  {v['failed']:>6}  {v['cancelled']:>9}  "
                         f"{avg:>7}  {p95:>7}")
        reasons = s["failureReasons"]
        if reasons:
            lines.append("  why tasks failed:")
            for r in reasons:
                tasks = "1 task" if r["count"] == 1 else f"{r['count']} tasks"
                lines.append(f"    {tasks}: {_reason_text(r)} (e.g. {r['example']})")
        if verbose:
            lines.append("  tasks:")
            for t in self.tasks:
                ms = f"{t.ms:.1f} ms" if t.ms is not None else "-"
                detail = t.summary if t.ok else (t.error or {}).get("message", "")
                lines.append(f"    {t.alias}/{t.key} {t.status} {ms} attempts={t.attempts}: {detail}")
        if self.log_file:
            lines.append(f"  events: {self.log_file}")
        if self.runs_dir:
            lines.append(f"  outputs: {self.runs_dir}/<alias>/<taskId>/")
        return "\n".join(lines)

    def _repr_html_(self) -> str:  # a static table that survives in shared notebooks
        from html import escape

        s = self.summary()
        rows = "".join(
            f"<tr><td>{escape(a)}</td><td>{escape(v['agentId'])}</td><td>{v['limit']}</td>"
            f"<td>{v['completed']}</td><td>{v['failed']}</td><td>{v['avgMs'] or '-'}</td>"
            f"<td>{v['p95Ms'] or '-'}</td></tr>" for a, v in s["aliases"].items())
        return (f"<p><b>Orchestration Summary</b> · runtime {escape(s['runtime'])} · "
                f"{s['totalTasks']} tasks · ok={s['ok']}</p><table><thead><tr><th>alias</th>"
                "<th>agent</th><th>limit</th><th>done</th><th>failed</th><th>avg ms</th>"
                f"<th>p95 ms</th></tr></thead><tbody>{rows}</tbody></table>")


def _reason_text(reason: dict[str, Any]) -> str:
    """A failure reason for people: the message, and what to do where we know it."""
    message = " ".join(str(reason["message"]).split())
    message = message if len(message) <= 160 else message[:159] + "…"
    hints = {401: "check --codex-key / $CODEX_API_KEY", 403: "check --codex-key / $CODEX_API_KEY",
             404: "check --codex-url"}
    for status, hint in hints.items():
        if f"HTTP {status}" in message:
            return f"{message}: {hint}"
    if reason["type"] == "ConnectionError" and "--codex-url" not in message:
        return f"{message}: is the endpoint running? (codex-flow serve)"
    return message


class Run:
    """A validated, ready-to-start run. ``await run.execute()``; ``run.cancel()`` to stop it."""

    def __init__(self, plan: Plan, resolved: dict[str, ResolvedAlias], runtime: Runtime,
                 options: RunOptions, *, on_event: Callable[[Event], None] | None = None,
                 run_id: str | None = None, skip: set[str] | None = None) -> None:
        #: Things the user should know before the run (e.g. a dirty main checkout).
        self.warnings: list[str] = []
        self.bus = EventBus()
        self.options = options
        self.engine = Engine(plan, resolved, runtime, options=options, bus=self.bus,
                             run_id=run_id, skip=skip)
        if options.log_file is not None and Path(options.log_file).is_dir():
            raise ConfigError(f"--log-file {options.log_file}: a folder, not a file")
        self.engine.check_storage()  # before the log is created: a failed start writes nothing
        self._sink: JsonlSink | None = None
        if options.log_file is not None:
            self._sink = JsonlSink(options.log_file, fsync=options.fsync)
            self.bus.subscribe(self._sink)
        if on_event is not None:
            self.bus.subscribe(on_event)

    @property
    def run_id(self) -> str:
        return self.engine.run_id

    def cancel(self, reason: str = "cancelled by user") -> None:
        self.engine.cancel(reason)

    async def execute(self) -> RunResult:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        try:
            tasks = await self.engine.run()
            if self._sink is not None:
                try:
                    self._sink.flush()  # the last lines (run_complete) must reach the disk
                except RunStorageError as exc:  # as if the engine's own write had failed
                    self.engine._storage_failed(str(exc))
        finally:
            if self._sink is not None:
                self._sink.close()
        o = self.options
        return RunResult(self.run_id, o.runtime_name or self.engine.runtime.name, tasks,
                         self.engine.resolved, (loop.time() - t0) * 1000,
                         Path(o.log_file) if o.log_file else None,
                         Path(o.runs_dir) if o.runs_dir else None, self.engine._cancel_reason)


def prepare_run(tasks: Any = None, *, plan: Plan | Mapping[str, Any] | str | None = None,
                aliases: Aliases | Mapping[str, Any] | str | Path | None = None,
                runtime: str | Runtime = "stub", registry: Registry | None = None,
                agents_dir: str | Path | None = None,
                on_event: Callable[[Event], None] | None = None, resume: str | None = None,
                executor: str = "local", dask_address: Any = None, **options: Any) -> Run:
    """Validate everything and build a :class:`Run` without starting it.

    ``options`` are :class:`RunOptions` fields plus runtime settings (``latency_ms``, ``url``,
    ``api_key``, ``provider``, ...). ``executor="dask"`` runs each runtime call on a Dask
    cluster (``dask_address``: an address, a ``distributed.Client``, or None for a local one).
    Raises ConfigError before anything is written.
    """
    unknown = set(options) - _OPTION_NAMES - _RUNTIME_OPTION_NAMES
    if unknown:
        raise ConfigError(f"unknown option(s): {', '.join(sorted(unknown))}")
    registry = registry or load_registry(agents_dir)
    if isinstance(aliases, (str, Path)):
        alias_map = Aliases.from_file(aliases)
    elif isinstance(aliases, Aliases):
        alias_map = aliases
    else:
        alias_map = Aliases(aliases)
    if plan is not None:
        if isinstance(plan, Plan):
            the_plan = plan
        elif isinstance(plan, (str, Path)):
            the_plan = Plan.from_file(str(plan))
        else:
            the_plan = Plan.from_data(plan)
    elif tasks is not None:
        the_plan = Plan.from_task_map(tasks)
    else:
        raise ConfigError("nothing to run: give tasks or a plan")
    resolved = the_plan.validate(registry, alias_map)
    run_opts = RunOptions(**{k: v for k, v in options.items() if k in _OPTION_NAMES})
    rt_opts = {k: v for k, v in options.items() if k in _RUNTIME_OPTION_NAMES}
    from .executors import executor_runtime

    if not isinstance(runtime, str):
        check_runtime(runtime)
    rt = (executor_runtime(executor, runtime, rt_opts, run_opts, dask_address)
          or _runtime_for(runtime, resolved, run_opts, rt_opts))
    run_opts.runtime_name = rt.name
    warnings = [*registry.warnings,
                *(r.warning for r in resolved.values() if getattr(r, "warning", None)),
                *(w for w in _check_runtimes(rt, resolved, run_opts)
                  if w not in registry.warnings)]
    the_plan.events.extend({"kind": "run_warning", "message": w} for w in warnings)
    skip: set[str] | None = None
    run_id = None
    if resume:
        from .resume import completed_keys

        run_id = resume
        skip = completed_keys(run_opts.log_file, resume, the_plan, run_opts.runs_dir)
    prepared = Run(the_plan, resolved, rt, run_opts, on_event=on_event, run_id=run_id, skip=skip)
    prepared.warnings = warnings
    return prepared


def check_runtime(runtime: Any) -> None:
    """A custom runtime must have what the engine calls (docs/RUNTIME.md): one ConfigError
    naming everything that is missing, before anything is written."""
    import inspect

    missing = [n for n in ("name", "default_retries") if not hasattr(runtime, n)]
    for method in ("open", "close", "run"):
        fn = getattr(runtime, method, None)
        if fn is None:
            missing.append(f"{method}()")
        elif not inspect.iscoroutinefunction(fn):
            missing.append(f"{method}() as an async method")
    if missing:
        raise ConfigError(f"runtime {type(runtime).__name__}: missing {', '.join(missing)} "
                          "(see the runtime protocol in docs/RUNTIME.md)")
    retries = runtime.default_retries
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise ConfigError(f"runtime {type(runtime).__name__}: default_retries must be a whole "
                          f"number >= 0, got {retries!r}")


def _runtime_for(runtime: str | Runtime, resolved: dict[str, ResolvedAlias],
                 run_opts: RunOptions, rt_opts: dict[str, Any]) -> Runtime:
    """The run's runtime; aliases that name another one (``runtime.engine``) get theirs."""
    from .runtimes.agent_cli import RuntimeByAlias, engines_of

    engines = engines_of(resolved)  # valid names: checked with the alias definitions
    names = {runtime if isinstance(runtime, str) else runtime.name, *engines.values()}
    if names & set(_AGENT_RUNTIMES):
        run_opts.stream = True  # an agent's messages are few: always events
        rt_opts = {**rt_opts, "private": [p for p in (run_opts.log_file, run_opts.runs_dir) if p]}
    main = make_runtime(runtime, stream=run_opts.stream, **rt_opts)
    others = {e: make_runtime(e, stream=run_opts.stream, **rt_opts)
              for e in set(engines.values()) - {main.name}}
    return RuntimeByAlias(main, others) if others else main


def _check_runtimes(rt: Runtime, resolved: dict[str, ResolvedAlias],
                    run_opts: RunOptions) -> list[str]:
    """Check agent binaries and workspaces before anything is written; returns warnings."""
    runtimes = [rt.default, *rt.others.values()] if hasattr(rt, "others") else [rt]
    warnings: list[str] = []
    for each in runtimes:
        check = getattr(each, "check", None)
        if check is None:
            continue
        for warning in check():
            if warning not in warnings:
                warnings.append(warning)
        workspaces = getattr(each, "workspaces", None)
        if workspaces is not None and workspaces.kind == "none":
            slots = sum(r.max_parallel_tasks for r in resolved.values())
            if min(slots, run_opts.max_concurrency or slots) > 1:
                raise ConfigError("--workspace none runs every task in --repo itself: allow one "
                                  "task at a time (--max-concurrency 1) or use worktree/copy")
    return warnings


async def run_async(tasks: Any = None, **kwargs: Any) -> RunResult:
    """Run tasks (a task map, file path or text) or ``plan=`` on the current event loop."""
    return await prepare_run(tasks, **kwargs).execute()


class _LoopThread:
    """A library-owned event loop in a daemon thread, for ``run()`` inside a running loop."""

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def submit(cls, coro: Coroutine[Any, Any, T]) -> T:
        with cls._lock:
            if cls._loop is None:
                loop = loops.new_event_loop()
                threading.Thread(target=loop.run_forever, name="codexflow-loop", daemon=True).start()
                cls._loop = loop
        return asyncio.run_coroutine_threadsafe(coro, cls._loop).result()


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even inside a running loop (a notebook)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return loops.run(coro)
    return _LoopThread.submit(coro)


def run(tasks: Any = None, **kwargs: Any) -> RunResult:
    """Run tasks and wait for the result. Works in scripts and in notebook cells."""
    loops.loop_factory()  # a bad $CODEXFLOW_LOOP fails before anything is written
    prepared = prepare_run(tasks, **kwargs)
    return run_sync(prepared.execute())


def allow_nested() -> None:
    """Opt in to nested event loops (patches asyncio process-wide via nest-asyncio2)."""
    try:
        import nest_asyncio2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError("allow_nested() needs nest-asyncio2: pip install nest-asyncio2") from exc
    nest_asyncio2.apply()

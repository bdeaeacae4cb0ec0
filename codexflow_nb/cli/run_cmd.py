"""``codex-flow run``: plan, run and summarise."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import sys
from typing import Any
from urllib.parse import urlsplit

from .. import loops
from ..aliases import Aliases
from ..api import EXAMPLE_TASKS, Run, RunResult, prepare_run
from ..errors import ConfigError
from ..events import TERMINAL_KINDS, Event
from ..plan import Plan
from ..registry import MAX_PARALLEL_TASKS, MAX_TIMEOUT_MS
from ..runtimes import RUNTIME_NAMES
from ..widgets.render import format_step  # one copy, shared with the notebook views


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a task map or a plan")
    src = p.add_argument_group("what to run")
    src.add_argument("--example", action="store_true", help="run the bundled example task map")
    src.add_argument("-f", "--file", help="task map (JSON/YAML); '-' reads stdin")
    src.add_argument("--plan-file", help="a plan with phases and dependencies (JSON/YAML)")
    src.add_argument("--aliases", help="alias map file (YAML/JSON): adds to the default aliases "
                                       "(reviewer, reviewer2, architect) and overrides them by name")
    src.add_argument("--no-default-aliases", action="store_true",
                     help="use only the --aliases file, without the default aliases")
    src.add_argument("--agents-dir", help="agents folder (default: lookup order, see docs)")
    src.add_argument("--resume", metavar="RUN_ID", help="re-run the unfinished tasks of a run")
    rt = p.add_argument_group("runtime")
    rt.add_argument("--runtime", choices=list(RUNTIME_NAMES), default="stub",
                    help="stub (offline), codex (HTTP endpoint), codex-cli or claude-code "
                         "(a real coding agent per task, each in its own workspace)")
    rt.add_argument("--stub-latency-ms", type=_milliseconds, default=20.0,
                    help="stub latency (default 20)")
    rt.add_argument("--stub-jitter", type=_fraction, default=0.0, help="stub latency spread 0..1")
    rt.add_argument("--stub-cpu-ms", type=_milliseconds, default=0.0,
                    help="CPU burnt per stub task")
    rt.add_argument("--codex-url", default=None, type=_http_url,
                    help="endpoint base URL (or $CODEX_URL)")
    rt.add_argument("--codex-key", default=None, help="bearer token (or $CODEX_API_KEY)")
    rt.add_argument("--no-proxy-env", dest="proxy_env", action="store_false",
                    help="ignore HTTPS_PROXY/HTTP_PROXY/NO_PROXY (honoured by default)")
    rt.add_argument("--ca-bundle", metavar="PATH", default=None,
                    help="PEM file of the CA certificates to trust (or $SSL_CERT_FILE)")
    rt.add_argument("--provider", choices=["openai", "anthropic", "ollama", "cli", "echo"])
    rt.add_argument("--stream", action="store_true", help="stream replies (SSE) as task_chunk events")
    for name, what, default in (("reply", "a JSON reply", 16), ("event", "one SSE line or event", 16),
                                ("stream", "one streamed reply in all", 32)):
        rt.add_argument(f"--max-{name}-mib", type=_mebibytes, metavar="MIB",
                        help=f"largest {what} from the endpoint (default {default} MiB)")
    add_agent_options(p)
    ex = p.add_argument_group("execution")
    ex.add_argument("--max-concurrency", type=_positive, help="global cap on running tasks")
    ex.add_argument("--timeout-ms", type=_timeout_ms,
                    help="per-task timeout (overrides the agents')")
    ex.add_argument("--retries", type=_retries, help="extra tries for retryable failures")
    ex.add_argument("--continue-on-failure", action="store_true",
                    help="run dependants of failed tasks instead of skipping them")
    ex.add_argument("--strict-tools", action="store_true",
                    help="reject tasks that ask for tools their agent may not use")
    ex.add_argument("--executor", choices=["local", "dask"], default="local",
                    help="where runtime calls run: this process, or a Dask cluster (extra: dask)")
    ex.add_argument("--dask-address", metavar="tcp://HOST:PORT",
                    help="Dask scheduler to use (default: start a local cluster)")
    out = p.add_argument_group("output")
    out.add_argument("--plan", dest="show_plan", action=argparse.BooleanOptionalAction, default=True,
                     help="show the plan first (default on)")
    out.add_argument("--dry-run", action="store_true", help="show the plan and exit; write nothing")
    out.add_argument("--verbose", "-v", action="store_true", help="per-task lines and results")
    out.add_argument("--no-progress", action="store_true",
                     help="no live progress (default: bars on a terminal, a line every 2 s "
                          "elsewhere; NO_COLOR gives plain lines)")
    out.add_argument("--json", action="store_true", help="print the summary as JSON")
    out.add_argument("--log-file", default="data/logs/events.jsonl", help="event log path")
    out.add_argument("--runs-dir", default=".runs", help="run store folder")
    out.add_argument("--fsync", choices=["every", "batch", "never"], default="batch",
                     help="when the event log is synced to disk (default batch)")
    out.add_argument("--otlp-endpoint", metavar="URL",
                     help="send OpenTelemetry spans while the run goes on: OTLP/HTTP protobuf to "
                          "URL/v1/traces, headers from $OTEL_EXPORTER_OTLP_HEADERS (extra: otel)")
    for extend in _EXTENSIONS:
        extend(p)
    p.set_defaults(func=cmd_run)


#: Other modules may add options to ``run`` and a plan builder (see planning).
_EXTENSIONS: list[Any] = []
_PLAN_BUILDERS: list[Any] = []


def _whole(text: str, low: int, high: int) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"must be between {low:,} and {high:,}, got {value}")
    return value


def _positive(text: str) -> int:
    return _whole(text, 1, MAX_PARALLEL_TASKS)


def _non_negative(text: str) -> int:
    return _whole(text, 0, MAX_PARALLEL_TASKS)


def _retries(text: str) -> int:
    return _whole(text, 0, 100)


def _timeout_ms(text: str) -> int:
    return _whole(text, 1, MAX_TIMEOUT_MS)


def _number(text: str, low: float, high: float) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and low <= value <= high):  # nan and inf fail here too
        raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}, got {text}")
    return value


def _milliseconds(text: str) -> float:
    return _number(text, 0.0, float(MAX_TIMEOUT_MS))


def _mebibytes(text: str) -> int:
    return int(_number(text, 1 / 1024, 1024.0) * 2**20)


def _fraction(text: str) -> float:
    return _number(text, 0.0, 1.0)


def _http_url(text: str) -> str:
    """An ``http(s)://host[:port][/path]`` URL, checked now rather than by every task."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port  # raises for a port outside 0..65535
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a valid URL {text!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"expected http://HOST[:PORT] or https://..., got {text!r}")
    if port == 0:
        raise argparse.ArgumentTypeError(f"port 0 cannot be connected to: {text!r}")
    return text.strip()


def _aliases(args: argparse.Namespace) -> Aliases | None:
    """``--aliases FILE`` over the default aliases (by name); ``--no-default-aliases``: the
    file alone (no file and no defaults: names must be agent ids)."""
    if isinstance(args.aliases, Aliases):  # built by a plan option (--route, --goal)
        return args.aliases
    if args.aliases is None:
        return Aliases({}) if args.no_default_aliases else None
    return Aliases.from_file(args.aliases, with_defaults=not args.no_default_aliases)


def _source(args: argparse.Namespace) -> tuple[Any, Plan | str | None]:
    """(tasks, plan) from the options; exactly one source is allowed."""
    for build in _PLAN_BUILDERS:
        plan = build(args)
        if plan is not None:
            return None, plan
    chosen = [name for name, val in (("--example", args.example), ("-f", args.file),
                                     ("--plan-file", args.plan_file)) if val]
    if len(chosen) > 1:
        raise ConfigError(f"choose one of {', '.join(chosen)}")
    if args.plan_file:
        return None, Plan.from_file(args.plan_file)
    if args.file:
        from ..tasks import load_task_map

        source = "<stdin>" if args.file == "-" else args.file  # problems name the file
        return None, Plan.from_task_map(load_task_map(args.file), source)
    if args.example:
        return str(EXAMPLE_TASKS), None
    raise ConfigError("nothing to run: give --example, -f FILE, --plan-file FILE or --resume")


#: Above this many tasks per alias the plan shows counts and the first few tasks.
PLAN_FULL_LIMIT = 20
PLAN_SHOWN = 3


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def one_line(text: str, width: int = 90) -> str:
    """``text`` on one line, cut with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[:width - 1] + "…"


def format_plan(run: Run) -> str:
    """The plan, phase by phase and alias by alias; long lists show counts and a few tasks."""
    engine = run.engine
    phases = engine.plan.phases
    lines = [f"Plan ({plural(len(engine.nodes), 'task')}, {plural(len(phases), 'phase')}, "
             f"run {run.run_id})"]
    by_phase: dict[int, dict[str, list[Any]]] = {}
    for node in engine.nodes.values():
        by_phase.setdefault(node.task.phase, {}).setdefault(node.task.alias, []).append(node)
    for index, aliases in sorted(by_phase.items()):
        indent = "  "
        if len(phases) > 1:
            name = phases[index].name if index < len(phases) else str(index)
            lines.append(f"  phase {index + 1} · {name}")
            indent = "    "
        for alias, nodes in aliases.items():
            r = engine.resolved[alias]
            timeout = f"{r.timeout_ms} ms" if r.timeout_ms else "none"
            lines.append(f"{indent}{alias} -> {r.agent_id} (limit {r.max_parallel_tasks}, "
                         f"timeout {timeout}): {plural(len(nodes), 'task')}")
            shown = nodes if len(nodes) <= PLAN_FULL_LIMIT else nodes[:PLAN_SHOWN]
            for node in shown:
                deps = f"  [after {', '.join(node.deps)}]" if node.deps else ""
                why = node.task.meta.get("routedBy") if node.task.meta else None
                lines.append(f"{indent}  - {node.task.key}: {one_line(node.task.text)}{deps}"
                             + (f"  (routed: {one_line(str(why), 60)})" if why else ""))
            if len(shown) < len(nodes):
                lines.append(f"{indent}  … and {plural(len(nodes) - len(shown), 'more task')}")
    return "\n".join(lines)


class TerminalView:
    """Prints per-task lines (and streamed chunks) for ``--verbose``."""

    def __init__(self, stream: Any = sys.stdout) -> None:
        self.stream = stream

    def __call__(self, event: Event) -> None:
        kind = event["kind"]
        if kind == "task_started":
            print(f"  > {event['alias']}/{event['key']} started", file=self.stream, flush=True)
        elif kind == "task_chunk":  # every line carries its task, so streams stay apart
            prefix = f"  [{event['alias']}/{event['key']}] "
            text = "".join(prefix + line + "\n" for line in event["content"].splitlines() or [""])
            self.stream.write(text)
            self.stream.flush()
        elif kind == "task_step":
            print(f"  [{event['alias']}/{event['key']}] {format_step(event)}", file=self.stream,
                  flush=True)
        elif kind == "task_retry":
            print(f"  ~ {event['alias']}/{event['key']} retry after {event['delayMs']} ms: "
                  f"{event['error']['message'][:120]}", file=self.stream, flush=True)
        elif kind in TERMINAL_KINDS:
            ms = f" in {event['ms']:.1f} ms" if event.get("ms") is not None else ""
            detail = "" if event.get("ok") else f": {(event.get('error') or {}).get('message', '')}"
            print(f"  < {event['alias']}/{event['key']} {TERMINAL_KINDS[kind]}{ms}{detail[:200]}",
                  file=self.stream, flush=True)
        elif kind == "plan_revised":
            added_aliases = ", ".join(event.get("aliases") or {})
            print(f"  * plan revised after phase {event.get('phase')}: "
                  f"+{len(event.get('added') or [])} -{len(event.get('removed') or [])} "
                  f"~{len(event.get('changed') or [])} task(s)"
                  + (f"; aliases added: {added_aliases}" if added_aliases else "")
                  + (f" ({one_line(str(event['reason']), 120)})" if event.get("reason") else ""),
                  file=self.stream, flush=True)
        elif kind == "decomposer_invalid":
            print(f"  ! planner output invalid, using the heuristic plan: {event.get('reason')}",
                  file=self.stream, flush=True)


def add_agent_options(p: argparse.ArgumentParser) -> None:
    """Options of the coding-agent runtimes (``codex-cli``, ``claude-code``)."""
    ag = p.add_argument_group("coding agents (--runtime codex-cli | claude-code)")
    ag.add_argument("--agent-bin", metavar="PATH",
                    help="the agent CLI (default: $CODEXFLOW_CODEX_BIN / $CODEXFLOW_CLAUDE_BIN, "
                         "then PATH)")
    ag.add_argument("--agent-model", metavar="MODEL", help="model for every agent task")
    ag.add_argument("--codex-config", metavar="KEY=VALUE", action="append", type=_key_value,
                    help="a Codex setting passed as `-c KEY=VALUE` (repeatable)")
    ag.add_argument("--permission-mode", choices=["acceptEdits", "default", "plan",
                                                  "bypassPermissions"],
                    help="Claude Code permission mode (default acceptEdits)")
    ag.add_argument("--allowed-tools", metavar="TOOLS", type=_tool_list,
                    help="Claude Code tools, comma-separated (default: from the agent card)")
    ag.add_argument("--workspace", choices=["worktree", "copy", "none"],
                    help="where each task runs (default: worktree in a git repository, else copy)")
    ag.add_argument("--repo", metavar="PATH", help="the codebase the agents work on (default .)")
    ag.add_argument("--base", metavar="REF", help="commit the workspaces start from (default HEAD)")
    ag.add_argument("--workspaces-dir", metavar="PATH",
                    help="where workspaces go (default ~/.cache/codexflow/worktrees or "
                         "/workspaces, per repository)")


def _key_value(text: str) -> str:
    key, sep, _ = text.partition("=")
    if not sep or not key.strip() or any(c.isspace() for c in key):
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return text


def _tool_list(text: str) -> list[str]:
    tools = [t.strip() for t in text.split(",") if t.strip()]
    if not tools:
        raise argparse.ArgumentTypeError("expected one or more tool names, comma-separated")
    return tools


def agent_options(args: argparse.Namespace) -> dict[str, Any]:
    """The coding-agent options that were given (an alias may pick an agent runtime even when
    ``--runtime`` is another)."""
    names = ("agent_bin", "agent_model", "codex_config", "permission_mode", "allowed_tools",
             "workspace", "repo", "base", "workspaces_dir")
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def _env_url() -> str | None:
    url = os.environ.get("CODEX_URL")
    if url:
        try:
            return _http_url(url)
        except argparse.ArgumentTypeError as exc:
            raise ConfigError(f"$CODEX_URL: {exc}") from None
    return None


def runtime_options(args: argparse.Namespace) -> dict[str, Any]:
    if args.runtime in ("codex-cli", "claude-code"):
        return agent_options(args)
    if args.runtime == "codex":
        url = args.codex_url or _env_url()
        if not url:
            raise ConfigError("--runtime codex needs an endpoint: pass --codex-url URL or set "
                              "CODEX_URL (start one with `codex-flow serve`)")
        limits = {f"max_{n}_bytes": getattr(args, f"max_{n}_mib")
                  for n in ("reply", "event", "stream") if getattr(args, f"max_{n}_mib")}
        return {"url": url, "api_key": args.codex_key or os.environ.get("CODEX_API_KEY"),
                "provider": args.provider, "proxy_env": args.proxy_env,
                "ca_bundle": args.ca_bundle, **limits, **agent_options(args)}
    return {"latency_ms": args.stub_latency_ms, "jitter": args.stub_jitter,
            "cpu_ms": args.stub_cpu_ms, **agent_options(args)}


async def _execute(run: Run) -> RunResult:
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGINT, run.cancel, "interrupted (Ctrl-C)")
        loop.add_signal_handler(signal.SIGTERM, run.cancel, "terminated (SIGTERM)")
    except (NotImplementedError, RuntimeError):  # pragma: no cover - non-main thread / Windows
        pass
    return await run.execute()


def _otlp_exporter(url: str) -> Any:
    """``--otlp-endpoint``: the live exporter; a bad URL or header, or a missing package, is a
    ConfigError before anything runs. Failed exports are one warning line."""
    try:
        from ..analysis.otel_live import OtlpExporter
    except ImportError as exc:
        raise ConfigError(f"--otlp-endpoint needs the otel extra: pip install "
                          f"'codexflow-nb[otel]' ({exc})") from None
    return OtlpExporter(url, on_warning=lambda message: print(
        f"codex-flow: warning: {message}", file=sys.stderr, flush=True))


def cmd_run(args: argparse.Namespace) -> int:
    loops.loop_factory()  # a bad $CODEXFLOW_LOOP fails before anything is written
    rt_options = runtime_options(args)
    if args.resume and not (args.file or args.plan_file or args.example):
        raise ConfigError("--resume needs the same -f/--plan-file/--example as the original run")
    tasks, plan = _source(args)
    view = TerminalView(sys.stderr if args.json else sys.stdout) if args.verbose else None
    dry = args.dry_run
    exporter = _otlp_exporter(args.otlp_endpoint) if args.otlp_endpoint else None
    run = prepare_run(
        tasks, plan=plan, aliases=_aliases(args), runtime=args.runtime, agents_dir=args.agents_dir,
        on_event=view, resume=args.resume, max_concurrency=args.max_concurrency,
        executor=args.executor, dask_address=args.dask_address,
        timeout_ms=args.timeout_ms, retries=args.retries, stream=args.stream,
        continue_on_failure=args.continue_on_failure, strict_tools=args.strict_tools,
        log_file=None if dry else args.log_file, runs_dir=None if dry else args.runs_dir,
        fsync=args.fsync, **rt_options)
    for warning in run.warnings:
        print(f"codex-flow: warning: {warning}", file=sys.stderr)
    if args.show_plan or dry:
        print(format_plan(run), file=sys.stderr if args.json else sys.stdout)
    if dry:
        print("dry run: nothing was run or written")
        return 0
    progress = None
    if not args.verbose and not args.json:  # -v prints every task; --json keeps stdout clean
        from .progress import progress_view

        totals: dict[str, int] = {}
        for node in run.engine.nodes.values():
            totals[node.task.alias] = totals.get(node.task.alias, 0) + 1
        progress = progress_view(sys.stdout, enabled=not args.no_progress, totals=totals)
        if progress is not None:
            run.bus.subscribe(progress)
    if exporter is not None:
        run.bus.subscribe(exporter)
    try:
        result = loops.run(_execute(run))
    finally:
        if progress is not None:
            progress.close()
        if exporter is not None:
            exporter.close()  # the last spans and the run span
    if args.json:
        summary = result.summary()
        summary["tasks"] = ([t.to_dict() for t in result.tasks] if args.verbose else [
            {"alias": t.alias, "key": t.key, "taskId": t.task_id,
             "status": t.status, "ms": t.ms, "error": t.error} for t in result.tasks])
        print(json.dumps(summary, indent=2))
    else:
        print(result.summary_text(verbose=args.verbose))
    if run.engine.storage_error:
        print(f"codex-flow: error: run stopped: {run.engine.storage_error}", file=sys.stderr)
    return 0 if result.ok else 1


from . import plan_options  # noqa: E402,F401  (registers --route/--goal/--revise-plan)

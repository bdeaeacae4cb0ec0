"""``%%codexflow``: run the task map in the cell body and stream the run into the cell.

    %load_ext codexflow_nb
    %%codexflow --runtime stub --latency-ms 300
    reviewer: [Review the engine]
    architect: [Propose a layout]

    %%codexflow --runtime codex-cli --repo . --workspace worktree
    coder: [Add a --verbose flag to the CLI]

The cell waits for the run (so headless runs keep its output); progress and streamed text
(for coding agents also their steps: commands with exit codes, file changes) update one
display at most ten times a second, and the end of the run leaves a static HTML summary,
followed, when tasks ran in workspaces, by each task's changed files and diff.
Interrupt the kernel to cancel: every task still ends with a terminal event.
The codex key is read from an environment variable (``--key-env``), never from the cell,
so it cannot end up in a saved notebook.
"""

from __future__ import annotations

import argparse
import os
import queue
import shlex
import threading
from typing import Any

from . import loops
from .api import RunResult, prepare_run
from .cli.run_cmd import add_agent_options, agent_options
from .errors import CodexFlowError, ConfigError
from .events import Event
from .plan import Plan
from .runtimes import RUNTIME_NAMES
from .tasks import parse_text
from .widgets.diffs import display_changes
from .widgets.render import LiveView


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="%%codexflow", add_help=False, exit_on_error=False,
                                description="Run the task map (YAML/JSON) in the cell body.")
    p.add_argument("--runtime", choices=RUNTIME_NAMES, default="stub")
    p.add_argument("--plan", action="store_true", help="the body is a plan with phases")
    p.add_argument("--aliases", help="alias map file (YAML/JSON)")
    p.add_argument("--agents-dir", help="agents folder")
    p.add_argument("--url", help="codex endpoint URL (or $CODEX_URL)")
    p.add_argument("--key-env", default="CODEX_API_KEY",
                   help="environment variable that holds the codex key (default CODEX_API_KEY)")
    p.add_argument("--no-stream", action="store_true", help="do not stream replies")
    p.add_argument("--latency-ms", type=float, default=300.0, help="stub latency (default 300)")
    p.add_argument("--chunks", type=int, default=6, help="stub chunks per reply (default 6)")
    p.add_argument("--max-concurrency", type=int)
    p.add_argument("--timeout-ms", type=int)
    p.add_argument("--retries", type=int)
    p.add_argument("--log-file", default="data/logs/events.jsonl")
    p.add_argument("--runs-dir", default=".runs")
    p.add_argument("--no-log", action="store_true", help="write no event log and no .runs")
    p.add_argument("--interval", type=float, default=0.1,
                   help="seconds between display updates (default 0.1)")
    p.add_argument("--out", metavar="NAME", help="store the RunResult in this variable")
    add_agent_options(p)  # --repo, --workspace, --base, --agent-model, --agent-bin, ...
    return p


def parse_line(line: str) -> argparse.Namespace:
    """The magic's options; ConfigError for a bad line."""
    parser = _parser()
    try:
        args, extra = parser.parse_known_args(shlex.split(line))
    except (argparse.ArgumentError, ValueError) as exc:
        raise ConfigError(f"%%codexflow: {exc}") from None
    if extra:
        raise ConfigError(f"%%codexflow: unknown option(s): {' '.join(extra)} "
                          f"({parser.format_usage().strip()})")
    if args.interval < 0:
        raise ConfigError("%%codexflow: --interval must be >= 0")
    return args


def _plan(body: str, as_plan: bool) -> Plan:
    if not body.strip():
        raise ConfigError("%%codexflow: the cell body must hold a task map (YAML or JSON)")
    data = parse_text(body, "cell")
    return Plan.from_data(data, "cell") if as_plan else Plan.from_task_map(data, "cell")


def run_cell(line: str, body: str) -> RunResult:
    """Run a cell body with the magic's options; blocks until the run ends."""
    args = parse_line(line)
    plan = _plan(body, args.plan)
    if args.runtime == "codex":
        url = args.url or os.environ.get("CODEX_URL")
        if not url:
            raise ConfigError("%%codexflow: --runtime codex needs --url URL or $CODEX_URL")
        rt: dict[str, Any] = {"url": url, "api_key": os.environ.get(args.key_env) or None}
    elif args.runtime == "stub":
        rt = {"latency_ms": args.latency_ms, "chunks": args.chunks}
    else:
        rt = {}
    rt.update(agent_options(args))  # an alias may pick a coding agent with any --runtime
    events: queue.SimpleQueue[Event | None] = queue.SimpleQueue()
    run = prepare_run(plan=plan, aliases=args.aliases, agents_dir=args.agents_dir,
                      runtime=args.runtime, on_event=events.put, stream=not args.no_stream,
                      max_concurrency=args.max_concurrency, timeout_ms=args.timeout_ms,
                      retries=args.retries, log_file=None if args.no_log else args.log_file,
                      runs_dir=None if args.no_log else args.runs_dir, **rt)
    # The cell holds the kernel's loop, so the run gets a loop of its own in a thread and the
    # cell's thread draws the events: displays keep this cell as their parent.
    view = LiveView(plan, interval=args.interval, timers=False)
    view.show()
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["result"] = loops.run(run.execute())
        except BaseException as exc:  # re-raised in the cell's thread
            outcome["error"] = exc
        finally:
            events.put(None)

    thread = threading.Thread(target=work, name="codexflow-magic", daemon=True)
    thread.start()
    interrupted = False
    while True:
        try:
            if interrupted:
                run.engine.cancel_threadsafe("interrupted")
            try:
                event = events.get(timeout=max(0.01, args.interval / 2))
            except queue.Empty:
                view.poll()
                continue
            if event is None:
                break
            view(event)
            view.poll()
        except KeyboardInterrupt:
            interrupted = True
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    result: RunResult = outcome["result"]
    if view.state.has_workspaces:
        display_changes(result)  # static HTML: it stays in a saved notebook
    return result


def register(ipython: Any) -> None:
    """Register ``%%codexflow`` with an IPython shell."""
    from IPython.core.error import UsageError

    def codexflow(line: str, cell: str) -> None:
        try:
            result = run_cell(line, cell)
        except ConfigError as exc:
            raise UsageError("\n".join(exc.problems)) from None
        except CodexFlowError as exc:  # e.g. the event log cannot be written
            raise UsageError(str(exc)) from None
        name = parse_line(line).out
        if name:
            ipython.user_ns[name] = result

    codexflow.__doc__ = _parser().format_help()
    ipython.register_magic_function(codexflow, magic_kind="cell", magic_name="codexflow")

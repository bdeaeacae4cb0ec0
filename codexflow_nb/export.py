"""Share a finished run as an executed notebook (``codex-flow export-run``).

The notebook holds the run's summary, the per-alias and per-task tables, the charts and (unless
left out) each task's output, reads them from the event log with ``codexflow_nb.analysis`` and is
executed with nbclient before it is written, so it reads without a kernel. With
``static_images`` the charts also carry a PNG (kaleido + Chromium), so GitHub shows them too.
nbformat and nbclient load only when a notebook is exported.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import CodexFlowError, ConfigError

if TYPE_CHECKING:
    import nbformat

LATEST = "last"
#: The kernel's own log stays quiet below errors (ipykernel warns about its TCP transport).
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]
#: Characters of each task's output shown in the exported notebook.
OUTPUT_PREVIEW = 1500


class ExportError(CodexFlowError):
    """The exported notebook could not be executed."""


@dataclass
class RunFacts:
    """What the log says about one run, enough to write the notebook's heading."""

    run_id: str
    runtime: str | None = None
    started: str | None = None
    tasks: int | None = None
    phases: list[str] = field(default_factory=list)
    finished: bool = False
    ok: bool | None = None
    cancelled: str | None = None
    statuses: dict[str, int] = field(default_factory=dict)
    has_dependencies: bool = False


def read_run(log_file: str | os.PathLike[str], run_id: str) -> RunFacts:
    """Facts about ``run_id`` (or ``last``) from the log; ConfigError when it is not there."""
    path = Path(log_file)
    if not path.is_file():
        raise ConfigError(f"{path}: no event log here (pass --log-file)")
    try:
        runs = list(dict.fromkeys(e["runId"] for e in _events(path, b"run_started")
                                  if e.get("kind") == "run_started"))
        if not runs:
            raise ConfigError(f"{path}: the event log holds no runs")
        wanted = runs[-1] if run_id == LATEST else run_id
        facts, seen = RunFacts(wanted), False
        for event in _events(path, wanted.encode()):
            if event["runId"] == wanted:
                seen = True
                _apply(facts, event)
    except OSError as exc:  # unreadable (permissions), or gone meanwhile
        raise ConfigError(f"{path}: cannot read the event log: {exc.strerror or exc}") from None
    if not seen:
        raise ConfigError(f"run {run_id!r} is not in {path} (latest runs there: "
                          f"{', '.join(runs[-5:])}; '{LATEST}' picks the latest)")
    return facts


def _events(path: Path, needle: bytes) -> Iterator[dict[str, Any]]:
    """Events of the log whose line contains ``needle`` (checked before parsing, for speed)."""
    with path.open("rb") as fh:
        for raw in fh:
            if needle not in raw:
                continue
            try:
                event = json.loads(raw)
            except ValueError:  # a torn or damaged line; analysis.load_events reports those
                continue
            if isinstance(event, dict) and isinstance(event.get("runId"), str):
                yield event


def _apply(facts: RunFacts, event: dict[str, Any]) -> None:
    kind = event.get("kind")
    if kind == "run_started":
        facts.runtime = event.get("runtime")
        facts.started = facts.started or event.get("ts")
        facts.tasks = event.get("tasks")
        facts.phases = [str(p) for p in event.get("phases") or []]
        facts.finished = False  # a resumed run starts a new session
    elif kind == "run_complete":
        facts.finished = True
        facts.ok = event.get("ok")
        facts.cancelled = event.get("cancelled")
        facts.statuses = dict(Counter(event.get("counts") or {}))
    elif kind == "task_queued" and event.get("dependsOn"):
        facts.has_dependencies = True


def build_notebook(facts: RunFacts, *, log_file: str | os.PathLike[str],
                   runs_dir: str | os.PathLike[str] | None = ".runs",
                   notebook_dir: str | os.PathLike[str] = ".", include_outputs: bool = True,
                   static_images: bool = True) -> nbformat.NotebookNode:
    """The notebook for one run (not executed). Paths inside it are relative to
    ``notebook_dir`` when they can be, so the notebook and the log can move together."""
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    log = _relative(log_file, notebook_dir)
    store = _relative(runs_dir, notebook_dir) if runs_dir is not None else None
    md, code = new_markdown_cell, new_code_cell
    cells = [md(_heading(facts)), code(_setup_source(facts.run_id, log, store, static_images))]
    cells += [
        md("## Summary\n\nMakespan, capacity and parallel efficiency, retries, tokens and cost "
           "(cost uses `codexflow_nb/data/pricing.yaml`; unknown models have none)."),
        code("analysis.run_summary(tasks, events).T"),
        md("## Per alias\n\nTask counts by status, latency of completed tasks (ms), time "
           "waiting for a slot, tokens, cost and the busiest concurrency seen."),
        code("analysis.alias_summary(tasks)"),
        md("## Tasks"),
        code("tasks[['key', 'alias', 'agent', 'phase', 'status', 'attempts', 'queued_ms', "
             "'run_ms', 'tokens_in', 'tokens_out', 'cost', 'error_type', 'error_message']]"
             ".round({'queued_ms': 1, 'run_ms': 1})"),
    ]
    if any(s != "completed" for s in facts.statuses) or not facts.finished:
        cells += [md("## Tasks that did not complete"),
                  code("tasks.loc[tasks['status'] != 'completed', ['key', 'alias', 'status', "
                       "'attempts', 'error_type', 'error_message']]")]
    cells += [
        md("## Timeline\n\nOne row per alias slot, coloured by status; hover for the task."),
        code("charts.timeline(tasks, title=f'Run {RUN_ID}: tasks over time')"),
        md("## Concurrency\n\nRunning tasks per alias over time; dashed: each alias's limit."),
        code("charts.concurrency(tasks, title='Running tasks per alias')"),
        md("## Task times"),
        code("charts.latency(tasks, title='Task time per alias (completed tasks)')"),
        md("## Tokens and cost"),
        code("charts.usage(tasks, title='Tokens and cost per alias')"),
    ]
    if facts.has_dependencies:
        cells += [md("## Critical path\n\nThe chain of dependencies that ended last."),
                  code("analysis.critical_path(tasks, events)")]
    if include_outputs and store is not None:
        cells += [md("## Outputs\n\nEach task's summary and the start of its output, read from "
                     "the run store."), code(_outputs_source())]
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python",
                                 "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["codexflow"] = {"runId": facts.run_id, "exportedFrom": str(log)}
    return nb


def _relative(path: str | os.PathLike[str], start: str | os.PathLike[str]) -> str:
    absolute = Path(path).resolve()
    try:
        return os.path.relpath(absolute, Path(start).resolve())
    except ValueError:  # another drive (Windows)
        return str(absolute)


def _heading(f: RunFacts) -> str:
    counts = ", ".join(f"{n} {s}" for s, n in sorted(f.statuses.items())) or "no terminal counts"
    state = ("finished, all tasks completed" if f.finished and f.ok else
             f"cancelled: {f.cancelled}" if f.cancelled else
             "finished with failures" if f.finished else
             "**not finished**: the log has no `run_complete` for it (interrupted, or still "
             "running when exported)")
    phases = f" in {len(f.phases)} phases ({', '.join(f.phases)})" if len(f.phases) > 1 else ""
    return "\n".join([
        f"# Run `{f.run_id}`", "",
        f"- started {f.started or 'unknown'} (UTC), runtime `{f.runtime or 'unknown'}`",
        f"- {f.tasks if f.tasks is not None else '?'} tasks{phases}: {counts}",
        f"- {state}", "",
        "Exported with `codex-flow export-run`; the outputs below were computed from the event "
        "log when the notebook was exported. Re-run the cells to recompute them (the log path "
        "is in the first code cell).",
    ])


def _setup_source(run_id: str, log: str, store: str | None, static_images: bool) -> str:
    lines = ["from pathlib import Path", "", "import pandas as pd", "",
             "from codexflow_nb import analysis, charts", "",
             f"RUN_ID = {run_id!r}", f"LOG_FILE = Path({log!r})",
             f"RUNS_DIR = Path({store!r})" if store is not None else "RUNS_DIR = None", ""]
    if static_images:
        lines += ["# Charts also store a PNG, so they show where plotly's JavaScript does not run.",
                  "charts.use_static_fallback()"]
    lines += ["pd.set_option('display.max_columns', 40)",
              "events = analysis.load_events(LOG_FILE, runs=[RUN_ID])",
              "tasks = analysis.tasks_frame(events)",
              "print(f'{len(events)} events, {len(tasks)} tasks')"]
    return "\n".join(lines)


def _outputs_source() -> str:
    return "\n".join([
        "import json",
        "",
        "for row in tasks.itertuples():",
        "    path = RUNS_DIR / str(row.alias) / str(row.task_id) / 'output.json'",
        "    print(f'=== {row.key} · {row.alias} · {row.status}')",
        "    if pd.notna(row.summary) and row.summary:",
        "        print(row.summary)",
        "    try:",
        "        doc = json.loads(path.read_text(encoding='utf-8'))",
        "    except (OSError, ValueError):",
        "        print('(no output in the run store)')",
        "        continue",
        "    output = doc.get('output')",
        "    text = output.get('text') if isinstance(output, dict) else output",
        "    text = text if isinstance(text, str) else json.dumps(text, indent=1, default=str)",
        f"    print(text[:{OUTPUT_PREVIEW}] + (' …' if len(text) > {OUTPUT_PREVIEW} else ''))",
        "    print()",
    ])


def execute_notebook(nb: nbformat.NotebookNode, cwd: str | os.PathLike[str], *,
                     timeout: int = 300, kernel_name: str = "python3") -> None:
    """Execute ``nb`` in place on a fresh kernel; ExportError names the failing cell."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel_name, record_timing=False,
                            resources={"metadata": {"path": str(cwd)}},
                            extra_arguments=KERNEL_ARGUMENTS)
    try:
        client.execute()
    except CellExecutionError as exc:
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()  # IPython colours the error
        last = text.splitlines()[-1] if text else type(exc).__name__
        hint = (f" (the {kernel_name!r} kernel runs a Python without codexflow_nb: install it "
                "there, or register this one with `python -m ipykernel install --user`)"
                if "No module named 'codexflow_nb'" in last else "")
        raise ExportError(f"the exported notebook failed while executing: {last}{hint}") from None


def export_run(run_id: str, notebook: str | os.PathLike[str], *,
               log_file: str | os.PathLike[str] = "data/logs/events.jsonl",
               runs_dir: str | os.PathLike[str] | None = ".runs", execute: bool = True,
               include_outputs: bool = True, static_images: bool = True,
               overwrite: bool = False, timeout: int = 300) -> Path:
    """Write (and by default execute) a notebook for ``run_id`` (``"last"``: the latest run).

    Nothing is written when the run is unknown, the target exists (unless ``overwrite``) or
    execution fails. Returns the notebook's path.
    """
    out = Path(notebook)
    if out.suffix != ".ipynb":
        raise ConfigError(f"--notebook {out}: the file name must end in .ipynb")
    if out.exists() and not overwrite:
        raise ConfigError(f"--notebook {out}: the file exists (pass --force to replace it)")
    if out.parent.exists() and not out.parent.is_dir():
        raise ConfigError(f"--notebook {out}: {out.parent} is not a folder")
    try:  # checked first, for a clear message; the notebook's kernel needs them too
        import nbformat  # noqa: F401
        if execute:
            import nbclient  # noqa: F401

            from . import analysis, charts  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"export-run needs {exc.name}: pip install "
                          "'codexflow-nb[notebook]'") from None
    if runs_dir is not None and Path(runs_dir).exists() and not Path(runs_dir).is_dir():
        raise ConfigError(f"--runs-dir {runs_dir}: not a folder (expected the run store, .runs)")
    facts = read_run(log_file, run_id)
    if runs_dir is not None and not Path(runs_dir).is_dir():
        runs_dir = None  # no run store: the notebook leaves the outputs section out
    out.parent.mkdir(parents=True, exist_ok=True)
    nb = build_notebook(facts, log_file=log_file, runs_dir=runs_dir, notebook_dir=out.parent,
                        include_outputs=include_outputs, static_images=static_images)
    if execute:
        execute_notebook(nb, out.parent, timeout=timeout)
    import nbformat

    nbformat.validate(nb)
    tmp = out.with_name(f".{out.name}.tmp")
    nbformat.write(nb, tmp)
    os.replace(tmp, out)
    return out

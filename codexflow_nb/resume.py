"""Resuming a run: which tasks of a logged run already succeeded, and their saved results.

A task counts as done when the event log holds a ``task_complete`` event with ``ok`` for it
and, when a run store is in use, its ``output.json`` is whole and says ``ok``. A ``kill -9``
can land between the two (the event is logged, the output is still queued for the disk); such
a task is run again rather than resumed without its output.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .aliases import check_safe_name
from .errors import ConfigError
from .plan import Plan

if TYPE_CHECKING:
    from .engine import TaskResult
    from .runstore import RunStore

#: How many mismatch lines to show before summarising the rest.
_MAX_PROBLEMS = 5


@dataclass
class LoggedRun:
    """What the event log says about one run id (over all its segments: the first execution
    and every resume, each from ``run_started`` to ``run_complete``)."""

    run_id: str
    segments: int = 0
    finished_segments: int = 0
    planned_tasks: int | None = None
    #: key -> (taskId, alias) of every task with a successful terminal event
    succeeded: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: key -> (taskId, task text or None) as first logged
    logged: dict[str, tuple[str, str | None]] = field(default_factory=dict)


def expected_task_id(run_id: str, seq: int) -> str:
    """The task id the engine gives the ``seq``-th task (1-based, plan order) of ``run_id``."""
    return f"{run_id}-{seq:06d}"


def scan_run(log_file: str | os.PathLike[str], run_id: str) -> LoggedRun:
    """Read the events of ``run_id`` from the log. Torn or unparsable lines are ignored."""
    found = LoggedRun(run_id)
    needle = json.dumps(run_id)
    with open(log_file, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if needle not in line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if not isinstance(event, dict) or event.get("runId") != run_id:
                continue
            kind, key = event.get("kind"), event.get("key")
            if kind == "run_started":
                found.segments += 1
                if found.planned_tasks is None and isinstance(event.get("tasks"), int):
                    found.planned_tasks = event["tasks"]
            elif kind == "run_complete":
                found.finished_segments += 1
            if not isinstance(key, str) or not isinstance(event.get("taskId"), str):
                continue
            if key not in found.logged or (kind == "task_queued" and found.logged[key][1] is None):
                text = event.get("task") if kind == "task_queued" else None
                found.logged[key] = (event["taskId"], text if isinstance(text, str) else None)
            if kind == "task_complete" and event.get("ok") is True:
                found.succeeded[key] = (event["taskId"], str(event.get("alias")))
    return found


def _plan_mismatches(logged: LoggedRun, plan: Plan) -> list[str]:
    """Lines describing how ``plan`` differs from the plan the logged run executed."""
    problems: list[str] = []
    tasks = plan.tasks
    if logged.planned_tasks is not None and logged.planned_tasks != len(tasks):
        problems.append(f"the run had {logged.planned_tasks} tasks, this plan has {len(tasks)}")
    seq_of = {t.key: seq for seq, t in enumerate(tasks, 1)}
    text_of = {t.key: t.text for t in tasks}
    for key, (task_id, text) in logged.logged.items():
        if key not in seq_of:
            problems.append(f"task {key!r} of the run is not in this plan")
        elif task_id != expected_task_id(logged.run_id, seq_of[key]):
            problems.append(f"task {key!r} is at a different position in this plan")
        elif text is not None and text != text_of[key]:
            problems.append(f"task {key!r} has a different text in this plan")
    if len(problems) > _MAX_PROBLEMS:
        problems[_MAX_PROBLEMS:] = [f"... and {len(problems) - _MAX_PROBLEMS} more differences"]
    return problems


def _output_ok(runs_dir: Path, alias: str, task_id: str) -> bool:
    try:
        doc = json.loads((runs_dir / alias / task_id / "output.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("ok") is True


def completed_keys(log_file: str | os.PathLike[str] | None, run_id: str, plan: Plan,
                   runs_dir: str | os.PathLike[str] | None = None) -> set[str]:
    """Keys of the plan's tasks that already succeeded in run ``run_id``.

    Raises ConfigError when the run id is unsafe or unknown, the log is missing, or ``plan``
    is not the plan the run executed (a different task file, order or text).
    """
    bad = check_safe_name(run_id, "run id")
    if bad:
        raise ConfigError(f"cannot resume: {bad}")
    if log_file is None:
        raise ConfigError(f"cannot resume {run_id!r} without an event log (it records what ran)")
    if not Path(log_file).is_file():
        raise ConfigError(f"cannot resume {run_id!r}: no event log at {log_file}")
    logged = scan_run(log_file, run_id)
    if not logged.segments and not logged.logged:
        raise ConfigError(f"cannot resume {run_id!r}: no such run in {log_file}")
    problems = _plan_mismatches(logged, plan)
    if problems:
        raise ConfigError([f"cannot resume {run_id!r}: {p}; pass the same task or plan file "
                           "and aliases as the original run" for p in problems])
    done = set(logged.succeeded)
    if runs_dir is not None:
        root = Path(runs_dir)
        done = {key for key in done if _output_ok(root, logged.succeeded[key][1],
                                                  logged.succeeded[key][0])}
    return done


def restore_result(result: TaskResult, store: RunStore | None) -> Any:
    """Fill a resumed task's result from its saved ``output.json``; returns its output."""
    if store is None:
        return None
    doc = store.load_output(result.alias, result.task_id)
    if not isinstance(doc, dict):
        return None
    result.summary = doc.get("summary")
    result.usage = doc.get("usage")
    result.ms = doc.get("ms")
    result.attempts = int(doc.get("attempts") or 0)
    return doc.get("output")

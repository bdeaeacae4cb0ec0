"""Resuming a run: which tasks of a logged run already succeeded."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import ConfigError
from .plan import Plan


def completed_keys(log_file: str | os.PathLike[str] | None, run_id: str, plan: Plan) -> set[str]:
    """Keys of the plan's tasks that ended ``task_complete`` with ok in run ``run_id``."""
    if log_file is None or not Path(log_file).is_file():
        raise ConfigError(f"cannot resume {run_id!r}: no event log at {log_file}")
    seen_run = False
    done: set[str] = set()
    with open(log_file, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if run_id not in line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("runId") != run_id:
                continue
            seen_run = True
            if event.get("kind") == "task_complete" and event.get("ok"):
                done.add(event.get("key"))
    if not seen_run:
        raise ConfigError(f"cannot resume {run_id!r}: no such run in {log_file}")
    keys = {t.key for t in plan.tasks}
    return done & keys

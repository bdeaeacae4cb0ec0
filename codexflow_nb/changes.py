"""What the coding agents of a run changed: list, show and apply each task's patch.

Read from the event log (``task_workspace`` and terminal events carry the workspace and the
``changes`` summary) and the run store (``.runs/<alias>/<taskId>/changes.patch``). Applying a
patch to the main checkout is the one thing here that changes it, and only on request.
"""

from __future__ import annotations

import os
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .errors import ConfigError
from .events import TERMINAL_KINDS


@dataclass
class TaskChanges:
    """One task's change: its files with line counts, and where its patch is."""

    run_id: str
    alias: str
    key: str
    task_id: str
    status: str = "running"
    files: list[dict[str, Any]] = field(default_factory=list)
    insertions: int = 0
    deletions: int = 0
    workspace: dict[str, Any] | None = None
    patch_path: Path | None = None
    summary: str | None = None

    @property
    def label(self) -> str:
        return f"{self.alias}/{self.key}"

    def patch(self) -> str:
        """The patch text: ``changes.patch`` from the run store, else the diff of the task's
        branch against its start (both say the same; the branch outlives a pruned store)."""
        if self.patch_path is not None and self.patch_path.is_file():
            return self.patch_path.read_text(encoding="utf-8", errors="replace")
        ws = self.workspace or {}
        if ws.get("kind") == "worktree" and ws.get("branch") and ws.get("start"):
            proc = subprocess.run(["git", "diff", "--binary", "--full-index", "--no-renames",
                                   ws["start"], ws["branch"]], cwd=ws.get("repo") or ".",
                                  capture_output=True)
            if proc.returncode == 0:
                return proc.stdout.decode(errors="replace")
        raise ConfigError(f"{self.label}: no patch kept for task {self.task_id} "
                          "(its run store folder and branch are gone)")

    def to_dict(self) -> dict[str, Any]:
        return {"runId": self.run_id, "alias": self.alias, "key": self.key, "taskId": self.task_id,
                "status": self.status, "files": self.files, "insertions": self.insertions,
                "deletions": self.deletions, "workspace": self.workspace,
                "patch": str(self.patch_path) if self.patch_path else None}


def _events(log_file: Path) -> list[dict[str, Any]]:
    try:  # O_NONBLOCK: a FIFO must not wait for a writer (nor /dev/zero be read forever)
        fd = os.open(log_file, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ConfigError(f"{log_file}: cannot read the event log: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise ConfigError(f"{log_file}: a folder, not the event log (pass --log-file)")
        if not stat.S_ISREG(mode):
            raise ConfigError(f"{log_file}: not a regular file (expected the event log)")
        with os.fdopen(os.dup(fd), "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ConfigError(f"{log_file}: cannot read the event log: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    out = []
    for line in data.splitlines():
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(event, dict):
            out.append(event)
    return out


def run_changes(run_id: str = "last", *, log_file: str | os.PathLike[str] = "data/logs/events.jsonl",
                runs_dir: str | os.PathLike[str] | None = ".runs") -> list[TaskChanges]:
    """Every task of ``run_id`` (``last``: the newest run in the log) that ran in a workspace,
    in plan order."""
    if runs_dir is not None and Path(runs_dir).exists() and not Path(runs_dir).is_dir():
        raise ConfigError(f"--runs-dir {runs_dir}: not a folder (expected the run store, .runs)")
    events = _events(Path(log_file))
    if run_id == "last":
        started = [e.get("runId") for e in events if e.get("kind") == "run_started"]
        if not started:
            raise ConfigError(f"{log_file}: no run in the event log")
        run_id = str(started[-1])
    tasks: dict[str, TaskChanges] = {}
    seen_run = False
    for e in events:
        if e.get("runId") != run_id:
            continue
        seen_run = True
        task_id = e.get("taskId")
        if not isinstance(task_id, str):
            continue
        kind = e.get("kind")
        if kind == "task_workspace":
            tc = tasks.setdefault(task_id, TaskChanges(run_id, str(e.get("alias")),
                                                       str(e.get("key")), task_id))
            tc.workspace, tc.status = e.get("workspace"), "running"
            tc.files, tc.insertions, tc.deletions = [], 0, 0
        elif kind in TERMINAL_KINDS and task_id in tasks:
            tc = tasks[task_id]
            tc.status = TERMINAL_KINDS[kind]
            tc.summary = e.get("summary") or (e.get("error") or {}).get("message")
            changes = e.get("changes") or {}
            tc.files = list(changes.get("files") or [])
            tc.insertions = int(changes.get("insertions") or 0)
            tc.deletions = int(changes.get("deletions") or 0)
    if not seen_run:
        raise ConfigError(f"{log_file}: no run {run_id!r} in the event log")
    for tc in tasks.values():
        if runs_dir is not None:
            path = Path(runs_dir) / tc.alias / tc.task_id / "changes.patch"
            tc.patch_path = path if path.is_file() else None
    return sorted(tasks.values(), key=lambda t: t.task_id)


def find_task(changes: list[TaskChanges], name: str) -> TaskChanges:
    """A task by key (``reviewer-1``), ``alias/key``, task id, or its number in the list."""
    for tc in changes:
        if name in (tc.key, tc.task_id, tc.label):
            return tc
    if name.isdigit() and 1 <= int(name) <= len(changes):
        return changes[int(name) - 1]
    if not changes:
        raise ConfigError(f"no task {name!r}: no task of this run ran in a workspace "
                          "(--runtime codex-cli or claude-code)")
    known = ", ".join(tc.key for tc in changes[:10])
    raise ConfigError(f"no task {name!r} in run {changes[0].run_id}: choose one of {known}")


@dataclass
class ApplyResult:
    ok: bool
    message: str
    conflicts: list[str] = field(default_factory=list)


def apply_task(tc: TaskChanges, repo: str | os.PathLike[str] = ".") -> ApplyResult:
    """Apply one task's patch to ``repo`` (``git apply --3way`` in a git checkout); say what
    conflicted. An empty patch is a no-op."""
    text = tc.patch()
    if not text.strip():
        return ApplyResult(True, f"{tc.label}: nothing to apply (the task changed no file)")
    folder = Path(repo)
    if not folder.is_dir():
        raise ConfigError(f"--repo {repo}: not a folder")
    inside = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=folder,
                            capture_output=True, text=True).stdout.strip() == "true"
    argv = ["git", "apply", "--3way", "--whitespace=nowarn"] if inside else \
        ["git", "apply", "--whitespace=nowarn"]
    proc = subprocess.run([*argv, "-"], cwd=folder, input=text.encode(), capture_output=True)
    err = proc.stderr.decode(errors="replace")
    conflicts = sorted({line.split("'")[1] for line in err.splitlines()
                        if "with conflicts" in line and line.count("'") >= 2})
    files = len(tc.files) or text.count("\ndiff --git ") + text.startswith("diff --git ")
    if proc.returncode == 0:
        return ApplyResult(True, f"{tc.label}: applied {files} file(s) to {folder.resolve()}")
    if conflicts:
        return ApplyResult(False, f"{tc.label}: applied with conflicts in {', '.join(conflicts)}"
                                  " (resolve the conflict markers, then git add)", conflicts)
    last = [line for line in err.splitlines() if line.strip()]
    return ApplyResult(False, f"{tc.label}: not applied: {last[-1] if last else 'git apply failed'}")

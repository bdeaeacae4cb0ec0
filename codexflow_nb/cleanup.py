"""Cleanup: keep the newest task folders per alias in the run store and trim the event log.

Safety rules, in order of importance:

* Only the runs dir and the log file are touched. Inside the runs dir only folders named like
  a task id (``<runId>-<seq>``) directly under an alias folder are removed, and staging folders
  (``.<runId>-<seq>.tmp``) a crash left behind, once they are a minute old; anything else
  (notes, stray files, a runs dir pointed at the wrong place) is left alone.
* A coding-agent task's workspace (its git worktree and ``codexflow/...`` branch, or its copy)
  goes with its task folder, as recorded in the folder's ``workspace.json``; so does the
  workspace of a task that never finished in a run that is no longer alive (a ``kill -9``).
  Branches that codexflow did not create are never touched.
* Symlinks are never followed: a symlinked alias or task folder is reported and skipped, and
  removal uses ``shutil.rmtree``'s fd-based walk, which unlinks links instead of entering them.
* The log is trimmed to its last ``max_bytes`` at a line boundary by writing the kept tail to a
  temporary file and renaming it over the log, so a crash leaves either the old or the new log.
  A log that a live run is still appending to is not trimmed (its writes would go to the
  replaced file and be lost).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError

DEFAULT_RUNS_MAX_PER_ALIAS = 10
DEFAULT_LOGS_MAX_BYTES = 5 * 1024 * 1024
#: ``<runId>-<seq>`` as the engine names tasks: ``20261125T143601123-3fa2c1-000001``.
TASK_DIR_RE = re.compile(r"^(\d{8}T\d{9}-[0-9a-f]{6})-(\d{6,})$")
#: A task's staging folder, ``.<taskId>.tmp``: a crash while it was being written leaves one.
STAGING_DIR_RE = re.compile(r"^\.(\d{8}T\d{9}-[0-9a-f]{6}-\d{6,})\.tmp$")
#: Staging folders younger than this may belong to a run that is writing them now.
STAGING_STALE_S = 60.0
_COPY_CHUNK = 1 << 20


@dataclass
class Removal:
    """A task folder removed (or, in a dry run, that would be)."""

    path: Path
    bytes: int


@dataclass
class LogTrim:
    """The log before and after trimming (sizes in bytes)."""

    path: Path
    before: int
    after: int

    @property
    def freed(self) -> int:
        return self.before - self.after


@dataclass
class CleanupReport:
    """What a cleanup removed, skipped and freed."""

    dry_run: bool
    removed: list[Removal] = field(default_factory=list)
    kept: int = 0
    skipped: list[str] = field(default_factory=list)
    log: LogTrim | None = None
    #: Why the log was not trimmed when it was over the limit (in use, a symlink, ...).
    log_refused: str | None = None
    notes: list[str] = field(default_factory=list)
    #: Workspaces (worktrees, branches, copies) removed with their tasks.
    workspaces: list[str] = field(default_factory=list)

    @property
    def freed(self) -> int:
        return sum(r.bytes for r in self.removed) + (self.log.freed if self.log else 0)

    def lines(self) -> list[str]:
        """The human report, one line per removal and a total."""
        verb = "would remove" if self.dry_run else "removed"
        out = [f"{verb} {r.path} ({human_bytes(r.bytes)})" for r in self.removed]
        out += [f"{verb} {w}" for w in self.workspaces]
        out += [f"skipped {s}" for s in self.skipped]
        out += self.notes
        if self.log is not None:
            trim = "would trim" if self.dry_run else "trimmed"
            out.append(f"log {self.log.path}: {trim} from {human_bytes(self.log.before)} to "
                       f"{human_bytes(self.log.after)}")
        if self.log_refused:
            out.append(f"log not trimmed: {self.log_refused}")
        total = "would free" if self.dry_run else "freed"
        out.append(f"{total} {human_bytes(self.freed)} ({len(self.removed)} task folder(s), "
                   f"{self.kept} kept)")
        return out


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def parse_size(text: str) -> int:
    """``5242880``, ``512K``, ``5MiB``, ``1G`` (binary units) -> bytes."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:([kmg])(?:i?b)?|b)?\s*", text, re.IGNORECASE)
    if not match:
        raise ValueError(f"not a size: {text!r} (use bytes, or K/M/G like 5MiB)")
    unit = (match.group(2) or "").lower()
    return int(match.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[unit]


def tree_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (symlinks counted as links, never followed)."""
    total = 0
    for top, dirs, files in os.walk(path, followlinks=False):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(top, d))]:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(top, name)).st_size
    return total


def _task_sort_key(name: str) -> tuple[str, int]:
    match = TASK_DIR_RE.match(name)
    assert match is not None
    return match.group(1), int(match.group(2))


def _drop_workspace(task_dir: Path, report: CleanupReport) -> None:
    """Remove the workspace recorded in a task folder's ``workspace.json``."""
    try:
        doc = json.loads((task_dir / "workspace.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if not isinstance(doc, dict) or doc.get("kind") not in ("worktree", "copy"):
        return
    if report.dry_run:
        report.workspaces.append(f"workspace {doc.get('path')}"
                                 + (f" and branch {doc['branch']}" if doc.get("branch") else ""))
        return
    from .workspaces import remove_workspace_sync

    report.workspaces.extend(remove_workspace_sync(doc))
    with contextlib.suppress(OSError):
        (task_dir / "workspace.json").unlink()


def _remove(path: Path, report: CleanupReport) -> None:
    """Remove a folder (unless the report is a dry run) and record it with its size."""
    _drop_workspace(path, report)
    size = tree_bytes(path)
    if not report.dry_run:
        shutil.rmtree(path)
    report.removed.append(Removal(path, size))


def prune_runs(runs_dir: str | os.PathLike[str], max_per_alias: int, *, dry_run: bool = False,
               report: CleanupReport | None = None,
               live: set[str] | None = None) -> CleanupReport:
    """Keep the newest ``max_per_alias`` task folders of every alias under ``runs_dir``.
    With ``live`` (the ids of runs still going), the workspaces of unfinished tasks of every
    other run are removed too (a killed run leaves no stale worktree)."""
    if max_per_alias < 0:
        raise ConfigError(f"runs max per alias must be 0 or more, not {max_per_alias}")
    report = report or CleanupReport(dry_run)
    root = Path(runs_dir)
    if not root.exists():
        report.notes.append(f"no run store at {root}")
        return report
    if not root.is_dir():
        raise ConfigError(f"{root}: not a folder (expected the run store, .runs)")
    if not shutil.rmtree.avoids_symlink_attacks:  # pragma: no cover - not on Linux/macOS
        raise ConfigError("cleanup needs a platform where shutil.rmtree never follows symlinks")
    with os.scandir(root) as entries:
        aliases = sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)
    for alias in aliases:
        if alias.is_symlink():
            report.skipped.append(f"{root / alias.name}: a symlink (not followed)")
            continue
        if not alias.is_dir(follow_symlinks=False):
            continue
        tasks: list[str] = []
        stale = time.time() - STAGING_STALE_S
        with os.scandir(alias.path) as entries:
            for entry in entries:
                if (STAGING_DIR_RE.match(entry.name) and entry.is_dir(follow_symlinks=False)
                        and entry.stat(follow_symlinks=False).st_mtime < stale):
                    _remove(root / alias.name / entry.name, report)  # left by a crash mid-write
                    continue
                if not TASK_DIR_RE.match(entry.name):
                    continue
                if entry.is_symlink():
                    report.skipped.append(f"{root / alias.name / entry.name}: a symlink (not followed)")
                elif entry.is_dir(follow_symlinks=False):
                    tasks.append(entry.name)
        tasks.sort(key=_task_sort_key, reverse=True)
        report.kept += min(len(tasks), max_per_alias)
        for name in tasks[max_per_alias:]:
            _remove(root / alias.name / name, report)
        if live is not None:
            for name in tasks[:max_per_alias]:
                folder = root / alias.name / name
                run_id = _task_sort_key(name)[0]
                if (run_id not in live and (folder / "workspace.json").exists()
                        and not (folder / "output.json").exists()):
                    _end_agents(run_id, report)  # a killed run's agents may still be running
                    _drop_workspace(folder, report)  # an unfinished task of a dead run
    return report


def _end_agents(run_id: str, report: CleanupReport) -> None:
    from .runtimes.process import kill_processes, run_processes

    pids = run_processes({run_id})
    if pids:
        if not report.dry_run:
            kill_processes(pids)
        report.notes.append(f"{'would end' if report.dry_run else 'ended'} {len(pids)} agent "
                            f"process(es) left by run {run_id}")


def _pid_alive(pid: int) -> bool:
    """True when ``pid`` runs here and looks like a Python/codex-flow process."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a reused pid of an unrelated program does not hold the log
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return b"python" in cmdline or b"codex" in cmdline


def live_runs(log_file: str | os.PathLike[str]) -> list[tuple[str, int]]:
    """``(runId, pid)`` of run segments with ``run_started`` but no ``run_complete`` whose
    process is still alive on this machine."""
    open_pids: dict[str, list[int]] = {}
    with open(log_file, "rb") as fh:
        for line in fh:
            if b'"kind":"run_' not in line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            run_id = event.get("runId") if isinstance(event, dict) else None
            if not isinstance(run_id, str):
                continue
            if event.get("kind") == "run_started":
                pid = event.get("pid")
                open_pids.setdefault(run_id, []).append(pid if isinstance(pid, int) else -1)
            elif event.get("kind") == "run_complete" and open_pids.get(run_id):
                open_pids[run_id].pop()
    return [(run_id, pid) for run_id, pids in open_pids.items() for pid in pids
            if pid > 0 and _pid_alive(pid)]


def _tail_start(fd: int, size: int, max_bytes: int) -> int:
    """Offset of the first whole line within the last ``max_bytes`` bytes."""
    start = size - max_bytes
    if start <= 0:
        return 0
    if os.pread(fd, 1, start - 1) == b"\n":
        return start
    pos = start
    while pos < size:
        chunk = os.pread(fd, _COPY_CHUNK, pos)
        newline = chunk.find(b"\n")
        if newline >= 0:
            return pos + newline + 1
        pos += len(chunk)
    return size  # one line longer than max_bytes: nothing whole fits


def trim_log(log_file: str | os.PathLike[str], max_bytes: int, *, dry_run: bool = False,
             report: CleanupReport | None = None) -> CleanupReport:
    """Keep the last ``max_bytes`` of the log, starting at a line boundary."""
    if max_bytes < 0:
        raise ConfigError(f"logs max bytes must be 0 or more, not {max_bytes}")
    report = report or CleanupReport(dry_run)
    path = Path(log_file)
    if path.is_symlink():
        report.log_refused = f"{path} is a symlink (not followed)"
        return report
    if not path.exists():
        report.notes.append(f"no event log at {path}")
        return report
    if not path.is_file():
        raise ConfigError(f"{path}: not a regular file (expected the event log)")
    if path.stat().st_size <= max_bytes:
        return report
    live = live_runs(path)
    if live:
        runs = ", ".join(f"{r} (pid {p})" for r, p in live)
        report.log_refused = (f"{path} is being written by run {runs}; "
                              "trim it after the run ends")
        return report
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        info = os.fstat(fd)
        start = _tail_start(fd, info.st_size, max_bytes)
        if dry_run:
            report.log = LogTrim(path, info.st_size, info.st_size - start)
            return report
        tmp = path.with_name(f".{path.name}.cleanup-{os.getpid()}.tmp")
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, info.st_mode & 0o777)
        try:
            pos = start
            while True:  # copy to the end, including lines appended while we copy
                chunk = os.pread(fd, _COPY_CHUNK, pos)
                if not chunk:
                    break
                view = memoryview(chunk)
                while view:
                    view = view[os.write(out, view):]
                pos += len(chunk)
            os.fsync(out)
        except BaseException:
            os.close(out)
            tmp.unlink(missing_ok=True)
            raise
        os.close(out)
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        report.log = LogTrim(path, pos, pos - start)
    finally:
        os.close(fd)
    return report


def cleanup(runs_dir: str | os.PathLike[str] | None = ".runs",
            log_file: str | os.PathLike[str] | None = "data/logs/events.jsonl", *,
            runs_max_per_alias: int = DEFAULT_RUNS_MAX_PER_ALIAS,
            logs_max_bytes: int = DEFAULT_LOGS_MAX_BYTES, dry_run: bool = False) -> CleanupReport:
    """Prune the run store and trim the log (either may be None to leave it alone)."""
    report = CleanupReport(dry_run)
    try:
        if runs_dir is not None:
            live = ({run_id for run_id, _ in live_runs(log_file)}
                    if log_file is not None and os.path.isfile(log_file) else set())
            prune_runs(runs_dir, runs_max_per_alias, dry_run=dry_run, report=report, live=live)
        if log_file is not None:
            trim_log(log_file, logs_max_bytes, dry_run=dry_run, report=report)
    except OSError as exc:  # permissions, a vanished folder, a full disk for the temp copy
        raise ConfigError(f"{exc.filename or runs_dir}: cleanup failed: {exc.strerror or exc}") from None
    return report

"""Cleanup: keep the newest task folders per alias in the run store and trim the event log.

Safety rules, in order of importance:

* Only the runs dir and the log file are touched. Inside the runs dir only folders named like
  a task id (``<runId>-<seq>``) directly under an alias folder are removed, and staging folders
  (``.<runId>-<seq>.tmp``) a crash left behind, once they are a minute old; anything else
  (notes, stray files, a runs dir pointed at the wrong place) is left alone.
* A task folder is whole or absent, even after a ``kill -9`` of cleanup: it is first renamed
  to ``.<taskId>.deleting`` (one ``rename``), then removed; a later cleanup removes such
  leftovers (and the temporary copy ``.<log>.cleanup-<pid>.tmp`` of a killed trim).
* A coding-agent task's workspace (its git worktree and ``codexflow/...`` branch, or its copy)
  goes with its task folder, as recorded in the folder's ``workspace.json``; so does the
  workspace of a task that never finished in a run that is no longer alive (a ``kill -9``).
  Branches that codexflow did not create are never touched.
* Symlinks are never followed: a runs dir that is a symlink is refused; a symlinked alias or
  task folder is reported and skipped. The walk goes through directory descriptors opened with
  ``O_NOFOLLOW`` (renames and ``shutil.rmtree`` relative to them), so a folder swapped for a
  link meanwhile is not entered either.
* The log is trimmed to its last ``max_bytes`` at a line boundary by writing the kept tail to a
  temporary file and renaming it over the log, so a crash leaves either the old or the new log.
  The trim holds an exclusive ``flock`` on ``<log>.lock``, which every writer
  (:class:`~codexflow_nb.events.JsonlSink`) holds shared for as long as it has the log open:
  a log that a process has open is not trimmed (its writes would go to the replaced file and
  be lost), and a run that starts during the trim waits for it and then opens the new file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError
from .events import flock_within, log_lock_path, open_log_lock

DEFAULT_RUNS_MAX_PER_ALIAS = 10
DEFAULT_LOGS_MAX_BYTES = 5 * 1024 * 1024
#: ``<runId>-<seq>`` as the engine names tasks: ``20261125T143601123-3fa2c1-000001``.
TASK_DIR_RE = re.compile(r"^(\d{8}T\d{9}-[0-9a-f]{6})-(\d{6,})$")
#: A task's staging folder, ``.<taskId>.tmp``: a crash while it was being written leaves one.
STAGING_DIR_RE = re.compile(r"^\.(\d{8}T\d{9}-[0-9a-f]{6}-\d{6,})\.tmp$")
#: A task folder being removed, ``.<taskId>.deleting``: a cleanup killed meanwhile leaves one.
DELETING_DIR_RE = re.compile(r"^\.(\d{8}T\d{9}-[0-9a-f]{6}-\d{6,})\.deleting$")
DELETING_SUFFIX = ".deleting"
#: Staging folders younger than this may belong to a run that is writing them now.
STAGING_STALE_S = 60.0
_COPY_CHUNK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class Removal:
    """A task folder (or leftover) removed, or, in a dry run, that would be."""

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
    #: Temporary copies of the log that a killed trim left (``.<log>.cleanup-<pid>.tmp``).
    temp_files: list[Removal] = field(default_factory=list)

    @property
    def freed(self) -> int:
        return (sum(r.bytes for r in self.removed) + sum(r.bytes for r in self.temp_files)
                + (self.log.freed if self.log else 0))

    def lines(self, verbose: bool = False) -> list[str]:
        """The human report: a summary (counts and bytes); ``verbose`` lists every path."""
        verb = "would remove" if self.dry_run else "removed"
        out: list[str] = []
        if verbose:
            out += [f"{verb} {r.path} ({human_bytes(r.bytes)})" for r in self.removed]
            out += [f"{verb} {w}" for w in self.workspaces]
            out += [f"{verb} {r.path} ({human_bytes(r.bytes)}, left by a killed trim)"
                    for r in self.temp_files]
            out += [f"skipped {s}" for s in self.skipped]
        else:
            if self.removed:
                folders = {r.path.parent for r in self.removed}
                out.append(f"{verb} {len(self.removed)} task folder(s) "
                           f"({human_bytes(sum(r.bytes for r in self.removed))}) "
                           f"in {len(folders)} alias folder(s)")
            if self.workspaces:
                out.append(f"{verb} {len(self.workspaces)} workspace(s) and branch(es)")
            if self.temp_files:
                out.append(f"{verb} {len(self.temp_files)} temporary log copy(ies) left by "
                           "a killed trim")
            if self.skipped:
                out.append(f"skipped {len(self.skipped)} symlink(s) (not followed; -v lists them)")
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


def _tree_bytes_at(name: str, dir_fd: int) -> int:
    """:func:`tree_bytes` of ``name`` relative to ``dir_fd`` (symlinks never followed)."""
    total = 0
    for _top, dirs, files, fd in os.fwalk(name, dir_fd=dir_fd, follow_symlinks=False):
        for entry in files + dirs:
            with contextlib.suppress(OSError):
                info = os.stat(entry, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISDIR(info.st_mode):
                    total += info.st_size
    return total


def _rmtree_at(name: str, dir_fd: int) -> None:
    """``shutil.rmtree`` (fd-based: links are unlinked, never entered) of ``name`` relative to
    ``dir_fd``; what another cleanup removed meanwhile is not an error."""
    def onerror(_func: Callable[..., object], _path: str, exc_info: tuple) -> None:
        if not isinstance(exc_info[1], FileNotFoundError):
            raise exc_info[1]
    shutil.rmtree(name, onerror=onerror, dir_fd=dir_fd)


def _workspace_doc(folder: str, dir_fd: int) -> dict | None:
    """The ``workspace.json`` of a task folder (relative to ``dir_fd``), if it names one."""
    try:
        fd = os.open(f"{folder}/workspace.json", os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
        with os.fdopen(fd, "rb") as fh:
            doc = json.loads(fh.read())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("kind") not in ("worktree", "copy"):
        return None
    return doc


def _drop_workspace(folder: str, dir_fd: int, report: CleanupReport) -> None:
    """Remove the workspace recorded in a task folder's ``workspace.json``; the record goes
    last, so a cleanup killed meanwhile leaves it for the next one."""
    doc = _workspace_doc(folder, dir_fd)
    if doc is None:
        return
    if report.dry_run:
        report.workspaces.append(f"workspace {doc.get('path')}"
                                 + (f" and branch {doc['branch']}" if doc.get("branch") else ""))
        return
    from .workspaces import remove_workspace_sync

    report.workspaces.extend(remove_workspace_sync(doc))
    with contextlib.suppress(OSError):
        os.unlink(f"{folder}/workspace.json", dir_fd=dir_fd)


def _remove(name: str, alias_fd: int, alias_path: Path, report: CleanupReport, *,
            rename: bool = True) -> None:
    """Remove the folder ``name`` of an alias folder and record it with its size (a dry run
    only records). A task folder (``rename``) is first renamed to ``.<name>.deleting``, so a
    kill leaves it whole or gone from its name, never half removed under it."""
    target = name
    if rename and not report.dry_run:
        target = f".{name}{DELETING_SUFFIX}"
        try:
            _rename_dir(name, target, alias_fd)
        except FileNotFoundError:  # another cleanup got there first
            return
        if stat.S_ISLNK(os.stat(target, dir_fd=alias_fd, follow_symlinks=False).st_mode):
            os.rename(target, name, src_dir_fd=alias_fd, dst_dir_fd=alias_fd)  # swapped meanwhile
            report.skipped.append(f"{alias_path / name}: a symlink (not followed)")
            return
    size = _tree_bytes_at(target, alias_fd)
    _drop_workspace(target, alias_fd, report)
    if not report.dry_run:
        _rmtree_at(target, alias_fd)
    report.removed.append(Removal(alias_path / name, size))


def _rename_dir(name: str, target: str, dir_fd: int) -> None:
    try:
        os.rename(name, target, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError as exc:  # a leftover of the same name (the task ran again since): drop it
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        _rmtree_at(target, dir_fd)
        os.rename(name, target, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def open_runs_dir(runs_dir: str | os.PathLike[str]) -> int | None:
    """A descriptor on the run store (None when there is none). Refuses a runs dir that is a
    symlink or not a folder (ConfigError)."""
    root = Path(runs_dir)
    if root.is_symlink():
        raise ConfigError(f"{root}: is a symlink; cleanup never follows symlinks "
                          "(give the folder it points to)")
    if not root.exists():
        return None
    if not root.is_dir():
        raise ConfigError(f"{root}: not a folder (expected the run store, .runs)")
    try:
        return os.open(root, _DIR_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # replaced by a symlink since the check
            raise ConfigError(f"{root}: is a symlink; cleanup never follows symlinks "
                              "(give the folder it points to)") from None
        raise


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
    if not shutil.rmtree.avoids_symlink_attacks:  # pragma: no cover - not on Linux/macOS
        raise ConfigError("cleanup needs a platform where shutil.rmtree never follows symlinks")
    root_fd = open_runs_dir(root)
    if root_fd is None:
        report.notes.append(f"no run store at {root}")
        return report
    try:
        with os.scandir(root_fd) as entries:
            aliases = sorted((e for e in entries if not e.name.startswith(".")),
                             key=lambda e: e.name)
        for alias in aliases:
            if alias.is_symlink():
                report.skipped.append(f"{root / alias.name}: a symlink (not followed)")
                continue
            if not alias.is_dir(follow_symlinks=False):
                continue
            try:
                alias_fd = os.open(alias.name, _DIR_FLAGS, dir_fd=root_fd)
            except FileNotFoundError:
                continue
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                report.skipped.append(f"{root / alias.name}: a symlink (not followed)")
                continue
            try:
                _prune_alias(alias_fd, root / alias.name, max_per_alias, report, live)
            finally:
                os.close(alias_fd)
    finally:
        os.close(root_fd)
    return report


def _prune_alias(alias_fd: int, alias_path: Path, max_per_alias: int, report: CleanupReport,
                 live: set[str] | None) -> None:
    tasks: list[str] = []
    leftovers: list[str] = []
    stale = time.time() - STAGING_STALE_S
    with os.scandir(alias_fd) as entries:
        for entry in entries:
            name = entry.name
            if DELETING_DIR_RE.match(name) and entry.is_dir(follow_symlinks=False):
                leftovers.append(name)  # a cleanup was killed while removing it
            elif (STAGING_DIR_RE.match(name) and entry.is_dir(follow_symlinks=False)
                    and entry.stat(follow_symlinks=False).st_mtime < stale):
                leftovers.append(name)  # left by a crash mid-write
            elif not TASK_DIR_RE.match(name):
                continue
            elif entry.is_symlink():
                report.skipped.append(f"{alias_path / name}: a symlink (not followed)")
            elif entry.is_dir(follow_symlinks=False):
                tasks.append(name)
    for name in sorted(leftovers):
        _remove(name, alias_fd, alias_path, report, rename=False)
    tasks.sort(key=_task_sort_key, reverse=True)
    report.kept += min(len(tasks), max_per_alias)
    for name in tasks[max_per_alias:]:
        _remove(name, alias_fd, alias_path, report)
    if live is None:
        return
    for name in tasks[:max_per_alias]:
        run_id = _task_sort_key(name)[0]
        if (run_id not in live and _exists_at(f"{name}/workspace.json", alias_fd)
                and not _exists_at(f"{name}/output.json", alias_fd)):
            _end_agents(run_id, report)  # a killed run's agents may still be running
            _drop_workspace(name, alias_fd, report)  # an unfinished task of a dead run


def _exists_at(path: str, dir_fd: int) -> bool:
    try:
        os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return False
    return True


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


class LogLock:
    """The exclusive ``flock`` on ``<log>.lock`` that a trim holds (see
    :func:`codexflow_nb.events.log_lock_path`). ``held`` is False when a writer has the log
    open (``refused`` says who) or this file system cannot lock."""

    def __init__(self, log_file: str | os.PathLike[str], *, wait: float = 0.0,
                 create: bool = True, on_wait: Callable[[str], None] | None = None) -> None:
        self.path = log_lock_path(log_file)
        self.held = False
        self.refused: str | None = None
        self._fd = -1
        try:
            self._fd = open_log_lock(log_file, create=create)
        except FileNotFoundError:  # no lock file (a dry run) or no log folder: no writer has
            self.held = True       # the log open, as a writer creates the lock file first
            return
        try:
            self.held = flock_within(self._fd, fcntl.LOCK_EX, 0)
            if not self.held and wait > 0:
                if on_wait is not None:
                    on_wait(f"waiting up to {wait:g} s for {_who(self._holder_pids())} to close "
                            f"{log_file}")
                self.held = flock_within(self._fd, fcntl.LOCK_EX, wait)
        except OSError as exc:
            self.refused = (f"cannot lock {self.path} ({exc.strerror or exc}); "
                            "a file system without locks is never trimmed")
            return
        pids: list[int] = []
        for _ in range(3):
            if self.held:
                return
            pids = self._holder_pids()
            if pids:
                break
            # no holder left in /proc/locks: the writer closed since flock failed, so the lock
            # may be free now (seen under load: a refusal that could name no process)
            try:
                self.held = flock_within(self._fd, fcntl.LOCK_EX, 0)
            except OSError:
                break
        if not self.held:
            self.refused = (f"{log_file} is open for writing by {_who(pids)} (a shared "
                            f"lock on {self.path}); trim it after that ends, or use --wait "
                            "SECONDS")

    def _holder_pids(self) -> list[int]:
        """The processes holding the lock, from /proc/locks (sorted, each once)."""
        info = os.fstat(self._fd)
        key = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
        pids: list[int] = []
        with contextlib.suppress(OSError):
            for line in Path("/proc/locks").read_text().splitlines():
                fields = line.split()
                if "->" in fields:  # a waiter, not a holder
                    continue
                if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == key:
                    with contextlib.suppress(ValueError):
                        pids.append(int(fields[4]))
        return sorted(set(pids))

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # drops the lock
            self._fd = -1
        self.held = False


def _who(pids: list[int]) -> str:
    """``pid 123 (codex-flow run ...)`` for each lock holder, or "another process"."""
    return ", ".join(f"pid {pid}{_command(pid)}" for pid in pids) or "another process"


def _command(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return ""
    text = " ".join(" ".join(w.decode(errors="replace").split()) for w in argv if w)
    return f" ({text[:100]})" if text else ""


def _pid_dead(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _stale_copies(path: Path, lock: LogLock | None, report: CleanupReport) -> None:
    """Remove ``.<log>.cleanup-<pid>.tmp`` files that a trim killed mid-copy left: those whose
    pid is dead, and all of them while we hold the lock (a trim writes one only under it)."""
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.cleanup-(\d+)\.tmp$")
    try:
        names = os.listdir(path.parent)
    except OSError:
        return
    for name in sorted(names):
        match = pattern.match(name)
        if not match or int(match.group(1)) == os.getpid():
            continue
        if not ((lock is not None and lock.held) or _pid_dead(int(match.group(1)))):
            continue
        tmp = path.parent / name
        try:
            info = os.lstat(tmp)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(info.st_mode):
            continue
        if not report.dry_run:
            try:
                tmp.unlink()
            except FileNotFoundError:
                continue
        report.temp_files.append(Removal(tmp, info.st_size))


def trim_log(log_file: str | os.PathLike[str], max_bytes: int, *, dry_run: bool = False,
             report: CleanupReport | None = None, wait: float = 0.0,
             lock: LogLock | None = None,
             on_wait: Callable[[str], None] | None = None) -> CleanupReport:
    """Keep the last ``max_bytes`` of the log, starting at a line boundary. Only while holding
    the log's lock exclusively (``lock``, or taken here, waiting up to ``wait`` seconds for
    the writers that have the log open); otherwise ``report.log_refused`` says who has it."""
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
    own = lock is None
    if own:
        lock = LogLock(path, wait=wait if path.stat().st_size > max_bytes else 0.0,
                       create=not dry_run, on_wait=on_wait)
    assert lock is not None
    try:
        _stale_copies(path, lock, report)
        if path.stat().st_size <= max_bytes:
            return report
        if not lock.held:
            report.log_refused = lock.refused or f"{path}: not locked"
            return report
        live = live_runs(path)  # runs of writers that do not take the lock (older versions)
        if live:
            runs = ", ".join(f"{r} (pid {p})" for r, p in live)
            report.log_refused = (f"{path} is being written by run {runs}; "
                                  "trim it after the run ends")
            return report
        _copy_tail(path, max_bytes, report)
    finally:
        if own:
            lock.release()
    return report


def _copy_tail(path: Path, max_bytes: int, report: CleanupReport) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        info = os.fstat(fd)
        start = _tail_start(fd, info.st_size, max_bytes)
        if report.dry_run:
            report.log = LogTrim(path, info.st_size, info.st_size - start)
            return
        tmp = path.with_name(f".{path.name}.cleanup-{os.getpid()}.tmp")
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, info.st_mode & 0o777)
        try:
            pos = start
            while True:  # copy to the end (writers that take no lock may still append)
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


def cleanup(runs_dir: str | os.PathLike[str] | None = ".runs",
            log_file: str | os.PathLike[str] | None = "data/logs/events.jsonl", *,
            runs_max_per_alias: int = DEFAULT_RUNS_MAX_PER_ALIAS,
            logs_max_bytes: int = DEFAULT_LOGS_MAX_BYTES, dry_run: bool = False,
            wait: float = 0.0, on_wait: Callable[[str], None] | None = None) -> CleanupReport:
    """Prune the run store and trim the log (either may be None to leave it alone).

    When the log's lock is free it is held for the whole cleanup: no run starts meanwhile (a
    run that tries waits), so the runs found dead stay dead while their workspaces go and the
    log is trimmed. ``wait``: seconds to wait for the runs that have the log open to end."""
    report = CleanupReport(dry_run)
    lock: LogLock | None = None
    try:
        if runs_dir is not None:
            open_runs_dir_checked(runs_dir)
        log = Path(log_file) if log_file is not None else None
        if log is not None and not log.is_symlink() and log.exists() and not log.is_file():
            # refused before its lock file is made beside it (a folder, a FIFO, a device)
            raise ConfigError(f"{log}: not a regular file (expected the event log)")
        if log is not None and not log.is_symlink() and log.parent.is_dir():
            over = log.is_file() and log.stat().st_size > logs_max_bytes
            lock = LogLock(log, wait=wait if over else 0.0, create=not dry_run, on_wait=on_wait)
        if runs_dir is not None:
            live = ({run_id for run_id, _ in live_runs(log)}
                    if log is not None and log.is_file() else set())
            prune_runs(runs_dir, runs_max_per_alias, dry_run=dry_run, report=report, live=live)
        if log is not None:
            trim_log(log, logs_max_bytes, dry_run=dry_run, report=report, lock=lock)
    except OSError as exc:  # permissions, a vanished folder, a full disk for the temp copy
        raise ConfigError(f"{exc.filename or runs_dir}: cleanup failed: {exc.strerror or exc}") from None
    finally:
        if lock is not None:
            lock.release()
    return report


def open_runs_dir_checked(runs_dir: str | os.PathLike[str]) -> None:
    """Refuse a runs dir that is a symlink or not a folder before anything is done."""
    fd = open_runs_dir(runs_dir)
    if fd is not None:
        os.close(fd)

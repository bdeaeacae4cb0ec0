"""Workspaces: where a coding agent's task runs, and how its change is collected.

``worktree``: each task gets ``git worktree add`` on a new branch
``codexflow/<runId>/<alias>/<taskId>`` from the base (or from its dependency's result). The
worktrees live outside the main checkout (under ``~/.cache/codexflow/worktrees`` by default),
so they never show in its ``git status``; nothing in the main checkout is checked
out, stashed, staged or committed. ``copy``: the folder is copied (reflinks where the file
system has them) and snapshotted in a git folder kept beside the copy, never inside it.
``none``: the task runs in the folder itself (one task at a time; no patch).

When a task ends, every modified, added and deleted file (untracked ones included, ignored ones
not) is committed on the task's branch (worktree) or snapshot (copy), and the diff against the
task's start is written as ``changes.patch``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import CodexFlowError, ConfigError
from .runtimes.process import in_thread

KINDS = ("worktree", "copy", "none")
BRANCH_PREFIX = "codexflow/"
#: Our git commands never run the user's hooks, prompt for credentials or sign commits.
_GIT_CONFIG = ("-c", "core.hooksPath=/dev/null", "-c", "commit.gpgsign=false",
               "-c", "user.name=codexflow", "-c", "user.email=codexflow@localhost",
               "-c", "advice.detachedHead=false")
_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "GIT_OPTIONAL_LOCKS": "0"}


class WorkspaceError(CodexFlowError):
    """A workspace could not be created or its change collected."""


def _git_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(_GIT_ENV)
    return env


def _run_git(args: Sequence[str], cwd: str | os.PathLike[str], stdout: int | None = None,
             lock: threading.Lock | None = None) -> subprocess.CompletedProcess[bytes]:
    try:
        with lock or contextlib.nullcontext():
            return subprocess.run(["git", *_GIT_CONFIG, *args], cwd=cwd, env=_git_env(),
                                  stdout=stdout if stdout is not None else subprocess.PIPE,
                                  stderr=subprocess.PIPE, timeout=600)
    except FileNotFoundError:
        raise ConfigError("git is not installed: the worktree workspace needs it "
                          "(apt-get install git), or use --workspace copy") from None


def _failure(args: Sequence[str], proc: subprocess.CompletedProcess[bytes]) -> WorkspaceError:
    message = proc.stderr.decode(errors="replace").strip().splitlines()
    return WorkspaceError(f"git {args[0]} failed: {message[-1] if message else proc.returncode}")


def git_sync(*args: str, cwd: str | os.PathLike[str], check: bool = True) -> str:
    """Run git and return its stdout (for set-up checks before a run, and for cleanup)."""
    proc = _run_git(args, cwd)
    if check and proc.returncode != 0:
        raise _failure(args, proc)
    return proc.stdout.decode(errors="replace")


async def git(*args: str, cwd: str | os.PathLike[str], stdout: int | None = None,
              check: bool = True, lock: threading.Lock | None = None) -> str:
    """Run git in a worker thread (never blocking the loop, not even to start it); a failure
    is a WorkspaceError with git's last line. With ``stdout`` (a file descriptor) the output
    goes there instead of being returned; ``lock`` is held while git runs."""
    for attempt in range(6):
        proc = await in_thread("git", _run_git, args, cwd, stdout, lock)
        if proc.returncode == 0 or not check:
            return proc.stdout.decode(errors="replace") if proc.stdout else ""
        # concurrent worktree adds in one repository can meet on a ref or config lock
        if b"lock" in proc.stderr and attempt < 5:
            await asyncio.sleep(0.05 * (attempt + 1))
            continue
        raise _failure(args, proc)
    raise AssertionError("unreachable")


_repo_locks: dict[str, threading.Lock] = {}
_repo_locks_guard = threading.Lock()


def repo_lock(repo: Path) -> threading.Lock:
    """One lock per repository for ``git worktree add``: concurrent adds race in git itself
    (a new worktree's ``commondir`` or ``HEAD`` is sometimes read before it is written)."""
    with _repo_locks_guard:
        return _repo_locks.setdefault(str(repo), threading.Lock())


def is_git_repo(path: Path) -> bool:
    try:
        return git_sync("rev-parse", "--is-inside-work-tree", cwd=path, check=False).strip() == "true"
    except ConfigError:
        return False


@dataclass
class Workspace:
    """One task's workspace: its folder, branch (worktree) and the commit it started from."""

    kind: str
    path: Path
    start: str | None = None
    branch: str | None = None
    repo: Path | None = None
    git_dir: Path | None = None  # copy: the snapshot's git folder, beside the copy

    def describe(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"kind": self.kind, "path": str(self.path)}
        if self.repo is not None:
            doc["repo"] = str(self.repo)
        if self.branch:
            doc["branch"] = self.branch
        if self.start:
            doc["start"] = self.start
        if self.git_dir is not None:
            doc["gitDir"] = str(self.git_dir)
        return doc

    def _git_args(self) -> tuple[str, ...]:
        if self.git_dir is not None:
            return ("--git-dir", str(self.git_dir), "--work-tree", str(self.path))
        return ()

    async def collect(self, patch_path: Path | None) -> dict[str, Any] | None:
        """Commit everything the task changed and return ``{files, insertions, deletions}``;
        the patch (binary-safe, against the task's start) goes to ``patch_path``."""
        if self.kind == "none" or self.start is None:
            return None
        g, cwd = self._git_args(), self.path
        await git(*g, "add", "-A", cwd=cwd)
        await git(*g, "commit", "-q", "--no-verify", "--allow-empty", "-m",
                  f"codexflow: {self.branch or self.path.name}", cwd=cwd)
        stats = await in_thread("git", _diff, g, cwd, self.start, patch_path)
        return summarise_diff(stats)


def _diff(g: Sequence[str], cwd: Path, start: str, patch_path: Path | None) -> str:
    """One ``git diff`` for both the summary (``--raw --numstat -z``) and the patch (``-p
    --binary --full-index``, written to ``patch_path``); returns the summary part."""
    patch_args = ("-p", "--binary", "--full-index") if patch_path is not None else ()
    proc = _run_git([*g, "diff", "--raw", "--numstat", "-z", "--no-renames", *patch_args,
                     start, "HEAD"], cwd)
    if proc.returncode != 0:
        raise _failure(("diff",), proc)
    stats, patch = split_diff(proc.stdout)
    if patch_path is not None:
        patch_path.parent.mkdir(parents=True, exist_ok=True)
        patch_path.write_bytes(patch)
    return stats


def split_diff(out: bytes) -> tuple[str, bytes]:
    """``(summary, patch)`` of ``git diff --raw --numstat -z -p``: N raw records (a header
    starting with ``:`` and a path), N numstat records, an empty record, then the patch."""
    pos = records = 0
    while out.startswith(b":", pos):
        pos = out.index(b"\0", out.index(b"\0", pos) + 1) + 1
        records += 1
    for _ in range(records):
        pos = out.index(b"\0", pos) + 1
    stats = out[:pos].decode(errors="replace")
    return stats, out[pos + 1:] if out.startswith(b"\0", pos) else out[pos:]


def summarise_diff(stats: str) -> dict[str, Any]:
    """``{files: [{path, status, insertions, deletions}], insertions, deletions}`` from
    ``git diff --raw --numstat -z`` (binary files count 0 lines)."""
    statuses: dict[str, str] = {}
    files = []
    parts = iter(stats.split("\0"))
    for record in parts:
        if record.startswith(":"):  # raw: ":old new sha sha STATUS" then the path
            statuses[next(parts, "")] = {"A": "added", "D": "deleted"}.get(record[-1:],
                                                                           "modified")
        elif record:
            added, removed, path = record.split("\t", 2)
            files.append({"path": path, "status": statuses.get(path, "modified"),
                          "insertions": int(added) if added.isdigit() else 0,
                          "deletions": int(removed) if removed.isdigit() else 0,
                          **({"binary": True} if added == "-" else {})})
    return {"files": files, "insertions": sum(f["insertions"] for f in files),
            "deletions": sum(f["deletions"] for f in files)}


def default_root(kind: str, repo: Path) -> Path:
    """Where workspaces go unless ``--workspaces-dir`` says otherwise: under
    ``$CODEXFLOW_WORKSPACES``, else ``~/.cache/codexflow/{worktrees,workspaces}/<repo>-<hash>``.
    Outside the repository (never in its ``git status``) and outside ``.git`` (agents treat
    files under ``.git`` as sensitive and refuse to edit them)."""
    env = os.environ.get("CODEXFLOW_WORKSPACES")
    if env:
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    tag = hashlib.sha1(str(repo).encode()).hexdigest()[:8]
    folder = "worktrees" if kind == "worktree" else "workspaces"
    return Path(cache) / "codexflow" / folder / f"{repo.name or 'root'}-{tag}"


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
    except ValueError:
        return False
    return True


@dataclass
class Workspaces:
    """Creates the workspaces of one run. ``prepare()`` checks everything before the run."""

    kind: str = "worktree"
    repo: Path = field(default_factory=Path.cwd)
    base: str = "HEAD"
    root: Path | None = None
    #: Paths the run writes (event log, run store): kept out of ``git status`` and of copies.
    private: Sequence[Path] = ()
    base_sha: str | None = None
    warnings: list[str] = field(default_factory=list)
    _dirs: dict[str, Path] = field(default_factory=dict)
    _objects: Path | None = None

    def prepare(self) -> list[str]:
        """Check the folder and base; returns warnings (a dirty main checkout). Raises
        ConfigError for a problem the user must fix."""
        if self.kind not in KINDS:
            raise ConfigError(f"--workspace {self.kind!r}: choose one of {', '.join(KINDS)}")
        repo = Path(self.repo).expanduser()
        if not repo.is_dir():
            raise ConfigError(f"--repo {self.repo}: not a folder")
        self.repo = repo.resolve()
        if self.kind == "none":
            return []
        git_repo = is_git_repo(self.repo)
        if self.kind == "worktree":
            if not git_repo:
                raise ConfigError(f"--repo {self.repo}: not a git repository; use --workspace copy")
            top = git_sync("rev-parse", "--show-toplevel", cwd=self.repo).strip()
            self.repo = Path(top).resolve()
            try:
                self.base_sha = git_sync("rev-parse", "--verify", "--quiet",
                                         f"{self.base}^{{commit}}", cwd=self.repo).strip()
            except WorkspaceError:
                raise ConfigError(f"--base {self.base!r}: not a commit in {self.repo}") from None
            self._exclude_private()
            if git_sync("status", "--porcelain", "--untracked-files=normal", cwd=self.repo).strip():
                self.warnings.append(f"{self.repo} has uncommitted changes: they are not in the "
                                     f"workspaces, which start from {self.base} "
                                     f"({self.base_sha[:10]})")
        if git_repo:  # a copy's snapshot borrows the objects it shares with the repository
            common = git_sync("rev-parse", "--git-common-dir", cwd=self.repo).strip()
            self._objects = (self.repo / common).resolve() / "objects"
        self.root = Path(self.root or default_root(self.kind, self.repo)).expanduser().resolve()
        if _inside(self.root, self.repo):
            raise ConfigError(f"--workspaces-dir {self.root}: must be outside {self.repo} "
                              "(workspaces inside it would show in its status and copies)")
        return self.warnings

    def _exclude_private(self) -> None:
        """Keep the run's own files out of the main checkout's ``git status`` through
        ``.git/info/exclude`` (never by editing a tracked file)."""
        lines = []
        for path in self.private:
            full = Path(path).expanduser().resolve()
            if _inside(full, self.repo) and full != self.repo:
                lines.append("/" + full.relative_to(self.repo).as_posix())
        if not lines:
            return
        common = git_sync("rev-parse", "--git-common-dir", cwd=self.repo).strip()
        exclude = (self.repo / common).resolve() / "info" / "exclude"
        existing = exclude.read_text(encoding="utf-8").splitlines() if exclude.exists() else []
        missing = [line for line in lines if line not in existing]
        if missing:
            exclude.parent.mkdir(parents=True, exist_ok=True)
            with exclude.open("a", encoding="utf-8") as fh:
                if existing and existing[-1] != "":
                    fh.write("\n")
                fh.write("# codexflow_nb: run store and event log\n")
                fh.write("".join(f"{line}\n" for line in missing))

    def branch(self, run_id: str, alias: str, task_id: str) -> str:
        return f"{BRANCH_PREFIX}{run_id}/{alias}/{task_id}"

    def existing(self, run_id: str, alias: str, task_id: str) -> Workspace:
        """The workspace a task of this run had (a dependency's, to start from its result)."""
        if self.kind == "none" or self.root is None:
            return Workspace("none", self.repo)
        path = self.root / run_id / alias / task_id
        if self.kind == "worktree":
            return Workspace("worktree", path, None, self.branch(run_id, alias, task_id),
                             self.repo)
        # a copy's change is the one commit on top of its start
        return Workspace("copy", path, "HEAD~1", git_dir=path.with_name(path.name + ".git"))

    async def create(self, run_id: str, alias: str, task_id: str,
                     after: Sequence[Workspace] = ()) -> Workspace:
        """A fresh workspace for one task (an earlier one of the same task is replaced:
        ``--resume`` and retries never reuse half-done work). ``after``: the workspaces of
        the task's dependencies, whose results it starts from."""
        if self.kind == "none":
            return Workspace("none", self.repo)
        assert self.root is not None
        path = self.root / run_id / alias / task_id
        if self.kind == "worktree":
            return await self._worktree(path, self.branch(run_id, alias, task_id), after)
        return await self._copy(path, after)

    async def _worktree(self, path: Path, branch: str, after: Sequence[Workspace]) -> Workspace:
        if path.exists() or path.is_symlink():
            await remove_worktree(self.repo, path)
        path.parent.mkdir(parents=True, exist_ok=True)
        start = self.base_sha
        done = []  # dependencies that left a branch (a dependency may have run elsewhere)
        for dep in after:
            if dep.kind == "worktree" and dep.branch:
                sha = (await git("rev-parse", "--verify", "--quiet", f"{dep.branch}^{{commit}}",
                                 cwd=self.repo, check=False)).strip()
                if sha:
                    done.append(dep)
                    start = start if len(done) > 1 else sha
        assert start is not None
        # what `git worktree add` does, in two steps: the bookkeeping one at a time per
        # repository (git races there), the checkout (`reset --hard`, as git's own) in parallel
        await git("worktree", "add", "--quiet", "--no-checkout", "--no-track", "-B", branch,
                  str(path), start, cwd=self.repo, lock=repo_lock(self.repo))
        await git("reset", "--hard", "--quiet", "--no-recurse-submodules", cwd=path)
        ws = Workspace("worktree", path, start, branch, self.repo)
        if len(done) > 1:
            await _merge_dependencies(ws, done[1:])
        return ws

    async def _copy(self, path: Path, after: Sequence[Workspace]) -> Workspace:
        git_dir = path.with_name(path.name + ".git")
        for old in (path, git_dir):
            if old.exists():
                await in_thread("git", shutil.rmtree, old)
        path.parent.mkdir(parents=True, exist_ok=True)
        after = [w for w in after if w.kind == "copy" and w.git_dir is not None
                 and w.git_dir.is_dir()]
        source = after[0].path if after else self.repo
        await self._copy_tree(source, path)
        ws = Workspace("copy", path, None, None, None, git_dir)
        g = ws._git_args()
        await git(*g, "init", "-q", cwd=path.parent)
        # files the repository (or a dependency's snapshot) has already are not written again
        borrowed = [str(d.git_dir / "objects") for d in after if d.git_dir is not None]
        if self._objects is not None and self._objects.is_dir():
            borrowed.append(str(self._objects))
        if borrowed:
            (git_dir / "objects" / "info" / "alternates").write_text(
                "".join(f"{b}\n" for b in borrowed), encoding="utf-8")
        await git(*g, "add", "-A", cwd=path)
        await git(*g, "commit", "-q", "--no-verify", "--allow-empty", "-m", "codexflow: start",
                  cwd=path)
        for dep in after[1:]:  # several dependencies: their changes on top of the first's
            if dep.git_dir is None or dep.start is None:
                continue
            patch = path.with_name(path.name + ".deps.patch")
            fd = os.open(patch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                await git(*dep._git_args(), "diff", "--binary", "--full-index", dep.start, "HEAD",
                          cwd=dep.path, stdout=fd)
            finally:
                os.close(fd)
            try:
                if patch.stat().st_size:
                    await git(*g, "apply", "--whitespace=nowarn", str(patch), cwd=path)
            except WorkspaceError as exc:
                raise WorkspaceError(f"the changes of the dependencies conflict: {exc}") from None
            finally:
                patch.unlink(missing_ok=True)
        if len(after) > 1:
            await git(*g, "add", "-A", cwd=path)
            await git(*g, "commit", "-q", "--no-verify", "--allow-empty", "-m",
                      "codexflow: dependencies", cwd=path)
        ws.start = (await git(*g, "rev-parse", "HEAD", cwd=path)).strip()
        return ws

    async def _copy_tree(self, source: Path, target: Path) -> None:
        skip = [Path(p).expanduser().resolve() for p in self.private]
        skip = [p for p in skip if _inside(p, source)]
        if not skip:
            proc = await in_thread("git", subprocess.run,
                                   ["cp", "-a", "--reflink=auto", f"{source}/.", str(target)],
                                   stderr=subprocess.PIPE)
            if proc.returncode == 0:
                return
            err = proc.stderr.decode(errors="replace").strip()
            raise WorkspaceError(f"cannot copy {source}: {err}")

        def ignore(folder: str, names: list[str]) -> list[str]:
            return [n for n in names if Path(folder, n).resolve() in skip]

        await in_thread("git", shutil.copytree, source, target, symlinks=True, ignore=ignore)


async def _merge_dependencies(ws: Workspace, others: Sequence[Workspace]) -> None:
    """Several dependencies: the task starts from the first one's result with the others'
    branches merged in; a conflict fails the task, naming the files."""
    for dep in others:
        try:
            await git("merge", "--no-ff", "--no-edit", "-q", dep.branch or "", cwd=ws.path)
        except WorkspaceError:
            conflicted = (await git("diff", "--name-only", "--diff-filter=U", cwd=ws.path,
                                    check=False)).split()
            await git("merge", "--abort", cwd=ws.path, check=False)
            raise WorkspaceError(f"the results of the dependencies conflict (merging "
                                 f"{dep.branch}): {', '.join(conflicted) or 'see git'}") from None
    ws.start = (await git("rev-parse", "HEAD", cwd=ws.path)).strip()


async def remove_worktree(repo: Path, path: Path) -> None:
    """Remove one worktree folder (and git's record of it)."""
    await git("worktree", "remove", "--force", "--force", str(path), cwd=repo, check=False)
    if path.exists():
        await in_thread("git", shutil.rmtree, path, True)
    await git("worktree", "prune", cwd=repo, check=False)


def remove_workspace_sync(doc: dict[str, Any], *, branch: bool = True) -> list[str]:
    """Remove a workspace described by a ``task_workspace`` event (for cleanup); returns what
    went. Only branches under ``codexflow/`` are ever deleted."""
    gone: list[str] = []
    path = Path(doc.get("path", ""))
    kind = doc.get("kind")
    if kind == "worktree" and doc.get("repo"):
        repo = Path(doc["repo"])
        if path.exists() and repo.is_dir():
            git_sync("worktree", "remove", "--force", "--force", str(path), cwd=repo, check=False)
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
        if repo.is_dir():
            git_sync("worktree", "prune", cwd=repo, check=False)
        gone.append(str(path))
        name = doc.get("branch") or ""
        if branch and name.startswith(BRANCH_PREFIX) and repo.is_dir():
            git_sync("branch", "-D", "-q", name, cwd=repo, check=False)
            gone.append(f"branch {name}")
    elif kind == "copy":
        for target in (path, Path(doc["gitDir"]) if doc.get("gitDir") else None):
            if target is not None and target.exists():
                shutil.rmtree(target, ignore_errors=True)
                gone.append(str(target))
    with contextlib.suppress(OSError):  # empty run / alias folders above it
        path.parent.rmdir()
        path.parent.parent.rmdir()
    return gone

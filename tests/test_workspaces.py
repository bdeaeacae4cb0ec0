"""Workspaces without an agent: concurrent worktrees in one repository, copies that borrow the
repository's objects, and the change collected from each."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest
from agent_servers import make_repo

from codexflow_nb.workspaces import Workspaces, git_sync

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def _loose_objects(git_dir: Path) -> int:
    return sum(1 for p in (git_dir / "objects").glob("??/*"))


def test_many_concurrent_worktrees_in_one_repository(tmp_path: Path) -> None:
    """git's own `worktree add` races when run concurrently in one repository (a new worktree's
    files read before they are written): every one of 32 concurrent creations succeeds."""
    repo = make_repo(tmp_path / "repo")
    ws = Workspaces(kind="worktree", repo=repo, root=tmp_path / "wt")
    ws.prepare()

    async def main() -> list:  # type: ignore[type-arg]
        return await asyncio.gather(*(ws.create("run1", f"a{i % 3}", f"t{i}")
                                      for i in range(32)))

    made = asyncio.run(main())
    assert len({w.path for w in made}) == 32
    for w in made:
        assert (w.path / "app.py").read_text() == "def add(a, b):\n    return a + b\n"
        assert git_sync("rev-parse", "--abbrev-ref", "HEAD", cwd=w.path).strip() == w.branch
        assert git_sync("status", "--porcelain", cwd=w.path) == ""
    assert git_sync("status", "--porcelain", cwd=repo) == ""  # the main checkout untouched


def test_a_copy_borrows_the_repository_objects_and_collects_its_change(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    for i in range(40):
        (repo / f"m{i}.py").write_text(f"x = {i}\n" * 50)
    git_sync("add", "-A", cwd=repo)
    git_sync("commit", "-qm", "more", cwd=repo)
    ws = Workspaces(kind="copy", repo=repo, root=tmp_path / "copies")
    ws.prepare()

    async def main() -> tuple[dict, dict, Path]:  # type: ignore[type-arg]
        first = await ws.create("run1", "a", "t1")
        (first.path / "m3.py").write_text("changed\n")
        (first.path / "new.txt").write_text("new\n")
        one = await first.collect(tmp_path / "one.patch")
        second = await ws.create("run1", "b", "t2", after=[first])  # from the first's result
        assert (second.path / "new.txt").read_text() == "new\n"
        (second.path / "app.py").unlink()
        two = await second.collect(tmp_path / "two.patch")
        assert second.git_dir is not None
        return one, two, second.git_dir

    one, two, git_dir = asyncio.run(main())
    assert [(f["path"], f["status"]) for f in one["files"]] == [("m3.py", "modified"),
                                                                ("new.txt", "added")]
    assert [(f["path"], f["status"]) for f in two["files"]] == [("app.py", "deleted")]
    # the 43 files were not written again as objects: the snapshot holds only what is new
    assert (git_dir / "objects" / "info" / "alternates").exists()
    assert _loose_objects(git_dir) < 12
    # the patch applies to the repository as it was
    check = subprocess.run(["git", "apply", "--check", str(tmp_path / "one.patch")], cwd=repo,
                           capture_output=True)
    assert check.returncode == 0, check.stderr

"""The scripted model servers (now in :mod:`codexflow_nb.rehearsal`), plus what only tests
need: skipping or failing a test when an agent CLI is not installed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from codexflow_nb.rehearsal import *  # noqa: F403
from codexflow_nb.rehearsal import CLAUDE_BIN, CODEX_BIN

_PACKAGES = {"codex": ("@openai/codex", "CODEXFLOW_CODEX_BIN"),
             "claude": ("@anthropic-ai/claude-code", "CODEXFLOW_CLAUDE_BIN")}


def require_bin(name: str) -> str:
    """The path of the ``codex`` or ``claude`` binary; when it is missing the calling test
    is skipped, or fails if ``CODEXFLOW_REQUIRE_AGENT_CLIS=1`` (as scripts/test.sh sets)."""
    found = {"codex": CODEX_BIN, "claude": CLAUDE_BIN}[name]
    if found is None:
        package, var = _PACKAGES[name]
        reason = (f"{name} CLI not found: set {var}, or npm install {package} into "
                  "$CODEXFLOW_AGENTS_CACHE (default ~/.cache/codexflow-agents)")
        if os.environ.get("CODEXFLOW_REQUIRE_AGENT_CLIS") == "1":
            pytest.fail(reason + " (CODEXFLOW_REQUIRE_AGENT_CLIS=1)")
        pytest.skip(reason)
    return found




def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout


def make_repo(path: Path) -> Path:
    """A small committed repository (README.md, app.py) on branch ``main``."""
    path.mkdir()
    git("init", "-q", "-b", "main", cwd=path)
    (path / "README.md").write_text("# demo\n")
    (path / "app.py").write_text("def add(a, b):\n    return a + b\n")
    git("add", ".", cwd=path)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init", cwd=path)
    return path

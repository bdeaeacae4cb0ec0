"""The scripted model servers (now in :mod:`codexflow_nb.rehearsal`), plus what only tests
need: skipping or failing a test when an agent CLI is not installed."""

from __future__ import annotations

import os

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



"""Shared fixtures: the bundled registry and a clean working folder per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from codexflow_nb import load_registry
from codexflow_nb.registry import BUNDLED_AGENTS, Registry

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def registry() -> Registry:
    return load_registry(BUNDLED_AGENTS)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temp cwd with no codex/agents folder, so the bundled copy is used."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CODEX_AGENTS_DIR", raising=False)
    monkeypatch.delenv("CODEX_URL", raising=False)
    monkeypatch.delenv("CODEX_API_KEY", raising=False)
    return tmp_path

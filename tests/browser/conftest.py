"""Fixtures the browser tests share: where screenshots go, and one JupyterLab per module."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from lab_harness import jupyter_lab


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: ``$CODEXFLOW_SCREENSHOTS`` or a temporary folder."""
    folder = os.environ.get("CODEXFLOW_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    """A JupyterLab server on 127.0.0.1 with a token and throwaway config/data/runtime dirs."""
    with jupyter_lab(tmp_path_factory.mktemp("lab")) as served:
        yield served

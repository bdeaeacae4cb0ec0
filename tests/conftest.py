"""Shared fixtures: the bundled registry and a clean working folder per test; how the tests are
shared between pytest-xdist workers (``scripts/test.sh`` runs ``-n 3 --dist loadgroup``)."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from codexflow_nb import load_registry
from codexflow_nb.registry import BUNDLED_AGENTS, Registry

REPO = Path(__file__).resolve().parents[1]


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups into the node ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``--dist loadgroup`` each test file is one unit of work, as with ``loadfile``: its
    module-scoped fixtures (servers, kernels, finished runs) are set up once, on one worker, and
    its tests keep their order. The browser tests (a JupyterLab and a Chromium each) are one
    unit together, so two of them never run at once. A test's own ``xdist_group`` mark wins."""
    if not config.getoption("loadgroup", False):
        return
    for item in items:
        if item.get_closest_marker("xdist_group"):
            continue
        group = "browser" if item.get_closest_marker("browser") else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))


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


@pytest.fixture
def cancelled_run(registry: Registry) -> Callable[..., Path]:
    """``cancelled_run(log_file, aliases, runs_dir=None)``: six 2-second tasks for the alias
    ``rev``, cancelled as soon as the first one starts; returns the event log."""
    from codexflow_nb import prepare_run

    def make(log_file: Path, aliases: Any, runs_dir: Path | None = None) -> Path:
        async def go() -> None:
            started = asyncio.Event()
            run = prepare_run({"rev": [f"t{i}" for i in range(6)]}, aliases=aliases,
                              registry=registry, latency_ms=2000, log_file=log_file,
                              runs_dir=runs_dir,
                              on_event=lambda e: started.set()
                              if e["kind"] == "task_started" else None)
            task = asyncio.create_task(run.execute())
            await started.wait()
            run.cancel("enough")
            await task

        asyncio.run(go())
        return log_file

    return make


@pytest.fixture(scope="session")
def no_read_rights() -> list[str]:
    """A command prefix under which a mode-000 file cannot be read: none for a normal user;
    for root, setpriv without the DAC override capabilities. Skips the test when root has no
    working setpriv (every file is readable then)."""
    if os.geteuid() != 0:
        return []
    prefix = ["/usr/bin/setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    if Path(prefix[0]).exists() and subprocess.run(
            [*prefix, "true"], capture_output=True).returncode == 0:
        return prefix
    pytest.skip("running as root without setpriv: every file is readable")

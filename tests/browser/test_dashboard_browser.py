"""The dashboard in a real JupyterLab, driven by headless Chromium through Playwright.

Needs ``jupyterlab`` and ``playwright`` (``pip install -e .[browser]``) and Debian's chromium
(``apt-get install -y chromium``; Playwright's own browser download is not used). Run with
``pytest -m browser tests/browser``. The screenshot goes to ``$CODEXFLOW_SCREENSHOTS`` (else a
temporary folder); ``CODEXFLOW_UPDATE_DOCS_IMG=1`` also copies it to ``docs/img/dashboard.png``,
so a test run never rewrites a committed file unless asked to.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
DOCS_IMAGE = REPO / "docs" / "img" / "dashboard.png"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]
DASHBOARD_CELL = """\
import codexflow_nb
dash = codexflow_nb.dashboard(latency_ms=3000, chunks=12)
dash"""

_missing = [name for name, ok in (
    ("jupyterlab", importlib.util.find_spec("jupyterlab") is not None),
    ("playwright", importlib.util.find_spec("playwright") is not None),
    (f"chromium at {CHROMIUM}", Path(CHROMIUM).exists()),
) if not ok]
if _missing:
    pytestmark = [pytest.mark.browser, pytest.mark.skip(
        reason=f"browser test needs {', '.join(_missing)} "
               "(pip install -e .[browser]; apt-get install -y chromium)")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _notebook(cells: list[str]) -> dict[str, Any]:
    return {"cells": [{"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {},
                       "outputs": [], "source": src} for i, src in enumerate(cells)],
            "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                        "name": "python3"}},
            "nbformat": 4, "nbformat_minor": 5}


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
    base = tmp_path_factory.mktemp("lab")
    root = base / "root"
    root.mkdir()
    env = dict(os.environ)
    for name in ("CONFIG", "DATA", "RUNTIME"):
        (base / name.lower()).mkdir()
        env[f"JUPYTER_{name}_DIR"] = str(base / name.lower())
    (base / "config" / "labconfig").mkdir()
    (base / "config" / "labconfig" / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    env.pop("CODEX_AGENTS_DIR", None)
    port, token = _free_port(), secrets.token_hex(16)
    with open(base / "lab.log", "wb") as log:  # the child keeps its own copy of the handle
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1",
             f"--port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
            env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("jupyter lab did not start:\n"
                                       + (base / "lab.log").read_text()[-2000:]) from None
                time.sleep(0.2)
        yield url, token, root
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 2600})
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


def _run_first_cell(page: Any) -> None:
    """Run the first cell with the toolbar button; a click right after the kernel connects
    can be lost, so retry until the prompt shows the cell running or run."""
    for _ in range(6):
        page.locator(".jp-Cell").first.click()
        page.locator("[data-command='notebook:run-cell-and-select-next']").first.click()
        try:
            page.wait_for_function(
                "() => /\\[(\\*|\\d+)\\]/.test("
                "document.querySelector('.jp-Cell .jp-InputPrompt').textContent)", timeout=10_000)
            return
        except Exception:  # noqa: BLE001 - playwright's TimeoutError: try again
            continue
    raise AssertionError("the dashboard cell never started running")


def test_dashboard_runs_the_example_and_streams_in_jupyterlab(lab: tuple[str, str, Path],
                                                              page: Any, shots: Path) -> None:
    url, token, root = lab
    (root / "dashboard.ipynb").write_text(json.dumps(_notebook([DASHBOARD_CELL])))
    page.set_default_timeout(60_000)
    page.goto(f"{url}/lab/tree/dashboard.ipynb?token={token}&reset")
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']")
    _run_first_cell(page)

    run = page.locator("button.jupyter-button", has_text=re.compile(r"^\s*Run\s*$"))
    run.wait_for()
    bars = page.locator(".jp-OutputArea-output .widget-hprogress")
    assert bars.count() == 1 + 3  # overall + one per alias
    assert "0/2 done · running 0/2" in page.locator(".widget-html-content").all_inner_texts()
    run.click()
    # streamed text shows while the tasks still run: open the first task's output area
    page.locator(".jupyter-widget-Collapse-header").first.click()
    page.wait_for_selector("pre:has-text('Code Analyzer (code-analyzer) on: Review')")
    # the first chunks show while the task is still running (each task takes 3 s)
    assert "running" in page.locator(".jupyter-widget-Collapse-header").first.inner_text()
    assert page.locator(".codexflow-summary").count() == 0
    page.wait_for_selector(".codexflow-summary", timeout=60_000)

    widths = page.locator(".jp-OutputArea-output .widget-hprogress .progress-bar").evaluate_all(
        "els => els.map(e => e.style.width)")
    assert widths == ["100%"] * 4
    labels = page.locator(".jp-OutputArea-output .widget-html-content").all_inner_texts()
    assert "2/2 done · running 0/2" in labels  # reviewer: total reached, none left running
    assert any("finished" in text and ": ok" in text for text in labels)
    streamed = page.locator(".jupyter-widget-Collapse-contents pre").first.inner_text()
    assert streamed.startswith("Code Analyzer (code-analyzer) on: Review")
    assert "Focus:" in streamed  # the later chunks arrived too
    # the static summary below the widget (kept in a saved notebook without widget state)
    summary = page.locator(".jp-OutputArea-output .codexflow-summary")
    assert summary.count() == 1 and summary.locator(".jupyter-widgets").count() == 0
    assert summary.inner_text().count("completed") >= 5
    screenshot = shots / "dashboard.png"
    page.locator(".jp-Cell-outputArea").first.screenshot(path=str(screenshot))
    assert screenshot.stat().st_size > 10_000
    if shutil.which("file"):
        assert "PNG image" in subprocess.run(["file", str(screenshot)], capture_output=True,
                                             text=True).stdout
    if os.environ.get("CODEXFLOW_UPDATE_DOCS_IMG") == "1":  # only on request: a committed file
        shutil.copyfile(screenshot, DOCS_IMAGE)

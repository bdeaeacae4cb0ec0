"""The dashboard in a real JupyterLab, driven by headless Chromium through Playwright.

Needs ``jupyterlab`` and ``playwright`` (``pip install -e .[browser]``) and Debian's chromium
(``apt-get install -y chromium``; Playwright's own browser download is not used). Run with
``pytest -m browser tests/browser``. The screenshot goes to ``$CODEXFLOW_SCREENSHOTS`` (else a
temporary folder); ``CODEXFLOW_UPDATE_DOCS_IMG=1`` also copies it to ``docs/img/dashboard.png``,
so a test run never rewrites a committed file unless asked to.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lab_harness import BARS, REPO, chromium_page, module_marks, open_notebook

from codexflow_nb.widgets.bars import BAR_WIDTH

pytestmark = module_marks()

DOCS_IMAGE = REPO / "docs" / "img" / "dashboard.png"
DASHBOARD_CELL = """\
import codexflow_nb
dash = codexflow_nb.dashboard(latency_ms=3000, chunks=12)
dash"""


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with chromium_page(tmp_path_factory.mktemp("chromium-profile"), height=2600) as opened:
        yield opened


def test_dashboard_runs_the_example_and_streams_in_jupyterlab(lab: tuple[str, str, Path],
                                                              page: Any, shots: Path) -> None:
    url, token, root = lab
    page.set_default_timeout(60_000)
    open_notebook(page, url, token, root, "dashboard.ipynb", [DASHBOARD_CELL])

    run = page.locator("button.jupyter-button", has_text=re.compile(r"^\s*Run\s*$"))
    run.wait_for()
    bars = page.locator(".jp-OutputArea-output .codexflow-bar")
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

    # each bar is one completed segment over its whole width (BAR_WIDTH, 300)
    segments = bars.evaluate_all(BARS)
    assert [{s: w for s, (w, _fill) in bar.items()} for bar in segments] \
        == [{"completed": BAR_WIDTH}] * 4
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

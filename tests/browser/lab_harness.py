"""JupyterLab + headless Chromium (Playwright), shared by the browser tests and
``bench/dashboard_browser.py``: a throwaway JupyterLab server, a Chromium page, and the
dashboard-at-scale measurement (a ``MutationObserver`` and the Long Tasks API in the page,
the run's event log in the kernel).

Needs ``jupyterlab`` and ``playwright`` (``pip install -e .[browser]``) and Debian's chromium
(``apt-get install -y chromium``, or ``$CHROMIUM_PATH``); :func:`missing` names what is not
there. The kernel imports this checkout (its folder goes first on ``PYTHONPATH``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]

#: The issue's targets (issue 16) for a dashboard run, whatever the number of tasks.
TARGETS = {"mutations_per_s": 300, "page_after_kernel_s": 1.0, "stop_to_engine_s": 1.0,
           "first_progress_s": 0.5, "longest_task_ms": 200}


def missing() -> list[str]:
    """What the browser tests need and this machine lacks (empty: all there). With
    ``CODEXFLOW_REQUIRE_BROWSER=1`` (as scripts/test.sh sets) a lack is an error, not a skip."""
    lacking = [name for name, ok in (
        ("jupyterlab", importlib.util.find_spec("jupyterlab") is not None),
        ("playwright", importlib.util.find_spec("playwright") is not None),
        (f"chromium at {CHROMIUM}", Path(CHROMIUM).exists()),
    ) if not ok]
    if lacking and os.environ.get("CODEXFLOW_REQUIRE_BROWSER") == "1":
        raise RuntimeError(f"the browser tests need {', '.join(lacking)} "
                           "(CODEXFLOW_REQUIRE_BROWSER=1)")
    return lacking


def module_marks(*extra: Any) -> list[Any]:
    """A browser test module's ``pytestmark``: ``browser`` and ``extra``, and a skip naming what
    is missing (an error instead with ``CODEXFLOW_REQUIRE_BROWSER=1``)."""
    import pytest

    marks = [pytest.mark.browser, *extra]
    lacking = missing()
    if lacking:
        marks.append(pytest.mark.skip(
            reason=f"browser test needs {', '.join(lacking)} "
                   "(pip install -e .[browser]; apt-get install -y chromium)"))
    return marks


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def notebook(cells: list[str]) -> dict[str, Any]:
    """A notebook of code cells, not run yet."""
    return {"cells": [{"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {},
                       "outputs": [], "source": src} for i, src in enumerate(cells)],
            "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                        "name": "python3"}},
            "nbformat": 4, "nbformat_minor": 5}


@contextlib.contextmanager
def jupyter_lab(base: Path) -> Iterator[tuple[str, str, Path]]:
    """A JupyterLab server on 127.0.0.1 with a token and config/data/runtime folders under
    ``base``; yields ``(url, token, root)``, root being the folder it serves."""
    root = base / "root"
    root.mkdir(parents=True)
    env = dict(os.environ)
    for name in ("CONFIG", "DATA", "RUNTIME"):
        (base / name.lower()).mkdir()
        env[f"JUPYTER_{name}_DIR"] = str(base / name.lower())
    (base / "config" / "labconfig").mkdir()
    (base / "config" / "labconfig" / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    env.pop("CODEX_AGENTS_DIR", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    port, token = free_port(), secrets.token_hex(16)
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


@contextlib.contextmanager
def chromium_page(profile: Path, *, width: int = 1400, height: int = 1800) -> Iterator[Any]:
    """A page of headless Chromium (Debian's, not Playwright's download) with its own profile."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": width, "height": height})
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


def open_notebook(page: Any, url: str, token: str, root: Path, name: str,
                  cells: list[str]) -> None:
    """Write a notebook into the served folder, open it and run its first cell."""
    (root / name).write_text(json.dumps(notebook(cells)))
    page.goto(f"{url}/lab/tree/{name}?token={token}&reset")
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']")
    run_first_cell(page)


def dismiss_dialogs(page: Any) -> list[str]:
    """Answer JupyterLab dialogs that would take the clicks with their default button (on a
    loaded machine the notebook can open before the kernel specs are known, and JupyterLab
    asks for a kernel: the default is the notebook's own); returns their text (printed, so a
    run says what it answered)."""
    seen = []
    for _ in range(5):
        dialog = page.locator(".jp-Dialog")
        if not dialog.count():
            break
        text = " ".join(dialog.first.inner_text().split())
        seen.append(text)
        print(f"lab_harness: answered a JupyterLab dialog: {text[:200]}", file=sys.stderr)
        accept = dialog.first.locator(".jp-Dialog-button.jp-mod-accept")
        if accept.count():
            accept.first.click()
        else:
            page.keyboard.press("Escape")
        page.wait_for_timeout(300)
    return seen


def run_first_cell(page: Any) -> None:
    """Run the first cell with the toolbar button; a click right after the kernel connects
    can be lost, so retry until the prompt shows the cell running or run."""
    for _ in range(6):
        dismiss_dialogs(page)
        try:
            page.locator(".jp-Cell").first.click(timeout=10_000)
            page.locator("[data-command='notebook:run-cell-and-select-next']").first.click(
                timeout=10_000)
            page.wait_for_function(
                "() => /\\[(\\*|\\d+)\\]/.test("
                "document.querySelector('.jp-Cell .jp-InputPrompt').textContent)", timeout=10_000)
            return
        except Exception:  # noqa: BLE001 - playwright's TimeoutError: try again
            continue
    raise AssertionError("the notebook's first cell never started running")


# -- the dashboard at scale -----------------------------------------------------------------------

def scale_cell(aliases: int, per_alias: int, latency_ms: float, limit: int = 10) -> str:
    """A dashboard of ``aliases`` x ``per_alias`` stub tasks, ``limit`` parallel per alias,
    logging to ``events.jsonl`` in the served folder."""
    return f"""\
import codexflow_nb
agents = ["code-analyzer", "system-architect", "coder", "tester", "security-auditor"]
aliases = {{f"a{{i}}": {{"id": agents[i % 5], "overrides": {{"runtime": {{"concurrency":
           {{"max_parallel_tasks": {limit}}}}}}}}} for i in range({aliases})}}
tasks = {{a: [f"Task {{j}} of {{a}}: look at part {{j}}" for j in range({per_alias})] for a in aliases}}
dash = codexflow_nb.dashboard(tasks, aliases=aliases, latency_ms={latency_ms}, chunks=12,
                              log_file="events.jsonl", runs_dir=None)
dash"""


#: Injected into the page before Run: counts mutation records per second (and those inside
#: the plan graph), long tasks, and the moments the headline first shows progress and
#: "finished".
PROBE = """() => {
  const cf = window.__cf = {mutations: {}, inPlot: 0, total: 0, added: 0, longTasks: [],
                            firstProgress: null, finished: null, clickAt: null};
  const headline = document.querySelector('.codexflow-headline .widget-html-content')
      || [...document.querySelectorAll('.widget-html-content')]
         .find(e => /not started|no runnable tasks|finished/.test(e.textContent));
  cf.headlineFound = !!headline;
  const look = () => {
    if (!headline || cf.clickAt === null) return;
    const text = headline.textContent;
    if (cf.firstProgress === null && /^run \\S+ ·/.test(text)) cf.firstProgress = Date.now();
    if (cf.finished === null && cf.firstProgress !== null && / finished /.test(text))
      cf.finished = Date.now();
  };
  new MutationObserver(records => {
    const second = Math.floor(Date.now() / 1000);
    cf.mutations[second] = (cf.mutations[second] || 0) + records.length;
    cf.total += records.length;
    for (const r of records) {
      cf.added += r.addedNodes.length;
      const el = r.target.nodeType === 1 ? r.target : r.target.parentElement;
      if (el && (el.closest('.codexflow-plan') || el.querySelector(':scope > .codexflow-plan')))
        cf.inPlot += 1;
    }
    look();
  }).observe(document.body, {subtree: true, childList: true, attributes: true,
                             characterData: true});
  new PerformanceObserver(list => {
    for (const e of list.getEntries()) cf.longTasks.push([performance.timeOrigin + e.startTime,
                                                          e.duration]);
  }).observe({type: 'longtask'});
  cf.reset = () => { cf.mutations = {}; cf.inPlot = 0; cf.total = 0; cf.added = 0;
                     cf.longTasks = [];
                     cf.firstProgress = null; cf.finished = null; cf.clickAt = null; };
  return cf.headlineFound;
}"""

CLICK = """(label) => {
  const button = [...document.querySelectorAll('button.jupyter-button')]
      .find(b => b.textContent.trim() === label);
  window.__cf.clickAt = window.__cf.clickAt || Date.now();
  button.click();
  return Date.now();
}"""

#: The stacked bars of the run panel: per bar, the share of each status (title "status: n").
BARS = """els => els.map(bar => Object.fromEntries([...bar.querySelectorAll('rect[data-status]')]
    .map(r => [r.dataset.status, [parseFloat(r.getAttribute('width')), r.getAttribute('fill')]])))"""


def epoch_ms(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000


def runs(log: Path) -> list[list[dict[str, Any]]]:
    """The event log's runs, in order, each a list of events."""
    found: dict[str, list[dict[str, Any]]] = {}
    for line in log.read_text().splitlines():
        event = json.loads(line)
        found.setdefault(event["runId"], []).append(event)
    return list(found.values())


def page_figures(page: Any, since: float, until: float) -> dict[str, Any]:
    """The probe's figures between Run (``since``, ms since the epoch) and the kernel's
    ``run_complete`` (``until``); long tasks up to 2 s after it count too."""
    cf = page.evaluate("() => window.__cf")
    seconds = {int(k): v for k, v in cf["mutations"].items()
               if since / 1000 - 1 <= int(k) <= until / 1000}
    span = max(1.0, (until - since) / 1000)
    long = [(start, d) for start, d in cf["longTasks"] if since <= start <= until + 2000]
    tasks = [d for _start, d in long]
    return {"mutations_per_s": round(sum(seconds.values()) / span),
            "mutations_peak_s": max(seconds.values(), default=0),
            "mutations_in_graph_pct": round(100 * cf["inPlot"] / max(1, cf["total"]), 1),
            "added_nodes_per_s": round(cf["added"] / span),
            "long_tasks": len(tasks), "blocked_s": round(sum(tasks) / 1000, 2),
            "longest_task_ms": round(max(tasks, default=0)),
            # when each long task started (s after Run) and how long it took (ms)
            "long_tasks_at": [[round((start - since) / 1000, 2), round(d)] for start, d in long],
            "first_progress_s": (round((cf["firstProgress"] - cf["clickAt"]) / 1000, 2)
                                 if cf["firstProgress"] else None),
            "page_finished_s": (round((cf["finished"] - cf["clickAt"]) / 1000, 2)
                                if cf["finished"] else None)}


def wait_finished(page: Any, timeout_s: float) -> None:
    page.wait_for_function("() => window.__cf.finished !== null", timeout=timeout_s * 1000)


def load() -> float:
    """The 1-minute load average (measurements here are load-sensitive)."""
    return round(os.getloadavg()[0], 2)


def measure_scale(page: Any, url: str, token: str, root: Path, shots: Path | None, *,
                  aliases: int = 5, per_alias: int = 100, latency_ms: float = 1000,
                  limit: int = 10, stop_at: float = 5.0, checks: bool = True) -> dict[str, Any]:
    """Open a dashboard of ``aliases`` x ``per_alias`` stub tasks, run it to the end, then
    run it again and press Stop at ``stop_at`` seconds. Returns the figures of both runs
    (``run`` and ``stop``: :func:`page_figures` plus the kernel's times) and, with
    ``checks``, what the test asserts (``checks``: an output opened during the run stays
    open, the bars, one group expanded). Screenshots go to ``shots`` (None: none)."""
    total = aliases * per_alias
    name = f"scale-{total}-{latency_ms:g}.ipynb"
    page.set_default_timeout(120_000)
    open_notebook(page, url, token, root, name, [scale_cell(aliases, per_alias, latency_ms,
                                                            limit)])
    page.locator("button.jupyter-button", has_text=re.compile(r"^\s*Run\s*$")).wait_for()
    page.wait_for_selector(".jp-OutputArea-output .codexflow-plan svg", state="attached")
    assert page.evaluate(PROBE), "the run headline was not found"
    log = root / "events.jsonl"
    metrics: dict[str, Any] = {"tasks": total, "latency_ms": latency_ms, "limit": limit}
    found: dict[str, Any] = {}

    # -- run 1: to the end ----------------------------------------------------------------
    metrics["load_before"] = load()
    before = len(runs(log)) if log.exists() else 0  # before Run: the run may log at once
    clicked = page.evaluate(CLICK, "Run")
    if checks:  # the user opens a task's output while it streams: it stays open
        page.locator(".jupyter-widget-Collapse-header").first.click()
        page.wait_for_timeout(500)
        page.locator(".jp-OutputArea-output .codexflow-plan").first.scroll_into_view_if_needed()
        page.wait_for_timeout(3500)
        if shots is not None:
            page.screenshot(path=str(shots / f"scale-{total}-running.png"), full_page=True)
        found["opened"] = page.locator(".jupyter-widget-Collapse-open").count()
    wait_finished(page, 60 + total * latency_ms / 1000 / limit)
    page.wait_for_timeout(1500)  # let the last redraws land before reading the counters
    logged = runs(log)
    assert len(logged) > before, "the run wrote no events"
    first = logged[-1]
    kernel_done = epoch_ms(first[-1]["ts"])
    assert first[-1]["kind"] == "run_complete", first[-1]
    figures = page_figures(page, clicked, kernel_done)
    figures["ok"] = first[-1]["ok"]
    figures["kernel_finished_s"] = round((kernel_done - clicked) / 1000, 2)
    figures["page_after_kernel_s"] = round(figures["page_finished_s"]
                                           - figures["kernel_finished_s"], 2)
    figures["load"] = load()
    metrics["run"] = figures
    if shots is not None:
        page.locator(".jp-Cell-outputArea").first.screenshot(
            path=str(shots / f"scale-{total}-finished.png"))
    if checks:
        found["still_open"] = page.locator(".jupyter-widget-Collapse-open").count()
        found["bars_finished"] = page.locator(
            ".jp-OutputArea-output .codexflow-bar").evaluate_all(BARS)
        # one group expanded into its tasks (the graph view of per_alias nodes)
        show = page.locator(".codexflow-show select")
        show.select_option(label=f"a1 · main ({per_alias} tasks)")
        page.wait_for_function(
            "() => document.querySelectorAll("
            f"'.jp-OutputArea-output .codexflow-plan svg g').length >= {per_alias}")
        if shots is not None:
            page.locator(".jp-OutputArea-output .codexflow-plan").first.screenshot(
                path=str(shots / f"scale-{total}-group.png"))
        show.select_option(index=0)

    # -- run 2: Stop at +stop_at s ---------------------------------------------------------
    page.evaluate("() => window.__cf.reset()")
    metrics["load_before_stop"] = load()
    clicked = page.evaluate(CLICK, "Run")
    page.wait_for_timeout(stop_at * 1000)
    stop_clicked = page.evaluate(CLICK, "Stop")
    wait_finished(page, 60)
    page.wait_for_timeout(1500)
    second = runs(log)[-1]
    assert second[0]["runId"] != first[0]["runId"], "the second run wrote no events"
    end = second[-1]
    assert end["kind"] == "run_complete", end
    cancelled = [e for e in second if e["kind"] == "task_cancelled"]
    kernel_done = epoch_ms(end["ts"])
    figures = page_figures(page, clicked, kernel_done)
    figures["stop_at_s"] = round((stop_clicked - clicked) / 1000, 2)
    figures["stop_to_engine_s"] = (round((epoch_ms(cancelled[0]["ts"]) - stop_clicked) / 1000, 3)
                                   if cancelled else None)
    figures["kernel_finished_s"] = round((kernel_done - clicked) / 1000, 2)
    figures["page_after_kernel_s"] = round(figures["page_finished_s"]
                                           - figures["kernel_finished_s"], 2)
    figures["cancelled_reason"] = end.get("cancelled")
    figures["counts"] = end["counts"]
    figures["load"] = load()
    metrics["stop"] = figures
    page.locator(".jp-OutputArea-output .codexflow-headline").first.scroll_into_view_if_needed()
    if shots is not None:
        page.screenshot(path=str(shots / f"scale-{total}-stopped.png"))
        page.locator(".jp-Cell-outputArea").first.screenshot(
            path=str(shots / f"scale-{total}-stopped-panel.png"))
    if checks:
        found["bars_stopped"] = page.locator(
            ".jp-OutputArea-output .codexflow-bar").evaluate_all(BARS)
        metrics["checks"] = found
    if shots is not None:
        (shots / f"scale-{total}-metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def against_targets(metrics: dict[str, Any]) -> list[tuple[str, str, Any, Any, bool]]:
    """``(run, figure, measured, target, met)`` for each target of issue 16."""
    rows = []
    for run in ("run", "stop"):
        m = metrics[run]
        for name, target in TARGETS.items():
            if name == "stop_to_engine_s" and run != "stop":
                continue
            value = m.get(name)
            met = value is not None and (value <= target if name.endswith("_ms")
                                         else value < target)
            rows.append((run, name, value, target, met))
    return rows

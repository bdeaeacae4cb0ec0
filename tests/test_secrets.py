"""Secrets sweep: runs that carry an API key (which is also the endpoint's bearer token), through
the Python API, the CLI, ``codex-flow serve`` and a dashboard notebook executed by a real kernel,
including the failure paths (a wrong key: 401; an endpoint answering 500), and then a search of
everything they wrote or printed (event logs, every file under ``.runs``, stdout and stderr of
each process, the endpoint's access log, the saved ``.ipynb``) for the key and the wrong key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import ServerThread

from codexflow_nb.api import prepare_run
from codexflow_nb.registry import Registry
from codexflow_nb.server import create_app

#: Random per session, so nothing on disk can contain them unless a run put them there.
SECRET = f"sk-sweep-{secrets.token_hex(12)}"
WRONG = f"sk-wrong-{secrets.token_hex(12)}"
TASKS = {"reviewer": ["Review the retry policy", "Review the parser"],
         "architect": ["Propose a layout for the event store"]}


def leaks(text: str | bytes) -> list[str]:
    """Which secrets (or a 12-character piece of their random part) ``text`` contains."""
    data = text.encode() if isinstance(text, str) else text
    found = []
    for name, value in (("SECRET", SECRET), ("WRONG", WRONG)):
        random_part = value.split("-")[-1]
        if any(piece.encode() in data for piece in
               (value, random_part[:12], random_part[-12:])):
            found.append(name)
    return found


def sweep(root: Path) -> list[Path]:
    """Every file under ``root`` (symlinks not followed), asserting none holds a secret."""
    files = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    for path in files:
        assert not leaks(path.read_bytes()), f"{path}: {leaks(path.read_bytes())}"
    return files


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_")}
    return subprocess.run([sys.executable, "-m", "codexflow_nb", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120, env={**clean, **(env or {})})


@pytest.fixture(scope="module")
def endpoints(registry: Registry) -> Iterator[tuple[str, str]]:
    """(a good endpoint, one that answers every request with 500), both with token SECRET."""
    with ServerThread(create_app(registry, token=SECRET, chunk_delay_ms=1)) as good, \
            ServerThread(create_app(registry, token=SECRET, fail_rate=1.0)) as failing:
        yield good.url, failing.url


@contextlib.contextmanager
def serve(*args: str, env: dict[str, str] | None = None) -> Iterator[tuple[str, dict[str, str]]]:
    """``codex-flow serve --port 0 --access-log ARGS``; yields its URL and, once stopped,
    fills the dict with its ``stdout`` and ``stderr``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_")}
    proc = subprocess.Popen([sys.executable, "-m", "codexflow_nb", "serve", "--port", "0",
                             "--access-log", *args], env={**clean, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    output: dict[str, str] = {}
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        assert "auth on" in banner, banner
        yield banner.split()[2], output
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
        output.update(stdout=banner + out, stderr=err)


# -- Python API ---------------------------------------------------------------------------------
def test_python_api_runs_write_no_secret(tmp_path: Path, endpoints: tuple[str, str]) -> None:
    good, failing = endpoints
    texts: list[str] = []
    outcomes = {}
    for name, url, key, stream in (("ok-json", good, SECRET, False), ("ok-sse", good, SECRET, True),
                                   ("wrong-key", good, WRONG, True),
                                   ("http-500", failing, SECRET, False)):
        run = prepare_run(TASKS, runtime="codex", url=url, api_key=key, stream=stream, retries=2,
                          backoff_base_ms=1, log_file=tmp_path / "data/logs/events.jsonl",
                          runs_dir=tmp_path / ".runs")
        texts.append(repr(run.engine.runtime))
        result = asyncio.run(run.execute())
        outcomes[name] = result
        texts += [repr(result), result.summary_text(verbose=True), result._repr_html_(),
                  json.dumps([t.to_dict() for t in result.tasks])]
    assert outcomes["ok-json"].ok and outcomes["ok-sse"].ok
    assert {t.error["status"] for t in outcomes["wrong-key"].tasks} == {401}
    assert {t.error["status"] for t in outcomes["http-500"].tasks} == {500}
    assert all(t.attempts == 3 for t in outcomes["http-500"].tasks)  # retried, then failed
    assert "api_key=***" in texts[0]
    for text in texts:
        assert not leaks(text), text
    files = sweep(tmp_path)
    assert len([f for f in files if f.name == "output.json"]) == 4 * 3


# -- CLI and codex-flow serve --------------------------------------------------------------------
def test_cli_and_serve_output_hold_no_secret(tmp_path: Path, endpoints: tuple[str, str]) -> None:
    _, failing = endpoints
    runs: dict[str, subprocess.CompletedProcess[str]] = {}
    with serve("--token", SECRET, "--chunk-delay-ms", "0") as (url, served):
        base = ("run", "--example", "--runtime", "codex", "--retries", "1")
        runs["flag"] = cli(*base, "--codex-url", url, "--codex-key", SECRET, "--stream",
                           "--verbose", cwd=tmp_path)
        runs["env"] = cli(*base, "--codex-url", url, "--json", "--verbose", cwd=tmp_path,
                          env={"CODEX_API_KEY": SECRET})
        runs["env-url"] = cli(*base, "--stream", cwd=tmp_path,
                              env={"CODEX_API_KEY": SECRET, "CODEX_URL": url})
        runs["wrong"] = cli(*base, "--codex-url", url, "--codex-key", WRONG, "--stream",
                            "--verbose", cwd=tmp_path)
        runs["dry"] = cli(*base, "--codex-url", url, "--codex-key", SECRET, "--dry-run",
                          cwd=tmp_path)
    runs["500"] = cli(*base, "--codex-url", failing, "--codex-key", SECRET, "--verbose",
                      cwd=tmp_path)
    runs["bad-key"] = cli(*base, "--codex-url", failing, "--codex-key", SECRET + " x",
                          cwd=tmp_path)
    codes = {name: proc.returncode for name, proc in runs.items()}
    assert codes == {"flag": 0, "env": 0, "env-url": 0, "wrong": 1, "dry": 0, "500": 1,
                     "bad-key": 2}, {n: p.stderr for n, p in runs.items()}
    # the failures are reported (so their messages were swept) ...
    assert "HTTP 401" in runs["wrong"].stdout and "HTTP 500" in runs["500"].stdout
    assert "printable ASCII" in runs["bad-key"].stderr
    assert '"runtime": "codex"' in runs["env"].stdout and "[reviewer/reviewer-1] " in runs["flag"].stdout
    # ... and nothing printed holds a secret
    for name, proc in runs.items():
        assert not leaks(proc.stdout) and not leaks(proc.stderr), name
    # the endpoint logged every request, the rejected ones too, without the token
    access = served["stdout"] + served["stderr"]
    assert access.count('"POST /run?stream=1 HTTP/1.1" 200') >= 10
    assert '"POST /run?stream=1 HTTP/1.1" 401' in access and '"POST /run HTTP/1.1" 200' in access
    assert not leaks(access), access
    files = sweep(tmp_path)
    log = (tmp_path / "data/logs/events.jsonl").read_text()
    assert log.count('"kind":"run_started"') == 5  # flag, env, env-url, wrong, 500
    assert len([f for f in files if f.name == "output.json"]) == 5 * 5


# -- a dashboard notebook ------------------------------------------------------------------------
NOTEBOOK = [
    "import os\n"
    "import codexflow_nb\n"
    "dash = codexflow_nb.dashboard(retries=1, backoff_base_ms=1)\n"
    "dash.panel.runtime.value = 'codex'\n"
    "dash.panel.url.value = os.environ['SWEEP_URL']\n"
    "dash.panel.key.value = os.environ['SWEEP_KEY']  # typed into the Password widget\n"
    "dash",
    "result = await dash.run_async()\n"
    "print(result.ok)\n"
    "print(result.summary_text(verbose=True))",
    "dash.panel.key.value = os.environ['SWEEP_WRONG']\n"
    "bad = await dash.run_async()\n"
    "print(bad.ok, [t.error['message'] for t in bad.tasks][:1])\n"
    "bad",
    "dash.panel.url.value = os.environ['SWEEP_FAILING_URL']\n"
    "dash.panel.key.value = os.environ['SWEEP_KEY']\n"
    "failed = await dash.run_async()\n"
    "print(failed.summary_text(verbose=True))",
    "%load_ext codexflow_nb",
    "%%codexflow --runtime codex --url $SWEEP_URL --key-env SWEEP_KEY --out magic\n"
    "reviewer: [Review the magic]",
    "print(magic.ok, dash.panel.key.value == '', dash.panel.has_key)",
]


@pytest.mark.slow
def test_a_saved_dashboard_notebook_holds_no_secret(workdir: Path, endpoints: tuple[str, str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import nbclient
    import nbformat

    good, failing = endpoints
    for name, value in (("SWEEP_URL", good), ("SWEEP_FAILING_URL", failing),
                        ("SWEEP_KEY", SECRET), ("SWEEP_WRONG", WRONG)):
        monkeypatch.setenv(name, value)  # the kernel inherits them; the cells name no secret
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in NOTEBOOK]
    nb.cells[5].source = nb.cells[5].source.replace("$SWEEP_URL", good)
    nbclient.NotebookClient(nb, timeout=90, kernel_name="python3",
                            resources={"metadata": {"path": str(workdir)}}).execute()
    path = workdir / "dashboard.ipynb"
    nbformat.write(nb, path)

    saved = path.read_text()
    outputs = [json.dumps(cell.outputs) for cell in nb.cells]
    assert nb.cells[1].outputs[0]["text"].startswith("True\nOrchestration Summary")
    assert "HTTP 401" in outputs[2] and "HTTP 500" in outputs[3]  # the failures are shown
    assert nb.cells[6].outputs[0]["text"].strip() == "True True True"
    widgets = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    passwords = [m["state"] for m in widgets.values() if m["model_name"] == "PasswordModel"]
    assert passwords and all(p["value"] == "" for p in passwords)  # widget state was saved
    assert not leaks(saved), leaks(saved)
    files = sweep(workdir)
    log = (workdir / "data/logs/events.jsonl").read_text()
    assert log.count('"kind":"run_started"') == 4  # three dashboard runs and the magic
    assert len([f for f in files if f.name == "output.json"]) == 3 * 5 + 1

"""The terminal experience: --version, live progress (rich on a TTY, plain lines elsewhere),
reasons on failure, cancelled tasks apart from failed ones, a short plan printout, prefixed
streams, --json statuses, shell completion, and clear errors for a missing extra or a broken
custom runtime."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import codexflow_nb as cf
from codexflow_nb.api import prepare_run
from codexflow_nb.errors import ConfigError

CLI = [sys.executable, "-m", "codexflow_nb"]


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_version(tmp_path: Path) -> None:
    proc = cli("--version", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == f"codex-flow {cf.__version__}"


def test_plain_progress_lines_off_a_terminal(tmp_path: Path) -> None:
    proc = cli("run", "--example", "--stub-latency-ms", "1500", "--no-plan", cwd=tmp_path)
    before_summary = proc.stdout.split("Orchestration Summary")[0]
    assert "running 5 tasks on stub..." in before_summary
    assert "progress: " in before_summary and "ended" in before_summary
    quiet = cli("run", "--example", "--stub-latency-ms", "10", "--no-plan", "--no-progress",
                cwd=tmp_path)
    assert quiet.stdout.startswith("Orchestration Summary")


def test_bars_on_a_terminal(tmp_path: Path) -> None:
    main, child = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    env["TERM"] = "xterm-256color"
    proc = subprocess.Popen([*CLI, "run", "--example", "--stub-latency-ms", "1200",
                             "--no-plan"], cwd=tmp_path, stdin=child, stdout=child,
                            stderr=child, env=env, close_fds=True)
    os.close(child)
    out = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(main, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    proc.wait(10)
    os.close(main)
    text = out.decode(errors="replace")
    assert proc.returncode == 0
    assert "━" in text and "running " in text and "/2 done" in text  # bars, redrawn live
    assert "Orchestration Summary" in text


def test_failure_reasons_and_cancelled_column(tmp_path: Path) -> None:
    down = cli("run", "--example", "--runtime", "codex", "--codex-url", "http://127.0.0.1:1",
               "--retries", "0", "--no-plan", cwd=tmp_path)
    assert down.returncode == 1
    assert "why tasks failed:" in down.stdout
    assert ("5 tasks: cannot reach http://127.0.0.1:1 (connection refused): is the endpoint "
            "running? (codex-flow serve) (e.g. reviewer/reviewer-1)") in down.stdout

    proc = subprocess.Popen([*CLI, "run", "--example", "--stub-latency-ms", "20000",
                             "--no-plan"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    rows = [line.split() for line in out.splitlines() if line.startswith("  reviewer ")]
    # alias agent limit done failed cancelled
    assert rows and rows[0][3:6] == ["0", "0", "2"], out
    assert "why tasks failed:" not in out and "interrupted (Ctrl-C)" in out


def test_plan_printout_stays_short(tmp_path: Path) -> None:
    long_text = "Review module " + "x" * 200 + "\nwith a second line"
    tasks = {"reviewer": [f"{long_text} {i}" for i in range(50)], "architect": ["One task"]}
    run = prepare_run(tasks, log_file=None, runs_dir=None)
    from codexflow_nb.cli.run_cmd import format_plan

    text = format_plan(run)
    lines = text.splitlines()
    assert lines[0].startswith("Plan (51 tasks, 1 phase, run ")
    assert "reviewer -> code-analyzer (limit 2, timeout 180000 ms): 50 tasks" in text
    assert "architect -> system-architect (limit 1, timeout 480000 ms): 1 task" in text
    assert "… and 47 more tasks" in text and len(lines) < 12
    assert all(len(line) < 120 for line in lines) and "…" in lines[2]
    plan = {"phases": [{"name": "build", "tasks": [{"id": "a", "alias": "reviewer",
                                                     "task": "A"}]},
                       {"name": "check", "tasks": [{"id": "b", "alias": "architect",
                                                     "task": "B", "dependsOn": ["a"]}]}]}
    phased = format_plan(prepare_run(plan=plan, log_file=None, runs_dir=None))
    assert "phase 1 · build" in phased and "phase 2 · check" in phased
    assert "- b: B  [after a]" in phased


def test_every_streamed_line_carries_its_task(tmp_path: Path) -> None:
    from io import StringIO

    from codexflow_nb.cli.run_cmd import TerminalView

    out = StringIO()
    view = TerminalView(out)
    view({"kind": "task_chunk", "alias": "a", "key": "a-1", "content": "one\ntwo\n"})
    view({"kind": "task_chunk", "alias": "b", "key": "b-1", "content": "three"})
    assert out.getvalue() == "  [a/a-1] one\n  [a/a-1] two\n  [b/b-1] three\n"


def test_json_lists_each_task_with_status_and_error(tmp_path: Path) -> None:
    proc = cli("run", "--example", "--runtime", "codex", "--codex-url", "http://127.0.0.1:1",
               "--retries", "0", "--json", cwd=tmp_path)
    doc = json.loads(proc.stdout)
    assert len(doc["tasks"]) == 5
    first = doc["tasks"][0]
    assert first["status"] == "failed" and first["error"]["type"] == "ConnectionError"
    assert "connection refused" in first["error"]["message"]
    assert doc["failureReasons"][0]["count"] == 5
    assert doc["aliases"]["reviewer"]["cancelled"] == 0


@pytest.mark.parametrize("shell, marker", [("bash", "complete "), ("zsh", "#compdef codex-flow"),
                                           ("fish", "complete --command codex-flow")])
def test_shell_completion(tmp_path: Path, shell: str, marker: str) -> None:
    proc = cli("completion", shell, cwd=tmp_path)
    assert proc.returncode == 0 and marker in proc.stdout


def test_completion_answers_a_partial_option(tmp_path: Path) -> None:
    env = {"_ARGCOMPLETE": "1", "_ARGCOMPLETE_SHELL": "bash", "COMP_LINE": "codex-flow run --exa",
           "COMP_POINT": "20", "_ARGCOMPLETE_IFS": "\n"}
    proc = subprocess.run(f"{sys.executable} -m codexflow_nb 8>&1 9>/dev/null", shell=True,
                          cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})
    assert "--example" in proc.stdout


def test_dashboard_without_the_notebook_extra_is_one_line(monkeypatch) -> None:
    for name in list(sys.modules):
        if name == "ipywidgets" or name.startswith(("ipywidgets.", "codexflow_nb.widgets")):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # import fails as if not installed
    with pytest.raises(ConfigError) as info:
        cf.dashboard()
    assert str(info.value) == ("codexflow_nb.dashboard needs ipywidgets: pip install "
                               "'codexflow-nb[notebook]'")


def test_a_custom_runtime_is_checked_before_the_run(tmp_path: Path) -> None:
    class Incomplete:
        name = "mine"

        async def run(self, call, on_chunk=None):
            return None

        def open(self, n):
            return None

    with pytest.raises(ConfigError) as info:
        prepare_run({"reviewer": ["x"]}, runtime=Incomplete(), log_file=None, runs_dir=None)
    assert str(info.value) == ("runtime Incomplete: missing default_retries, open() as an async "
                               "method, close() (see the runtime protocol in docs/RUNTIME.md)")


def test_aliases_file_adds_to_the_defaults(tmp_path: Path) -> None:
    (tmp_path / "one.yaml").write_text(
        "reviewer:\n  id: code-analyzer\n  overrides: {runtime: {concurrency: "
        "{max_parallel_tasks: 1}}}\n")
    merged = cli("run", "--example", "--aliases", "one.yaml", "--dry-run", cwd=tmp_path)
    assert merged.returncode == 0, merged.stderr
    assert "reviewer -> code-analyzer (limit 1" in merged.stdout  # overridden by name
    assert "reviewer2 -> code-analyzer (limit 2" in merged.stdout  # the defaults stay
    alone = cli("run", "--example", "--aliases", "one.yaml", "--no-default-aliases",
                "--dry-run", cwd=tmp_path)
    assert alone.returncode == 2 and "'reviewer2' is neither an alias (reviewer)" in alone.stderr


def test_json_reaches_a_slow_reader_whole_under_pythonunbuffered(workdir: Path) -> None:
    """`run --json` of 2,000 tasks (~370 KiB) to a reader that starts after 2 s: every byte
    arrives. With PYTHONUNBUFFERED, print() wrote it through a raw stream whose short write
    dropped all but the first 64 KiB, and the run still exited 0."""
    (workdir / "tasks.json").write_text(json.dumps({"coder": [f"t{i}" for i in range(2000)]}))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "codexflow_nb", "run", "-f", "tasks.json", "--no-plan", "--json",
         "--stub-latency-ms", "0"], cwd=workdir, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL)
    time.sleep(2)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    assert len(json.loads(out)["tasks"]) == 2000

"""``%%codexflow``: the cell magic in an IPython shell and in a real kernel."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import codexflow_nb.magic as magic
from codexflow_nb.events import TERMINAL_KINDS
from codexflow_nb.widgets.render import LiveView

BODY = "reviewer: [Review the engine, Review the parser]\narchitect: Propose a layout\n"


@pytest.fixture(scope="module")
def shell() -> InteractiveShell:
    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "codexflow_nb")
    return sh


def run_magic(shell: InteractiveShell, line: str, body: str = BODY) -> list[Any]:
    with capture_output() as cap:
        shell.run_cell_magic("codexflow", line, body)
    return cap.outputs


def test_magic_runs_the_cell_and_streams_into_one_display(shell: InteractiveShell, workdir: Path) -> None:
    outputs = run_magic(shell, "--latency-ms 1000 --chunks 10 --out res")
    result = shell.user_ns["res"]
    assert result.ok and len(result.tasks) == 3
    html = [o.data["text/html"] for o in outputs]
    assert "not started" in html[0]  # drawn before the run starts ...
    final = html[-1]
    assert "codexflow-summary" in final and final.count(">completed</span>") == 3  # ... ends as a summary
    first_line = result.tasks[0].output["text"].splitlines()[0][:20]
    assert any(first_line in h and "running" in h for h in html[1:-1])  # streamed while running
    assert len(outputs) <= 2 + 1.0 / 0.1 + 3  # ~1 s of streaming: about ten updates, not 30 chunks
    log = workdir / "data/logs/events.jsonl"
    assert log.is_file()
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert sum(e["kind"] == "task_chunk" for e in events) == 30


def test_magic_runs_a_plan_body(shell: InteractiveShell, workdir: Path) -> None:
    body = ("phases:\n- name: design\n  tasks: [{id: d1, alias: architect, task: Design}]\n"
            "- name: build\n  tasks: [{id: b1, alias: reviewer, task: Build}]\n")
    run_magic(shell, "--plan --no-log --latency-ms 5 --out plan_res", body)
    res = shell.user_ns["plan_res"]
    assert [t.key for t in res.tasks] == ["d1", "b1"] and res.ok
    assert not (workdir / "data").exists() and not (workdir / ".runs").exists()


@pytest.mark.parametrize(("line", "body", "message"), [
    ("--bogus", BODY, "unknown option(s): --bogus"),
    ("--runtime nope", BODY, "invalid choice"),
    ("", "   \n", "must hold a task map"),
    ("", "reviewer: [unclosed\n", "cell: invalid YAML: line 2"),
    ("", "ghost: [Haunt]\n", "'ghost' is neither an alias"),
    ("--runtime codex", BODY, "needs --url URL"),
    ("--interval -1", BODY, "--interval must be >= 0"),
])
def test_magic_user_errors_are_one_line_usage_errors(shell: InteractiveShell, workdir: Path,
                                                     line: str, body: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        run_magic(shell, line, body)
    assert message in str(info.value)
    assert not (workdir / "data").exists()  # nothing written


def test_interrupting_the_magic_cancels_every_task(shell: InteractiveShell, workdir: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    class InterruptedView(LiveView):
        """Raises KeyboardInterrupt (what a kernel interrupt does) once a task has started."""

        fired = False

        def __call__(self, event: dict[str, Any]) -> None:
            super().__call__(event)
            if event["kind"] == "task_started" and not InterruptedView.fired:
                InterruptedView.fired = True
                raise KeyboardInterrupt

    monkeypatch.setattr(magic, "LiveView", InterruptedView)
    outputs = run_magic(shell, "--latency-ms 60000 --out stopped")
    res = shell.user_ns["stopped"]
    assert InterruptedView.fired and res.cancelled == "interrupted"
    assert {t.status for t in res.tasks} == {"cancelled"}
    events = [json.loads(line) for line in (workdir / "data/logs/events.jsonl").read_text().splitlines()]
    terminal = [e["key"] for e in events if e["kind"] in TERMINAL_KINDS]
    assert sorted(terminal) == sorted(t.key for t in res.tasks)  # exactly one each
    assert "cancelled: interrupted" in outputs[-1].data["text/html"]


@pytest.mark.slow
def test_magic_in_a_real_kernel_leaves_the_summary_in_the_notebook(workdir: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("%load_ext codexflow_nb"),
                nbformat.v4.new_code_cell("%%codexflow --no-log --latency-ms 50 --chunks 4\n" + BODY)]
    nbclient.NotebookClient(nb, timeout=60, kernel_name="python3",
                            resources={"metadata": {"path": str(workdir)}}).execute()
    outputs = nb.cells[1].outputs
    assert [o["output_type"] for o in outputs] == ["display_data"]  # one display, updated in place
    html = outputs[0]["data"]["text/html"]
    assert "codexflow-summary" in html and html.count(">completed</span>") == 3
    assert "streamed: <code>reviewer-1</code>" in html

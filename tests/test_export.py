"""``codex-flow export-run``: a finished run becomes an executed notebook, ready to share."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

import codexflow_nb
from codexflow_nb.cli import main
from codexflow_nb.export import ExportError, build_notebook, execute_notebook, read_run

PLOTLY = "application/vnd.plotly.v1+json"

PLAN = {"phases": [
    {"name": "design", "tasks": [{"id": "api", "alias": "architect", "task": "Design the API"}]},
    {"name": "build", "tasks": [
        {"id": "impl", "alias": "coder", "task": "Implement the API"},
        {"id": "load", "alias": "hasty", "task": "Run the load test", "dependsOn": ["api"]}]},
]}
#: ``hasty`` times out (20 ms limit, 60 ms stub latency), so the run has a failure to show.
ALIASES = {"architect": {"id": "system-architect"}, "coder": {"id": "coder"},
           "hasty": {"id": "tester", "overrides": {"runtime": {"timeout_ms": 20}}}}


@pytest.fixture()
def project(tmp_path: Path) -> dict[str, object]:
    """Two runs in one log: a plan with a dependency and a timeout, then the example."""
    log, runs = tmp_path / "logs" / "events.jsonl", tmp_path / "runs"
    first = codexflow_nb.run(plan=PLAN, aliases=ALIASES, latency_ms=60, jitter=0,
                             log_file=log, runs_dir=runs)
    second = codexflow_nb.run(str(codexflow_nb.api.EXAMPLE_TASKS), latency_ms=0,
                              log_file=log, runs_dir=runs)
    return {"log": log, "runs": runs, "first": first, "second": second, "dir": tmp_path}


def _export(project: dict[str, object], run_id: str, out: Path, *extra: str) -> int:
    return main(["export-run", run_id, "--notebook", str(out), "--log-file", str(project["log"]),
                 "--runs-dir", str(project["runs"]), *extra])


def _code_outputs(nb: nbformat.NotebookNode) -> list[tuple[str, list]]:
    return [(c.source, c.outputs) for c in nb.cells if c.cell_type == "code"]


def test_exports_an_executed_notebook(project, capsys) -> None:
    first = project["first"]
    out = project["dir"] / "shared" / "run.ipynb"
    assert _export(project, first.run_id, out, "--no-static-images") == 0
    assert f"wrote {out} (executed" in capsys.readouterr().out

    nb = nbformat.read(out, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["codexflow"]["runId"] == first.run_id
    heading = nb.cells[0].source
    assert first.run_id in heading and "runtime `stub`" in heading
    assert "- 3 tasks in 2 phases (design, build): 2 completed, 1 timeout\n" in heading
    assert "finished with failures" in heading
    cells = _code_outputs(nb)
    counts = [c.execution_count for c in nb.cells if c.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1))
    for source, outputs in cells:
        assert outputs, f"no output from {source.splitlines()[0]!r}"
        assert all(o.output_type != "error" for o in outputs), source
    text = "\n".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                     for _, outputs in cells for o in outputs)
    assert "api" in text and "impl" in text and "load" in text
    assert "Timeout" in text  # the failure table names the error type
    assert "System Architect (system-architect) on: Design the API" in text  # outputs section
    figures = [o for _, outputs in cells for o in outputs if PLOTLY in o.get("data", {})]
    assert len(figures) == 4  # timeline, concurrency, task times, tokens and cost
    assert all("image/png" not in o["data"] for o in figures)
    sections = [c.source.splitlines()[0] for c in nb.cells if c.cell_type == "markdown"]
    assert "## Tasks that did not complete" in sections and "## Critical path" in sections
    # the log is referenced relative to the notebook, so the two can move together
    setup = cells[0][0]
    assert "LOG_FILE = Path('../logs/events.jsonl')" in setup
    assert (out.parent / "../logs/events.jsonl").resolve() == project["log"].resolve()


def test_last_picks_the_latest_run(project) -> None:
    out = project["dir"] / "last.ipynb"
    assert _export(project, "last", out, "--no-execute") == 0
    nb = nbformat.read(out, as_version=4)
    assert nb.metadata["codexflow"]["runId"] == project["second"].run_id
    assert all(c.execution_count is None for c in nb.cells if c.cell_type == "code")
    sections = [c.source.splitlines()[0] for c in nb.cells if c.cell_type == "markdown"]
    # the example has no failures and no dependencies
    assert "## Tasks that did not complete" not in sections and "## Critical path" not in sections
    assert "## Outputs" in sections


def test_unknown_run_is_a_user_error_and_writes_nothing(project, capsys) -> None:
    out = project["dir"] / "nope.ipynb"
    assert _export(project, "20200101T000000000-abcdef", out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not in" in err[0] and project["second"].run_id in err[0]
    assert not out.exists()


def test_existing_notebook_needs_force(project, capsys) -> None:
    out = project["dir"] / "run.ipynb"
    out.write_text("keep me")
    assert _export(project, "last", out, "--no-execute") == 2
    assert "pass --force" in capsys.readouterr().err
    assert out.read_text() == "keep me"
    assert _export(project, "last", out, "--no-execute", "--force") == 0
    assert nbformat.read(out, as_version=4).metadata["codexflow"]["runId"]


@pytest.mark.parametrize(("args", "message"), [
    (["--log-file", "missing.jsonl"], "no event log here"),
    (["--notebook", "run.txt"], "must end in .ipynb"),
])
def test_bad_arguments_are_one_line_errors(project, capsys, monkeypatch, args, message) -> None:
    monkeypatch.chdir(project["dir"])
    argv = ["export-run", "last", "--notebook", "run.ipynb", "--log-file", str(project["log"]),
            "--no-execute"]
    for flag, value in zip(args[::2], args[1::2], strict=True):
        argv[argv.index(flag) + 1] = value
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_outputs_can_be_left_out(project) -> None:
    facts = read_run(project["log"], project["second"].run_id)
    with_outputs = build_notebook(facts, log_file=project["log"], runs_dir=project["runs"])
    without = build_notebook(facts, log_file=project["log"], runs_dir=project["runs"],
                             include_outputs=False)
    no_store = build_notebook(facts, log_file=project["log"], runs_dir=None)
    heads = [[c.source.splitlines()[0] for c in nb.cells if c.cell_type == "markdown"]
             for nb in (with_outputs, without, no_store)]
    assert "## Outputs" in heads[0]
    assert "## Outputs" not in heads[1] and "## Outputs" not in heads[2]


def test_an_interrupted_run_is_marked_not_finished(project, tmp_path) -> None:
    lines = project["log"].read_text().splitlines()
    second = project["second"].run_id
    torn = tmp_path / "torn.jsonl"  # the second run without its run_complete, as after a crash
    torn.write_text("\n".join(line for line in lines
                              if not (second in line and '"run_complete"' in line)) + "\n")
    facts = read_run(torn, "last")
    assert facts.run_id == second and not facts.finished
    nb = build_notebook(facts, log_file=torn, runs_dir=None)
    assert "not finished" in nb.cells[0].source
    assert any(c.source == "## Tasks that did not complete" for c in nb.cells)


def test_a_failing_cell_is_one_clear_error(tmp_path) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 / 0")])
    with pytest.raises(ExportError) as caught:
        execute_notebook(nb, tmp_path)
    assert str(caught.value) == ("the exported notebook failed while executing: "
                                 "ZeroDivisionError: division by zero")


@pytest.mark.slow
def test_static_images_store_a_png_with_each_chart(project) -> None:
    """Needs kaleido and Chromium, like the tutorials (about 5 s per chart here)."""
    out = project["dir"] / "static.ipynb"
    assert _export(project, "last", out, "--no-outputs") == 0
    nb = nbformat.read(out, as_version=4)
    figures = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
               if PLOTLY in o.get("data", {})]
    assert len(figures) == 4 and all("image/png" in o["data"] for o in figures)

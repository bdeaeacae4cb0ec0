"""End to end through the ``codex-flow`` command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from codexflow_nb.cli import main

ALIAS_YAML = """\
fast:
  id: coder
  overrides:
    runtime: {concurrency: {max_parallel_tasks: 4}}
"""


def cli(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "codexflow_nb", *args], cwd=cwd, text=True,
                          capture_output=True, input=stdin, timeout=60)


def test_run_example_end_to_end(workdir):
    proc = cli("run", "--example", "--stub-latency-ms", "5", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Plan (5 tasks" in out and "reviewer -> code-analyzer (limit 2" in out
    assert "Orchestration Summary" in out and "runtime stub" in out
    for alias in ("reviewer", "reviewer2", "architect"):
        assert alias in out.split("Orchestration Summary")[1]
    events = [json.loads(x) for x in (workdir / "data/logs/events.jsonl").read_text().splitlines()]
    assert events[0]["kind"] == "run_started" and events[-1]["kind"] == "run_complete"
    assert sum(e["kind"] == "task_complete" for e in events) == 5
    outputs = sorted((workdir / ".runs").glob("*/*/output.json"))
    assert len(outputs) == 5
    assert {p.parent.parent.name for p in outputs} == {"reviewer", "reviewer2", "architect"}
    assert all((p.parent / "input.json").is_file() for p in outputs)


def test_json_summary_and_verbose(workdir):
    proc = cli("run", "--example", "--json", "--verbose", "--stub-latency-ms", "0", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["totalTasks"] == 5 and summary["ok"] is True
    assert summary["aliases"]["architect"] == {**summary["aliases"]["architect"], "limit": 1,
                                               "completed": 2, "failed": 0}
    assert len(summary["tasks"]) == 5
    assert "started" in proc.stderr  # per-task lines go to stderr with --json


def test_dry_run_writes_nothing(workdir):
    proc = cli("run", "--example", "--dry-run", cwd=workdir)
    assert proc.returncode == 0 and "dry run" in proc.stdout and "Plan (5 tasks" in proc.stdout
    assert not (workdir / "data").exists() and not (workdir / ".runs").exists()


def test_stdin_task_map_with_aliases_file(workdir):
    (workdir / "aliases.yaml").write_text(ALIAS_YAML)
    tasks = json.dumps({"fast": ["a", "b"], "planner": ["plan it"]})
    proc = cli("run", "-f", "-", "--aliases", "aliases.yaml", "--no-plan", "--stub-latency-ms", "0",
               cwd=workdir, stdin=tasks)
    assert proc.returncode == 0, proc.stderr
    assert "Plan (" not in proc.stdout
    assert "fast" in proc.stdout and "planner" in proc.stdout
    assert (workdir / ".runs" / "planner").is_dir()


def test_bad_input_exit_2_no_traceback_nothing_written(workdir):
    (workdir / "t.json").write_text('{"ghost": ["x"], "reviewer": []}')
    proc = cli("run", "-f", "t.json", cwd=workdir)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "t.json: reviewer: the task list is empty" in proc.stderr
    assert not (workdir / "data").exists() and not (workdir / ".runs").exists()
    proc = cli("run", "--runtime", "codex", "--example", cwd=workdir)
    assert proc.returncode == 2 and "CODEX_URL" in proc.stderr


def test_failed_task_gives_exit_1(workdir):
    proc = cli("run", "--example", "--timeout-ms", "1", "--stub-latency-ms", "200", cwd=workdir)
    assert proc.returncode == 1
    assert "Orchestration Summary" in proc.stdout


def test_init_and_agents_commands(workdir, capsys):
    assert main(["init", "proj"]) == 0
    proj = workdir / "proj"
    assert (proj / "codex/agents/analysis/code-analyzer.codex.yaml").is_file()
    assert (proj / "examples/orchestrator-tasks.json").is_file()
    assert (proj / "data/logs").is_dir()
    assert ".runs/" in (proj / ".gitignore").read_text()
    assert main(["init", "proj"]) == 2
    assert "use --force" in capsys.readouterr().err
    assert main(["init", "proj", "--force"]) == 0
    assert (proj / ".gitignore").read_text().count(".runs/") == 1

    capsys.readouterr()
    assert main(["agents", "list", "--domain", "architecture", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {a["id"] for a in listed} >= {"system-architect"}
    assert all(a["domain"] == "architecture" for a in listed)
    assert main(["agents", "show", "code-analyzer"]) == 0
    assert "max_parallel_tasks" in capsys.readouterr().out
    assert main(["agents", "validate", str(proj / "codex/agents")]) == 0
    assert "ok: " in capsys.readouterr().out
    assert main(["agents", "show", "nobody"]) == 2


def test_project_agents_dir_is_preferred(workdir):
    assert main(["init", "."]) == 0
    import yaml

    agent = workdir / "codex/agents/core/coder.codex.yaml"
    data = yaml.safe_load(agent.read_text())
    data["runtime"]["concurrency"]["max_parallel_tasks"] = 7
    agent.write_text(yaml.safe_dump(data))
    (workdir / "t.json").write_text('{"coder": ["x"]}')
    proc = cli("run", "-f", "t.json", "--dry-run", cwd=workdir)
    assert proc.returncode == 0 and "coder -> coder (limit 7" in proc.stdout
    proc = cli("agents", "show", "coder", cwd=workdir)
    assert str(workdir / "codex/agents") in proc.stdout


def test_import_is_light():
    code = ("import sys, codexflow_nb; heavy = {'pandas', 'plotly', 'ipywidgets', 'starlette', "
            "'uvicorn', 'pyarrow', 'aiohttp', 'uvloop'} & set(sys.modules); print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_closed_pipe_ends_quietly(workdir):
    cmd = f"{sys.executable} -m codexflow_nb run --example -v --stub-latency-ms 0 | head -2"
    proc = subprocess.run(["bash", "-c", cmd], cwd=workdir, capture_output=True, text=True, timeout=30)
    assert proc.stdout.count("\n") == 2 and "Traceback" not in proc.stderr
    log = workdir / "data/logs/events.jsonl"
    lines = log.read_text().splitlines() if log.exists() else []
    if lines:  # the pipe may close before the run (nothing runs) or during it (the run ends)
        assert json.loads(lines[-1])["kind"] == "run_complete"

"""``codex-flow report`` on engine-written logs: terminal table, HTML, CSV and OTLP files."""

from __future__ import annotations

import asyncio
import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from codexflow_nb import run_async
from codexflow_nb.cli import main

ALIASES = {"rev": {"id": "code-analyzer",
                   "overrides": {"runtime": {"concurrency": {"max_parallel_tasks": 2}}}},
           "arch": {"id": "system-architect",
                    "overrides": {"runtime": {"concurrency": {"max_parallel_tasks": 1}}}}}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, registry):
    base = tmp_path_factory.mktemp("report")
    log = base / "events.jsonl"
    first = asyncio.run(run_async({"rev": ["a", "b"]}, aliases=ALIASES, registry=registry,
                                  latency_ms=5, log_file=log, runs_dir=None))
    second = asyncio.run(run_async({"rev": [f"review {i}" for i in range(5)], "arch": ["design"]},
                                   aliases=ALIASES, registry=registry, latency_ms=20, log_file=log,
                                   runs_dir=None))
    return log, first, second


def test_report_prints_last_run_and_writes_files(two_runs, tmp_path, capsys):
    log, first, second = two_runs
    html, csv_dir, otlp = tmp_path / "r.html", tmp_path / "csv", tmp_path / "otlp.json"
    code = main(["report", "--log-file", str(log), "--html", str(html), "--csv", str(csv_dir),
                 "--otlp-json", str(otlp)])
    out = capsys.readouterr().out
    assert code == 0
    assert f"Run {second.run_id}: 6 tasks, 6 completed" in out and first.run_id not in out
    table = {line.split()[0]: line.split() for line in out.splitlines()
             if line.startswith(("rev ", "arch "))}
    assert table["rev"][1:6] == ["code-analyzer", "2", "5", "5", "0"]
    assert table["arch"][1:6] == ["system-architect", "1", "1", "1", "0"]
    assert table["rev"][10] == "2"  # peak concurrency reached the limit
    # HTML: standalone, plotly.js inline, four charts, the tables
    page = html.read_text()
    assert not re.search(r"<script[^>]+src=", page)
    assert page.count("Plotly.newPlot(") == 4 and "plotly.js v" in page
    assert "<h2>Aliases</h2>" in page and "code-analyzer" in page
    # CSV
    with open(csv_dir / "tasks.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and {r["status"] for r in rows} == {"completed"}
    assert {r["run"] for r in rows} == {second.run_id}
    for name in ("aliases", "runs", "concurrency", "critical_path"):
        assert (csv_dir / f"{name}.csv").stat().st_size > 0
    with open(csv_dir / "aliases.csv", newline="") as fh:
        assert [r["alias"] for r in csv.DictReader(fh)] == ["rev", "arch"]
    # OTLP
    doc = json.loads(otlp.read_text())
    spans = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert len(spans) == 7 and len({s["traceId"] for s in spans}) == 1


def test_report_run_and_all(two_runs, capsys):
    log, first, second = two_runs
    assert main(["report", "--log-file", str(log), "--run", first.run_id]) == 0
    out = capsys.readouterr().out
    assert f"Run {first.run_id}: 2 tasks" in out and second.run_id not in out
    assert main(["report", "--log-file", str(log), "--all"]) == 0
    out = capsys.readouterr().out
    assert first.run_id in out and second.run_id in out


def test_report_user_errors(two_runs, tmp_path, capsys):
    log, _, second = two_runs
    assert main(["report", "--log-file", str(log), "--run", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no run 'nope'" in err and second.run_id in err
    assert main(["report", "--log-file", str(tmp_path / "missing.jsonl")]) == 2
    assert "no such event log" in capsys.readouterr().err
    (tmp_path / "empty.jsonl").write_text("")
    assert main(["report", "--log-file", str(tmp_path / "empty.jsonl")]) == 2
    assert "no runs in the event log" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers: [1, 2]\n")
    assert main(["report", "--log-file", str(log), "--pricing", str(bad)]) == 2
    assert "providers: expected a mapping" in capsys.readouterr().err


def test_report_warns_about_damaged_lines(two_runs, tmp_path, capsys):
    log, _, second = two_runs
    damaged = tmp_path / "events.jsonl"
    damaged.write_bytes(log.read_bytes() + b'{"v":1,"ts":"2026-')
    assert main(["report", "--log-file", str(damaged)]) == 0
    captured = capsys.readouterr()
    assert "warning:" in captured.err and "skipped 1 bad line(s)" in captured.err
    assert f"Run {second.run_id}" in captured.out


def test_report_as_a_command(two_runs):
    log = two_runs[0]
    proc = subprocess.run([sys.executable, "-m", "codexflow_nb", "report", "--log-file", str(log)],
                          capture_output=True, text=True, cwd=Path(log).parent, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "makespan" in proc.stdout and "Traceback" not in proc.stderr

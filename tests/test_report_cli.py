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
from plotly.io._utils import plotly_cdn_url

from codexflow_nb import charts, run_async
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
                 "--otlp-json", str(otlp), "--no-static-images"])
    out = capsys.readouterr().out
    assert code == 0
    assert f"Run {second.run_id}: 6 tasks, 6 completed" in out and first.run_id not in out
    table = {line.split()[0]: line.split() for line in out.splitlines()
             if line.startswith(("rev ", "arch "))}
    assert table["rev"][1:6] == ["code-analyzer", "2", "5", "5", "0"]
    assert table["arch"][1:6] == ["system-architect", "1", "1", "1", "0"]
    assert table["rev"][10] == "2"  # peak concurrency reached the limit
    # HTML: four charts, the tables, plotly.js referenced once (not embedded: a small file)
    page = html.read_text()
    assert re.findall(r"<script[^>]+src='([^']+)'", page) == [plotly_cdn_url()]
    assert page.count("Plotly.newPlot(") == 4 and "plotly.js v" not in page
    assert page.count("class='codexflow-static'") + page.count('class="codexflow-static"') == 4
    assert len(page.encode()) < 150_000
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


def test_report_plotlyjs_modes(two_runs, tmp_path, capsys):
    log = two_runs[0]
    inline = tmp_path / "inline.html"
    assert main(["report", "--log-file", str(log), "--html", str(inline), "--plotlyjs", "inline",
                 "--no-static-images"]) == 0
    page = inline.read_text()
    assert not re.search(r"<script[^>]+src=", page)  # opens without network
    assert page.count("plotly.js v") == 1 and len(page.encode()) > 3_000_000
    beside = tmp_path / "out" / "report.html"
    assert main(["report", "--log-file", str(log), "--html", str(beside), "--plotlyjs",
                 "directory", "--no-static-images"]) == 0
    assert re.findall(r"<script[^>]+src='([^']+)'", beside.read_text()) == ["plotly.min.js"]
    assert (beside.parent / "plotly.min.js").stat().st_size > 3_000_000
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["report", "--log-file", str(log), "--html", str(inline), "--plotlyjs", "nowhere"])
    assert exc.value.code == 2 and "use cdn, inline, directory" in capsys.readouterr().err


@pytest.mark.skipif(charts.static_images_problem() is not None, reason="needs kaleido + Chromium")
def test_report_charts_show_without_plotlyjs(two_runs, tmp_path, capsys):
    """Each chart's static copy is a PNG, so the report shows its charts offline too, and the
    file stays small."""
    html = tmp_path / "r.html"
    assert main(["report", "--log-file", str(two_runs[0]), "--html", str(html)]) == 0
    page = html.read_text()
    copies = re.findall(r"<div class=\"codexflow-static\">(.*?)</div><!--/codexflow-static-->",
                        page, flags=re.S)
    assert len(copies) == 4 and all("src='data:image/png;base64," in c for c in copies)
    assert len(page.encode()) < 1_000_000
    assert "kB)" in capsys.readouterr().out


def test_report_counts_cancelled_tasks_as_cancelled(tmp_path, cancelled_run, capsys):
    cancelled_run(tmp_path / "e.jsonl", ALIASES)
    html = tmp_path / "r.html"
    assert main(["report", "--log-file", str(tmp_path / "e.jsonl"), "--html", str(html),
                 "--no-static-images"]) == 0
    out = capsys.readouterr().out
    assert ": 6 tasks, 0 completed, 6 cancelled, 1 session(s)" in out and "failed," not in out
    header, row = (line.split() for line in out.splitlines()
                   if line.startswith(("alias ", "rev ")))
    assert header[4:7] == ["done", "failed", "cancelled"] and row[4:7] == ["0", "0", "6"]
    page = html.read_text()
    runs_table = page.split("<h2>Runs</h2>")[1].split("<h2>")[0]
    assert "<th>cancelled</th>" in runs_table and "<th>failed</th>" not in runs_table

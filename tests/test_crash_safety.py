"""Crash safety of the event log and the run store, measured on real ``codex-flow`` processes:
concurrent appenders, ``kill -9`` then ``--resume``, unwritable and full storage."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from codexflow_nb import run
from codexflow_nb.events import TERMINAL_KINDS
from codexflow_nb.runtimes import StubRuntime

LOG = Path("data/logs/events.jsonl")


def cli_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "codexflow_nb", *args]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if k not in ("CODEX_URL", "CODEX_API_KEY", "CODEX_AGENTS_DIR")}


def cli(*args: str, cwd: Path, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli_cmd(*args), cwd=cwd, text=True, capture_output=True, timeout=120,
                          env=clean_env(), **kwargs)


def write_inputs(cwd: Path, aliases: dict[str, tuple[str, int]], per_alias: int,
                 text: str = "task") -> Path:
    """A task map of ``per_alias`` tasks for each alias, and an alias file setting the limits."""
    (cwd / "tasks.json").write_text(json.dumps(
        {alias: [f"{text} {alias} {i}" for i in range(per_alias)] for alias in aliases}))
    (cwd / "aliases.yaml").write_text("".join(
        f"{alias}: {{id: {agent}, overrides: {{runtime: {{concurrency: {{max_parallel_tasks: {limit}}}}}}}}}\n"
        for alias, (agent, limit) in aliases.items()))
    return cwd / "tasks.json"


def complete_lines(path: Path) -> tuple[list[dict], bytes]:
    """Every newline-terminated line parsed (a failure raises), and the unterminated rest."""
    raw = path.read_bytes()
    body, _, rest = raw.rpartition(b"\n")
    lines = body.split(b"\n") if body else []
    return [json.loads(line) for line in lines], rest


def wait_for(predicate, proc: subprocess.Popen, what: str) -> None:
    """Poll until ``predicate()``; fail if the process ends first (no wall-clock limit on
    the work itself, only a generous guard against hanging forever)."""
    guard = time.monotonic() + 120
    while not predicate():
        assert proc.poll() is None, f"process ended before {what}: {proc.stderr.read() if proc.stderr else ''}"
        assert time.monotonic() < guard, f"gave up waiting for {what}"
        time.sleep(0.02)


def count_in_log(path: Path, needle: bytes) -> int:
    try:
        return path.read_bytes().count(needle)
    except FileNotFoundError:
        return 0


@pytest.mark.slow
def test_two_processes_appending_to_one_log_never_interleave_within_a_line(tmp_path):
    long_dir, short_dir = tmp_path / "long", tmp_path / "short"
    long_dir.mkdir(), short_dir.mkdir()
    shared = tmp_path / "shared.jsonl"
    # the long run keeps writing (jittered 200 ms tasks, 50 at a time) until we stop it; the
    # short one writes ~2,000 tasks of ~3 KB lines as fast as it can while the long one writes
    write_inputs(long_dir, {"wa": ("coder", 50)}, 3000, text="L" * 1000)
    write_inputs(short_dir, {"wb": ("tester", 200)}, 2000, text="S" * 3000)
    common = ("--aliases", "aliases.yaml", "--no-plan", "--log-file", str(shared), "--json")
    long_run = subprocess.Popen(
        cli_cmd("run", "-f", "tasks.json", *common, "--stub-latency-ms", "200", "--stub-jitter", "1"),
        cwd=long_dir, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: count_in_log(shared, b'"kind":"task_complete"') >= 50, long_run,
                 "the long run completed its first tasks")
        short = cli("run", "-f", "tasks.json", *common, "--stub-latency-ms", "0", cwd=short_dir)
        assert short.returncode == 0, short.stderr
        assert long_run.poll() is None, "the long run ended before the short one: no overlap"
        long_run.send_signal(signal.SIGTERM)  # a graceful stop: every task gets a terminal event
        out, err = long_run.communicate(timeout=120)
    finally:
        if long_run.poll() is None:
            long_run.kill()
            long_run.wait()
    assert long_run.returncode == 1 and "Traceback" not in err, err
    assert json.loads(out)["cancelled"] == "terminated (SIGTERM)"

    events, rest = complete_lines(shared)  # every line parses: no line was interleaved
    assert rest == b""
    runs = {e["runId"] for e in events if e["kind"] == "run_started"}
    assert len(runs) == 2
    short_id = json.loads(short.stdout)["runId"]
    long_id = (runs - {short_id}).pop()
    kinds = {rid: Counter(e["kind"] for e in events if e["runId"] == rid) for rid in runs}
    assert kinds[short_id]["task_queued"] == kinds[short_id]["task_complete"] == 2000
    assert kinds[short_id]["run_complete"] == 1
    terminal = Counter(e["key"] for e in events if e["runId"] == long_id and e["kind"] in TERMINAL_KINDS)
    assert len(terminal) == 3000 and set(terminal.values()) == {1}
    assert kinds[long_id]["task_cancelled"] > 0 and kinds[long_id]["run_complete"] == 1
    # and the two really wrote at the same time: long-run lines sit inside the short run's span
    order = [e["runId"] for e in events]
    first = next(i for i, e in enumerate(events) if e["runId"] == short_id)
    last = max(i for i, e in enumerate(events) if e["runId"] == short_id)
    interleaved = sum(1 for rid in order[first:last] if rid == long_id)
    assert interleaved > 0


@pytest.mark.slow
def test_kill_9_leaves_whole_lines_and_outputs_and_resume_finishes_the_run(tmp_path):
    aliases = {"ra": ("coder", 10), "rb": ("tester", 10), "rc": ("reviewer", 10)}
    write_inputs(tmp_path, aliases, 100)
    args = ("-f", "tasks.json", "--aliases", "aliases.yaml", "--no-plan")
    proc = subprocess.Popen(cli_cmd("run", *args, "--stub-latency-ms", "200"), cwd=tmp_path,
                            env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: count_in_log(tmp_path / LOG, b'"kind":"task_complete"') >= 40, proc,
                 "40 tasks completed")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL

    events, _torn = complete_lines(tmp_path / LOG)
    kinds = Counter(e["kind"] for e in events)
    assert kinds["run_started"] == 1 and kinds["run_complete"] == 0  # visibly incomplete
    run_id = events[0]["runId"]
    done_in_log = {e["key"]: e["taskId"] for e in events if e["kind"] == "task_complete" and e["ok"]}
    assert 40 <= len(done_in_log) < 300
    # task folders only: pathlib's glob also matches a staging folder (.<taskId>.tmp) that the
    # kill left half-written, which is by design (cleanup removes it; resume ignores it)
    outputs = [p for p in (tmp_path / ".runs").glob("*/*/output.json")
               if not p.parent.name.startswith(".")]
    docs = {p.parent.name: json.loads(p.read_text()) for p in outputs}  # each whole JSON
    assert all(doc["ok"] for doc in docs.values())
    all_keys = {f"{a}-{i}" for a in aliases for i in range(1, 101)}
    # a task is resumed as done only when its success is logged and its output is on disk
    done = {k for k, tid in done_in_log.items() if tid in docs}
    expected_rerun = all_keys - done
    assert len(done_in_log) - len(done) <= 30  # at most the outputs still queued at the kill

    resumed = cli("run", *args, "--stub-latency-ms", "1", "--resume", run_id, "--json", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["runId"] == run_id and summary["ok"] and summary["totalTasks"] == 300

    events, rest = complete_lines(tmp_path / LOG)
    assert rest == b""
    starts = [i for i, e in enumerate(events) if e["kind"] == "run_started"]
    assert len(starts) == 2 and events[starts[1]]["resumed"] == len(done)
    second = events[starts[1]:]
    assert {e["runId"] for e in second} == {run_id}
    ran = [e["key"] for e in second if e["kind"] == "task_started"]
    assert sorted(ran) == sorted(expected_rerun)
    ok_keys = {e["key"] for e in events if e["kind"] == "task_complete" and e["ok"]}
    assert ok_keys == all_keys
    assert second[-1]["kind"] == "run_complete" and second[-1]["ok"] is True
    for p in (tmp_path / ".runs").glob("*/*/output.json"):
        assert json.loads(p.read_text())["ok"] is True
    assert len(list((tmp_path / ".runs").glob("*/*/output.json"))) == 300


def test_unwritable_log_dir_fails_before_the_run(tmp_path):
    write_inputs(tmp_path, {"ra": ("coder", 2)}, 3)
    (tmp_path / "blocker").write_text("a file where the log folder should be")
    proc = cli("run", "-f", "tasks.json", "--aliases", "aliases.yaml",
               "--log-file", "blocker/events.jsonl", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "blocker/events.jsonl: cannot open the event log" in lines[0]
    assert not list((tmp_path / ".runs").rglob("*.json"))


def test_unwritable_runs_dir_fails_before_the_run_and_creates_no_log(tmp_path):
    write_inputs(tmp_path, {"ra": ("coder", 2)}, 3)
    (tmp_path / "blocker").write_text("a file where the runs folder should be")
    proc = cli("run", "-f", "tasks.json", "--aliases", "aliases.yaml", "--runs-dir", "blocker",
               cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "blocker: run store not writable" in lines[0]
    assert not (tmp_path / LOG).exists()


def _limit_file_size(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
    return apply


def test_log_full_mid_run_stops_cleanly_and_records_cancelled_tasks(tmp_path):
    write_inputs(tmp_path, {"ra": ("coder", 10)}, 120)
    args = ("run", "-f", "tasks.json", "--aliases", "aliases.yaml", "--no-plan",
            "--stub-latency-ms", "5", "--json")
    measure = tmp_path / "measure"
    measure.mkdir()
    for name in ("tasks.json", "aliases.yaml"):
        (measure / name).write_bytes((tmp_path / name).read_bytes())
    assert cli(*args, cwd=measure).returncode == 0
    full_size = (measure / LOG).stat().st_size

    # the log may grow to 60% of a full run's log: the run hits the limit half way through
    proc = cli(*args, cwd=tmp_path, preexec_fn=_limit_file_size(int(full_size * 0.6)))
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    err = [line for line in proc.stderr.splitlines() if line.startswith("codex-flow: error:")]
    assert len(err) == 1 and "run stopped: " in err[0]
    assert "events.jsonl: cannot write the event log" in err[0]
    summary = json.loads(proc.stdout)
    statuses = summary["aliases"]["ra"]["statuses"]
    assert summary["cancelled"].startswith("storage failure: ")
    assert statuses.get("completed", 0) > 0 and statuses.get("cancelled", 0) > 0
    assert sum(statuses.values()) == 120 and set(statuses) <= {"completed", "cancelled"}

    events, _rest = complete_lines(tmp_path / LOG)  # complete lines still parse
    assert events[0]["kind"] == "run_started"
    logged_done = {e["taskId"] for e in events if e["kind"] == "task_complete"}
    # the run store still works: every task is recorded, the unfinished ones as cancelled
    docs = {p.parent.name: json.loads(p.read_text()) for p in (tmp_path / ".runs").glob("*/*/output.json")}
    assert len(docs) == 120
    assert logged_done <= {tid for tid, d in docs.items() if d["status"] == "completed"}
    cancelled = [d for d in docs.values() if d["status"] == "cancelled"]
    assert len(cancelled) == statuses["cancelled"]
    assert all(d["error"]["message"].startswith("storage failure: ") for d in cancelled)


def test_run_store_failure_mid_run_cancels_and_is_logged(workdir):
    runs = workdir / ".runs"
    runs.mkdir()
    (runs / "rev").write_text("a file where the alias folder should be")
    aliases = {"rev": {"id": "code-analyzer",
                       "overrides": {"runtime": {"concurrency": {"max_parallel_tasks": 1}}}}}
    result = run({"rev": [f"t{i}" for i in range(20)]}, aliases=aliases, runtime=StubRuntime(1))
    assert not result.ok and result.cancelled.startswith("storage failure: ")
    assert ".runs: run store write failed" in result.cancelled
    statuses = Counter(t.status for t in result.tasks)
    assert statuses["cancelled"] > 0 and set(statuses) <= {"completed", "cancelled"}
    events, rest = complete_lines(workdir / LOG)
    assert rest == b""
    terminal = Counter(e["key"] for e in events if e["kind"] in TERMINAL_KINDS)
    assert len(terminal) == 20 and set(terminal.values()) == {1}
    assert events[-1]["kind"] == "run_complete" and events[-1]["cancelled"] == result.cancelled
    assert events[-1]["error"]["type"] == "RunStorageError"


SINK_SCRIPT = textwrap.dedent("""
    import resource, signal, sys
    from codexflow_nb.errors import RunStorageError
    from codexflow_nb.events import JsonlSink
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, resource.RLIM_INFINITY))
    sink = JsonlSink(sys.argv[1], fsync="every")
    failures = 0
    for i in range(40):
        try:
            sink.write({"i": i, "pad": "x" * 60})
        except RunStorageError as exc:
            failures += 1
            message = str(exc)
    # space comes back (another process freed the disk): the next line must be whole
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    sink.write({"i": "after", "pad": "y"})
    sink.close()
    print(failures, message)
""")


def test_sink_never_glues_a_line_onto_a_torn_one(tmp_path):
    log = tmp_path / "events.jsonl"
    proc = subprocess.run([sys.executable, "-c", SINK_SCRIPT, str(log)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    failures, message = proc.stdout.split(" ", 1)
    assert int(failures) > 0 and "cannot write the event log" in message
    lines = log.read_bytes().split(b"\n")
    assert lines[-1] == b""
    parsed, torn = [], []
    for line in lines[:-1]:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            torn.append(line)
    assert len(torn) == 1 and len(torn[0]) > 0  # the fragment stands alone on its line
    assert parsed[-1] == {"i": "after", "pad": "y"}
    assert [p["i"] for p in parsed[:-1]] == list(range(len(parsed) - 1))


@pytest.mark.parametrize("policy", ["every", "batch", "never"])
def test_fsync_policies(tmp_path, monkeypatch, policy):
    """every: one fsync per line; batch: a timer syncs soon after a write without a further
    write, and close syncs what is left; never: no fsync at all."""
    from codexflow_nb.events import JsonlSink

    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    sink = JsonlSink(tmp_path / "events.jsonl", fsync=policy)
    for i in range(5):
        sink.write({"i": i})
    if policy == "every":
        assert synced == [sink._fd] * 5
    elif policy == "batch":
        guard = time.monotonic() + 30
        while sink._synced != 5:  # the timer fires without another write
            assert time.monotonic() < guard, "no timed fsync"
            time.sleep(0.05)
        assert synced == [sink._fd] and sink._writes == 5
        sink.write({"i": "late"})
    sink.close()
    expected = {"every": 5, "batch": 2, "never": 0}[policy]
    assert len(synced) == expected
    assert len((tmp_path / "events.jsonl").read_text().splitlines()) == 5 + (policy == "batch")

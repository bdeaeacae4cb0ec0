"""``codex-flow cleanup`` against the processes around it, measured on real processes: runs that
start while the log is trimmed, ``kill -9`` of cleanup at random moments, a torn last line left
by a crashed writer, a runs dir that is a symlink, and the summary it prints."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from test_cleanup import listing, make_task, task_id

from codexflow_nb.cleanup import LogLock, cleanup, prune_runs, trim_log
from codexflow_nb.cli import main
from codexflow_nb.events import JsonlSink, log_lock_path


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if k not in ("CODEX_URL", "CODEX_API_KEY", "CODEX_AGENTS_DIR")}


def cli_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "codexflow_nb", *args]


def filler_log(lines: int, pad: int = 300) -> bytes:
    return b"".join(json.dumps({"kind": "filler", "i": i, "pad": "f" * pad}).encode() + b"\n"
                    for i in range(lines))


def parse_all(path: Path) -> list[dict]:
    """Every line of the log, parsed: a glued or torn line fails the test."""
    return [json.loads(line) for line in path.read_bytes().splitlines()]


# --- a run that starts while the log is trimmed ----------------------------------------------

#: A writer process: waits ``delay`` s, opens the log with JsonlSink (waiting for a trim in
#: progress), writes ``n`` numbered lines 2 ms apart, closes; prints how long the open took.
WRITER = textwrap.dedent("""
    import sys, time
    from codexflow_nb.events import JsonlSink
    log, name, n, delay = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    time.sleep(delay)
    t0 = time.monotonic()
    sink = JsonlSink(log, fsync="never")
    opened = time.monotonic() - t0
    for i in range(n):
        sink.write({"kind": "probe", "writer": name, "i": i, "pad": "w" * 100})
        time.sleep(0.002)
    sink.close()
    print(f"{opened:.3f}")
""")

WRITERS, PROBES, TRIALS = 3, 150, 12


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_runs_started_during_a_trim_lose_no_event(tmp_path):
    """Each trial starts, at the same moment, a trim of a 41 MB log (30 MiB kept: the copy takes
    a while) and four writers, each after a random delay: three JsonlSink processes and a real
    ``codex-flow run``. Whatever the order, no line is lost: the trim either happens while
    no writer has the log open (writers that start meanwhile wait for it) or is refused, and the
    run can be resumed. Without the lock, 4 of 8 trials lost lines (written to the replaced
    file) or the whole run."""
    big = filler_log(120_000)
    outcomes: Counter[str] = Counter()
    waited: list[float] = []
    for trial in range(TRIALS):
        d = tmp_path / f"t{trial}"
        d.mkdir()
        log = d / "events.jsonl"
        log.write_bytes(big)
        rng = random.Random(trial)
        trim = subprocess.Popen(
            cli_cmd("cleanup", "--runs-dir", str(d / "no-runs"), "--log-file", str(log),
                    "--logs-max-bytes", "30MiB"),
            cwd=d, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        writers = [subprocess.Popen(
            [sys.executable, "-c", WRITER, str(log), f"w{k}", str(PROBES), f"{rng.uniform(0, 1):.3f}"],
            cwd=d, env=env(), stdout=subprocess.PIPE, text=True) for k in range(WRITERS)]
        run = subprocess.Popen(  # also after a random delay
            ["sh", "-c", f'sleep {rng.uniform(0, 1.2):.3f}; exec "$@"', "sh",
             *cli_cmd("run", "--example", "--no-plan", "--stub-latency-ms", "2", "--log-file",
                      str(log), "--json")],
            cwd=d, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        t_out, t_err = trim.communicate(timeout=120)
        for w in writers:
            out, _ = w.communicate(timeout=120)
            assert w.returncode == 0
            waited.append(float(out))
        r_out, r_err = run.communicate(timeout=120)
        assert run.returncode == 0, r_err

        if trim.returncode == 0:
            outcomes["trimmed"] += 1
            assert "trimmed from" in t_out
        else:  # refused, in one clear line naming the process that has the log open
            assert trim.returncode == 1, t_err
            outcomes["refused"] += 1
            (line,) = t_err.strip().splitlines()
            assert line.startswith("codex-flow: error: log not trimmed: ")
            # the holder is named by pid, or "another process" when it let go each of the
            # three times the lock was tried between reads of /proc/locks (seen at load 9)
            assert "is open for writing by " in line or "is being written by run" in line
        events = parse_all(log)
        probes = Counter((e["writer"], e["i"]) for e in events if e["kind"] == "probe")
        assert len(probes) == WRITERS * PROBES and set(probes.values()) == {1}, \
            f"trial {trial}: {WRITERS * PROBES - len(probes)} lines lost"
        run_id = json.loads(r_out)["runId"]
        kinds = Counter(e["kind"] for e in events if e.get("runId") == run_id)
        assert kinds["run_started"] == kinds["run_complete"] == 1, f"trial {trial}: {kinds}"
        assert kinds["task_queued"] == kinds["task_complete"] > 0
        resumed = subprocess.run(cli_cmd("run", "--example", "--no-plan", "--log-file", str(log),
                                         "--resume", run_id, "--json"),
                                 cwd=d, env=env(), capture_output=True, text=True, timeout=120)
        assert resumed.returncode == 0, resumed.stderr
        assert json.loads(resumed.stdout)["ok"] is True
        assert not list(d.glob(".events.jsonl.cleanup-*"))
    print(f"\n{dict(outcomes)}; writers' open times (a wait for a trim shows): "
          f"{sorted(waited)[-5:]}")
    assert outcomes["trimmed"] + outcomes["refused"] == TRIALS


def test_trim_refuses_while_a_writer_has_the_log_open_and_names_it(tmp_path):
    log = tmp_path / "events.jsonl"
    log.write_bytes(filler_log(200))
    sink = JsonlSink(log)  # holds the shared lock: no run_started line is needed to see it
    try:
        report = trim_log(log, 1000)
        assert report.log is None
        assert f"is open for writing by pid {os.getpid()} (" in report.log_refused
        assert f"a shared lock on {log_lock_path(log)}" in report.log_refused
        sink.write({"kind": "probe", "i": 1})
    finally:
        sink.close()
    report = trim_log(log, 1000)  # closed: the lock is free
    assert report.log is not None and parse_all(log)[-1] == {"kind": "probe", "i": 1}


def test_a_writer_opening_during_a_trim_waits_and_opens_the_new_file(tmp_path):
    log = tmp_path / "events.jsonl"
    log.write_bytes(filler_log(50))
    lock = LogLock(log)  # what the trim holds while it copies
    assert lock.held
    opened = threading.Event()

    def writer() -> None:
        sink = JsonlSink(log)
        opened.set()
        sink.write({"kind": "probe", "i": 1})
        sink.close()

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(0.3)
    assert not opened.is_set()  # waiting for the trim
    (tmp_path / "copy.jsonl").write_bytes(b'{"kind":"new"}\n')  # the trimmed copy...
    os.replace(tmp_path / "copy.jsonl", log)  # ...renamed over the log
    lock.release()
    thread.join(10)
    assert opened.is_set()
    assert parse_all(log) == [{"kind": "new"}, {"kind": "probe", "i": 1}]


def test_cleanup_wait_trims_once_the_writer_closes(tmp_path, capsys):
    log = tmp_path / "events.jsonl"
    log.write_bytes(filler_log(200))
    sink = JsonlSink(log)
    closer = threading.Timer(0.5, sink.close)
    closer.start()
    code = main(["cleanup", "--runs-dir", str(tmp_path / "none"), "--log-file", str(log),
                 "--logs-max-bytes", "1000", "--wait", "30"])
    closer.join()
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"codex-flow: waiting up to 30 s for pid {os.getpid()}" in captured.err
    assert log.stat().st_size <= 1000


# --- kill -9 of cleanup --------------------------------------------------------------------

FILES_PER_TASK = 60


def store_with_many_files(runs: Path, aliases: int, per_alias: int) -> dict[str, bytes]:
    """Task folders with many files (``kill -9`` then lands inside a folder's removal often)."""
    expected: dict[str, bytes] = {}
    for a in range(aliases):
        for r in range(per_alias):
            d = make_task(runs, f"al{a}", task_id(r, a + 1), b'{"n": %d}' % r)
            for k in range(FILES_PER_TASK):
                (d / f"chunk-{k:03d}.json").write_bytes(b"x" * 64)
    for p in runs.rglob("*"):
        if p.is_file():
            expected[str(p.relative_to(runs))] = p.read_bytes()
    return expected


def assert_whole_or_absent(runs: Path, expected: dict[str, bytes]) -> None:
    """Every task folder under its own name holds all its files, unchanged."""
    for alias in runs.iterdir():
        for folder in alias.iterdir():
            if folder.name.startswith("."):
                continue
            rel = f"{alias.name}/{folder.name}"
            files = {f"{rel}/{p.name}": p.read_bytes() for p in folder.iterdir()}
            want = {k: v for k, v in expected.items() if k.startswith(rel + "/")}
            assert files == want, f"{rel} is half removed: {len(files)} of {len(want)} files"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_kill_9_during_pruning_leaves_task_folders_whole_or_absent(tmp_path):
    """20 trials: ``codex-flow cleanup`` is killed at a random moment of its removals (after the
    first folder went). Every task folder left under its name is whole; the next cleanup
    removes the ``.<taskId>.deleting`` leftovers and ends with exactly the newest folders.
    Without the rename, 6 of 16 such kills left a folder with only some of its files."""
    keep, aliases, per_alias = 4, 2, 16
    template = tmp_path / "template"
    expected = store_with_many_files(template, aliases, per_alias)
    newest = {a: sorted(task_id(r, a + 1) for r in range(per_alias))[-keep:] for a in range(aliases)}
    leftovers = 0
    for trial in range(20):
        runs = tmp_path / f"runs{trial}"
        subprocess.run(["cp", "-a", str(template), str(runs)], check=True)
        proc = subprocess.Popen(cli_cmd("cleanup", "--runs-dir", str(runs), "--log-file",
                                        str(tmp_path / "no.jsonl"), "--runs-max-per-alias", str(keep)),
                                env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        first = runs / "al0"
        guard = time.monotonic() + 60
        while len(os.listdir(first)) == per_alias and proc.poll() is None:  # removals began
            assert time.monotonic() < guard
            time.sleep(0.001)
        time.sleep(random.Random(trial).uniform(0, 0.1))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert_whole_or_absent(runs, expected)
        leftovers += sum(1 for p in runs.glob("*/.*.deleting"))
        again = cleanup(runs, None, runs_max_per_alias=keep)  # the next cleanup
        assert not again.skipped
        for a in range(aliases):
            assert sorted(p.name for p in (runs / f"al{a}").iterdir()) == newest[a]
        assert_whole_or_absent(runs, expected)
        subprocess.run(["rm", "-rf", str(runs)], check=True)
    print(f"\n{leftovers} .deleting leftover(s) removed by the next cleanup")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_kill_9_during_the_trim_leaves_a_whole_log_and_the_next_cleanup_removes_the_copy(tmp_path):
    """15 trials: cleanup is killed while it copies the tail of a 41 MB log. The log is the old
    one or the trimmed one, never anything else; the temporary copy it leaves
    (``.events.jsonl.cleanup-<pid>.tmp``, its pid now dead) goes with the next cleanup."""
    big = filler_log(120_000)
    keep = 30 << 20
    tail = big[big.index(b"\n", len(big) - keep - 1) + 1:]
    assert len(tail) <= keep and tail.startswith(b'{"kind"')
    copies_left = 0
    for trial in range(15):
        d = tmp_path / f"t{trial}"
        d.mkdir()
        log = d / "events.jsonl"
        log.write_bytes(big)
        args = cli_cmd("cleanup", "--runs-dir", str(d / "none"), "--log-file", str(log),
                       "--logs-max-bytes", str(keep))
        proc = subprocess.Popen(args, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        guard = time.monotonic() + 60
        while not list(d.glob(".events.jsonl.cleanup-*.tmp")) and proc.poll() is None:
            assert time.monotonic() < guard
            time.sleep(0.001)  # a spin here takes a core from the cleanup it waits for
        time.sleep(random.Random(trial).uniform(0, 0.05))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert log.read_bytes() in (big, tail)
        copies = list(d.glob(".events.jsonl.cleanup-*.tmp"))
        copies_left += len(copies)
        if trial % 5 == 0:  # the next cleanup: the command, or the same in Python
            again = subprocess.run(args + ["-v"], env=env(), capture_output=True, text=True,
                                   timeout=60)
            assert again.returncode == 0, again.stderr
            assert all(f"removed {c}" in again.stdout for c in copies)
        else:
            report = cleanup(None, log, logs_max_bytes=keep)
            assert sorted(r.path for r in report.temp_files) == sorted(copies)
        assert not list(d.glob(".events.jsonl.cleanup-*.tmp"))
        assert log.read_bytes() == tail
        log.unlink()
    assert copies_left > 0  # the kills did land during the copy
    print(f"\n{copies_left} temporary copy(ies) left by a kill and removed by the next cleanup")


def test_a_temp_copy_of_a_live_trim_is_left_alone(tmp_path):
    """A copy whose owner is alive (another cleanup trimming now: it holds the lock) stays."""
    log = tmp_path / "events.jsonl"
    log.write_bytes(filler_log(10))
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".events.jsonl.cleanup-{sleeper.pid}.tmp"
        dead = tmp_path / ".events.jsonl.cleanup-999999999.tmp"
        live.write_bytes(b"x"), dead.write_bytes(b"yy")
        sink = JsonlSink(log)  # a writer has the log open: we do not hold the lock
        try:
            report = trim_log(log, 10 << 20)
        finally:
            sink.close()
        assert [r.path for r in report.temp_files] == [dead] and live.exists() and not dead.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


# --- a torn last line --------------------------------------------------------------------

CRASH_MID_LINE = textwrap.dedent("""
    import os, signal, sys
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, b'{"kind":"task_complete","runId":"crashed","pad":"')  # half a line...
    os.kill(os.getpid(), signal.SIGKILL)  # ...and the writer dies
""")


def test_a_run_after_a_writer_crashed_mid_line_starts_on_a_new_line_and_resumes(tmp_path):
    log = tmp_path / "data/logs/events.jsonl"
    log.parent.mkdir(parents=True)
    log.write_bytes(filler_log(3))
    crash = subprocess.run([sys.executable, "-c", CRASH_MID_LINE, str(log)])
    assert crash.returncode == -signal.SIGKILL
    args = ("run", "--example", "--no-plan", "--stub-latency-ms", "0", "--json")
    first = subprocess.run(cli_cmd(*args), cwd=tmp_path, env=env(), capture_output=True, text=True,
                           timeout=120)
    assert first.returncode == 0, first.stderr
    lines = log.read_bytes().splitlines()
    assert lines[3] == b'{"kind":"task_complete","runId":"crashed","pad":"'  # alone on its line
    events = [json.loads(line) for line in lines[4:]]
    run_id = json.loads(first.stdout)["runId"]
    assert events[0]["kind"] == "run_started" and events[0]["runId"] == run_id
    assert b"" not in lines  # one newline, no empty line
    resumed = subprocess.run(cli_cmd(*args, "--resume", run_id), cwd=tmp_path, env=env(),
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr


def test_writers_opening_a_torn_log_together_add_one_newline(tmp_path):
    for trial in range(30):
        log = tmp_path / f"events{trial}.jsonl"
        log.write_bytes(b'{"a":1}\n{"torn":')
        barrier = threading.Barrier(6)
        sinks: list[JsonlSink] = []

        def open_one(sinks: list[JsonlSink] = sinks, barrier: threading.Barrier = barrier,
                     log: Path = log) -> None:
            barrier.wait()
            sinks.append(JsonlSink(log))

        threads = [threading.Thread(target=open_one) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i, sink in enumerate(sinks):
            sink.write({"i": i})
            sink.close()
        lines = log.read_bytes().split(b"\n")
        assert lines[:2] == [b'{"a":1}', b'{"torn":'] and lines[-1] == b""
        assert sorted(json.loads(x)["i"] for x in lines[2:-1]) == list(range(6))


def test_a_log_ending_in_a_newline_is_not_touched_on_open(tmp_path):
    log = tmp_path / "events.jsonl"
    log.write_bytes(b'{"a":1}\n')
    JsonlSink(log).close()
    assert log.read_bytes() == b'{"a":1}\n'
    empty = tmp_path / "empty.jsonl"
    JsonlSink(empty).close()
    assert empty.read_bytes() == b""


# --- symlinks ------------------------------------------------------------------------------


def test_a_runs_dir_that_is_a_symlink_is_refused(tmp_path):
    real = tmp_path / "real-runs"
    for r in range(6):
        make_task(real, "rev", task_id(r, 1))
    (tmp_path / ".runs").symlink_to(real, target_is_directory=True)
    before = listing(real)
    proc = subprocess.run(cli_cmd("cleanup", "--runs-max-per-alias", "1"), cwd=tmp_path, env=env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == ("codex-flow: error: .runs: is a symlink; cleanup never follows "
                                   "symlinks (give the folder it points to)")
    assert listing(real) == before
    with pytest.raises(Exception, match="is a symlink"):
        prune_runs(tmp_path / ".runs", 0)
    assert listing(real) == before


def test_a_symlinked_log_is_not_trimmed_by_the_cli(tmp_path):
    real = tmp_path / "real.jsonl"
    real.write_bytes(filler_log(100))
    before = real.read_bytes()
    (tmp_path / "events.jsonl").symlink_to(real)
    proc = subprocess.run(cli_cmd("cleanup", "--runs-dir", "none", "--log-file", "events.jsonl",
                                  "--logs-max-bytes", "100"), cwd=tmp_path, env=env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("codex-flow: error: log not trimmed: events.jsonl is a symlink "
                                   "(not followed)")
    assert real.read_bytes() == before and not (tmp_path / "events.jsonl.lock").exists()


# --- the summary --------------------------------------------------------------------------


def test_cleanup_prints_a_summary_and_lists_paths_only_with_verbose(tmp_path):
    runs = tmp_path / ".runs"
    for a in ("rev", "arch"):
        for r in range(300):
            make_task(runs, a, task_id(r, 1))
    (runs / "rev" / task_id(999, 1)).symlink_to(tmp_path)
    stale = runs / "rev" / f".{task_id(1, 2)}.deleting"  # left by a killed cleanup
    stale.mkdir()
    (stale / "input.json").write_text("{}")
    args = ["cleanup", "--runs-dir", str(runs), "--log-file", str(tmp_path / "no.jsonl"),
            "--runs-max-per-alias", "10"]
    proc = subprocess.run(cli_cmd(*args, "--dry-run"), env=env(), capture_output=True, text=True)
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 4, proc.stdout
    proc = subprocess.run(cli_cmd(*args), env=env(), capture_output=True, text=True)
    out = proc.stdout.splitlines()
    assert proc.returncode == 0 and out == [
        "removed 581 task folder(s) (3.4 KiB) in 2 alias folder(s)",  # 580 x 6 B + 2 B
        "skipped 1 symlink(s) (not followed; -v lists them)",
        f"no event log at {tmp_path / 'no.jsonl'}",
        out[3]]
    assert out[3].startswith("freed ") and out[3].endswith("(581 task folder(s), 20 kept)")
    assert not stale.exists()
    make_task(runs, "rev", task_id(0, 5))
    proc = subprocess.run(cli_cmd(*args, "-v"), env=env(), capture_output=True, text=True)
    assert proc.stdout.splitlines()[0] == f"removed {runs / 'rev' / task_id(0, 5)} (6 B)"
    assert f"skipped {runs / 'rev' / task_id(999, 1)}: a symlink (not followed)" in proc.stdout


def test_cleanup_report_summary_api(tmp_path):
    runs = tmp_path / ".runs"
    for r in range(4):
        make_task(runs, "rev", task_id(r, 1))
    report = cleanup(runs, None, runs_max_per_alias=1, dry_run=True)
    assert report.lines() == ["would remove 3 task folder(s) (18 B) in 1 alias folder(s)",
                              "would free 18 B (3 task folder(s), 1 kept)"]
    assert len(report.lines(verbose=True)) == 4

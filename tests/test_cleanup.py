"""``codex-flow cleanup``: newest task folders per alias, log trimmed at a line boundary, and
nothing outside the runs dir and the log touched (symlinks never followed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from codexflow_nb.cleanup import cleanup, live_runs, parse_size, prune_runs, trim_log
from codexflow_nb.cli import main


def task_id(run: int, seq: int) -> str:
    """Task ids in time order: run ``run`` (a later run sorts later) and its ``seq``."""
    return f"2026112{run % 10}T{run:09d}-{run:06x}-{seq:06d}"


def make_task(runs: Path, alias: str, tid: str, payload: bytes = b"{}") -> Path:
    d = runs / alias / tid
    d.mkdir(parents=True)
    (d / "input.json").write_bytes(payload)
    (d / "output.json").write_bytes(payload * 2)
    return d


def listing(root: Path) -> dict[str, bytes | str]:
    """Every path under ``root`` with its content (files) or link target (symlinks)."""
    out: dict[str, bytes | str] = {}
    for top, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            p = Path(top, name)
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_file():
                out[rel] = p.read_bytes()
            else:
                out[rel] = "dir"
    return out


def test_keeps_the_newest_n_task_folders_per_alias_by_task_id(tmp_path):
    runs = tmp_path / ".runs"
    ids = {alias: [task_id(r, s) for r in (1, 2, 3) for s in (1, 2, 11)] for alias in ("rev", "arch")}
    for alias, tids in ids.items():
        for tid in reversed(tids):  # creation order (and mtimes) opposite to task-id order
            make_task(runs, alias, tid, b"x" * 100)
    make_task(runs, "solo", task_id(9, 1))
    report = prune_runs(runs, 4)
    for alias, tids in ids.items():
        assert sorted(p.name for p in (runs / alias).iterdir()) == sorted(tids[-4:])
    assert [p.name for p in (runs / "solo").iterdir()] == [task_id(9, 1)]
    assert len(report.removed) == 10 and report.kept == 9
    assert all(r.bytes == 300 for r in report.removed)  # input 100 B + output 200 B
    assert report.freed == 3000
    assert "freed 2.9 KiB (10 task folder(s), 9 kept)" in report.lines()[-1]


def test_sequence_numbers_sort_as_numbers(tmp_path):
    runs = tmp_path / ".runs"
    for seq in (999999, 1000000, 2):
        make_task(runs, "rev", task_id(1, seq))
    prune_runs(runs, 1)
    assert [p.name for p in (runs / "rev").iterdir()] == [task_id(1, 1000000)]


def test_dry_run_reports_the_same_and_changes_nothing(tmp_path):
    runs, log = tmp_path / ".runs", tmp_path / "events.jsonl"
    for r in range(5):
        make_task(runs, "rev", task_id(r, 1))
    log.write_text("".join(json.dumps({"n": i, "pad": "p" * i}) + "\n" for i in range(200)))
    before = listing(tmp_path)
    dry = cleanup(runs, log, runs_max_per_alias=2, logs_max_bytes=1000, dry_run=True)
    assert listing(tmp_path) == before
    assert dry.lines()[0].startswith("would remove 3 task folder(s) ")
    assert dry.lines(verbose=True)[0].startswith(f"would remove {runs / 'rev'}/")
    assert dry.lines()[-1].startswith("would free ")
    real = cleanup(runs, log, runs_max_per_alias=2, logs_max_bytes=1000)
    assert [r.path for r in real.removed] == [r.path for r in dry.removed]
    assert real.freed == dry.freed and real.log is not None and dry.log is not None
    assert (real.log.before, real.log.after) == (dry.log.before, dry.log.after)


def lines_log(path: Path, sizes: list[int]) -> bytes:
    data = b"".join(json.dumps({"i": i, "pad": "x" * n}).encode() + b"\n"
                    for i, n in enumerate(sizes))
    path.write_bytes(data)
    return data


@pytest.mark.parametrize("max_bytes", [0, 1, 37, 100, 333, 1000, 4096])
def test_log_is_trimmed_to_its_last_bytes_at_a_line_boundary(tmp_path, max_bytes):
    log = tmp_path / "events.jsonl"
    original = lines_log(log, [(i * 7) % 50 for i in range(120)])
    os.chmod(log, 0o640)
    inode = log.stat().st_ino
    report = trim_log(log, max_bytes)
    kept = log.read_bytes()
    assert len(kept) <= max_bytes and original.endswith(kept)
    # no torn first line: what is kept starts right after a newline of the original
    assert kept == b"" or original[len(original) - len(kept) - 1:][:1] == b"\n"
    assert all(json.loads(line) for line in kept.splitlines())
    # the longest whole-line suffix that fits was kept
    whole = original.splitlines(keepends=True)
    best = b""
    for i in range(len(whole)):
        tail = b"".join(whole[i:])
        if len(tail) <= max_bytes:
            best = tail
            break
    assert kept == best
    assert report.log is not None and report.log.freed == len(original) - len(kept)
    assert log.stat().st_ino != inode and (log.stat().st_mode & 0o777) == 0o640  # replaced, same mode
    # no temp file left; the lock file stays (it is never removed: see test_cleanup_locking)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.jsonl", "events.jsonl.lock"]


def test_a_cut_exactly_on_a_line_boundary_keeps_that_line(tmp_path):
    log = tmp_path / "events.jsonl"
    log.write_bytes(b"aaaa\nbbbb\ncccc\n")
    trim_log(log, 10)
    assert log.read_bytes() == b"bbbb\ncccc\n"


def test_a_log_under_the_limit_is_left_alone(tmp_path):
    log = tmp_path / "events.jsonl"
    lines_log(log, [5] * 10)
    inode = log.stat().st_ino
    report = trim_log(log, 10_000)
    assert report.log is None and log.stat().st_ino == inode


def test_symlinks_are_never_followed_nor_deleted_into(tmp_path):
    runs, outside = tmp_path / ".runs", tmp_path / "outside"
    outside.mkdir()
    for r in range(4):  # old task folders that live outside the runs dir
        make_task(outside, "victim", task_id(r, 1))
    precious = outside / "precious.txt"
    precious.write_text("keep me")
    for r in range(5, 9):
        make_task(runs, "rev", task_id(r, 1))
    (runs / "linked-alias").symlink_to(outside / "victim", target_is_directory=True)
    (runs / "rev" / task_id(1, 1)).symlink_to(outside / "victim" / task_id(0, 1))
    (runs / "rev" / task_id(0, 1)).symlink_to(outside)
    # an old real task folder holding a link to a file outside: the link goes, the file stays
    old = make_task(runs, "rev", task_id(0, 2))
    (old / "evidence").symlink_to(precious)
    outside_before = listing(outside)

    report = prune_runs(runs, 1)
    assert listing(outside) == outside_before and precious.read_text() == "keep me"
    assert not old.exists()
    assert (runs / "linked-alias").is_symlink()
    assert (runs / "rev" / task_id(1, 1)).is_symlink() and (runs / "rev" / task_id(0, 1)).is_symlink()
    assert sorted(p.name for p in (runs / "rev").iterdir() if not p.is_symlink()) == [task_id(8, 1)]
    skipped = "\n".join(report.skipped)
    assert "linked-alias: a symlink (not followed)" in skipped
    assert f"{task_id(1, 1)}: a symlink (not followed)" in skipped


def test_only_task_folders_under_alias_folders_are_candidates(tmp_path):
    runs = tmp_path / ".runs"
    make_task(runs, "rev", task_id(1, 1))
    (runs / "notes.txt").write_text("mine")
    (runs / "rev" / "keep-me").mkdir()
    (runs / "rev" / "keep-me" / "f").write_text("x")
    (runs / "rev" / f"{task_id(0, 1)}.bak").write_text("x")
    (runs / ".hidden" / task_id(0, 1)).mkdir(parents=True)
    make_task(runs, "rev", task_id(2, 1))
    prune_runs(runs, 0)
    assert sorted(listing(runs)) == sorted([".hidden", f".hidden/{task_id(0, 1)}", "notes.txt", "rev",
                                            "rev/keep-me", "rev/keep-me/f", f"rev/{task_id(0, 1)}.bak"])


def test_a_runs_dir_pointed_at_an_ordinary_folder_removes_nothing(tmp_path):
    home = tmp_path / "home"
    for d in ("projects/a", "projects/b", "photos/2019", "photos/2020"):
        (home / d).mkdir(parents=True)
        (home / d / "file.txt").write_text(d)
    before = listing(home)
    report = prune_runs(home, 0)
    assert listing(home) == before and report.removed == []


def test_a_symlinked_log_is_not_trimmed(tmp_path):
    real = tmp_path / "real.jsonl"
    lines_log(real, [30] * 50)
    before = real.read_bytes()
    link = tmp_path / "events.jsonl"
    link.symlink_to(real)
    report = trim_log(link, 100)
    assert report.log is None and "is a symlink" in report.log_refused
    assert real.read_bytes() == before and link.is_symlink()


def test_a_log_a_live_run_is_writing_is_not_trimmed(tmp_path):
    log = tmp_path / "events.jsonl"
    done = subprocess.run([sys.executable, "-c", "pass"])
    assert done.returncode == 0
    started = [{"kind": "run_started", "runId": "live", "pid": os.getpid()},
               {"kind": "run_started", "runId": "crashed", "pid": 2 ** 22 + 17},
               {"kind": "run_started", "runId": "resumed", "pid": os.getpid()},
               {"kind": "run_complete", "runId": "resumed"}]
    log.write_text("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in started)
                   + ("x" * 50 + "\n") * 40)
    assert live_runs(log) == [("live", os.getpid())]
    report = trim_log(log, 200)
    assert report.log is None and "being written by run live" in report.log_refused
    with log.open("a") as fh:
        fh.write(json.dumps({"kind": "run_complete", "runId": "live"}, separators=(",", ":")) + "\n")
    assert live_runs(log) == []
    assert trim_log(log, 200).log is not None and log.stat().st_size <= 200


def test_parse_size():
    assert parse_size("5242880") == 5 * 1024 * 1024 == parse_size("5MiB") == parse_size("5m")
    assert parse_size("512K") == 512 * 1024 and parse_size("1G") == 1 << 30 and parse_size("7b") == 7
    for bad in ("", "-1", "5 TB", "1.5M"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_cli_after_real_runs(workdir, capsys):
    for _ in range(3):
        assert main(["run", "--example", "--no-plan", "--stub-latency-ms", "0"]) == 0
    capsys.readouterr()
    runs = workdir / ".runs"
    assert len(list((runs / "reviewer").iterdir())) == 6
    log = workdir / "data/logs/events.jsonl"
    size = log.stat().st_size
    assert main(["cleanup", "--runs-max-per-alias", "2", "--logs-max-bytes", "2K", "--dry-run"]) == 0
    dry = capsys.readouterr().out.splitlines()  # a summary: counts, no paths
    assert dry[0].startswith("would remove 9 task folder(s) (") and dry[0].endswith(" in 3 alias folder(s)")
    assert not any(".runs/" in line for line in dry) and log.stat().st_size == size
    assert main(["cleanup", "--runs-max-per-alias", "2", "--logs-max-bytes", "2K", "--dry-run", "-v"]) == 0
    dry = capsys.readouterr().out
    assert dry.count("would remove .runs/reviewer/") == 4 and log.stat().st_size == size
    assert main(["cleanup", "--runs-max-per-alias", "2", "--logs-max-bytes", "2K", "--verbose"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("removed .runs/") for line in out) == 9  # 4 + 4 + 1
    assert out[-2].startswith("log data/logs/events.jsonl: trimmed from ")
    assert out[-1].startswith("freed ") and "(9 task folder(s), 6 kept)" in out[-1]
    assert all(len(list(d.iterdir())) <= 2 for d in runs.iterdir())
    assert log.stat().st_size <= 2048
    assert all(json.loads(line) for line in log.read_text().splitlines())


def test_cli_errors_are_one_line_exit_2(tmp_path):
    (tmp_path / "afile").write_text("x")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_")}
    proc = subprocess.run([sys.executable, "-m", "codexflow_nb", "cleanup", "--runs-dir", "afile"],
                          cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "codex-flow: error: afile: not a folder (expected the run store, .runs)"
    proc = subprocess.run([sys.executable, "-m", "codexflow_nb", "cleanup", "--logs-max-bytes", "lots"],
                          cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2 and "not a size: 'lots'" in proc.stderr and "Traceback" not in proc.stderr
    assert listing(tmp_path) == {"afile": b"x"}


def test_missing_runs_dir_and_log_are_not_errors(workdir, capsys):
    assert main(["cleanup"]) == 0
    out = capsys.readouterr().out
    assert "no run store at .runs" in out and "no event log at data/logs/events.jsonl" in out
    assert "freed 0 B" in out


def test_staging_folders_left_by_a_crash_are_removed_once_a_minute_old(tmp_path):
    runs = tmp_path / ".runs"
    kept = make_task(runs, "rev", task_id(1, 1))
    old = runs / "rev" / f".{task_id(1, 2)}.tmp"
    fresh = runs / "rev" / f".{task_id(1, 3)}.tmp"  # may be a live run writing it now
    for staging in (old, fresh):
        staging.mkdir()
        (staging / "input.json").write_text("{}")
    os.utime(old, (0, 1_000_000))
    report = prune_runs(runs, 10)
    assert [r.path for r in report.removed] == [old]
    assert kept.is_dir() and fresh.is_dir() and not old.exists()

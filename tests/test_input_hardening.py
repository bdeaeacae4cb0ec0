"""Every input bounded and checked: alias override values, flag values, special and huge
files, deep nesting, self-referencing anchors, names. Each refusal is exit 2, one line, no
traceback, nothing written, and never a hang."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codexflow_nb.aliases import check_safe_name
from codexflow_nb.cli import main
from codexflow_nb.errors import ConfigError
from codexflow_nb.inputs import check_shape, read_bounded

TASKS = {"coder": ["Review the engine"]}


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("CODEX_URL", "CODEX_API_KEY", "CODEX_AGENTS_DIR"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "tasks.json").write_text(json.dumps(TASKS))
    (tmp_path / "mine.json").write_text(json.dumps({"mine": ["Review the engine"]}))
    return tmp_path


def refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run ``codex-flow ARGV`` in-process; it must exit 2 with one error line and write nothing."""
    before = sorted(p.name for p in Path.cwd().iterdir())
    try:
        status = main(list(argv))
    except SystemExit as exc:  # argparse
        status = exc.code
    out = capsys.readouterr()
    assert status == 2, out
    lines = [line for line in out.err.splitlines() if line.strip()]
    assert len(lines) == 1, out.err
    assert "Traceback" not in out.err + out.out
    assert sorted(p.name for p in Path.cwd().iterdir()) == before  # nothing written
    return lines[0]


OVERRIDE_VALUES = [
    ({"runtime": {"timeout_ms": "abc"}}, "runtime.timeout_ms: expected integer, got str"),
    ({"runtime": {"timeout_ms": float("nan")}}, "runtime.timeout_ms: expected integer"),
    ({"runtime": {"timeout_ms": float("inf")}}, "runtime.timeout_ms: expected integer"),
    ({"runtime": {"timeout_ms": [1]}}, "runtime.timeout_ms: expected integer, got list"),
    ({"runtime": {"timeout_ms": 99999999999999999999999}}, "runtime.timeout_ms: must be between"),
    ({"runtime": {"timeout_ms": 0}}, "runtime.timeout_ms: must be between 1 and"),
    ({"runtime": {"timeout_ms": -5}}, "runtime.timeout_ms: must be between 1 and"),
    ({"runtime": {"timeout_ms": 1.5}}, "runtime.timeout_ms: expected integer, got float"),
    ({"runtime": {"timeout_ms": True}}, "runtime.timeout_ms: expected integer, got bool"),
    ({"runtime": 5}, "runtime: expected mapping, got int"),
    ({"runtime": {"concurrency": "fast"}}, "runtime.concurrency: expected mapping, got str"),
    ({"runtime": {"concurrency": {"max_parallel_tasks": 10**9}}}, "must be between 1 and 10,000"),
    ({"runtime": {"engine": "gpt"}}, "runtime.engine: 'gpt' is not a runtime"),
    ({"agent": {"name": 3}}, "agent.name: expected string, got int"),
]


@pytest.mark.parametrize("overrides, problem", OVERRIDE_VALUES,
                         ids=[str(i) for i in range(len(OVERRIDE_VALUES))])
def test_alias_overrides_pass_the_agent_schema(cwd: Path, capsys, overrides, problem) -> None:
    # JSON cannot hold nan/inf: write YAML for those
    text = json.dumps({"mine": {"id": "coder", "overrides": overrides}}, allow_nan=True)
    text = text.replace("NaN", ".nan").replace("Infinity", ".inf")
    (cwd / "aliases.yaml").write_text(text)
    line = refused(capsys, "run", "-f", "mine.json", "--aliases", "aliases.yaml", "--no-plan")
    assert "aliases.yaml: mine: " in line and problem in line


@pytest.mark.parametrize("flag, value, problem", [
    ("--stub-latency-ms", "-5", "must be between 0 and"),
    ("--stub-latency-ms", "nan", "must be between 0 and"),
    ("--stub-jitter", "2", "must be between 0 and 1"),
    ("--stub-jitter", "inf", "must be between 0 and 1"),
    ("--stub-cpu-ms", "-1", "must be between 0 and"),
    ("--timeout-ms", "1e30", "expected a whole number"),
    ("--timeout-ms", "99999999999", "must be between 1 and"),
    ("--max-concurrency", "0", "must be between 1 and"),
    ("--retries", "-1", "must be between 0 and 100"),
    ("--codex-url", "http://127.0.0.1:99999", "Port out of range"),
    ("--codex-url", "ftp://host", "expected http://HOST"),
    ("--codex-url", "http://", "expected http://HOST"),
])
def test_flag_values_are_checked_at_parse_time(cwd: Path, capsys, flag, value, problem) -> None:
    line = refused(capsys, "run", "-f", "tasks.json", f"{flag}={value}")
    assert flag in line and problem in line


def test_codex_url_from_the_environment_is_checked(cwd: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("CODEX_URL", "http://127.0.0.1:70000")
    assert "$CODEX_URL" in refused(capsys, "run", "-f", "tasks.json", "--runtime", "codex")


def test_unknown_option_shows_usage_and_suggestion(cwd: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run", "--exmaple"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: codex-flow run") and "did you mean --example?" in err


@pytest.mark.parametrize("option", ["-f", "--aliases", "--plan-file"])
def test_special_files_are_refused_without_reading(cwd: Path, capsys, option: str) -> None:
    extra = [] if option in ("-f", "--plan-file") else ["-f", "tasks.json"]
    line = refused(capsys, "run", *extra, option, "/dev/zero")
    assert "/dev/zero: not a regular file" in line


def test_a_fifo_never_hangs(cwd: Path) -> None:
    os.mkfifo(cwd / "pipe.json")
    (cwd / "aliases-link.yaml").symlink_to("/dev/zero")
    for argv in (["-f", "pipe.json"], ["-f", "tasks.json", "--aliases", "pipe.json"],
                 ["-f", "tasks.json", "--aliases", "aliases-link.yaml"]):
        proc = subprocess.run([sys.executable, "-m", "codexflow_nb", "run", *argv], cwd=cwd,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and "not a regular file" in proc.stderr
        assert proc.stderr.count("\n") == 1


def test_an_agent_file_linked_to_dev_zero_is_refused(cwd: Path, capsys) -> None:
    agents = cwd / "agents" / "core"
    agents.mkdir(parents=True)
    (agents / "zero.codex.yaml").symlink_to("/dev/zero")
    line = refused(capsys, "run", "-f", "tasks.json", "--agents-dir", "agents")
    assert "zero.codex.yaml: not a regular file" in line


def test_huge_alias_and_agent_files_are_refused(cwd: Path, capsys) -> None:
    (cwd / "big.yaml").write_bytes(b"# " + b"x" * (2 * 1024 * 1024))
    line = refused(capsys, "run", "-f", "tasks.json", "--aliases", "big.yaml")
    assert "larger than the 1 MiB limit" in line


@pytest.mark.parametrize("kind", ["json", "yaml"])
def test_deep_nesting_is_one_line(cwd: Path, capsys, kind: str) -> None:
    depth = 100_000
    text = ('{"mine": ' + "[" * depth + "]" * depth + "}") if kind == "json" else (
        "mine: " + "[" * depth + "]" * depth)
    (cwd / f"deep.{kind}").write_text(text)
    line = refused(capsys, "run", "-f", f"deep.{kind}")
    assert "nested" in line or "nesting depth" in line  # ours, or libyaml's own limit


def test_a_self_referencing_anchor_is_refused(cwd: Path, capsys) -> None:
    (cwd / "aliases.yaml").write_text("mine:\n  id: coder\n  overrides: &o\n    loop: *o\n")
    line = refused(capsys, "run", "-f", "tasks.json", "--aliases", "aliases.yaml")
    assert "refers to itself" in line


def test_log_file_that_is_a_folder_leaves_nothing(cwd: Path, capsys) -> None:
    (cwd / "logs").mkdir()
    line = refused(capsys, "run", "-f", "tasks.json", "--log-file", "logs")
    assert "--log-file logs: a folder" in line
    assert not (cwd / ".runs").exists()


def test_resume_id_with_a_trailing_newline_is_refused(cwd: Path, capsys) -> None:
    line = refused(capsys, "run", "-f", "tasks.json", "--resume", "20261125T143601123-3fa2c1\n")
    assert "not a safe name" in line


LOOKALIKES = ["\u2024", "\u2215", "\uff0f", "\u2044", "\u00b7", "\u0430"]  # one-dot leader, slashes, Cyrillic a


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=20)
       | st.builds(lambda a, b, c: a + b + c, st.sampled_from(["a", "w", "x1"]),
                   st.sampled_from(["\n", "\r", "\t", "/", "\\", "\0", " ", *LOOKALIKES]),
                   st.sampled_from(["", "b", "\n"])))
def test_names_are_full_matches_of_the_safe_alphabet(name: str) -> None:
    ok = check_safe_name(name, "alias") is None
    expected = (0 < len(name) <= 128 and name not in (".", "..")
                and all(c.isascii() and (c.isalnum() or c in "._-") for c in name)
                and name[0].isascii() and name[0].isalnum())
    assert ok == expected, repr(name)
    if ok:  # a safe name is a plain folder name: NFC-stable, no separator, no control char
        assert unicodedata.normalize("NFC", name) == name and os.sep not in name


def test_read_bounded_and_check_shape_units(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"12345")
    assert read_bounded(f, 5) == b"12345"
    with pytest.raises(ConfigError, match="larger than the 4 bytes limit"):
        read_bounded(f, 4)
    looped: list = []
    looped.append(looped)
    with pytest.raises(ConfigError, match="refers to itself"):
        check_shape({"a": looped}, "x")
    shared = [1, 2]
    assert check_shape({"a": shared, "b": shared}, "x")  # a shared value is not a loop
    laughs: list = ["lol"]
    for _ in range(12):
        laughs = [laughs] * 10
    with pytest.raises(ConfigError, match="more than"):
        check_shape(laughs, "x")


# -- the other subcommands: changes, route, completion, cleanup, report, export-run ----------

@pytest.fixture
def ran(cwd: Path) -> Path:
    """``cwd`` with one finished stub run (its log and run store), a folder, a plain file, a
    log that is not JSON and a FIFO."""
    assert main(["run", "--example", "--no-plan", "--no-progress",
                 "--stub-latency-ms", "1"]) == 0
    (cwd / "adir").mkdir()
    (cwd / "afile").write_text("x\n")
    (cwd / "notjson.jsonl").write_bytes(b"\xff\xfe not an event\n")
    os.mkfifo(cwd / "pipe")
    return cwd


SUBCOMMAND_REFUSALS = [
    (["changes", "--runs-dir", "afile"], "--runs-dir afile: not a folder"),
    (["changes", "--log-file", "adir"], "adir: a folder, not the event log"),
    (["changes", "--log-file", "/dev/zero"], "/dev/zero: not a regular file"),
    (["changes", "--log-file", "missing.jsonl"], "missing.jsonl: cannot read the event log"),
    (["changes", "--show", "nope"], "no task 'nope'"),
    (["route", "--top", "0", "review"], "argument --top: must be between 1 and 100"),
    (["route", "review", "--agents-dir", "afile"], "afile: agents folder not found"),
    (["route", "review", "--agents-dir", "adir"], "adir: no *.codex.yaml files found"),
    (["completion", "powershell"], "invalid choice: 'powershell'"),
    (["cleanup", "--wait", "nan"], "argument --wait: must be 0 or more seconds"),
    (["cleanup", "--logs-max-bytes", "-5"], "argument --logs-max-bytes: not a size"),
    (["cleanup", "--runs-max-per-alias", "1e99"], "not a whole number"),
    (["cleanup", "--runs-dir", "afile"], "afile: not a folder"),
    (["cleanup", "--log-file", "adir"], "adir: not a regular file"),  # and no adir.lock made
    (["report", "--log-file", "notjson.jsonl"], "no runs in the event log (notjson.jsonl: "
                                                "skipped 1 bad line(s)"),
    (["report", "--log-file", "adir"], "adir: folder holds no *.jsonl event log"),
    (["report", "--pricing", "adir"], "adir: a folder, not a pricing file"),
    (["report", "--pricing", "/dev/zero"], "/dev/zero: not a regular file"),
    (["report", "--html", "adir"], "--html adir: a folder, not a file to write"),
    (["report", "--otlp-json", "afile/spans.json"], "afile is not a folder"),
    (["report", "--csv", "afile"], "--csv afile: afile is not a folder"),
    (["export-run", "last", "--notebook", "o.ipynb", "--runs-dir", "afile", "--no-execute"],
     "--runs-dir afile: not a folder"),
    (["export-run", "last", "--notebook", "o.ipynb", "--log-file", "adir", "--no-execute"],
     "adir: no event log here"),
    (["export-run", "last", "--notebook", "o.ipynb", "--timeout", "0"],
     "argument --timeout: must be between 1 and 86,400 seconds"),
    (["export-run", "last", "--notebook", "o.ipynb", "--timeout", "abc"],
     "expected a whole number of seconds"),
    (["export-run", "last", "--notebook", "afile/o.ipynb", "--no-execute"],
     "afile is not a folder"),
]


@pytest.mark.parametrize("argv, problem", SUBCOMMAND_REFUSALS,
                         ids=[" ".join(a) for a, _ in SUBCOMMAND_REFUSALS])
def test_subcommands_refuse_bad_values_and_paths_in_one_line(ran: Path, capsys, argv,
                                                             problem) -> None:
    assert problem in refused(capsys, *argv)


@pytest.mark.parametrize("argv", [["changes", "--log-file", "pipe"],
                                  ["report", "--pricing", "pipe"],
                                  ["report", "--log-file", "pipe"],
                                  ["cleanup", "--log-file", "pipe"],
                                  ["export-run", "last", "--notebook", "o.ipynb",
                                   "--log-file", "pipe", "--no-execute"]])
def test_subcommands_never_wait_on_a_fifo(ran: Path, argv: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "codexflow_nb", *argv], cwd=ran,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("argv, problem", [
    (["changes", "--log-file", "secret.jsonl"], "secret.jsonl: cannot read the event log"),
    (["report", "--log-file", "secret.jsonl"], "secret.jsonl: cannot read the event log"),
    (["report", "--pricing", "secret.jsonl"], "secret.jsonl: cannot read the pricing file"),
    (["export-run", "last", "--notebook", "o.ipynb", "--log-file", "secret.jsonl",
      "--no-execute"], "secret.jsonl: cannot read the event log"),
    (["cleanup", "--log-file", "secret.jsonl", "--dry-run"], "secret.jsonl: cleanup failed"),
    (["route", "review", "--agents-dir", "locked"], "locked: cannot read the agents folder"),
])
def test_subcommands_name_an_unreadable_file(ran: Path, argv: list[str], problem: str,
                                             no_read_rights: list[str]) -> None:
    prefix = no_read_rights
    secret = ran / "secret.jsonl"
    secret.write_bytes((ran / "data" / "logs" / "events.jsonl").read_bytes())
    (ran / "locked").mkdir()
    for path in (secret, ran / "locked"):
        path.chmod(0)
    try:
        proc = subprocess.run([*prefix, sys.executable, "-m", "codexflow_nb", *argv], cwd=ran,
                              capture_output=True, text=True, timeout=120)
    finally:
        for path in (secret, ran / "locked"):
            path.chmod(0o700)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert problem in proc.stderr and "Permission denied" in proc.stderr
    assert not (ran / "o.ipynb").exists()


def test_an_os_error_no_check_named_is_still_one_line(cwd: Path, capsys, monkeypatch) -> None:
    import argcomplete

    def denied(*args: object, **kwargs: object) -> str:
        raise PermissionError(13, "Permission denied", "/somewhere/file")

    monkeypatch.setattr(argcomplete, "shellcode", denied)
    line = refused(capsys, "completion", "bash")
    assert line == "codex-flow: error: /somewhere/file: Permission denied"

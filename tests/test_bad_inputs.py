"""The bad-input corpus (``tests/data/bad/``): every malformed input makes ``codex-flow run``
exit 2 with a line naming the file and the problem, no traceback, and nothing written.

Each case runs twice: in a real ``codex-flow`` process (marked slow: ~0.3 s of start-up each)
and in-process through ``cli.main`` (fast, the same checks on exit status, stderr and disk).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from codexflow_nb.cli import main

BAD = Path(__file__).parent / "data" / "bad"


def case(file: str, problem: str, *args: str, name: str | None = None, names: str | None = None):
    """``run -f FILE`` (or ``args`` when given); ``names`` is the path the message must name."""
    argv = args or ("-f", f"bad/{file}")
    return pytest.param(argv, names or f"bad/{file}", problem, id=name or file)


CASES = [
    # task maps (-f)
    case("tasks/invalid-yaml.yaml", "invalid YAML: line 3, column 17"),
    case("tasks/invalid-json.json", "invalid JSON: line 1, column 35"),
    case("tasks/duplicate-alias-keys.yaml", "duplicate key 'reviewer'"),
    case("tasks/duplicate-alias-keys.json", "duplicate key 'reviewer'"),
    case("tasks/not-an-object.json", "a task map must be an object"),
    case("tasks/list-of-numbers.json", "a task map must be an object of alias -> [task, ...], got list"),
    case("tasks/numbers-as-tasks.json", "reviewer[0]: a task must be a string or an object"),
    case("tasks/nested-list-task.json", "reviewer[0]: a task must be a string or an object"),
    case("tasks/scalar.yaml", "got int"),
    case("tasks/empty-file.yaml", "got nothing"),
    case("tasks/empty-map.json", "the task map is empty"),
    case("tasks/empty-list.json", "reviewer: the task list is empty"),
    case("tasks/tasks-not-a-list.json", "reviewer: expected a list of tasks, got int"),
    case("tasks/non-string-alias.yaml", "alias 1 must be a string"),
    case("tasks/missing-task-field.json", "reviewer[0]: 'task' must be a non-empty string"),
    case("tasks/wrong-depends-type.json", "'dependsOn' must be a list of task ids"),
    case("tasks/unknown-alias.json", "'no-such-alias' is neither an alias"),
    case("tasks/traversal-alias.json", "alias '../../etc' is not a safe name"),
    case("tasks/traversal-task-id.json", "task id '../../outside' is not a safe name"),
    case("tasks/absolute-task-id.json", "task id '/etc/passwd' is not a safe name"),
    case("tasks/duplicate-task-ids.json", "duplicate task id 'a'"),
    case("tasks/self-dependent.json", "task 'a' depends on itself"),
    case("tasks/cyclic.json", "dependency cycle: a -> b -> a"),
    case("tasks/unknown-dependency.json", "task 'a' depends on unknown task 'ghost'"),
    case("tasks/non-utf8.json", "not UTF-8 text (invalid byte at offset 29)"),
    case("tasks/no-such-file.json", "file not found"),
    case("tasks", "a folder, not a task file", name="tasks/a-folder", names="bad/tasks"),
    # plans (--plan-file)
    case("plans/cyclic.yaml", "dependency cycle: a -> c -> b -> a",
         "--plan-file", "bad/plans/cyclic.yaml"),
    case("plans/self-dependent.yaml", "task 'solo' depends on itself",
         "--plan-file", "bad/plans/self-dependent.yaml"),
    case("plans/unknown-dependency.yaml", "depends on unknown task 'nowhere'",
         "--plan-file", "bad/plans/unknown-dependency.yaml"),
    case("plans/duplicate-ids.yaml", "duplicate task id 'twin'",
         "--plan-file", "bad/plans/duplicate-ids.yaml"),
    case("plans/traversal-alias.yaml", "alias '../../etc' is not a safe name",
         "--plan-file", "bad/plans/traversal-alias.yaml"),
    case("plans/traversal-task-id.yaml", "task id '../outside' is not a safe name",
         "--plan-file", "bad/plans/traversal-task-id.yaml"),
    case("plans/not-an-object.yaml", "a plan must be an object with 'phases'",
         "--plan-file", "bad/plans/not-an-object.yaml"),
    case("plans/phases-not-a-list.yaml", "a plan must be an object with 'phases' (a list)",
         "--plan-file", "bad/plans/phases-not-a-list.yaml"),
    case("plans/phase-without-tasks.yaml", "phases[0]: expected an object with 'tasks'",
         "--plan-file", "bad/plans/phase-without-tasks.yaml"),
    case("plans/bad-mode.yaml", "phases[0].mode: must be 'parallel' or 'sequential'",
         "--plan-file", "bad/plans/bad-mode.yaml"),
    case("plans/empty.yaml", "the plan is empty", "--plan-file", "bad/plans/empty.yaml"),
    case("plans/invalid-yaml.yaml", "invalid YAML: line 3",
         "--plan-file", "bad/plans/invalid-yaml.yaml"),
    case("plans/non-utf8.yaml", "not UTF-8 text", "--plan-file", "bad/plans/non-utf8.yaml"),
    # alias maps (--aliases) used by a valid task map
    *[case(f"aliases/{f}", problem, "-f", "bad/aliases/alias-user.json",
           "--aliases", f"bad/aliases/{f}")
      for f, problem in [
          ("unknown-agent.yaml", "mine.id: unknown agent 'no-such-agent'"),
          ("traversal-alias.yaml", "alias '../up' is not a safe name"),
          ("not-a-mapping.yaml", "an alias map must be a mapping"),
          ("overrides-not-a-mapping.yaml", "mine.overrides: expected a mapping"),
          ("zero-limit.yaml", "mine: runtime.concurrency.max_parallel_tasks: must be between 1 and 10,000, got 0"),
          ("invalid-yaml.yaml", "invalid YAML: line 2"),
          ("non-utf8.yaml", "not UTF-8 text"),
      ]],
    # agent folders (--agents-dir): one valid agent copied and broken
    *[case(f"agents/{d}/{f}", problem, "-f", "bad/agents/coder-tasks.json",
           "--agents-dir", f"bad/agents/{d}", name=f"agents/{d}")
      for d, f, problem in [
          ("invalid-yaml", "core/coder.codex.yaml", "invalid YAML: line 5, column 8"),
          ("wrong-types", "core/coder.codex.yaml",
           "runtime.concurrency.max_parallel_tasks: expected integer, got str 'four'"),
          ("missing-fields", "core/coder.codex.yaml", "agent.name: missing"),
          ("missing-runtime", "core/coder.codex.yaml", "runtime: missing"),
          ("duplicate-ids", "core/coder.codex.yaml", "agent.id: duplicate id 'coder'"),
          ("duplicate-keys", "core/coder.codex.yaml", "duplicate key 'triggers'"),
          ("bad-regex", "core/coder.codex.yaml", "triggers.regex[1].pattern: invalid regex"),
          ("unsafe-agent-id", "core/coder.codex.yaml", "agent.id: '../coder' must be lowercase"),
          ("not-a-mapping", "core/coder.codex.yaml", "the file must hold a mapping, not list"),
          ("non-utf8", "core/coder.codex.yaml", "not UTF-8 text"),
          ("negative-limit", "core/coder.codex.yaml", "max_parallel_tasks: must be between 1 and 10,000, got -1"),
          ("bad-index", "index.json", "invalid JSON"),
      ]],
    case("agents/no-agents", "no *.codex.yaml files found", "-f", "bad/agents/coder-tasks.json",
         "--agents-dir", "bad/agents/no-agents"),
    case("agents/missing-folder", "agents folder not found", "-f", "bad/agents/coder-tasks.json",
         "--agents-dir", "bad/agents/missing-folder"),
]


def codex_flow(cwd: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("CODEX_URL", "CODEX_API_KEY", "CODEX_AGENTS_DIR")}
    env["HOME"] = str(cwd)  # no ~/.codex/agents from the machine
    return subprocess.run([sys.executable, "-m", "codexflow_nb", "run", *args], cwd=cwd,
                          capture_output=True, input=stdin, env=env, timeout=60)


@pytest.fixture(scope="module")
def cwd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One copy of the corpus for the module: a case that wrote anything fails its snapshot."""
    root = tmp_path_factory.mktemp("bad-inputs")
    shutil.copytree(BAD, root / "bad")
    return root


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def assert_rejected(status: int, out: str, err: str, names: str, problem: str) -> None:
    assert status == 2, (status, err)
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert lines and all(line.startswith("codex-flow: error: ") for line in lines), err
    assert any(names in line and problem in line for line in lines), err
    assert out == ""


def assert_process_rejected(proc: subprocess.CompletedProcess[bytes], names: str, problem: str) -> None:
    assert_rejected(proc.returncode, proc.stdout.decode("utf-8", "replace"),
                    proc.stderr.decode("utf-8", "replace"), names, problem)


@pytest.mark.slow
@pytest.mark.parametrize("argv, names, problem", CASES)
def test_bad_input_is_rejected_cleanly(cwd, argv, names, problem):
    before = snapshot(cwd)
    proc = codex_flow(cwd, *argv)
    assert_process_rejected(proc, names, problem)
    assert snapshot(cwd) == before  # nothing written: no data/logs/events.jsonl, no .runs
    assert not (cwd / "data").exists() and not (cwd / ".runs").exists()


@pytest.mark.parametrize("argv, names, problem", CASES)
def test_bad_input_is_rejected_cleanly_in_process(cwd, argv, names, problem, monkeypatch, capsys):
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HOME", str(cwd))
    for var in ("CODEX_URL", "CODEX_API_KEY", "CODEX_AGENTS_DIR"):
        monkeypatch.delenv(var, raising=False)
    before = snapshot(cwd)
    status = main(["run", *argv])
    captured = capsys.readouterr()
    assert_rejected(status, captured.out, captured.err, names, problem)
    assert snapshot(cwd) == before


def _write_big_task_file(path: Path, size: int) -> None:
    """A valid task map just over ``size`` bytes (written in pieces, never held in memory)."""
    line = '"' + "review this very long task description " * 25 + '",\n'
    with path.open("w") as fh:
        fh.write('{"reviewer": [\n')
        written = 0
        while written < size:
            fh.write(line)
            written += len(line)
        fh.write('"last"]}\n')


def test_a_50_mb_task_file_is_refused_by_size(tmp_path):
    cwd = tmp_path
    big = cwd / "big.json"
    _write_big_task_file(big, 50 * 1024 * 1024)
    before = snapshot(cwd)
    proc = codex_flow(cwd, "-f", "big.json")
    assert_process_rejected(proc, "big.json", "task file is 50.0 MiB, larger than the 16 MiB limit")
    assert snapshot(cwd) == before


def test_a_50_mb_task_map_on_stdin_is_refused_by_size(tmp_path):
    cwd = tmp_path
    big = cwd / "big.json"
    _write_big_task_file(big, 50 * 1024 * 1024)
    data = big.read_bytes()
    big.unlink()
    before = snapshot(cwd)
    proc = codex_flow(cwd, "-f", "-", stdin=data)
    assert_process_rejected(proc, "<stdin>", "task file larger than the 16 MiB limit")
    assert snapshot(cwd) == before


def test_duplicate_ids_are_not_also_reported_as_self_dependencies(cwd, monkeypatch, capsys):
    monkeypatch.chdir(cwd)
    assert main(["run", "--plan-file", "bad/plans/duplicate-ids.yaml"]) == 2
    assert capsys.readouterr().err == (
        "codex-flow: error: bad/plans/duplicate-ids.yaml: duplicate task id 'twin'\n")


def test_corpus_is_complete():
    """Every file of the corpus is used by a case (so no case silently goes missing)."""
    used = set()
    for param in CASES:
        argv = param.values[0]
        used.update(a for a in argv if a.startswith("bad/"))
    for path in BAD.rglob("*"):
        rel = f"bad/{path.relative_to(BAD)}"
        if path.is_file() and path.name != "README.md":
            assert any(rel == u or rel.startswith(u + "/") for u in used), rel

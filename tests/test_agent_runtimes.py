"""The codex-cli and claude-code runtimes with the REAL agent CLIs, against scripted local model
servers (tests/agent_servers.py): the CLIs really run the scripted shell commands in their
workspaces. Skipped only when the binaries are not installed (scripts/test.sh installs them)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from agent_servers import (
    CLAUDE_BIN,
    CODEX_BIN,
    MessagesServer,
    ResponsesServer,
    claude_env,
    codex_env,
    codex_home,
    git,
    make_repo,
)

import codexflow_nb as cf
from codexflow_nb.api import prepare_run
from codexflow_nb.changes import apply_task, run_changes
from codexflow_nb.cleanup import cleanup
from codexflow_nb.runtimes.process import run_processes

if (CODEX_BIN is None or CLAUDE_BIN is None) and os.environ.get("CODEXFLOW_REQUIRE_AGENT_CLIS"):
    raise RuntimeError("the agent CLIs are required here but not installed: run scripts/test.sh")
pytestmark = [pytest.mark.agent_cli,
              pytest.mark.skipif(CODEX_BIN is None or CLAUDE_BIN is None,
                                 reason="agent CLIs not installed (scripts/test.sh installs them)")]

THREE_ALIASES = {
    "alpha": {"id": "coder", "overrides": {"runtime": {"concurrency": {"max_parallel_tasks": 1}}}},
    "beta": {"id": "coder", "overrides": {"runtime": {"concurrency": {"max_parallel_tasks": 2}}}},
    "gamma": {"id": "tester", "overrides": {}},
}


@pytest.fixture(scope="module")
def responses():
    with ResponsesServer() as server:
        yield server


@pytest.fixture(scope="module")
def messages():
    with MessagesServer() as server:
        yield server


@pytest.fixture
def codex(tmp_path: Path, responses: ResponsesServer, monkeypatch: pytest.MonkeyPatch):
    """A working folder with a repository, Codex pointed at the scripted server."""
    monkeypatch.chdir(tmp_path)
    for key, value in codex_env(codex_home(tmp_path, responses)).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CODEXFLOW_CODEX_BIN", CODEX_BIN)
    return make_repo(tmp_path / "repo")


@pytest.fixture
def claude(tmp_path: Path, messages: MessagesServer, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    env = claude_env(tmp_path, messages)
    for key in list(os.environ):
        if key not in env:
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CODEXFLOW_CLAUDE_BIN", CLAUDE_BIN)
    return make_repo(tmp_path / "repo")


def events(log: Path = Path("data/logs/events.jsonl")) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def peak_running(evs: list[dict]) -> dict[str, int]:
    running: dict[str, int] = {}
    peak: dict[str, int] = {}
    for e in evs:
        alias = e.get("alias")
        if e["kind"] == "task_started":
            running[alias] = running.get(alias, 0) + 1
            peak[alias] = max(peak.get(alias, 0), running[alias])
        elif e["kind"] in ("task_complete", "task_failed", "task_timeout", "task_cancelled"):
            running[alias] -= 1
    return peak


def shell_task(name: str, n: int) -> str:
    return (f"Write {name}.\n@shell: mkdir -p out && echo '{name} {n}' > out/{name}.txt\n"
            f"@shell: echo 'line {n}' >> README.md\n@say: Wrote out/{name}.txt ({n})")


def test_six_tasks_three_aliases_each_change_in_its_own_worktree(codex: Path) -> None:
    status_before = git("status", "--porcelain", cwd=codex)
    head_before = git("rev-parse", "HEAD", cwd=codex)
    tasks = {a: [shell_task(f"{a}{i}", i) for i in (1, 2)] for a in THREE_ALIASES}
    result = cf.run(tasks, aliases=THREE_ALIASES, runtime="codex-cli", repo=str(codex))
    assert result.ok, result.summary_text(verbose=True)

    # the main checkout is untouched: same status, same HEAD, no files of the agents
    assert git("status", "--porcelain", cwd=codex) == status_before == ""
    assert git("rev-parse", "HEAD", cwd=codex) == head_before
    assert not (codex / "out").exists()
    assert (codex / "README.md").read_text() == "# demo\n"

    evs = events()
    starts = {e["taskId"]: e for e in evs if e["kind"] == "task_workspace"}
    assert len(starts) == 6
    for t in result.tasks:
        ws = Path(starts[t.task_id]["workspace"]["path"])
        name = t.task.splitlines()[0].split()[1].rstrip(".")
        # each change lands only in its own worktree
        assert sorted(p.name for p in (ws / "out").iterdir()) == [f"{name}.txt"]
        patch = (Path(".runs") / t.alias / t.task_id / "changes.patch").read_text()
        assert f"+++ b/out/{name}.txt" in patch and "+++ b/README.md" in patch
        assert patch.count("diff --git") == 2  # exactly its task's change
        done = next(e for e in evs if e["kind"] == "task_complete" and e["taskId"] == t.task_id)
        assert {f["path"] for f in done["changes"]["files"]} == {f"out/{name}.txt", "README.md"}
        assert done["changes"]["insertions"] == 2
        assert done["usage"]["tokensIn"] == 300 and done["usage"]["cachedTokensIn"] == 30
        assert done["model"] == "gpt-5-codex"
        assert (Path(".runs") / t.alias / t.task_id / "transcript.jsonl").stat().st_size > 0
    steps = [e for e in evs if e["kind"] == "task_step" and e["stepType"] == "command"]
    assert len(steps) == 12 and all(s["exitCode"] == 0 for s in steps)
    assert {s["stepType"] for s in evs if s["kind"] == "task_step"} == {"command", "warning"}
    # the aliases' limits held (1, 2, 3) and different aliases ran at once
    peak = peak_running(evs)
    assert peak["alpha"] == 1 and peak["beta"] <= 2 and peak["gamma"] <= 3
    assert sum(peak.values()) >= 3
    chunks = [e for e in evs if e["kind"] == "task_chunk"]
    assert len(chunks) == 6 and all(c["content"].startswith("Wrote out/") for c in chunks)

    # usage reaches the analysis frames, branches are ours
    branches = git("branch", "--list", "codexflow/*", cwd=codex).split()
    assert len([b for b in branches if b.startswith("codexflow/")]) == 6

    # best-of-N: apply one task's patch to the main checkout
    chosen = run_changes("last")[0]
    applied = apply_task(chosen, codex)
    assert applied.ok, applied.message
    assert (codex / "out" / f"{chosen.alias}1.txt").exists()


def test_cli_run_changes_and_apply(codex: Path) -> None:
    tasks = Path("tasks.json")
    tasks.write_text(json.dumps({"coder": ["Fix add.\n@shell: sed -i 's/a + b/b + a/' app.py\n"
                                           "@say: Swapped the operands"]}))
    env = os.environ.copy()
    run = subprocess.run([sys.executable, "-m", "codexflow_nb", "run", "-f", str(tasks),
                          "--runtime", "codex-cli", "--repo", str(codex), "-v"],
                         capture_output=True, text=True, env=env, timeout=180)
    assert run.returncode == 0, run.stderr
    assert "$ " in run.stdout and "sed -i" in run.stdout and "(exit 0" in run.stdout
    assert "Swapped the operands" in run.stdout
    listing = subprocess.run([sys.executable, "-m", "codexflow_nb", "changes"],
                             capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0 and "M app.py  +1 -1" in listing.stdout
    show = subprocess.run([sys.executable, "-m", "codexflow_nb", "changes", "last", "--show",
                           "coder-1"], capture_output=True, text=True, timeout=60)
    assert "-    return a + b" in show.stdout and "+    return b + a" in show.stdout
    apply = subprocess.run([sys.executable, "-m", "codexflow_nb", "changes", "--apply",
                            "coder-1", "--repo", str(codex)], capture_output=True, text=True,
                           timeout=60)
    assert apply.returncode == 0, apply.stderr
    assert "return b + a" in (codex / "app.py").read_text()
    # applying a conflicting change says what conflicted
    (codex / "app.py").write_text("def add(a, b):\n    return sum([a, b])\n")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "other", cwd=codex)
    again = subprocess.run([sys.executable, "-m", "codexflow_nb", "changes", "--apply",
                            "coder-1", "--repo", str(codex)], capture_output=True, text=True,
                           timeout=60)
    assert again.returncode == 1 and "conflicts in app.py" in again.stderr


def test_agent_failure_is_a_failed_task_with_its_message(codex: Path) -> None:
    result = cf.run({"coder": ["Try.\n@fail: the model is overloaded"]}, runtime="codex-cli",
                    repo=str(codex))
    task = result.tasks[0]
    assert task.status == "failed" and task.error["type"] == "AgentFailed"
    assert "overloaded" in task.error["message"]


def test_unknown_model_error_item_is_a_warning_not_a_failure(codex: Path) -> None:
    result = cf.run({"coder": ["Hi.\n@say: fine"]}, runtime="codex-cli", repo=str(codex))
    assert result.ok
    warnings = [e for e in events() if e["kind"] == "task_step" and e["stepType"] == "warning"]
    assert warnings and "Model metadata" in warnings[0]["message"]


def wait_for(go: Path) -> str:
    """A scripted command that blocks until ``go`` exists (its path marks the processes)."""
    return f"@shell: until [ -e {go} ]; do sleep 0.1; done"


def _agent_processes(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmd:
                found.append(int(entry))
    return found


def test_timeout_ends_the_whole_process_tree(codex: Path) -> None:
    go = Path(f"go-timeout-{os.getpid()}").resolve()
    result = cf.run({"coder": [f"Wait.\n{wait_for(go)}"]}, runtime="codex-cli",
                    repo=str(codex), timeout_ms=6000)
    assert result.tasks[0].status == "timeout"
    assert run_processes({result.run_id}) == []
    assert _agent_processes(str(go)) == []


def test_stop_ends_every_agent_and_cancels_the_rest(codex: Path) -> None:
    go = Path(f"go-stop-{os.getpid()}").resolve()

    async def main() -> cf.RunResult:
        run = prepare_run({"coder": [f"Wait {i}.\n{wait_for(go)}" for i in range(6)]},
                          runtime="codex-cli", repo=str(codex))
        job = asyncio.ensure_future(run.execute())
        # Stop as soon as agents are at work (Codex hands a command that runs over ~10 s back
        # to the model, so waiting for all four at once is a race on a busy machine)
        deadline = time.monotonic() + 60
        while len(_agent_processes(str(go))) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert _agent_processes(str(go)), "the agents never started their command"
        run.cancel("stop pressed")
        return await job

    result = asyncio.run(main())
    assert [t.status for t in result.tasks] == ["cancelled"] * 6  # running and queued ones
    assert result.cancelled == "stop pressed"
    assert run_processes({result.run_id}) == []
    assert _agent_processes(str(go)) == []


def test_kill_9_then_cleanup_then_resume(codex: Path, tmp_path: Path) -> None:
    go = tmp_path / f"go-{os.getpid()}"
    tasks = Path("tasks.json")
    tasks.write_text(json.dumps({"coder": [
        "Quick one.\n@shell: echo quick > quick.txt\n@say: quick done",
        f"Slow one.\n{wait_for(go)}\n@shell: echo one > slow1.txt\n@say: slow one done",
        f"Slow two.\n{wait_for(go)}\n@shell: echo two > slow2.txt\n@say: slow two done"]}))
    argv = [sys.executable, "-m", "codexflow_nb", "run", "-f", str(tasks), "--runtime",
            "codex-cli", "--repo", str(codex)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = Path("data/logs/events.jsonl")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        text = log.read_text() if log.exists() else ""
        if '"task_complete"' in text and len(_agent_processes(str(go))) >= 2:
            break
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("the run never reached one completed task and two waiting agents")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_id = events()[0]["runId"]
    assert git("worktree", "list", cwd=codex).count("[codexflow/") == 3
    assert run_processes({run_id})  # the agents outlive a kill -9 of the run...

    report = cleanup(".runs", "data/logs/events.jsonl")
    assert any("ended" in note for note in report.notes)  # ...until cleanup ends them
    assert run_processes({run_id}) == [] and _agent_processes(str(go)) == []
    assert git("worktree", "list", cwd=codex).count("[codexflow/") == 1  # the completed task's
    assert git("status", "--porcelain", cwd=codex) == ""

    go.touch()  # the resumed agents will not wait
    resumed = subprocess.run([*argv, "--resume", run_id], capture_output=True, text=True,
                             timeout=200)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    evs = [e for e in events() if e["runId"] == run_id]
    started = [e["key"] for e in evs if e["kind"] == "task_started"]
    assert started.count("coder-1") == 1 and started.count("coder-2") == 2
    done = {e["key"] for e in evs if e["kind"] == "task_complete"}
    assert done == {"coder-1", "coder-2", "coder-3"}
    assert git("worktree", "list", cwd=codex).count("[codexflow/") == 3


def test_resume_recreates_an_unfinished_workspace_from_the_base(codex: Path,
                                                                  tmp_path: Path) -> None:
    go = tmp_path / f"go-{os.getpid()}"
    tasks = Path("tasks.json")
    tasks.write_text(json.dumps({"coder": [
        "One.\n@shell: echo one > one.txt\n@say: one",
        f"Two.\n{wait_for(go)}\n@shell: echo two > two.txt\n@say: two"]}))
    argv = [sys.executable, "-m", "codexflow_nb", "run", "-f", str(tasks), "--runtime",
            "codex-cli", "--repo", str(codex), "--json"]
    out = subprocess.run([*argv, "--timeout-ms", "8000"], capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 1, out.stderr
    run_id = json.loads(out.stdout)["runId"]
    stale = next(Path(e["workspace"]["path"]) for e in events()
                 if e["kind"] == "task_workspace" and e["key"] == "coder-2")
    (stale / "half-done.txt").write_text("left by the timed-out attempt")
    go.touch()
    again = subprocess.run([*argv, "--resume", run_id], capture_output=True, text=True,
                           timeout=180)
    assert again.returncode == 0, again.stderr
    second = [e for e in events() if e["kind"] == "task_complete" and e["key"] == "coder-2"][-1]
    assert [f["path"] for f in second["changes"]["files"]] == ["two.txt"]
    assert not (stale / "half-done.txt").exists() and (stale / "two.txt").exists()


def test_depends_on_starts_from_the_dependency_result(codex: Path) -> None:
    plan = {"phases": [
        {"name": "write", "tasks": [
            {"id": "a", "alias": "coder", "task": "A.\n@shell: echo a > a.txt\n@say: a"},
            {"id": "b", "alias": "coder", "task": "B.\n@shell: echo b > b.txt\n@say: b"}]},
        {"name": "join", "tasks": [
            {"id": "c", "alias": "coder", "dependsOn": ["a"],
             "task": "C.\n@shell: cat a.txt > c.txt\n@say: c"},
            {"id": "d", "alias": "coder", "dependsOn": ["a", "b"],
             "task": "D.\n@shell: cat a.txt b.txt > d.txt\n@say: d"}]}]}
    result = cf.run(plan=plan, runtime="codex-cli", repo=str(codex))
    assert result.ok, result.summary_text(verbose=True)
    by_key = {t.key: t for t in result.tasks}
    ws = {e["key"]: Path(e["workspace"]["path"]) for e in events()
          if e["kind"] == "task_workspace"}
    assert (ws["c"] / "c.txt").read_text() == "a\n"
    assert (ws["d"] / "d.txt").read_text() == "a\nb\n"
    # each patch holds only its own task's change
    for key, files in (("c", ["c.txt"]), ("d", ["d.txt"])):
        t = by_key[key]
        patch = (Path(".runs") / t.alias / t.task_id / "changes.patch").read_text()
        assert [line[6:] for line in patch.splitlines() if line.startswith("+++ b/")] == files


def test_copy_workspace_for_a_folder_that_is_not_a_repository(codex: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("keep\n")
    (plain / "gone.txt").write_text("bye\n")
    result = cf.run({"coder": ["Note.\n@shell: echo more >> notes.txt\n@shell: rm gone.txt\n"
                               "@say: noted"]}, runtime="codex-cli", repo=str(plain))
    assert result.ok, result.summary_text(verbose=True)
    assert (plain / "notes.txt").read_text() == "keep\n"
    t = result.tasks[0]
    patch = (Path(".runs") / t.alias / t.task_id / "changes.patch").read_text()
    assert "+more" in patch and "a/notes.txt" in patch and "deleted file mode" in patch
    assert (plain / "gone.txt").exists()
    ws = next(e["workspace"] for e in events() if e["kind"] == "task_workspace")
    assert ws["kind"] == "copy" and not (Path(ws["path"]) / ".git").exists()


def test_workspace_none_refuses_concurrency(codex: Path) -> None:
    with pytest.raises(cf.ConfigError, match="one task at a time"):
        prepare_run({"coder": ["x"]}, runtime="codex-cli", repo=str(codex), workspace="none")


def test_missing_or_unsupported_binary_exits_2_before_writing(codex: Path, tmp_path: Path) -> None:
    old = tmp_path / "old-codex"
    old.write_text("#!/bin/sh\necho 'codex-cli 0.1.0'\n")
    old.chmod(0o755)
    for extra, expect in ((["--agent-bin", str(tmp_path / "nope")], "not found"),
                          (["--agent-bin", str(old)], "version 0.1.0, supported >=0.169.0")):
        out = subprocess.run([sys.executable, "-m", "codexflow_nb", "run", "--example",
                              "--runtime", "codex-cli", "--repo", str(codex), *extra],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2
        assert out.stderr.count("\n") == 1 and expect in out.stderr
        assert "npm install -g @openai/codex@" in out.stderr
        assert not Path("data").exists() and not Path(".runs").exists()


def test_alias_picks_its_own_engine(codex: Path) -> None:
    aliases = {"agent": {"id": "coder", "overrides": {"runtime": {"engine": "codex-cli"}}},
               "fake": {"id": "coder"}}
    result = cf.run({"agent": ["Do.\n@shell: echo x > x.txt\n@say: did"], "fake": ["Plan it"]},
                    aliases=aliases, repo=str(codex))
    assert result.ok
    by_alias = {t.alias: t for t in result.tasks}
    assert by_alias["agent"].summary == "did"
    assert by_alias["fake"].usage is not None and "agentCli" not in json.dumps(
        next(e for e in events() if e["kind"] == "task_complete" and e["alias"] == "fake"))
    bad = {"agent": {"id": "coder", "overrides": {"runtime": {"engine": "gpt"}}}}
    with pytest.raises(cf.ConfigError, match="agent: runtime.engine: 'gpt' is not a runtime"):
        prepare_run({"agent": ["x"]}, aliases=bad)


def test_claude_code_runs_tools_in_parallel_worktrees(claude: Path) -> None:
    tasks = {"coder": [shell_task(f"c{i}", i) for i in (1, 2, 3)]}
    result = cf.run(tasks, runtime="claude-code", repo=str(claude))
    assert result.ok, result.summary_text(verbose=True)
    assert git("status", "--porcelain", cwd=claude) == ""
    evs = events()
    for t in result.tasks:
        done = next(e for e in evs if e["kind"] == "task_complete" and e["taskId"] == t.task_id)
        assert len(done["changes"]["files"]) == 2
        assert done["usage"]["tokensOut"] > 0
    steps = [e for e in evs if e["kind"] == "task_step"]
    assert steps and all(s["stepType"] == "command" and s["exitCode"] == 0 for s in steps)
    assert peak_running(evs)["coder"] >= 2


def test_claude_code_error_result_is_a_failure(claude: Path) -> None:
    result = cf.run({"coder": ["Try.\n@fail: quota exceeded"]}, runtime="claude-code",
                    repo=str(claude))
    assert result.tasks[0].status == "failed"
    assert result.tasks[0].error["type"] == "AgentFailed"


def test_serve_provider_runs_the_agent_per_request(codex: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "codexflow_nb", "serve", "--provider",
                               "codex-cli", "--port", str(port), "--repo", str(codex),
                               "--pass-env", "CODEXFLOW_TEST_KEY"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "OPENAI_ORG_SECRET": "sk-server-only-1234"})
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        result = cf.run({"coder": ["Edit.\n@shell: echo served > served.txt\n"
                                   "@shell: env | sort > env.txt\n@say: served",
                                   "Edit 2.\n@shell: echo other > other.txt\n@say: other"]},
                        runtime="codex", url=f"http://127.0.0.1:{port}", stream=True)
        assert result.ok, result.summary_text(verbose=True)
        outputs = [t.output for t in result.tasks]
        patches = [o["patch"] for o in outputs]
        assert "+++ b/served.txt" in patches[0] and "other.txt" not in patches[0]
        # the agent saw only the allow-listed variables, never the server's whole environment
        assert "+PATH=" in patches[0] and "CODEXFLOW_TEST_KEY" in patches[0]
        assert "sk-server-only" not in patches[0] and "OPENAI_ORG_SECRET" not in patches[0]
        assert "+++ b/other.txt" in patches[1]
        assert [s["stepType"] for s in outputs[0]["steps"]].count("command") == 2
        assert git("status", "--porcelain", cwd=codex) == ""
    finally:
        server.terminate()
        server.wait(10)


def test_default_sandbox_lets_the_agent_edit_only_its_workspace(codex: Path) -> None:
    """Without a sandbox in the card, the flags or the user's config, Codex runs with
    workspace-write: the edit in the worktree lands, a write outside it is refused."""
    config = Path(os.environ["CODEX_HOME"]) / "config.toml"
    config.write_text("\n".join(line for line in config.read_text().splitlines()
                                if not line.startswith("sandbox_mode")) + "\n")
    outside = Path("/opt") / f"codexflow-sandbox-probe-{os.getpid()}.txt"  # not /tmp: writable
    result = cf.run({"coder": [f"Edit.\n@shell: echo in > inside.txt\n@shell: echo out > {outside}\n"
                               "@say: tried both"]}, runtime="codex-cli", repo=str(codex))
    assert result.ok, result.summary_text(verbose=True)
    files = [f["path"] for f in next(e for e in events() if e["kind"] == "task_complete")
             ["changes"]["files"]]
    try:
        assert files == ["inside.txt"] and not outside.exists()
    finally:
        outside.unlink(missing_ok=True)

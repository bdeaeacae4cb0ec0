"""Analysis of coding-agent runs: usage with cached tokens, cost at cached-input prices, steps,
changed files and workspaces, from logs the engine wrote with the REAL Codex CLI and Claude
Code (against the scripted servers of tests/agent_servers.py) mixed with a stub run, and from
hand-written events for the frame logic."""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import pandas as pd
import pytest
from agent_servers import (
    CLAUDE_BIN,
    CODEX_BIN,
    DEFAULT_USAGE,
    MessagesServer,
    ResponsesServer,
    claude_env,
    codex_env,
    codex_home,
    make_repo,
)

import codexflow_nb as cf
from codexflow_nb import ConfigError
from codexflow_nb.analysis import (
    alias_summary,
    changes_frame,
    load_events,
    load_pricing,
    reprice,
    run_summary,
    steps_frame,
    tasks_frame,
)
from codexflow_nb.analysis.frames import CHANGE_COLUMNS, STEP_COLUMNS, TASK_COLUMNS
from codexflow_nb.analysis.load import COLUMNS
from codexflow_nb.cli import main

# -- real runs: the Codex CLI, Claude Code and the stub runtime into one log -----------------------
CODEX_MODEL = "gpt-5-codex"
CLAUDE_MODEL = "claude-sonnet-4-5-20250929"
TESTER_USAGE = (1000, 200, 300, 50)  # per model request: input, cached, output, reasoning
CODEX_TASKS = {
    "coder": ["Make a file.\n@shell: echo hi > a.txt\n@say: Created a.txt",
              "Fail.\n@fail: boom"],
    "tester": ["Edit.\n@shell: printf 'x\\ny\\n' >> README.md\n@shell: rm app.py\n"
               "@shell: printf '\\x00\\x01\\x02' > blob.bin\n@shell: ls missing-file\n"
               "@usage: 1000 200 300 50\n@say: Edited"],
}
# per model request also 150 tokens written to the prompt cache for 5 minutes, 50 for 1 hour
CLAUDE_TASKS = {"claude-coder": ["Write.\n@shell: echo hello > hello.txt\n"
                                 "@usage: 1000 200 300 50\n@cache_write: 150 50\n"
                                 "@say: Wrote hello.txt"]}
CLAUDE_ALIASES = {"claude-coder": {"id": "coder"}}


def requests_per_task(server: ResponsesServer | MessagesServer) -> dict[str, int]:
    """Model requests the scripted server received, by the task's ``@say`` (or ``@fail``)."""
    counts: dict[str, int] = {}
    for request in server.model_requests():
        script, _ = server.script_of(request["json"])
        name = script.say or script.fail or "?"
        counts[name] = counts.get(name, 0) + 1
    return counts


@pytest.fixture(scope="module")
def agent_log(tmp_path_factory, registry):
    """One log: a stub run, a Codex CLI run (3 tasks, one failing) and a Claude Code run (when
    Claude Code is installed)."""
    if CODEX_BIN is None:
        if os.environ.get("CODEXFLOW_REQUIRE_AGENT_CLIS"):
            pytest.fail("the Codex CLI is required here but not installed: run scripts/test.sh")
        pytest.skip("the Codex CLI is not installed (scripts/test.sh installs it)")
    base = tmp_path_factory.mktemp("agents")
    log, runs = base / "events.jsonl", base / ".runs"
    stub = cf.run({"reviewer": ["Review a", "Review b"]}, registry=registry, latency_ms=5,
                  log_file=log, runs_dir=runs)
    with ResponsesServer() as server, pytest.MonkeyPatch.context() as mp:
        for key, value in codex_env(codex_home(base, server)).items():
            mp.setenv(key, value)
        codex = cf.run(CODEX_TASKS, runtime="codex-cli", agent_bin=CODEX_BIN,
                       agent_model=CODEX_MODEL, repo=str(make_repo(base / "repo")),
                       registry=registry, log_file=log, runs_dir=runs)
        codex_requests = requests_per_task(server)
    claude, claude_requests = None, {}
    if CLAUDE_BIN is not None:
        with MessagesServer() as server, pytest.MonkeyPatch.context() as mp:
            env = claude_env(base, server)
            for key in list(os.environ):
                if key not in env:
                    mp.delenv(key)
            for key, value in env.items():
                mp.setenv(key, value)
            claude = cf.run(CLAUDE_TASKS, aliases=CLAUDE_ALIASES, runtime="claude-code",
                            agent_bin=CLAUDE_BIN, agent_model=CLAUDE_MODEL,
                            repo=str(make_repo(base / "claude-repo")),
                            workspaces_dir=str(base / "claude-workspaces"),  # outside .git
                            registry=registry, log_file=log, runs_dir=runs)
            claude_requests = requests_per_task(server)
    raw = [json.loads(line) for line in log.read_text().splitlines()]
    return {"log": log, "raw": raw, "stub": stub, "codex": codex, "claude": claude,
            "codex_requests": codex_requests, "claude_requests": claude_requests}


@pytest.fixture(scope="module")
def agent_events(agent_log):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fast path takes the mixed log: no warning
        ev = load_events(agent_log["log"])
    assert ev.attrs["bad_lines"] == []
    return ev


@pytest.fixture(scope="module")
def agent_tasks(agent_events):
    return tasks_frame(agent_events).set_index("key")


def need_claude(agent_log) -> None:
    if agent_log["claude"] is None:
        if os.environ.get("CODEXFLOW_REQUIRE_AGENT_CLIS"):
            pytest.fail("Claude Code is required here but not installed: run scripts/test.sh")
        pytest.skip("Claude Code is not installed (scripts/test.sh installs it)")


def raw_of(agent_log, key: str, kind: str) -> list[dict]:
    return [e for e in agent_log["raw"] if e.get("key") == key and e["kind"] == kind]


def expected_cost(model: str, tin: int, cached: int, tout: int, written: int = 0,
                  written_1h: int = 0) -> float:
    price = load_pricing().lookup(model)
    assert price is not None and price.cached_input is not None, model
    write = (written - written_1h) * (price.cache_write or 0) + written_1h * (
        price.cache_write_1h or 0)
    return ((tin - cached - written) * price.input + cached * price.cached_input + write
            + tout * price.output) / 1000


@pytest.mark.agent_cli
def test_real_runs_finished_as_scripted(agent_log):
    assert agent_log["stub"].ok
    status = {t.key: t.status for t in agent_log["codex"].tasks}
    assert status == {"coder-1": "completed", "coder-2": "failed", "tester-1": "completed"}
    # one model request per shell command, then the final answer
    assert agent_log["codex_requests"] == {"Created a.txt": 2, "boom": 1, "Edited": 5}
    if agent_log["claude"] is not None:
        assert agent_log["claude"].ok, agent_log["claude"].summary_text(verbose=True)
        assert agent_log["claude_requests"] == {"Wrote hello.txt": 2}


@pytest.mark.agent_cli
def test_events_frame_reads_agent_fields_like_the_json(agent_log, agent_events):
    ev, raw = agent_events, agent_log["raw"]
    assert list(ev.columns) == [*COLUMNS, "seq"] and len(ev) == len(raw)
    for col in ("cached_tokens_in", "cache_write_tokens_in", "cache_write_1h_tokens_in",
                "reasoning_tokens", "steps", "warnings", "exit_code", "files_changed",
                "insertions", "deletions"):
        assert str(ev[col].dtype) == "Int64", col
    for row, r in zip(ev.itertuples(), raw, strict=True):
        usage, changes = r.get("usage") or {}, r.get("changes")
        pairs = [(row.cached_tokens_in, usage.get("cachedTokensIn")),
                 (row.cache_write_tokens_in, usage.get("cacheWriteTokensIn")),
                 (row.cache_write_1h_tokens_in, usage.get("cacheWrite1hTokensIn")),
                 (row.reasoning_tokens, usage.get("reasoningTokens")),
                 (row.agent_cli, r.get("agentCli")), (row.steps, r.get("steps")),
                 (row.step_type, r.get("stepType")), (row.command, r.get("command")),
                 (row.exit_code, r.get("exitCode")), (row.duration_ms, r.get("durationMs")),
                 (row.output, r.get("output")), (row.message, r.get("message")),
                 (row.workspace, (r.get("workspace") or {}).get("kind")),
                 (row.branch, (r.get("workspace") or {}).get("branch")),
                 (row.insertions, changes and changes["insertions"]),
                 (row.files_changed, changes and len(changes["files"]))]
        for got, want in pairs:
            assert (None if pd.isna(got) else got) == want, (r["kind"], got, want)


@pytest.mark.agent_cli
def test_tasks_frame_usage_cost_and_changes_of_codex_tasks(agent_tasks):
    t = agent_tasks
    assert sorted(t.reset_index().columns) == sorted(TASK_COLUMNS)
    n_in, n_cached, n_out, n_reason = (5 * n for n in TESTER_USAGE)  # 5 model requests
    tester = t.loc["tester-1"]
    assert (tester["tokens_in"], tester["cached_tokens_in"], tester["tokens_out"],
            tester["reasoning_tokens"]) == (n_in, n_cached, n_out, n_reason) == (5000, 1000, 1500, 250)
    assert tester["model"] == CODEX_MODEL
    assert tester["cost"] == pytest.approx(expected_cost(CODEX_MODEL, 5000, 1000, 1500), rel=1e-12)
    assert tester["cost"] == pytest.approx((4000 * 1.25 + 1000 * 0.125 + 1500 * 10) / 1e6)
    assert (tester["files_changed"], tester["insertions"], tester["deletions"]) == (3, 2, 2)
    assert str(tester["agent_cli"]).startswith("codex-cli ") and tester["workspace"] == "worktree"
    assert tester["branch"].startswith("codexflow/") and tester["task_id"] in tester["branch"]
    coder = t.loc["coder-1"]
    d_in, d_cached, d_out, d_reason = DEFAULT_USAGE
    assert (coder["tokens_in"], coder["cached_tokens_in"], coder["tokens_out"],
            coder["reasoning_tokens"]) == (2 * d_in, 2 * d_cached, 2 * d_out, 2 * d_reason)
    assert coder["cost"] == pytest.approx(expected_cost(CODEX_MODEL, 200, 20, 40), rel=1e-12)
    assert (coder["files_changed"], coder["insertions"], coder["deletions"]) == (1, 1, 0)
    failed = t.loc["coder-2"]  # the failed turn: model known, no usage, so no cost (not 0)
    assert failed["status"] == "failed" and failed["error_type"] == "AgentFailed"
    assert failed["model"] == CODEX_MODEL and pd.isna(failed["tokens_in"])
    assert math.isnan(failed["cost"]) and failed["files_changed"] == 0


@pytest.mark.agent_cli
def test_tasks_frame_claude_task_in_the_same_log(agent_log, agent_tasks):
    need_claude(agent_log)
    t = agent_tasks
    claude = t.loc["claude-coder-1"]
    # Claude Code: tokensIn is input + cache reads + cache writes; 2 model requests, each with
    # 1000 input, 200 reads, 150 + 50 writes (5 minutes + 1 hour), 300 output
    assert (claude["tokens_in"], claude["cached_tokens_in"], claude["cache_write_tokens_in"],
            claude["cache_write_1h_tokens_in"], claude["tokens_out"]) == (2800, 400, 400, 100, 600)
    assert pd.isna(claude["reasoning_tokens"]) and claude["model"] == CLAUDE_MODEL
    assert claude["cost"] == pytest.approx(
        expected_cost(CLAUDE_MODEL, 2800, 400, 600, written=400, written_1h=100), rel=1e-12)
    # $3 input, $0.30 cache reads, $3.75 5-minute and $6 1-hour writes, $15 output per 1M:
    # what Claude Code 2.1.197 itself reports as total_cost_usd for this usage
    assert claude["cost"] == pytest.approx(
        (2000 * 3 + 400 * 0.3 + 300 * 3.75 + 100 * 6 + 600 * 15) / 1e6, rel=1e-12)
    assert claude["cost"] == pytest.approx(0.016845, rel=1e-12)
    assert claude["cache_write_cost"] == pytest.approx((300 * 3.75 + 100 * 6) / 1e6, rel=1e-12)
    assert str(claude["agent_cli"]).startswith("claude-code ")
    assert (claude["files_changed"], claude["insertions"], claude["deletions"]) == (1, 1, 0)


@pytest.mark.agent_cli
def test_tasks_frame_stub_tasks_in_the_same_log(agent_tasks):
    t = agent_tasks  # stub tasks: as before, no agent columns, the illustrative stub price
    stub = t[t["alias"] == "reviewer"]
    assert len(stub) == 2 and (stub["model"] == "stub").all()
    for col in ("cached_tokens_in", "reasoning_tokens", "steps", "warnings", "files_changed",
                "insertions", "deletions", "agent_cli", "workspace", "branch"):
        assert stub[col].isna().all(), col
    price = load_pricing().lookup("stub")
    expected = (stub["tokens_in"].astype(float) * price.input
                + stub["tokens_out"].astype(float) * price.output) / 1000
    assert (stub["cost"] - expected).abs().max() < 1e-15


@pytest.mark.agent_cli
def test_changes_frame_one_row_per_changed_file(agent_log, agent_events):
    ch = changes_frame(agent_events)
    assert list(ch.columns) == CHANGE_COLUMNS
    rows = sorted((r.key, r.path, r.file_status, r.insertions, r.deletions, r.binary, r.status)
                  for r in ch.itertuples())
    with_claude = agent_log["claude"] is not None
    claude = [("claude-coder-1", "hello.txt", "added", 1, 0, False, "completed")]
    assert rows == [
        *(claude if with_claude else []),
        ("coder-1", "a.txt", "added", 1, 0, False, "completed"),
        ("tester-1", "README.md", "modified", 2, 0, False, "completed"),
        ("tester-1", "app.py", "deleted", 0, 2, False, "completed"),
        ("tester-1", "blob.bin", "added", 0, 0, True, "completed"),
    ]
    assert str(ch["insertions"].dtype) == "Int64" and ch["binary"].dtype == bool
    tasks = tasks_frame(agent_events)
    joined = ch.merge(tasks[["run", "task_id", "alias"]], on=["run", "task_id"], how="left")
    assert (joined["alias_x"].astype(str) == joined["alias_y"].astype(str)).all()
    per_task = ch.groupby("key")["insertions"].sum()
    assert per_task.to_dict() == {**({"claude-coder-1": 1} if with_claude else {}), "coder-1": 1,
                                  "tester-1": 2}


@pytest.mark.agent_cli
def test_steps_frame_commands_and_warnings(agent_log, agent_events, agent_tasks):
    st = steps_frame(agent_events)
    assert list(st.columns) == STEP_COLUMNS
    assert len(st) == sum(1 for e in agent_log["raw"] if e["kind"] == "task_step")
    tester = st[st["key"] == "tester-1"]
    assert tester["seq"].tolist() == list(range(1, len(tester) + 1))
    assert tester["ts"].is_monotonic_increasing
    commands = tester[tester["step_type"] == "command"]
    for command, part in zip(commands["command"], [">> README.md", "rm app.py", "> blob.bin",
                                                   "ls missing-file"], strict=True):
        assert part in command
    assert commands["exit_code"].tolist() == [0, 0, 0, 2]
    assert commands["status"].astype(str).tolist() == ["completed"] * 3 + ["failed"]
    assert "missing-file" in commands["output"].iloc[-1]
    assert (commands["duration_ms"] >= 0).all()
    # the steps and warnings counted on the terminal event match the step events
    for key in ("coder-1", "coder-2", "tester-1",
                *(["claude-coder-1"] if agent_log["claude"] is not None else [])):
        mine = st[st["key"] == key]
        assert agent_tasks.loc[key, "steps"] == len(mine) == raw_of(
            agent_log, key, "task_complete" if key != "coder-2" else "task_failed")[0]["steps"]
        n_warn = int((mine["step_type"] == "warning").sum())
        assert (0 if pd.isna(agent_tasks.loc[key, "warnings"]) else agent_tasks.loc[key, "warnings"]) == n_warn
    failed = st[st["key"] == "coder-2"]
    assert "boom" in failed["message"].iloc[-1]
    if agent_log["claude"] is None:
        return
    claude = st[st["key"] == "claude-coder-1"].iloc[0]
    assert (claude["step_type"], claude["tool"], claude["command"], claude["exit_code"]) == (
        "command", "Bash", "echo hello > hello.txt", 0)


@pytest.mark.agent_cli
def test_scan_path_gives_the_same_frame(agent_log, agent_events, tmp_path):
    """A bad line sends the file to the line-by-line reader: same rows, same values."""
    damaged = tmp_path / "events.jsonl"
    damaged.write_bytes(b"not json\n" + agent_log["log"].read_bytes())
    with pytest.warns(Warning, match="skipped 1 bad line"):
        slow = load_events(damaged)
    same = [c for c in COLUMNS if c not in ("changes", "source")]
    pd.testing.assert_frame_equal(slow[same], agent_events[same], check_categorical=False)

    def as_lists(column: pd.Series) -> list:
        return [None if c is None else [dict(f) for f in c] for c in column]

    assert as_lists(slow["changes"]) == as_lists(agent_events["changes"])


@pytest.mark.agent_cli
def test_report_shows_tokens_cached_and_cost_per_alias(agent_log, capsys):
    assert main(["report", "--log-file", str(agent_log["log"]), "--all"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(line.split() for line in lines if line.startswith("alias "))
    table = {line.split()[0]: line.split() for line in lines
             if line.startswith(("coder ", "tester ", "claude-coder ", "reviewer "))}
    if agent_log["claude"] is None:  # no cache writes in the log: no cache-write columns
        assert header[-11:] == ["tokens", "in", "cached", "in", "tokens", "out", "cost", "$",
                                "files", "+lines", "-lines"]
        assert table["tester"][11:] == ["5000", "1000", "1500", "0.0201", "3", "2", "2"]
        return
    assert header[-16:] == ["tokens", "in", "cached", "in", "cache", "writes", "tokens", "out",
                            "cost", "$", "cache", "writes", "$", "files", "+lines", "-lines"]
    # Codex reports no cache writes: "-" in both cache-write columns
    assert table["tester"][11:] == ["5000", "1000", "-", "1500", "0.0201", "-", "3", "2", "2"]
    assert table["coder"][11:17] == ["200", "20", "-", "40", "0.0006", "-"]  # 0.0006275
    assert table["coder"][17:] == ["1", "1", "0"]
    assert table["claude-coder"][11:] == ["2800", "400", "400", "600", "0.0168", "0.0017",
                                          "1", "1", "0"]
    assert table["reviewer"][12] == "-" and table["reviewer"][17:] == ["-", "-", "-"]
    # the run lines: only Claude's run paid for cache writes
    costs = [line.split(" cost ")[1] for line in lines if line.startswith("  retries ")]
    assert len(costs) == 3 and costs[-1] == "$0.0168 (cache writes $0.0017)"
    assert not any("cache writes" in c for c in costs[:-1])
    assert "note: no cost" not in out


@pytest.mark.agent_cli
def test_alias_summary_adds_cached_tokens_and_changes(agent_tasks):
    s = alias_summary(agent_tasks.reset_index())
    assert s.loc["tester", "cached_tokens_in"] == 1000 and s.loc["coder", "cached_tokens_in"] == 20
    assert s.loc["coder", "cost"] == pytest.approx(agent_tasks.loc["coder-1", "cost"])
    assert (s.loc["tester", "files_changed"], s.loc["tester", "insertions"],
            s.loc["tester", "deletions"]) == (3, 2, 2)
    assert pd.isna(s.loc["reviewer", "files_changed"])


# -- unit tests on hand-written events ------------------------------------------------------------
RUN = "20261202T000000000-abcdef"


def event(kind: str, key: str | None = None, second: float = 0.0, **fields) -> dict:
    ts = pd.Timestamp("2026-12-02T00:00:00Z") + pd.Timedelta(seconds=second)
    e = {"v": 1, "ts": ts.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z", "kind": kind, "runId": RUN}
    if key is not None:
        e.update(alias=key.rsplit("-", 1)[0], agentId="coder", taskId=f"{RUN}-{key}", key=key,
                 phase=0)
    e.update(fields)
    return e


def write(path: Path, events: list[dict]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def agent_task(key: str, start: float, *, kind: str = "task_complete", usage=None, model=None,
               files=(), steps: list[dict] = ()) -> list[dict]:
    out = [event("task_queued", key, start, task="t", dependsOn=[], limit=2),
           event("task_started", key, start, attempt=1, limit=2),
           event("task_workspace", key, start + 0.1,
                 workspace={"kind": "worktree", "path": f"/ws/{key}", "repo": "/r",
                            "branch": f"codexflow/{key}", "start": "abc", "gitDir": "/g"})]
    out += [event("task_step", key, start + 0.2 + i / 10, **s) for i, s in enumerate(steps)]
    if kind:
        term = {"ok": kind == "task_complete", "attempt": 1, "ms": 1000.0,
                "agentCli": "codex-cli 9.9.9", "steps": len(steps),
                "workspace": {"kind": "worktree", "path": f"/ws/{key}", "branch": f"codexflow/{key}",
                              "start": "abc"},
                "changes": {"files": list(files), "insertions": sum(f["insertions"] for f in files),
                            "deletions": sum(f["deletions"] for f in files)}}
        if usage is not None:
            term["usage"] = usage
        if model is not None:
            term["model"] = model
        if kind == "task_failed":
            term["error"] = {"type": "AgentFailed", "message": "turn failed"}
        out.append(event(kind, key, start + 1, **term))
    return out


PRICES = ("providers:\n  acme:\n"
          "    rocket: {input: 0.002, cached_input: 0.0005, output: 0.01}\n"
          "    plain: {input: 0.002, output: 0.01}\n")


@pytest.fixture
def prices(tmp_path: Path) -> Path:
    return write_text(tmp_path / "prices.yaml", PRICES)


def write_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_cost_charges_cached_input_at_its_price(tmp_path, prices):
    usage = {"tokensIn": 10_000, "tokensOut": 2_000, "cachedTokensIn": 4_000, "reasoningTokens": 500}
    log = write(tmp_path / "e.jsonl", [
        *agent_task("a-1", 0, usage=usage, model="rocket"),
        *agent_task("a-2", 0, usage=usage, model="plain"),      # no cached price: input price
        *agent_task("a-3", 0, usage=usage, model="acme/rocket-20260101"),  # dated variant
        *agent_task("a-4", 0, kind="task_failed", usage=usage, model="rocket"),  # failed, billed
        *agent_task("a-5", 0, usage=usage, model="mystery"),    # unknown model: NaN
        *agent_task("a-6", 0, kind="task_failed", model="rocket"),  # no usage: NaN
        *agent_task("a-7", 0, usage={"tokensIn": 1000, "tokensOut": 100}, model="rocket"),
    ])
    t = tasks_frame(load_events(log), pricing=str(prices)).set_index("key")
    rocket = (6_000 * 0.002 + 4_000 * 0.0005 + 2_000 * 0.01) / 1000
    assert rocket == pytest.approx(0.034)
    assert t.loc["a-1", "cost"] == pytest.approx(rocket, rel=1e-12)
    assert t.loc["a-2", "cost"] == pytest.approx((10_000 * 0.002 + 2_000 * 0.01) / 1000, rel=1e-12)
    assert t.loc["a-3", "cost"] == pytest.approx(rocket, rel=1e-12)
    assert t.loc["a-4", "cost"] == pytest.approx(rocket, rel=1e-12)
    assert t.loc["a-4", "status"] == "failed"
    assert math.isnan(t.loc["a-5", "cost"]) and math.isnan(t.loc["a-6", "cost"])
    assert t.loc["a-7", "cost"] == pytest.approx((1000 * 0.002 + 100 * 0.01) / 1000, rel=1e-12)
    assert pd.isna(t.loc["a-7", "cached_tokens_in"])
    a1 = t.loc["a-1"]
    assert (a1["tokens_in"], a1["tokens_out"], a1["cached_tokens_in"], a1["reasoning_tokens"]) == (
        10_000, 2_000, 4_000, 500)
    # reprice keeps the cached share
    again = reprice(t.reset_index(), "plain", pricing=str(prices)).set_index("key")
    assert again.loc["a-1", "cost"] == pytest.approx(0.04) and again.loc["a-1", "cost_before"] == a1["cost"]
    assert reprice(t.reset_index(), "rocket", pricing=str(prices)).set_index("key").loc[
        "a-2", "cost"] == pytest.approx(rocket)


CACHE_PRICES = ("providers:\n  acme:\n"
                "    claudish: {input: 0.004, cached_input: 0.0004, cache_write: 0.005,\n"
                "               cache_write_1h: 0.008, output: 0.02}\n"
                "    writeless: {input: 0.004, cached_input: 0.0004, output: 0.02}\n"
                "    fivemin: {input: 0.004, cache_write: 0.005, output: 0.02}\n")


def test_cache_writes_are_priced_by_lifetime_through_the_frames(tmp_path):
    """A Claude-like usage from the log to the cost: reads at cached_input, 5-minute writes at
    cache_write (1.25x input here), 1-hour writes at cache_write_1h (2x), the rest at input."""
    prices = write_text(tmp_path / "prices.yaml", CACHE_PRICES)
    usage = {"tokensIn": 10_000, "tokensOut": 1_000, "cachedTokensIn": 3_000,
             "cacheWriteTokensIn": 2_000, "cacheWrite1hTokensIn": 500}
    no_split = {k: v for k, v in usage.items() if k != "cacheWrite1hTokensIn"}
    log = write(tmp_path / "e.jsonl", [
        *agent_task("c-1", 0, usage=usage, model="claudish"),
        *agent_task("c-2", 0, usage=usage, model="writeless"),   # no cache_write: input price
        *agent_task("c-3", 0, usage=usage, model="fivemin"),     # no 1h price: cache_write
        *agent_task("c-4", 0, usage=no_split, model="claudish"),  # no split: all 5-minute
        *agent_task("c-5", 0, usage={"tokensIn": 10_000, "tokensOut": 1_000,
                                     "cachedTokensIn": 3_000}, model="claudish"),  # Codex-like
        *agent_task("c-6", 0, usage=usage, model="mystery"),     # unknown model: NaN
    ])
    ev = load_events(log)
    assert ev.attrs["bad_lines"] == []
    done = ev[ev["kind"] == "task_complete"].set_index("key")
    assert done.loc["c-1", "cache_write_tokens_in"] == 2_000
    assert done.loc["c-1", "cache_write_1h_tokens_in"] == 500
    assert pd.isna(done.loc["c-4", "cache_write_1h_tokens_in"])
    assert pd.isna(done.loc["c-5", "cache_write_tokens_in"])
    t = tasks_frame(ev, pricing=str(prices)).set_index("key")
    assert sorted(t.reset_index().columns) == sorted(TASK_COLUMNS)
    for col in ("cache_write_tokens_in", "cache_write_1h_tokens_in"):
        assert str(t[col].dtype) == "Int64", col
    assert (t.loc["c-1", "tokens_in"], t.loc["c-1", "cached_tokens_in"],
            t.loc["c-1", "cache_write_tokens_in"], t.loc["c-1", "cache_write_1h_tokens_in"]) == (
        10_000, 3_000, 2_000, 500)
    # 5,000 plain input x $4 + 3,000 reads x $0.40 + 1,500 5-minute writes x $5
    # + 500 1-hour writes x $8 + 1,000 output x $20, per 1M tokens
    assert t.loc["c-1", "cost"] == pytest.approx(0.0527, rel=1e-12)
    assert t.loc["c-1", "cost"] == pytest.approx(
        (5_000 * 4 + 3_000 * 0.4 + 1_500 * 5 + 500 * 8 + 1_000 * 20) / 1e6, rel=1e-12)
    assert t.loc["c-1", "cache_write_cost"] == pytest.approx((1_500 * 5 + 500 * 8) / 1e6)
    # without cache_write the writes cost input: as if they were plain input
    assert t.loc["c-2", "cost"] == pytest.approx(
        (7_000 * 4 + 3_000 * 0.4 + 1_000 * 20) / 1e6, rel=1e-12)
    assert t.loc["c-2", "cache_write_cost"] == pytest.approx(2_000 * 4 / 1e6)
    # without cache_write_1h the 1-hour writes cost cache_write (no cached_input: input)
    assert t.loc["c-3", "cost"] == pytest.approx(
        (8_000 * 4 + 2_000 * 5 + 1_000 * 20) / 1e6, rel=1e-12)
    assert t.loc["c-4", "cost"] == pytest.approx(
        (5_000 * 4 + 3_000 * 0.4 + 2_000 * 5 + 1_000 * 20) / 1e6, rel=1e-12)
    # no cache writes reported: as before this change, and no cache-write cost (not 0)
    assert t.loc["c-5", "cost"] == pytest.approx((7_000 * 4 + 3_000 * 0.4 + 1_000 * 20) / 1e6)
    assert math.isnan(t.loc["c-5", "cache_write_cost"])
    assert math.isnan(t.loc["c-6", "cost"]) and math.isnan(t.loc["c-6", "cache_write_cost"])
    # summaries add the writes and their cost up
    s = alias_summary(t.reset_index())
    assert s.loc["c", "cache_write_tokens_in"] == 5 * 2_000
    assert s.loc["c", "cache_write_cost"] == pytest.approx(
        t["cache_write_cost"].sum(), abs=1e-8)
    r = run_summary(tasks_frame(ev, pricing=str(prices)))
    assert r["cache_write_cost"].iloc[0] == pytest.approx(t["cache_write_cost"].sum(), abs=1e-8)
    # reprice keeps the writes and their split: the same usage at claudish's prices
    again = reprice(t.reset_index(), "claudish", pricing=str(prices)).set_index("key")
    assert again.loc["c-2", "cost"] == pytest.approx(t.loc["c-1", "cost"], rel=1e-12)
    assert again.loc["c-2", "cache_write_cost"] == pytest.approx(t.loc["c-1", "cache_write_cost"])
    assert again.loc["c-2", "cost_before"] == t.loc["c-2", "cost"]
    # the OpenTelemetry spans, written after the run or live, carry the writes and this cost
    from codexflow_nb.analysis import to_otel

    spans = to_otel(ev, pricing=str(prices))["resourceSpans"][0]["scopeSpans"][0]["spans"]
    task = next(sp for sp in spans if sp["name"] == "invoke_agent c" and any(
        a["key"] == "codexflow.task.key" and a["value"]["stringValue"] == "c-1"
        for a in sp["attributes"]))
    got = {a["key"]: next(iter(a["value"].values())) for a in task["attributes"]}
    assert int(got["gen_ai.usage.cache_creation.input_tokens"]) == 2_000
    assert int(got["llm.token_count.prompt_details.cache_write"]) == 2_000
    assert got["codexflow.cost_usd"] == pytest.approx(t.loc["c-1", "cost"], rel=1e-12)
    pytest.importorskip("opentelemetry.proto")
    from codexflow_nb.analysis import OtlpExporter

    live = OtlpExporter("http://127.0.0.1:9", pricing=str(prices))._record(
        RUN, {}, {"kind": "task_complete", "taskId": "x", "usage": usage, "model": "claudish"},
        0, "claude-code")
    assert live["cost"] == pytest.approx(t.loc["c-1", "cost"], rel=1e-12)
    assert live["cache_write_tokens_in"] == 2_000


def test_report_shows_cache_write_tokens_and_cost(tmp_path, capsys):
    prices = write_text(tmp_path / "prices.yaml", CACHE_PRICES)
    usage = {"tokensIn": 10_000, "tokensOut": 1_000, "cachedTokensIn": 3_000,
             "cacheWriteTokensIn": 2_000, "cacheWrite1hTokensIn": 500}
    log = write(tmp_path / "e.jsonl", [
        event("run_started", None, 0, runtime="claude-code", maxConcurrency=None),
        *agent_task("c-1", 0, usage=usage, model="claudish"),
        *agent_task("c-2", 0, usage=usage, model="claudish"),
        event("run_complete", None, 2, ok=True)])
    assert main(["report", "--log-file", str(log), "--pricing", str(prices)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line.split() for line in lines if line.startswith("alias "))
    row = next(line.split() for line in lines if line.startswith("c "))
    named = dict(zip(["tokens in", "cached in", "cache writes", "tokens out", "cost $",
                      "cache writes $"], row[11:17], strict=True))
    assert header[header.index("peak") + 1:] == [
        "tokens", "in", "cached", "in", "cache", "writes", "tokens", "out", "cost", "$", "cache",
        "writes", "$", "files", "+lines", "-lines"]
    # two tasks of 0.0527 USD, 0.0115 of each for its cache writes
    assert named == {"tokens in": "20000", "cached in": "6000", "cache writes": "4000",
                     "tokens out": "2000", "cost $": "0.1054", "cache writes $": "0.0230"}
    assert any(line.endswith("cost $0.1054 (cache writes $0.0230)") for line in lines)


def test_model_from_the_terminal_event_else_telemetry(tmp_path, prices):
    usage = {"tokensIn": 1000, "tokensOut": 100, "cachedTokensIn": 1000}
    events = agent_task("a-1", 0, usage=usage)  # model only on telemetry
    events.insert(-1, event("telemetry", "a-1", 0.9, usage=usage, model="rocket", ms=900.0))
    events += agent_task("a-2", 0, usage=usage, model="plain")
    t = tasks_frame(load_events(write(tmp_path / "e.jsonl", events)), pricing=str(prices))
    t = t.set_index("key")
    assert t.loc["a-1", "model"] == "rocket" and t.loc["a-2", "model"] == "plain"
    assert t.loc["a-1", "cost"] == pytest.approx((1000 * 0.0005 + 100 * 0.01) / 1000, rel=1e-12)


def test_steps_changes_and_workspace_columns(tmp_path):
    files = [{"path": "src/a.py", "status": "modified", "insertions": 5, "deletions": 2},
             {"path": "img.png", "status": "added", "insertions": 0, "deletions": 0, "binary": True},
             {"path": "old.txt", "status": "deleted", "insertions": 0, "deletions": 7}]
    steps = [{"stepType": "command", "command": "pytest -q", "exitCode": 1, "status": "failed",
              "durationMs": 812.5, "output": "1 failed"},
             {"stepType": "file_change", "status": "completed", "files": ["src/a.py", None, "b.py"]},
             {"stepType": "tool", "tool": "github.search", "status": "completed"},
             {"stepType": "web_search", "query": "pandas nullable ints"},
             {"stepType": "warning", "message": "slow down"}]
    events = [*agent_task("a-1", 0, files=files, steps=steps),
              *agent_task("b-1", 0.05, steps=steps[:1]),
              *agent_task("c-1", 0.5, kind="", steps=steps[:2])]  # no terminal event: a crash
    ev = load_events(write(tmp_path / "e.jsonl", events))
    t = tasks_frame(ev).set_index("key")
    a = t.loc["a-1"]
    assert (a["steps"], a["files_changed"], a["insertions"], a["deletions"]) == (5, 3, 5, 9)
    assert (a["workspace"], a["workspace_path"], a["branch"]) == ("worktree", "/ws/a-1", "codexflow/a-1")
    assert a["agent_cli"] == "codex-cli 9.9.9" and pd.isna(a["tokens_in"]) and math.isnan(a["cost"])
    crashed = t.loc["c-1"]  # steps counted from its events; workspace from task_workspace
    assert crashed["status"] == "unfinished" and crashed["steps"] == 2
    assert crashed["workspace_path"] == "/ws/c-1" and pd.isna(crashed["files_changed"])

    st = steps_frame(ev)
    assert list(st.columns) == STEP_COLUMNS
    assert st.groupby("key")["seq"].apply(list).to_dict() == {
        "a-1": [1, 2, 3, 4, 5], "b-1": [1], "c-1": [1, 2]}
    a_steps = st[st["key"] == "a-1"].set_index("seq")
    assert a_steps["step_type"].astype(str).tolist() == [
        "command", "file_change", "tool", "web_search", "warning"]
    assert (a_steps.loc[1, "command"], a_steps.loc[1, "exit_code"], a_steps.loc[1, "duration_ms"],
            a_steps.loc[1, "output"]) == ("pytest -q", 1, 812.5, "1 failed")
    assert a_steps.loc[2, "files"] == "src/a.py,b.py"  # a null path is left out
    assert a_steps.loc[3, "tool"] == "github.search" and a_steps.loc[4, "query"] == "pandas nullable ints"
    assert a_steps.loc[5, "message"] == "slow down" and pd.isna(a_steps.loc[5, "exit_code"])
    assert str(st["exit_code"].dtype) == "Int64" and str(st["ts"].dtype) == "datetime64[us, UTC]"

    ch = changes_frame(ev)
    assert [(r.key, r.path, r.file_status, r.insertions, r.deletions, r.binary)
            for r in ch.itertuples()] == [
        ("a-1", "src/a.py", "modified", 5, 2, False), ("a-1", "img.png", "added", 0, 0, True),
        ("a-1", "old.txt", "deleted", 0, 7, False)]
    assert (ch["alias"] == "a").all() and (ch["status"] == "completed").all()
    assert (ch["task_id"] == f"{RUN}-a-1").all() and (ch["run"] == RUN).all()


def test_frames_without_agent_events_are_empty_with_columns(tmp_path, registry):
    log = tmp_path / "events.jsonl"
    cf.run({"reviewer": ["Review a"]}, registry=registry, latency_ms=1, log_file=log, runs_dir=None)
    ev = load_events(log)
    ch, st = changes_frame(ev), steps_frame(ev)
    assert list(ch.columns) == CHANGE_COLUMNS and ch.empty
    assert list(st.columns) == STEP_COLUMNS and st.empty
    assert str(ch["insertions"].dtype) == "Int64" and ch["binary"].dtype == bool
    with pytest.raises(ConfigError, match="give the events frame"):
        changes_frame(tasks_frame(ev))
    with pytest.raises(ConfigError, match="give the events frame"):
        steps_frame(tasks_frame(ev))


def test_a_resumed_task_keeps_its_latest_changes(tmp_path):
    first = agent_task("a-1", 0, kind="task_failed", files=[
        {"path": "x.py", "status": "added", "insertions": 3, "deletions": 0}])
    again = agent_task("a-1", 5, files=[
        {"path": "y.py", "status": "added", "insertions": 1, "deletions": 0}])
    ev = load_events(write(tmp_path / "e.jsonl", first + again))
    ch = changes_frame(ev)
    assert ch[["path", "status"]].astype(str).values.tolist() == [["y.py", "completed"]]
    assert tasks_frame(ev).iloc[0]["files_changed"] == 1


def test_torn_last_line_keeps_agent_fields(tmp_path):
    events = agent_task("a-1", 0, steps=[{"stepType": "command", "command": "ls", "exitCode": 0}],
                        files=[{"path": "a", "status": "added", "insertions": 1, "deletions": 0}])
    log = write(tmp_path / "e.jsonl", events)
    with open(log, "ab") as fh:
        fh.write(b'{"v":1,"ts":"2026-12-02T00:00:09.000Z","kind":"task_st')
    with pytest.warns(Warning, match="skipped 1 bad line"):
        ev = load_events(log)
    assert len(ev) == len(events)
    assert steps_frame(ev)["command"].tolist() == ["ls"]
    assert changes_frame(ev)["path"].tolist() == ["a"]


def test_wrong_typed_agent_field_is_dropped_not_the_line(tmp_path):
    events = agent_task("a-1", 0, steps=[{"stepType": "command", "command": ["bash", "-lc", "ls"],
                                          "exitCode": 0}])
    with pytest.warns(Warning, match="command"):
        ev = load_events(write(tmp_path / "e.jsonl", events))
    st = steps_frame(ev)
    assert len(st) == 1 and pd.isna(st.iloc[0]["command"]) and st.iloc[0]["exit_code"] == 0


def test_shipped_prices_for_agent_models():
    table = load_pricing()
    per_million = {  # input, cached input, output: USD per 1M tokens
        "gpt-5": (1.25, 0.125, 10), "gpt-5-codex": (1.25, 0.125, 10),
        "gpt-5-mini": (0.25, 0.025, 2), "gpt-5.1": (1.25, 0.125, 10),
        "gpt-5.1-codex": (1.25, 0.125, 10), "gpt-5.1-codex-mini": (0.25, 0.025, 2),
        "codex-mini-latest": (1.5, 0.375, 6), "claude-sonnet-4-5": (3, 0.3, 15),
        "claude-opus-4-1": (15, 1.5, 75), "claude-opus-4-5": (5, 0.5, 25),
        "claude-haiku-4-5": (1, 0.1, 5)}
    for model, (pin, pcached, pout) in per_million.items():
        price = table.lookup(model)
        assert price is not None and price.model == model, model
        assert (price.input * 1000, price.cached_input * 1000, price.output * 1000) == pytest.approx(
            (pin, pcached, pout)), model
    assert table.lookup("openai/gpt-5-codex").provider == "openai"
    assert table.lookup("claude-sonnet-4-5-20250929").model == "claude-sonnet-4-5"
    assert table.lookup("claude-opus-4-1-20250805").model == "claude-opus-4-1"
    assert table.lookup("claude-sonnet-4-20250514").model == "claude-sonnet-4"
    assert table.lookup("gpt-5-2025-08-07").model == "gpt-5"
    assert table.lookup("gpt-4o-2024-08-06").model == "gpt-4o"
    # another suffix is another model: no price rather than a wrong one
    for other in ("gpt-5.9", "gpt-5-pro", "gpt-5-codex-ultra", "claude-opus-4-7"):
        assert table.lookup(other) is None, other
    assert table.lookup("stub").cached_input is None and table.lookup("stub").cached == 0.001
    assert table.lookup("gpt-5").cost(10_000, 1_000, cached_in=4_000) == pytest.approx(
        (6_000 * 1.25 + 4_000 * 0.125 + 1_000 * 10) / 1e6)


def test_shipped_prices_say_what_is_unconfirmed_and_the_cache_write_price():
    import yaml

    from codexflow_nb.analysis.pricing import DEFAULT_PRICING

    data = yaml.safe_load(DEFAULT_PRICING.read_text())
    openai, anthropic = data["providers"]["openai"], data["providers"]["anthropic"]
    unconfirmed = {m for m, e in openai.items() if "UNCONFIRMED" in e.get("note", "")}
    assert unconfirmed == {"gpt-5", "gpt-5.1-codex", "gpt-5.1-codex-max", "gpt-5.1-codex-mini"}
    for model, entry in anthropic.items():  # 5-minute cache writes: 1.25x input
        assert entry["cache_write"] == pytest.approx(1.25 * entry["input"]), model
    assert load_pricing().lookup("claude-sonnet-4-5").input == 0.003  # the loader takes the file


def test_cached_input_must_be_a_price(tmp_path):
    bad = write_text(tmp_path / "p.yaml", "providers:\n  acme:\n"
                                          "    rocket: {input: 1, output: 2, cached_input: -1}\n")
    with pytest.raises(ConfigError) as exc:
        load_pricing(bad)
    assert any("rocket.cached_input: expected a number >= 0" in p for p in exc.value.problems)
    frame = load_pricing().to_frame()
    assert "cached_input" in frame.columns

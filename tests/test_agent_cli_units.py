"""Unit tests of the agent-CLI adapters, settings and diff summaries (no CLI needed)."""

from __future__ import annotations

import json

import pytest

from codexflow_nb.errors import ConfigError
from codexflow_nb.runtimes.adapters import ClaudeAdapter, CodexAdapter, Turn, claude_tools
from codexflow_nb.runtimes.agent_cli import AgentCliRuntime
from codexflow_nb.runtimes.binaries import CODEX, find_binary, parse_version
from codexflow_nb.workspaces import split_diff, summarise_diff

CARD = {"runtime": {"model": "card-model", "codex_cli": {"profile": "p", "config": {"k": 1}},
                    "claude_code": {"permission_mode": "plan"}},
        "capabilities": {"detail": {"tools": {"allowed": ["read_file", "shell", "python"],
                                              "restricted": ["write_file", "git"]}}}}


def test_codex_command_takes_card_then_flags(tmp_path) -> None:
    rt = AgentCliRuntime("codex-cli", model="flag-model", config_args=["x=2"],
                         env={"CODEX_HOME": str(tmp_path)})
    argv = CodexAdapter().command("codex", rt.settings(CARD), "/w", git_repo=True)
    assert argv[:5] == ["codex", "exec", "--json", "-C", "/w"]
    assert "--skip-git-repo-check" not in argv and argv[-1] == "-"
    assert argv[argv.index("-m") + 1] == "flag-model" and argv[argv.index("-p") + 1] == "p"
    assert "k=1" in argv and argv.index("k=1") < argv.index("x=2")  # flags come last
    assert "-s" not in argv  # a profile chooses its own sandbox
    bare = CodexAdapter().command("codex", rt.settings({"runtime": {}}), "/w", git_repo=False)
    assert "--skip-git-repo-check" in bare and bare[bare.index("-s") + 1] == "workspace-write"


def test_claude_command_maps_card_tools() -> None:
    rt = AgentCliRuntime("claude-code")
    argv = ClaudeAdapter().command("claude", rt.settings(CARD), "/w", git_repo=True)
    assert argv[argv.index("--permission-mode") + 1] == "plan"
    allowed = argv[argv.index("--allowedTools") + 1].split(",")
    assert allowed == ["Read", "Bash", "Bash(python:*)", "Bash(python3:*)"]
    # whole tools only: Write/Edit denied, the Bash(git:*) pattern stays in the prompt
    assert argv[argv.index("--disallowedTools") + 1] == "Write,Edit"
    assert claude_tools(["Bash(npm:*)", "web"]) == ["Bash(npm:*)", "WebFetch", "WebSearch"]


def feed(adapter, lines):
    chunks, steps = [], []
    turn = Turn(on_chunk=chunks.append, on_step=steps.append)
    for line in lines:
        adapter.feed(line, turn)
    return turn, chunks, steps


def test_codex_stream_to_chunks_steps_usage_and_failures() -> None:
    turn, chunks, steps = feed(CodexAdapter(), [
        {"type": "thread.started", "thread_id": "t1"},
        {"type": "item.completed", "item": {"id": "0", "type": "error", "message": "metadata"}},
        {"type": "item.started", "item": {"id": "1", "type": "command_execution"}},
        {"type": "item.completed", "item": {"id": "1", "type": "command_execution",
                                            "command": "ls", "exit_code": 2, "status": "failed",
                                            "aggregated_output": "x" * 500}},
        {"type": "item.completed", "item": {"id": "2", "type": "file_change", "status": "completed",
                                            "changes": [{"path": "a.py", "kind": "add"}]}},
        {"type": "item.completed", "item": {"id": "3", "type": "agent_message", "text": "Done.\nMore"}},
        {"type": "turn.completed", "usage": {"input_tokens": 10, "cached_input_tokens": 4,
                                             "output_tokens": 3, "reasoning_output_tokens": 1}}])
    assert turn.finished and turn.error is None and turn.final == "Done.\nMore"
    assert chunks == ["Done.\nMore\n"]
    assert [s["stepType"] for s in steps] == ["warning", "command", "file_change"]
    assert steps[1]["exitCode"] == 2 and "durationMs" in steps[1] and len(steps[1]["output"]) == 303
    assert turn.usage == {"tokensIn": 10, "tokensOut": 3, "cachedTokensIn": 4, "reasoningTokens": 1}
    failed, _, _ = feed(CodexAdapter(), [{"type": "turn.failed", "error": {"message": "quota"}}])
    assert failed.error == "quota" and not failed.finished


def test_claude_stream_to_steps_and_error_results() -> None:
    turn, chunks, steps = feed(ClaudeAdapter(), [
        {"type": "system", "subtype": "init", "session_id": "s", "model": "claude-x"},
        {"type": "assistant", "message": {"content": [
            {"type": "tool_use", "id": "u1", "name": "Bash", "input": {"command": "false"}},
            {"type": "tool_use", "id": "u2", "name": "Edit", "input": {"file_path": "/w/a.py"}}]}},
        {"type": "user", "message": {"content": [
            {"type": "tool_result", "tool_use_id": "u1", "is_error": True, "content": "Exit code 3\nno"},
            {"type": "tool_result", "tool_use_id": "u2", "content": [{"type": "text", "text": "ok"}]}]}},
        {"type": "assistant", "message": {"content": [{"type": "text", "text": "All done"}]}},
        {"type": "result", "subtype": "success", "is_error": False, "result": "All done",
         "usage": {"input_tokens": 5, "cache_read_input_tokens": 7,
                   "cache_creation_input_tokens": 1, "output_tokens": 2}}])
    assert turn.model == "claude-x" and turn.final == "All done" and chunks == ["All done\n"]
    assert steps[0] == {**steps[0], "stepType": "command", "command": "false", "exitCode": 3,
                        "status": "failed"}
    assert steps[1]["stepType"] == "file_change" and steps[1]["files"] == ["/w/a.py"]
    # no cache_creation split in this stream: writes counted, no 1-hour share claimed
    assert turn.usage == {"tokensIn": 13, "tokensOut": 2, "cachedTokensIn": 7,
                          "cacheWriteTokensIn": 1}
    bad, _, _ = feed(ClaudeAdapter(), [{"type": "result", "subtype": "success", "is_error": True,
                                        "result": "API Error: 500 boom"}])
    assert bad.error == "API Error: 500 boom"


# What Claude Code 2.1.197 printed (stream-json, --verbose) for a two-request task against the
# scripted Messages server answering each request with input 1000, cache reads 200, cache
# writes 150 (5 minutes) + 50 (1 hour) and output 300 (ids, uuids and some keys trimmed). Each
# assistant line carries its request's usage as of message_start (output_tokens 1: the
# output comes later, in message_delta); the result line sums the requests, the split by
# lifetime included, and Claude Code's own total_cost_usd prices the writes 1.25x / 2x input.
_WRITES = {"input_tokens": 1000, "cache_read_input_tokens": 200,
           "cache_creation_input_tokens": 200,
           "cache_creation": {"ephemeral_5m_input_tokens": 150, "ephemeral_1h_input_tokens": 50},
           "output_tokens": 1}
CLAUDE_STREAM_WITH_CACHE_WRITES = [
    {"type": "system", "subtype": "init", "session_id": "b6e9", "model": "claude-sonnet-4-5"},
    {"type": "assistant", "message": {
        "id": "msg_75c3", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [{"type": "tool_use", "id": "toolu_7786", "name": "Bash",
                     "input": {"command": "echo hi", "description": "Run echo hi"}}],
        "stop_reason": None, "usage": _WRITES}, "session_id": "b6e9"},
    {"type": "user", "message": {"role": "user", "content": [
        {"tool_use_id": "toolu_7786", "type": "tool_result", "content": "hi", "is_error": False}]},
     "session_id": "b6e9", "tool_use_result": {"stdout": "hi", "stderr": ""}},
    {"type": "assistant", "message": {
        "id": "msg_1fdd", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "done"}], "stop_reason": None, "usage": _WRITES},
     "session_id": "b6e9"},
    {"type": "result", "subtype": "success", "is_error": False, "num_turns": 2,
     "result": "done", "stop_reason": "end_turn", "session_id": "b6e9",
     "total_cost_usd": 0.016845,
     "usage": {"input_tokens": 2000, "cache_creation_input_tokens": 400,
               "cache_read_input_tokens": 400, "output_tokens": 600,
               "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
               "service_tier": "standard",
               "cache_creation": {"ephemeral_1h_input_tokens": 100,
                                  "ephemeral_5m_input_tokens": 300},
               "inference_geo": "", "iterations": [], "speed": "standard"},
     "modelUsage": {"claude-sonnet-4-5": {
         "inputTokens": 2000, "outputTokens": 600, "cacheReadInputTokens": 400,
         "cacheCreationInputTokens": 400, "costUSD": 0.016845}}},
]


def test_claude_usage_splits_cache_reads_and_writes_from_a_real_stream() -> None:
    turn, _, steps = feed(ClaudeAdapter(), CLAUDE_STREAM_WITH_CACHE_WRITES)
    assert turn.finished and turn.error is None and [s["stepType"] for s in steps] == ["command"]
    # tokensIn: every input token, as for Codex (input + cache reads + cache writes); the
    # reads and the writes are parts of it, the 1-hour writes a part of the writes
    assert turn.usage == {"tokensIn": 2800, "tokensOut": 600, "cachedTokensIn": 400,
                          "cacheWriteTokensIn": 400, "cacheWrite1hTokensIn": 100}
    # the assistant lines' usage is not summed into it (the result's is the run's)
    only_messages, _, _ = feed(ClaudeAdapter(), CLAUDE_STREAM_WITH_CACHE_WRITES[:-1])
    assert only_messages.usage is None
    # priced with the shipped table this is what Claude Code itself reported
    from codexflow_nb.analysis import load_pricing

    price = load_pricing().lookup(turn.model)
    u = turn.usage
    cost = price.cost(u["tokensIn"], u["tokensOut"], u["cachedTokensIn"],
                      u["cacheWriteTokensIn"], u["cacheWrite1hTokensIn"])
    assert cost == pytest.approx(CLAUDE_STREAM_WITH_CACHE_WRITES[-1]["total_cost_usd"], rel=1e-12)


@pytest.mark.parametrize("usage, expected", [
    # only the split: the writes are its sum
    ({"input_tokens": 10, "cache_creation": {"ephemeral_5m_input_tokens": 3,
                                             "ephemeral_1h_input_tokens": 4}},
     {"tokensIn": 17, "tokensOut": 0, "cachedTokensIn": 0, "cacheWriteTokensIn": 7,
      "cacheWrite1hTokensIn": 4}),
    # a 1-hour share larger than the writes is cut to them; junk counts are 0
    ({"input_tokens": "x", "output_tokens": True, "cache_creation_input_tokens": 5,
      "cache_creation": {"ephemeral_1h_input_tokens": 9}},
     {"tokensIn": 5, "tokensOut": 0, "cachedTokensIn": 0, "cacheWriteTokensIn": 5,
      "cacheWrite1hTokensIn": 5}),
    (None, {"tokensIn": 0, "tokensOut": 0, "cachedTokensIn": 0, "cacheWriteTokensIn": 0}),
])
def test_claude_usage_edge_cases(usage, expected) -> None:
    from codexflow_nb.runtimes.adapters import claude_usage

    assert claude_usage(usage) == expected


def test_diff_summary_counts_binary_and_statuses() -> None:
    z = "0" * 40
    raw = (f":100644 100644 {z} {z} M\0a.py\0:000000 100644 {z} {z} A\0img.png\0"
           f":100644 000000 {z} {z} D\0old.txt\0")
    numstat = "3\t1\ta.py\0-\t-\timg.png\0" + "0\t4\told.txt\0"
    s = summarise_diff(raw + numstat)
    assert s["insertions"] == 3 and s["deletions"] == 5
    assert [(f["path"], f["status"]) for f in s["files"]] == [
        ("a.py", "modified"), ("img.png", "added"), ("old.txt", "deleted")]
    assert s["files"][1]["binary"] is True


def test_versions_and_missing_binaries(tmp_path) -> None:
    assert parse_version("codex-cli 0.169.0") == (0, 169, 0)
    assert parse_version("2.1.197 (Claude Code)") == (2, 1, 197)
    fake = tmp_path / "codex"
    fake.write_text("#!/bin/sh\necho 'codex-cli 1.2.0'\n")
    fake.chmod(0o755)
    with pytest.raises(ConfigError, match=r"version 1.2.0, supported >=0.169.0,<1.0.0"):
        find_binary(CODEX, str(fake))
    with pytest.raises(ConfigError, match="not found"):
        find_binary(CODEX, str(tmp_path / "missing"))
    json.dumps(CODEX.install)


def test_one_diff_gives_the_summary_and_the_patch() -> None:
    z = "0" * 40
    stats = f":100644 100644 {z} {z} M\0:odd\0:000000 100644 {z} {z} A\0b\tc\0"
    stats += "1\t0\t:odd\0-\t-\tb\tc\0"
    patch = b"diff --git a/:odd b/:odd\n+x\0not a record\n"
    assert split_diff(stats.encode() + b"\0" + patch) == (stats, patch)
    assert split_diff(b"") == ("", b"")
    s = summarise_diff(stats)
    assert [(f["path"], f["status"]) for f in s["files"]] == [(":odd", "modified"),
                                                              ("b\tc", "added")]

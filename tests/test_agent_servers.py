"""The scripted model servers of ``agent_servers``: on their own over HTTP, then with the real
Codex CLI and Claude Code run directly (``agent_cli`` tests, skipped when a binary is missing).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from agent_servers import (
    CLAUDE_BIN,
    CODEX_BIN,
    MessagesServer,
    ResponsesServer,
    claude_env,
    codex_env,
    codex_home,
    parse_script,
    require_bin,
    split_chunks,
)

# skipped when a binary is missing; failed instead with CODEXFLOW_REQUIRE_AGENT_CLIS=1
needs_codex = pytest.mark.usefixtures("codex_bin")
needs_claude = pytest.mark.usefixtures("claude_bin")

USAGE = (1000, 200, 50, 7)
TWO_LINES = ("Make a file.\n@shell: echo hi > f.txt\n@shell: echo more >> f.txt\n"
             "@usage: 1000 200 50 7\n@say: All done. Two lines are written.")


# -- helpers --------------------------------------------------------------------------------
def _post(url: str, doc: dict[str, Any], headers: dict[str, str] | None = None
          ) -> tuple[int, str, list[tuple[str, dict[str, Any]]]]:
    """POST JSON; the status, content type and the SSE events (name, data) of the answer."""
    request = urllib.request.Request(url, json.dumps(doc).encode(), method="POST",
                                     headers={"content-type": "application/json",
                                              **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            status, kind, body = answer.status, answer.headers["content-type"], answer.read()
    except urllib.error.HTTPError as err:
        status, kind, body = err.code, err.headers["content-type"], err.read()
    events = []
    for block in body.decode().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in lines:
            events.append((lines.get("event", ""), json.loads(lines["data"])))
    return status, kind, events if "event-stream" in kind else [("json", json.loads(body))]


def _lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


@dataclass
class Run:
    """One finished CLI process: exit code, output, its pid (a session leader, as it was
    started with ``start_new_session``) and the JSON lines of its stdout."""

    returncode: int
    stdout: str
    stderr: str
    pid: int
    events: list[dict[str, Any]]


def _run(args: list[str], prompt: str | None, env: dict[str, str], cwd: Path | None = None
         ) -> Run:
    with subprocess.Popen(args, stdin=subprocess.PIPE if prompt is not None else subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                          cwd=cwd, start_new_session=True) as proc:
        try:
            stdout, stderr = proc.communicate(prompt, timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    return Run(proc.returncode, stdout, stderr, proc.pid, _lines(stdout))


def run_codex(tmp_path: Path, server: ResponsesServer, prompt: str, *flags: str,
              **home: Any) -> Run:
    """``codex exec --json`` in ``tmp_path/work`` with the prompt on stdin."""
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    env = codex_env(codex_home(tmp_path, server, **home))
    return _run([CODEX_BIN, "exec", "--json", "--skip-git-repo-check", "-C", str(work), *flags,
                 "-"], prompt, env)


ACCEPT_BASH = ("--permission-mode", "acceptEdits", "--allowedTools", "Bash")


def run_claude(tmp_path: Path, server: MessagesServer, prompt: str, *flags: str,
               as_argument: bool = False, env_extra: dict[str, str] | None = None,
               permissions: tuple[str, ...] = ACCEPT_BASH) -> Run:
    """``claude -p --output-format stream-json --verbose`` in ``tmp_path/work`` with the
    prompt on stdin (or as the last argument)."""
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    env = {**claude_env(tmp_path, server), **(env_extra or {})}
    args = [CLAUDE_BIN, "-p", "--output-format", "stream-json", "--verbose", *permissions, *flags]
    if as_argument:  # after "--": --allowedTools takes every word up to the next option
        return _run([*args, "--", prompt], None, env, work)
    return _run(args, prompt, env, work)


def _items(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """Codex: the completed items of one type."""
    return [e["item"] for e in events
            if e.get("type") == "item.completed" and e["item"].get("type") == kind]


def _blocks(events: list[dict[str, Any]], role: str, kind: str) -> list[dict[str, Any]]:
    """Claude: the content blocks of one type in the ``assistant`` / ``user`` lines."""
    return [block for e in events if e.get("type") == role
            for block in e["message"]["content"]
            if isinstance(block, dict) and block.get("type") == kind]


@pytest.fixture
def codex_bin() -> str:
    return require_bin("codex")


@pytest.fixture
def claude_bin() -> str:
    return require_bin("claude")


@pytest.fixture
def responses_server():
    with ResponsesServer() as server:
        yield server


@pytest.fixture
def messages_server():
    with MessagesServer() as server:
        yield server


# -- the script -----------------------------------------------------------------------------
def test_parse_script_reads_directives_from_the_last_prompt_with_any():
    script = parse_script(["earlier @shell: no", "Task.\n@shell: echo a\n@write: x/y.txt hi there\n"
                           "@shell: echo b\n@say: Done. Really.\n@sleep: 0.5\n@usage: 1 2\n"
                           "@chunks: 3", "<system-reminder>\nctx\n</system-reminder>"])
    assert script.steps == [("shell", "echo a"), ("write", "x/y.txt hi there"),
                            ("shell", "echo b")]
    assert script.shell == ["echo a", "echo b"]
    assert (script.say, script.sleep, script.usage, script.chunks) == (
        "Done. Really.", 0.5, (1, 2, 20, 5), 3)
    question = "Just answer this question, please, in full detail."
    plain = parse_script([question])
    assert plain.final_text == "done: " + question[:40]
    assert plain.steps == [] and plain.fail is None


def test_parse_script_reads_cache_writes_by_lifetime():
    assert parse_script(["Task.\n@cache_write: 150 50"]).cache_write == (150, 50)
    assert parse_script(["Task.\n@cache_write: 7"]).cache_write == (7, 0)
    assert parse_script(["Task."]).cache_write == (0, 0)


def test_split_chunks():
    assert split_chunks("abcdefghij", 3) == ["abcd", "efg", "hij"]
    assert split_chunks("ab", 5) == ["a", "b"]
    assert "".join(split_chunks("One two three.", 4)) == "One two three."


# -- the servers over plain HTTP ------------------------------------------------------------
def test_responses_server_walks_the_script_by_counting_tool_outputs(responses_server):
    url = responses_server.url + "/v1/responses"
    prompt = "Go.\n@shell: echo 1\n@shell: echo 2\n@usage: 7 1 3 2\n@chunks: 3\n@say: Fine."
    user = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": prompt}]}
    tools = [{"type": "function", "name": "exec_command"}]
    calls = []
    for step in range(3):
        done = [{"type": "function_call_output", "call_id": c, "output": "ok"} for c in calls]
        status, kind, events = _post(url, {"model": "m", "stream": True, "tools": tools,
                                           "input": [user, *done]})
        assert status == 200 and kind.startswith("text/event-stream")
        names = [name for name, _ in events]
        assert names[0] == "response.created" and names[-1] == "response.completed"
        assert events[-1][1]["response"]["usage"] == {
            "input_tokens": 7, "input_tokens_details": {"cached_tokens": 1}, "output_tokens": 3,
            "output_tokens_details": {"reasoning_tokens": 2}, "total_tokens": 10}
        item = [doc["item"] for name, doc in events if name == "response.output_item.done"][0]
        if step < 2:
            assert item["type"] == "function_call" and item["name"] == "exec_command"
            assert json.loads(item["arguments"]) == {"cmd": f"echo {step + 1}"}
            calls.append(item["call_id"])
        else:
            assert item["content"][0]["text"] == "Fine."
            deltas = [doc["delta"] for name, doc in events if name == "response.output_text.delta"]
            assert len(deltas) == 3 and "".join(deltas) == "Fine."
    assert len(responses_server.model_requests()) == 3


def test_responses_server_failures_and_other_paths():
    with ResponsesServer() as server:
        status, _, events = _post(server.url + "/v1/responses", {
            "stream": True, "input": [{"role": "user", "content": "x\n@fail: it broke"}]})
        assert status == 200 and [n for n, _ in events] == ["response.created", "response.failed"]
        assert events[-1][1]["response"]["error"] == {"code": "server_error", "message": "it broke"}
        with urllib.request.urlopen(server.url + "/v1/models", timeout=5) as answer:
            assert answer.status == 200 and "data" in json.loads(answer.read())
        assert [r["path"] for r in server.requests] == ["/v1/responses", "/v1/models"]
    with ResponsesServer(fail_status=500) as server:
        status, _, events = _post(server.url + "/v1/responses", {
            "stream": True, "input": [{"role": "user", "content": "x\n@fail: it broke"}]})
        assert status == 500 and events[0][1]["error"]["message"] == "it broke"


def test_messages_server_tool_use_text_and_errors(messages_server):
    url = messages_server.url + "/v1/messages?beta=true"
    prompt = "Go.\n@shell: ls\n@chunks: 2\n@usage: 5 4 3 0\n@say: Listed."
    user = {"role": "user", "content": [
        {"type": "text", "text": "<system-reminder>\nnoise\n</system-reminder>\n"},
        {"type": "text", "text": prompt}]}
    status, _, events = _post(url, {"model": "c", "stream": True, "messages": [user]})
    assert status == 200
    names = [n for n, _ in events]
    assert names == ["message_start", "content_block_start", "content_block_delta",
                     "content_block_stop", "message_delta", "message_stop"]
    assert events[1][1]["content_block"]["name"] == "Bash"
    assert json.loads(events[2][1]["delta"]["partial_json"])["command"] == "ls"
    assert events[4][1]["delta"]["stop_reason"] == "tool_use"
    tool_id = events[1][1]["content_block"]["id"]
    after = [user, {"role": "assistant", "content": [{"type": "tool_use", "id": tool_id,
                                                       "name": "Bash", "input": {}}]},
             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_id,
                                           "content": "a.txt"}]}]
    status, _, events = _post(url, {"model": "c", "stream": True, "messages": after})
    deltas = [d["delta"]["text"] for n, d in events if n == "content_block_delta"]
    assert deltas == ["List", "ed."]
    assert events[0][1]["message"]["usage"]["input_tokens"] == 5
    assert events[0][1]["message"]["usage"]["cache_read_input_tokens"] == 4
    assert events[-2][1]["usage"] == {"output_tokens": 3}
    assert events[-2][1]["delta"]["stop_reason"] == "end_turn"
    # without stream: one JSON message
    status, _, [(_, whole)] = _post(url, {"model": "c", "messages": after})
    assert whole["content"] == [{"type": "text", "text": "Listed."}]
    # @fail: HTTP 500 with an Anthropic error body
    status, _, [(_, error)] = _post(url, {"stream": True, "messages": [
        {"role": "user", "content": "x\n@fail: overloaded today"}]})
    assert status == 500 and error == {"type": "error", "error": {
        "type": "api_error", "message": "overloaded today"}}
    request = urllib.request.Request(messages_server.url + "/", method="HEAD")
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert answer.status == 200
    assert [r["method"] for r in messages_server.requests] == ["POST"] * 4 + ["HEAD"]


def test_sleep_delays_each_model_answer(responses_server):
    started = time.monotonic()
    status, _, events = _post(responses_server.url + "/v1/responses", {
        "stream": True, "input": [{"role": "user", "content": "x\n@sleep: 0.6"}]})
    assert status == 200 and events[-1][0] == "response.completed"
    assert time.monotonic() - started >= 0.6


# -- the real Codex CLI ---------------------------------------------------------------------
@pytest.mark.agent_cli
@needs_codex
def test_codex_runs_scripted_shell_commands(tmp_path, responses_server):
    run = run_codex(tmp_path, responses_server, TWO_LINES)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "work" / "f.txt").read_text() == "hi\nmore\n"
    commands = _items(run.events, "command_execution")
    assert [c["command"] for c in commands] == ["/bin/bash -lc 'echo hi > f.txt'",
                                                "/bin/bash -lc 'echo more >> f.txt'"]
    assert [(c["exit_code"], c["status"]) for c in commands] == [(0, "completed")] * 2
    assert [m["text"] for m in _items(run.events, "agent_message")] == [
        "All done. Two lines are written."]
    assert run.events[0]["type"] == "thread.started" and run.events[-1]["type"] == "turn.completed"
    inp, cached, out, reasoning = USAGE
    assert run.events[-1]["usage"] == {"input_tokens": 3 * inp, "cached_input_tokens": 3 * cached,
                                   "cache_write_input_tokens": 0, "output_tokens": 3 * out,
                                   "reasoning_output_tokens": 3 * reasoning}
    requests = responses_server.model_requests()
    assert len(requests) == 3
    offered = {t.get("name") for t in requests[0]["json"]["tools"]}
    assert "exec_command" in offered
    assert [i["type"] for i in requests[2]["json"]["input"][-4:]] == [
        "function_call", "function_call_output"] * 2


@pytest.mark.agent_cli
@needs_codex
def test_codex_plain_answer_and_failed_command(tmp_path, responses_server):
    run = run_codex(tmp_path, responses_server, "What is two plus two? Answer briefly.")
    assert run.returncode == 0
    assert [m["text"] for m in _items(run.events, "agent_message")] == [
        "done: What is two plus two? Answer briefly."]
    assert _items(run.events, "command_execution") == []
    run = run_codex(tmp_path, responses_server, "x\n@shell: echo oops; exit 3")
    [command] = _items(run.events, "command_execution")
    assert (command["exit_code"], command["status"], command["aggregated_output"]) == (
        3, "failed", "oops\n")
    assert run.events[-1]["type"] == "turn.completed"


@pytest.mark.agent_cli
@needs_codex
def test_codex_failure_ends_the_turn_at_once(tmp_path, responses_server):
    started = time.monotonic()
    run = run_codex(tmp_path, responses_server, "x\n@fail: the model exploded")
    assert time.monotonic() - started < 30
    assert run.returncode == 1
    assert run.events[-2:] == [
        {"type": "error", "message": "stream disconnected before completion: the model exploded"},
        {"type": "turn.failed", "error": {
            "message": "stream disconnected before completion: the model exploded"}}]
    assert len(responses_server.model_requests()) == 1


@pytest.mark.agent_cli
@needs_codex
def test_codex_non_retryable_failure_code(tmp_path):
    with ResponsesServer(fail_code="invalid_prompt") as server:
        run = run_codex(tmp_path, server, "x\n@fail: bad prompt", retries=5)
        assert run.returncode == 1
        assert run.events[-1] == {"type": "turn.failed", "error": {"message": "bad prompt"}}
        assert len(server.model_requests()) == 1


@pytest.mark.agent_cli
@needs_codex
def test_codex_json_has_no_message_deltas(tmp_path, responses_server):
    text = "One two three four five six seven eight."
    run = run_codex(tmp_path, responses_server, f"x\n@chunks: 4\n@say: {text}")
    assert run.returncode == 0
    assert [m["text"] for m in _items(run.events, "agent_message")] == [text]
    # codex exec --json prints whole items only: no item.updated / delta lines for messages
    assert {e["type"] for e in run.events} <= {"thread.started", "turn.started", "item.started",
                                           "item.completed", "turn.completed"}


@pytest.mark.agent_cli
@needs_codex
def test_codex_file_change_with_apply_patch(tmp_path, responses_server):
    run = run_codex(tmp_path, responses_server, "x\n@write: notes/a.txt hello world",
                             model="gpt-5.5")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "work" / "notes" / "a.txt").read_text() == "hello world\n"
    [change] = _items(run.events, "file_change")
    assert change["status"] == "completed"
    assert change["changes"] == [{"path": str(tmp_path / "work" / "notes" / "a.txt"),
                                  "kind": "add"}]
    assert _items(run.events, "error") == []  # gpt-5.5 has model metadata; gpt-5-codex has not


@pytest.mark.agent_cli
@needs_codex
@pytest.mark.parametrize("sandbox, writes", [("read-only", False), ("workspace-write", True),
                                             ("danger-full-access", True)])
def test_codex_sandbox_modes(tmp_path, responses_server, sandbox, writes):
    run = run_codex(tmp_path, responses_server, "x\n@shell: echo hi > f.txt",
                             sandbox=sandbox, approval="never")
    assert run.returncode == 0
    assert (tmp_path / "work" / "f.txt").exists() is writes
    if not writes:  # the sandbox denial goes back to the model; no command item is printed
        output = responses_server.model_requests()[-1]["json"]["input"][-1]["output"]
        assert "Read-only file system" in output


@pytest.mark.agent_cli
@needs_codex
def test_codex_command_runs_in_its_own_session(tmp_path, responses_server):
    run = run_codex(tmp_path, responses_server, "x\n@shell: ps -o pid=,sid= -p $$")
    [command] = _items(run.events, "command_execution")
    pid, sid = map(int, command["aggregated_output"].split())
    # codex (its node launcher and the native binary) share the session of run.pid; the
    # command's shell leads a session of its own, out of reach of killpg(codex)
    assert sid == pid and sid != run.pid


@pytest.mark.agent_cli
@needs_codex
def test_codex_serves_concurrent_processes(tmp_path, responses_server):
    procs = []
    for n in range(3):
        base = tmp_path / f"run{n}"
        (base / "work").mkdir(parents=True)
        env = codex_env(codex_home(base, responses_server))
        procs.append(subprocess.Popen(
            [CODEX_BIN, "exec", "--json", "--skip-git-repo-check", "-C", str(base / "work"), "-"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=env, start_new_session=True))
    try:
        for n, proc in enumerate(procs):
            proc.stdin.write(f"Run {n}.\n@shell: echo {n} > n.txt\n@sleep: 0.3\n"
                             f"@say: finished {n}")
            proc.stdin.close()
        for n, proc in enumerate(procs):
            stdout = proc.stdout.read()
            assert proc.wait(60) == 0
            assert [m["text"] for m in _items(_lines(stdout), "agent_message")] == [
                f"finished {n}"]
            assert (tmp_path / f"run{n}" / "work" / "n.txt").read_text() == f"{n}\n"
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            proc.stdout.close()
            proc.stderr.close()
    assert len(responses_server.model_requests()) == 6


# -- the real Claude Code -------------------------------------------------------------------
@pytest.mark.agent_cli
@needs_claude
def test_claude_runs_scripted_shell_commands(tmp_path, messages_server):
    run = run_claude(tmp_path, messages_server, TWO_LINES)  # prompt on stdin
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "work" / "f.txt").read_text() == "hi\nmore\n"
    assert run.events[0]["type"] == "system" and run.events[0]["subtype"] == "init"
    assert "Bash" in run.events[0]["tools"]
    uses = _blocks(run.events, "assistant", "tool_use")
    assert [(u["name"], u["input"]["command"]) for u in uses] == [
        ("Bash", "echo hi > f.txt"), ("Bash", "echo more >> f.txt")]
    results = _blocks(run.events, "user", "tool_result")
    assert [r["tool_use_id"] for r in results] == [u["id"] for u in uses]
    assert [r["is_error"] for r in results] == [False, False]
    assert [t["text"] for t in _blocks(run.events, "assistant", "text")] == [
        "All done. Two lines are written."]
    result = run.events[-1]
    assert (result["type"], result["subtype"], result["is_error"], result["num_turns"]) == (
        "result", "success", False, 3)
    assert result["result"] == "All done. Two lines are written."
    inp, cached, out, _ = USAGE
    assert (result["usage"]["input_tokens"], result["usage"]["cache_read_input_tokens"],
            result["usage"]["output_tokens"]) == (3 * inp, 3 * cached, 3 * out)
    assert [r["query"] for r in messages_server.model_requests()] == ["beta=true"] * 3


@pytest.mark.agent_cli
@needs_claude
def test_claude_prompt_as_argument_and_failed_command(tmp_path, messages_server):
    run = run_claude(tmp_path, messages_server, "Answer briefly, please.", as_argument=True)
    assert run.returncode == 0
    assert run.events[-1]["result"] == "done: Answer briefly, please."
    # without "--" the variadic --allowedTools swallows the prompt
    swallowed = _run([CLAUDE_BIN, "-p", "--allowedTools", "Bash", "Answer briefly."], None,
                     claude_env(tmp_path, messages_server), tmp_path / "work")
    assert swallowed.returncode == 1
    assert "Input must be provided either through stdin or as a prompt argument" in \
        swallowed.stderr
    run = run_claude(tmp_path, messages_server, "x\n@shell: echo oops; exit 3")
    [result] = _blocks(run.events, "user", "tool_result")
    assert result["is_error"] is True and result["content"] == "Exit code 3\noops"
    assert run.events[-1]["is_error"] is False


@pytest.mark.agent_cli
@needs_claude
def test_claude_failure_ends_the_turn_at_once(tmp_path, messages_server):
    started = time.monotonic()
    run = run_claude(tmp_path, messages_server, "x\n@fail: the model exploded")
    assert time.monotonic() - started < 30
    assert run.returncode == 1
    result = run.events[-1]
    assert (result["type"], result["subtype"], result["is_error"], result["api_error_status"]) \
        == ("result", "success", True, 500)
    assert result["result"].startswith("API Error: 500 the model exploded.")
    assert len(messages_server.model_requests()) == 1


@pytest.mark.agent_cli
@needs_claude
def test_claude_streams_deltas_with_partial_messages(tmp_path, messages_server):
    text = "One two three four five six seven eight."
    prompt = f"x\n@chunks: 4\n@say: {text}"
    run = run_claude(tmp_path, messages_server, prompt, "--include-partial-messages")
    deltas = [e["event"]["delta"]["text"] for e in run.events if e.get("type") == "stream_event"
              and e["event"]["type"] == "content_block_delta"]
    assert len(deltas) == 4 and "".join(deltas) == text
    assert run.events[-1]["result"] == text
    run = run_claude(tmp_path, messages_server, prompt)
    assert not [e for e in run.events if e.get("type") == "stream_event"]
    assert run.events[-1]["result"] == text


@pytest.mark.agent_cli
@needs_claude
def test_claude_write_tool(tmp_path, messages_server):
    run = run_claude(tmp_path, messages_server, "x\n@write: notes/a.txt hello world")
    assert run.returncode == 0
    assert (tmp_path / "work" / "notes" / "a.txt").read_text() == "hello world\n"
    [use] = _blocks(run.events, "assistant", "tool_use")
    assert use["name"] == "Write"
    assert use["input"] == {"file_path": str(tmp_path / "work" / "notes" / "a.txt"),
                            "content": "hello world\n"}


@pytest.mark.agent_cli
@needs_claude
def test_claude_permission_settings(tmp_path, messages_server):
    prompt = "x\n@shell: python3 -c 'print(6 * 7)'"
    # --allowedTools Bash lets any command run (with acceptEdits, default or plan)
    for mode in ("acceptEdits", "default", "plan"):
        run = run_claude(tmp_path, messages_server, prompt, permissions=(
            "--permission-mode", mode, "--allowedTools", "Bash"))
        assert _blocks(run.events, "user", "tool_result")[0]["content"] == "42", mode
    # without it, commands that are not plain file edits are denied (no prompt in -p mode)
    run = run_claude(tmp_path, messages_server, prompt, permissions=(
        "--permission-mode", "acceptEdits"))
    assert run.events[-1]["permission_denials"][0]["tool_name"] == "Bash"
    # --disallowedTools Bash removes the tool
    run = run_claude(tmp_path, messages_server, prompt, permissions=(
        "--permission-mode", "acceptEdits", "--disallowedTools", "Bash"))
    assert "Bash" not in run.events[0]["tools"]
    assert "No such tool available: Bash" in _blocks(run.events, "user", "tool_result")[0]["content"]


@pytest.mark.agent_cli
@needs_claude
@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root")
def test_claude_bypass_permissions_as_root_needs_is_sandbox(tmp_path, messages_server):
    bypass = ("--permission-mode", "bypassPermissions")
    env = {k: v for k, v in claude_env(tmp_path, messages_server).items() if k != "IS_SANDBOX"}
    (tmp_path / "work").mkdir()
    refused = _run([CLAUDE_BIN, "-p", *bypass, "hi"], None, env, tmp_path / "work")
    assert refused.returncode == 1
    assert "cannot be used with root/sudo privileges" in refused.stderr
    assert messages_server.model_requests() == []
    run = run_claude(tmp_path, messages_server, "x\n@shell: echo ok", permissions=bypass,
                     env_extra={"IS_SANDBOX": "1"})
    assert run.returncode == 0
    assert _blocks(run.events, "user", "tool_result")[0]["content"] == "ok"


@pytest.mark.agent_cli
@needs_claude
def test_claude_command_runs_in_its_own_session(tmp_path, messages_server):
    run = run_claude(tmp_path, messages_server, "x\n@shell: ps -o pid=,sid= -p $$")
    [result] = _blocks(run.events, "user", "tool_result")
    pid, sid = map(int, result["content"].split())
    assert sid == pid and sid != run.pid

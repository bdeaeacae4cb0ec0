"""The notebook views of coding-agent runs (``codex-cli``, ``claude-code``): runtime fields,
live steps, the Changes view with Apply, and the magic's options. Recorded events drive the
state and views without a browser; one test per entry point runs the real Codex CLI against
the scripted local model server of ``agent_servers``."""

from __future__ import annotations

import asyncio
import html
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import codexflow_nb
import codexflow_nb.magic as magic
from codexflow_nb.changes import TaskChanges, run_changes
from codexflow_nb.errors import ConfigError
from codexflow_nb.plan import Plan
from codexflow_nb.runtimes import RUNTIME_NAMES
from codexflow_nb.runtimes.base import Reply, RuntimeCall
from codexflow_nb.widgets import (
    ChangesView,
    LiveView,
    RunPanel,
    RunState,
    changes_bundle,
    changes_html,
    diff_html,
    format_step,
    summary_html,
)
from codexflow_nb.widgets.render import transcript_html, transcript_text
from codexflow_nb.widgets.state import step_level

RUN = "20261202T033106800-4b66f2"
TID = f"{RUN}-000001"
TASK = "make a file\n@shell: echo hi > a.txt\n@shell: false\n@say: Created a.txt"
WS = {"kind": "worktree", "path": f"/r/.git/codexflow/worktrees/{RUN}/coder/{TID}",
      "repo": "/r", "branch": f"codexflow/{RUN}/coder/{TID}",
      "start": "69d8363256436052c5e24e85726cdb376b7aea47"}
CHANGES = {"files": [{"path": "a.txt", "status": "added", "insertions": 1, "deletions": 0}],
           "insertions": 1, "deletions": 0}


def _ev(kind: str, **fields: Any) -> dict[str, Any]:
    base = {"v": 1, "ts": "2026-12-02T03:31:06.800Z", "kind": kind, "runId": RUN,
            "alias": "coder", "agentId": "coder", "taskId": TID, "key": "coder-1", "phase": 0}
    return {**base, **fields}


#: A codex-cli run as the engine reported it (from the live example, trimmed).
RECORDED = [
    {"v": 1, "kind": "run_started", "runId": RUN, "runtime": "codex-cli", "tasks": 1,
     "aliases": {"coder": {"agentId": "coder", "limit": 4}}},
    _ev("task_queued", task=TASK, dependsOn=[], limit=4),
    _ev("task_started", attempt=1, limit=4),
    _ev("task_workspace", workspace=WS),
    _ev("task_step", stepType="warning", message="Model metadata for `gpt-5-codex` not found."),
    _ev("task_step", stepType="command", command="/bin/bash -lc 'echo hi > a.txt'", exitCode=0,
        status="completed", durationMs=2.2),
    _ev("task_step", stepType="command", command="/bin/bash -lc false", exitCode=1,
        status="failed", durationMs=1.6, output="boom: <nope>\n"),
    _ev("task_chunk", seq=1, content="Created a.txt\n"),
    _ev("task_complete", ok=True, attempt=1, ms=691.4, summary="Created a.txt", steps=3,
        usage={"tokensIn": 300, "tokensOut": 60}, workspace=WS, changes=CHANGES),
    {"v": 1, "kind": "run_complete", "runId": RUN, "ok": True, "ms": 693.8,
     "counts": {"completed": 1}},
]


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd,
                          check=True, capture_output=True, text=True).stdout


def make_repo(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    for name, text in files.items():
        (path / name).write_text(text)
    git(path, "add", ".")
    git(path, "commit", "-qm", "init")
    return path


# -- state: events in, plain data out --------------------------------------------------------------

def test_run_state_keeps_steps_messages_workspace_and_changes_in_order() -> None:
    state = RunState(Plan.from_task_map({"coder": [TASK]}))
    for event in RECORDED:
        state.apply(event)
    task = state.tasks["coder-1"]
    assert state.has_workspaces and task.workspace == WS
    assert [s["stepType"] for s in task.steps] == ["warning", "command", "command"]
    assert [step_level(s) for s in task.steps] == ["warning", "ok", "failed"]
    assert task.failed_steps == 1
    # the order the user saw: three steps, then the message
    assert [type(e).__name__ for e in task.log] == ["dict", "dict", "dict", "list"]
    assert task.streamed == "Created a.txt\n" and task.chars == 14
    assert task.changes == CHANGES and task.usage == {"tokensIn": 300, "tokensOut": 60}
    assert task.status == "completed" and state.complete and state.ok
    assert "kind" not in task.steps[0] and "runId" not in task.steps[0]  # kept small

    state.apply(_ev("task_retry", attempt=1, delayMs=10, error={"message": "x"}))
    assert task.steps == [] and task.log == [] and task.chars == 0  # an attempt starts over


def test_step_levels() -> None:
    assert step_level({"stepType": "command", "exitCode": 0}) == "ok"
    assert step_level({"stepType": "command", "exitCode": 2}) == "failed"
    assert step_level({"stepType": "tool", "tool": "Bash", "status": "failed"}) == "failed"
    assert step_level({"stepType": "file_change", "files": ["a"], "status": "completed"}) == "ok"
    assert step_level({"stepType": "warning", "message": "m"}) == "warning"


def test_format_step_has_one_home_shared_with_the_cli() -> None:
    from codexflow_nb.cli import run_cmd

    assert run_cmd.format_step is format_step
    step = RECORDED[5]
    assert format_step(step) == "$ /bin/bash -lc 'echo hi > a.txt' (exit 0, 2 ms)"
    assert format_step({"stepType": "file_change", "files": ["a.py", "b.py"]}) == "edited a.py, b.py"
    # the CLI stays light: formatting a step does not load ipywidgets
    code = ("import sys, codexflow_nb.cli.run_cmd; "
            "print(sorted({'ipywidgets', 'IPython', 'pandas'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_widgets_package_names_load_on_use() -> None:
    import codexflow_nb.widgets as widgets
    import codexflow_nb.widgets.dashboard  # noqa: F401  (the submodule does not shadow the function)

    assert callable(codexflow_nb.dashboard) and codexflow_nb.dashboard is widgets.dashboard
    assert sorted(widgets.__all__) == sorted(widgets._NAMES)
    assert all(getattr(widgets, name) is not None for name in widgets.__all__)
    with pytest.raises(AttributeError):
        widgets.nothing_here  # noqa: B018


# -- live steps in the renderings --------------------------------------------------------------------

def test_transcript_shows_messages_and_steps_with_exit_codes_and_failures_marked() -> None:
    state = RunState()
    for event in RECORDED[:8]:  # still running
        state.apply(event)
    task = state.tasks["coder-1"]
    page = transcript_html(task)
    shown = html.unescape(page)
    assert "workspace: worktree " + WS["path"] in shown
    assert "▸ $ /bin/bash -lc 'echo hi > a.txt' (exit 0, 2 ms)" in shown
    assert "✗ $ /bin/bash -lc false (exit 1, 2 ms)" in shown
    assert shown.index("echo hi") < shown.index("false") < shown.index("Created a.txt")
    failed = page[page.index("✗"):]
    assert page[:page.index("✗")].endswith("<span style='color:#e53935;font-weight:600'>")
    assert "boom: &lt;nope&gt;" in failed  # the failed command's output, escaped
    assert "<nope>" not in page
    assert "⚠ warning: Model metadata" in shown
    assert "files changed" not in shown  # only once the task has ended
    state.apply(RECORDED[8])
    assert "1 file changed (+1 -0): a.txt" in transcript_text(task)


def test_transcript_keeps_the_tail_of_long_outputs() -> None:
    state = RunState()
    for i in range(300):
        state.apply(_ev("task_chunk", content=f"line {i} " + "x" * 40 + "\n"))
        state.apply(_ev("task_step", stepType="command", command=f"cmd {i}", exitCode=0))
    text = transcript_text(state.tasks["coder-1"], limit=2000)
    assert text.startswith("… (") and "earlier characters" in text.splitlines()[0]
    assert len(text) < 2200 and "$ cmd 299 (exit 0)" in text and "cmd 0 " not in text


def test_live_view_streams_steps_and_ends_with_a_summary_of_steps_and_changes() -> None:
    published: list[dict[str, str]] = []
    view = LiveView(Plan.from_task_map({"coder": [TASK]}), interval=0.1, timers=False,
                    publish=published.append)
    view.show()
    for event in RECORDED[:6]:
        view(event)
    view._throttle.flush("view")
    live = published[-1]
    assert "echo hi &gt; a.txt" in live["text/html"]
    assert "▸ $ /bin/bash -lc 'echo hi > a.txt' (exit 0, 2 ms)" in live["text/plain"]
    assert "2 steps" in live["text/plain"]
    for event in RECORDED[6:]:
        view(event)
    final = published[-1]["text/html"]
    assert "codexflow-summary" in final and "<th>steps</th><th>changes</th>" in final
    assert "3 steps, 1 failed" in final and "1 file changed (+1 -0): a.txt" in final
    assert "/bin/bash -lc false (exit 1, 2 ms)" in html.unescape(final)


def test_stub_summaries_keep_their_columns() -> None:
    state = RunState(Plan.from_task_map({"coder": ["x"]}))
    state.apply(_ev("task_chunk", content="hello"))
    page = summary_html(state)
    assert "<th>steps</th>" not in page and "hello" in page


class StepBurstRuntime:
    """An agent-like runtime: a workspace, then ``n`` steps with a message after each, as fast
    as the loop allows."""

    name = "step-burst"
    default_retries = 0

    def __init__(self, n: int) -> None:
        self.n = n

    async def open(self, max_connections: int) -> None:
        return None

    async def close(self) -> None:
        return None

    async def run(self, call: RuntimeCall, on_chunk: Any = None) -> Reply:
        assert call.emit is not None
        call.emit("task_workspace", workspace={"kind": "none", "path": "/tmp"})
        for i in range(self.n):
            call.emit("task_step", stepType="command", command=f"step {i}",
                      exitCode=i % 2, durationMs=1.0)
            on_chunk(f"said {i}\n")
            await asyncio.sleep(0)
        return Reply(summary="done", output={"text": "done"})


def test_run_panel_coalesces_step_updates(workdir: Path) -> None:
    from codexflow_nb.api import prepare_run

    plan = Plan.from_task_map({"coder": ["Work a lot"]})
    panel = RunPanel(plan=plan, log_file=None, runs_dir=None)
    updates: list[str] = []
    titles: list[tuple[str, ...]] = []

    async def main() -> float:
        run = prepare_run(plan=plan, runtime=StepBurstRuntime(500), on_event=panel._on_event,
                          stream=True, log_file=None, runs_dir=None)
        panel.reset(plan)
        panel.outputs["coder-1"].observe(lambda c: updates.append(c["new"]), names="value")
        panel.accordion.observe(lambda c: titles.append(c["new"]), names="titles")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        panel._begin(run)
        await panel._execute(run)
        return loop.time() - t0

    elapsed = asyncio.run(main())
    # 1,000 step and message events, a handful of widget updates
    assert len(updates) <= 2 + elapsed / panel.stream_interval + 1, (len(updates), elapsed)
    assert len(updates) < 60 and len(titles) < 60
    last = html.unescape(updates[-1])
    assert "✗ $ step 499 (exit 1, 1 ms)" in last and "said 499" in last
    assert "▸ $ step 498 (exit 0, 1 ms)" in last
    assert panel.accordion.titles[0].endswith("500 steps, 250 failed")


# -- runtime fields ------------------------------------------------------------------------------------

def test_runtime_dropdown_lists_every_runtime_and_agent_fields_follow_it(workdir: Path) -> None:
    repo = make_repo(workdir / "repo", {"README.md": "hi\n"})
    panel = RunPanel({"coder": ["x"]}, log_file=None, runs_dir=None)
    assert tuple(panel.runtime.options) == RUNTIME_NAMES
    assert panel.agent_box.layout.display == "none" and panel.latency.layout.display is None
    for name in ("codex-cli", "claude-code"):
        panel.runtime.value = name
        assert panel.agent_box.layout.display is None
        assert {panel.latency.layout.display, panel.url.layout.display, panel.key.layout.display,
                panel.stream.layout.display} == {"none"}
    panel.runtime.value = "codex"
    assert panel.agent_box.layout.display == "none" and panel.url.layout.display is None

    panel.runtime.value = "codex-cli"
    panel.repo.value = str(workdir / "missing")
    assert html.unescape(panel.repo_error.value) == \
        f"<div style='color:#e53935'>⚠ {workdir / 'missing'}: not a folder</div>"
    panel.repo.value = str(repo)
    assert panel.repo_error.value == ""
    panel.base.value = "no-such-ref"
    assert "'no-such-ref': not a commit in" in html.unescape(panel.base_error.value)
    assert panel.repo_error.value == ""
    panel.base.value = "main"
    assert panel.base_error.value == ""
    (workdir / "plain").mkdir()
    panel.repo.value = str(workdir / "plain")
    panel.workspace.value = "worktree"
    assert "not a git repository; use --workspace copy" in panel.repo_error.value
    panel.workspace.value = "copy"
    assert panel.repo_error.value == ""
    panel.agent_model.value = "gpt-test"
    assert panel.runtime_options() == {"repo": str(workdir / "plain"), "workspace": "copy",
                                       "base": "main", "agent_model": "gpt-test"}

    panel.repo.value = "nowhere"

    async def click() -> None:  # in a kernel, where Run starts a task on the running loop
        panel.run_button.click()

    asyncio.run(click())  # refused with the field's problem, not a traceback
    assert panel.run is None and "repo: nowhere: not a folder" in shown_text(panel.message)
    assert html.unescape(panel.repo_error.value).count("⚠") == 1


def shown_text(widget: Any) -> str:
    return html.unescape(widget.value)


def test_dashboard_takes_the_agent_fields(workdir: Path) -> None:
    repo = make_repo(workdir / "repo", {"README.md": "hi\n"})
    dash = codexflow_nb.dashboard({"coder": ["x"]}, runtime="codex-cli", repo=str(repo),
                                  workspace="worktree", base="HEAD", agent_model="m1",
                                  agent_bin="/no/codex", log_file=None, runs_dir=None)
    panel = dash.panel
    assert panel.runtime.value == "codex-cli" and panel.repo.value == str(repo)
    assert panel.workspace.value == "worktree" and panel.agent_model.value == "m1"
    assert panel.repo_error.value == panel.base_error.value == ""
    assert panel.run_options["agent_bin"] == "/no/codex"  # passed on to prepare_run
    with pytest.raises(ConfigError, match="unknown runtime"):
        RunPanel({"coder": ["x"]}, runtime="nope")


# -- changes: diff, static HTML, Apply --------------------------------------------------------------

def test_diff_html_colours_escapes_and_truncates() -> None:
    patch = ("diff --git a/x.html b/x.html\nindex 1..2 100644\n--- a/x.html\n+++ b/x.html\n"
             "@@ -1,2 +1,2 @@\n <p>same</p>\n-<b>old</b>\n+<i>new</i>\n")
    page = diff_html(patch)
    assert "cf-diff-add" in page and "color:#22863a;background:#e6ffed'>+&lt;i&gt;new&lt;/i&gt;" in page
    assert "color:#b31d28;background:#ffeef0'>-&lt;b&gt;old&lt;/b&gt;" in page
    assert "cf-diff-meta' style='display:inline-block;min-width:100%;color:#6a737d'>--- a/x.html" in page
    assert "cf-diff-hunk" in page and "<i>" not in page
    long = "diff --git a/n b/n\n@@ -0,0 +1,1000 @@\n" + "".join(f"+{i}\n" for i in range(1000))
    page = diff_html(long, max_lines=50, source="/runs/p.patch")
    assert page.count("cf-diff-add") == 48
    assert "… patch truncated: 952 more line(s) not shown; the whole patch: /runs/p.patch" in page
    binary = "diff --git a/b.png b/b.png\nGIT binary patch\nliteral 3\nKcmZ?\n\nliteral 0\n"
    assert "(binary content not shown)" in diff_html(binary) and "KcmZ" not in diff_html(binary)


def record_run(root: Path, source: Path, edits: dict[str, str]) -> tuple[Path, Path]:
    """A finished codex-cli run on ``source`` whose one task made ``edits``: its event log and
    run store as the runtime writes them (the patch made with git from a real change)."""
    start = git(source, "rev-parse", "HEAD").strip()
    before = {name: (source / name).read_text() for name in edits}
    for name, text in edits.items():
        (source / name).write_text(text)
    patch = git(source, "diff", "--binary", "--full-index", "--no-renames")
    for name, text in before.items():  # the main checkout stays as it was
        (source / name).write_text(text)
    log, runs = root / "events.jsonl", root / ".runs"
    (runs / "coder" / TID).mkdir(parents=True)
    (runs / "coder" / TID / "changes.patch").write_text(patch)
    ws = {**WS, "repo": str(source), "start": start}
    files = [{"path": n, "status": "modified", "insertions": 1, "deletions": 1} for n in edits]
    events = [RECORDED[0], _ev("task_workspace", workspace=ws),
              _ev("task_complete", ok=True, ms=5.0, summary="edited",
                  changes={"files": files, "insertions": len(files), "deletions": len(files)}),
              RECORDED[-1]]
    log.write_text("".join(json.dumps(e) + "\n" for e in events))
    return log, runs


def test_changes_view_apply_changes_the_file_and_reports_a_conflict(tmp_path: Path) -> None:
    origin = make_repo(tmp_path / "origin", {"f.txt": "one\n", "g.txt": "keep\n"})
    log, runs = record_run(tmp_path, origin, {"f.txt": "two <&>\n"})
    clean = tmp_path / "clean"
    git(tmp_path, "clone", "-q", str(origin), str(clean))
    busy = tmp_path / "busy"
    git(tmp_path, "clone", "-q", str(origin), str(busy))
    (busy / "f.txt").write_text("three\n")
    git(busy, "commit", "-qam", "someone else changed f.txt")

    view = ChangesView(RUN, log_file=log, runs_dir=runs, repo=clean)
    row = view.row("coder-1")
    assert "f.txt" in row.files.value and "+1" in row.files.value and "-1" in row.files.value
    assert "+two &lt;&amp;&gt;" in row.diff.value and "-one" in row.diff.value
    row.apply_button.click()
    assert (clean / "f.txt").read_text() == "two <&>\n"
    assert shown_text(row.message).startswith("<div style='color:#2e7d32'>✓ coder/coder-1: applied 1 file(s)")
    assert row.apply_button.disabled and row.apply_button.description == "Applied"
    assert "✓ coder/coder-1: applied" in html.unescape(view._repr_html_())

    other = ChangesView(RUN, log_file=log, runs_dir=runs, repo=busy)
    other.row(TID).apply_button.click()
    result = other.applied[TID]
    assert not result.ok and result.conflicts == ["f.txt"]
    message = shown_text(other.row(TID).message)
    assert "✗ conflicts in 1 file(s):" in message and "<code>f.txt</code>" in message
    assert "<<<<<<<" in (busy / "f.txt").read_text()
    assert not other.row(TID).apply_button.disabled

    # without repo=, Apply writes into the repository the worktree came from
    assert ChangesView(RUN, log_file=log, runs_dir=runs).target(view.changes[0]) == origin


def test_changes_static_html_survives_without_a_kernel(tmp_path: Path) -> None:
    origin = make_repo(tmp_path / "origin", {"f.txt": "one\n"})
    log, runs = record_run(tmp_path, origin, {"f.txt": "two\n"})
    view = ChangesView(RUN, log_file=log, runs_dir=runs)
    bundle = view._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    page = bundle["text/html"]
    assert "codexflow-changes" in page and "<code>f.txt</code>" in page
    assert "color:#22863a;background:#e6ffed'>+two</span>" in page
    assert "color:#b31d28;background:#ffeef0'>-one</span>" in page
    assert "M f.txt +1 -1" in bundle["text/plain"]
    static = changes_bundle(RUN, log_file=log, runs_dir=runs)
    assert static["text/html"] == changes_html(run_changes(RUN, log_file=log, runs_dir=runs))
    missing = changes_bundle("no-such-run", log_file=log, runs_dir=runs)
    assert "no run 'no-such-run' in the event log" in html.unescape(missing["text/html"])
    gone = TaskChanges(RUN, "coder", "coder-1", TID, "completed", files=[{"path": "x"}])
    assert "no patch kept" in changes_html([gone])


# -- the magic's options ---------------------------------------------------------------------------

def test_magic_accepts_the_agent_options() -> None:
    args = magic.parse_line("--runtime codex-cli --repo r --workspace copy --base main "
                            "--agent-model m --agent-bin /x/codex --codex-config a=1 "
                            "--codex-config 'b.c=\"two words\"'")
    assert (args.runtime, args.repo, args.workspace, args.base) == ("codex-cli", "r", "copy", "main")
    assert (args.agent_model, args.agent_bin) == ("m", "/x/codex")
    assert args.codex_config == ["a=1", 'b.c="two words"']
    assert magic.parse_line("--runtime claude-code").runtime == "claude-code"
    for line in ("--runtime nope", "--workspace sideways", "--codex-config novalue"):
        with pytest.raises(ConfigError):
            magic.parse_line(line)


@pytest.fixture(scope="module")
def shell() -> InteractiveShell:
    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "codexflow_nb")
    return sh


def test_magic_reports_a_bad_repo_as_one_usage_line(shell: InteractiveShell, workdir: Path,
                                                    tmp_path: Path) -> None:
    fake = tmp_path / "codex"  # a stand-in binary: the repo check comes after finding it
    fake.write_text("#!/bin/sh\necho 'codex-cli 0.169.0'\n")
    fake.chmod(0o755)
    with pytest.raises(UsageError) as info:
        shell.run_cell_magic("codexflow", f"--runtime codex-cli --agent-bin {fake} "
                                          f"--repo {workdir / 'missing'}", "coder: [x]\n")
    assert str(info.value) == f"--repo {workdir / 'missing'}: not a folder"


# -- the real Codex CLI --------------------------------------------------------------------------------

agent_servers = pytest.importorskip("agent_servers")
needs_codex = pytest.mark.skipif(agent_servers.CODEX_BIN is None,
                                 reason="the Codex CLI is not installed")
SCRIPT = "make a file\n@shell: echo hi > a.txt\n@shell: ls no-such-file\n@say: Created <a.txt>"


@pytest.fixture
def codex(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The scripted Responses server, with Codex configured to use it; a git repo ``repo``."""
    server = agent_servers.ResponsesServer().start()
    env = agent_servers.codex_env(agent_servers.codex_home(workdir / "codex-cfg", server))
    for name in ("CODEX_HOME", agent_servers.TEST_KEY_VAR, "HOME", "NO_COLOR"):
        monkeypatch.setenv(name, env[name])
    monkeypatch.setenv("CODEXFLOW_CODEX_BIN", agent_servers.CODEX_BIN)
    make_repo(workdir / "repo", {"README.md": "hi\n"})
    yield server
    server.stop()


@pytest.mark.agent_cli
@needs_codex
def test_real_codex_through_the_dashboard_panel(codex: Any, workdir: Path) -> None:
    dash = codexflow_nb.dashboard({"coder": [SCRIPT]}, runtime="codex-cli", repo="repo")
    panel = dash.panel
    assert panel.repo_error.value == ""
    result = asyncio.run(dash.run_async())
    assert result is not None and result.ok, panel.message.value
    out = shown_text(panel.outputs["coder-1"])
    assert "▸ $ /bin/bash -lc 'echo hi > a.txt' (exit 0," in out
    assert "✗ $ /bin/bash -lc 'ls no-such-file' (exit 2," in out
    assert "Created <a.txt>" in out and "&lt;a.txt&gt;" in panel.outputs["coder-1"].value
    assert out.index("echo hi") < out.index("no-such-file") < out.index("Created")
    assert "1 file changed (+1 -0): a.txt" in out
    assert "steps, 1 failed" in panel.accordion.titles[0]
    assert "<th>changes</th>" in panel.summary.value  # the summary, then the diffs
    assert "codexflow-changes" in panel.summary.value and "+hi" in panel.summary.value

    view = panel.changes_view
    assert view is not None and panel.changes_box.children == (view,)
    row = view.row("coder-1")
    assert "<code>a.txt</code>" in row.files.value and "+hi" in row.diff.value
    assert not (workdir / "repo/a.txt").exists()  # the task worked in its own worktree
    row.apply_button.click()
    assert (workdir / "repo/a.txt").read_text() == "hi\n"
    assert "✓ coder/coder-1: applied 1 file(s)" in shown_text(row.message)


@pytest.mark.agent_cli
@needs_codex
def test_real_codex_through_the_magic(codex: Any, shell: InteractiveShell, workdir: Path) -> None:
    body = json.dumps({"coder": [SCRIPT]})
    with capture_output() as cap:
        shell.run_cell_magic("codexflow", "--runtime codex-cli --repo repo --interval 0.05 "
                                          "--out agent_res", body)
    assert shell.user_ns["agent_res"].ok
    texts = [o.data["text/plain"] for o in cap.outputs]
    assert any("▸ $ /bin/bash -lc 'echo hi > a.txt' (exit 0," in t for t in texts)
    summary, changes = cap.outputs[-2].data, cap.outputs[-1].data
    assert "codexflow-summary" in summary["text/html"]
    assert "(exit 2," in html.unescape(summary["text/html"])  # the failed step, kept
    assert "codexflow-changes" in changes["text/html"] and "<code>a.txt</code>" in changes["text/html"]
    assert "+hi</span>" in changes["text/html"] and "A a.txt +1 -0" in changes["text/plain"]
    assert len(cap.outputs) < 30  # coalesced: not one display update per event

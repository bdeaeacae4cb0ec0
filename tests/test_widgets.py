"""The notebook widgets driven as Python objects: set values, click buttons, inspect state."""

from __future__ import annotations

import asyncio
import datetime as dt
import html
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ipywidgets as w
import pytest
import yaml

from codexflow_nb import Aliases, Plan, load_task_map
from codexflow_nb.errors import ConfigError
from codexflow_nb.events import TERMINAL_KINDS
from codexflow_nb.registry import Registry
from codexflow_nb.runtimes.base import Reply, RuntimeCall
from codexflow_nb.widgets import (
    AgentPicker,
    AliasEditor,
    Dashboard,
    LiveView,
    PlanGraph,
    RunPanel,
    RunState,
    TaskEditor,
    build_figure,
    dashboard,
    run_live,
)
from codexflow_nb.widgets.coalesce import Throttle
from codexflow_nb.widgets.palette import STATUS_FILLS
from codexflow_nb.widgets.plan_graph import PALETTE, PLOTLY_MIME, layout_plan

EXAMPLE = {"reviewer": ["Review the engine", "Review the parser"], "architect": ["Propose a layout"]}
PHASED = {"phases": [
    {"name": "design", "tasks": [{"id": "d1", "alias": "architect", "task": "Design it"},
                                 {"id": "d2", "alias": "reviewer", "task": "Review the design",
                                  "dependsOn": ["d1"]}]},
    {"name": "build", "tasks": [{"id": "b1", "alias": "reviewer", "task": "Build part one"},
                                {"id": "b2", "alias": "reviewer2", "task": "Build part two"}]},
]}


def shown(widget: w.Widget) -> str:
    """A widget's text as the user reads it (HTML entities decoded)."""
    return html.unescape(widget.value)


def all_widgets(root: w.Widget) -> Iterator[w.Widget]:
    """A widget and everything below it."""
    yield root
    for child in getattr(root, "children", ()) or ():
        yield from all_widgets(child)


class Collector:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def kinds(self, *kinds: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["kind"] in kinds]


# -- agent picker --------------------------------------------------------------------------------

def test_picker_search_filters_and_shows_the_agent_card(registry: Registry) -> None:
    picker = AgentPicker(registry)
    assert len(picker.matches) == len(registry)
    picker.search.value = "security"
    assert "security-auditor" in picker.matches and "coder" not in picker.matches
    picker.search.value = ""
    picker.domain.value = "testing"
    assert picker.matches and all(registry.get(a).domain == "testing" for a in picker.matches)
    picker.domain.value = "(all)"
    picker.tier.value = "expert"
    assert picker.matches and all(registry.get(a).tier == "expert" for a in picker.matches)
    picker.tier.value = "(all)"
    picker.select("code-analyzer")
    card = shown(picker.card)
    agent = registry.get("code-analyzer")
    assert "Code Analyzer" in card and "static analysis" in card.lower()
    assert f"<b>limit</b> {agent.max_parallel_tasks}" in card
    assert "read_file" in card and "restricted" in card  # tools
    assert "Compute complexity" in card  # a responsibility
    picker.search.value = "zzz-nothing-matches"
    assert picker.matches == [] and "no agent matches" in shown(picker.card)
    picker.add_button.click()
    assert "select an agent first" in shown(picker.message)


def test_picker_select_adds_an_alias_to_the_editor(registry: Registry) -> None:
    editor = AliasEditor({}, registry=registry)
    picker = AgentPicker(registry, on_add=editor.add_alias)
    picker.select("security-auditor")
    picker.add_button.click()
    picker.select("security-auditor")
    picker.alias_name.value = "sec"
    picker.add_button.click()
    picker.select("security-auditor")
    picker.add_button.click()
    assert editor.value == {"security-auditor": {"id": "security-auditor", "overrides": {}},
                            "sec": {"id": "security-auditor", "overrides": {}},
                            "security-auditor-2": {"id": "security-auditor", "overrides": {}}}
    assert picker.added[-1] == ("security-auditor-2", "security-auditor")
    assert "security-auditor-2" in shown(picker.message)
    assert editor.problems == []


# -- alias editor --------------------------------------------------------------------------------

def test_alias_editor_round_trips_the_aliases_yaml_format(registry: Registry, tmp_path: Path) -> None:
    source = {"reviewer": {"id": "code-analyzer", "overrides": {"runtime": {"autonomy_level": 0.7}}},
              "fast": {"id": "coder", "overrides": {"runtime": {"concurrency": {"max_parallel_tasks": 5}},
                                                    "memory": {"sharing_policy": {"share_with": []}}}}}
    path = tmp_path / "aliases.yaml"
    path.write_text(yaml.safe_dump(source), encoding="utf-8")
    editor = AliasEditor(str(path), registry=registry)
    assert editor.value == source
    assert editor.row("fast").parallel.value == 5
    assert editor.row("reviewer").autonomy.value == 0.7
    out = tmp_path / "out.yaml"
    editor.path.value = str(out)
    editor.save_button.click()
    assert Aliases.from_file(out).to_dict() == source  # what --aliases reads
    again = AliasEditor({}, registry=registry)
    again.yaml_text.value = editor.to_yaml()
    again.import_button.click()
    assert again.value == source
    again.export_button.click()
    assert yaml.safe_load(again.yaml_text.value) == source
    assert editor.aliases().resolve("fast", registry).max_parallel_tasks == 5


def test_alias_editor_reports_unknown_agent_duplicate_alias_and_bad_yaml_inline(
        registry: Registry) -> None:
    editor = AliasEditor(registry=registry)  # the default aliases
    assert editor.problems == []
    row = editor.row("reviewer2")
    row.agent.value = "no-such-agent"
    assert "unknown agent 'no-such-agent'" in shown(row.message)
    assert shown(editor.message) == ""  # each problem once, on its row (counted by Run)
    row.agent.value = "code-analyzer"
    assert shown(row.message) == ""
    row.alias.value = "reviewer"  # rename onto an existing alias
    assert "duplicate alias 'reviewer'" in shown(row.message)
    assert "duplicate alias 'reviewer'" in shown(editor.rows[0].message)  # both rows say so
    assert any("duplicate alias" in p for p in editor.problems)
    row.alias.value = "bad/name"
    assert "not a safe name" in shown(row.message)
    row.alias.value = "second"
    assert editor.problems == []
    before = dict(row.overrides)
    row.show_yaml.value = True
    assert row.yaml.layout.display is None
    row.yaml.value = "runtime: [unclosed"
    assert "bad YAML: line 2, column 1" in shown(row.message)
    assert row.overrides == before  # the last valid overrides are kept
    with pytest.raises(ConfigError, match="bad YAML"):
        editor.aliases()
    row.yaml.value = "- a list"
    assert "must be a mapping" in shown(row.message)
    row.yaml.value = "runtime: {concurrency: {max_parallel_tasks: 0}}"
    assert "max_parallel_tasks: must be between 1 and 10,000, got 0" in shown(row.message)
    row.yaml.value = "runtime: {autonomy_level: 0.95, concurrency: {max_parallel_tasks: 3}}"
    assert shown(row.message) == "" and row.autonomy.value == 0.95 and row.parallel.value == 3
    editor.yaml_text.value = "reviewer: {id: [broken"
    editor.import_button.click()  # no exception: the message says what is wrong
    assert "bad YAML" in shown(editor.io_message)
    assert "second" in editor.names  # the table is unchanged


def test_alias_editor_quick_fields_write_overrides_and_add_remove(registry: Registry) -> None:
    editor = AliasEditor({"a": {"id": "coder"}}, registry=registry)
    row = editor.row("a")
    coder = registry.get("coder")
    assert row.parallel.value == coder.max_parallel_tasks
    row.parallel.value = coder.max_parallel_tasks + 2
    row.autonomy.value = 0.25
    assert editor.value["a"]["overrides"] == {"runtime": {
        "concurrency": {"max_parallel_tasks": coder.max_parallel_tasks + 2}, "autonomy_level": 0.25}}
    assert "max_parallel_tasks" in row.yaml.value
    row.parallel.value = coder.max_parallel_tasks  # back to the agent's value: no override
    assert editor.value["a"]["overrides"] == {"runtime": {"autonomy_level": 0.25}}
    assert coder.timeout_ms
    row.timeout.value = 0
    assert "timeout_ms must be a positive number" in shown(row.message)
    row.timeout.value = 5000
    assert editor.aliases().resolve("a", registry).timeout_ms == 5000
    editor.add_button.click()
    new = editor.rows[-1]
    assert new.alias.value == "alias" and "choose an agent" in shown(new.message)
    new.agent.value = "tester"
    editor.rows[-1].remove_button.click()
    assert editor.names == ["a"]
    editor.rename_alias("a", "b")
    assert list(editor.value) == ["b"]
    with pytest.raises(ConfigError, match="no alias"):
        editor.remove_alias("zzz")


# -- task editor ---------------------------------------------------------------------------------

def test_task_editor_per_alias_lines_keep_structured_items(registry: Registry) -> None:
    data = {"reviewer": [{"task": "Review the engine", "id": "r1"}, "Review the parser"]}
    editor = TaskEditor(data, aliases={"reviewer": {"id": "code-analyzer"},
                                       "architect": {"id": "system-architect"}}, registry=registry)
    assert set(editor.boxes) == {"reviewer", "architect"}
    assert editor.boxes["reviewer"].value == "Review the engine\nReview the parser"
    editor.boxes["reviewer"].value = "Review the engine\nA new review\n"
    editor.boxes["architect"].value = "Propose a layout"
    assert editor.value == {"reviewer": [{"task": "Review the engine", "id": "r1"}, "A new review"],
                            "architect": ["Propose a layout"]}
    assert "3 task(s)" in shown(editor.message)
    Plan.from_task_map(editor.task_map())  # a runnable plan


def test_task_editor_json_and_yaml_views_validate_inline(registry: Registry) -> None:
    editor = TaskEditor(EXAMPLE, registry=registry)
    editor.mode.value = "JSON"
    assert json.loads(editor.text.value) == EXAMPLE
    assert editor.text.layout.display is None and editor.per_alias.layout.display == "none"
    editor.text.value = '{"reviewer": ["a",]}'
    assert "invalid JSON: line 1" in shown(editor.message)
    assert editor.problems and editor.value == EXAMPLE  # last valid map kept
    editor.mode.value = "YAML"  # refused while the text is broken
    assert editor.mode.value == "JSON" and "fix the text" in shown(editor.message)
    editor.text.value = '{"reviewer": [{"task": "x", "dependsOn": 5}]}'
    assert "'dependsOn' must be a list" in shown(editor.message)
    editor.text.value = '{"reviewer": ["only one"]}'
    assert editor.problems == [] and editor.value == {"reviewer": ["only one"]}
    editor.mode.value = "YAML"
    assert yaml.safe_load(editor.text.value) == {"reviewer": ["only one"]}
    editor.text.value = "reviewer: [unclosed"
    assert "invalid YAML" in shown(editor.message)
    with pytest.raises(ConfigError):
        editor.task_map()


def test_task_editor_import_export_use_the_cli_formats(registry: Registry, tmp_path: Path) -> None:
    editor = TaskEditor(EXAMPLE, registry=registry)
    for name in ("tasks.json", "tasks.yaml"):
        editor.path.value = str(tmp_path / name)
        editor.export_button.click()
        assert load_task_map(str(tmp_path / name)) == load_task_map(str(tmp_path / "tasks.json"))
    assert json.loads((tmp_path / "tasks.json").read_text()) == EXAMPLE
    other = TaskEditor(registry=registry)
    other.path.value = str(tmp_path / "tasks.yaml")
    other.import_button.click()
    assert other.value == EXAMPLE and "imported 3 task(s)" in shown(other.message)
    other.path.value = str(tmp_path / "missing.json")
    other.import_button.click()
    assert "file not found" in shown(other.message) or "cannot read" in shown(other.message)
    (tmp_path / "bad.json").write_text('{"reviewer": []}')
    other.path.value = str(tmp_path / "bad.json")
    other.import_button.click()
    assert "the task list is empty" in shown(other.message) and other.value == EXAMPLE
    upload = {"name": "up.yaml", "type": "", "size": 20, "content": memoryview(b"coder: [Write it]\n"),
              "last_modified": dt.datetime.now(dt.UTC)}
    other.upload.value = (upload,)
    assert other.value == {"coder": ["Write it"]}


def test_task_editor_routes_free_text_with_triggers(registry: Registry) -> None:
    editor = TaskEditor({"architect": ["Propose a layout"]}, registry=registry,
                        aliases={"reviewer": {"id": "code-analyzer"}})
    editor.route_text.value = "Find dead code and duplicate code in the parser"
    editor.route_button.click()
    item = editor.value["reviewer"][0]  # code-analyzer is known as the alias "reviewer"
    assert item["task"] == "Find dead code and duplicate code in the parser"
    assert "keyword 'dead code'" in item["meta"]["routedBy"]
    assert "routed to" in shown(editor.message) and editor.route_text.value == ""
    editor.route_text.value = "qwertyuiop asdfgh"
    editor.route_button.click()
    assert "no agent's triggers match" in shown(editor.message)
    editor.route_text.value = ""
    editor.route_button.click()
    assert "type the work to route first" in shown(editor.message)
    Plan.from_task_map(editor.task_map())


# -- plan graph -----------------------------------------------------------------------------------

def test_plan_graph_draws_phases_as_columns_aliases_as_outlines_and_edges() -> None:
    plan = Plan.from_data(PHASED)
    pos = layout_plan(plan)
    assert pos["d2"][0] > pos["d1"][0]  # d2 waits for d1 inside the phase: a step right
    assert pos["b1"][0] == pos["b2"][0] - 1 and pos["b1"][0] > pos["d2"][0]  # next phase
    fig = build_figure(plan)
    nodes = {t.name: t for t in fig.data if t.legendgroup is None and t.name in
             ("architect", "reviewer", "reviewer2")}
    assert set(nodes) == {"architect", "reviewer", "reviewer2"}
    assert list(nodes["reviewer"].text) == ["d2", "b1"]
    outlines = {t.name: t.marker.line.color for t in nodes.values()}
    assert outlines == {"architect": PALETTE[0], "reviewer": PALETTE[1], "reviewer2": PALETTE[2]}
    assert len({t.marker.symbol for t in nodes.values()}) == 3  # and a shape each
    # only the dependency that exists (d1 -> d2) is drawn; b1, b2 waiting for the whole first
    # phase is what the columns say
    edges = next(t for t in fig.data if t.name == "dependencies")
    assert list(edges.marker.size).count(9) == 1  # one arrow head
    assert len(fig.layout.shapes) == 2  # one band per phase
    live = build_figure(plan, {"d1": "completed", "d2": "running", "b1": "failed"})
    fills = {t.name: list(t.marker.color) for t in live.data if t.name in nodes
             and t.legendgroup is None}
    assert fills["reviewer"] == [STATUS_FILLS["running"], STATUS_FILLS["failed"]]
    assert fills["reviewer2"] == [STATUS_FILLS["planned"]]
    legend = {t.name: t.legendgroup for t in live.data if t.showlegend is not False}
    assert legend["completed"] == legend["cancelled"] == "status"  # fill = status, said so
    assert legend["reviewer"] == "alias"
    assert {t.legendgrouptitle.text for t in live.data if t.legendgroup} == {
        "status (fill)", "alias (outline, shape)"}


def test_plan_graph_follows_run_events() -> None:
    async def main() -> PlanGraph:
        graph = PlanGraph(Plan.from_data(PHASED), interval=10.0)  # only edges of bursts redraw
        first = graph.renders
        graph.on_event({"kind": "run_started"})
        for key in ("d1", "d2", "b1", "b2"):
            graph.on_event({"kind": "task_started", "key": key})
            graph.on_event({"kind": "task_complete", "key": key})
        assert graph.renders == first + 1  # one redraw, the rest held back
        graph.on_event({"kind": "run_complete"})
        assert graph.renders == first + 2
        return graph

    graph = asyncio.run(main())
    assert set(graph.statuses.values()) == {"completed"}
    svg = graph.view.value  # an SVG in an HTML widget: one swap per redraw in the browser
    nodes = svg.split("status (fill)")[0]  # before the legend
    assert "<svg" in svg and nodes.count('class="s-completed"') == 4
    assert 'class="s-planned"' not in nodes  # no node left planned
    assert {t.name for t in graph.figure().data if t.legendgroup == "alias"} == {
        "architect", "reviewer", "reviewer2"}  # the same view as a plotly figure
    graph.set_plan(None)
    assert "no tasks to draw" in graph.view.value


# -- coalescing -----------------------------------------------------------------------------------

class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_throttle_sends_leading_and_trailing_updates_only() -> None:
    clock, flushed = FakeClock(), []
    t = Throttle(flushed.append, 0.1, clock=clock, timers=False)
    for i in range(1000):  # 1,000 requests over 0.5 s
        clock.now = i * 0.0005
        t.request("a")
        t.poll()
    assert len(flushed) <= 1 + 0.5 / 0.1 + 1
    assert t.pending == ["a"]
    t.flush("a")  # the task ended: its last update goes out at once
    assert t.pending == [] and flushed[-1] == "a"
    count = len(flushed)
    t.request("b")
    assert len(flushed) == count + 1  # a new key is not held back


# -- run panel ------------------------------------------------------------------------------------

def test_run_panel_progress_reaches_totals_and_outputs_receive_chunks(workdir: Path) -> None:
    seen = Collector()
    panel = RunPanel(EXAMPLE, on_event=seen, latency_ms=40, chunks=5, aliases={
        "reviewer": {"id": "code-analyzer"}, "architect": {"id": "system-architect"}})
    assert panel.overall.total == 3 and panel.overall.done == 0
    assert shown(panel.alias_labels["reviewer"]) == "0/2 done · running 0/2"  # limit known early
    result = asyncio.run(panel.run_async())
    assert result is not None and result.ok
    assert panel.overall.done == panel.overall.total == 3
    assert {a: (b.done, b.total) for a, b in panel.alias_bars.items()} == {"reviewer": (2, 2),
                                                                          "architect": (1, 1)}
    assert "2/2 done · running 0/" in panel.alias_labels["reviewer"].value
    assert all("completed" in t for t in panel.accordion.titles)
    chunks = seen.kinds("task_chunk")
    assert len(chunks) >= 3 * 4
    for t in result.tasks:  # every streamed chunk arrived in the task's own output area
        streamed = "".join(e["content"] for e in chunks if e["key"] == t.key)
        assert streamed == t.output["text"]
        assert json.dumps(t.output["text"].splitlines()[0])[1:-1].split(" on:")[0] in \
            panel.outputs[t.key].value
    assert "finished" in panel.summary.value and "<table>" in panel.summary.value
    assert panel.overall.counts == {"completed": 3}  # one green segment, the whole bar
    assert 'data-status="completed" x="0.00" width="300.00"' in panel.overall.value
    assert (workdir / "data/logs/events.jsonl").is_file()  # the CLI's default log


def test_run_button_starts_a_task_on_the_loop_and_stop_cancels_every_task(workdir: Path) -> None:
    seen = Collector()
    tasks = {"reviewer": [f"Review part {i}" for i in range(6)], "architect": ["Design it"]}
    panel = RunPanel(tasks, on_event=seen, latency_ms=60_000, log_file=None, runs_dir=None)

    async def main() -> None:
        started = asyncio.Event()

        def on_event(event: dict[str, Any]) -> None:
            if event["kind"] == "task_started":
                started.set()

        panel.subscribers.append(on_event)
        panel.run_button.click()
        assert panel.task is not None and panel.running
        assert panel.run_button.disabled and not panel.stop_button.disabled
        await started.wait()
        await asyncio.sleep(0)  # let the other workers start too
        panel.stop_button.click()
        await panel.task

    asyncio.run(main())
    terminal = seen.kinds(*TERMINAL_KINDS)
    assert sorted(e["key"] for e in terminal) == sorted(panel.state.tasks)  # exactly one each
    assert {e["kind"] for e in terminal} == {"task_cancelled"}
    assert seen.kinds("run_complete")[0]["cancelled"] == "stopped from the dashboard"
    assert panel.overall.done == panel.overall.total == 7  # done = ended, whatever the status
    assert "cancelled: stopped from the dashboard" in shown(panel.overall_label)
    assert "7 cancelled" in shown(panel.overall_label)
    assert not panel.running and not panel.run_button.disabled and panel.stop_button.disabled
    # cancelled is not "done in red": the bars show cancelled in its own colour
    assert panel.overall.counts == {"cancelled": 7}
    assert f'fill="{STATUS_FILLS["cancelled"]}"' in panel.overall.value
    assert STATUS_FILLS["failed"] not in panel.overall.value
    assert {a: b.counts for a, b in panel.alias_bars.items()} == {
        "reviewer": {"cancelled": 6}, "architect": {"cancelled": 1}}
    assert "6 cancelled" in shown(panel.alias_labels["reviewer"])


def test_run_panel_shows_user_errors_inline(workdir: Path) -> None:
    panel = RunPanel({"nobody-known": ["x"]}, log_file=None, runs_dir=None)

    async def main() -> None:
        panel.run_button.click()

    asyncio.run(main())
    assert "neither an alias" in shown(panel.message) and panel.task is None
    panel.runtime.value = "codex"
    assert panel.url.layout.display is None and panel.latency.layout.display == "none"
    with pytest.raises(ConfigError, match="needs an endpoint URL"):
        panel.runtime_options()
    panel.run_button.click()  # outside a loop: a message, not a traceback
    assert "needs a running event loop" in shown(panel.message)


class BurstRuntime:
    """Streams ``n`` chunks as fast as the loop allows, then replies."""

    name = "burst"
    default_retries = 0

    def __init__(self, n: int) -> None:
        self.n = n

    async def open(self, max_connections: int) -> None:
        return None

    async def close(self) -> None:
        return None

    async def run(self, call: RuntimeCall, on_chunk: Any = None) -> Reply:
        for i in range(self.n):
            on_chunk(f"<{i}>")
            await asyncio.sleep(0)
        return Reply(summary="done", output={"text": "".join(f"<{i}>" for i in range(self.n))})


def test_streamed_output_is_coalesced_and_the_last_chunk_shown(workdir: Path) -> None:
    panel = RunPanel({"coder": ["Stream a lot"]}, log_file=None, runs_dir=None)
    updates: list[str] = []
    at_end: list[str] = []
    panel.runtime_options = lambda: {}  # type: ignore[method-assign]
    panel._source = lambda: {"plan": Plan.from_task_map({"coder": ["Stream a lot"]})}

    def on_event(event: dict[str, Any]) -> None:
        if event["kind"] in TERMINAL_KINDS:
            at_end.append(panel.outputs[event["key"]].value)

    panel.subscribers.append(on_event)

    async def main() -> float:
        from codexflow_nb.api import prepare_run

        run = prepare_run(plan=panel._source()["plan"], runtime=BurstRuntime(1000),
                          on_event=panel._on_event, stream=True, log_file=None, runs_dir=None)
        panel.reset(panel._source()["plan"])
        panel.outputs["coder-1"].observe(lambda c: updates.append(c["new"]), names="value")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        panel._begin(run)
        await panel._execute(run)
        return loop.time() - t0

    elapsed = asyncio.run(main())
    assert len(updates) <= 2 + elapsed / panel.stream_interval + 1, (len(updates), elapsed)
    assert len(updates) < 100  # 1,000 chunks, a handful of widget updates
    assert at_end  # the task's output area was there when it ended
    assert "&lt;999&gt;" in updates[-1]  # the final chunk reached it (with the last redraw)


# -- the key --------------------------------------------------------------------------------------

KEY = "sk-widget-test-Q7v2-never-show"


def _everything_visible(panel: RunPanel | Dashboard) -> str:
    parts = []
    for widget in all_widgets(panel):
        state = widget.get_state()
        parts.append(json.dumps(state, default=str))
    parts.append(json.dumps(panel._repr_mimebundle_(), default=str))
    return "\n".join(parts)


def test_the_key_is_never_echoed(workdir: Path, registry: Registry) -> None:
    from servers import ServerThread

    from codexflow_nb.server import create_app

    seen = Collector()
    with ServerThread(create_app(registry, token=KEY)) as server:
        panel = RunPanel(EXAMPLE, on_event=seen, runtime="codex", url=server.url,
                         aliases={"reviewer": {"id": "code-analyzer"},
                                  "architect": {"id": "system-architect"}})
        panel.key.value = KEY
        assert panel.key.value == "" and panel.has_key and panel.key.placeholder.startswith("key set")
        ok = asyncio.run(panel.run_async())
        assert ok is not None and ok.ok and panel.overall.done == 3
        panel._api_key = KEY + "-wrong"  # a rejected key: errors must not quote it either
        bad = asyncio.run(panel.run_async())
        assert bad is not None and not bad.ok
    assert seen.kinds("task_failed")
    visible = _everything_visible(panel)
    assert "401" in visible or "auth" in visible.lower()  # the failure is shown ...
    assert KEY not in visible  # ... without the key
    assert KEY not in json.dumps(seen.events, default=str)
    files = [p for p in workdir.rglob("*") if p.is_file()]
    assert files and not any(KEY in p.read_text(errors="replace") for p in files)


# -- dashboard ------------------------------------------------------------------------------------

@pytest.fixture
def shell() -> Any:
    from IPython.core.interactiveshell import InteractiveShell

    return InteractiveShell.instance()


def test_dashboard_composes_the_widgets_and_runs_the_example(workdir: Path, shell: Any) -> None:
    from IPython.utils.capture import capture_output

    dash = dashboard(latency_ms=30, log_file=None, runs_dir=None)
    assert isinstance(dash, Dashboard) and dash.tabs.titles == ("Agents", "Aliases", "Tasks", "Plan")
    assert shown(dash.problems) == "" and dash.problem_list == []
    assert dash.panel.overall.total == 5
    assert {t.name for t in dash.graph.figure().data if t.legendgroup == "alias"} == {
        "reviewer", "reviewer2", "architect"}
    dash.picker.select("tester")
    dash.picker.add_button.click()
    assert "tester" in dash.alias_editor.names and "tester" in dash.task_editor.boxes
    renders = dash.graph.renders
    dash.task_editor.boxes["tester"].value = "Write tests for the parser"
    assert dash.graph.renders > renders and dash.panel.overall.total == 6
    assert "tester-1" in {k for t in dash.graph.figure().data for k in (t.text or ())}
    dash.alias_editor.row("tester").agent.value = "testr"
    assert dash.problem_list == ["tester: unknown agent 'testr' (did you mean 'tester'?)"]
    assert "did you mean 'tester'" in shown(dash.alias_editor.row("tester").message)
    assert "1 problem to fix" in shown(dash.problems)  # the count, by Run
    dash.alias_editor.row("tester").agent.value = "tester"
    assert dash.problem_list == [] and shown(dash.problems) == ""
    with capture_output() as displayed:
        shell.display_formatter  # noqa: B018 - the shell must exist for display()
        from IPython.display import display

        display(dash)
    widget_bundle = displayed.outputs[0].data
    assert "application/vnd.jupyter.widget-view+json" in widget_bundle
    assert "tester-1" in widget_bundle["text/html"]  # the fallback for front ends without widgets
    with capture_output() as updates:
        result = asyncio.run(dash.run_async())
    assert result is not None and result.ok
    assert dash.tabs.selected_index == 3
    assert set(dash.graph.statuses.values()) == {"completed"}
    assert [b.done for b in dash.panel.alias_bars.values()] == [b.total for b in dash.panel.alias_bars.values()]
    summary = updates.outputs[-1].data["text/html"]  # the static summary, for shared notebooks
    assert updates.outputs[-1].update and "summary below" in shown(dash.panel.summary)
    assert "codexflow-summary" in summary and "tester-1" in summary and "completed" in summary


def test_dashboard_with_a_fixed_plan(workdir: Path) -> None:
    dash = dashboard(plan=PHASED, latency_ms=10, log_file=None, runs_dir=None)
    assert dash.task_editor is None
    assert dash.panel.overall.total == 4
    result = asyncio.run(dash.run_async())
    assert result is not None and result.ok
    assert [t.key for t in result.tasks] == ["d1", "d2", "b1", "b2"]


def test_open_analysis_shows_charts_of_the_last_run(workdir: Path) -> None:
    panel = RunPanel(EXAMPLE, latency_ms=10, aliases={"reviewer": {"id": "code-analyzer"},
                                                     "architect": {"id": "system-architect"}})
    assert panel.analysis_button.disabled
    asyncio.run(panel.run_async())
    assert not panel.analysis_button.disabled
    panel.analysis_button.click()
    kinds = [set(o["data"]) for o in panel.analysis_out.outputs]
    assert PLOTLY_MIME in kinds[0] and "text/html" in kinds[1]


def test_live_view_and_static_renderings() -> None:
    published: list[dict[str, str]] = []
    plan = Plan.from_task_map(EXAMPLE)
    view = LiveView(plan, interval=0.1, publish=published.append, timers=False)
    view.show()
    run_started = {"kind": "run_started", "runId": "r1", "runtime": "stub",
                   "aliases": {"reviewer": {"agentId": "code-analyzer", "limit": 2}}}
    view(run_started)
    view({"kind": "task_started", "key": "reviewer-1", "alias": "reviewer"})
    view({"kind": "task_chunk", "key": "reviewer-1", "alias": "reviewer", "content": "<b>hi</b>"})
    view({"kind": "task_failed", "key": "reviewer-1", "alias": "reviewer", "ms": 12.0,
          "error": {"type": "X", "message": "it broke"}})
    view({"kind": "run_complete", "ok": False, "ms": 20.0})
    assert len(published) == 2  # the first draw, then (held back updates dropped) the summary
    final = published[-1]
    assert "&lt;b&gt;hi&lt;/b&gt;" in final["text/html"]  # streamed text is escaped
    assert "it broke" in final["text/html"] and "failed" in final["text/plain"]
    state = RunState(plan)
    assert state.total == 3 and state.done == 0


def test_run_live_shows_a_run_without_widgets(workdir: Path, shell: Any) -> None:
    from IPython.utils.capture import capture_output

    seen = Collector()
    with capture_output() as cap:
        result = asyncio.run(run_live(EXAMPLE, on_event=seen, stream=True, latency_ms=20,
                                      log_file=None, runs_dir=None, aliases={
                                          "reviewer": {"id": "code-analyzer"},
                                          "architect": {"id": "system-architect"}}))
    assert result.ok and seen.kinds("run_complete")
    first, last = cap.outputs[0], cap.outputs[-1]
    assert "not started" in first.data["text/plain"] and not first.update
    assert last.update and "codexflow-summary" in last.data["text/html"]
    assert all(set(o.data) == {"text/html", "text/plain"} for o in cap.outputs)


@pytest.mark.slow
def test_a_saved_notebook_keeps_the_static_summary(workdir: Path) -> None:
    import nbclient
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
                    "import codexflow_nb\n"
                    "dash = codexflow_nb.dashboard(latency_ms=20, log_file=None, runs_dir=None)\n"
                    "dash"),
                nbformat.v4.new_code_cell("result = await dash.run_async()\nprint(result.ok)")]
    nbclient.NotebookClient(nb, timeout=60, kernel_name="python3",
                            resources={"metadata": {"path": str(workdir)}}).execute()
    widget, summary = nb.cells[0].outputs
    assert "application/vnd.jupyter.widget-view+json" in widget["data"]
    assert "reviewer-1" in widget["data"]["text/html"]  # the no-widget fallback
    html = summary["data"]["text/html"]  # filled by the run in the next cell
    assert "codexflow-summary" in html and html.count(">completed</span>") == 5
    assert nb.cells[1].outputs[0]["text"].strip() == "True"

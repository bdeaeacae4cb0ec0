"""The dashboard at scale, without a browser: comm messages per second from synthetic event
streams of 500 and 5,000 tasks, live widget models after close(), the plan graph's size at
12 to 5,000 tasks, Stop under load in a 5,000-task stub run, disclosures that stay open,
and problems that go away once fixed."""

from __future__ import annotations

import asyncio
import html
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ipywidgets as w
import pytest

from codexflow_nb import Plan
from codexflow_nb.widgets import (
    AliasEditor,
    Dashboard,
    LiveView,
    PlanGraph,
    RunPanel,
    TaskList,
    build_figure,
    live_models,
)
from codexflow_nb.widgets.bars import StatusBar, bar_text
from codexflow_nb.widgets.palette import STATUS_FILLS
from codexflow_nb.widgets.plan_graph import AGGREGATE_ABOVE, MAX_HEIGHT, plan_spec
from codexflow_nb.widgets.plan_svg import groups_svg, tasks_svg
from codexflow_nb.widgets.render import KEEP_OPEN_JS, render_html, summary_html, widget_html
from codexflow_nb.widgets.state import RunState

AGENTS = ["code-analyzer", "system-architect", "coder", "tester", "security-auditor"]


def scale_inputs(aliases: int, per_alias: int, limit: int = 10) -> tuple[dict, dict]:
    """``aliases`` aliases of ``per_alias`` tasks each, ``limit`` parallel tasks per alias."""
    alias_map = {f"a{i}": {"id": AGENTS[i % 5], "overrides": {"runtime": {"concurrency": {
        "max_parallel_tasks": limit}}}} for i in range(aliases)}
    tasks = {a: [f"Task {j} of {a}" for j in range(per_alias)] for a in alias_map}
    return tasks, alias_map


def shown(widget: w.Widget) -> str:
    return html.unescape(widget.value)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[float, str, int]]]:
    """Every comm message a widget sends: (time, widget class, bytes)."""
    log: list[tuple[float, str, int]] = []
    original = w.Widget._send

    def send(self: w.Widget, msg: Any, buffers: Any = None) -> None:
        log.append((time.monotonic(), type(self).__name__, len(json.dumps(msg, default=str))))
        original(self, msg, buffers)

    monkeypatch.setattr(w.Widget, "_send", send)
    yield log


# -- comm messages per second ------------------------------------------------------------------

def _synthetic_run(dash: Dashboard, seconds: float = 2.0, chunks: int = 4) -> float:
    """Feed the dashboard a run's events as the engine would, spread over ``seconds``:
    every task queued at once, then started, streamed and completed in order. Returns the
    seconds it took (the widgets redraw on the loop's timers meanwhile)."""
    plan = dash.plan()
    tasks = plan.tasks
    on_event = dash.panel._on_event

    async def main() -> float:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        on_event({"kind": "run_started", "runId": "r1", "runtime": "stub", "aliases": {
            a: {"agentId": "x", "limit": 10} for a in dict.fromkeys(t.alias for t in tasks)}})
        for t in tasks:
            on_event({"kind": "task_queued", "key": t.key, "alias": t.alias, "task": t.text})
        steps = 20
        per_step = -(-len(tasks) // steps)
        for step in range(steps):
            for t in tasks[step * per_step:(step + 1) * per_step]:
                on_event({"kind": "task_started", "key": t.key, "alias": t.alias, "attempt": 1})
                for c in range(chunks):
                    on_event({"kind": "task_chunk", "key": t.key, "alias": t.alias,
                              "content": f"chunk {c} of {t.key}\n"})
                on_event({"kind": "task_complete", "key": t.key, "alias": t.alias, "ms": 5.0})
            await asyncio.sleep(seconds / steps)
        on_event({"kind": "run_complete", "ok": True, "ms": seconds * 1000})
        return loop.time() - t0

    return asyncio.run(main())


@pytest.mark.parametrize("per_alias", [100, 1000])
def test_comm_messages_per_second_do_not_grow_with_the_tasks(
        workdir: Path, sent: list[tuple[float, str, int]], per_alias: int) -> None:
    tasks, aliases = scale_inputs(5, per_alias)
    dash = Dashboard(tasks, aliases=aliases, log_file=None, runs_dir=None)
    dash.tabs.selected_index = 3  # the plan graph is shown, as during a run
    sent.clear()
    renders = dash.graph.renders
    elapsed = _synthetic_run(dash)
    events = 2 + len(dash.plan()) * 7
    rate = len(sent) / elapsed
    kb = sum(n for _t, _w, n in sent) / elapsed / 1024
    # one redraw of the panel per 0.25 s (progress, labels, titles, the shown page of
    # outputs) and of the graph per 1 s, whatever the number of events
    assert dash.panel.frames <= elapsed / dash.panel.stream_interval + 3
    assert dash.graph.renders - renders <= elapsed / 1.0 + 2
    assert rate < 120, (len(sent), elapsed, events)
    assert kb < 200, kb
    assert dash.panel.overall.done == len(dash.plan())
    assert all(shown(lbl).startswith(f"{per_alias}/{per_alias} done")
               for lbl in dash.panel.alias_labels.values())
    print(f"\n{len(dash.plan())} tasks, {events} events in {elapsed:.2f} s: {len(sent)} "
          f"widget messages ({rate:.0f}/s, {kb:.0f} KB/s), {dash.panel.frames} panel redraws, "
          f"{dash.graph.renders - renders} graph redraws")
    dash.close()


def test_a_hidden_graph_sends_nothing_and_catches_up_when_shown(workdir: Path) -> None:
    tasks, aliases = scale_inputs(5, 100)
    dash = Dashboard(tasks, aliases=aliases, log_file=None, runs_dir=None)
    dash.tabs.selected_index = 2  # the Tasks tab: the graph is hidden
    before = dash.graph.renders
    _synthetic_run(dash, seconds=0.6)
    assert dash.graph.renders == before and dash.graph._stale
    dash.tabs.selected_index = 3
    assert dash.graph.renders == before + 1
    assert "500/500" not in dash.graph.view.value and "100/100 done" in dash.graph.view.value
    dash.close()


# -- widget models after close() ----------------------------------------------------------------

def test_closing_dashboards_frees_every_widget_model(workdir: Path) -> None:
    Dashboard(log_file=None, runs_dir=None).close()  # imports and caches warmed up
    before = live_models()
    for _ in range(20):
        Dashboard(log_file=None, runs_dir=None).close()
    assert live_models() == before  # ~390 models per dashboard, all freed
    dash = Dashboard(latency_ms=5, log_file=None, runs_dir=None)
    made = live_models() - before
    result = asyncio.run(dash.run_async())
    assert result is not None and result.ok
    for row in dash.alias_editor.rows:  # edits replace rows, boxes and bars: the old ones go
        row.parallel.value += 1
    dash.task_editor.boxes["reviewer"].value += "\nOne more review"
    assert live_models() - before <= made + 10
    dash.close()
    assert live_models() == before


@pytest.mark.parametrize("make", [
    lambda: RunPanel({"coder": ["x", "y"]}, log_file=None, runs_dir=None),
    lambda: PlanGraph(Plan.from_task_map(scale_inputs(5, 100)[0])),
    lambda: AliasEditor(),
    lambda: TaskList(RunState(Plan.from_task_map(scale_inputs(2, 50)[0])), page_size=10),
])
def test_each_composed_widget_closes_its_children(workdir: Path, make: Any) -> None:
    make().close()
    before = live_models()
    widget = make()
    assert live_models() > before
    widget.close()
    assert live_models() == before


def test_a_big_run_keeps_the_number_of_widgets_small(workdir: Path) -> None:
    before = live_models()
    tasks, aliases = scale_inputs(5, 1000)
    dash = Dashboard(tasks, aliases=aliases, log_file=None, runs_dir=None)
    assert live_models() - before < 600  # a page of 20 outputs, not 5,000
    assert len(dash.panel.accordion.children) == 20
    dash.close()
    assert live_models() == before


# -- the plan graph at any size -------------------------------------------------------------------

@pytest.mark.parametrize(("aliases", "per_alias"), [(4, 3), (5, 12), (5, 100), (5, 1000)])
def test_the_plan_graph_stays_small(aliases: int, per_alias: int) -> None:
    plan = Plan.from_task_map(scale_inputs(aliases, per_alias)[0])
    n = len(plan)
    fig = build_figure(plan)
    assert fig.layout.height <= MAX_HEIGHT < 700
    assert len(fig.data) <= 20  # traces: per alias, per status, legend entries; not per task
    spec = json.dumps(plan_spec(plan))
    svg = groups_svg(plan) if n > AGGREGATE_ABOVE else tasks_svg(plan)
    height = float(re.search(r'viewBox="0 0 [\d.]+ ([\d.]+)"', svg).group(1))
    assert height <= MAX_HEIGHT
    if n > AGGREGATE_ABOVE:  # one bar per alias and phase with counts, whatever the size
        assert fig.layout.barmode == "overlay" and len(spec) < 20_000 and len(svg) < 20_000
        assert svg.count("0/" + str(per_alias) + " done") == aliases
    else:  # every task a node, in a grid: at most 11 rows
        nodes = [t for t in fig.data if t.legendgroup is None and t.name.startswith("a")]
        assert sum(len(t.x) for t in nodes) == n
        assert len({y for t in nodes for y in t.y}) <= 11
        assert svg.count("<title>") == n
    print(f"\n{n} tasks: figure {fig.layout.height} px, {len(fig.data)} traces, {len(spec)} B "
          f"JSON; SVG {height:.0f} px, {len(svg)} B")


def test_a_group_expands_into_its_tasks() -> None:
    plan = Plan.from_task_map(scale_inputs(5, 100)[0])
    graph = PlanGraph(plan)
    assert graph.aggregated and graph.show.layout.display is None
    assert [label for label, _v in graph.show.options][:3] == [
        "all groups", "a0 · main (100 tasks)", "a1 · main (100 tasks)"]
    graph.expand("a1", 0)
    assert not graph.aggregated and graph.view.value.count("<title>") == 100
    assert "a1 · main: 100 task(s)" in graph.view.value
    figure = graph.figure()
    assert sum(len(t.x) for t in figure.data if t.name == "a1" and t.legendgroup is None) == 100
    graph.set_plan(plan)  # an edit keeps the expansion
    assert graph.group == ("a1", 0)
    graph.expand(None)
    assert graph.aggregated
    graph.close()


def test_status_is_a_colour_blind_safe_fill_apart_from_the_alias_outline() -> None:
    plan = Plan.from_task_map({"a": ["x", "y"], "b": ["z"], "c": ["w"]})
    svg = tasks_svg(plan, {"a-1": "cancelled", "a-2": "failed", "b-1": "completed"})
    assert "status (fill)" in svg and "alias (outline, shape)" in svg
    assert 'class="s-cancelled"' in svg and 'class="s-failed"' in svg
    assert STATUS_FILLS["cancelled"] != STATUS_FILLS["failed"]
    assert STATUS_FILLS["failed"] == "#d55e00" and STATUS_FILLS["completed"] == "#009e73"
    assert "<circle" in svg and "<polygon" in svg  # a shape per alias (c is a diamond)


def test_only_real_dependencies_get_arrows() -> None:
    plan = Plan.from_data({"phases": [
        {"name": "one", "tasks": [{"id": f"x{i}", "alias": "a", "task": "t"} for i in range(20)]},
        {"name": "two", "tasks": [{"id": f"y{i}", "alias": "b", "task": "t"} for i in range(20)]
         + [{"id": "z", "alias": "b", "task": "t", "dependsOn": ["x3"]}]},
    ]})
    assert len(plan.edges()["y0"]) == 20  # each waits for the whole first phase ...
    svg = tasks_svg(plan)
    assert svg.count('class="edge"') == 1  # ... which the columns say; one real arrow


def test_status_bars_split_done_failed_cancelled_and_running() -> None:
    """A progress bar is split by status, each in its colour (after Stop a bar shows what
    completed as well as what was cancelled), and its static copy is an image saying the
    same counts."""
    bar = StatusBar(description="a1")
    bar.show({"completed": 40, "failed": 5, "cancelled": 30, "running": 5, "queued": 20}, 100)
    segments = re.findall(r'<rect data-status="(\w+)" x="([\d.]+)" width="([\d.]+)" '
                          r'height="\d+" fill="(#\w+)"', bar.value)
    assert [(st, float(x), float(width)) for st, x, width, _f in segments] == [
        ("completed", 0, 120), ("failed", 120, 15), ("cancelled", 135, 90), ("running", 225, 15)]
    assert all(fill == STATUS_FILLS[st] for st, _x, _w, fill in segments)
    assert bar.done == 75 and bar.running == 5 and bar.total == 100
    text = "a1: 75/100 done · 40 completed · 5 failed · 30 cancelled · 5 running"
    assert bar_text(bar.counts, 100, "a1") == text
    static = widget_html(bar)  # GitHub drops inline SVG but keeps images
    assert "<svg" not in static and "data:image/svg+xml;base64," in static
    assert f'alt="{text}"' in html.unescape(static)
    bar.show({}, 100)
    assert "data-status" not in bar.value and bar.done == 0
    bar.close()


# -- Stop under load ------------------------------------------------------------------------------

def test_stop_reaches_the_engine_within_a_second_at_5000_tasks(workdir: Path) -> None:
    tasks, aliases = scale_inputs(5, 1000)
    dash = Dashboard(tasks, aliases=aliases, latency_ms=100, chunks=4, log_file=None,
                     runs_dir=None)
    seen: list[tuple[float, str]] = []
    dash.panel.subscribers.append(lambda e: seen.append((time.monotonic(), e["kind"])))
    marks: dict[str, float] = {}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stalls = [0.0]

        async def watch() -> None:  # how long the loop is held at a time
            last = loop.time()
            while True:
                await asyncio.sleep(0.01)
                stalls.append(loop.time() - last - 0.01)
                last = loop.time()

        def stop() -> None:
            marks["clicked"] = time.monotonic()
            dash.panel.stop_button.click()

        watcher = loop.create_task(watch())
        dash.panel.run_button.click()
        marks["planned"] = time.monotonic() + 2.0
        loop.call_later(2.0, stop)
        await dash.panel.task
        marks["done"] = time.monotonic()
        watcher.cancel()
        marks["stall"] = max(stalls)

    asyncio.run(main())
    lag = marks["clicked"] - marks["planned"]
    first_cancel = next(t for t, kind in seen if kind == "task_cancelled")
    counts = dash.panel.state.counts()
    print(f"\nStop: click handled {lag * 1000:.0f} ms late, first task_cancelled "
          f"{(first_cancel - marks['clicked']) * 1000:.1f} ms after it, run over "
          f"{(marks['done'] - marks['clicked']) * 1000:.0f} ms after it; longest loop stall "
          f"{marks['stall'] * 1000:.0f} ms; {counts}")
    assert lag < 0.5  # the loop was free to take the click
    assert first_cancel - marks["clicked"] < 1.0
    assert marks["done"] - marks["clicked"] < 1.0
    assert set(counts) == {"completed", "cancelled"} and counts["cancelled"] > 1000
    assert sum(counts.values()) == 5000
    panel = dash.panel
    # the bars split by status: completed and cancelled side by side, nothing "failed"
    assert panel.overall.counts == counts
    assert 'data-status="cancelled"' in panel.overall.value
    assert f'fill="{STATUS_FILLS["cancelled"]}"' in panel.overall.value
    assert STATUS_FILLS["failed"] not in panel.overall.value
    assert f"{counts['cancelled']} cancelled" in shown(panel.overall_label)
    dash.close()


# -- disclosures that stay open -------------------------------------------------------------------

def test_an_opened_task_output_stays_open_across_redraws_filters_and_pages() -> None:
    plan = Plan.from_task_map(scale_inputs(2, 30)[0])
    state = RunState(plan)
    view = TaskList(state, page_size=10)
    assert view.controls.layout.display is None  # 60 tasks: filter and pages
    view.accordion.selected_index = 3  # the user opens a0-4
    assert view.open_key == "a0-4"
    for key in ("a0-1", "a0-4", "a1-2"):
        state.apply({"kind": "task_started", "key": key, "alias": key[:2]})
        state.apply({"kind": "task_chunk", "key": key, "alias": key[:2], "content": "hi"})
    view.refresh({"a0-1", "a0-4", "a1-2"})
    assert view.accordion.selected_index == 3 and "hi" in view.outputs["a0-4"].value
    view.filter.value = "active"  # the running ones: a0-1, a0-4, a1-2
    assert view.shown_keys == ["a0-1", "a0-4", "a1-2"] and view.accordion.selected_index == 1
    state.apply({"kind": "task_complete", "key": "a0-4", "alias": "a0"})
    view.refresh({"a0-4"})  # no longer active, but open: it stays
    assert view.shown_keys == ["a0-1", "a0-4", "a1-2"] and view.accordion.selected_index == 1
    view.filter.value = "all"
    view.show_page(2)  # the user pages away: nothing open there
    assert view.accordion.selected_index is None and view.open_key == "a0-4"
    view.show_page(0)  # and back: open again
    assert view.accordion.selected_index == 3
    view.accordion.selected_index = None  # the user closes it
    assert view.open_key is None
    view.show_task("a1-9")
    assert view.page == 3 and view.shown_keys[view.accordion.selected_index] == "a1-9"
    view.close()


def test_the_magic_view_keeps_opened_blocks_open_in_the_browser() -> None:
    """The live view (``%%codexflow``, ``run_live``) carries a script that remembers, in the
    output's element, which blocks are open (by task key) and opens them again after each
    redraw; the final summary needs none (it is matched by the same keys)."""
    plan = Plan.from_task_map({"reviewer": ["x", "y"]})
    published: list[dict[str, str]] = []
    view = LiveView(plan, publish=published.append, timers=False)
    view.show()
    assert published[-1]["text/html"].endswith(KEEP_OPEN_JS + "</div>")
    assert "<summary><code>reviewer-1</code>" in published[-1]["text/html"]
    view.finish()
    assert "<script" not in published[-1]["text/html"]  # the stored summary stays plain
    assert "<code>reviewer-1</code>" in published[-1]["text/html"]


def test_long_runs_list_the_tasks_that_need_a_look_first() -> None:
    plan = Plan.from_task_map(scale_inputs(5, 1000)[0])
    state = RunState(plan)
    state.apply({"kind": "task_failed", "key": "a3-500", "alias": "a3",
                 "error": {"message": "boom"}})
    state.apply({"kind": "task_started", "key": "a4-7", "alias": "a4"})
    page = summary_html(state)
    assert len(page) < 30_000 and "a3-500" in page and "boom" in page
    assert "4950 more tasks not listed" in page
    live = render_html(state, max_tasks=30)
    assert live.count("<details>") == 30 and "a4-7" in live


# -- stale state ------------------------------------------------------------------------------------

def test_fixing_an_input_clears_its_problem_everywhere(workdir: Path) -> None:
    dash = Dashboard(latency_ms=5, log_file=None, runs_dir=None)
    tasks = dash.task_editor
    tasks.boxes["reviewer"].value += "\nReview more"
    box = tasks.boxes.get("reviewr") or tasks.boxes["reviewer"]
    tasks.load({**tasks.value, "reviewr": ["A task for a typo"]})  # an alias that is not there
    problem = ("tasks: 'reviewr' is neither an alias (reviewer, reviewer2, architect) nor an "
               "agent (did you mean 'reviewer' or 'reviewer2'?)")
    assert box is not None
    assert dash.problem_list == [problem]  # no absolute paths
    assert shown(tasks.message).count(problem) == 1  # next to the tasks ...
    assert "⚠ 1 problem to fix before Run" in shown(dash.problems)  # ... and counted by Run
    assert dash.graph.message.value == "" and dash.panel.message.value == ""
    # the panel follows the inputs even while they cannot run
    assert shown(dash.panel.overall_label) == "no runnable tasks"
    assert dash.panel.alias_bars == {} and dash.panel.accordion.children == ()

    async def click() -> None:
        dash.panel.run_button.click()

    asyncio.run(click())
    assert dash.panel.task is None and dash.panel.message.value == ""  # counted, not repeated
    data = dict(tasks.value)
    data["reviewer"] = data["reviewer"] + data.pop("reviewr")
    tasks.load(data)
    assert dash.problem_list == [] and shown(dash.problems) == ""
    assert "⚠" not in tasks.message.value and dash.panel.message.value == ""
    assert dash.panel.overall.total == 7 and "not started" in shown(dash.panel.overall_label)
    dash.close()


def test_unknown_agents_get_a_suggestion_without_paths(workdir: Path) -> None:
    editor = AliasEditor({"rev": {"id": "code-analyser"}})
    [problem] = editor.problems
    assert problem == "rev: unknown agent 'code-analyser' (did you mean 'code-analyzer'?)"
    assert shown(editor.rows[0].message).count("⚠") == 1 and shown(editor.message) == ""
    editor.rows[0].agent.value = "code-analyzer"
    assert editor.problems == [] and editor.rows[0].message.value == ""
    editor.close()


def test_a_new_run_replaces_the_last_analysis(workdir: Path) -> None:
    panel = RunPanel({"reviewer": ["x"]}, latency_ms=5, aliases={"reviewer": {"id": "coder"}})
    asyncio.run(panel.run_async())
    panel.analysis_button.click()
    assert panel.analysis_out.outputs
    asyncio.run(panel.run_async())
    assert panel.analysis_out.outputs == () and panel.analysis_button.disabled is False
    panel.close()

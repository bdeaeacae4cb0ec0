"""Charts from engine-written logs: the expected traces, with the numbers of the frames."""

from __future__ import annotations

import asyncio
import inspect
import sys
import types

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import pytest

from codexflow_nb import ConfigError, charts, run_async
from codexflow_nb.analysis import load_events, tasks_frame
from codexflow_nb.runtimes import RuntimeFailure, StubRuntime


class FailsBoom(StubRuntime):
    async def run(self, call, on_chunk=None):
        if "boom" in call.task:
            raise RuntimeFailure("exploded", type="HTTPError", status=500)
        return await super().run(call, on_chunk)


@pytest.fixture(scope="module")
def frames(tmp_path_factory, registry):
    base = tmp_path_factory.mktemp("charts")
    plan = {"phases": [{"name": "main", "tasks": [
        *({"id": f"w{i}", "alias": "w", "task": f"job {i}"} for i in range(6)),
        {"id": "boom", "alias": "a", "task": "boom"},
        {"id": "after", "alias": "a", "task": "after boom", "dependsOn": ["boom"]},
        {"id": "a2", "alias": "a", "task": "design"},
    ]}]}
    aliases = {"w": {"id": "code-analyzer",
                     "overrides": {"runtime": {"concurrency": {"max_parallel_tasks": 2}}}},
               "a": {"id": "system-architect",
                     "overrides": {"runtime": {"concurrency": {"max_parallel_tasks": 1}}}}}
    asyncio.run(run_async(plan=plan, aliases=aliases, runtime=FailsBoom(30), registry=registry,
                          log_file=base / "events.jsonl", runs_dir=None))
    events = load_events(base / "events.jsonl")
    return events, tasks_frame(events)


CHARTS = [charts.timeline, charts.concurrency, charts.latency, charts.usage]


def test_timeline_traces(frames):
    events, tasks = frames
    fig = charts.timeline(tasks)
    assert isinstance(fig, go.Figure)
    names = [t.name for t in fig.data]
    assert names == ["completed", "failed", "not started"]
    done = fig.data[0]
    assert isinstance(done, go.Bar) and done.orientation == "h" and len(done.y) == 7
    assert set(done.y) == {"w #1", "w #2", "a #1"}  # never more lanes than the limit
    assert list(fig.data[1].y) == ["a #1"]
    # 'after' was skipped: an x in a row of its own, covering no bar
    assert fig.data[2].mode == "markers" and list(fig.data[2].y) == ["a · not started"]
    started = tasks.set_index("key").loc["w0"]
    i = [c[0] for c in done.customdata].index("w/w0")
    assert done.x[i] == pytest.approx((started["finished"] - started["started"]).total_seconds() * 1000)
    origin = min(tasks["queued"].min(), tasks["started"].min())
    assert done.base[i] == pytest.approx((started["started"] - origin).total_seconds() * 1000)
    assert list(fig.layout.yaxis.categoryarray) == ["a #1", "a · not started", "w #1", "w #2"]
    # an events frame works as well
    assert [t.name for t in charts.timeline(events).data] == names


def test_time_axes_are_ms_or_s_since_the_start(frames):
    _, tasks = frames
    fig = charts.timeline(tasks)
    axis = fig.layout.xaxis
    assert axis.ticksuffix == " ms" and axis.type is None and axis.rangemode == "tozero"
    assert axis.title.text.startswith("time since 20") and axis.title.text.endswith(" UTC")
    # a run of minutes is drawn in s, then min
    slow = tasks.assign(started=tasks["started"] + (tasks["started"] - tasks["queued"]) * 5000,
                        finished=tasks["finished"] + (tasks["finished"] - tasks["queued"]) * 5000)
    assert charts.timeline(slow).layout.xaxis.ticksuffix in (" s", " min")
    assert charts.concurrency(tasks).layout.xaxis.ticksuffix == " ms"
    assert charts.latency(tasks).layout.yaxis.ticksuffix == " ms"
    assert charts.latency(tasks.assign(run_ms=tasks["run_ms"] * 1000)).layout.yaxis.ticksuffix == " s"


def test_lanes_in_slot_order_past_nine(frames):
    _, tasks = frames
    w = tasks[tasks["alias"] == "w"]
    same = w.assign(started=w["started"].min(), finished=w["finished"].max())
    crowd = pd.concat([same, same], ignore_index=True)  # 12 tasks at once: 12 slots
    order = list(charts.timeline(crowd).layout.yaxis.categoryarray)
    assert order == [f"w #{i}" for i in range(1, 13)]  # #10 after #9, not after #1


def test_concurrency_traces(frames):
    _, tasks = frames
    fig = charts.concurrency(tasks)
    assert [t.name for t in fig.data] == ["a", "limit", "w", "limit"]
    a, a_limit, w, w_limit = fig.data
    assert w.line.shape == "hv" and max(w.y) == 2 and w.y[-1] == 0 and max(a.y) == 1
    assert list(w_limit.y) == [2, 2] and list(a_limit.y) == [1, 1]
    # one panel per alias, titled with its limit, the limit among the ticks
    assert (a.yaxis, a_limit.yaxis, w.yaxis) == ("y", "y", "y2")
    assert [n.text for n in fig.layout.annotations] == ["a · limit 1", "w · limit 2"]
    assert 2 in fig.layout.yaxis2.tickvals and fig.layout.yaxis2.tickformat == "d"


def test_limit_lines_differ_from_the_concurrency_they_bound(frames):
    _, tasks = frames
    fig = charts.concurrency(tasks)
    running = [t for t in fig.data if t.name != "limit"]
    limits = [t for t in fig.data if t.name == "limit"]
    for r in running:
        assert r.line.dash in (None, "solid") and r.fill == "tozeroy"
    for lim in limits:
        assert lim.line.dash == "dash" and lim.fill is None
        assert lim.line.color not in {r.line.color for r in running}
    assert [t.showlegend for t in limits] == [True, False]  # one legend entry says "limit"


def _spread(tasks):
    """The stub's times are all about 30 ms; give them a spread the box can show."""
    return tasks.assign(run_ms=[30.0 + 10 * i for i in range(len(tasks))])


def test_latency_traces(frames):
    _, tasks = frames
    tasks = _spread(tasks)
    fig = charts.latency(tasks)
    assert [type(t) for t in fig.data] == [go.Box, go.Box]
    assert [t.name for t in fig.data] == ["w", "a"]  # in the order the aliases appear
    assert len(fig.data[0].y) == 6 and len(fig.data[1].y) == 1  # completed tasks only
    assert fig.data[0].boxpoints == "all"  # the box and every task as a point
    assert isinstance(charts.latency(tasks, kind="violin").data[0], go.Violin)
    with pytest.raises(ValueError, match="box"):
        charts.latency(tasks, kind="pie")


def _is_strip(trace) -> bool:
    return (isinstance(trace, go.Box) and trace.boxpoints == "all"
            and trace.fillcolor == "rgba(255,255,255,0)" and trace.line.color == "rgba(255,255,255,0)")


def test_latency_of_equal_times_is_a_strip(frames):
    _, tasks = frames
    fig = charts.latency(_spread(tasks))
    assert not _is_strip(fig.data[0]) and _is_strip(fig.data[1])  # 'a' has one completed task
    same = tasks.assign(run_ms=250.0)
    fig = charts.latency(same)
    assert all(_is_strip(t) for t in fig.data) and list(fig.data[0].y) == [250.0] * 6
    nearly = _spread(tasks).assign(run_ms=lambda t: 250.0 + t["run_ms"] / 1000)  # within 1 %
    assert all(_is_strip(t) for t in charts.latency(nearly).data)
    assert all(_is_strip(t) for t in charts.latency(_spread(tasks), kind="strip").data)
    assert all(_is_strip(t) for t in charts.latency(same, kind="violin").data)


def test_usage_traces(frames):
    _, tasks = frames
    fig = charts.usage(tasks)
    assert [t.name for t in fig.data] == ["tokens in", "tokens out", "cost (USD)"]
    per = tasks.groupby("alias", observed=True)[["tokens_in", "tokens_out", "cost"]].sum()
    assert list(fig.data[0].x) == ["w", "a"]
    assert list(fig.data[0].y) == [float(v) for v in per["tokens_in"]]
    assert list(fig.data[1].y) == [float(v) for v in per["tokens_out"]]
    assert list(fig.data[2].y) == pytest.approx(list(per["cost"]))
    assert fig.data[2].yaxis == "y2" and fig.data[2].xaxis == "x2"  # its own panel


def test_cost_is_currency_and_tokens_rounded(frames):
    _, tasks = frames
    fig = charts.usage(tasks)
    cost_axis, token_axis = fig.layout.yaxis2, fig.layout.yaxis
    assert cost_axis.tickformat.startswith("$") and cost_axis.tickformat.endswith("~f")
    assert token_axis.tickformat == "~s"
    assert all(t.startswith("$") for t in fig.data[2].text)
    # enough decimals for the amounts, no more
    assert charts._money_format(0.0004) == "$,.6~f" and charts._money_format(12.5) == "$,.2~f"
    assert charts._usd(0.000605, "$,.6~f") == "$0.000605" and charts._usd(12.5, "$,.2~f") == "$12.5"
    assert charts._usd(3.0, "$,.2~f") == "$3" and charts._usd(1234.5, "$,.2~f") == "$1,234.5"
    # an unknown model: no bar, a note saying why
    unpriced = charts.usage(tasks.assign(cost=float("nan")))
    assert [a.text for a in unpriced.layout.annotations] == ["no price", "no price"]


@pytest.mark.parametrize("chart", CHARTS)
def test_legend_sits_above_the_plot(frames, chart):
    """Inside the figure (not cut off) and between the title and the plot area (covering no
    data), in one horizontal row."""
    _, tasks = frames
    fig = chart(tasks)
    legend, height = fig.layout.legend, fig.layout.height
    assert legend.orientation == "h" and legend.yref == "container" and legend.yanchor == "top"
    assert legend.x == 0 and legend.xanchor == "left"
    top_px = (1 - legend.y) * height  # from the top of the figure
    title_px = (1 - fig.layout.title.y) * height
    assert title_px < top_px and top_px + 22 <= fig.layout.margin.t


@pytest.mark.parametrize("chart", CHARTS)
def test_every_chart_takes_the_same_keywords(frames, chart):
    _, tasks = frames
    params = inspect.signature(chart).parameters
    assert set(charts.CHART_OPTIONS) <= set(params)
    assert all(params[p].kind is inspect.Parameter.KEYWORD_ONLY
               for p in charts.CHART_OPTIONS if p != "title")
    fig = chart(tasks, title="T", color="alias", template="plotly_dark", height=510, width=777,
                color_discrete_map={"w": "#123456"})
    assert fig.layout.title.text == "T" and fig.layout.height == 510 and fig.layout.width == 777
    assert fig.layout.template == pio.templates["plotly_dark"]
    colors = {str(c) for t in fig.data for c in _trace_colors(t)}
    assert "#123456" in colors
    assert chart(tasks, color=None).data  # one colour for everything
    with pytest.raises(ValueError, match="not a column"):
        chart(tasks, color="nope")


def _trace_colors(trace) -> list:
    marker = getattr(trace, "marker", None)
    color = marker.color if marker is not None else None
    line = getattr(trace, "line", None)
    out = list(color) if isinstance(color, (list, tuple)) else [color]
    return out + [line.color if line is not None else None]


def test_colour_by_another_column(frames):
    _, tasks = frames
    fig = charts.timeline(tasks, color="alias")
    assert [t.name for t in fig.data][:2] == ["w", "a"] and fig.layout.legend.title.text == "alias"
    assert fig.data[0].marker.color == pio.templates["plotly"].layout.colorway[0]  # px default
    fig = charts.latency(tasks, color="agent")
    assert fig.layout.boxmode == "group" and fig.layout.showlegend
    fig = charts.timeline(tasks, color_discrete_sequence=["#111111", "#222222"], color="alias")
    assert [t.marker.color for t in fig.data[:2]] == ["#111111", "#222222"]


def test_empty_frames_give_an_explained_figure(frames):
    _, tasks = frames
    for chart in CHARTS:
        fig = chart(tasks.iloc[0:0], template="simple_white")
        assert len(fig.data) == 0 and fig.layout.annotations[0].text.startswith("no ")
        assert fig.layout.template == pio.templates["simple_white"]


def test_report_figures_reference_plotlyjs_once(frames):
    _, tasks = frames
    figs = [chart(tasks) for chart in CHARTS]
    page = charts.figures_html(figs, static_images=False)
    assert page.count("<script") == 1 + 1 + len(figs)  # config, plotly.js, one per chart
    assert page.count(" src=") == 1 and "integrity='sha256-" in page
    assert page.count("Plotly.newPlot(") == 4 and len(page) < 100_000
    assert len(charts.figures_html(figs, plotlyjs="inline", static_images=False)) > 3_000_000
    with pytest.raises(ValueError, match="cdn, inline, directory"):
        charts.plotlyjs_html("nowhere")


def test_static_fallback_without_kaleido(monkeypatch, capsys):
    before = pio.renderers.default
    monkeypatch.setitem(sys.modules, "kaleido", None)  # import fails
    assert charts.use_static_fallback() is False
    assert "kaleido is not installed" in capsys.readouterr().err
    assert pio.renderers.default == before
    with pytest.raises(ConfigError, match="kaleido is not installed"):
        charts.use_static_fallback(strict=True)


def test_static_fallback_needs_a_chromium(monkeypatch, capsys):
    before = pio.renderers.default
    fake = types.ModuleType("kaleido")
    started: list[dict] = []
    fake.start_sync_server = lambda **kw: started.append(kw)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "kaleido", fake)
    monkeypatch.delenv("BROWSER_PATH", raising=False)
    monkeypatch.setattr(charts.shutil, "which", lambda name: None)
    assert charts.use_static_fallback() is False
    assert "no Chromium found" in capsys.readouterr().err
    monkeypatch.setenv("BROWSER_PATH", "/usr/bin/chromium")
    try:
        assert charts.use_static_fallback() is True
        assert pio.renderers.default == "plotly_mimetype+png"
        assert started == [{"silence_warnings": True}]  # one Chromium for every image
    finally:
        pio.renderers.default = before

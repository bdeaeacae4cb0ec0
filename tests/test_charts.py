"""Charts from engine-written logs: the expected traces, with the numbers of the frames."""

from __future__ import annotations

import asyncio
import sys
import types

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
    assert fig.data[2].mode == "markers" and len(fig.data[2].x) == 1  # 'after' was skipped
    started = tasks.set_index("key").loc["w0"]
    i = [c[0] for c in done.customdata].index("w/w0")
    assert done.x[i] == pytest.approx((started["finished"] - started["started"]).total_seconds() * 1000)
    # an events frame works as well
    assert [t.name for t in charts.timeline(events).data] == names


def test_concurrency_traces(frames):
    _, tasks = frames
    fig = charts.concurrency(tasks)
    assert [t.name for t in fig.data] == ["a", "a limit", "w", "w limit"]
    w, w_limit = fig.data[2], fig.data[3]
    assert w.line.shape == "hv" and max(w.y) == 2 and w.y[-1] == 0
    assert list(w_limit.y) == [2, 2] and w_limit.line.dash == "dash"
    assert max(fig.data[0].y) == 1


def test_latency_and_usage_traces(frames):
    _, tasks = frames
    fig = charts.latency(tasks)
    assert [type(t) for t in fig.data] == [go.Box, go.Box]
    assert [t.name for t in fig.data] == ["w", "a"]  # in the order the aliases appear
    assert len(fig.data[0].y) == 6 and len(fig.data[1].y) == 1  # completed tasks only
    assert isinstance(charts.latency(tasks, kind="violin").data[0], go.Violin)
    with pytest.raises(ValueError, match="box"):
        charts.latency(tasks, kind="pie")
    fig = charts.usage(tasks)
    assert [t.name for t in fig.data] == ["tokens in", "tokens out", "cost (USD)"]
    per = tasks.groupby("alias", observed=True)[["tokens_in", "tokens_out", "cost"]].sum()
    assert list(fig.data[0].x) == ["w", "a"]
    assert list(fig.data[0].y) == [float(v) for v in per["tokens_in"]]
    assert list(fig.data[1].y) == [float(v) for v in per["tokens_out"]]
    assert list(fig.data[2].y) == pytest.approx(list(per["cost"]))
    assert fig.data[2].yaxis == "y2"


def test_empty_frames_give_an_explained_figure(frames):
    _, tasks = frames
    for chart in (charts.timeline, charts.concurrency, charts.latency, charts.usage):
        fig = chart(tasks.iloc[0:0])
        assert len(fig.data) == 0 and fig.layout.annotations[0].text.startswith("no ")


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

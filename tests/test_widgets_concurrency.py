"""ConcurrencyView: tasks running at once per alias against its limit, from run events only
(peaks, the global cap, retries, a replay from the log), coalesced redraws, a static copy
for saved notebooks, and close() leaving no model behind."""

from __future__ import annotations

import asyncio
import html
import json
from pathlib import Path

import pytest

import codexflow_nb
from codexflow_nb.widgets import Concurrency, ConcurrencyView, live_models
from codexflow_nb.widgets.render import WIDGET_VIEW_MIME, widget_html

ALIASES = {
    "fast-review": {"id": "code-analyzer",
                    "overrides": {"runtime": {"concurrency": {"max_parallel_tasks": 3}}}},
    "deep-review": {"id": "code-analyzer",
                    "overrides": {"runtime": {"concurrency": {"max_parallel_tasks": 1}}}},
    "coders": {"id": "coder"},  # the agent's own limit: 4
}
TASKS = {"fast-review": [f"Review module {n}" for n in range(6)],
         "deep-review": [f"Deep-dive into subsystem {n}" for n in range(3)],
         "coders": [f"Implement feature {n}" for n in range(8)]}


def _run(view: ConcurrencyView, **options: object) -> codexflow_nb.RunResult:
    return asyncio.run(codexflow_nb.run_async(TASKS, aliases=ALIASES, on_event=view,
                                              latency_ms=40, jitter=0, **options))


def test_peaks_reach_each_alias_limit_and_never_more(workdir: Path) -> None:
    view = ConcurrencyView({"fast-review": 3, "deep-review": 1, "coders": 4})
    assert "not started" in view.value and view.value.count("<tr") == 1 + 3 + 1  # rows shown early
    result = _run(view)
    assert result.ok
    assert dict(view.peak) == {"fast-review": 3, "deep-review": 1, "coders": 4}
    assert view.total_peak == 8
    assert dict(view.done) == {"fast-review": 6, "deep-review": 3, "coders": 8}
    assert sum(view.running.values()) == 0 and view.counts.complete
    shown = html.unescape(view.value)
    assert f"run <code>{result.run_id}</code> · finished" in shown
    assert "<td style='text-align:right'>0/3</td><td style='text-align:right'>3</td>" in shown
    # 17 tasks make 34 start/end events; the view redrew far fewer times (0.1 s apart)
    assert view.renders < 20
    # the same peaks from the event log afterwards, without a view
    events = [json.loads(line) for line in Path(result.log_file).read_text().splitlines()]
    again = Concurrency.replay(events, run_id=result.run_id)
    assert again.peak == view.peak and again.total_peak == 8 and again.limits == view.limits
    view.close()


def test_the_global_cap_shows_and_holds(workdir: Path) -> None:
    view = ConcurrencyView()  # limits come from the run's run_started event
    result = _run(view, max_concurrency=3, log_file=None, runs_dir=None)
    assert result.ok and view.total_peak == 3
    assert view.limits == {"fast-review": 3, "deep-review": 1, "coders": 4}
    assert view.counts.max_concurrency == 3
    assert "<td style='text-align:right'>0/3</td><td style='text-align:right'>3</td>" in \
        view.value.split("<i>all</i>")[1]  # the "all" row: running/cap, peak
    view.close()


def test_a_retry_takes_no_second_slot_and_a_new_run_starts_over() -> None:
    counts = Concurrency()
    start = {"kind": "task_started", "alias": "a", "key": "a-1"}
    counts.apply({"kind": "run_started", "runId": "r1", "aliases": {"a": {"limit": 2}}})
    assert counts.apply(start) and not counts.apply(start)  # attempt 2 of the same task
    assert counts.running["a"] == 1 and counts.total_running == 1
    counts.apply({"kind": "task_failed", "alias": "a", "key": "a-1"})
    assert counts.running["a"] == 0 and counts.done["a"] == 1 and counts.peak["a"] == 1
    # an event of no interest changes nothing
    assert not counts.apply({"kind": "task_chunk", "alias": "a", "key": "a-1", "content": "x"})
    counts.apply({"kind": "run_started", "runId": "r2", "aliases": {"a": {"limit": 2}}})
    assert counts.peak["a"] == 0 and counts.done["a"] == 0 and counts.run_id == "r2"


def test_static_copy_and_display_bundle(workdir: Path) -> None:
    view = ConcurrencyView({"fast-review": 3, "deep-review": 1, "coders": 4})
    _run(view, log_file=None, runs_dir=None)
    static = widget_html(view)
    assert "<svg" not in static  # GitHub drops inline SVG: the slots are images
    assert static.count("data:image/svg+xml;base64,") == 3
    assert 'alt="fast-review: 0 running of 3, at most 3"' in html.unescape(static)
    bundle = view._repr_mimebundle_()
    assert WIDGET_VIEW_MIME in bundle and "codexflow-concurrency" in bundle["text/html"]
    assert bundle["text/plain"] == "<codexflow_nb.widgets.ConcurrencyView widget>"
    view.close()


def test_close_leaves_no_model_and_no_timer() -> None:
    before = live_models()

    async def main() -> None:
        view = ConcurrencyView({"a": 2}, interval=10)
        view({"kind": "run_started", "runId": "r", "aliases": {"a": {"limit": 2}}})
        view({"kind": "task_started", "alias": "a", "key": "a-1"})  # held back 10 s
        assert view._throttle.pending == ["view"]
        view.close()
        assert view._throttle.pending == [] and view.comm is None

    asyncio.run(main())
    assert live_models() == before


@pytest.mark.parametrize("limit", [30])
def test_many_slots_are_one_bar(limit: int) -> None:
    view = ConcurrencyView({"wide": limit})
    view.replay([{"kind": "run_started", "runId": "r", "aliases": {"wide": {"limit": limit}}},
                 *({"kind": "task_started", "alias": "wide", "key": f"w-{i}"} for i in range(15))])
    assert view.running["wide"] == 15 and view.value.count("<rect") == 3  # frame, peak, running
    assert 'width="89.5"' in view.value  # half of the 179-unit bar
    view.close()

"""RunPanel: choose a runtime, Run and Stop, watch progress and streamed output per task.

The panel prepares a run with :func:`codexflow_nb.api.prepare_run` (the CLI's engine) and
watches it only through events. A run started with the Run button is an asyncio task on the
kernel's loop, so Stop and other cells keep working while it runs. Widget updates are
coalesced: at most one update per task output every ``stream_interval`` seconds, and a task's
last chunk is shown as soon as the task ends.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Hashable, Mapping
from html import escape
from typing import Any

import ipywidgets as w

from ..aliases import Aliases
from ..api import Run, RunResult, prepare_run
from ..errors import CodexFlowError, ConfigError
from ..events import TERMINAL_KINDS, Event
from ..plan import Plan
from ..registry import Registry, load_registry
from .aliases import _error_html
from .coalesce import Throttle
from .render import bundle, headline, render_html, tail
from .state import RunState

PROGRESS = "__progress__"
KEY_PLACEHOLDER = "API key (kept in the kernel, never shown)"
KEY_SET = "key set · type to replace"


def _plan_from(inputs: Mapping[str, Any]) -> Plan:
    plan = inputs.get("plan")
    if isinstance(plan, Plan):
        return plan
    if isinstance(plan, Mapping):
        return Plan.from_data(plan)
    if isinstance(plan, str):
        return Plan.from_file(plan)
    tasks = inputs.get("tasks")
    if tasks is None:
        raise ConfigError("nothing to run: give tasks or a plan")
    return Plan.from_task_map(tasks)


class RunPanel(w.VBox):
    """Runtime choice, Run/Stop, progress bars, per-task output and a final summary.

    ``tasks``/``plan``/``aliases`` say what to run, or ``source()`` returns them as a dict
    (the dashboard reads its editors this way). Other keyword options go to ``prepare_run``
    (``log_file``, ``runs_dir``, ``max_concurrency``, ``timeout_ms``, ...).
    """

    def __init__(self, tasks: Any = None, *, plan: Plan | None = None, aliases: Any = None,
                 registry: Registry | None = None, source: Callable[[], Mapping[str, Any]] | None = None,
                 on_event: Callable[[Event], None] | None = None, runtime: str = "stub",
                 stream: bool = True, stream_interval: float = 0.1, latency_ms: float = 400.0,
                 chunks: int = 8, url: str = "", api_key: str | None = None,
                 **run_options: Any) -> None:
        self._source = source or (lambda: {"tasks": tasks, "plan": plan, "aliases": aliases})
        self.registry = registry
        self.run_options = run_options
        self.subscribers: list[Callable[[Event], None]] = [on_event] if on_event else []
        self.stream_interval = stream_interval
        self.chunks = chunks
        self._api_key: str | None = api_key or None
        self.run: Run | None = None
        self.task: asyncio.Task[RunResult | None] | None = None
        self.result: RunResult | None = None
        self.state = RunState()
        self._throttle = Throttle(self._flush, stream_interval)
        self._static: Any = None

        self.runtime = w.Dropdown(options=["stub", "codex"], value=runtime, description="runtime")
        self.latency = w.BoundedFloatText(value=latency_ms, min=0, max=600_000, step=50,
                                          description="stub ms", layout=w.Layout(width="180px"))
        self.url = w.Text(value=url, placeholder="http://127.0.0.1:8765", description="URL")
        self.key = w.Password(placeholder=KEY_SET if self._api_key else KEY_PLACEHOLDER,
                              description="key", continuous_update=False)
        self.stream = w.Checkbox(value=stream, description="stream", indent=False,
                                 layout=w.Layout(width="90px"))
        self.run_button = w.Button(description="Run", icon="play", button_style="success")
        self.stop_button = w.Button(description="Stop", icon="stop", button_style="danger",
                                    disabled=True)
        self.message = w.HTML()
        self.overall = w.IntProgress(value=0, min=0, max=1, description="all",
                                     bar_style="info", layout=w.Layout(width="60%"))
        self.overall_label = w.HTML()
        self.alias_bars: dict[str, w.IntProgress] = {}
        self.alias_labels: dict[str, w.HTML] = {}
        self.alias_box = w.VBox()
        self.outputs: dict[str, w.HTML] = {}
        self.accordion = w.Accordion()
        self.summary = w.HTML()
        self.analysis_button = w.Button(description="Open analysis", icon="bar-chart", disabled=True)
        self.analysis_out = w.Output()

        self.key.observe(self._stash_key, names="value")
        self.runtime.observe(lambda _c: self._show_runtime_fields(), names="value")
        self.run_button.on_click(lambda _b: self._click_run())
        self.stop_button.on_click(lambda _b: self.stop())
        self.analysis_button.on_click(lambda _b: self._guard(self.open_analysis))
        self.runtime_box = w.HBox([self.runtime, self.latency, self.url, self.key, self.stream])
        super().__init__([self.runtime_box, w.HBox([self.run_button, self.stop_button]), self.message,
                          w.HBox([self.overall, self.overall_label]), self.alias_box, self.accordion,
                          self.summary, self.analysis_button, self.analysis_out])
        self._show_runtime_fields()
        self._guard(self.reset)

    # -- the key --------------------------------------------------------------------------
    def _stash_key(self, change: Mapping[str, Any]) -> None:
        """Move a typed key into the kernel and blank the field, so the key is not kept in
        the widget state that a notebook may save."""
        if change["new"]:
            self._api_key = change["new"]
            self.key.value = ""
            self.key.placeholder = KEY_SET

    @property
    def has_key(self) -> bool:
        return bool(self._api_key)

    def _show_runtime_fields(self) -> None:
        codex = self.runtime.value == "codex"
        self.url.layout.display = None if codex else "none"
        self.key.layout.display = None if codex else "none"
        self.latency.layout.display = "none" if codex else None

    # -- preparing --------------------------------------------------------------------------
    def runtime_options(self) -> dict[str, Any]:
        if self.runtime.value == "codex":
            url = self.url.value.strip() or os.environ.get("CODEX_URL", "")
            if not url:
                raise ConfigError("the codex runtime needs an endpoint URL (start one with "
                                  "`codex-flow serve`, or set CODEX_URL)")
            return {"url": url, "api_key": self._api_key or os.environ.get("CODEX_API_KEY")}
        return {"latency_ms": float(self.latency.value), "chunks": self.chunks}

    def prepare(self) -> Run:
        """Validate the inputs and build the run (nothing starts). Raises ConfigError."""
        inputs = dict(self._source())
        plan = _plan_from(inputs)
        run = prepare_run(plan=plan, aliases=inputs.get("aliases"),
                          registry=inputs.get("registry") or self.registry,
                          runtime=self.runtime.value, on_event=self._on_event,
                          stream=self.stream.value, **self.runtime_options(), **self.run_options)
        self.reset(plan)
        return run

    def reset(self, plan: Plan | None = None) -> None:
        """Empty progress and outputs for a plan (the source's plan when not given)."""
        inputs = dict(self._source())
        if plan is None:
            plan = _plan_from(inputs)
        self._throttle.cancel()
        self.state = RunState(plan)
        for alias, limit in self._limits(plan, inputs).items():
            self.state.aliases[alias].limit = limit
        self.result = None
        self.alias_bars = {a: w.IntProgress(value=0, min=0, max=max(1, s.total), description=a,
                                            layout=w.Layout(width="60%"))
                           for a, s in self.state.aliases.items()}
        self.alias_labels = {a: w.HTML() for a in self.state.aliases}
        self.alias_box.children = tuple(w.HBox([self.alias_bars[a], self.alias_labels[a]])
                                        for a in self.state.aliases)
        self.outputs = {k: w.HTML() for k in self.state.tasks}
        self.accordion.children = tuple(self.outputs.values())
        self.overall.max = max(1, self.state.total)
        self.summary.value = ""
        self.analysis_button.disabled = True
        self._render_progress()

    def _limits(self, plan: Plan, inputs: Mapping[str, Any]) -> dict[str, int]:
        """Each alias's parallel-task limit, shown before the run starts ({} if invalid)."""
        aliases = inputs.get("aliases")
        try:
            if self.registry is None:
                self.registry = load_registry()
            if not isinstance(aliases, Aliases):
                aliases = (Aliases.from_file(aliases) if isinstance(aliases, (str, os.PathLike))
                           else Aliases(aliases))
            resolved = plan.validate(inputs.get("registry") or self.registry, aliases)
        except ConfigError:
            return {}  # Run reports the problems
        return {a: r.max_parallel_tasks for a, r in resolved.items()}

    # -- running ----------------------------------------------------------------------------
    def _click_run(self) -> None:
        self._guard(self.start)

    def start(self) -> asyncio.Task[RunResult | None]:
        """Start a run as a task on the running loop (what the Run button does)."""
        if self.running:
            raise ConfigError("a run is already in progress: Stop it first")
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise ConfigError("Run needs a running event loop (the Jupyter kernel's); outside "
                              "a kernel use `await panel.run_async()`") from None
        run = self.prepare()
        self._begin(run)
        self.task = loop.create_task(self._execute(run))
        self.task.add_done_callback(self._task_done)
        return self.task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:  # a bug, not a user error
            exc = task.exception()
            self.message.value = _error_html([f"the run failed: {type(exc).__name__}: {exc}"])

    async def run_async(self) -> RunResult | None:
        """Prepare and run to the end in the current cell (``await panel.run_async()``)."""
        if self.running:
            raise ConfigError("a run is already in progress: Stop it first")
        run = self.prepare()
        self._begin(run)
        return await self._execute(run)

    @property
    def running(self) -> bool:
        return self.run is not None

    def stop(self, reason: str = "stopped from the dashboard") -> None:
        """Cancel the run; every task still ends with a terminal event."""
        if self.run is not None:
            self.run.cancel(reason)
            self.message.value = f"stopping: {escape(reason)}"

    def _begin(self, run: Run) -> None:
        self.run = run
        self.run_button.disabled, self.stop_button.disabled = True, False
        self.message.value = f"running <code>{escape(run.run_id)}</code>"

    async def _execute(self, run: Run) -> RunResult | None:
        try:
            self.result = await run.execute()
        except CodexFlowError as exc:
            self.message.value = _error_html(str(exc).splitlines())
        finally:
            self.run = None
            self.run_button.disabled, self.stop_button.disabled = False, True
            self._finish()
        return self.result

    def _on_event(self, event: Event) -> None:
        key = self.state.apply(event)
        kind = event.get("kind")
        if kind == "task_chunk" and key is not None:
            self._throttle.request(key)
        elif kind in TERMINAL_KINDS and key is not None:
            self._throttle.flush(key)  # the last chunk, without waiting for the interval
            self._throttle.request(PROGRESS)
        elif kind == "task_retry" and key is not None:
            self._throttle.flush(key)
        elif kind == "run_complete":
            self._throttle.flush_pending()
            self._throttle.flush(PROGRESS)
        else:
            self._throttle.request(PROGRESS)
        for fn in self.subscribers:
            fn(event)

    def _finish(self) -> None:
        self._throttle.flush_pending()
        self._render_progress()
        s = self.state
        if s.complete:
            self.message.value = ""  # the progress line says how the run ended
            self.analysis_button.disabled = self.result is None or self.result.log_file is None
            if self._static is not None:  # the summary goes below the widget, where it stays
                self._static.update(bundle(s, final=True), raw=True)
                self.summary.value = "<i>summary below</i>"
            else:
                self.summary.value = bundle(s, final=True)["text/html"]

    # -- rendering ----------------------------------------------------------------------------
    def _flush(self, key: Hashable) -> None:
        if key == PROGRESS:
            self._render_progress()
        elif isinstance(key, str) and key in self.outputs:
            task = self.state.tasks[key]
            self.outputs[key].value = (
                f"<pre style='white-space:pre-wrap;margin:0'>{escape(tail(task.streamed))}</pre>"
                if task.chars else "")

    def _render_progress(self) -> None:
        s = self.state
        self.overall.value = s.done
        self.overall.bar_style = ("success" if s.complete and s.ok else
                                  "danger" if s.complete else "info")
        self.overall_label.value = escape(headline(s))
        for alias, a in s.aliases.items():
            if alias in self.alias_bars:
                self.alias_bars[alias].value = a.done
                failed = a.done - a.counts.get("completed", 0)
                self.alias_bars[alias].bar_style = ("danger" if failed else
                                                    "success" if a.done == a.total else "")
                limit = a.limit if a.limit is not None else "-"
                self.alias_labels[alias].value = (f"{a.done}/{a.total} done · running "
                                                  f"{a.running}/{limit}")
        self.accordion.titles = tuple(
            f"{t.key} · {t.alias} · {t.status}" + (f" · {t.ms:.0f} ms" if t.ms is not None else "")
            for t in s.tasks.values())

    # -- after the run -----------------------------------------------------------------------
    def open_analysis(self) -> None:
        """Show the analysis of the last run (loads ``codexflow_nb.analysis`` only now)."""
        if self.result is None or self.result.log_file is None:
            raise ConfigError("no event log for this run (log_file was None)")
        try:
            from .. import analysis, charts
        except ImportError as exc:
            raise ConfigError(f"the analysis module is not available in this install ({exc})") from None
        events = analysis.load_events(self.result.log_file, runs=[self.result.run_id])
        tasks = analysis.tasks_frame(events)
        fig = charts.timeline(tasks)
        from .plan_graph import figure_bundle

        table = analysis.alias_summary(tasks)
        self.analysis_out.outputs = (
            {"output_type": "display_data", "metadata": {}, "data": figure_bundle(fig)},
            {"output_type": "display_data", "metadata": {},
             "data": {"text/html": table.to_html(), "text/plain": table.to_string()}},
        )

    def _guard(self, action: Callable[[], Any]) -> None:
        try:
            action()
        except ConfigError as exc:
            self.message.value = _error_html(exc.problems)

    # -- display ------------------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        data = super()._repr_mimebundle_(**kwargs)
        if isinstance(data, dict):  # front ends without widgets show the HTML
            data["text/html"] = render_html(self.state, streamed=False)
        return data

    def attach_summary(self) -> None:
        """Display an (empty) output that the end-of-run summary will fill: static HTML that
        stays readable in a saved notebook without a kernel or widget state."""
        from IPython.display import display

        self._static = display({"text/plain": ""}, raw=True, display_id=True)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self._repr_mimebundle_(), raw=True)
        self.attach_summary()

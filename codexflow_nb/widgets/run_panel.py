"""RunPanel: choose a runtime, Run and Stop, watch progress and streamed output per task.

The panel prepares a run with :func:`codexflow_nb.api.prepare_run` (the CLI's engine) and
watches it only through events. A run started with the Run button is an asyncio task on the
kernel's loop, so Stop and other cells keep working while it runs. Each event only updates
plain data (:class:`~.state.RunState`); the widgets are redrawn together, at most once every
``stream_interval`` seconds (0.25 s) whatever the number of tasks: progress, titles and the
outputs of the tasks on the shown page (:class:`~.task_list.TaskList`). With a coding-agent
runtime (``codex-cli``,
``claude-code``) each output shows the agent's messages and steps, and a
:class:`~.changes.ChangesView` (diffs, Apply) follows the run.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Hashable, Mapping
from html import escape
from pathlib import Path
from typing import Any

import ipywidgets as w

from ..aliases import Aliases
from ..api import Run, RunResult, prepare_run
from ..errors import CodexFlowError, ConfigError
from ..events import Event
from ..plan import Plan
from ..registry import Registry, load_registry
from ..runtimes import RUNTIME_NAMES, make_runtime
from .aliases import _error_html, plain
from .bars import StatusBar
from .coalesce import Throttle
from .lifecycle import Composed, close_tree
from .palette import STATUS_FILLS, STATUS_ORDER
from .render import bundle, headline, static_bundle
from .state import RunState
from .task_list import TaskList

PROGRESS = "__progress__"
#: The one key of the panel's redraws: everything that changed is drawn together.
FRAME = "__frame__"
KEY_PLACEHOLDER = "API key (kept in the kernel, never shown)"
KEY_SET = "key set · type to replace"
#: Runtimes that run a coding-agent CLI per task, each in its own workspace.
AGENT_RUNTIMES = ("codex-cli", "claude-code")
#: The workspace dropdown: label -> ``workspace`` option ("" lets the runtime choose).
WORKSPACE_CHOICES = (("auto (worktree in git, else copy)", ""), ("worktree", "worktree"),
                     ("copy", "copy"), ("none (in the repo itself)", "none"))
#: Events that change a task's output area.
OUTPUT_KINDS = ("task_chunk", "task_step", "task_workspace")


def _status_counts(counts: Mapping[str, int], completed: bool) -> str:
    """`` · 3 failed · 80 cancelled`` in the statuses' colours (completed ones only with
    ``completed``; planned, queued and running are said elsewhere)."""
    skip = {"planned", "queued", "running"} | (set() if completed else {"completed"})
    return "".join(f" · <span style='color:{_text_color(st)}'>{counts[st]} {st}</span>"
                   for st in STATUS_ORDER if counts.get(st) and st not in skip)


def _text_color(status: str) -> str:
    """A status colour dark enough for text on white."""
    return {"completed": "#007a5a", "cancelled": "#666666", "timeout": "#b36b00",
            "skipped": "#a0527f"}.get(status, STATUS_FILLS.get(status, "#616161"))


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


def _warm_imports() -> None:
    """Import what ``prepare_run`` imports on first use (executors, the agent runtimes: 75 to
    130 ms on a loaded 2-core machine), so that the first Run does not wait for it."""
    from .. import executors  # noqa: F401
    from ..runtimes import agent_cli  # noqa: F401


class RunPanel(Composed, w.VBox):
    """Runtime choice, Run/Stop, progress bars, per-task output and a final summary.

    ``tasks``/``plan``/``aliases`` say what to run, or ``source()`` returns them as a dict
    (the dashboard reads its editors this way). Other keyword options go to ``prepare_run``
    (``log_file``, ``runs_dir``, ``max_concurrency``, ``timeout_ms``, ...).

    ``page_size`` tasks are shown at a time (filter and pages above them); with
    ``show_problems=False`` (the dashboard, whose editors show each problem next to its field)
    the panel shows only their count by the Run button.
    """

    def __init__(self, tasks: Any = None, *, plan: Plan | None = None, aliases: Any = None,
                 registry: Registry | None = None, source: Callable[[], Mapping[str, Any]] | None = None,
                 on_event: Callable[[Event], None] | None = None, runtime: str = "stub",
                 stream: bool = True, stream_interval: float = 0.25, latency_ms: float = 400.0,
                 chunks: int = 8, url: str = "", api_key: str | None = None,
                 repo: str | os.PathLike[str] = "", workspace: str | None = None,
                 base: str | None = None, agent_model: str | None = None,
                 page_size: int = 20, show_problems: bool = True,
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
        self._state_plan: Plan | None = None  # the plan ``state`` was made for
        self.show_problems = show_problems
        self.problems: list[str] = []  # what stops the current inputs from running
        self._field_problems: list[str] = []  # the coding-agent fields' own
        self._message_problems = False  # the message lists problems (cleared once fixed)
        self._dirty: set[str] = set()  # tasks whose output changed since the last redraw
        self.frames = 0  # redraws of the panel
        self._throttle = Throttle(self._flush, stream_interval)
        self._static: Any = None
        self._run_repo: str | None = None  # the repo field when the last run started
        self.changes_view: Any = None  # the ChangesView after a run with workspaces

        if runtime not in RUNTIME_NAMES:
            raise ConfigError(f"unknown runtime {runtime!r}: choose {', '.join(RUNTIME_NAMES)}")
        if (workspace or "") not in dict(WORKSPACE_CHOICES).values():
            raise ConfigError(f"unknown workspace {workspace!r}: choose worktree, copy or none")
        self.runtime = w.Dropdown(options=list(RUNTIME_NAMES), value=runtime,
                                  description="runtime")
        self.latency = w.BoundedFloatText(value=latency_ms, min=0, max=600_000, step=50,
                                          description="stub ms", layout=w.Layout(width="180px"))
        self.url = w.Text(value=url, placeholder="http://127.0.0.1:8765", description="URL")
        self.key = w.Password(placeholder=KEY_SET if self._api_key else KEY_PLACEHOLDER,
                              description="key", continuous_update=False)
        self.stream = w.Checkbox(value=stream, description="stream", indent=False,
                                 layout=w.Layout(width="90px"))
        # coding agents: the repository, the workspace kind, the base commit, the model
        self.repo = w.Text(value=str(repo or ""), placeholder=". (the current folder)",
                           description="repo", continuous_update=False,
                           layout=w.Layout(width="420px"))
        self.repo_error = w.HTML()
        self.workspace = w.Dropdown(options=WORKSPACE_CHOICES, value=workspace or "",
                                    description="workspace", layout=w.Layout(width="320px"))
        self.base = w.Text(value=base or "", placeholder="HEAD", description="base",
                           continuous_update=False, layout=w.Layout(width="220px"))
        self.base_error = w.HTML()
        self.agent_model = w.Text(value=agent_model or "", placeholder="(the CLI's default)",
                                  description="model", continuous_update=False,
                                  layout=w.Layout(width="260px"))
        self.agent_box = w.VBox([w.HBox([self.repo, self.repo_error]),
                                 w.HBox([self.workspace, self.agent_model, self.base,
                                         self.base_error])])
        self.run_button = w.Button(description="Run", icon="play", button_style="success")
        self.stop_button = w.Button(description="Stop", icon="stop", button_style="danger",
                                    disabled=True)
        self.message = w.HTML()
        self.problem_note = w.HTML()  # "⚠ 2 problems to fix", by the Run button
        # bars split by status (completed, failed, cancelled, running: each its colour)
        self.overall = StatusBar(description="all", layout=w.Layout(width="50%",
                                                                    flex="0 0 auto"))
        self.overall_label = w.HTML(layout=w.Layout(flex="1 1 auto", width="auto"))
        self.overall_label.add_class("codexflow-headline")  # found by tests in a browser
        self.alias_bars: dict[str, StatusBar] = {}
        self.alias_labels: dict[str, w.HTML] = {}
        self.alias_box = w.VBox()
        self.tasks_view = TaskList(page_size=page_size)
        self.summary = w.HTML()
        self.changes_box = w.VBox()
        self.analysis_button = w.Button(description="Open analysis", icon="bar-chart", disabled=True)
        self.analysis_out = w.Output()

        self.key.observe(self._stash_key, names="value")
        self.runtime.observe(lambda _c: self._show_runtime_fields(), names="value")
        for field in (self.repo, self.workspace, self.base):
            field.observe(lambda _c: self._fields_changed(), names="value")
        self.run_button.on_click(lambda _b: self._click_run())
        self.stop_button.on_click(lambda _b: self.stop())
        self.analysis_button.on_click(lambda _b: self._guard(self.open_analysis))
        self.runtime_box = w.HBox([self.runtime, self.latency, self.url, self.key, self.stream])
        super().__init__([self.runtime_box, self.agent_box,
                          w.HBox([self.run_button, self.stop_button, self.problem_note]),
                          self.message, w.HBox([self.overall, self.overall_label]),
                          self.alias_box, self.tasks_view, self.summary, self.changes_box,
                          self.analysis_button, self.analysis_out])
        self._show_runtime_fields()
        self.reset()
        _warm_imports()

    @property
    def accordion(self) -> w.Accordion:
        """The per-task disclosures of the shown page."""
        return self.tasks_view.accordion

    @property
    def outputs(self) -> dict[str, w.HTML]:
        """The output widget of each task on the shown page (see ``tasks_view``)."""
        return self.tasks_view.outputs

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

    @property
    def agent_runtime(self) -> bool:
        """A coding-agent runtime is chosen (``codex-cli``, ``claude-code``)."""
        return self.runtime.value in AGENT_RUNTIMES

    def _show_runtime_fields(self) -> None:
        codex = self.runtime.value == "codex"
        agent = self.agent_runtime
        self.url.layout.display = None if codex else "none"
        self.key.layout.display = None if codex else "none"
        self.latency.layout.display = None if self.runtime.value == "stub" else "none"
        self.stream.layout.display = "none" if agent else None  # agents always stream
        self.agent_box.layout.display = None if agent else "none"
        self._fields_changed()

    def _fields_changed(self) -> None:
        self._field_problems = self.check_agent_fields()
        self._show_note()

    # -- preparing --------------------------------------------------------------------------
    def _agent_fields(self) -> dict[str, Any]:
        values = {"repo": self.repo.value.strip(), "workspace": self.workspace.value,
                  "base": self.base.value.strip(), "agent_model": self.agent_model.value.strip()}
        return {k: v for k, v in values.items() if v}

    def check_agent_fields(self) -> list[str]:
        """Check the repo folder, workspace kind and base commit (only for a coding-agent
        runtime); each problem shows as one red line next to its field. Returns them."""
        self.repo_error.value = self.base_error.value = ""
        if not self.agent_runtime:
            return []
        try:
            runtime = make_runtime(self.runtime.value, **self._agent_fields())
            workspaces = getattr(runtime, "workspaces", None)
            if workspaces is not None:
                workspaces.prepare()  # checks only: no private paths, so it writes nothing
        except ConfigError as exc:
            problems = exc.problems
        else:
            return []
        for problem in problems:
            field = self.base_error if problem.startswith("--base") else self.repo_error
            text = problem.split(" ", 1)[1] if problem.startswith("--") else problem
            field.value = _error_html([text])
        return [f"{'base' if p.startswith('--base') else 'repo'}: "
                f"{p.split(' ', 1)[1] if p.startswith('--') else p}" for p in problems]

    def runtime_options(self) -> dict[str, Any]:
        if self.agent_runtime:
            problems = self.check_agent_fields()
            if problems:
                raise ConfigError(problems)
            return self._agent_fields()
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
        try:
            run = prepare_run(plan=plan, aliases=inputs.get("aliases"),  # validates the plan
                              registry=inputs.get("registry") or self.registry,
                              runtime=self.runtime.value, on_event=self._on_event,
                              stream=self.stream.value, **self.runtime_options(),
                              **self.run_options)
        except ConfigError as exc:
            raise ConfigError([plain(p, self.registry) for p in exc.problems]) from None
        repo = self.repo.value.strip()
        self._run_repo = str(Path(repo).expanduser().resolve()) if repo and self.agent_runtime \
            else None  # Apply writes there (a copy workspace does not name its source)
        self.reset(plan, run=run, inputs=inputs)
        return run

    def reset(self, plan: Plan | None = None, *, run: Run | None = None,
              inputs: Mapping[str, Any] | None = None) -> None:
        """Empty progress and outputs for a plan (the source's plan when not given). With
        inputs that cannot run, the panel says so ("no runnable tasks") and counts the
        problems by the Run button; nothing of an earlier plan stays. With the ``run`` just
        prepared for it (Run), its headline goes out first, ahead of the page of outputs."""
        self._throttle.cancel()
        self._dirty.clear()
        problems: list[str] = []
        try:
            inputs = dict(inputs if inputs is not None else self._source())
            if plan is None:
                plan = _plan_from(inputs)
        except ConfigError as exc:
            inputs = {}
            problems = [plain(p, self.registry) for p in exc.problems]
        if plan is None or problems:
            self.state, self._state_plan = RunState(), None
        elif plan is not self._state_plan or self.state.started:
            self.state, self._state_plan = RunState(plan), plan
        # else: the state drawn for this plan before, untouched (Run at 5,000 tasks keeps the
        # ~20,000 objects it would make again, and the collections they set off, off its path)
        if run is not None and not problems:
            # the first message after Run: the kernel then sends about 40 more (bars, the
            # page of outputs), which a loaded server relays one by one before the first frame
            self.state.begin(run.run_id, run.options.runtime_name or self.runtime.value)
            self.overall_label.value = escape(headline(self.state))
        if not problems:
            limits, problems = self._limits(plan, inputs) if plan is not None else ({}, [])
            for alias, limit in limits.items():
                self.state.aliases[alias].limit = limit
        self.result = None
        self._set_bars(list(self.state.aliases))
        self.tasks_view.set_state(self.state)
        self.summary.value = ""
        old = self.changes_box.children
        self.changes_box.children = ()
        close_tree(*old)
        self.changes_view = None
        self.analysis_button.disabled = True
        self.analysis_out.outputs = ()  # a new run (or plan) replaces the last analysis
        self.set_problems(problems)
        self._render_progress()

    def _set_bars(self, aliases: list[str]) -> None:
        """One progress bar and label per alias; kept when the aliases are the same."""
        if list(self.alias_bars) != aliases:
            old = self.alias_box.children
            self.alias_bars = {a: StatusBar(description=a, layout=w.Layout(width="50%"))
                               for a in aliases}
            self.alias_labels = {a: w.HTML() for a in aliases}
            self.alias_box.children = tuple(w.HBox([self.alias_bars[a], self.alias_labels[a]])
                                            for a in aliases)
            close_tree(*old)
        for a, bar in self.alias_bars.items():
            bar.show({}, self.state.aliases[a].total)

    def _limits(self, plan: Plan, inputs: Mapping[str, Any]) -> tuple[dict[str, int], list[str]]:
        """Each alias's parallel-task limit, shown before the run starts, and what stops the
        plan from running (Run reports it too)."""
        if isinstance(inputs.get("limits"), Mapping):  # checked by the source (the dashboard)
            return dict(inputs["limits"]), []
        aliases = inputs.get("aliases")
        try:
            if self.registry is None:
                self.registry = load_registry()
            if not isinstance(aliases, Aliases):
                aliases = (Aliases.from_file(aliases) if isinstance(aliases, (str, os.PathLike))
                           else Aliases(aliases))
            resolved = plan.validate(inputs.get("registry") or self.registry, aliases)
        except ConfigError as exc:
            return {}, [plain(p, self.registry) for p in exc.problems]
        return {a: r.max_parallel_tasks for a, r in resolved.items()}, []

    # -- problems -------------------------------------------------------------------------
    def set_problems(self, problems: list[str]) -> None:
        """What stops the inputs from running: counted by the Run button, and listed in the
        message unless ``show_problems`` is False (they are shown next to their fields)."""
        self.problems = list(dict.fromkeys(problems))
        if self.show_problems and self.problems:
            self.message.value = _error_html(self.problems)
            self._message_problems = True
        elif self._message_problems:  # fixed (or shown elsewhere): the old list goes
            self.message.value = ""
            self._message_problems = False
        self._show_note()

    def _show_note(self) -> None:
        n = len(self.problems) + len(self._field_problems)
        self.problem_note.value = (
            f"<span style='color:#d55e00;padding-left:8px'>⚠ {n} problem{'s' if n != 1 else ''}"
            " to fix before Run</span>" if n else "")

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
        self._message_problems = False

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
        """One event: update the state now, the widgets with the next redraw (at most one per
        ``stream_interval``; the end of the run at once)."""
        key = self.state.apply(event)
        if key is not None:
            self._dirty.add(key)
        if event.get("kind") == "run_complete":
            self._throttle.flush(FRAME)
        else:
            self._throttle.request(FRAME)
        for fn in self.subscribers:
            fn(event)

    def _finish(self) -> None:
        self._throttle.cancel()
        self._flush(FRAME)  # whatever the last redraw did not carry
        s = self.state
        if s.complete:
            self.message.value = ""  # the progress line says how the run ended
            self.analysis_button.disabled = self.result is None or self.result.log_file is None
            final = bundle(s, final=True)
            if s.has_workspaces:
                changes = self.show_changes()
                if changes is not None:
                    final = {k: final[k] + ("\n" if k == "text/plain" else "") + changes[k]
                             for k in final}
            if self._static is not None:  # the summary goes below the widget, where it stays
                self._static.update(final, raw=True)
                self.summary.value = "<i>summary below</i>"
            else:
                self.summary.value = final["text/html"]

    def show_changes(self) -> dict[str, str] | None:
        """After a run with workspaces: show its :class:`~.changes.ChangesView` (diffs, Apply)
        and return its static bundle (None without an event log to read them from)."""
        from .changes import ChangesView, changes_text

        r = self.result
        if r is None or r.log_file is None:
            self.changes_box.children = (w.HTML(
                "<i>Changes: this run kept no event log (log_file=None); each task's change is "
                "on its branch</i>"),)
            return None
        try:
            view = ChangesView(r.run_id, log_file=r.log_file, runs_dir=r.runs_dir,
                               repo=self._run_repo)
        except ConfigError as exc:
            self.changes_box.children = (w.HTML(_error_html(exc.problems)),)
            return None
        self.changes_view = view
        self.changes_box.children = (view,)
        return {"text/html": view.to_html(), "text/plain": changes_text(view.changes)}

    # -- rendering ----------------------------------------------------------------------------
    def _flush(self, _key: Hashable) -> None:
        """Draw everything that changed since the last redraw."""
        self.frames += 1
        dirty, self._dirty = self._dirty, set()
        self._render_progress()
        self.tasks_view.refresh(dirty)

    def _render_progress(self) -> None:
        s = self.state
        counts = s.counts()
        self.overall.show(counts, s.total)
        if not s.tasks and not s.started:
            self.overall_label.value = "no runnable tasks"
        else:
            self.overall_label.value = escape(headline(s)) + _status_counts(counts, s.complete)
        for alias, a in s.aliases.items():
            if alias in self.alias_bars:
                self.alias_bars[alias].show({**a.counts, "running": a.running}, a.total)
                limit = a.limit if a.limit is not None else "-"
                self.alias_labels[alias].value = (
                    f"{a.done}/{a.total} done · running {a.running}/{limit}"
                    + _status_counts(a.counts, False))

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
            problems = [plain(p, self.registry) for p in exc.problems]
            known = set(self.problems) | set(self._field_problems)
            new = [p for p in problems if p not in known]
            if not self.show_problems and not new:
                self._show_note()  # each is next to its field; the count is by Run
                return
            self.message.value = _error_html(new if not self.show_problems else problems)
            self._message_problems = False

    def _stop(self) -> None:
        self._throttle.cancel()
        if self.run is not None:
            self.run.cancel("the panel was closed")

    # -- display ------------------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        # front ends without widgets (GitHub, nbconvert, ...) show a static copy (text/html)
        return static_bundle(self, super()._repr_mimebundle_(**kwargs))

    def attach_summary(self) -> None:
        """Display an (empty) output that the end-of-run summary will fill: static HTML that
        stays readable in a saved notebook without a kernel or widget state."""
        from IPython.display import display

        self._static = display({"text/plain": ""}, raw=True, display_id=True)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self._repr_mimebundle_(), raw=True)
        self.attach_summary()

"""The dashboard: picker, alias editor, task editor and plan graph in tabs, the run panel below.

Everything it edits is plain data (an alias map, a task map or a plan) and Run hands that to
the same ``prepare_run`` the CLI uses. ``dashboard()`` with no arguments opens the bundled
example (three aliases, five tasks).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import ipywidgets as w

from ..aliases import Aliases
from ..api import EXAMPLE_TASKS, RunResult
from ..errors import ConfigError
from ..plan import Plan
from ..registry import Registry, load_registry
from .aliases import AliasEditor, check_plan, plain
from .lifecycle import Composed
from .picker import AgentPicker
from .plan_graph import PlanGraph
from .render import static_bundle
from .run_panel import RunPanel, _plan_from
from .tasks import TaskEditor

TAB_TITLES = ("Agents", "Aliases", "Tasks", "Plan")
PLAN_TAB = 3


class Dashboard(Composed, w.VBox):
    """The composed dashboard. Its parts are attributes: ``picker``, ``alias_editor``,
    ``task_editor`` (None when a fixed ``plan`` is given), ``graph`` and ``panel``.
    ``close()`` closes all of them (every widget model and comm)."""

    def __init__(self, tasks: Any = None, *, aliases: Any = None, plan: Plan | Mapping[str, Any] | str | None = None,
                 registry: Registry | None = None, agents_dir: str | os.PathLike[str] | None = None,
                 **run_options: Any) -> None:
        self.registry = registry or load_registry(agents_dir)
        self.fixed_plan = _plan_from({"plan": plan}) if plan is not None else None
        self.alias_editor = AliasEditor(aliases, registry=self.registry)
        self.picker = AgentPicker(self.registry, on_add=self.alias_editor.add_alias)
        self.task_editor: TaskEditor | None = None
        if self.fixed_plan is None:
            self.task_editor = TaskEditor(str(EXAMPLE_TASKS) if tasks is None else tasks,
                                          aliases=self.alias_editor.value, registry=self.registry)
            task_view: w.Widget = self.task_editor
        else:
            task_view = w.HTML("<p>Running a fixed plan; its tasks are shown in the Plan tab.</p>")
        self.graph = PlanGraph()
        #: the last check of the inputs (refresh() runs after every edit): plan, problems
        #: of the editors' fields, problems of the plan, limits per alias
        self._checked: tuple[Plan | None, list[str], list[str], dict[str, int]] | None = None
        self.panel = RunPanel(source=self.inputs, registry=self.registry, show_problems=False,
                              **run_options)
        self.panel.subscribers.append(self.graph.on_event)
        self.tabs = w.Tab([self.picker, self.alias_editor, task_view, self.graph], titles=TAB_TITLES)
        self.tabs.observe(lambda c: self.graph.set_visible(c["new"] == PLAN_TAB),
                          names="selected_index")
        self.graph.visible = self.tabs.selected_index == PLAN_TAB
        self.alias_editor.on_change(self.refresh)
        if self.task_editor is not None:
            self.task_editor.on_change(self.refresh)
        self.panel.run_button.on_click(lambda _b: self._show_plan_tab())
        super().__init__([w.HTML("<h3 style='margin:4px 0'>codexflow</h3>"), self.tabs,
                          self.panel])
        self.refresh()

    # -- inputs -----------------------------------------------------------------------------
    def plan(self) -> Plan:
        """The plan to run now (the fixed plan, or the task editor's map); ConfigError if invalid."""
        if self.fixed_plan is not None:
            return self.fixed_plan
        assert self.task_editor is not None
        return Plan.from_task_map(self.task_editor.task_map(), source="task editor")

    def check(self) -> tuple[Plan | None, list[str], list[str]]:
        """The plan as typed (None if it cannot be read), the problems of the editors' own
        fields, and the problems of the plan with these aliases (shown next to the tasks).
        Checked again after every edit; this returns the last check."""
        if self._checked is None:
            self._checked = self._check()
        return self._checked[:3]

    def _check(self) -> tuple[Plan | None, list[str], list[str], dict[str, int]]:
        own = list(self.alias_editor.problems)
        if self.task_editor is not None:
            own += self.task_editor.problems
        plan: Plan | None = None
        cross: list[str] = []
        try:
            plan = self.plan()
        except ConfigError as exc:
            if self.task_editor is not None and not self.task_editor.problems:
                cross = [plain(p, self.registry) for p in exc.problems]
        limits: dict[str, int] = {}
        if plan is not None:
            names = self.alias_editor.value
            resolved = None if self.alias_editor.problems else self.alias_editor.aliases()
            cross, limits = check_plan(plan, names, self.registry, resolved)
        return plan, own, cross, limits

    @property
    def problems(self) -> w.HTML:
        """The count of problems by the Run button (empty when the inputs can run); each
        problem itself is shown next to its field (see :attr:`problem_list`)."""
        return self.panel.problem_note

    @property
    def problem_list(self) -> list[str]:
        """Everything that stops the inputs from running, one line each."""
        _plan, own, cross = self.check()
        return list(dict.fromkeys(own + cross))

    def inputs(self) -> dict[str, Any]:
        """What the run panel runs: ``{plan, aliases}``; ConfigError lists every problem."""
        plan, own, cross = self.check()
        if own or cross or plan is None:
            raise ConfigError(list(dict.fromkeys(own + cross)) or ["no tasks"])
        assert self._checked is not None
        return {"plan": plan, "aliases": self.alias_editor.aliases(), "limits": self._checked[3]}

    def refresh(self) -> None:
        """Re-check the inputs after an edit: each problem next to its field and counted by
        Run, the plan drawn as typed, the run panel following the inputs (not during a run)."""
        if self.task_editor is not None:
            self.task_editor.set_aliases(self.alias_editor.value)
        agents = {a: s["id"] for a, s in self.alias_editor.value.items()}
        self._checked = self._check()
        plan, own, cross = self.check()
        if self.task_editor is not None:
            self.task_editor.set_extra_problems(cross)
        self.graph.set_plan(plan, agents, cross if self.task_editor is None else None)
        problems = list(dict.fromkeys(own + cross))
        if self.panel.running:
            return
        if problems or plan is None:
            self.panel.reset()  # "no runnable tasks", the count by Run
        else:
            self.panel.reset(plan)

    def _show_plan_tab(self) -> None:
        if self.panel.running:
            self.tabs.selected_index = PLAN_TAB

    # -- running ----------------------------------------------------------------------------
    async def run_async(self) -> RunResult | None:
        """Run the current inputs in this cell: ``await dash.run_async()``."""
        self.tabs.selected_index = PLAN_TAB
        return await self.panel.run_async()

    def stop(self) -> None:
        self.panel.stop()

    @property
    def aliases(self) -> Aliases:
        return self.alias_editor.aliases()

    # -- display ------------------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        # front ends without widgets (GitHub, nbconvert, ...) show a static copy (text/html)
        return static_bundle(self, super()._repr_mimebundle_(**kwargs))

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self._repr_mimebundle_(), raw=True)
        self.panel.attach_summary()


def dashboard(tasks: Any = None, **kwargs: Any) -> Dashboard:
    """Open the dashboard: ``codexflow_nb.dashboard()`` (the example) or
    ``dashboard(tasks, aliases=..., plan=..., log_file=..., ...)``."""
    return Dashboard(tasks, **kwargs)

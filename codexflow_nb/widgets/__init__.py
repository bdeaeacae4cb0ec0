"""Notebook widgets (ipywidgets 8): each usable alone, composed by :func:`dashboard`.

>>> from codexflow_nb import dashboard
>>> dashboard()                      # the bundled example; edit, then press Run

The names load on first use, so the light modules (``state``, ``render``, ``coalesce``) can be
imported without ipywidgets (the CLI formats steps with ``render.format_step``).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .aliases import AliasEditor
    from .bars import StatusBar
    from .changes import ChangesView
    from .concurrency import Concurrency, ConcurrencyView
    from .dashboard import Dashboard, dashboard
    from .diffs import changes_bundle, changes_html, diff_html
    from .lifecycle import close_tree, live_models
    from .picker import AgentPicker
    from .plan_graph import PlanGraph, build_figure
    from .render import LiveView, format_step, render_html, render_text, run_live, summary_html
    from .run_panel import RunPanel
    from .state import RunState
    from .task_list import TaskList
    from .tasks import TaskEditor

#: public name -> the module that defines it
_NAMES = {
    "AgentPicker": "picker", "AliasEditor": "aliases", "ChangesView": "changes",
    "Concurrency": "concurrency", "ConcurrencyView": "concurrency", "StatusBar": "bars",
    "Dashboard": "dashboard", "LiveView": "render", "PlanGraph": "plan_graph",
    "RunPanel": "run_panel", "RunState": "state", "TaskEditor": "tasks", "TaskList": "task_list",
    "close_tree": "lifecycle", "live_models": "lifecycle",
    "build_figure": "plan_graph", "changes_bundle": "diffs", "changes_html": "diffs",
    "dashboard": "dashboard", "diff_html": "diffs", "format_step": "render",
    "render_html": "render", "render_text": "render", "run_live": "render",
    "summary_html": "render",
}

__all__ = ["AgentPicker", "AliasEditor", "ChangesView", "Concurrency", "ConcurrencyView",
           "Dashboard", "LiveView", "PlanGraph", "RunPanel", "RunState", "StatusBar",
           "TaskEditor", "TaskList", "build_figure", "changes_bundle",
           "changes_html", "close_tree", "live_models",
           "dashboard", "diff_html", "format_step", "render_html", "render_text", "run_live",
           "summary_html"]


def __getattr__(name: str) -> Any:
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this hook
    return value


class _Package(types.ModuleType):
    """Importing the submodule ``dashboard`` would bind ``widgets.dashboard`` to the module;
    the name stays the function, whichever is imported first."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "dashboard" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __dir__() -> list[str]:
    return sorted({*globals(), *_NAMES})

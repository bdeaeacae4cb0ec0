"""Notebook widgets (ipywidgets 8): each usable alone, composed by :func:`dashboard`.

>>> from codexflow_nb import dashboard
>>> dashboard()                      # the bundled example; edit, then press Run
"""

from __future__ import annotations

from .aliases import AliasEditor
from .dashboard import Dashboard, dashboard  # binds the name to the function, not the module
from .picker import AgentPicker
from .plan_graph import PlanGraph, build_figure
from .render import LiveView, render_html, render_text, run_live, summary_html
from .run_panel import RunPanel
from .state import RunState
from .tasks import TaskEditor

__all__ = ["AgentPicker", "AliasEditor", "Dashboard", "LiveView", "PlanGraph", "RunPanel",
           "RunState", "TaskEditor", "build_figure", "dashboard", "render_html", "render_text",
           "run_live", "summary_html"]

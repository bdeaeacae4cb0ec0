"""codexflow_nb: run many AI agents in parallel from a notebook or a terminal.

Heavy libraries (pandas, plotly, ipywidgets) load only when their features are used.
"""

from __future__ import annotations

from typing import Any

from .aliases import Aliases, deep_merge
from .api import Run, RunResult, allow_nested, prepare_run, run, run_async
from .engine import RunOptions, TaskResult
from .errors import CodexFlowError, ConfigError, PlanError, UnknownAgentError
from .plan import Phase, Plan, PlanTask
from .registry import Registry, load_registry
from .tasks import load_task_map, parse_task_map

__version__ = "0.1.0"

__all__ = [
    "Aliases", "CodexFlowError", "ConfigError", "Phase", "Plan", "PlanError", "PlanTask",
    "Registry", "Run", "RunOptions", "RunResult", "TaskResult", "UnknownAgentError",
    "allow_nested", "dashboard", "deep_merge", "load_events", "load_registry", "load_task_map",
    "parse_task_map", "prepare_run", "route_files", "route_text", "run", "run_async",
]

#: Optional packages and the extra that brings each.
_EXTRAS = {"ipywidgets": "notebook", "IPython": "notebook", "pandas": "analysis",
           "pyarrow": "analysis", "plotly": "analysis"}
_LAZY = {
    "load_events": ("analysis", "load_events"),
    "dashboard": ("widgets", "dashboard"),
    "route_text": ("routing", "route_text"),
    "route_files": ("routing", "route_files"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        try:
            return getattr(importlib.import_module(f".{module}", __name__), attr)
        except ModuleNotFoundError as exc:
            extra = _EXTRAS.get(str(exc.name).split(".")[0])
            if extra is None:
                raise
            raise ConfigError(f"codexflow_nb.{name} needs {exc.name}: pip install "
                              f"'codexflow-nb[{extra}]'") from None
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext codexflow_nb`` registers the ``%%codexflow`` cell magic."""
    from .magic import register

    register(ipython)

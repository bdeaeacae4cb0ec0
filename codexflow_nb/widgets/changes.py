"""ChangesView: what each coding-agent task of a run changed, its diff, and an Apply button.

The data comes from :func:`codexflow_nb.changes.run_changes` (the event log and the run
store); Apply calls :func:`codexflow_nb.changes.apply_task` (``git apply --3way``) and shows
its message, conflicts first. The static HTML (also the view's ``_repr_html_``) comes from
:mod:`.diffs`, which needs no widgets.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from html import escape
from pathlib import Path
from typing import Any

import ipywidgets as w

from ..changes import ApplyResult, TaskChanges, apply_task, run_changes
from ..errors import ConfigError
from .diffs import (
    MAX_PATCH_LINES,
    apply_html,
    changes_bundle,
    changes_html,
    changes_text,
    diff_html,
    files_html,
    task_diff_html,
    task_title,
)
from .lifecycle import Composed

__all__ = ["ChangesView", "apply_html", "changes_bundle", "changes_html", "changes_text",
           "diff_html"]


class _TaskRow(Composed, w.VBox):
    """One task: title, files, diff, Apply and its message."""

    def __init__(self, tc: TaskChanges, on_apply: Callable[[TaskChanges], Any],
                 max_lines: int) -> None:
        self.tc = tc
        self.title = w.HTML(task_title(tc))
        self.files = w.HTML(files_html(tc))
        self.diff = w.HTML(task_diff_html(tc, max_lines=max_lines))
        self.apply_button = w.Button(description="Apply", icon="check",
                                     tooltip=f"git apply --3way the change of {tc.label}")
        self.message = w.HTML()
        ws_kind = (tc.workspace or {}).get("kind")
        if ws_kind == "none":
            self.apply_button.disabled = True
            self.message.value = ("<i>ran in the repository itself: its change is already "
                                  "there</i>")
        elif not tc.files:
            self.apply_button.disabled = True
        self.apply_button.on_click(lambda _b: on_apply(tc))
        super().__init__([self.title, self.files, self.diff,
                          w.HBox([self.apply_button, self.message])],
                         layout=w.Layout(border="1px solid #e0e0e0", padding="4px",
                                         margin="4px 0"))


class ChangesView(Composed, w.VBox):
    """A run's changes per task with an Apply button each.

    ``ChangesView(run_id="last", log_file=..., runs_dir=..., repo=None)`` reads the run with
    :func:`~codexflow_nb.changes.run_changes`; ``changes=`` gives the tasks directly. Apply
    writes into ``repo``, else into the repository the task's worktree came from, else the
    current folder.
    """

    def __init__(self, run_id: str = "last", *,
                 log_file: str | os.PathLike[str] = "data/logs/events.jsonl",
                 runs_dir: str | os.PathLike[str] | None = ".runs",
                 repo: str | os.PathLike[str] | None = None,
                 changes: Sequence[TaskChanges] | None = None,
                 max_lines: int = MAX_PATCH_LINES) -> None:
        self.repo = Path(repo) if repo is not None else None
        self.max_lines = max_lines
        self.changes: list[TaskChanges] = list(
            changes if changes is not None else run_changes(run_id, log_file=log_file,
                                                            runs_dir=runs_dir))
        self.applied: dict[str, ApplyResult] = {}
        self.rows: dict[str, _TaskRow] = {tc.task_id: _TaskRow(tc, self._click, max_lines)
                                          for tc in self.changes}
        head = w.HTML(changes_html([], max_lines=0) if not self.changes else
                      f"<b>Changes</b> · run <code>{escape(self.changes[0].run_id)}</code> · "
                      f"{len(self.changes)} task(s) · Apply puts a task's change into "
                      f"<code>{escape(str(self.repo or 'its repository'))}</code>")
        super().__init__([head, *self.rows.values()])

    def row(self, name: str) -> _TaskRow:
        """A task's row by key, ``alias/key`` or task id."""
        for tc in self.changes:
            if name in (tc.key, tc.label, tc.task_id):
                return self.rows[tc.task_id]
        raise KeyError(name)

    def target(self, tc: TaskChanges) -> Path:
        """Where Apply writes this task's change."""
        if self.repo is not None:
            return self.repo
        return Path((tc.workspace or {}).get("repo") or ".")

    def apply(self, name: str | TaskChanges) -> ApplyResult:
        """Apply one task's change (what its button does); the message shows next to it."""
        tc = name if isinstance(name, TaskChanges) else self.row(name).tc
        row = self.rows[tc.task_id]
        try:
            result = apply_task(tc, self.target(tc))
        except ConfigError as exc:
            result = ApplyResult(False, "; ".join(exc.problems))
        self.applied[tc.task_id] = result
        row.message.value = apply_html(result)
        if result.ok:
            row.apply_button.disabled = True
            row.apply_button.description = "Applied"
        return result

    def _click(self, tc: TaskChanges) -> None:
        self.apply(tc)

    def to_html(self) -> str:
        """The view as static HTML (with what Apply did so far)."""
        return changes_html(self.changes, max_lines=self.max_lines, applied=self.applied)

    def _repr_html_(self) -> str:
        return self.to_html()

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        data = super()._repr_mimebundle_(**kwargs)
        if isinstance(data, dict):  # front ends without widgets show the static HTML
            data["text/html"] = self.to_html()
            data["text/plain"] = changes_text(self.changes)
        return data

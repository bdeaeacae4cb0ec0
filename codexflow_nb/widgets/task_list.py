"""TaskList: one disclosure per task for runs of any size, drawn from a small pool of widgets.

A run of 5,000 tasks must not mean 5,000 output widgets in the browser: the list shows one
page (``page_size`` tasks, in plan order, optionally filtered by status) through a pool of
at most ``page_size`` HTML widgets in an ``Accordion``, and redraws only what changed. The
task a user opened stays open across redraws (it is remembered by key, not by position),
stays in the list when its status no longer matches the filter, and is opened again when its
page is shown again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import ipywidgets as w

from .lifecycle import Composed
from .palette import FAILED_STATUSES
from .render import step_count, transcript_html
from .state import RunState, TaskState

#: Filter name -> the statuses it shows (None: all).
FILTERS: dict[str, tuple[str, ...] | None] = {
    "all": None, "active": ("queued", "running"), "failed": FAILED_STATUSES,
    "cancelled": ("cancelled",), "completed": ("completed",),
}


def task_title(t: TaskState) -> str:
    """``key · alias · status · 812 ms · 3 steps``."""
    return (f"{t.key} · {t.alias} · {t.status}" + (f" · {t.ms:.0f} ms" if t.ms is not None else "")
            + (f" · {step_count(t)}" if t.steps else ""))


class TaskList(Composed, w.VBox):
    """A page of per-task disclosures (title: key, alias, status, time; body: the streamed
    transcript). Feed it a :class:`RunState` with :meth:`set_state`, then call
    :meth:`refresh` with the keys whose output changed."""

    def __init__(self, state: RunState | None = None, *, page_size: int = 20,
                 render: Callable[[TaskState], str] = transcript_html) -> None:
        self.page_size = max(1, page_size)
        self._render = render
        self.state = state or RunState()
        self.page = 0
        self.open_key: str | None = None  # the task whose disclosure the user opened
        self.shown_keys: list[str] = []  # the tasks shown now, by position
        self.pool: list[w.HTML] = []
        self._syncing = False
        self.filter = w.ToggleButtons(options=list(FILTERS), value="all",
                                      tooltips=["every task", "queued or running",
                                                "failed, timed out, rejected or skipped",
                                                "cancelled", "completed"],
                                      style={"button_width": "92px"})
        self.prev_button = w.Button(icon="chevron-left", tooltip="previous page",
                                    layout=w.Layout(width="36px"))
        self.next_button = w.Button(icon="chevron-right", tooltip="next page",
                                    layout=w.Layout(width="36px"))
        self.page_label = w.HTML()
        self.controls = w.HBox([self.filter, self.prev_button, self.page_label,
                                self.next_button], layout=w.Layout(display="none"))
        self.accordion = w.Accordion()
        self.filter.observe(lambda _c: self._refilter(), names="value")
        self.prev_button.on_click(lambda _b: self.show_page(self.page - 1))
        self.next_button.on_click(lambda _b: self.show_page(self.page + 1))
        self.accordion.observe(self._user_opened, names="selected_index")
        super().__init__([self.controls, self.accordion])
        self.refresh()

    # -- what is shown ------------------------------------------------------------------------
    def set_state(self, state: RunState) -> None:
        """Show another run (or plan): first page, nothing open."""
        self.state = state
        self.page = 0
        self.open_key = None
        self.refresh(full=True)

    def matching(self) -> list[str]:
        """Keys that pass the filter, in plan order (the open task always does)."""
        wanted = FILTERS[self.filter.value]
        if wanted is None:
            return list(self.state.tasks)
        return [k for k, t in self.state.tasks.items() if t.status in wanted or k == self.open_key]

    def show_page(self, page: int) -> None:
        self.page = page
        self.refresh(full=True)

    def show_task(self, key: str) -> None:
        """Open a task's disclosure (switching to its page; the filter to "all" if needed)."""
        if key not in self.state.tasks:
            raise KeyError(key)
        self.open_key = key
        if key not in self.matching():
            self._syncing = True
            try:
                self.filter.value = "all"
            finally:
                self._syncing = False
        self.page = self.matching().index(key) // self.page_size
        self.refresh(full=True)

    def _refilter(self) -> None:
        if not self._syncing:
            self.show_page(0)

    # -- drawing ------------------------------------------------------------------------------
    def refresh(self, changed: Iterable[str] = (), *, full: bool = False) -> None:
        """Redraw: titles always (only changed ones reach the front end), bodies of the
        ``changed`` keys on the page, everything when the page shows other tasks."""
        keys = self.matching()
        pages = max(1, -(-len(keys) // self.page_size))
        self.page = min(max(0, self.page), pages - 1)
        shown = keys[self.page * self.page_size:(self.page + 1) * self.page_size]
        tasks = self.state.tasks
        while len(self.pool) < len(shown):
            self.pool.append(w.HTML())
        moved = shown != self.shown_keys
        self._syncing = True
        try:
            if len(self.accordion.children) != len(shown):
                self.accordion.children = tuple(self.pool[:len(shown)])
            changed = set(changed)
            for i, key in enumerate(shown):
                if full or moved and (i >= len(self.shown_keys) or self.shown_keys[i] != key) or key in changed:
                    self.pool[i].value = self._render(tasks[key])
            self.shown_keys = shown
            self.accordion.titles = tuple(task_title(tasks[k]) for k in shown)
            index = shown.index(self.open_key) if self.open_key in shown else None
            if self.accordion.selected_index != index:
                self.accordion.selected_index = index
        finally:
            self._syncing = False
        self.controls.layout.display = None if len(tasks) > self.page_size else "none"
        if len(tasks) > self.page_size:
            first = self.page * self.page_size + 1 if shown else 0
            what = "" if self.filter.value == "all" else f" {self.filter.value}"
            self.page_label.value = (f"<span style='padding:0 6px'>{first}–"
                                     f"{first + len(shown) - 1 if shown else 0} of {len(keys)}"
                                     f"{what}</span>")
            self.prev_button.disabled = self.page == 0
            self.next_button.disabled = self.page >= pages - 1

    @property
    def outputs(self) -> dict[str, w.HTML]:
        """The output widget of each task shown now."""
        return dict(zip(self.shown_keys, self.pool, strict=False))

    def _user_opened(self, change: dict[str, Any]) -> None:
        if self._syncing:
            return
        index = change["new"]
        self.open_key = self.shown_keys[index] if index is not None and index < len(self.shown_keys) else None

    def _owned(self) -> list[w.HTML]:
        return list(self.pool)  # pooled widgets off the current page too

"""TaskEditor: tasks per alias (one per line) or a whole task map as JSON/YAML, with routing.

The value is a task map in the CLI's file format (``{alias: [task | {task, id, dependsOn,
meta, tools}, ...]}``): what is exported here runs with ``codex-flow run -f FILE``.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Mapping
from html import escape
from pathlib import Path
from typing import Any

import ipywidgets as w
import yaml

from ..errors import ConfigError
from ..registry import Registry, load_registry
from ..tasks import parse_task_map, parse_text, read_source
from .aliases import _error_html
from .lifecycle import Composed, close_tree
from .render import static_bundle

MODES = ("per alias", "JSON", "YAML")
#: Agents listed in the route trace, and added with the "best N agents" box ticked.
ROUTE_TOP = 3


def _item_text(item: Any) -> str:
    return item.get("task", "") if isinstance(item, Mapping) else str(item)


def dump_tasks(data: Mapping[str, Any], fmt: str) -> str:
    """A task map as JSON or YAML text."""
    if fmt.upper() == "JSON":
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    return yaml.safe_dump(dict(data), sort_keys=False, allow_unicode=True, width=100)


def route_html(route: Any, k: int = ROUTE_TOP) -> str:
    """A route's trace as a small table: stage and reason, then the top ``k`` agents with
    their ranker scores (the two parts, card BM25 and card model, as the score's tooltip), the
    words their cards share with the text and their triggers."""
    if not route.candidates:
        return f"<small>{escape(route.problem())}</small>"
    rows = []
    for i, s in enumerate(route.leaders(k), 1):
        trig = "; ".join(m.describe() for m in route.reasons(s.agent))
        parts = (f"card {s.bm25:.2f}, model {s.model:.2f}" if s.model is not None
                 else f"card {s.bm25:.2f}")
        rows.append(f"<tr><td>{i}</td><td><code>{escape(s.agent)}</code></td>"
                    f"<td style='text-align:right' title='{parts}'>{s.score:.2f}</td>"
                    f"<td>{escape(', '.join(s.words) or '-')}</td><td>{escape(trig)}</td></tr>")
    return (f"<small><b>{escape(route.candidates[0])}</b> — stage <b>{escape(route.stage)}</b>: "
            f"{escape(route.decision)}</small><table style='font-size:small;border-spacing:10px 2px'>"
            "<tr><th>#</th><th>agent</th><th>score</th><th>words</th><th>triggers</th></tr>"
            + "".join(rows) + "</table>")


class TaskEditor(Composed, w.VBox):
    """Edit a task map; ``value`` is plain CLI-format data, ``problems`` what is wrong."""

    def __init__(self, tasks: Mapping[str, Any] | str | os.PathLike[str] | None = None, *,
                 aliases: Mapping[str, Any] | None = None, registry: Registry | None = None) -> None:
        self._registry = registry
        self._data: dict[str, list[Any]] = {}
        self._aliases: dict[str, str] = {}
        self._text_error: str | None = None
        #: problems found elsewhere that are about the tasks (a task naming an unknown
        #: alias): the dashboard puts them here, next to the tasks
        self.extra_problems: list[str] = []
        self._listeners: list[Callable[[], None]] = []
        self._syncing = False
        self.mode = w.ToggleButtons(options=MODES, value=MODES[0])
        self.boxes: dict[str, w.Textarea] = {}
        self.per_alias = w.VBox()
        self.text = w.Textarea(continuous_update=False, layout=w.Layout(width="95%", height="240px",
                                                                       display="none"))
        self.route_text = w.Text(placeholder="describe a piece of work; the router picks the agent",
                                 layout=w.Layout(width="60%"))
        self.route_all = w.Checkbox(value=False, description=f"best {ROUTE_TOP} agents",
                                    indent=False)
        self.route_button = w.Button(description="Route", icon="random")
        #: the last route's trace: the stage that decided, the top agents, their scores and words
        self.route_why = w.HTML()
        self.upload = w.FileUpload(accept=".json,.yaml,.yml", multiple=False,
                                   description="Import file")
        self.path = w.Text(placeholder="tasks.json or tasks.yaml", description="file")
        self.import_button = w.Button(description="Import", icon="folder-open")
        self.export_button = w.Button(description="Export", icon="save")
        self.message = w.HTML()
        self.mode.observe(lambda c: self._switch(c["new"], c["old"]), names="value")
        self.text.observe(lambda c: self._text_changed(c["new"]), names="value")
        self.route_button.on_click(lambda _b: self._guard(lambda: self.route(self.route_text.value)))
        self.upload.observe(lambda c: self._guard(lambda: self._uploaded(c["new"])), names="value")
        self.import_button.on_click(lambda _b: self._guard(lambda: self.import_file(self.path.value)))
        self.export_button.on_click(lambda _b: self._guard(lambda: self.export_file(self.path.value)))
        super().__init__([self.mode, self.per_alias, self.text,
                          w.HBox([self.route_text, self.route_all, self.route_button]),
                          self.route_why,
                          w.HBox([self.upload, self.path, self.import_button, self.export_button]),
                          self.message])
        if aliases:
            self.set_aliases(aliases)
        if isinstance(tasks, (str, os.PathLike)) and "\n" not in str(tasks) and Path(tasks).is_file():
            self.import_file(tasks)
        elif isinstance(tasks, str):
            self.import_text(tasks)
        elif tasks is not None:
            self.load(tasks)
        else:
            self._render()

    # -- data -----------------------------------------------------------------------------
    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = load_registry()
        return self._registry

    @property
    def value(self) -> dict[str, list[Any]]:
        """The task map (aliases with no tasks left out)."""
        return {a: copy.deepcopy(items) for a, items in self._data.items() if items}

    @property
    def problems(self) -> list[str]:
        out = [self._text_error] if self._text_error else []
        try:
            parse_task_map(self.value, "tasks")
        except ConfigError as exc:
            out.extend(exc.problems)
        return out

    def task_map(self) -> dict[str, list[Any]]:
        """The validated task map (plain data); raises ConfigError listing every problem."""
        problems = self.problems
        if problems:
            raise ConfigError(problems)
        return self.value

    def on_change(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)

    def set_aliases(self, aliases: Mapping[str, Any]) -> None:
        """Known aliases (``{alias: {id, ...}}``): each gets a box in the per-alias view."""
        known = {a: (s.get("id", "") if isinstance(s, Mapping) else str(s))
                 for a, s in aliases.items()}
        if known == self._aliases:
            return  # nothing to redraw (the boxes keep their text, focus and views)
        self._aliases = known
        if self.mode.value == MODES[0]:
            self._render()

    def set_extra_problems(self, problems: list[str]) -> None:
        """Show problems about the tasks found outside the editor (see ``extra_problems``)."""
        if problems != self.extra_problems:
            self.extra_problems = list(problems)
            self._show_problems()

    def load(self, data: Mapping[str, Any], source: str = "tasks") -> None:
        """Replace the task map with plain data (validated first)."""
        parse_task_map(data, source)
        self._data = {str(a): (list(v) if isinstance(v, list) else [v]) for a, v in data.items()}
        self._text_error = None
        self._render()
        self._changed()

    def import_text(self, text: str, source: str = "tasks") -> None:
        """Load JSON or YAML text in the CLI's task-map format."""
        self.load(parse_text(text, source), source)

    def export_text(self, fmt: str = "JSON") -> str:
        return dump_tasks(self.task_map(), fmt)

    def import_file(self, path: str | os.PathLike[str]) -> None:
        if not str(path).strip():
            raise ConfigError("give a file path")
        self.import_text(read_source(str(path)), str(path))
        self.message.value = f"imported {sum(map(len, self._data.values()))} task(s) from " \
                             f"<code>{escape(str(path))}</code>"

    def export_file(self, path: str | os.PathLike[str]) -> Path:
        """Write the task map; ``.json`` gives JSON, anything else YAML."""
        if not str(path).strip():
            raise ConfigError("give a file path")
        p = Path(path)
        p.write_text(self.export_text("JSON" if p.suffix.lower() == ".json" else "YAML"), encoding="utf-8")
        self.message.value = f"exported to <code>{escape(str(p))}</code>"
        return p

    def route(self, text: str) -> list[str]:
        """Route free text as ``run --route`` does (triggers, then the ranker over the agent
        cards) and add it as a task to the best agent (the best ROUTE_TOP with ``route_all``);
        ``route_why`` shows why. Returns the aliases used."""
        if not text.strip():
            raise ConfigError("type the work to route first")
        try:
            from ..routing import route_text
        except ImportError as exc:  # the router is optional in older installs
            raise ConfigError(f"routing is not available in this install ({exc})") from None
        found = route_text(text, self.registry)
        self.route_why.value = route_html(found)
        if not found.candidates:
            closest = found.ranking.closest if found.ranking is not None else []
            raise ConfigError(f"no agent's triggers match {text.strip()[:60]!r} and it has no "
                              "informative words for the ranker"
                              + (f"; closest agents: {', '.join(closest)}" if closest else "")
                              + ": add the task to an alias by hand")
        chosen = found.top(ROUTE_TOP) if self.route_all.value else found.candidates[:1]
        by_agent = {agent: alias for alias, agent in reversed(list(self._aliases.items()))}
        used = []
        for agent in chosen:
            alias = by_agent.get(agent, agent)
            self._data.setdefault(alias, []).append(
                {"task": text.strip(), "meta": {"routedBy": found.why(agent) or "router"}})
            used.append(alias)
        self.route_text.value = ""
        self._render()
        self._changed()
        self.message.value = "routed to " + ", ".join(
            f"<code>{escape(a)}</code> ({escape(found.why(g))})"
            for a, g in zip(used, chosen, strict=True))
        return used

    # -- views ----------------------------------------------------------------------------
    def _render(self) -> None:
        self._syncing = True
        try:
            if self.mode.value == MODES[0]:
                names = list(dict.fromkeys([*self._aliases, *self._data]))
                old = self.per_alias.children
                self.boxes = {}
                rows = []
                for alias in names:
                    box = w.Textarea("\n".join(_item_text(i) for i in self._data.get(alias, [])),
                                     placeholder="one task per line", continuous_update=False,
                                     layout=w.Layout(width="70%", height="70px"))
                    box.observe(lambda c, a=alias: self._lines_changed(a, c["new"]), names="value")
                    self.boxes[alias] = box
                    agent = self._aliases.get(alias)
                    label = f"<b>{escape(alias)}</b>" + (f"<br><small>{escape(agent)}</small>" if agent else "")
                    rows.append(w.HBox([w.HTML(label, layout=w.Layout(width="180px")), box]))
                self.per_alias.children = tuple(rows)
                close_tree(*old)
            elif self._text_error is None:
                self.text.value = dump_tasks(self.value, self.mode.value) if self._data else ""
        finally:
            self._syncing = False

    def _switch(self, mode: str, old: str) -> None:
        if self._syncing:
            return
        per_alias = mode == MODES[0]
        if self._text_error:
            self._syncing = True
            try:
                self.mode.value = old  # the text holds an error: stay until it is fixed
            finally:
                self._syncing = False
            self.message.value = _error_html([self._text_error, "fix the text before switching view"])
            return
        self.per_alias.layout.display = None if per_alias else "none"
        self.text.layout.display = "none" if per_alias else None
        self._render()

    def _lines_changed(self, alias: str, text: str) -> None:
        if self._syncing:
            return
        old = list(self._data.get(alias, []))
        items: list[Any] = []
        for line in (ln.strip() for ln in text.splitlines()):
            if not line:
                continue
            match = next((i for i in old if _item_text(i) == line), None)
            if match is not None:
                old.remove(match)  # keep ids and dependsOn of unchanged lines
                items.append(match)
            else:
                items.append(line)
        self._data[alias] = items
        self._changed()

    def _text_changed(self, text: str) -> None:
        if self._syncing:
            return
        try:
            data = parse_text(text, "task map") if text.strip() else {}
            parse_task_map(data, "task map")
        except ConfigError as exc:
            self._text_error = "; ".join(exc.problems)
            self._changed()
            return
        self._text_error = None
        self._data = {str(a): (list(v) if isinstance(v, list) else [v]) for a, v in data.items()}
        self._changed()

    def _uploaded(self, files: Any) -> None:
        for f in files or ():
            self.import_text(bytes(f["content"]).decode("utf-8"), str(f.get("name", "upload")))
            self.message.value = f"imported <code>{escape(str(f.get('name')))}</code>"

    def _guard(self, action: Callable[[], Any]) -> None:
        try:
            action()
        except ConfigError as exc:
            self.message.value = _error_html(exc.problems)

    def _show_problems(self) -> None:
        problems = list(dict.fromkeys([*self.problems, *self.extra_problems]))
        n = sum(len(v) for v in self._data.values())
        self.message.value = (_error_html(problems) if problems
                              else f"<span style='color:#009e73'>✓ {n} task(s)</span>")

    def _changed(self) -> None:
        self._show_problems()
        for callback in list(self._listeners):
            callback()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        # a static copy (text/html) for front ends without widgets: GitHub, nbconvert, ...
        return static_bundle(self, super()._repr_mimebundle_(**kwargs))

"""AliasEditor: a table of alias -> agent with editable overrides, validated inline.

The value is plain data in the ``--aliases`` YAML format (``{alias: {id, overrides}}``), so a
map made here can be saved and passed to ``codex-flow run --aliases FILE`` unchanged.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import os
from collections.abc import Callable, Iterable, Mapping
from html import escape
from pathlib import Path
from typing import Any

import ipywidgets as w
import yaml

from ..aliases import DEFAULT_ALIASES, Aliases, check_safe_name, deep_merge
from ..errors import ConfigError
from ..plan import Plan
from ..registry import Registry, load_registry
from ..registry import parse_yaml as registry_parse_yaml
from ..tasks import read_source
from .lifecycle import Composed, close_tree
from .render import static_bundle

#: Quick fields: (label, path inside the agent definition).
QUICK_FIELDS = {
    "autonomy": ("runtime", "autonomy_level"),
    "parallel": ("runtime", "concurrency", "max_parallel_tasks"),
    "timeout": ("runtime", "timeout_ms"),
}
_MISSING = object()


def parse_yaml(text: str, what: str) -> Any:
    """Parse YAML/JSON text; ConfigError ``<what>: bad YAML: line L, column C: problem``."""
    return registry_parse_yaml(text, what, "bad YAML")


def dump_yaml(data: Any) -> str:
    return "" if not data else yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _get(data: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(data, Mapping) or part not in data:
            return _MISSING
        data = data[part]
    return data


def _set(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for part in path[:-1]:
        if not isinstance(data.get(part), dict):
            data[part] = {}
        data = data[part]
    data[path[-1]] = value


def _unset(data: dict[str, Any], path: tuple[str, ...]) -> None:
    """Remove a nested key and the mappings it leaves empty."""
    if len(path) == 1:
        data.pop(path[0], None)
        return
    child = data.get(path[0])
    if isinstance(child, dict):
        _unset(child, path[1:])
        if not child:
            data.pop(path[0])


def _error_html(lines: list[str]) -> str:
    return "".join(f"<div style='color:#e53935'>⚠ {escape(line)}</div>" for line in lines)


def suggest(name: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'a' or 'b'?)`` for the closest candidates (difflib), else ``""``.
    When one is clearly close, only those about as close are named."""
    pool = sorted({c for c in candidates if c and c != name})
    scored = sorted(((difflib.SequenceMatcher(None, name, c).ratio(), c) for c in pool),
                    key=lambda sc: (-sc[0], sc[1]))
    close = [(r, c) for r, c in scored if r >= 0.6][:3]
    if close and close[0][0] >= 0.8:
        close = [(r, c) for r, c in close if r >= close[0][0] - 0.1]
    names = [repr(c) for _r, c in close]
    if not names and len(name) >= 4:  # a fragment of a longer name: "analyzer"
        names = [repr(c) for c in sorted((c for c in pool if name.lower() in c.lower()),
                                         key=len)[:3]]
    if not names:
        return ""
    return f" (did you mean {', '.join(names[:-1]) + ' or ' if len(names) > 1 else ''}{names[-1]}?)"


def plain(problem: str, registry: Registry | None = None) -> str:
    """A problem without absolute paths: the agents folder and the working folder are named,
    not spelled out (a notebook is shared; its messages should not carry a home folder)."""
    if registry is not None:
        problem = problem.replace(f" in {registry.root}", "").replace(str(registry.root),
                                                                      "the agents folder")
    cwd = str(Path.cwd())
    if len(cwd) > 1:
        problem = problem.replace(cwd + os.sep, "")
    return problem


def _agent_names(registry: Registry) -> list[str]:
    return list(dict.fromkeys(name for a in registry for name in (a.id, a.key)))


def unknown_agent(alias: str, agent_id: str, registry: Registry) -> str | None:
    """``alias: unknown agent 'x' (did you mean 'y'?)`` when ``agent_id`` names no agent."""
    try:
        found = registry.find(agent_id)
    except ConfigError:  # ambiguous: the full check says which agents
        return None
    if found is not None:
        return None
    return f"{alias}: unknown agent {agent_id!r}{suggest(agent_id, _agent_names(registry))}"


def plan_problems(plan: Plan, aliases: Mapping[str, Any], registry: Registry,
                  resolved: Aliases | None = None) -> list[str]:
    """What stops ``plan`` from running with the alias map ``aliases`` (see
    :func:`check_plan`)."""
    return check_plan(plan, aliases, registry, resolved)[0]


def check_plan(plan: Plan, aliases: Mapping[str, Any], registry: Registry,
               resolved: Aliases | None = None) -> tuple[list[str], dict[str, int]]:
    """What stops ``plan`` from running with the alias map ``aliases`` (names, or a
    validated :class:`Aliases` as ``resolved``): tasks naming no alias or agent (with a
    suggestion), then the plan's own checks, without absolute paths; and, when it can run,
    each alias's parallel-task limit."""
    out = []
    for name in dict.fromkeys(t.alias for t in plan.tasks):
        if name in aliases:
            continue
        try:
            known = registry.find(name) is not None
        except ConfigError:
            known = True  # ambiguous: the plan's check below says so
        if not known:
            hint = suggest(name, [*aliases, *_agent_names(registry)])
            out.append(f"tasks: {name!r} is neither an alias ({', '.join(aliases) or 'none'}) "
                       f"nor an agent{hint}")
    if out or resolved is None:
        return out, {}
    try:
        limits = plan.validate(registry, resolved)
    except ConfigError as exc:
        return [plain(p, registry) for p in exc.problems], {}
    return [], {a: r.max_parallel_tasks for a, r in limits.items()}


class AliasRow(Composed, w.VBox):
    """One alias: name, agent, quick override fields, the full overrides as YAML, messages."""

    def __init__(self, editor: AliasEditor, alias: str, agent_id: str,
                 overrides: Mapping[str, Any] | None = None) -> None:
        self.editor = editor
        self.overrides: dict[str, Any] = copy.deepcopy(dict(overrides or {}))
        self.yaml_error: str | None = None
        self._syncing = False
        self.alias = w.Text(alias, placeholder="alias", continuous_update=False,
                            layout=w.Layout(width="150px"))
        self.agent = w.Combobox(value=agent_id, options=editor.agent_ids, ensure_option=False,
                                placeholder="agent id", continuous_update=False,
                                layout=w.Layout(width="200px"))
        self.autonomy = w.BoundedFloatText(min=0.0, max=1.0, step=0.05, layout=w.Layout(width="80px"))
        self.parallel = w.BoundedIntText(min=1, max=100_000, layout=w.Layout(width="80px"))
        self.timeout = w.IntText(layout=w.Layout(width="100px"))
        self.show_yaml = w.ToggleButton(description="overrides", icon="code",
                                        tooltip="edit the full overrides as YAML",
                                        layout=w.Layout(width="110px"))
        self.remove_button = w.Button(icon="trash", tooltip="remove this alias",
                                      layout=w.Layout(width="40px"))
        self.yaml = w.Textarea(placeholder="overrides as YAML, e.g. runtime: {autonomy_level: 0.9}",
                               continuous_update=False,
                               layout=w.Layout(width="95%", height="110px", display="none"))
        self.message = w.HTML()
        self.alias.observe(lambda _c: self._edited(), names="value")
        self.agent.observe(lambda _c: self._agent_changed(), names="value")
        for name in QUICK_FIELDS:
            getattr(self, name).observe(lambda c, n=name: self._quick_changed(n, c["new"]), names="value")
        self.yaml.observe(lambda c: self._yaml_changed(c["new"]), names="value")
        self.show_yaml.observe(lambda c: setattr(self.yaml.layout, "display", None if c["new"] else "none"),
                               names="value")
        self.remove_button.on_click(lambda _b: editor.remove_alias(self.alias.value, row=self))
        super().__init__([w.HBox([self.alias, self.agent, self.autonomy, self.parallel, self.timeout,
                                  self.show_yaml, self.remove_button]), self.yaml, self.message])
        self.sync_fields()

    @property
    def spec(self) -> dict[str, Any]:
        return {"id": self.agent.value.strip(), "overrides": copy.deepcopy(self.overrides)}

    def effective(self) -> dict[str, Any] | None:
        agent = self.editor.find_agent(self.agent.value.strip())
        return deep_merge(agent.data, self.overrides) if agent is not None else None

    def sync_fields(self) -> None:
        """Show the effective quick values and the overrides YAML (no change events)."""
        self._syncing = True
        try:
            eff = self.effective() or {}
            for name, path in QUICK_FIELDS.items():
                value = _get(eff, path)
                widget = getattr(self, name)
                if value is _MISSING or value is None:
                    value = 0 if name == "timeout" else widget.value
                with contextlib.suppress(Exception):  # a wrong type in YAML: validation says so
                    widget.value = value
            if self.yaml_error is None:
                self.yaml.value = dump_yaml(self.overrides)
        finally:
            self._syncing = False

    def _agent_changed(self) -> None:
        if not self._syncing:
            self.sync_fields()
            self._edited()

    def _quick_changed(self, name: str, value: Any) -> None:
        if self._syncing:
            return
        path = QUICK_FIELDS[name]
        agent = self.editor.find_agent(self.agent.value.strip())
        default = _get(agent.data, path) if agent is not None else _MISSING
        no_timeout = name == "timeout" and value == 0 and default in (_MISSING, None)
        if no_timeout or value == default:  # the agent's own value: no override needed
            _unset(self.overrides, path)
        else:
            _set(self.overrides, path, value)
        self.yaml_error = None
        self.sync_fields()
        self._edited()

    def _yaml_changed(self, text: str) -> None:
        if self._syncing:
            return
        try:
            data = parse_yaml(text, f"{self.alias.value}.overrides") if text.strip() else {}
            if not isinstance(data, Mapping):
                raise ConfigError(f"{self.alias.value}.overrides: must be a mapping, "
                                  f"got {type(data).__name__}")
        except ConfigError as exc:
            self.yaml_error = exc.problems[0]
            self._edited()
            return
        self.overrides, self.yaml_error = dict(data), None
        self.sync_fields()
        self._edited()

    def _edited(self) -> None:
        if not self._syncing:
            self.editor.changed()

    def problems(self, registry: Registry, duplicate: bool) -> list[str]:
        """Everything wrong with this row, one line each."""
        name = self.alias.value.strip()
        out: list[str] = []
        bad = check_safe_name(name, "alias")
        if bad:
            out.append(bad)
        if duplicate:
            out.append(f"duplicate alias {name!r}: alias names must be unique")
        agent_id = self.agent.value.strip()
        if not agent_id:
            out.append(f"{name}: choose an agent")
        else:
            unknown = unknown_agent(name, agent_id, registry)
            if unknown:
                out.append(unknown)
            else:
                try:
                    registry.get(agent_id)
                except ConfigError as exc:
                    out.extend(f"{name}: {plain(p, registry)}" for p in exc.problems)
        if self.yaml_error:
            out.append(self.yaml_error)
        if not out:
            timeout = _get(self.overrides, QUICK_FIELDS["timeout"])
            if timeout is not _MISSING and timeout is not None and (
                    not isinstance(timeout, int) or timeout <= 0):
                out.append(f"{name}: timeout_ms must be a positive number of milliseconds, got {timeout!r}")
            try:
                Aliases({name: self.spec}, source="aliases").resolve(name, registry)
            except ConfigError as exc:
                out.extend(plain(p, registry) for p in exc.problems)
        return out


class AliasEditor(Composed, w.VBox):
    """Edit an alias map as a table; ``value`` is the ``--aliases`` data, ``problems`` what
    is wrong with it (shown inline, never raised while editing)."""

    def __init__(self, aliases: Aliases | Mapping[str, Any] | str | os.PathLike[str] | None = None,
                 *, registry: Registry | None = None) -> None:
        self.registry = registry or load_registry()
        self.agent_ids = [a.key for a in self.registry]
        self._listeners: list[Callable[[], None]] = []
        self._loading = False
        self.rows: list[AliasRow] = []
        self.table = w.VBox()
        header = w.HBox([w.HTML(f"<b>{label}</b>", layout=w.Layout(width=width)) for label, width in (
            ("alias", "150px"), ("agent", "200px"), ("autonomy", "80px"), ("parallel", "80px"),
            ("timeout ms", "100px"))])
        self.add_button = w.Button(description="Add alias", icon="plus")
        self.add_button.on_click(lambda _b: self.add_alias("alias", ""))
        self.message = w.HTML()
        self.yaml_text = w.Textarea(placeholder="alias map YAML (the --aliases format)",
                                    layout=w.Layout(width="95%", height="160px"))
        self.export_button = w.Button(description="Show YAML", icon="arrow-down",
                                      tooltip="write the table into the text box")
        self.import_button = w.Button(description="Apply YAML", icon="arrow-up",
                                      tooltip="replace the table with the text box")
        self.path = w.Text(placeholder="aliases.yaml", description="file")
        self.load_button = w.Button(description="Load file", icon="folder-open")
        self.save_button = w.Button(description="Save file", icon="save")
        self.export_button.on_click(lambda _b: setattr(self.yaml_text, "value", self.to_yaml()))
        self.import_button.on_click(lambda _b: self._guard(lambda: self.from_yaml(self.yaml_text.value)))
        self.load_button.on_click(lambda _b: self._guard(lambda: self.load_file(self.path.value)))
        self.save_button.on_click(lambda _b: self._guard(lambda: self.save_file(self.path.value)))
        self.io_message = w.HTML()
        super().__init__([header, self.table, self.add_button, self.message,
                          w.HTML("<b>YAML</b>"), self.yaml_text,
                          w.HBox([self.export_button, self.import_button]),
                          w.HBox([self.path, self.load_button, self.save_button]), self.io_message])
        if isinstance(aliases, (str, os.PathLike)):
            self.load_file(aliases)
        else:
            self.load(aliases.to_dict() if isinstance(aliases, Aliases)
                      else (DEFAULT_ALIASES if aliases is None else aliases))

    # -- data -----------------------------------------------------------------------------
    @property
    def value(self) -> dict[str, dict[str, Any]]:
        """The alias map as plain data (rows as they are; see ``problems``)."""
        return {row.alias.value.strip(): row.spec for row in self.rows}

    @property
    def names(self) -> list[str]:
        return [row.alias.value.strip() for row in self.rows]

    @property
    def problems(self) -> list[str]:
        names = self.names
        out: list[str] = []
        for row, name in zip(self.rows, names, strict=True):
            out.extend(row.problems(self.registry, names.count(name) > 1))
        return list(dict.fromkeys(out))

    def aliases(self) -> Aliases:
        """A validated :class:`Aliases`; raises ConfigError listing every problem."""
        problems = self.problems
        if problems:
            raise ConfigError(problems)
        return Aliases(self.value, source="alias editor")

    def find_agent(self, agent_id: str) -> Any:
        try:
            return self.registry.find(agent_id) if agent_id else None
        except ConfigError:  # ambiguous id: reported by validation
            return None

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after every edit."""
        self._listeners.append(callback)

    # -- edits ----------------------------------------------------------------------------
    def add_alias(self, alias: str, agent_id: str, overrides: Mapping[str, Any] | None = None) -> str:
        """Add a row; the name gets a ``-2``, ``-3``... suffix when taken. Returns the name."""
        name, n = alias, 1
        while name in self.names:
            n += 1
            name = f"{alias}-{n}"
        row = AliasRow(self, name, agent_id, overrides)
        self.rows.append(row)
        self.table.children = tuple(self.rows)
        self.changed()
        return name

    def remove_alias(self, alias: str, *, row: AliasRow | None = None) -> None:
        target = row or next((r for r in self.rows if r.alias.value.strip() == alias), None)
        if target is None:
            raise ConfigError(f"no alias {alias!r}")
        self.rows.remove(target)
        self.table.children = tuple(self.rows)
        target.close()
        self.changed()

    def rename_alias(self, old: str, new: str) -> None:
        row = next((r for r in self.rows if r.alias.value.strip() == old), None)
        if row is None:
            raise ConfigError(f"no alias {old!r}")
        row.alias.value = new

    def row(self, alias: str) -> AliasRow:
        for r in self.rows:
            if r.alias.value.strip() == alias:
                return r
        raise KeyError(alias)

    def load(self, mapping: Mapping[str, Any]) -> None:
        """Replace every row with an alias map (plain data, as in the YAML file)."""
        if not isinstance(mapping, Mapping):
            raise ConfigError(f"an alias map must be a mapping of alias -> {{id, overrides}}, "
                              f"got {type(mapping).__name__}")
        problems = []
        rows = []
        for alias, spec in mapping.items():
            spec = {"id": spec} if isinstance(spec, str) else spec
            if not isinstance(spec, Mapping) or not isinstance(spec.get("id", ""), str):
                problems.append(f"{alias}: expected {{id: <agent id>, overrides: {{...}}}}")
                continue
            overrides = spec.get("overrides") or {}
            if not isinstance(overrides, Mapping):
                problems.append(f"{alias}.overrides: expected a mapping")
                continue
            rows.append((str(alias), spec.get("id", ""), overrides))
        if problems:
            raise ConfigError(problems)
        self._loading = True
        old = self.rows
        try:
            self.rows = [AliasRow(self, a, i, o) for a, i, o in rows]
            self.table.children = tuple(self.rows)
        finally:
            self._loading = False
        close_tree(*old)
        self.changed()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.value, sort_keys=False, allow_unicode=True)

    def from_yaml(self, text: str) -> None:
        data = parse_yaml(text, "alias YAML")
        self.load(data if data is not None else {})

    def load_file(self, path: str | os.PathLike[str]) -> None:
        if not str(path).strip():
            raise ConfigError("give a file path")
        data = parse_yaml(read_source(str(path)), str(path))
        self.load(data if data is not None else {})
        self.io_message.value = f"loaded {len(self.rows)} alias(es) from <code>{escape(str(path))}</code>"

    def save_file(self, path: str | os.PathLike[str]) -> Path:
        if not str(path).strip():
            raise ConfigError("give a file path")
        problems = self.problems
        if problems:
            raise ConfigError(["fix the alias table first:", *problems])
        p = Path(path)
        p.write_text(self.to_yaml(), encoding="utf-8")
        self.io_message.value = f"saved {len(self.rows)} alias(es) to <code>{escape(str(p))}</code>"
        return p

    def _guard(self, action: Callable[[], Any]) -> None:
        """Run a button action; user errors become inline messages."""
        try:
            action()
        except ConfigError as exc:
            self.io_message.value = _error_html(exc.problems)

    def changed(self) -> None:
        """Re-validate, show messages inline and notify listeners."""
        if self._loading:
            return
        names = self.names
        for row, name in zip(self.rows, names, strict=True):
            row.message.value = _error_html(row.problems(self.registry, names.count(name) > 1))
        # each problem shows once, on its row; a count is by the run panel's Run button
        self.message.value = ("" if self.problems else
                              f"<span style='color:#009e73'>✓ {len(self.rows)} alias(es)</span>")
        for callback in list(self._listeners):
            callback()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        # a static copy (text/html) for front ends without widgets: GitHub, nbconvert, ...
        return static_bundle(self, super()._repr_mimebundle_(**kwargs))

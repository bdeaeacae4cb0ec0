"""Task maps: ``{aliasOrAgentId: [task, ...]}`` from a file, stdin, text or a dict."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .aliases import check_safe_name
from .errors import ConfigError
from .inputs import check_shape, read_text
from .registry import parse_yaml

MAX_TASK_FILE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class TaskItem:
    """One task as written by the user."""

    text: str
    id: str | None = None
    depends_on: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)
    tools: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"task": self.text}
        if self.id:
            out["id"] = self.id
        if self.depends_on:
            out["dependsOn"] = list(self.depends_on)
        if self.meta:
            out["meta"] = self.meta
        if self.tools:
            out["tools"] = list(self.tools)
        return out


TaskMap = dict[str, list[TaskItem]]


class DuplicateKeyError(ValueError):
    """A JSON object names the same key twice (the second would silently replace the first)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKeyError(f"duplicate key {key!r} in one object")
        out[key] = value
    return out


def parse_text(text: str, source: str) -> Any:
    """Parse JSON (strictly, with line/column on error) or YAML text."""
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            return check_shape(json.loads(text, object_pairs_hook=_unique_keys), source)
        except RecursionError:
            raise ConfigError(f"{source}: nested too deeply to read") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{source}: invalid JSON: line {exc.lineno}, column {exc.colno}: "
                              f"{exc.msg}") from None
        except DuplicateKeyError as exc:
            raise ConfigError(f"{source}: invalid JSON: {exc}") from None
    return parse_yaml(text, source)


def read_source(path: str, max_bytes: int = MAX_TASK_FILE_BYTES) -> str:
    """Read a task/plan file (``-`` is stdin) as UTF-8 text: regular files only, size-limited."""
    return read_text(path, max_bytes, "task file")


def _parse_item(value: Any, where: str, problems: list[str]) -> TaskItem | None:
    if isinstance(value, str):
        if not value.strip():
            problems.append(f"{where}: empty task text")
            return None
        return TaskItem(value)
    if not isinstance(value, Mapping):
        problems.append(f"{where}: a task must be a string or an object with 'task', "
                        f"got {type(value).__name__}")
        return None
    text = value.get("task")
    if not isinstance(text, str) or not text.strip():
        problems.append(f"{where}: 'task' must be a non-empty string")
        return None
    task_id = value.get("id")
    if task_id is not None:
        bad = check_safe_name(task_id, "task id") if isinstance(task_id, str) else "task id must be a string"
        if bad:
            problems.append(f"{where}: {bad}")
            return None
    deps = value.get("dependsOn", [])
    if isinstance(deps, str):
        deps = [deps]
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        problems.append(f"{where}: 'dependsOn' must be a list of task ids")
        return None
    meta = value.get("meta") or {}
    if not isinstance(meta, Mapping):
        problems.append(f"{where}: 'meta' must be an object")
        return None
    tools = value.get("tools") or []
    if not isinstance(tools, list) or not all(isinstance(t, str) for t in tools):
        problems.append(f"{where}: 'tools' must be a list of tool names")
        return None
    return TaskItem(text, task_id, tuple(deps), dict(meta), tuple(tools))


def parse_task_map(data: Any, source: str = "tasks") -> TaskMap:
    """Validate parsed data as a task map. Raises ConfigError with one line per problem."""
    if not isinstance(data, Mapping):
        kind = "nothing" if data is None else type(data).__name__
        raise ConfigError(f"{source}: a task map must be an object of alias -> [task, ...], got {kind}")
    if not data:
        raise ConfigError(f"{source}: the task map is empty")
    problems: list[str] = []
    result: TaskMap = {}
    for key, items in data.items():
        bad = (check_safe_name(key, "alias") if isinstance(key, str)
               else f"alias {key!r} must be a string, not {type(key).__name__}")
        if bad:
            problems.append(f"{source}: {bad}")
            continue
        if isinstance(items, (str, Mapping)):
            items = [items]
        if not isinstance(items, list):
            problems.append(f"{source}: {key}: expected a list of tasks, got {type(items).__name__}")
            continue
        if not items:
            problems.append(f"{source}: {key}: the task list is empty")
            continue
        parsed = [_parse_item(v, f"{source}: {key}[{i}]", problems) for i, v in enumerate(items)]
        result[key] = [p for p in parsed if p is not None]
    if problems:
        raise ConfigError(problems)
    return result


def load_task_map(path: str) -> TaskMap:
    """Read a task map from a JSON/YAML file, or stdin when ``path`` is ``-``."""
    source = "<stdin>" if path == "-" else path
    return parse_task_map(parse_text(read_source(path), source), source)


def coerce_task_map(tasks: Any, source: str = "tasks") -> TaskMap:
    """Accept a TaskMap, a plain dict, a path, or JSON/YAML text."""
    if isinstance(tasks, Mapping) and all(
            isinstance(v, list) and all(isinstance(i, TaskItem) for i in v) for v in tasks.values()):
        return dict(tasks)  # type: ignore[arg-type]
    if isinstance(tasks, Path):
        return load_task_map(str(tasks))
    if isinstance(tasks, str):
        if "\n" not in tasks and Path(tasks).is_file():
            return load_task_map(tasks)
        return parse_task_map(parse_text(tasks, source), source)
    return parse_task_map(tasks, source)

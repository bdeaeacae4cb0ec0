from __future__ import annotations

import pytest

from codexflow_nb import Aliases, ConfigError, Plan, deep_merge, parse_task_map
from codexflow_nb.tasks import coerce_task_map, load_task_map, parse_text


def test_deep_merge_merges_dicts_and_replaces_lists_and_scalars():
    base = {"a": {"b": 1, "c": [1, 2]}, "d": "x"}
    merged = deep_merge(base, {"a": {"c": [3], "e": 2}, "d": {"new": True}})
    assert merged == {"a": {"b": 1, "c": [3], "e": 2}, "d": {"new": True}}
    assert base == {"a": {"b": 1, "c": [1, 2]}, "d": "x"}  # not mutated


def test_default_aliases_and_overrides(registry):
    before = registry.get("code-analyzer").data["runtime"]["autonomy_level"]
    aliases = Aliases()
    assert set(aliases) == {"reviewer", "reviewer2", "architect"}
    r1, r2 = aliases.resolve("reviewer", registry), aliases.resolve("reviewer2", registry)
    assert r1.agent_id == r2.agent_id == "code-analyzer"
    assert r1.effective["runtime"]["autonomy_level"] == 0.7
    assert r2.effective["runtime"]["autonomy_level"] == 0.9
    assert aliases.resolve("architect", registry).agent_id == "system-architect"
    assert registry.get("code-analyzer").data["runtime"]["autonomy_level"] == before  # untouched


def test_override_limit_and_bare_agent_id(registry):
    aliases = Aliases({"fast": {"id": "coder", "overrides": {
        "runtime": {"concurrency": {"max_parallel_tasks": 7}, "timeout_ms": 1000}}}})
    fast = aliases.resolve("fast", registry)
    assert fast.max_parallel_tasks == 7 and fast.timeout_ms == 1000
    assert fast.effective["runtime"]["concurrency"]["queue_strategy"] == \
        registry.get("coder").data["runtime"]["concurrency"]["queue_strategy"]
    bare = aliases.resolve("planner", registry)  # an agent id used as its own alias
    assert bare.alias == "planner" and bare.agent_id == "planner"
    with pytest.raises(ConfigError, match="neither an alias"):
        aliases.resolve("nobody", registry)


def test_bad_override_limit_is_reported(registry):
    aliases = Aliases({"x": {"id": "coder", "overrides": {"runtime": {"concurrency": {
        "max_parallel_tasks": 0}}}}})
    with pytest.raises(ConfigError, match="x: runtime.concurrency.max_parallel_tasks: must be between 1"):
        aliases.resolve("x", registry)


def test_alias_file_yaml(tmp_path, registry):
    path = tmp_path / "aliases.yaml"
    path.write_text("rev:\n  id: code-analyzer\n  overrides:\n    runtime: {autonomy_level: 0.5}\n")
    assert Aliases.from_file(path).resolve("rev", registry).effective["runtime"]["autonomy_level"] == 0.5


@pytest.mark.parametrize("alias", ["../evil", "a/b", "..", ".hidden", ""])
def test_unsafe_alias_names_are_rejected(alias):
    with pytest.raises(ConfigError, match="not a safe name"):
        Aliases({alias: {"id": "coder"}})
    with pytest.raises(ConfigError, match="not a safe name"):
        parse_task_map({alias: ["x"]})


def test_task_map_forms():
    tmap = parse_task_map({"coder": ["a", {"task": "b", "id": "b1", "dependsOn": "a1",
                                            "meta": {"k": 1}, "tools": ["grep"]}]})
    a, b = tmap["coder"]
    assert a.text == "a" and a.id is None
    assert (b.id, b.depends_on, b.meta, b.tools) == ("b1", ("a1",), {"k": 1}, ("grep",))


@pytest.mark.parametrize(("data", "message"), [
    ([1, 2, 3], "must be an object"),
    ({}, "task map is empty"),
    ({"coder": []}, "task list is empty"),
    ({"coder": 5}, "expected a list of tasks"),
    ({"coder": [1, 2]}, "a task must be a string or an object"),
    ({"coder": [{"id": "x"}]}, "'task' must be a non-empty string"),
    ({"coder": [{"task": "t", "id": "../up"}]}, "task id '../up' is not a safe name"),
])
def test_task_map_errors(data, message):
    with pytest.raises(ConfigError, match=message):
        parse_task_map(data, "tasks.json")


def test_invalid_json_has_line_and_column(tmp_path):
    path = tmp_path / "t.json"
    path.write_text('{\n  "coder": ["a",]\n}')
    with pytest.raises(ConfigError, match=r"t.json: invalid JSON: line 2, column \d+"):
        load_task_map(str(path))


def test_yaml_task_map_and_stdin(monkeypatch):
    import io
    import sys

    assert parse_text("coder:\n  - one\n", "x")["coder"] == ["one"]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b'{"coder": ["x"]}')))
    assert load_task_map("-")["coder"][0].text == "x"


def test_non_utf8_file(tmp_path):
    path = tmp_path / "t.json"
    path.write_bytes(b'{"coder": ["\xff\xfe"]}')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_task_map(str(path))


def test_plan_from_task_map_and_validation(registry):
    plan = Plan.from_task_map(coerce_task_map({"reviewer": ["a", "b"], "coder": ["c"]}))
    resolved = plan.validate(registry, Aliases())
    assert [t.key for t in plan.tasks] == ["reviewer-1", "reviewer-2", "coder-1"]
    assert set(resolved) == {"reviewer", "coder"}
    bad = Plan.from_task_map({"nobody": ["x"]})
    with pytest.raises(ConfigError, match="'nobody' is neither an alias"):
        bad.validate(registry, Aliases())

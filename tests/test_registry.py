from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
import yaml

from codexflow_nb import ConfigError, load_registry
from codexflow_nb.registry import (
    BUNDLED_AGENTS,
    build_index,
    build_triggers,
    resolve_agents_dir,
    validate_agent_data,
)

REPO_AGENTS = Path(__file__).resolve().parents[1] / "codex" / "agents"


def test_bundle_has_enough_agents_and_domains(registry):
    assert len(registry) >= 20
    assert len(registry.domains) >= 8
    assert registry.get("code-analyzer").domain == "analysis"
    assert registry.get("system-architect").domain == "architecture"
    for core in ("coder", "planner", "researcher", "reviewer", "tester"):
        assert registry.get(core).domain == "core"


def test_every_agent_has_the_full_schema(registry):
    for agent in registry:
        data = agent.data
        assert agent.path.name.endswith(".codex.yaml")
        assert agent.path.parent.relative_to(registry.root).parts[0] == agent.domain
        for key in ("version", "agent", "runtime", "capabilities", "responsibilities", "triggers",
                    "memory", "hooks"):
            assert key in data, (agent.id, key)
        assert set(data["runtime"]) >= {"execution_mode", "autonomy_level", "concurrency",
                                        "resource_limits", "timeout_ms"}
        assert set(data["capabilities"]["detail"]["tools"]) == {"allowed", "restricted"}
        assert data["responsibilities"]["primary"] and data["responsibilities"]["secondary"]
        assert set(data["memory"]["sharing_policy"]) == {"share_with", "redact"}
        assert set(data["hooks"]) == {"pre_task", "post_task", "failure"}
        assert len(agent.description) > 40


def test_bundle_is_shipped_inside_the_package():
    assert BUNDLED_AGENTS.resolve() == REPO_AGENTS.resolve()
    assert (BUNDLED_AGENTS / "index.json").is_file()


def test_index_and_triggers_are_up_to_date(registry):
    index = json.loads((REPO_AGENTS / "index.json").read_text())
    fresh = build_index(registry)
    index.pop("generatedAt"), fresh.pop("generatedAt")
    assert index == fresh, "run `codex-flow agents index`"
    triggers = json.loads((REPO_AGENTS / "triggers.json").read_text())
    assert triggers == build_triggers(registry), "run `codex-flow agents index`"
    assert set(triggers) == {"keywords", "regex", "file_patterns"}
    assert "code-analyzer" in triggers["keywords"]["code review"]


def _copy_agent(tmp_path: Path, agent_id: str, registry, domain: str | None = None) -> Path:
    src = registry.get(agent_id).path
    dest = tmp_path / (domain or registry.get(agent_id).domain) / src.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return dest


def _edit(path: Path, fn) -> None:
    data = yaml.safe_load(path.read_text())
    fn(data)
    path.write_text(yaml.safe_dump(data))


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda d: d["agent"].pop("id"), "agent.id: missing"),
    (lambda d: d["runtime"]["concurrency"].update(max_parallel_tasks="two"),
     "runtime.concurrency.max_parallel_tasks: expected integer"),
    (lambda d: d["runtime"]["concurrency"].update(max_parallel_tasks=0), "must be between 1 and 10,000, got 0"),
    (lambda d: d["triggers"].update(regex=[{"pattern": "(unclosed", "priority": 1}]), "invalid regex"),
    (lambda d: d.update(agent=["not", "a", "mapping"]), "agent: expected mapping"),
])
def test_validation_errors_name_file_and_field(tmp_path, registry, mutate, expected):
    path = _copy_agent(tmp_path, "code-analyzer", registry)
    _edit(path, mutate)
    with pytest.raises(ConfigError) as err:
        load_registry(tmp_path)
    assert any(str(path) in p and expected in p for p in err.value.problems), err.value.problems


def test_invalid_yaml_reports_line_and_column(tmp_path):
    bad = tmp_path / "core" / "broken.codex.yaml"
    bad.parent.mkdir()
    bad.write_text("agent:\n  id: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken.codex.yaml: invalid YAML: line \d+, column \d+"):
        load_registry(tmp_path)


def test_duplicate_ids_same_domain_is_an_error(tmp_path, registry):
    first = _copy_agent(tmp_path, "coder", registry)
    shutil.copyfile(first, first.with_name("coder-copy.codex.yaml"))
    with pytest.raises(ConfigError, match="duplicate id 'coder'"):
        load_registry(tmp_path)


def test_duplicate_ids_in_two_domains_are_kept_apart(tmp_path, registry):
    _copy_agent(tmp_path, "coder", registry)
    other = _copy_agent(tmp_path, "coder", registry, domain="development")
    _edit(other, lambda d: d["agent"]["classification"].update(domain="development"))
    reg = load_registry(tmp_path)
    assert reg.get("core/coder").domain == "core"
    assert reg.get("development/coder").domain == "development"
    # the plain id answers to the last path (sorted folder by folder), with one warning
    assert reg.get("coder").key == "development/coder"
    assert len(reg.warnings) == 1 and "coder" in reg.warnings[0]


def test_index_referencing_unknown_agent(tmp_path, registry):
    _copy_agent(tmp_path, "coder", registry)
    (tmp_path / "index.json").write_text(json.dumps({"agents": [{"id": "ghost"}]}))
    reg = load_registry(tmp_path)  # a stale index is a warning with the fix, not a refusal
    assert "ghost" in reg.warnings[0] and "codex-flow agents index" in reg.warnings[0]


def test_unknown_agent_has_a_hint(registry):
    with pytest.raises(ConfigError, match="unknown agent 'analyzer'.*code-analyzer"):
        registry.get("analyzer")


def test_validate_agent_data_rejects_non_mapping():
    assert validate_agent_data([1, 2], "x.yaml") == ["x.yaml: the file must hold a mapping, not list"]


def test_agents_dir_lookup_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CODEX_AGENTS_DIR", raising=False)
    assert resolve_agents_dir() == BUNDLED_AGENTS
    home = tmp_path / "home" / ".codex" / "agents"
    home.mkdir(parents=True)
    assert resolve_agents_dir() == home
    local = tmp_path / "codex" / "agents"
    local.mkdir(parents=True)
    assert resolve_agents_dir() == local
    monkeypatch.setenv("CODEX_AGENTS_DIR", "/env/dir")
    assert resolve_agents_dir() == Path("/env/dir")
    assert resolve_agents_dir("/explicit") == Path("/explicit")


def test_c_loader_is_used_when_available():
    from codexflow_nb import registry as mod

    assert issubclass(mod._Loader, getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _settled_copy(tmp_path: Path) -> Path:
    """A copy of the bundle whose files look older than the parse cache's settle time."""
    root = tmp_path / "agents"
    shutil.copytree(REPO_AGENTS, root)
    old = time.time() - 60
    for file in root.rglob("*"):
        os.utime(file, (old, old))
    return root


def test_unchanged_files_are_parsed_once_and_each_load_gets_its_own_copy(tmp_path, monkeypatch):
    from codexflow_nb import registry as registry_mod

    root = _settled_copy(tmp_path)
    first = load_registry(root)
    parses: list[str] = []
    real = registry_mod.parse_yaml
    monkeypatch.setattr(registry_mod, "parse_yaml", lambda text, where: (parses.append(where),
                                                                        real(text, where))[1])
    second = load_registry(root)
    assert parses == []  # every file came from the cache
    a, b = first.get("coder"), second.get("coder")
    assert a.data == b.data and a.data is not b.data
    a.data["agent"]["name"] = "changed"
    assert load_registry(root).get("coder").name != "changed"


def test_an_edited_file_is_read_again(tmp_path):
    root = _settled_copy(tmp_path)
    assert load_registry(root).get("coder").max_parallel_tasks != 7
    path = load_registry(root).get("coder").path
    text = path.read_text()
    data = yaml.safe_load(text)
    data["runtime"]["concurrency"]["max_parallel_tasks"] = 7
    path.write_text(yaml.safe_dump(data))
    assert load_registry(root).get("coder").max_parallel_tasks == 7


def test_a_fresh_file_is_not_cached_even_if_rewritten_with_the_same_size_and_mtime(tmp_path):
    root = tmp_path / "agents"
    shutil.copytree(REPO_AGENTS, root, copy_function=shutil.copyfile)  # mtimes: now
    path = load_registry(root).get("coder").path
    data = yaml.safe_load(path.read_text())
    for limit in (3, 4):  # same length, and the mtime is put back: only freshness protects
        stamp = path.stat().st_mtime_ns
        data["runtime"]["concurrency"]["max_parallel_tasks"] = limit
        path.write_text(yaml.safe_dump(data))
        os.utime(path, ns=(stamp, stamp))
        assert load_registry(root).get("coder").max_parallel_tasks == limit

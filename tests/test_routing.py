"""The router: keyword and regex routes for text, glob routes for files, traces, and the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from codexflow_nb.cli import main
from codexflow_nb.errors import ConfigError
from codexflow_nb.registry import BUNDLED_AGENTS, build_triggers, load_registry
from codexflow_nb.routing import (
    glob_match,
    load_triggers,
    normalize_path,
    route_files,
    route_text,
)


@pytest.mark.parametrize("glob, path, expected", [
    ("**/*.py", "a.py", True),  # "**/" also matches no folder at all
    ("**/*.py", "a/b/c.py", True),
    ("**/*.py", "a/b/c.pyc", False),
    ("src/*.py", "src/b.py", True),
    ("src/*.py", "src/a/b.py", False),  # "*" never crosses "/"
    ("*.md", "docs/x.md", False),
    ("docs/**", "docs/a/b/c.md", True),
    ("docs/**", "docs", False),
    ("docs/**", "mydocs/a.md", False),
    ("a/**/b", "a/b", True),
    ("a/**/b", "a/x/y/b", True),
    ("**/TODO.md", "TODO.md", True),
    ("**/TODO.md", "deep/er/TODO.md", True),
    ("**/TODO.md", "NOT_TODO.md", False),
    ("file?.txt", "file1.txt", True),
    ("file?.txt", "file/.txt", False),
    ("v[0-9].md", "v7.md", True),
    ("v[!0-9].md", "vx.md", True),
    ("v[!0-9].md", "v7.md", False),
    ("**/*.env*", ".env", True),
    ("a+b(c).txt", "a+b(c).txt", True),  # regex metacharacters are literal
    ("a**b", "a/x/b", False),  # "**" inside a segment is a plain "*"
    ("a**b", "axxb", True),
    ("**", "a/b/c", True),
])
def test_glob_semantics(glob, path, expected):
    assert glob_match(glob, path) is expected


def test_keyword_route_is_a_case_insensitive_phrase_match(registry):
    route = route_text("Please do a Code  Review of the parser", registry)
    assert route.candidates == ["code-analyzer"]
    (match,) = route.trace
    assert (match.via, match.rule, match.matched) == ("keyword", "code review", "Code  Review")
    assert route.why("code-analyzer") == "keyword 'code review'"
    # a keyword is a phrase on word boundaries: "plan" is not in "planet" or "explanation"
    # (no trigger matches; the ranker may still find a card that shares a word)
    assert not route_text("an explanation of the planet", registry).trace


def test_regex_rules_match_case_insensitively(registry):
    route = route_text("Start an EXPLORATORY DATA ANALYSIS of sales", registry)
    assert route.candidates == ["notebook-analyst"]
    assert route.trace[0].via == "regex" and route.trace[0].priority == 8
    assert route.trace[0].matched == "EXPLORATORY DATA ANALYSIS"


TRIGGERS = {
    "keywords": {"deploy": ["infra-engineer"], "review": ["reviewer"]},
    "regex": [
        {"pattern": r"\bcve-\d+\b", "priority": 3, "agents": ["researcher"]},
        {"pattern": r"\bxss\b", "priority": 9, "agents": ["security-auditor"]},
        {"pattern": r"\bxss\b", "priority": 9, "agents": ["reviewer"]},
        {"pattern": r"\bplan\b", "priority": 5, "agents": ["planner"]},
    ],
    "file_patterns": {},
}


def test_keywords_first_then_regex_by_priority(registry):
    route = route_text("plan the fix for CVE-123 (an XSS), then review and deploy", registry,
                       triggers=TRIGGERS)
    assert [(m.via, m.agent) for m in route.trace] == [
        ("keyword", "reviewer"), ("keyword", "infra-engineer"),  # in text order
        ("regex", "security-auditor"), ("regex", "reviewer"),  # priority 9 (file order on ties)
        ("regex", "planner"), ("regex", "researcher")]  # then 5, then 3
    # strong triggers (priority >= 7) name two agents: the ranker picks between them
    assert route.stage == "ranker" and route.candidates == route.top(1)
    assert set(route.top(24)) >= {"reviewer", "infra-engineer", "security-auditor", "planner",
                                  "researcher"}
    assert route.why("reviewer") == ("keyword 'review'; regex /\\bxss\\b/ (priority 9) "
                                     "matched 'XSS'")
    assert route.trace[2].to_dict() == {"agent": "security-auditor", "via": "regex",
                                        "rule": r"\bxss\b", "priority": 9, "matched": "XSS"}


def test_file_routes_with_trace(registry, workdir):
    route = route_files(["src/app.py", "./tests/unit/test_api.py", "Dockerfile",
                         ".github/workflows/ci.yml", ".github/workflows/old/ci.yml",
                         "notes.xyz"], registry)
    files = route.files
    assert "notes.xyz" not in files
    assert "coder" in files["src/app.py"]
    assert {"tester", "unit-tester"} <= set(files["tests/unit/test_api.py"])
    assert files["Dockerfile"] == ["security-auditor", "infra-engineer"]  # "**/Dockerfile"
    assert "ci-engineer" in files[".github/workflows/ci.yml"]
    assert ".github/workflows/old/ci.yml" not in files  # "*.yml" stays in its folder
    why = route.why("unit-tester", "tests/unit/test_api.py")
    assert why == ("glob '**/test_*.py' matched tests/unit/test_api.py; "
                   "glob 'tests/**/*.py' matched tests/unit/test_api.py")
    assert route.why("coder", "src/app.py") == ("glob '**/*.py' matched src/app.py; "
                                                "glob 'src/**' matched src/app.py")


def test_paths_are_normalized(workdir):
    assert normalize_path(workdir / "src" / "a.py") == "src/a.py"
    assert normalize_path("./././x/y.md") == "x/y.md"
    assert normalize_path("/elsewhere/a.py") == "/elsewhere/a.py"
    assert glob_match("**/*.py", normalize_path("/elsewhere/a.py"))


def test_bundled_triggers_file_is_current(registry):
    assert load_triggers(registry) == json.loads(
        json.dumps(build_triggers(registry)))  # the shipped triggers.json matches the agents


def test_triggers_built_when_the_file_is_missing(tmp_path):
    agents = tmp_path / "agents"
    shutil.copytree(BUNDLED_AGENTS, agents)
    (agents / "triggers.json").unlink()
    reg = load_registry(agents)
    assert load_triggers(reg) == build_triggers(reg)
    assert route_text("write a dockerfile", reg).candidates == ["infra-engineer"]


def test_stale_or_broken_triggers_file_is_an_error(tmp_path):
    agents = tmp_path / "agents"
    shutil.copytree(BUNDLED_AGENTS, agents)
    reg = load_registry(agents)
    (agents / "triggers.json").write_text(json.dumps(
        {"keywords": {"x": ["ghost-agent"]}, "regex": [{"pattern": "(", "agents": []}]}))
    with pytest.raises(ConfigError) as info:
        route_text("x", reg)
    text = "\n".join(info.value.problems)
    assert "ghost-agent" in text and "codex-flow agents index" in text
    assert "regex[0]: invalid pattern" in text
    (agents / "triggers.json").write_text("{nope")
    with pytest.raises(ConfigError, match="cannot read triggers"):
        route_text("x", reg)


# -- CLI --------------------------------------------------------------------------------------

def test_cli_route_text(workdir, capsys):
    code = main(["run", "--route", "please review this PR for an XSS", "--route-top", "2",
                 "--stub-latency-ms", "1"])
    out = capsys.readouterr().out
    assert code == 0
    assert "security-auditor -> security-auditor" in out
    assert "reviewer-agent -> reviewer" in out  # the default "reviewer" alias is code-analyzer
    assert "(routed: regex /\\b(xss|csrf|ssrf|rce|sqli)\\b/ (priority 9) matched '" in out
    inputs = [json.loads(p.read_text()) for p in Path(".runs").rglob("input.json")]
    assert sorted(i["agentId"] for i in inputs) == ["reviewer", "security-auditor"]
    assert {i["task"]["task"] for i in inputs} == {"please review this PR for an XSS"}


def test_cli_route_files(workdir, capsys):
    Path("src").mkdir()
    Path("src/app.py").write_text("print('hi')\n")
    Path("Dockerfile").write_text("FROM python:3.11\n")
    Path("notes.xyz").write_text("?")
    code = main(["run", "--route-files", "Dockerfile", "src/app.py", "notes.xyz",
                 "--stub-latency-ms", "1", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "no agent's file patterns match notes.xyz" in captured.err
    assert "Review Dockerfile  (routed: glob '**/Dockerfile' matched Dockerfile)" in captured.err
    inputs = [json.loads(p.read_text()) for p in Path(".runs").rglob("input.json")]
    by_file: dict[str, set[str]] = {}
    for doc in inputs:
        by_file.setdefault(doc["task"]["task"], set()).add(doc["agentId"])
        assert doc["task"]["meta"]["routedBy"].startswith("glob ")
    assert by_file["Review Dockerfile"] == {"security-auditor", "infra-engineer"}
    assert {"coder", "code-analyzer", "reviewer"} <= by_file["Review src/app.py"]
    assert json.loads(captured.out)["totalTasks"] == len(inputs)


@pytest.mark.parametrize("argv, message", [
    (["--route", "hello there"], "--route: no agent matches 'hello there'"),
    (["--route-files", "notes.xyz"], "--route-files: no agent's file patterns match notes.xyz"),
    (["--route-files", "missing.py"], "--route-files: missing.py: no such file"),
    (["--route-files", "."], "--route-files: .: is a folder"),
    (["--route", "code review", "--example"], "choose one of --route, --example"),
])
def test_cli_routing_errors_exit_2(workdir, capsys, argv, message):
    Path("notes.xyz").write_text("?")
    assert main(["run", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not Path("data").exists() and not Path(".runs").exists()


@pytest.fixture
def slow_rules(tmp_path: Path) -> Path:
    """A copy of the bundled agents whose triggers hold a regex that runs out of time on the
    texts below (so the router skips it, with a note)."""
    agents = tmp_path / "slow-agents"
    shutil.copytree(BUNDLED_AGENTS, agents)
    trig = build_triggers(load_registry(agents))
    trig["regex"].append({"pattern": "(a|aa)+b", "priority": 9, "agents": ["coder"]})
    (agents / "triggers.json").write_text(json.dumps(trig))
    return agents


def test_cli_prints_the_route_notes(workdir, capsys, slow_rules):
    text = "review the security of " + "a" * 60
    assert main(["run", "--agents-dir", str(slow_rules), "--route", text, "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert "codex-flow: warning: --route: regex /(a|aa)+b/ skipped: matching took longer" in err
    assert main(["run", "--agents-dir", str(slow_rules), "--goal", "build an API " + "a" * 60,
                 "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert "codex-flow: warning: --goal: regex /(a|aa)+b/ skipped" in err
    assert "Traceback" not in err


def test_cli_route_files_notes_say_why_nothing_matched(workdir, capsys, monkeypatch):
    import codexflow_nb.routing as routing

    monkeypatch.setattr(routing, "REGEX_TIMEOUT_S", 1e-9)  # every glob runs out of time
    Path("app.py").write_text("x = 1\n")
    assert main(["run", "--route-files", "app.py", "--dry-run"]) == 2
    err = capsys.readouterr().err.splitlines()
    notes = [line for line in err if line.startswith("codex-flow: warning: --route-files: glob ")]
    assert len(notes) == 5 and all("skipped for app.py" in line for line in notes)
    assert err[5].startswith("codex-flow: warning: --route-files: ")
    assert err[5].endswith(" more rules skipped the same way")
    assert err[-1] == "codex-flow: error: --route-files: no agent's file patterns match app.py"

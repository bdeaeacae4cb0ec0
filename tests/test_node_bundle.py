"""Bundles written for the Node codex-flow tool load as they are (issue 17, first half).

``tests/data/node-bundle`` copies the traits of that tool's ``codex/agents`` folder with its own
text: an id defined twice in one domain (``analysis/code-analyzer`` and the nested
``analysis/code-review/code-analyzer``), an id under two domains (``pr-manager``), Markdown
briefs and older plain ``*.yaml`` files beside the cards, an ``index.json`` in the Node format that
is out of date, and a ``triggers.json`` with word priorities and file patterns that covers only
some agents.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from codexflow_nb import Aliases, ConfigError, load_registry
from codexflow_nb.cli import main
from codexflow_nb.errors import UnknownAgentError
from codexflow_nb.registry import PRIORITY_WORDS, parse_priority
from codexflow_nb.routing import REGEX_TIMEOUT_S, load_triggers, route_files, route_text

NODE = Path(__file__).parent / "data" / "node-bundle"
CLASH_LINES = [
    "agent id 'code-analyzer' is defined by 2 files (analysis/code-analyzer.codex.yaml, "
    "analysis/code-review/code-analyzer.codex.yaml): 'code-analyzer' means "
    "analysis/code-review/code-analyzer.codex.yaml (the last in path order); name the other "
    "analysis/code-analyzer",
    "agent id 'pr-manager' is defined by 2 files (github/pr-manager.codex.yaml, "
    "templates/pr-manager.codex.yaml): 'pr-manager' means templates/pr-manager.codex.yaml "
    "(the last in path order); name the other github/pr-manager",
]


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """A copy of the fixture that a test may edit."""
    return Path(shutil.copytree(NODE, tmp_path / "agents"))


def lines(text: str, prefix: str) -> list[str]:
    return [line[len(prefix):] for line in text.splitlines() if line.startswith(prefix)]


# -- the registry -----------------------------------------------------------------------------

def test_the_fixture_has_the_node_bundles_traits():
    cards = sorted(p.relative_to(NODE).as_posix() for p in NODE.rglob("*.codex.yaml"))
    assert "analysis/code-analyzer.codex.yaml" in cards
    assert "analysis/code-review/code-analyzer.codex.yaml" in cards
    assert {"github/pr-manager.codex.yaml", "templates/pr-manager.codex.yaml"} <= set(cards)
    assert len(list(NODE.rglob("*.md"))) >= 5 and (NODE / "core" / "builder.yaml").is_file()
    index = json.loads((NODE / "index.json").read_text())
    assert set(index) == {"version", "generatedAt", "agents"}
    triggers = json.loads((NODE / "triggers.json").read_text())
    assert {r["priority"] for r in triggers["regex"]} <= set(PRIORITY_WORDS)
    assert triggers["file_patterns"] and "code-analyzer" in triggers["keywords"]["code review"]


def test_shared_ids_are_named_by_path_and_the_plain_id_means_the_last_file():
    reg = load_registry(NODE)
    assert len(reg) == 10  # the *.md briefs and the plain *.yaml files are not agents
    assert reg.warnings[:2] == CLASH_LINES
    nested = reg.get("analysis/code-review/code-analyzer")
    top = reg.get("analysis/code-analyzer")
    assert nested.key == "analysis/code-review/code-analyzer" and nested.subdomain == "code-review"
    assert top.key == "analysis/code-analyzer" and top.subdomain is None
    assert reg.get("code-analyzer") is nested
    assert reg.get("pr-manager") is reg.get("templates/pr-manager")
    assert reg.get("github/pr-manager").domain == "github"
    assert reg.clashes["code-analyzer"] == [top, nested]
    # unique ids keep their plain key and also answer to their path name
    assert reg.get("system-architect").key == "system-architect"
    assert reg.get("architecture/system-design/system-architect").key == "system-architect"
    assert reg.get("core/reviewer") is reg.get("reviewer")
    assert reg.get("development/backend-dev").key == "backend-dev"  # domain/id


def test_the_rule_does_not_depend_on_the_order_files_are_listed(tmp_path):
    for order in ("core", "development"):  # the same files, written in two orders
        root = tmp_path / order
        for domain in sorted(["core", "development"], reverse=order == "development"):
            src = NODE / "core" / "coder.codex.yaml"
            dest = root / domain / "coder.codex.yaml"
            dest.parent.mkdir(parents=True)
            dest.write_text(src.read_text().replace("domain: core", f"domain: {domain}"))
        reg = load_registry(root)
        assert reg.get("coder").key == "development/coder"  # the last in path order
        assert reg.get("core/coder").domain == "core"
        assert len(reg.warnings) == 1 and "'coder' means development/coder.codex.yaml" in reg.warnings[0]


def test_two_cards_with_one_id_in_one_folder_are_one_error(bundle):
    copy = bundle / "core" / "coder-copy.codex.yaml"
    shutil.copyfile(bundle / "core" / "coder.codex.yaml", copy)
    with pytest.raises(ConfigError) as info:
        load_registry(bundle)
    problems = info.value.problems
    assert len(problems) == 1, problems
    assert "duplicate id 'coder'" in problems[0] and "files in one folder need different ids" in problems[0]


def test_unknown_names_get_suggestions_without_paths():
    reg = load_registry(NODE)
    with pytest.raises(UnknownAgentError) as info:
        reg.get("code-analyser")
    message = str(info.value)
    assert message == "unknown agent 'code-analyser' (did you mean 'code-analyzer'?)"
    assert str(NODE) not in message and "/work" not in message
    with pytest.raises(ConfigError, match=r"'reveiwer' is neither an alias .* \(did you mean 'reviewer"):
        Aliases().resolve("reveiwer", reg)
    with pytest.raises(UnknownAgentError, match=r"mine.id: unknown agent 'sytem-architect' "
                                                r"\(did you mean 'system-architect'"):
        Aliases({"mine": "sytem-architect"}).resolve("mine", reg)


def test_an_index_that_disagrees_is_a_warning_and_a_broken_one_an_error(bundle, capsys):
    reg = load_registry(bundle)
    assert reg.warnings[2] == (
        "index.json is out of date: it lists 1 agent(s) with no card (mobile-dev) and misses "
        "2 agent(s) (cicd-engineer, template-maker); the agent files are used. Rewrite it with "
        "`codex-flow agents index`")
    assert main(["agents", "index", "--agents-dir", str(bundle)]) == 0
    fresh = load_registry(bundle)
    assert fresh.warnings == CLASH_LINES
    rewritten = json.loads((bundle / "triggers.json").read_text())
    assert all(isinstance(r["priority"], int) for r in rewritten["regex"])
    assert route_text("review the payment code", fresh).candidates == [
        "analysis/code-review/code-analyzer"]
    (bundle / "index.json").write_text("{not json")
    with pytest.raises(ConfigError, match="index.json: invalid JSON"):
        load_registry(bundle)


# -- triggers: word priorities, unknown values, safe regexes ----------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    ("low", 2), ("medium", 5), ("High", 8), (" critical ", 10), (7, 7), ("7", 7), (None, 0), (3.0, 3),
])
def test_priority_words_and_numbers(value, expected):
    assert parse_priority(value, "x") == expected


def test_routes_use_word_priorities_and_canonical_names():
    reg = load_registry(NODE)
    trig = load_triggers(reg)
    assert {r["priority"] for r in trig["regex"]} == {2, 5, 8, 10}
    route = route_text("set up github actions", reg)
    assert route.candidates == ["cicd-engineer"]
    assert route.why("cicd-engineer") == ("keyword 'github actions'; regex /^set ?up github actions$/ "
                                          "(priority 10) matched 'set up github actions'")
    route = route_text("Audit the billing quality", reg)
    assert route.trace[0].priority == 8 and route.candidates == ["analysis/code-review/code-analyzer"]
    files = route_files(["src/design/flow.py"], reg)
    assert files.candidates == ["analysis/code-review/code-analyzer", "system-architect"]


@pytest.mark.parametrize("priority", ["urgent", True, [1], "5.5"])
def test_an_unknown_priority_is_one_error_line_naming_file_and_rule(bundle, capsys, priority):
    path = bundle / "triggers.json"
    data = json.loads(path.read_text())
    data["regex"][1]["priority"] = priority
    path.write_text(json.dumps(data))
    for argv in (["agents", "validate", str(bundle)],
                 ["run", "--route", "review the payment code", "--agents-dir", str(bundle),
                  "--dry-run"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        errors = lines(err, "codex-flow: error: ")
        assert len(errors) == 1, err
        assert "triggers.json: regex[1] /^audit .* quality$/: priority" in errors[0]
        assert "is not a whole number or one of low, medium, high, critical" in errors[0]


def test_an_unknown_priority_in_an_agent_card_is_an_error(bundle, capsys):
    card = bundle / "devops" / "ci-cd" / "cicd-engineer.codex.yaml"
    card.write_text(card.read_text().replace("priority: critical", "priority: asap"))
    assert main(["agents", "validate", str(bundle)]) == 2
    errors = lines(capsys.readouterr().err, "codex-flow: error: ")
    assert len(errors) == 1 and "cicd-engineer.codex.yaml: triggers.regex[0]" in errors[0]
    assert "priority 'asap' is not a whole number" in errors[0]


def test_a_regex_that_backtracks_catastrophically_cannot_hang_a_route(bundle):
    path = bundle / "triggers.json"
    data = json.loads(path.read_text())
    data["regex"] = [{"pattern": "(x+x+)+y", "priority": "high", "agents": ["coder"]},
                     {"pattern": "^(a+)+$", "priority": "low", "agents": ["coder"]},
                     {"pattern": "x{3}", "priority": 1, "agents": ["reviewer"]}]
    data["file_patterns"] = {"*a*a*a*a*a*a*a*a*a*a*b": ["coder"], "**/*.py": ["reviewer"]}
    path.write_text(json.dumps(data))
    reg = load_registry(bundle)
    start = time.perf_counter()
    route = route_text("x" * 5000, reg)
    assert time.perf_counter() - start < 1.0
    assert route.candidates == ["reviewer"]  # the slow rule is skipped, the others still run
    assert len(route.notes) == 1 and route.notes[0].startswith("regex /(x+x+)+y/ skipped")
    assert route_text("a" * 40 + "!", reg).candidates == []
    start = time.perf_counter()
    files = route_files(["a" * 2000, "src/a.py"], reg)
    assert time.perf_counter() - start < 1.0
    assert files.candidates == ["reviewer"] and "skipped" in files.notes[0]
    assert REGEX_TIMEOUT_S <= 0.1


def test_the_text_prefilter_never_hides_a_match(registry):
    trig = load_triggers(registry)
    texts = ["Please REVIEW this Pull Request", "we hard-coded a token", "define the REST API",
             "Designing the gRPC api", "CVE-2024-12345 again", "e2e tests", "p95 too high",
             "it is a K8s thing", "the ci is red", "run the ETL", "fine-tune the model"]
    import re

    for text in texts:
        expected = [r["pattern"] for r in trig["regex"]
                    if re.search(r["pattern"], text, re.IGNORECASE)]
        got = list(dict.fromkeys(m.rule for m in route_text(text, registry, triggers=trig).trace
                                 if m.via == "regex"))
        assert sorted(got) == sorted(expected), text


# -- the CLI ----------------------------------------------------------------------------------

def test_cli_validate_warns_once_and_exits_0(capsys):
    assert main(["agents", "validate", "--agents-dir", str(NODE)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("ok: 10 agents in 8 domains") and "3 warning(s)" in out
    warnings = lines(err, "codex-flow: warning: ")
    assert warnings[:2] == CLASH_LINES and warnings[2].startswith("index.json is out of date")
    assert len(warnings) == len(set(warnings)) == 3
    notes = lines(err, "codex-flow: note: ")
    assert len(notes) == 1 and notes[0].startswith("'reviewer' is a default alias for code-analyzer")
    assert "core/reviewer.codex.yaml" in notes[0] and "Traceback" not in err


def test_cli_validate_strict_makes_warnings_errors(capsys):
    assert main(["agents", "validate", str(NODE), "--strict"]) == 2
    errors = lines(capsys.readouterr().err, "codex-flow: error: ")
    assert errors == [f"{w} (--strict)" for w in load_registry(NODE).warnings]


def test_cli_run_example_on_the_node_bundle(workdir):
    proc = subprocess.run([sys.executable, "-m", "codexflow_nb", "run", "--example", "--agents-dir",
                           str(NODE), "--stub-latency-ms", "1"], cwd=workdir, text=True,
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "reviewer -> analysis/code-review/code-analyzer (limit 2" in proc.stdout
    assert "reviewer2 -> analysis/code-review/code-analyzer (limit 2" in proc.stdout
    assert "architect -> system-architect (limit 2" in proc.stdout
    outputs = list((workdir / ".runs").glob("*/*/output.json"))
    assert len(outputs) == 5
    inputs = [json.loads((p.parent / "input.json").read_text()) for p in outputs]
    assert {i["agentId"] for i in inputs} == {"analysis/code-review/code-analyzer", "system-architect"}


def test_cli_route_on_the_node_bundle(workdir, capsys):
    assert main(["run", "--route", "review the payment code", "--agents-dir", str(NODE),
                 "--stub-latency-ms", "1"]) == 0
    out = capsys.readouterr().out
    assert "-> analysis/code-review/code-analyzer" in out
    assert "(routed: regex /^review .* code$/ (priority 5) matched 'review the p" in out
    assert main(["run", "--route", "no trigger here at all", "--agents-dir", str(NODE)]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_cli_unknown_agent_suggestion(capsys):
    assert main(["agents", "show", "pr-manger", "--agents-dir", str(NODE)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "codex-flow: error: unknown agent 'pr-manger' (did you mean 'pr-manager'?)"


# -- default aliases versus bundle agents -----------------------------------------------------

def test_a_default_alias_that_hides_an_agent_says_so():
    reg = load_registry(NODE)
    aliases = Aliases()
    hidden = aliases.hidden_agents(reg)
    assert len(hidden) == 1 and hidden[0].startswith("'reviewer' is a default alias")
    assert aliases.resolve("reviewer", reg).warning == hidden[0]
    assert aliases.resolve("reviewer", reg).agent_id == "analysis/code-review/code-analyzer"
    assert aliases.resolve("architect", reg).warning is None
    assert aliases.resolve("coder", reg).warning is None  # not an alias: the agent itself
    mine = Aliases({"reviewer": "core/reviewer"})  # an alias map replaces the defaults
    assert mine.hidden_agents(reg) == [] and mine.resolve("reviewer", reg).agent_id == "reviewer"
    assert Aliases({}).resolve("reviewer", reg).agent_id == "reviewer"


def test_the_dashboard_runs_on_the_node_bundle(workdir):
    pytest.importorskip("ipywidgets")
    import codexflow_nb as cf
    from codexflow_nb.api import run_sync

    dash = cf.dashboard(agents_dir=str(NODE), latency_ms=1, log_file=None, runs_dir=None)
    assert dash.problems.value == ""
    result = run_sync(dash.run_async())
    assert result.ok and len(result.tasks) == 5
    assert result.summary()["aliases"]["reviewer"]["agentId"] == "analysis/code-review/code-analyzer"

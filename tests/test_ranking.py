"""Routing plain requests: the ranker over agent cards, the route's trace, `codex-flow route`,
`run --route` / `--route-top`, the no-informative-words error, the evaluation set's accuracy,
the planner's selector and the dashboard's task editor."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from codexflow_nb.cli import main
from codexflow_nb.errors import ConfigError
from codexflow_nb.planner import select_agents
from codexflow_nb.ranking import (
    FIELD_WEIGHTS,
    MODEL_C,
    CardModel,
    Lexicon,
    Ranker,
    card_fields,
    default_lexicon,
    plain,
    rank,
    ranker_for,
    tokens,
    words,
)
from codexflow_nb.registry import BUNDLED_AGENTS, load_registry, validate_agent_data
from codexflow_nb.routing import route_text

DATA = Path(__file__).parent / "data" / "routing"
#: What the router reaches on the held-out half (heldout-v3.yaml, written blind, measured as
#: aggregates only, never tuned on; see tests/data/routing/README.md and docs/PLANNING.md), and
#: on its second edition (heldout.yaml, never read). The issue's targets are 0.90 and 0.97:
#: met on the third edition (0.932 / 1.000), not on the second (0.854 / 0.974); these floors
#: guard against it getting worse.
HELDOUT_TOP1, HELDOUT_TOP3 = 0.92, 0.99
HELDOUT_2ND_TOP1, HELDOUT_2ND_TOP3 = 0.85, 0.97
#: The tuning half is among the cards' examples, so this is a check that they were learnt.
TUNING_TOP1, TUNING_TOP3 = 0.99, 1.0
#: The held-out files: never tuned on, never read.
HELDOUT_FILES = ("heldout-v3", "heldout")

#: The requests quoted in issue 17, which found nothing or the wrong agent before the ranker.
ISSUE_REQUESTS = [
    ("please review the code quality of the payment module", "code-analyzer"),
    ("fix the failing CI build", "ci-engineer"),
    ("document the public API", "api-docs-writer"),
    ("find security vulnerabilities in auth", "security-auditor"),
    ("train a classifier to detect spam", "ml-engineer"),
    ("compare Redis and Memcached for our session cache", "researcher"),
    ("implement the login screen in React", "frontend-dev"),
]


def _half(*names: str) -> list[dict[str, str]]:
    return [row for n in names for row in yaml.safe_load((DATA / f"{n}.yaml").read_text())]


def _tuning() -> list[dict[str, str]]:
    """The tuning half: every tune*.yaml (never a held-out file)."""
    return _half(*sorted(p.stem for p in DATA.glob("tune*.yaml")))


def _accuracy(rows: list[dict[str, str]], registry) -> tuple[float, float]:
    top1 = top3 = 0
    for row in rows:
        top = route_text(row["text"], registry).top(3)
        top1 += top[:1] == [row["agent"]]
        top3 += row["agent"] in top
    return top1 / len(rows), top3 / len(rows)


# -- the ranker -------------------------------------------------------------------------------

def test_words_drop_stop_words_and_expand_short_forms():
    assert words("Please fix the K8s config, I need it") == [
        "fix", "k8s", "kubernetes", "config", "configuration"]
    assert words("v2 of the API's 3 endpoints") == ["v2", "api", "endpoints"]


def test_ranking_is_deterministic_and_indexed_once_per_registry(registry):
    assert ranker_for(registry) is ranker_for(registry)  # built once, kept with the registry
    first = rank("why is the checkout so slow", registry)
    again = rank("why is the checkout so slow", registry)
    fresh = Ranker(load_registry(BUNDLED_AGENTS)).rank("why is the checkout so slow")
    assert first.agents == again.agents == fresh.agents
    assert [s.score for s in first.scored] == [s.score for s in fresh.scored]
    assert first.agents[0] == "performance-analyzer"
    scores = [s.score for s in first.scored]
    assert scores == sorted(scores, reverse=True) and all(s > 0 for s in scores)


def test_ties_break_by_agent_key(tmp_path):
    root = tmp_path / "agents"
    shutil.copytree(BUNDLED_AGENTS, root)
    (root / "index.json").unlink()
    (root / "triggers.json").unlink()
    card = yaml.safe_load((root / "core" / "coder.codex.yaml").read_text())
    card["agent"]["id"] = "coder2"  # one word, like "coder": the twin's card is as long
    (root / "core" / "coder2.codex.yaml").write_text(yaml.safe_dump(card))
    twins = load_registry(root)
    ranking = Ranker(twins, model_weight=0).rank("turn this pseudocode into working code")
    # the same card twice: equal BM25 scores, and the key decides the order
    assert ranking.agents[:2] == ["coder", "coder2"]
    assert ranking.score("coder") == ranking.score("coder2") > 0
    # the card model tells them apart only by their ids' words: nearly equal
    ranking = rank("turn this pseudocode into working code", twins)
    assert set(ranking.agents[:2]) == {"coder", "coder2"}
    assert abs(ranking.score("coder") - ranking.score("coder2")) < 0.01


def test_the_card_model_learns_which_words_tell_cards_apart():
    # "fix" is on both cards; "pagination" only on the designer's, "bug" only on the coder's
    samples = [["fix", "bug"], ["bug", "crash"], ["fix", "pagination"], ["pagination", "schema"]]
    model = CardModel.fit(samples, [0, 0, 1, 1], 2)
    assert model.proba(["bug"])[0] > 0.6 and model.proba(["pagination"])[1] > 0.6
    assert model.proba(["nothing", "known"]) is None  # no known word: no opinion
    assert abs(float(model.proba(["fix"]).sum()) - 1) < 1e-9
    # fitted to the optimum: the penalised loss's gradient is (near) zero there
    w = model.weights
    x = np.zeros((4, len(model.vocab)))
    for i, terms in enumerate(samples):
        for t in terms:
            x[i, model.vocab[t]] += 1
    z = x @ w
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    y = np.eye(2)[[0, 0, 1, 1]]
    grad = x.T @ (p - y) + w / MODEL_C
    assert float(np.abs(grad).max()) < 1e-3


def test_the_card_model_is_deterministic_and_part_of_the_score(registry):
    first, again = Ranker(registry), Ranker(registry)
    assert first.model is not None
    assert np.array_equal(first.model.weights, again.model.weights)
    ranking = first.rank("fix the off by one bug in the pagination helper")
    assert ranking.agents[0] == "coder"
    scored = ranking.scored
    best_model = max(x.model for x in scored)
    for x in scored:  # 0.7 x BM25 + 0.3 x the model, each scaled so that the best has 1
        assert x.model is not None
        assert abs(x.score - (0.7 * x.bm25 + 0.3 * x.model / best_model)) < 1e-5
        assert x.bm25 == ranking.card_score(x.agent)
    assert max(x.bm25 for x in scored) == 1.0 and max(x.score for x in scored) <= 1.0
    best = scored[0]
    assert "model " in best.describe() and best.to_dict()["model"] == round(best.model, 3)
    plain_bm25 = Ranker(registry, model_weight=0).rank("fix the off by one bug in the pagination helper")
    assert plain_bm25.get("coder").model is None
    assert [x.score for x in plain_bm25.scored] == [x.bm25 for x in plain_bm25.scored]


@pytest.mark.parametrize("share", [-0.1, 1.5, float("nan")])
def test_a_model_weight_outside_0_to_1_is_one_error(registry, share):
    with pytest.raises(ConfigError, match="model_weight: expected a share from 0 to 1"):
        Ranker(registry, model_weight=share)


def test_a_single_agent_bundle_has_no_card_model(tmp_path):
    root = tmp_path / "agents" / "core"
    root.mkdir(parents=True)
    shutil.copy(BUNDLED_AGENTS / "core" / "coder.codex.yaml", root)
    ranker = Ranker(load_registry(tmp_path / "agents"))
    assert ranker.model is None
    assert ranker.rank("write a helper function").agents == ["coder"]


def test_card_fields_cover_the_whole_card(registry):
    fields = card_fields(registry.get("frontend-dev"))
    assert set(fields) == set(FIELD_WEIGHTS)
    assert fields["id"] == "frontend dev" and "react" in fields["capabilities"]
    assert "read_file" not in fields["capabilities"]  # tool names are not the agent's subject
    assert "frontend" in fields["keywords"] and fields["examples"]


def test_other_agents_names_are_not_a_cards_subject(registry):
    # the frontend card hands regressions "to the performance analyzer": not its subject
    agent = registry.get("frontend-dev")
    assert "performance analyzer" in card_fields(agent)["responsibilities"]
    ranker = Ranker(registry)
    on_card = set().union(*ranker.card_stems[ranker.keys.index("frontend-dev")].values())
    assert "analyz" not in on_card and "react" in on_card


# -- the domain lexicon -----------------------------------------------------------------------

def test_the_lexicon_names_a_concept_that_no_card_word_matches(registry):
    text = "the dashboard feels laggy"
    assert "laggy" not in ranker_for(registry).surface  # on no card
    bare = Ranker(registry, lexicon=Lexicon({})).rank(text)
    assert bare.agents[0] != "performance-analyzer"  # only "dashboard" counts
    ranking = rank(text, registry)
    assert ranking.agents[0] == "performance-analyzer"
    assert "laggy~performance" in ranking.informative  # the word, and the concept it names
    assert "laggy~performance" in ranking.get("performance-analyzer").words


def test_the_longest_phrase_wins_and_a_request_names_a_concept_once():
    lexicon = default_lexicon()
    compiled = lexicon.compile()
    # "crash course" is a tutorial, not a crash; "react native" is mobile, not also frontend
    assert lexicon.find(tokens("Write a crash course for our SDK"), compiled) == [
        ("~tutorials", "crash course")]
    assert ("~implementation", "crashes") in lexicon.find(tokens("it crashes on start"), compiled)
    assert lexicon.find(tokens("a React Native screen"), compiled) == [("~mobile", "react native")]
    text = tokens("slow pages, sluggish search and high latency")
    assert [c for c, _ in lexicon.find(text, compiled)].count("~performance") == 1
    assert [c for c, _ in lexicon.find(text, compiled, every=True)].count("~performance") == 3


def test_the_lexicon_matches_words_without_their_plural_ending():
    assert [plain(w) for w in ("queries", "tests", "indexes", "status", "class", "analysis",
                               "classes", "crashes", "patches", "caches", "approaches")] == [
        "query", "test", "index", "status", "class", "analysis",
        "class", "crash", "patch", "cache", "approach"]
    # Snowball would make "accessibility" and "access" (or "responsive" and "responses") one
    assert plain("accessibility") != plain("access") and plain("responsive") != plain("responses")
    compiled = default_lexicon().compile()
    assert default_lexicon().find(tokens("Vulnerabilities in the End-to-end tests"), compiled) == [
        ("~security", "vulnerabilities"), ("~end-to-end-testing", "end to end"), ("~testing", "tests")]


def test_a_lexicon_file_that_is_not_concept_to_words_is_one_error(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("gardening: [weeds, pruning shears]\n")
    assert Lexicon.load(good).concepts == {"gardening": ("weeds", "pruning shears")}
    for text in ("- a list\n", "gardening: weeds\n", "gardening: [1, 2]\n", "a: [b\n"):
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(ConfigError, match="bad.yaml: "):
            Lexicon.load(bad)


def test_the_packaged_lexicon_is_well_formed():
    lexicon = default_lexicon()
    assert len(lexicon.concepts) >= 20
    for concept, terms in lexicon.concepts.items():
        assert terms and all(tokens(t) for t in terms), concept
        assert len(set(terms)) == len(terms), concept  # no word twice under one concept


def test_every_bundled_agent_has_routing_examples_and_its_tuning_requests(registry):
    tuning: dict[str, list[str]] = {}
    for row in _tuning():
        tuning.setdefault(row["agent"], []).append(" ".join(row["text"].split()))
    held_out = {r["text"].lower() for name in HELDOUT_FILES for r in _half(name)}
    for agent in registry:
        examples = agent.data["routing"]["examples"]
        assert all(isinstance(e, str) and e.strip() for e in examples)
        # 5 to 10 written for the card, then every request of the tuning half for this agent
        written = len(examples) - len(tuning[agent.id])
        assert 5 <= written <= 10, agent.key
        assert sorted(examples[written:]) == sorted(tuning[agent.id]), agent.key
        # never a held-out request (counted, so that a failure never prints one)
        shared = len({e.lower() for e in examples} & held_out)
        assert shared == 0, agent.key


def test_routing_examples_are_checked_by_the_schema():
    card = yaml.safe_load((BUNDLED_AGENTS / "core" / "coder.codex.yaml").read_text())
    assert validate_agent_data(card, "coder.codex.yaml") == []
    card["routing"] = {"examples": "fix it"}
    assert validate_agent_data(card, "coder.codex.yaml") == [
        "coder.codex.yaml: routing.examples: expected list, got str 'fix it'"]


def test_the_bundle_and_its_packaged_copy_are_one(registry):
    repo = Path(__file__).resolve().parents[1] / "codex" / "agents"
    assert BUNDLED_AGENTS.resolve() == repo.resolve()


# -- the route and its trace ------------------------------------------------------------------

@pytest.mark.parametrize("text, agent", ISSUE_REQUESTS)
def test_plain_requests_from_the_issue_find_their_agent(registry, text, agent):
    assert route_text(text, registry).candidates == [agent]


def test_the_ranker_decides_when_no_trigger_matches(registry):
    route = route_text("fix the failing CI build", registry)
    assert route.stage == "ranker" and route.trace == []
    assert route.decision == "no trigger matched; best card"
    data = route.to_dict()
    assert data["agent"] == "ci-engineer" and data["stage"] == "ranker"
    assert len(data["top"]) == 3
    best = data["top"][0]
    assert best["agent"] == "ci-engineer" and best["score"] > data["top"][1]["score"] > 0
    assert {"ci", "failing", "build"} <= set(best["words"])
    assert "ci" in best["fields"]["keywords"] or "ci" in best["fields"]["capabilities"]
    assert route.why("ci-engineer").startswith("ranker #1: score ")
    json.dumps(data)  # plain data


def test_a_strong_trigger_decides_and_weak_ones_do_not(registry):
    route = route_text("implement the login screen in React", registry)
    # keyword 'implement' (coder) is weak; the React rule (priority 7) is strong
    assert route.stage == "triggers" and route.candidates == ["frontend-dev"]
    assert "priority 7" in route.decision and "React" in route.decision
    assert route.to_dict()["top"][0]["trigger"] is True
    weak = route_text("plan a safe migration to split the users table in two", registry)
    assert [m.rule for m in weak.trace] == ["plan"]  # one single-word keyword: too common
    assert weak.stage == "ranker" and weak.candidates == ["database-architect"]
    assert weak.decision == "only weak triggers (plan); best card"


def test_a_strong_trigger_is_overruled_by_a_card_that_scores_far_higher(registry):
    route = route_text("the build is red, find out which tests broke and why", registry)
    assert [m.rule for m in route.trace if m.agent == "researcher"] == ["find out"]
    assert route.stage == "ranker" and route.candidates == ["tester"]
    assert route.decision.startswith("a strong trigger names researcher (keyword 'find out'), "
                                     "but the card of tester scores ")
    assert "researcher" in route.top(len(registry))  # still among the alternatives


def test_a_weak_trigger_breaks_a_near_tie():
    route = route_text("review the payment code",
                       load_registry(Path(__file__).parent / "data" / "node-bundle"))
    assert route.candidates == ["analysis/code-review/code-analyzer"]
    assert route.stage == "triggers" and route.decision.endswith("the trigger breaks the near tie")
    assert route.ranking.agents[0] == "reviewer"  # the best card, by less than 20%


def test_several_strong_triggers_go_to_the_ranker(registry):
    route = route_text("please review this PR for an XSS", registry)
    assert {m.agent for m in route.trace} == {"reviewer", "security-auditor"}
    assert route.stage == "ranker"
    assert route.decision.startswith("strong triggers name 2 agents")
    assert set(route.top(2)) == {"reviewer", "security-auditor"}


def test_explain_prints_stage_top_three_scores_and_words(registry):
    text = route_text("compare Redis and Memcached for our session cache", registry).explain()
    lines = text.splitlines()
    assert lines[0] == "researcher  (stage: ranker: no trigger matched; best card)"
    assert len(lines) == 4 and lines[1].lstrip().startswith("1. researcher")
    assert "compare" in lines[1]
    assert "redis~database" in text  # a request's word, and the lexicon's concept it names


def test_no_informative_words_is_a_route_to_nobody_with_the_closest_agents(registry):
    for text in ("hello there", "please do it for me", "ok thanks"):
        route = route_text(text, registry)
        assert not route and route.stage == "none"
        assert route.ranking is not None and route.ranking.informative == []
        assert route.problem().startswith(f"no agent matches {text!r}: no informative words")
        assert "closest agents: " in route.problem()
    typo = route_text("refactr the parsr", registry)
    assert typo.ranking.closest[0] in ("coder", "code-analyzer")  # words matched loosely


def test_top_k_fills_up_from_the_ranker(registry):
    route = route_text("Find dead code and duplicate code in the parser", registry)
    assert route.stage == "triggers" and route.candidates == ["code-analyzer"]
    top = route.top(3)
    assert top[0] == "code-analyzer" and len(top) == 3 and len(set(top)) == 3
    assert route.top(0) == []


# -- the evaluation set -----------------------------------------------------------------------

def test_the_evaluation_set_covers_every_bundled_agent(registry):
    tuning, heldout = _tuning(), _half(HELDOUT_FILES[0])
    assert len(tuning) + len(heldout) >= 150
    ids = {a.id for a in registry}
    editions = [_half(name) for name in HELDOUT_FILES]
    for rows in (tuning, *editions):
        assert {r["agent"] for r in rows} == ids
    texts = [{r["text"].lower() for r in rows} for rows in (tuning, *editions)]
    # counted, not compared, so that a failure never prints a held-out request
    shared = [len(texts[0] & texts[1]), len(texts[0] & texts[2]), len(texts[1] & texts[2])]
    assert shared == [0, 0, 0]
    # the bench reads the same files
    assert sorted(p.stem for p in DATA.glob("heldout*.yaml")) == sorted(HELDOUT_FILES)


def test_accuracy_on_the_held_out_half(registry):
    top1, top3 = _accuracy(_half("heldout-v3"), registry)
    assert top1 >= HELDOUT_TOP1 and top3 >= HELDOUT_TOP3, (top1, top3)
    top1, top3 = _accuracy(_half("heldout"), registry)
    assert top1 >= HELDOUT_2ND_TOP1 and top3 >= HELDOUT_2ND_TOP3, (top1, top3)


def test_accuracy_on_the_tuning_half(registry):
    top1, top3 = _accuracy(_tuning(), registry)
    assert top1 >= TUNING_TOP1 and top3 >= TUNING_TOP3, (top1, top3)


# -- CLI --------------------------------------------------------------------------------------

def test_cli_route_prints_the_trace(workdir, capsys):
    assert main(["route", "document the public API"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("api-docs-writer  (stage: ranker")
    assert len(out) == 4 and "1. api-docs-writer" in out[1]
    assert main(["route", "document the public API", "--json", "--top", "5"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["agent"] == "api-docs-writer" and len(data["top"]) == 5
    assert data["informative"] and data["triggers"] == []
    assert not Path(".runs").exists()  # routing runs nothing


def test_cli_route_without_informative_words_is_one_error_line(workdir, capsys):
    assert main(["route", "hello there"]) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.splitlines()
    assert line.startswith("codex-flow: error: no agent matches 'hello there': no informative")
    assert "closest agents: coder, planner, researcher" in line
    assert main(["route", "hello there", "--json"]) == 2
    data = json.loads(capsys.readouterr().out)
    assert data["stage"] == "none" and data["agent"] is None and data["closest"]


def test_run_route_runs_the_best_agent_and_route_top_the_best_k(workdir, capsys):
    assert main(["run", "--route", "find security vulnerabilities in auth",
                 "--stub-latency-ms", "1"]) == 0
    inputs = [json.loads(p.read_text()) for p in Path(".runs").rglob("input.json")]
    assert [i["agentId"] for i in inputs] == ["security-auditor"]
    meta = inputs[0]["task"]["meta"]
    assert meta["route"] == {"stage": "ranker", "rank": 1}
    assert meta["routedBy"].startswith("ranker #1: score ")
    shutil.rmtree(".runs")
    capsys.readouterr()
    assert main(["run", "--route", "find security vulnerabilities in auth", "--route-top", "3",
                 "--stub-latency-ms", "1"]) == 0
    inputs = [json.loads(p.read_text()) for p in Path(".runs").rglob("input.json")]
    expected = route_text("find security vulnerabilities in auth", load_registry()).top(3)
    assert sorted(i["agentId"] for i in inputs) == sorted(expected) and len(expected) == 3
    ranks = sorted(i["task"]["meta"]["route"]["rank"] for i in inputs)
    assert ranks == [1, 2, 3]


@pytest.mark.parametrize("argv, message", [
    (["--route", "please do it"], "--route: no agent matches 'please do it': no informative "
                                  "words"),
    (["--route-top", "2"], "--route-top K goes with --route TEXT"),
    (["--route", "fix the build", "--route-top", "0"], "must be between 1 and 100, got 0"),
])
def test_run_route_errors(workdir, capsys, argv, message):
    try:
        code = main(["run", *argv])
    except SystemExit as exc:  # argparse: a bad option value
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) <= 2
    assert not Path(".runs").exists()


def test_import_stays_light():
    code = ("import sys, codexflow_nb, codexflow_nb.routing, codexflow_nb.ranking; "
            "print(sorted(m for m in ('bm25s', 'numpy', 'Stemmer') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- the planner and the dashboard ------------------------------------------------------------

def test_the_planner_selector_shortlists_with_the_ranker(registry):
    shortlist = select_agents("train a classifier to detect spam", registry)
    assert shortlist[0].agent == "ml-engineer"
    assert any("ranker score" in r for r in shortlist[0].reasons)
    assert select_agents("hello there", registry) == []


def test_task_editor_routes_with_the_ranker_and_shows_why(registry):
    from codexflow_nb.widgets.tasks import TaskEditor

    editor = TaskEditor(registry=registry)
    editor.route_text.value = "fix the failing CI build"
    editor.route_button.click()
    item = editor.value["ci-engineer"][0]
    assert item["task"] == "fix the failing CI build"
    assert item["meta"]["routedBy"].startswith("ranker #1: score ")
    shown = editor.route_why.value
    assert "ci-engineer" in shown and "stage <b>ranker</b>" in shown
    assert shown.count("<tr>") == 4  # a header and the top three
    assert "title='card 1.00, model " in shown  # the score's two parts, as its tooltip
    editor.route_all.value = True
    editor.route_text.value = "train a classifier to detect spam"
    editor.route_button.click()
    assert sum(i["task"] == "train a classifier to detect spam"
               for items in editor.value.values() for i in items) == 3
    editor.route_text.value = "hello there"
    editor.route_button.click()
    assert "no informative words" in editor.message.value
    assert "closest agents: coder, planner, researcher" in editor.message.value


def test_the_selector_ranks_each_clause_of_a_goal(registry):
    from codexflow_nb.planner import goal_parts

    goal = "Add invoice export to the billing API, with tests"
    assert goal_parts(goal) == [goal, "Add invoice export to the billing API", "tests"]
    assert goal_parts("train a classifier to detect spam") == ["train a classifier to detect spam"]
    shortlist = {c.agent: c for c in select_agents(goal, registry)}
    # the API clause brings its agents, the testing clause its own
    assert {"api-designer", "backend-dev"} <= set(shortlist)
    assert {"tester", "unit-tester"} <= set(shortlist)
    assert "for 'Add invoice export to the billing API'" in shortlist["backend-dev"].why()

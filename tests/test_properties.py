"""Property-based tests (hypothesis): alias deep merge, the glob router, plan validation."""

from __future__ import annotations

import copy
import fnmatch
import os
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from codexflow_nb import Aliases, Plan, PlanError
from codexflow_nb.aliases import deep_merge
from codexflow_nb.plan import find_cycle
from codexflow_nb.routing import glob_match, normalize_path, route_files

# A quick default for every test run; CODEXFLOW_HYPOTHESIS=thorough for a deeper search.
settings.register_profile("quick", deadline=None, max_examples=30,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", deadline=None, max_examples=1000,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("CODEXFLOW_HYPOTHESIS", "quick"))

# -- deep merge -----------------------------------------------------------------------------

keys = st.text(alphabet="abcdefgh", min_size=1, max_size=3)
leaves = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=4),
                   st.lists(st.integers(0, 3), max_size=3))
documents = st.recursive(leaves, lambda inner: st.dictionaries(keys, inner, max_size=4),
                         max_leaves=12)
mappings = st.dictionaries(keys, documents, max_size=5)


def leaf_paths(doc: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Every non-mapping value by its key path (an empty mapping counts as a leaf)."""
    out: dict[tuple[str, ...], Any] = {}
    for k, v in doc.items():
        if isinstance(v, Mapping) and v:
            out.update(leaf_paths(v, (*prefix, k)))
        else:
            out[(*prefix, k)] = v
    return out


def get(doc: Any, path: tuple[str, ...]) -> Any:
    for k in path:
        doc = doc[k]
    return doc


@given(mappings, mappings)
def test_merge_does_not_mutate_its_inputs_nor_share_structure(base, over):
    base_before, over_before = copy.deepcopy(base), copy.deepcopy(over)
    merged = deep_merge(base, over)
    assert base == base_before and over == over_before

    def scribble(doc: Any) -> None:  # mutate every container of the result
        if isinstance(doc, dict):
            for v in doc.values():
                scribble(v)
            doc["zz-mutated"] = 1
        elif isinstance(doc, list):
            doc.append("mutated")

    scribble(merged)
    assert base == base_before and over == over_before


@given(mappings)
def test_merge_with_empty_is_identity_both_ways(doc):
    assert deep_merge(doc, {}) == doc
    assert deep_merge({}, doc) == doc


@given(mappings)
def test_merge_is_idempotent(doc):
    assert deep_merge(doc, doc) == doc


@given(mappings, mappings)
def test_override_leaves_win_and_base_leaves_survive_elsewhere(base, over):
    merged = deep_merge(base, over)
    over_leaves = leaf_paths(over)
    for path, value in over_leaves.items():  # lists and scalars replace, never concatenate
        if not (isinstance(value, Mapping) and not value):
            assert get(merged, path) == value
    for path, value in leaf_paths(base).items():
        # a base leaf survives when the override wrote nothing on its path, above or below it
        touched = any(path[:len(p)] == p or p[:len(path)] == path for p in over_leaves)
        if not touched:
            assert get(merged, path) == value


@given(mappings, mappings)
def test_merged_keys_are_the_union_and_nested_mappings_merge(base, over):
    merged = deep_merge(base, over)
    assert set(merged) == set(base) | set(over)
    for k in merged:
        if k in over and isinstance(over[k], Mapping) and isinstance(base.get(k), Mapping):
            assert merged[k] == deep_merge(base[k], over[k])
        elif k in over:
            assert merged[k] == over[k]
        else:
            assert merged[k] == base[k]


@given(mappings, mappings)
def test_applying_the_same_overrides_twice_changes_nothing(base, over):
    once = deep_merge(base, over)
    assert deep_merge(once, over) == once


# Associativity holds when each key path is always a mapping or always a leaf in all three
# documents ("same shape"): keys starting with "d" hold mappings, the others leaves.
shaped: st.SearchStrategy[dict[str, Any]] = st.deferred(lambda: st.dictionaries(
    st.sampled_from(["d1", "d2", "v1", "v2", "v3"]),
    st.just(None), max_size=5).flatmap(lambda skeleton: st.fixed_dictionaries(
        {k: (shaped if k.startswith("d") else leaves) for k in skeleton})))


@given(shaped, shaped, shaped)
def test_merge_is_associative_for_documents_of_the_same_shape(a, b, c):
    assert deep_merge(deep_merge(a, b), c) == deep_merge(a, deep_merge(b, c))


def test_merge_is_not_associative_when_shapes_differ():
    """Documents the limit of the property above: a scalar between two mappings."""
    a, b, c = {"k": {"x": 1}}, {"k": 0}, {"k": {"y": 2}}
    assert deep_merge(deep_merge(a, b), c) == {"k": {"y": 2}}
    assert deep_merge(a, deep_merge(b, c)) == {"k": {"x": 1, "y": 2}}


@given(st.integers(1, 64), st.one_of(st.none(), st.floats(0, 1)))
def test_alias_overrides_reach_the_effective_definition(registry, limit, autonomy):
    overrides: dict[str, Any] = {"runtime": {"concurrency": {"max_parallel_tasks": limit}}}
    if autonomy is not None:
        overrides["runtime"]["autonomy_level"] = autonomy
    before = copy.deepcopy(registry.get("coder").data)
    resolved = Aliases({"mine": {"id": "coder", "overrides": overrides}}).resolve("mine", registry)
    assert resolved.max_parallel_tasks == limit
    expected = autonomy if autonomy is not None else before["runtime"]["autonomy_level"]
    assert resolved.effective["runtime"]["autonomy_level"] == expected
    assert resolved.effective["runtime"]["concurrency"]["queue_strategy"] == \
        before["runtime"]["concurrency"]["queue_strategy"]
    assert registry.get("coder").data == before  # the registry's copy is untouched


# -- glob router ----------------------------------------------------------------------------

name_chars = "abcxyz019._-"
segment_names = st.text(alphabet=name_chars, min_size=1, max_size=6).filter(
    lambda s: s not in (".", ".."))
glob_atoms = st.one_of(st.sampled_from(list(name_chars)), st.just("*"), st.just("?"),
                       st.sampled_from(["[abc]", "[!abc]", "[a-c]", "[0-9]", "[!x]"]))
# two stars in a row are ``**`` (any depth), not two single-segment stars
segment_globs = st.lists(glob_atoms, min_size=1, max_size=5).map("".join).filter(
    lambda g: "**" not in g)
paths = st.lists(segment_names, min_size=1, max_size=4).map("/".join)


@given(st.lists(segment_globs, min_size=1, max_size=3), st.lists(segment_names, min_size=1, max_size=3))
def test_globs_without_double_star_match_segment_by_segment_like_fnmatch(globs, names):
    expected = len(globs) == len(names) and all(
        fnmatch.fnmatchcase(n, g) for g, n in zip(globs, names, strict=True))
    assert glob_match("/".join(globs), "/".join(names)) == expected


@given(paths)
def test_a_literal_glob_matches_exactly_its_own_path(path):
    assert glob_match(path, path)
    assert not glob_match(path, path + "x")
    assert not glob_match(path, "x/" + path)


@given(st.lists(segment_names, min_size=2, max_size=4))
def test_star_and_question_mark_never_cross_a_slash(names):
    path = "/".join(names)
    assert not glob_match("*", path)
    assert not glob_match("?" * len(path), path)
    assert glob_match("/".join("*" for _ in names), path)


@given(st.lists(segment_names, max_size=4), segment_names)
def test_double_star_slash_matches_at_any_depth_including_the_top(folders, name):
    assert glob_match(f"**/{name}", "/".join([*folders, name]))
    assert glob_match("**", "/".join([*folders, name]))


@given(segment_names, st.lists(segment_names, min_size=1, max_size=4))
def test_folder_double_star_matches_everything_below_and_nothing_beside(top, below):
    assert glob_match(f"{top}/**", "/".join([top, *below]))
    assert not glob_match(f"{top}/**", "/".join([top + "x", *below]))


@given(st.lists(segment_names, min_size=1, max_size=3))
def test_paths_are_normalised_before_matching(names):
    path = "/".join(names)
    assert normalize_path("./" + path) == normalize_path(path)


globs_to_agents = st.dictionaries(
    st.one_of(segment_globs, segment_globs.map(lambda g: f"**/{g}"),
              segment_globs.map(lambda g: f"{g}/**")),
    st.lists(st.sampled_from(["coder", "tester", "reviewer", "planner"]), min_size=1,
             max_size=2, unique=True), max_size=5)


@given(globs_to_agents, st.lists(paths, max_size=4), st.lists(paths, max_size=4))
def test_routing_files_in_two_batches_equals_routing_them_at_once(registry, globs, first, second):
    trig = {"keywords": {}, "regex": [], "file_patterns": globs}
    both = route_files(first + second, registry, triggers=trig)
    a = route_files(first, registry, triggers=trig)
    b = route_files(second, registry, triggers=trig)
    assert both.candidates == list(dict.fromkeys(a.candidates + b.candidates))
    # every candidate is there because one of its globs matches one of the paths, and back
    for agent in both.candidates:
        assert any(glob_match(g, normalize_path(p)) for g, agents in globs.items() if agent in agents
                   for p in first + second)
    for g, agents in globs.items():
        if any(glob_match(g, normalize_path(p)) for p in first + second):
            assert set(agents) <= set(both.candidates)


# -- plan validation ------------------------------------------------------------------------

@st.composite
def dags(draw: st.DrawFn, min_nodes: int = 1) -> tuple[list[str], dict[str, list[str]]]:
    """Task ids in a random order and dependencies that only point to earlier ids (a DAG)."""
    n = draw(st.integers(min_nodes, 12))
    ids = draw(st.lists(st.text(alphabet="abcdefghjk", min_size=1, max_size=4), min_size=n,
                        max_size=n, unique=True))
    deps = {key: sorted(draw(st.sets(st.sampled_from(ids[:i]), max_size=3)) if i else [])
            for i, key in enumerate(ids)}
    return ids, deps


def plan_from(ids: list[str], deps: dict[str, list[str]]) -> Plan:
    agents = ["coder", "tester", "reviewer"]
    return Plan.from_data({"phases": [{"name": "main", "tasks": [
        {"id": key, "alias": agents[i % 3], "task": f"do {key}", "dependsOn": deps[key]}
        for i, key in enumerate(ids)]}]}, "prop-plan.yaml")


def reaches(deps: Mapping[str, list[str] | tuple[str, ...]], start: str, goal: str) -> bool:
    """True when ``start`` depends on ``goal`` directly or through others."""
    seen, stack = set(), [start]
    while stack:
        node = stack.pop()
        for d in deps.get(node, ()):
            if d == goal:
                return True
            if d not in seen:
                seen.add(d)
                stack.append(d)
    return False


def assert_real_cycle(cycle: list[str], deps: Mapping[str, Any]) -> None:
    assert len(cycle) >= 2 and cycle[0] == cycle[-1]
    assert len(set(cycle[:-1])) == len(cycle) - 1  # a simple cycle
    for a, b in zip(cycle, cycle[1:], strict=False):
        assert b in deps[a], (a, b, cycle)


@given(dags())
def test_random_dags_validate(registry, dag):
    ids, deps = dag
    plan = plan_from(ids, deps)
    resolved = plan.validate(registry, Aliases({}))
    assert set(resolved) <= {"coder", "tester", "reviewer"}
    assert find_cycle(plan.edges()) is None
    assert {k: list(v) for k, v in plan.edges().items()} == deps


@given(dags(min_nodes=2), st.data())
def test_a_back_edge_gives_a_cycle_error_naming_its_tasks(registry, dag, data):
    ids, deps = dag
    pairs = [(a, b) for a in ids for b in ids if a != b and reaches(deps, a, b)]
    assume(pairs)
    later, earlier = data.draw(st.sampled_from(pairs))  # later depends (transitively) on earlier
    deps = {**deps, earlier: [*deps[earlier], later]}
    with pytest.raises(PlanError) as info:
        plan_from(ids, deps).validate(registry, Aliases({}))
    (line,) = info.value.problems
    assert line.startswith("prop-plan.yaml: dependency cycle: ")
    cycle = line.split("dependency cycle: ")[1].split(" -> ")
    assert_real_cycle(cycle, deps)
    assert earlier in cycle and later in cycle  # every cycle goes through the new edge


@given(dags(), st.data())
def test_a_self_dependency_is_named(registry, dag, data):
    ids, deps = dag
    key = data.draw(st.sampled_from(ids))
    deps = {**deps, key: [*deps[key], key]}
    with pytest.raises(PlanError) as info:
        plan_from(ids, deps).validate(registry, Aliases({}))
    assert f"prop-plan.yaml: task {key!r} depends on itself" in info.value.problems


def is_acyclic(deps: Mapping[str, list[str]]) -> bool:
    """Kahn's algorithm, independent of ``find_cycle``."""
    indegree = {k: 0 for k in deps}
    for k, ds in deps.items():
        for d in ds:
            if d in deps:
                indegree[k] += 1
    ready = [k for k, n in indegree.items() if n == 0]
    dependants: dict[str, list[str]] = {k: [] for k in deps}
    for k, ds in deps.items():
        for d in ds:
            if d in deps:
                dependants[d].append(k)
    done = 0
    while ready:
        node = ready.pop()
        done += 1
        for k in dependants[node]:
            indegree[k] -= 1
            if indegree[k] == 0:
                ready.append(k)
    return done == len(deps)


graphs = st.lists(st.sampled_from("abcdefg"), min_size=1, max_size=7, unique=True).flatmap(
    lambda nodes: st.fixed_dictionaries(
        {n: st.lists(st.sampled_from([*nodes, "unknown"]), max_size=3, unique=True) for n in nodes}))


@given(graphs)
def test_find_cycle_finds_a_real_cycle_exactly_when_there_is_one(deps):
    cycle = find_cycle({k: tuple(v) for k, v in deps.items()})
    if is_acyclic(deps):
        assert cycle is None
    else:
        assert cycle is not None
        assert_real_cycle(cycle, deps)


@given(st.lists(st.tuples(st.sampled_from(["parallel", "sequential"]),
                          st.integers(1, 4)), min_size=1, max_size=4))
def test_phases_with_implicit_dependencies_always_validate(registry, phases):
    plan = Plan.from_data({"phases": [
        {"name": f"p{i}", "mode": mode, "tasks": [{"alias": "coder", "task": f"t{i}.{j}"}
                                                  for j in range(n)]}
        for i, (mode, n) in enumerate(phases)]})
    plan.validate(registry, Aliases({}))
    edges = plan.edges()
    assert find_cycle(edges) is None
    # every task of a later phase depends, directly or not, on every task of the phase before
    for (i, phase), nxt in zip(enumerate(plan.phases), plan.phases[1:], strict=False):
        for later in nxt.tasks:
            for earlier in phase.tasks:
                assert reaches(edges, later.key, earlier.key), (i, later.key, earlier.key)

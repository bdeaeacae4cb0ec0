"""``codex-flow run`` options for routing and planning: ``--route`` (with ``--route-top``),
``--route-files``, ``--goal`` (with ``--selector``/``--decomposer``) and ``--revise-plan``.

They register into ``run_cmd`` (an option group and a plan builder), so ``run`` stays one command.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from ..aliases import Aliases
from ..api import run_sync
from ..errors import ConfigError
from ..plan import Phase, Plan, PlanTask, _fresh_key
from ..planner import (
    AliasBook,
    Planned,
    PlannerWarning,
    decompose_heuristic,
    decompose_llm,
    make_reviser,
    select_agents,
)
from ..registry import Registry, load_registry
from ..routing import normalize_path, route_files, route_text
from ..runtimes import Runtime, make_runtime
from . import run_cmd


def add_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("routing and planning")
    g.add_argument("--route", metavar="TEXT",
                   help="run TEXT on the agent it routes to: a strong trigger, else the best "
                        "agent card (see `codex-flow route TEXT`)")
    g.add_argument("--route-top", type=_top_k, metavar="K",
                   help="with --route: run TEXT on the best K agents, not just the best one")
    g.add_argument("--route-files", nargs="+", metavar="PATH",
                   help="run 'Review <file>' on every agent whose file globs match each file")
    g.add_argument("--goal", metavar="TEXT", help="plan phases for a goal, then run them")
    g.add_argument("--selector", choices=["heuristic"], default="heuristic",
                   help="how --goal shortlists agents (default heuristic)")
    g.add_argument("--decomposer", choices=["heuristic", "llm"], default="heuristic",
                   help="how --goal becomes phases: heuristic, or the endpoint's planner agent")
    g.add_argument("--revise-plan", action="store_true",
                   help="after each phase, let the planner revise the remaining phases")


def _top_k(value: str) -> int:
    try:
        k = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if not 1 <= k <= 100:
        raise argparse.ArgumentTypeError(f"must be between 1 and 100, got {k}")
    return k


def _warn(message: str) -> None:
    print(f"codex-flow: warning: {message}", file=sys.stderr)


#: Route notes printed one per line; more are counted on one line.
MAX_NOTES = 5


def _notes(option: str, notes: list[str]) -> None:
    """The router's notes (rules it skipped), a warning line each, so a skipped rule is never
    silent: the route may differ from what the rules say."""
    for note in notes[:MAX_NOTES]:
        _warn(f"{option}: {note}")
    if len(notes) > MAX_NOTES:
        _warn(f"{option}: {len(notes) - MAX_NOTES} more rules skipped the same way")


def _base_aliases(args: argparse.Namespace) -> Aliases | None:
    if isinstance(args.aliases, Aliases):
        return args.aliases
    return Aliases.from_file(args.aliases) if args.aliases else None


def _planner_runtime(args: argparse.Namespace) -> Runtime:
    url = args.codex_url or os.environ.get("CODEX_URL")
    if not url:
        raise ConfigError("--decomposer llm asks the endpoint's planner agent: pass --codex-url "
                          "URL or set CODEX_URL (start one with `codex-flow serve`)")
    return make_runtime("codex", url=url, api_key=args.codex_key or os.environ.get("CODEX_API_KEY"),
                        provider=args.provider)


def routed_text_plan(text: str, registry: Registry, aliases: Aliases | None,
                     top: int = 1) -> tuple[Plan, Aliases]:
    """One phase: ``text`` on the agent the router picks (``top`` > 1: the best ``top``, in
    parallel). Each task's ``routedBy`` says why; ``route`` in its meta holds the stage."""
    route = route_text(text, registry)
    _notes("--route", route.notes)
    if not route:
        raise ConfigError(f"--route: {route.problem()}; name agents with -f, or see "
                          "`codex-flow agents list`")
    book, used = AliasBook(registry, aliases), set[str]()
    tasks = []
    for rank, agent in enumerate(route.top(top), 1):
        alias = book.alias_for(agent)
        why = route.why(agent) or "ranked by the router"
        tasks.append(PlanTask(_fresh_key(f"{alias}-1", used), alias, text, 0,
                              meta={"routedBy": why, "route": {"stage": route.stage,
                                                               "rank": rank}}))
    return Plan([Phase("routed", tuple(tasks))], "--route"), book.aliases()


def routed_files_plan(paths: list[str], registry: Registry,
                      aliases: Aliases | None) -> tuple[Plan, Aliases]:
    """One parallel phase: ``Review <file>`` on every agent whose globs match each file."""
    problems = [f"--route-files: {p}: " + ("is a folder; pass files" if Path(p).is_dir()
                                            else "no such file")
                for p in paths if not Path(p).is_file()]
    if problems:
        raise ConfigError(problems)
    route = route_files(paths, registry)
    _notes("--route-files", route.notes)
    if not route:
        raise ConfigError(f"--route-files: no agent's file patterns match {', '.join(paths)}")
    for p in paths:
        if normalize_path(p) not in route.files:
            _warn(f"--route-files: no agent's file patterns match {p}; it is left out")
    book, used, counts = AliasBook(registry, aliases), set[str](), dict[str, int]()
    tasks = []
    for path, agents in route.files.items():
        for agent in agents:
            alias = book.alias_for(agent)
            counts[alias] = counts.get(alias, 0) + 1
            tasks.append(PlanTask(_fresh_key(f"{alias}-{counts[alias]}", used), alias,
                                  f"Review {path}", 0,
                                  meta={"routedBy": route.why(agent, path), "file": path}))
    return Plan([Phase("routed files", tuple(tasks))], "--route-files"), book.aliases()


def build_plan(args: argparse.Namespace) -> Plan | None:
    """The plan for ``--route``, ``--route-files``, ``--goal`` or ``--revise-plan``; else None."""
    ours = [name for name, val in (("--route", args.route), ("--route-files", args.route_files),
                                   ("--goal", args.goal)) if val]
    if getattr(args, "route_top", None) and not args.route:
        raise ConfigError("--route-top K goes with --route TEXT")
    if not ours and not args.revise_plan:
        return None
    others = [name for name, val in (("--example", args.example), ("-f", args.file),
                                     ("--plan-file", args.plan_file)) if val]
    if len(ours) + len(others) > 1:
        raise ConfigError(f"choose one of {', '.join(ours + others)}")
    if args.revise_plan and not (args.goal or args.plan_file):
        raise ConfigError("--revise-plan needs --goal or --plan-file (a plan with phases)")
    registry = load_registry(args.agents_dir)
    aliases = _base_aliases(args)
    runtime = _planner_runtime(args) if args.decomposer == "llm" else None
    if args.route:
        plan, aliases = routed_text_plan(args.route, registry, aliases,
                                         getattr(args, "route_top", None) or 1)
    elif args.route_files:
        plan, aliases = routed_files_plan(args.route_files, registry, aliases)
    elif args.goal:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", PlannerWarning)
            planned = _plan_goal(args, registry, aliases, runtime)
        for warning in caught:
            _warn(str(warning.message))
        plan, aliases = planned.plan, planned.aliases
    else:
        plan = Plan.from_file(args.plan_file)
    if args.revise_plan:
        if plan.later_phase_dependencies():
            raise ConfigError(plan.later_phase_dependencies())
        plan.reviser = make_reviser(registry, aliases, decomposer=args.decomposer,
                                    runtime=runtime, goal=args.goal)
    if aliases is not None:
        args.aliases = aliases  # the plan may use aliases the planner added (see AliasBook)
    return plan


def _plan_goal(args: argparse.Namespace, registry: Registry, aliases: Aliases | None,
               runtime: Runtime | None) -> Planned:
    if args.decomposer == "llm":
        assert runtime is not None
        return run_sync(decompose_llm(args.goal, registry, aliases, runtime=runtime))
    shortlist = select_agents(args.goal, registry)  # --selector heuristic, the only one so far
    return decompose_heuristic(args.goal, registry, aliases, shortlist=shortlist)


run_cmd._EXTENSIONS.append(add_options)
run_cmd._PLAN_BUILDERS.append(build_plan)

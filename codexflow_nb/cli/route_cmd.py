"""``codex-flow route TEXT``: which agent would take a plain request, and why (runs nothing)."""

from __future__ import annotations

import argparse
import json

from ..errors import ConfigError


def _positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if not 1 <= n <= 100:
        raise argparse.ArgumentTypeError(f"must be between 1 and 100, got {n}")
    return n


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "route", help="show which agent a request goes to, and why",
        description="Route TEXT as `run --route` would, without running anything: the stage "
                    "that decided (triggers or the ranker), the agent picked, and the top "
                    "agents with their ranker scores, the words their cards share with the "
                    "text and their trigger matches.")
    p.add_argument("text", metavar="TEXT", help="the request, e.g. 'fix the failing CI build'")
    p.add_argument("--top", type=_positive, default=3, metavar="K",
                   help="how many agents to list (default 3)")
    p.add_argument("--agents-dir", help="agents folder (default: lookup order, see docs)")
    p.add_argument("--json", action="store_true", help="the trace as JSON")
    p.set_defaults(func=cmd_route)


def cmd_route(args: argparse.Namespace) -> int:
    from ..registry import load_registry
    from ..routing import route_text

    route = route_text(args.text, load_registry(args.agents_dir))
    if args.json:
        print(json.dumps(route.to_dict(args.top), indent=2, ensure_ascii=False))
        return 0 if route else 2
    if not route:
        raise ConfigError(route.problem())
    print(route.explain(args.top))
    return 0

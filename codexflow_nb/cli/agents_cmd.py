"""``codex-flow agents list|show|validate|index``."""

from __future__ import annotations

import argparse
import json
import sys

import yaml

from ..aliases import Aliases
from ..errors import ConfigError
from ..registry import build_index, load_registry, write_index
from ..routing import load_triggers


def add_parser(sub: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--agents-dir", help="agents folder (default: lookup order, see docs)")
    p = sub.add_parser("agents", help="list, show, validate or index the agent bundle")
    s = p.add_subparsers(dest="agents_command", metavar="ACTION", required=True)
    ls = s.add_parser("list", help="list agents", parents=[common])
    ls.add_argument("--domain", help="only this domain")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=cmd_list)
    show = s.add_parser("show", help="show one agent definition", parents=[common])
    show.add_argument("id")
    show.set_defaults(func=cmd_show)
    val = s.add_parser("validate", help="validate every agent file and triggers.json",
                       parents=[common])
    val.add_argument("dir", nargs="?", help="agents folder to check")
    val.add_argument("--strict", action="store_true",
                     help="treat warnings (shared ids, a stale index.json) as errors")
    val.set_defaults(func=cmd_validate)
    idx = s.add_parser("index", help="regenerate index.json and triggers.json", parents=[common])
    idx.set_defaults(func=cmd_index)


def cmd_list(args: argparse.Namespace) -> int:
    reg = load_registry(args.agents_dir)
    agents = [a for a in reg if not args.domain or a.domain == args.domain]
    if args.json:
        entries = [e for e in build_index(reg)["agents"] if not args.domain or e["domain"] == args.domain]
        print(json.dumps(entries, indent=2))
        return 0
    width = max([len(a.key) for a in agents] + [2])
    for a in agents:
        print(f"{a.key:<{width}}  {a.domain:<13} {a.tier:<10} limit {a.max_parallel_tasks}  "
              f"{a.description[:70]}")
    print(f"{len(agents)} agents in {reg.root}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    agent = load_registry(args.agents_dir).get(args.id)
    print(f"# {agent.path}")
    print(yaml.safe_dump(agent.data, sort_keys=False, allow_unicode=True), end="")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Every problem once, one line each: errors exit 2; warnings (shared ids, a stale
    index.json) leave the bundle usable and exit 0, unless ``--strict``."""
    reg = load_registry(args.dir or args.agents_dir)
    load_triggers(reg)  # word priorities, regexes and the agents it names
    if args.strict and reg.warnings:
        raise ConfigError([f"{w} (--strict)" for w in reg.warnings])
    for warning in reg.warnings:
        print(f"codex-flow: warning: {warning}", file=sys.stderr)
    for note in Aliases().hidden_agents(reg):
        print(f"codex-flow: note: {note}", file=sys.stderr)
    count = f"; {len(reg.warnings)} warning(s)" if reg.warnings else ""
    print(f"ok: {len(reg)} agents in {len(reg.domains)} domains ({reg.root}){count}")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    reg = load_registry(args.agents_dir, check_index=False)
    for path in write_index(reg):
        print(f"wrote {path}")
    return 0

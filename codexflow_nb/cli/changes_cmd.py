"""``codex-flow changes``: what each coding-agent task changed; show or apply one patch."""

from __future__ import annotations

import argparse
import json
import sys

from ..changes import apply_task, find_task, run_changes


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "changes", help="list each task's changed files; show or apply one task's patch",
        description="Without options: each task of the run with its changed files and line "
                    "counts. --show TASK prints its patch; --apply TASK applies it to the main "
                    "checkout (git apply --3way) and says what conflicted. TASK is a task key "
                    "(reviewer-1), alias/key, a task id or its number in the list.")
    p.add_argument("run", nargs="?", default="last", metavar="RUN_ID",
                   help="the run (default: last)")
    action = p.add_mutually_exclusive_group()
    action.add_argument("--show", metavar="TASK", help="print the task's patch")
    action.add_argument("--apply", metavar="TASK", help="apply the task's patch to --repo")
    p.add_argument("--repo", default=".", help="checkout to apply to (default .)")
    p.add_argument("--log-file", default="data/logs/events.jsonl", help="event log path")
    p.add_argument("--runs-dir", default=".runs", help="run store folder")
    p.add_argument("--json", action="store_true", help="the list as JSON")
    p.set_defaults(func=cmd_changes)


def cmd_changes(args: argparse.Namespace) -> int:
    changes = run_changes(args.run, log_file=args.log_file, runs_dir=args.runs_dir)
    if args.show:
        sys.stdout.write(find_task(changes, args.show).patch())
        return 0
    if args.apply:
        result = apply_task(find_task(changes, args.apply), args.repo)
        print(result.message, file=sys.stdout if result.ok else sys.stderr)
        return 0 if result.ok else 1
    if args.json:
        print(json.dumps([tc.to_dict() for tc in changes], indent=2))
        return 0
    if not changes:
        print("no task of this run ran in a workspace (use --runtime codex-cli or claude-code)")
        return 0
    print(f"Changes of run {changes[0].run_id}")
    for n, tc in enumerate(changes, 1):
        print(f"  {n:>2}. {tc.label} {tc.status}: {len(tc.files)} file(s), "
              f"+{tc.insertions} -{tc.deletions}")
        for f in tc.files:
            print(f"        {f.get('status', 'modified')[0].upper()} {f['path']}  "
                  f"+{f.get('insertions', 0)} -{f.get('deletions', 0)}")
    return 0

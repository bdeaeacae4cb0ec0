"""``codex-flow cleanup``: keep the newest task folders per alias and trim the event log."""

from __future__ import annotations

import argparse
import sys

from ..cleanup import DEFAULT_LOGS_MAX_BYTES, DEFAULT_RUNS_MAX_PER_ALIAS, cleanup, parse_size


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cleanup", help="prune old task folders and trim the event log",
        description="Keep the newest N task folders per alias under the runs dir and the last "
                    "B bytes of the event log (cut at a line boundary). Touches nothing else "
                    "and never follows symlinks.")
    p.add_argument("--runs-dir", default=".runs", help="run store folder (default .runs)")
    p.add_argument("--log-file", default="data/logs/events.jsonl",
                   help="event log (default data/logs/events.jsonl)")
    p.add_argument("--runs-max-per-alias", type=_count, default=DEFAULT_RUNS_MAX_PER_ALIAS,
                   metavar="N", help=f"task folders kept per alias (default {DEFAULT_RUNS_MAX_PER_ALIAS})")
    p.add_argument("--logs-max-bytes", type=_size, default=DEFAULT_LOGS_MAX_BYTES, metavar="B",
                   help="bytes of log kept, e.g. 5242880 or 5MiB (default 5 MiB)")
    p.add_argument("--dry-run", action="store_true", help="show what would be removed; change nothing")
    p.add_argument("--wait", type=_seconds, default=0.0, metavar="SECONDS",
                   help="wait up to SECONDS for runs that have the log open to end before "
                        "trimming it (default 0: do not trim, exit 1)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="list every folder removed or skipped (default: a summary)")
    p.set_defaults(func=cmd_cleanup)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError("must be 0 or more seconds")
    return value


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_cleanup(args: argparse.Namespace) -> int:
    report = cleanup(args.runs_dir, args.log_file, runs_max_per_alias=args.runs_max_per_alias,
                     logs_max_bytes=args.logs_max_bytes, dry_run=args.dry_run, wait=args.wait,
                     on_wait=lambda message: print(f"codex-flow: {message}", file=sys.stderr,
                                                   flush=True))
    for line in report.lines(verbose=args.verbose):
        print(line)
    if report.log_refused:
        print(f"codex-flow: error: log not trimmed: {report.log_refused}", file=sys.stderr)
        return 1
    return 0

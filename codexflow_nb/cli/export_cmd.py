"""``codex-flow export-run``: write a finished run as an executed notebook, ready to share."""

from __future__ import annotations

import argparse
import time

from ..export import LATEST, export_run


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export-run", help="write a run's summary, tables and charts as an executed notebook",
        description="Write a new notebook holding a run's summary, tables, charts and outputs, "
                    "execute it and save it with its outputs, ready to share.")
    p.add_argument("run_id", metavar="RUN_ID", help=f"the run to export ('{LATEST}': the latest)")
    p.add_argument("--notebook", required=True, metavar="OUT.ipynb", help="notebook to write")
    p.add_argument("--log-file", default="data/logs/events.jsonl", help="event log path")
    p.add_argument("--runs-dir", default=".runs",
                   help="run store the outputs are read from (default .runs)")
    p.add_argument("--force", action="store_true", help="replace OUT.ipynb if it exists")
    p.add_argument("--no-outputs", dest="outputs", action="store_false",
                   help="leave the tasks' outputs out of the notebook")
    p.add_argument("--no-static-images", dest="static_images", action="store_false",
                   help="interactive charts only, no PNG copies (faster; no kaleido needed)")
    p.add_argument("--no-execute", dest="execute", action="store_false",
                   help="write the notebook without running it")
    p.add_argument("--timeout", type=_seconds, default=300, metavar="S",
                   help="seconds each cell may take, 1 to 86400 (default 300)")
    p.set_defaults(func=cmd_export_run)


def _seconds(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of seconds, got {text!r}") from None
    if not 1 <= value <= 86_400:
        raise argparse.ArgumentTypeError(f"must be between 1 and 86,400 seconds, got {value}")
    return value


def cmd_export_run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    out = export_run(args.run_id, args.notebook, log_file=args.log_file, runs_dir=args.runs_dir,
                     execute=args.execute, include_outputs=args.outputs,
                     static_images=args.static_images, overwrite=args.force,
                     timeout=args.timeout)
    state = "executed" if args.execute else "not executed"
    print(f"wrote {out} ({state}, {time.perf_counter() - started:.1f} s)")
    return 0

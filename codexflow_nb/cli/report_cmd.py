"""``codex-flow report``: summarise runs from the event log; write HTML, CSV and OpenTelemetry
spans (OTLP/JSON or OTLP/protobuf files, or a push to an OTLP/HTTP receiver).

pandas, pyarrow and plotly load only when the command runs; opentelemetry-proto only for OTLP
protobuf.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="summarise runs from the event log (tables, HTML, CSV, OTLP)")
    p.add_argument("--log-file", default="data/logs/events.jsonl", help="event log (or a folder of them)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--run", metavar="ID", help="report this run")
    which.add_argument("--last", action="store_true", help="report the latest run (default)")
    which.add_argument("--all", action="store_true", help="report every run in the log")
    p.add_argument("--html", metavar="OUT.html", help="write an HTML report with tables and charts")
    p.add_argument("--plotlyjs", metavar="FROM", default="cdn", type=_plotlyjs_mode,
                   help="where the HTML report's charts load plotly.js from: cdn (default; the "
                        "report stays small), inline (embedded, about 4.8 MB, works offline), "
                        "directory (plotly.min.js written beside the report) or a URL or path "
                        "ending in .js")
    p.add_argument("--no-static-images", dest="static_images", action="store_false",
                   help="no PNG copy of each chart in the HTML report (faster; no kaleido "
                        "needed; the charts then show only where plotly.js loads)")
    p.add_argument("--csv", metavar="DIR", help="write tasks, aliases, runs, concurrency and "
                                                "critical-path CSVs to DIR")
    p.add_argument("--otlp-json", metavar="OUT", help="write the runs as OpenTelemetry spans (OTLP/JSON)")
    p.add_argument("--otlp-proto", metavar="OUT",
                   help="write the runs as OTLP/protobuf (a serialized ExportTraceServiceRequest; "
                        "extra: otel)")
    p.add_argument("--otlp-endpoint", metavar="URL",
                   help="send the runs to an OTLP/HTTP receiver as protobuf: POST URL/v1/traces "
                        "(Phoenix: http://HOST:6006, a collector: http://HOST:4318); headers "
                        "from $OTEL_EXPORTER_OTLP_HEADERS (extra: otel)")
    p.add_argument("--pricing", metavar="FILE", help="prices merged over the shipped table "
                                                     "(default $CODEXFLOW_PRICING)")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    try:
        from .. import analysis
    except ImportError as exc:
        raise ConfigError(f"codex-flow report needs the analysis extra: pip install "
                          f"'codexflow-nb[analysis]' ({exc})") from None
    from ..analysis import otel

    _check_outputs(args)  # a target that cannot be written exits 2 before any work
    if args.otlp_endpoint:  # a bad URL or header exits 2 before any work
        otel.Sender.from_env(args.otlp_endpoint)
    if args.otlp_proto or args.otlp_endpoint:
        otel.proto_modules()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", analysis.EventLogWarning)
        try:
            events = analysis.load_events(args.log_file)
        except OSError as exc:  # unreadable (permissions), or a log that vanished meanwhile
            raise ConfigError(f"{exc.filename or args.log_file}: cannot read the event log: "
                              f"{exc.strerror or exc}") from None
    skipped = [str(w.message) for w in caught]
    try:
        events = _select(events, args)
    except ConfigError as exc:  # one line: why no run was found, with the lines skipped
        if not skipped:
            raise
        raise ConfigError([f"{p} ({'; '.join(skipped)})" for p in exc.problems]) from None
    for message in skipped:
        print(f"codex-flow: warning: {message}", file=sys.stderr)
    pricing = analysis.load_pricing(_pricing_file(args.pricing))
    tasks = analysis.tasks_frame(events, pricing=pricing)
    aliases = analysis.alias_summary(tasks)
    runs = analysis.run_summary(tasks, events)
    crit = analysis.critical_path(tasks, events)
    print(summary_text(runs, aliases))
    if note := unpriced_note(tasks):
        print(note)
    if args.csv:
        out = Path(args.csv)
        _mkdir(out)
        frames = {"tasks": tasks, "aliases": aliases, "runs": runs, "critical_path": crit,
                  "concurrency": analysis.concurrency_frame(tasks)}
        for name, frame in frames.items():
            frame.to_csv(out / f"{name}.csv", index=name in ("aliases", "runs"))
        print(f"csv: {', '.join(str(out / f'{n}.csv') for n in frames)}")
    doc = (otel.to_otel(events, pricing=pricing)
           if args.otlp_json or args.otlp_proto or args.otlp_endpoint else None)
    what = f"{len(runs)} trace(s), {len(tasks) + len(runs)} spans"
    if args.otlp_json:
        _write(Path(args.otlp_json), json.dumps(doc))
        print(f"otlp: {args.otlp_json} ({what})")
    if args.otlp_proto:
        _write(Path(args.otlp_proto), otel.to_proto(doc).SerializeToString())
        print(f"otlp: {args.otlp_proto} (protobuf, {what})")
    if args.html:
        page = html_report(tasks, aliases, runs, crit, args.log_file, plotlyjs=args.plotlyjs,
                           static_images=args.static_images)
        _write(Path(args.html), page)
        if args.plotlyjs == "directory":
            from plotly.offline import get_plotlyjs

            _write(Path(args.html).parent / "plotly.min.js", get_plotlyjs())
        print(f"html: {args.html} ({_size(len(page.encode()))})")
    if args.otlp_endpoint:
        try:
            spans, requests = otel.export_otlp(doc, args.otlp_endpoint)
        except otel.OtlpExportError as exc:
            print(f"codex-flow: error: OTLP export failed: {exc}", file=sys.stderr)
            return 1
        print(f"otlp: sent {spans} spans to {otel.traces_url(args.otlp_endpoint)} "
              f"({requests} request{'s' if requests != 1 else ''})")
    return 0


def _pricing_file(path: str | None) -> str | None:
    """``--pricing`` (or ``$CODEXFLOW_PRICING``), refused early when it is not a regular file:
    reading a FIFO would wait forever, and a device would never end."""
    from ..analysis.pricing import ENV_VAR

    chosen = path if path is not None else os.environ.get(ENV_VAR) or None
    if chosen is not None:
        target = Path(chosen)
        if target.is_dir():
            raise ConfigError(f"{chosen}: a folder, not a pricing file")
        if target.exists() and not target.is_file():
            raise ConfigError(f"{chosen}: not a regular file (expected a pricing file)")
    return path


def _plotlyjs_mode(value: str) -> str:
    if value in ("cdn", "inline", "directory") or value.endswith(".js"):
        return value
    raise argparse.ArgumentTypeError(f"{value!r}: use cdn, inline, directory or a URL or path "
                                     "ending in .js")


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def _select(events: pd.DataFrame, args: argparse.Namespace) -> pd.DataFrame:
    runs = events.loc[events["run"].notna()].groupby("run", observed=True)["ts"].min().sort_values()
    if runs.empty:
        raise ConfigError(f"{args.log_file}: no runs in the event log")
    if args.all:
        return events
    if args.run:
        if args.run not in runs.index:
            recent = ", ".join(str(r) for r in runs.index[-5:][::-1])
            raise ConfigError(f"{args.log_file}: no run {args.run!r} (latest: {recent})")
        chosen = args.run
    else:
        chosen = runs.index[-1]
    picked = events[events["run"] == chosen].copy()
    for col in ("run", "alias", "agent", "kind", "model"):
        picked[col] = picked[col].cat.remove_unused_categories()
    return picked


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse output paths that cannot be written (a folder given as a file, a file in the way
    of a folder) before the report is built: the HTML report alone can take seconds."""
    for option, value in (("--html", args.html), ("--otlp-json", args.otlp_json),
                          ("--otlp-proto", args.otlp_proto)):
        if value is None:
            continue
        target = Path(value)
        if target.is_dir():
            raise ConfigError(f"{option} {value}: a folder, not a file to write")
        blocked = next((p for p in target.parents if p.exists() and not p.is_dir()), None)
        if blocked is not None:
            raise ConfigError(f"{option} {value}: {blocked} is not a folder")
    if args.csv is not None:
        folder = Path(args.csv)
        blocked = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()),
                       None)
        if blocked is not None:
            raise ConfigError(f"--csv {args.csv}: {blocked} is not a folder")


def _mkdir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot create the folder: {exc.strerror or exc}") from None


def _write(path: Path, data: str | bytes) -> None:
    try:
        if path.parent != Path():
            path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write: {exc.strerror or exc}") from None


def _num(v: Any, fmt: str = "{:.0f}") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)) or type(v).__name__ == "NAType":
        return "-"
    try:
        return fmt.format(v)
    except (TypeError, ValueError):
        return "-"


def _present(v: Any) -> bool:
    return _num(v) != "-"


def summary_text(runs: pd.DataFrame, aliases: pd.DataFrame) -> str:
    """The terminal report: one block per run, then the per-alias table."""
    lines = []
    from ..analysis import STATUSES

    for run_id, r in runs.iterrows():
        ended = "".join(f", {r[s]} {s}" for s in STATUSES[1:] if s in r and r[s])
        lines.append(f"Run {run_id}: {r['tasks']} tasks, {r['completed']} completed{ended}, "
                     f"{r['sessions']} session(s)")
        lines.append(f"  makespan {_num(r['makespan_ms'])} ms · task time {_num(r['task_ms'])} ms · "
                     f"cap {_num(r['cap'])} · efficiency {_num(r['efficiency'], '{:.0%}')} · "
                     f"peak {r['peak_concurrency']}")
        lines.append(f"  retries {r['retries']} · backoff {_num(r['backoff_ms'])} ms · retries on "
                     f"the critical path {_num(r['retry_share'], '{:.0%}')} of the makespan · "
                     f"cost {_num(r['cost'], '${:.4f}')}"
                     + (f" (cache writes {_num(r['cache_write_cost'], '${:.4f}')})"
                        if _present(r.get("cache_write_cost")) else ""))
        lines.append(f"  critical path: {r['critical_path'] if isinstance(r['critical_path'], str) else '-'}")
    # coding-agent runs add cached input tokens and the files and lines their agents changed
    cached = "cached_tokens_in" in aliases and aliases["cached_tokens_in"].notna().any()
    # Claude Code runs add the tokens written to the prompt cache and what those writes cost
    written = ("cache_write_tokens_in" in aliases
               and aliases["cache_write_tokens_in"].notna().any())
    changed = "files_changed" in aliases and aliases["files_changed"].notna().any()
    # failed: every task that ended otherwise than completed or cancelled (as the run's own
    # summary counts them); cancelled tasks have a column of their own when there are any
    cancelled = "cancelled" in aliases and bool(aliases["cancelled"].sum())
    header = ["alias", "agent", "limit", "tasks", "done", "failed",
              *(["cancelled"] if cancelled else []), "ok%", "mean ms", "p95 ms",
              "queued ms", "peak", "tokens in", *(["cached in"] if cached else []),
              *(["cache writes"] if written else []), "tokens out", "cost $",
              *(["cache writes $"] if written else []),
              *(["files", "+lines", "-lines"] if changed else [])]
    rows = [[str(a), str(s["agent"]), _num(s["limit"]), str(s["tasks"]), str(s["completed"]),
             str(s["tasks"] - s["completed"] - s.get("cancelled", 0)),
             *([str(s["cancelled"])] if cancelled else []), _num(s["success_rate"], "{:.0%}"),
             _num(s["mean_ms"], "{:.1f}"), _num(s["p95_ms"], "{:.1f}"),
             _num(s["mean_queued_ms"], "{:.1f}"), str(s["peak_concurrency"]), _num(s["tokens_in"]),
             *([_num(s["cached_tokens_in"])] if cached else []),
             *([_num(s["cache_write_tokens_in"])] if written else []),
             _num(s["tokens_out"]), _num(s["cost"], "{:.4f}"),
             *([_num(s["cache_write_cost"], "{:.4f}")] if written else []),
             *([_num(s[c]) for c in ("files_changed", "insertions", "deletions")] if changed
               else [])]
            for a, s in aliases.iterrows()]
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(header)]
    lines.append("")
    lines.append("  ".join(h.ljust(w) if i < 2 else h.rjust(w)
                           for i, (h, w) in enumerate(zip(header, widths, strict=True))))
    for row in rows:
        lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths, strict=True))))
    return "\n".join(lines)


def unpriced_note(tasks: pd.DataFrame) -> str:
    """Why some cost is missing: tasks with usage whose model is unknown or has no price."""
    missing = tasks[tasks["tokens_in"].notna() & tasks["cost"].isna()]
    if missing.empty:
        return ""
    models = sorted({str(m) for m in missing["model"].dropna()})
    unrecorded = int(missing["model"].isna().sum())
    what = ", ".join([*(f"{m} (not in the price table)" for m in models),
                      *([f"no model recorded for {unrecorded} task(s) (--agent-model names it)"]
                        if unrecorded else [])])
    return (f"\nnote: no cost for {len(missing)} task(s) with token usage: {what}; "
            f"prices: --pricing FILE")


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right}th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}.wide{overflow-x:auto}.note{color:#616161}
.codexflow-chart{margin:1.5em 0}.codexflow-chart img{max-width:100%}"""


def html_report(tasks: pd.DataFrame, aliases: pd.DataFrame, runs: pd.DataFrame,
                crit: pd.DataFrame, source: str, *, plotlyjs: str = "cdn",
                static_images: bool = True) -> str:
    """One HTML file: summary tables and the four charts, drawn as in an exported notebook
    (``charts.figures_html``): a PNG copy of each chart (kaleido) that the interactive chart
    replaces where plotly.js loads, plotly.js referenced once (``plotlyjs``: cdn, inline,
    directory or a .js URL)."""
    import pandas as pd

    from .. import charts
    from ..analysis import STATUSES

    figures = [charts.timeline(tasks), charts.concurrency(tasks), charts.latency(tasks),
               charts.usage(tasks)]
    statuses = [s for s in STATUSES if s == "completed" or runs[s].any()]
    run_cols = ["started", "tasks", *statuses, "sessions", "makespan_ms", "task_ms",
                "cap", "efficiency", "peak_concurrency", "retries", "backoff_ms",
                "critical_path", "retry_share", "tokens_in", "tokens_out", "cost",
                *(["cache_write_cost"] if "cache_write_cost" in runs
                  and runs["cache_write_cost"].notna().any() else [])]
    crit_cols = ["run", "step", "key", "alias", "status", "offset_ms", "gap_ms", "queued_ms",
                 "run_ms", "retry_ms"]

    def table(frame: pd.DataFrame, index: bool = True) -> str:
        frame = frame.copy()
        for col in frame.columns:  # times to the second, in UTC
            if isinstance(frame[col].dtype, pd.DatetimeTZDtype):
                frame[col] = frame[col].dt.strftime("%Y-%m-%d %H:%M:%S")
        html = frame.to_html(index=index, na_rep="–", float_format=_float_cell, border=0)
        return f'<div class="wide">{html}</div>'

    where = {"cdn": "cdn.plot.ly", "inline": "this file", "directory": "plotly.min.js beside "
             "this file"}.get(plotlyjs, plotlyjs)
    body = [f"<h1>codex-flow report</h1><p>log: {escape(str(source))} · {len(runs)} run(s) · "
            f"{len(tasks)} task(s)</p>",
            "<h2>Runs</h2>", table(runs[run_cols]),
            "<h2>Aliases</h2>", table(aliases),
            "<h2>Critical path</h2>", table(crit[crit_cols], index=False),
            "<h2>Charts</h2>",
            f"<p class='note'>Interactive where plotly.js loads (from {escape(where)}); "
            "otherwise each chart shows as a still image.</p>",
            charts.figures_html(figures, plotlyjs=plotlyjs, static_images=static_images)]
    return ("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>codex-flow report</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _float_cell(v: float) -> str:
    """A float of a report table: 3 significant digits below 1 (rates, costs), else 0.1."""
    return f"{v:,.3g}" if abs(v) < 1 else f"{v:,.1f}"

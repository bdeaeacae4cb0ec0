"""Export runs as OpenTelemetry traces in OTLP/JSON, with GenAI semantic-convention names.

One trace per run: a root ``invoke_workflow`` span for the run and a child ``invoke_agent`` span
per task (retries become span events). Ids are derived from run and task ids, so exporting the
same log twice gives the same trace. Load the file with any OTLP/JSON reader (Phoenix, MLflow,
an OpenTelemetry collector's ``otlpjsonfile`` receiver).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import pandas as pd

from .frames import tasks_frame
from .pricing import Pricing, as_pricing

SPAN_KIND_INTERNAL = 1
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2
_ERROR_STATUSES = {"failed", "timeout", "rejected", "unfinished"}


def to_otel(events: pd.DataFrame, *, pricing: Pricing | str | None = None,
            service_name: str = "codex-flow") -> dict[str, Any]:
    """An OTLP/JSON ``{"resourceSpans": [...]}`` document for every run in ``events``."""
    from .. import __version__

    table = as_pricing(pricing)
    tasks = tasks_frame(events, pricing=table)
    spans: list[dict[str, Any]] = []
    ev_runs = events[events["run"].notna()]
    retries = events[events["kind"] == "task_retry"]
    for run_id, run_events in ev_runs.groupby("run", observed=True, sort=False):
        run_tasks = tasks[tasks["run"] == run_id]
        spans.append(_root_span(str(run_id), run_events, run_tasks))
        root_id = _span_id(f"run:{run_id}")
        trace_id = _trace_id(str(run_id))
        run_end = run_events["ts"].max()
        run_retries = retries[retries["run"] == run_id]
        for row in run_tasks.itertuples(index=False):
            spans.append(_task_span(row, trace_id, root_id, run_end, run_retries, table))
    resource = {"attributes": _attrs({"service.name": service_name,
                                      "telemetry.sdk.name": "codexflow_nb",
                                      "telemetry.sdk.language": "python",
                                      "telemetry.sdk.version": __version__})}
    scope = {"name": "codexflow_nb.analysis", "version": __version__}
    return {"resourceSpans": [{"resource": resource,
                               "scopeSpans": [{"scope": scope, "spans": spans}]}]}


def _root_span(run_id: str, ev: pd.DataFrame, tasks: pd.DataFrame) -> dict[str, Any]:
    started = ev[ev["kind"] == "run_started"]
    complete = ev[ev["kind"] == "run_complete"]
    not_done = int((tasks["status"] != "completed").sum())
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "invoke_workflow", "gen_ai.agent.name": "codex-flow",
        "codexflow.run.id": run_id, "codexflow.run.tasks": len(tasks),
        "codexflow.run.sessions": max(1, len(started)),
        "gen_ai.usage.input_tokens": _int(tasks["tokens_in"].sum(min_count=1)),
        "gen_ai.usage.output_tokens": _int(tasks["tokens_out"].sum(min_count=1)),
        "codexflow.cost_usd": _float(tasks["cost"].sum(min_count=1)),
    }
    if len(started) and pd.notna(started["runtime"].iloc[-1]):
        attrs["codexflow.runtime"] = str(started["runtime"].iloc[-1])
    ok = bool(complete["ok"].iloc[-1]) if len(complete) and pd.notna(complete["ok"].iloc[-1]) else None
    if ok is None:
        ok = not_done == 0 and len(complete) > 0
    status = ({"code": STATUS_OK} if ok else
              {"code": STATUS_ERROR, "message": f"{not_done} of {len(tasks)} task(s) did not complete"
               + ("" if len(complete) else "; the run has no run_complete event")})
    return {"traceId": _trace_id(run_id), "spanId": _span_id(f"run:{run_id}"),
            "name": "invoke_workflow codex-flow", "kind": SPAN_KIND_INTERNAL,
            "startTimeUnixNano": _nanos(ev["ts"].min()), "endTimeUnixNano": _nanos(ev["ts"].max()),
            "attributes": _attrs(attrs), "status": status}


def _task_span(row: Any, trace_id: str, parent: str, run_end: pd.Timestamp,
               retries: pd.DataFrame, pricing: Pricing) -> dict[str, Any]:
    start = next((t for t in (row.started, row.queued, row.finished) if pd.notna(t)), run_end)
    end = row.finished if pd.notna(row.finished) else run_end
    model = str(row.model) if pd.notna(row.model) else None
    price = pricing.lookup(model)
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": str(row.alias),
        "gen_ai.agent.id": str(row.agent), "gen_ai.response.model": model,
        "gen_ai.provider.name": price.provider if price else None,
        "gen_ai.usage.input_tokens": _int(row.tokens_in),
        "gen_ai.usage.output_tokens": _int(row.tokens_out),
        "codexflow.task.id": str(row.task_id), "codexflow.task.key": str(row.key),
        "codexflow.task.status": str(row.status), "codexflow.task.attempts": _int(row.attempts),
        "codexflow.task.phase": _int(row.phase), "codexflow.task.queued_ms": _float(row.queued_ms),
        "codexflow.task.depends_on": str(row.depends_on) if isinstance(row.depends_on, str) else None,
        "codexflow.cost_usd": _float(row.cost),
    }
    status: dict[str, Any] = {"code": STATUS_OK} if row.status == "completed" else {"code": STATUS_UNSET}
    if row.status in _ERROR_STATUSES:
        attrs["error.type"] = str(row.error_type) if pd.notna(row.error_type) else str(row.status)
        message = row.error_message if isinstance(row.error_message, str) else str(row.status)
        status = {"code": STATUS_ERROR, "message": message}
    span_events = [
        {"timeUnixNano": _nanos(r.ts), "name": "retry",
         "attributes": _attrs({"codexflow.retry.attempt": _int(r.attempt),
                               "error.type": str(r.error_type) if pd.notna(r.error_type) else None,
                               "codexflow.retry.delay_ms": _float(r.delay_ms)})}
        for r in retries[retries["task_id"] == row.task_id].itertuples(index=False)]
    span = {"traceId": trace_id, "spanId": _span_id(f"task:{row.run}:{row.task_id}"),
            "parentSpanId": parent, "name": f"invoke_agent {row.alias}",
            "kind": SPAN_KIND_INTERNAL, "startTimeUnixNano": _nanos(start),
            "endTimeUnixNano": _nanos(max(end, start)), "attributes": _attrs(attrs),
            "status": status}
    if span_events:
        span["events"] = span_events
    return span


def _trace_id(run_id: str) -> str:
    return hashlib.blake2b(f"trace:{run_id}".encode(), digest_size=16).hexdigest()


def _span_id(name: str) -> str:
    return hashlib.blake2b(name.encode(), digest_size=8).hexdigest()


def _nanos(ts: pd.Timestamp) -> str:
    return str(int(pd.Timestamp(ts).value))  # OTLP/JSON carries 64-bit integers as strings


def _int(value: Any) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def _float(value: Any) -> float | None:
    return None if value is None or pd.isna(value) or math.isinf(float(value)) else float(value)


def _attrs(values: dict[str, Any]) -> list[dict[str, Any]]:
    """OTLP ``KeyValue`` list; ``None`` values are left out."""
    out = []
    for key, v in values.items():
        if v is None:
            continue
        if isinstance(v, bool):
            value: dict[str, Any] = {"boolValue": v}
        elif isinstance(v, int):
            value = {"intValue": str(v)}
        elif isinstance(v, float):
            value = {"doubleValue": v}
        else:
            value = {"stringValue": str(v)}
        out.append({"key": key, "value": value})
    return out

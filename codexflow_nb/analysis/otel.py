"""Export runs as OpenTelemetry traces in OTLP/JSON, with GenAI semantic-convention names.

One trace per run: a root ``invoke_workflow`` span for the run and a child ``invoke_agent`` span
per task (retries become span events). Ids are derived from run and task ids, so exporting the
same log twice gives the same trace. Load the file with any OTLP/JSON reader (Phoenix, MLflow,
an OpenTelemetry collector's ``otlpjsonfile`` receiver).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
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
    ev = events[events["run"].notna()]
    runs = _runs(ev, tasks)
    retries = _retries(events[events["kind"] == "task_retry"])
    t = _columns(tasks, ["run", "task_id", "key", "alias", "agent", "status", "model", "phase",
                         "attempts", "tokens_in", "tokens_out", "queued_ms", "depends_on", "cost",
                         "error_type", "error_message"])
    start = _nanos(tasks["started"].fillna(tasks["queued"]).fillna(tasks["finished"]))
    end = _nanos(tasks["finished"])
    providers = {m: (p.provider if (p := table.lookup(m)) else None) for m in set(t["model"])}
    children: dict[str, list[dict[str, Any]]] = {}
    for i in range(len(tasks)):
        run_id = t["run"][i]
        run_end = runs[run_id]["end"]
        s = start[i] if start[i] is not None else run_end
        e = end[i] if end[i] is not None else run_end
        status_name = t["status"][i]
        attrs = {
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": t["alias"][i],
            "gen_ai.agent.id": t["agent"][i], "gen_ai.response.model": t["model"][i],
            "gen_ai.provider.name": providers[t["model"][i]],
            "gen_ai.usage.input_tokens": t["tokens_in"][i],
            "gen_ai.usage.output_tokens": t["tokens_out"][i],
            "codexflow.task.id": t["task_id"][i], "codexflow.task.key": t["key"][i],
            "codexflow.task.status": status_name, "codexflow.task.attempts": t["attempts"][i],
            "codexflow.task.phase": t["phase"][i], "codexflow.task.queued_ms": t["queued_ms"][i],
            "codexflow.task.depends_on": t["depends_on"][i], "codexflow.cost_usd": t["cost"][i],
        }
        status: dict[str, Any] = {"code": STATUS_OK if status_name == "completed" else STATUS_UNSET}
        if status_name in _ERROR_STATUSES:
            attrs["error.type"] = t["error_type"][i] or status_name
            status = {"code": STATUS_ERROR, "message": t["error_message"][i] or status_name}
        span = {"traceId": runs[run_id]["trace"], "spanId": _span_id(f"task:{run_id}:{t['task_id'][i]}"),
                "parentSpanId": runs[run_id]["span"], "name": f"invoke_agent {t['alias'][i]}",
                "kind": SPAN_KIND_INTERNAL, "startTimeUnixNano": str(s),
                "endTimeUnixNano": str(max(e, s)), "attributes": _attrs(attrs), "status": status}
        events_of = retries.get((run_id, t["task_id"][i]))
        if events_of:
            span["events"] = events_of
        children.setdefault(run_id, []).append(span)
    spans: list[dict[str, Any]] = []
    for run_id, info in runs.items():
        spans.append(info["root"])
        spans.extend(children.get(run_id, []))
    resource = {"attributes": _attrs({"service.name": service_name,
                                      "telemetry.sdk.name": "codexflow_nb",
                                      "telemetry.sdk.language": "python",
                                      "telemetry.sdk.version": __version__})}
    scope = {"name": "codexflow_nb.analysis", "version": __version__}
    return {"resourceSpans": [{"resource": resource,
                               "scopeSpans": [{"scope": scope, "spans": spans}]}]}


def _runs(ev: pd.DataFrame, tasks: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Root span and ids per run, in order of first appearance."""
    run_key = ev["run"].astype(str)
    span = ev.groupby(run_key, sort=False)["ts"].agg(["min", "max"])
    starts = ev[ev["kind"] == "run_started"]
    runtime = starts.groupby(starts["run"].astype(str))["runtime"].last()
    sessions = starts.groupby(starts["run"].astype(str)).size()
    done = ev[ev["kind"] == "run_complete"]
    ok = done.groupby(done["run"].astype(str))["ok"].last()
    tg = tasks.groupby(tasks["run"].astype(str))
    per = pd.DataFrame({"tasks": tg.size(), "not_done": tg["status"].agg(lambda s: int((s != "completed").sum())),
                        "tokens_in": tg["tokens_in"].sum(min_count=1),
                        "tokens_out": tg["tokens_out"].sum(min_count=1),
                        "cost": tg["cost"].sum(min_count=1)})
    out: dict[str, dict[str, Any]] = {}
    first, last = _nanos(span["min"]), _nanos(span["max"])
    for i, run_id in enumerate(span.index):
        row = per.loc[run_id] if run_id in per.index else None
        n_tasks = int(row["tasks"]) if row is not None else 0
        not_done = int(row["not_done"]) if row is not None else 0
        attrs = {"gen_ai.operation.name": "invoke_workflow", "gen_ai.agent.name": "codex-flow",
                 "codexflow.run.id": run_id, "codexflow.run.tasks": n_tasks,
                 "codexflow.run.sessions": max(1, int(sessions.get(run_id, 0))),
                 "codexflow.runtime": _py(runtime.get(run_id)),
                 "gen_ai.usage.input_tokens": _py(row["tokens_in"]) if row is not None else None,
                 "gen_ai.usage.output_tokens": _py(row["tokens_out"]) if row is not None else None,
                 "codexflow.cost_usd": _py(row["cost"]) if row is not None else None}
        finished = _py(ok.get(run_id))
        if finished is None:
            finished = not_done == 0 and run_id in ok.index
        status = ({"code": STATUS_OK} if finished else
                  {"code": STATUS_ERROR, "message": f"{not_done} of {n_tasks} task(s) did not complete"
                   + ("" if run_id in ok.index else "; the run has no run_complete event")})
        trace, root = _trace_id(run_id), _span_id(f"run:{run_id}")
        out[run_id] = {"trace": trace, "span": root, "end": last[i], "root": {
            "traceId": trace, "spanId": root, "name": "invoke_workflow codex-flow",
            "kind": SPAN_KIND_INTERNAL, "startTimeUnixNano": str(first[i]),
            "endTimeUnixNano": str(last[i]), "attributes": _attrs(attrs), "status": status}}
    return out


def _retries(retries: pd.DataFrame) -> dict[tuple[str, str], list[dict[str, Any]]]:
    cols = _columns(retries, ["run", "task_id", "attempt", "error_type", "delay_ms"])
    times = _nanos(retries["ts"])
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for i in range(len(retries)):
        out.setdefault((cols["run"][i], cols["task_id"][i]), []).append({
            "timeUnixNano": str(times[i]), "name": "retry",
            "attributes": _attrs({"codexflow.retry.attempt": cols["attempt"][i],
                                  "error.type": cols["error_type"][i],
                                  "codexflow.retry.delay_ms": cols["delay_ms"][i]})})
    return out


def _columns(frame: pd.DataFrame, names: list[str]) -> dict[str, list[Any]]:
    """Plain Python lists (None for missing) for a fast row loop."""
    return {n: [_py(v) for v in frame[n].astype(object).tolist()] for n in names}


def _py(value: Any) -> Any:
    """A JSON-ready Python value: None for NA/NaN, int/float/str/bool otherwise."""
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return str(value)


def _nanos(times: pd.Series) -> list[int | None]:
    """Unix nanoseconds (None for NaT); OTLP/JSON carries them as strings."""
    values = pd.to_datetime(times, utc=True).dt.as_unit("ns")
    ints = values.to_numpy(dtype="datetime64[ns]").view("int64").tolist()
    return [None if isna else v for v, isna in zip(ints, values.isna().tolist(), strict=True)]


def _trace_id(run_id: str) -> str:
    return hashlib.blake2b(f"trace:{run_id}".encode(), digest_size=16).hexdigest()


def _span_id(name: str) -> str:
    return hashlib.blake2b(name.encode(), digest_size=8).hexdigest()


def _attrs(values: dict[str, Any]) -> list[dict[str, Any]]:
    """OTLP ``KeyValue`` list; ``None`` values are left out."""
    out = []
    for key, v in values.items():
        if v is None:
            continue
        kind = type(v)
        if kind is bool:
            value: dict[str, Any] = {"boolValue": v}
        elif kind is int:
            value = {"intValue": str(v)}
        elif kind is float:
            value = {"doubleValue": v}
        else:
            value = {"stringValue": str(v)}
        out.append({"key": key, "value": value})
    return out

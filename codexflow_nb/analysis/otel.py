"""Export runs as OpenTelemetry traces, with GenAI semantic-convention names.

One trace per run: a root ``invoke_workflow`` span for the run and a child ``invoke_agent`` span
per task (retries become span events). Ids are derived from run and task ids, so exporting the
same log twice (or live, then from the log) gives the same trace.

- ``to_otel(events)``: an OTLP/JSON document (``codex-flow report --otlp-json``).
- ``to_otlp_proto(events)``: the same as an ``ExportTraceServiceRequest`` message of the
  official ``opentelemetry-proto`` package (``report --otlp-proto``), which OTLP/HTTP receivers
  (Phoenix, MLflow, any OpenTelemetry collector) accept as ``application/x-protobuf``.
- ``export_otlp(doc, url)``: POST it to ``{url}/v1/traces`` (``report --otlp-endpoint``), with
  the headers of ``OTEL_EXPORTER_OTLP_HEADERS`` / ``OTEL_EXPORTER_OTLP_TRACES_HEADERS``.
- ``otel_live.OtlpExporter``: the same spans, sent while a run goes on.

``opentelemetry-proto`` is imported only by the protobuf functions (extra ``otel``).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import numpy as np
import pandas as pd

from ..errors import CodexFlowError, ConfigError
from .frames import tasks_frame
from .pricing import Pricing, as_pricing

SPAN_KIND_INTERNAL, SPAN_KIND_CLIENT = 1, 3
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2
_ERROR_STATUSES = {"failed", "timeout", "rejected", "unfinished"}
#: Runtimes whose agents run inside this process (their task spans are INTERNAL, others CLIENT).
_IN_PROCESS_RUNTIMES = {"stub"}
PIP_HINT = "pip install 'codexflow-nb[otel]'"
#: Spans per OTLP request: collectors cap request bodies (4 MiB for gRPC, often more for HTTP).
MAX_SPANS_PER_REQUEST = 1000


# -- spans -----------------------------------------------------------------------------------
def to_otel(events: pd.DataFrame, *, pricing: Pricing | str | None = None,
            service_name: str = "codex-flow") -> dict[str, Any]:
    """An OTLP/JSON ``{"resourceSpans": [...]}`` document for every run in ``events``."""
    table = as_pricing(pricing)
    tasks = tasks_frame(events, pricing=table)
    ev = events[events["run"].notna()]
    starts = ev[ev["kind"] == "run_started"]
    runtimes = {str(k): _py(v) for k, v in starts.groupby(
        starts["run"].astype(str), observed=True)["runtime"].last().items()}
    retries = _retries(events[events["kind"] == "task_retry"])
    tele = events[events["kind"] == "telemetry"]
    replied = {(str(r), str(t)): m for r, t, m in zip(tele["run"].astype(object), tele["task_id"],
                                                        tele["model"].astype(object), strict=True)
               if _py(m) is not None}
    t = _columns(tasks, ["run", "task_id", "key", "alias", "agent", "status", "model", "phase",
                         "attempts", "tokens_in", "tokens_out", "cached_tokens_in",
                         "cache_write_tokens_in", "reasoning_tokens", "queued_ms", "depends_on", "cost", "error_type",
                         "error_message", "agent_cli", "steps", "files_changed", "insertions",
                         "deletions"])
    start = _nanos(tasks["started"].fillna(tasks["queued"]).fillna(tasks["finished"]))
    end = _nanos(tasks["finished"])
    providers = {m: (p.provider if (p := table.lookup(m)) else None) for m in set(t["model"])}
    bounds = _run_bounds(ev)
    children: dict[str, list[dict[str, Any]]] = {}
    totals: dict[str, RunTotals] = {}
    for i in range(len(tasks)):
        run_id = t["run"][i]
        run_end = bounds[run_id][1]
        rec = {name: t[name][i] for name in t}
        rec["depends_on"] = [k for k in (rec["depends_on"] or "").split(",") if k]
        rec["response_model"] = replied.get((run_id, rec["task_id"]), rec["model"])
        rec["provider"] = providers[rec["model"]]
        rec["start"] = start[i] if start[i] is not None else run_end
        rec["end"] = end[i] if end[i] is not None else run_end
        rec["retries"] = retries.get((run_id, rec["task_id"]))
        rec["runtime"] = runtimes.get(run_id)
        children.setdefault(run_id, []).append(task_span(rec))
        totals.setdefault(run_id, RunTotals()).add(rec)
    done = ev[ev["kind"] == "run_complete"]
    ok = done.groupby(done["run"].astype(str), observed=True)["ok"].last()
    sessions = starts.groupby(starts["run"].astype(str), observed=True).size()
    spans: list[dict[str, Any]] = []
    for run_id, (first, last) in bounds.items():
        spans.append(run_span(run_id, first, last, totals.get(run_id, RunTotals()),
                              ok=_py(ok.get(run_id)), completed=run_id in ok.index,
                              runtime=runtimes.get(run_id),
                              sessions=max(1, int(sessions.get(run_id, 0)))))
        spans.extend(children.get(run_id, []))
    return otlp_document(spans, service_name)


def to_otlp_proto(events: pd.DataFrame, *, pricing: Pricing | str | None = None,
                  service_name: str = "codex-flow") -> Any:
    """``to_otel`` as an ``opentelemetry.proto...ExportTraceServiceRequest`` message
    (``.SerializeToString()`` gives the OTLP/protobuf body). Needs ``opentelemetry-proto``."""
    proto_modules()  # a missing package fails before the work
    return to_proto(to_otel(events, pricing=pricing, service_name=service_name))


def otlp_document(spans: list[dict[str, Any]], service_name: str = "codex-flow") -> dict[str, Any]:
    """Spans (OTLP/JSON dicts) in one resource and scope."""
    from .. import __version__

    resource = {"attributes": _attrs({"service.name": service_name,
                                      "telemetry.sdk.name": "codexflow_nb",
                                      "telemetry.sdk.language": "python",
                                      "telemetry.sdk.version": __version__})}
    scope = {"name": "codexflow_nb.analysis", "version": __version__}
    return {"resourceSpans": [{"resource": resource,
                               "scopeSpans": [{"scope": scope, "spans": spans}]}]}


def task_span(rec: Mapping[str, Any]) -> dict[str, Any]:
    """The ``invoke_agent <alias>`` span of one task record (plain Python values: see
    ``to_otel`` and ``otel_live``); shared by the file export and the live exporter."""
    run_id, status_name = rec["run"], rec["status"]
    tokens_in, tokens_out = _int(rec.get("tokens_in")), _int(rec.get("tokens_out"))
    cached, reasoning = _int(rec.get("cached_tokens_in")), _int(rec.get("reasoning_tokens"))
    written = _int(rec.get("cache_write_tokens_in"))
    total = tokens_in + tokens_out if tokens_in is not None and tokens_out is not None else None
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": rec["alias"],
        "gen_ai.agent.id": rec["agent"], "gen_ai.request.model": rec.get("model"),
        "gen_ai.response.model": rec.get("response_model"),
        "gen_ai.provider.name": rec.get("provider"),
        "gen_ai.usage.input_tokens": tokens_in, "gen_ai.usage.output_tokens": tokens_out,
        "gen_ai.usage.cache_read.input_tokens": cached,
        "gen_ai.usage.cache_creation.input_tokens": written,
        "gen_ai.usage.reasoning.output_tokens": reasoning,
        # OpenInference names for Arize Phoenix: it counts tokens and cost on LLM spans only
        "openinference.span.kind": "LLM", "llm.model_name": rec.get("model"),
        "llm.token_count.prompt": tokens_in, "llm.token_count.completion": tokens_out,
        "llm.token_count.total": total,
        "llm.token_count.prompt_details.cache_read": cached,
        "llm.token_count.prompt_details.cache_write": written,
        "llm.token_count.completion_details.reasoning": reasoning,
        "codexflow.run.id": run_id,
        "codexflow.task.id": rec["task_id"], "codexflow.task.key": rec.get("key"),
        "codexflow.task.status": status_name, "codexflow.task.attempts": _int(rec.get("attempts")),
        "codexflow.task.phase": _int(rec.get("phase")),
        "codexflow.task.queued_ms": _float(rec.get("queued_ms")),
        "codexflow.task.depends_on": list(rec.get("depends_on") or []) or None,
        "codexflow.cost_usd": _float(rec.get("cost")),
        "codexflow.agent.cli": rec.get("agent_cli"), "codexflow.task.steps": _int(rec.get("steps")),
        "codexflow.task.files_changed": _int(rec.get("files_changed")),
        "codexflow.task.insertions": _int(rec.get("insertions")),
        "codexflow.task.deletions": _int(rec.get("deletions")),
    }
    status: dict[str, Any] = {"code": STATUS_OK if status_name == "completed" else STATUS_UNSET}
    if status_name in _ERROR_STATUSES:
        attrs["error.type"] = rec.get("error_type") or status_name
        status = {"code": STATUS_ERROR, "message": rec.get("error_message") or status_name}
    start, end = int(rec["start"]), int(rec["end"])
    span = {"traceId": trace_id(run_id), "spanId": span_id(f"task:{run_id}:{rec['task_id']}"),
            "parentSpanId": span_id(f"run:{run_id}"), "name": f"invoke_agent {rec['alias']}",
            "kind": SPAN_KIND_INTERNAL if rec.get("runtime") in _IN_PROCESS_RUNTIMES
            else SPAN_KIND_CLIENT,
            "startTimeUnixNano": str(start), "endTimeUnixNano": str(max(start, end)),
            "attributes": _attrs(attrs), "status": status}
    if rec.get("retries"):
        span["events"] = list(rec["retries"])
    return span


@dataclass
class RunTotals:
    """What a run span sums over its tasks."""

    tasks: int = 0
    not_done: int = 0
    tokens_in: int | None = None
    tokens_out: int | None = None
    cached_tokens_in: int | None = None
    cache_write_tokens_in: int | None = None
    reasoning_tokens: int | None = None
    cost: float | None = None

    def add(self, rec: Mapping[str, Any]) -> None:
        self.tasks += 1
        self.not_done += rec["status"] != "completed"
        for name in ("tokens_in", "tokens_out", "cached_tokens_in", "cache_write_tokens_in",
                     "reasoning_tokens"):
            value = _int(rec.get(name))
            if value is not None:
                setattr(self, name, (getattr(self, name) or 0) + value)
        cost = _float(rec.get("cost"))
        if cost is not None:
            self.cost = (self.cost or 0.0) + cost


def run_span(run_id: str, start: int, end: int, totals: RunTotals, *, ok: bool | None,
             completed: bool, runtime: str | None = None, sessions: int = 1) -> dict[str, Any]:
    """The root ``invoke_workflow codex-flow`` span of a run. ``ok``: ``run_complete``'s
    (None: judge by the tasks); ``completed``: the run has a ``run_complete`` event."""
    attrs = {"gen_ai.operation.name": "invoke_workflow", "gen_ai.agent.name": "codex-flow",
             "openinference.span.kind": "CHAIN",
             "codexflow.run.id": run_id, "codexflow.run.tasks": totals.tasks,
             "codexflow.run.sessions": sessions, "codexflow.runtime": runtime,
             "gen_ai.usage.input_tokens": totals.tokens_in,
             "gen_ai.usage.output_tokens": totals.tokens_out,
             "gen_ai.usage.cache_read.input_tokens": totals.cached_tokens_in,
             "gen_ai.usage.cache_creation.input_tokens": totals.cache_write_tokens_in,
             "gen_ai.usage.reasoning.output_tokens": totals.reasoning_tokens,
             "codexflow.cost_usd": totals.cost}
    # no llm.token_count.* here: Phoenix adds the task spans' counts to the root's own
    finished = ok if ok is not None else (totals.not_done == 0 and completed)
    status = ({"code": STATUS_OK} if finished else
              {"code": STATUS_ERROR,
               "message": f"{totals.not_done} of {totals.tasks} task(s) did not complete"
               + ("" if completed else "; the run has no run_complete event")})
    return {"traceId": trace_id(run_id), "spanId": span_id(f"run:{run_id}"),
            "name": "invoke_workflow codex-flow", "kind": SPAN_KIND_INTERNAL,
            "startTimeUnixNano": str(start), "endTimeUnixNano": str(max(start, end)),
            "attributes": _attrs(attrs), "status": status}


def retry_event(ts_ns: int, attempt: Any, error_type: Any, delay_ms: Any) -> dict[str, Any]:
    """A ``retry`` span event (one per ``task_retry``)."""
    return {"timeUnixNano": str(ts_ns), "name": "retry",
            "attributes": _attrs({"codexflow.retry.attempt": _int(attempt),
                                  "error.type": error_type,
                                  "codexflow.retry.delay_ms": _float(delay_ms)})}


def _run_bounds(ev: pd.DataFrame) -> dict[str, tuple[int, int]]:
    """(first, last) event time of each run, in order of first appearance."""
    span = ev.groupby(ev["run"].astype(str), sort=False)["ts"].agg(["min", "max"])
    first, last = _nanos(span["min"]), _nanos(span["max"])
    return {run_id: (first[i], last[i]) for i, run_id in enumerate(span.index)}


def _retries(retries: pd.DataFrame) -> dict[tuple[str, str], list[dict[str, Any]]]:
    cols = _columns(retries, ["run", "task_id", "attempt", "error_type", "delay_ms"])
    times = _nanos(retries["ts"])
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for i in range(len(retries)):
        out.setdefault((cols["run"][i], cols["task_id"][i]), []).append(
            retry_event(times[i], cols["attempt"][i], cols["error_type"][i], cols["delay_ms"][i]))
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


def _int(value: Any) -> int | None:
    """A token count or other count as an ``int`` (OTLP ``intValue``), None when unknown."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number == number and abs(number) != float("inf") else None


def _float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None


def _nanos(times: pd.Series) -> list[int | None]:
    """Unix nanoseconds (None for NaT); OTLP/JSON carries them as strings."""
    values = pd.to_datetime(times, utc=True).dt.as_unit("ns")
    ints = values.to_numpy(dtype="datetime64[ns]").view("int64").tolist()
    return [None if isna else v for v, isna in zip(ints, values.isna().tolist(), strict=True)]


def trace_id(run_id: str) -> str:
    return hashlib.blake2b(f"trace:{run_id}".encode(), digest_size=16).hexdigest()


def span_id(name: str) -> str:
    return hashlib.blake2b(name.encode(), digest_size=8).hexdigest()


def _value(v: Any) -> dict[str, Any]:
    kind = type(v)
    if kind is bool:
        return {"boolValue": v}
    if kind is int:
        return {"intValue": str(v)}
    if kind is float:
        return {"doubleValue": v}
    if kind in (list, tuple):
        return {"arrayValue": {"values": [_value(x) for x in v]}}
    return {"stringValue": str(v)}


def _attrs(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """OTLP ``KeyValue`` list; ``None`` values are left out."""
    return [{"key": key, "value": _value(v)} for key, v in values.items() if v is not None]


# -- OTLP/protobuf ---------------------------------------------------------------------------
def proto_modules() -> tuple[Any, Any, Any, Any]:
    """(trace_service_pb2, trace_pb2, common_pb2, resource_pb2) of ``opentelemetry-proto``;
    a ConfigError with the install command when it is missing."""
    try:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
        from opentelemetry.proto.common.v1 import common_pb2
        from opentelemetry.proto.resource.v1 import resource_pb2
        from opentelemetry.proto.trace.v1 import trace_pb2
    except ImportError as exc:
        raise ConfigError(f"OTLP/protobuf needs the opentelemetry-proto package: {PIP_HINT} "
                          f"({exc})") from None
    return trace_service_pb2, trace_pb2, common_pb2, resource_pb2


_PROTO: tuple[Any, Any, Any, Any] | None = None


def _modules() -> tuple[Any, Any, Any, Any]:
    """``proto_modules()``, looked up once (span by span, this is the live exporter's path)."""
    global _PROTO
    if _PROTO is None:
        _PROTO = proto_modules()
    return _PROTO


def to_proto(doc: Mapping[str, Any]) -> Any:
    """An OTLP/JSON document (``to_otel``) as an ``ExportTraceServiceRequest`` message."""
    service, _, common, _ = proto_modules()
    request = service.ExportTraceServiceRequest()
    for rs in doc.get("resourceSpans", []):
        out_rs = request.resource_spans.add()
        _fill_kv(out_rs.resource.attributes, rs.get("resource", {}).get("attributes", []))
        for ss in rs.get("scopeSpans", []):
            scope = ss.get("scope", {})
            out_rs.scope_spans.add(scope=common.InstrumentationScope(
                name=scope.get("name", ""), version=scope.get("version", "")),
                spans=[span_message(s) for s in ss.get("spans", [])])
    return request


def span_message(s: Mapping[str, Any]) -> Any:
    """One OTLP/JSON span as an ``opentelemetry.proto.trace.v1.Span`` message (built in
    place: ``add()`` and field sets are about 3x faster than nested constructors)."""
    trace = _modules()[1]
    st = s.get("status") or {}
    span = trace.Span(
        trace_id=bytes.fromhex(s["traceId"]), span_id=bytes.fromhex(s["spanId"]),
        parent_span_id=bytes.fromhex(s.get("parentSpanId", "")), name=s["name"],
        kind=int(s.get("kind", 0)), start_time_unix_nano=int(s["startTimeUnixNano"]),
        end_time_unix_nano=int(s["endTimeUnixNano"]))
    _fill_kv(span.attributes, s.get("attributes", []))
    for e in s.get("events", []):
        event = span.events.add(time_unix_nano=int(e["timeUnixNano"]), name=e["name"])
        _fill_kv(event.attributes, e.get("attributes", []))
    span.status.code = int(st.get("code", 0))
    if st.get("message"):
        span.status.message = st["message"]
    return span


def _fill_kv(target: Any, items: Iterable[Mapping[str, Any]]) -> None:
    add = target.add
    for a in items:
        kv = add()
        kv.key = a["key"]
        _fill_any(kv.value, a["value"])


def _fill_any(out: Any, v: Mapping[str, Any]) -> None:
    if "stringValue" in v:
        out.string_value = v["stringValue"]
    elif "intValue" in v:
        out.int_value = int(v["intValue"])
    elif "doubleValue" in v:
        out.double_value = float(v["doubleValue"])
    elif "boolValue" in v:
        out.bool_value = bool(v["boolValue"])
    elif "arrayValue" in v:
        values = out.array_value.values
        out.array_value.SetInParent()
        for x in v["arrayValue"].get("values", []):
            _fill_any(values.add(), x)


def request_message(spans: list[Any], service_name: str = "codex-flow") -> Any:
    """An ``ExportTraceServiceRequest`` of ``Span`` messages (``span_message``), in the
    resource and scope of ``otlp_document``."""
    empty = to_proto(otlp_document([], service_name))
    empty.resource_spans[0].scope_spans[0].spans.extend(spans)
    return empty


def split_document(doc: Mapping[str, Any], size: int = MAX_SPANS_PER_REQUEST
                   ) -> Iterator[dict[str, Any]]:
    """The document cut into documents of at most ``size`` spans (same resource and scope)."""
    for rs in doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            spans = ss.get("spans", [])
            for i in range(0, max(len(spans), 1), size):
                part = spans[i:i + size]
                if part:
                    yield {"resourceSpans": [{"resource": rs.get("resource", {}), "scopeSpans": [
                        {"scope": ss.get("scope", {}), "spans": part}]}]}


# -- OTLP/HTTP -------------------------------------------------------------------------------
TRACES_PATH = "/v1/traces"
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_HEADER_VARS = ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS")
DEFAULT_TIMEOUT_S = 10.0


class OtlpExportError(CodexFlowError):
    """A collector did not take the spans: a non-2xx reply (``status``), or it could not be
    reached. ``retryable``: worth trying again later (connection failures, 429, 502-504)."""

    def __init__(self, message: str, *, retryable: bool = False,
                 status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status

    @property
    def busy(self) -> bool:
        """The receiver is there and asked to come back (429, 502, 503, 504)."""
        return self.status in (429, 502, 503, 504)


def traces_url(url: str, what: str = "--otlp-endpoint") -> str:
    """``{url}/v1/traces`` (kept as is when it already ends so); ConfigError for a URL that is
    not ``http(s)://HOST[:PORT][/PATH]``."""
    text = (url or "").strip()
    try:
        parts = urlsplit(text)
        port = parts.port  # raises for a port outside 0..65535
    except ValueError as exc:
        raise ConfigError(f"{what}: not a valid URL {text!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{what}: expected http://HOST[:PORT][/PATH] or https://..., got {text!r}")
    if port == 0:
        raise ConfigError(f"{what}: port 0 cannot be connected to: {text!r}")
    if parts.username or parts.password:
        raise ConfigError(f"{what}: put credentials in OTEL_EXPORTER_OTLP_HEADERS, not in the URL")
    path = parts.path.rstrip("/")
    if not path.endswith(TRACES_PATH):
        path += TRACES_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def env_endpoint(environ: Mapping[str, str] | None = None) -> str | None:
    """The endpoint the OpenTelemetry environment names: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``
    (as is), else ``OTEL_EXPORTER_OTLP_ENDPOINT`` (+ ``/v1/traces``)."""
    env = os.environ if environ is None else environ
    return (env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
            or None)


def otlp_headers(extra: Mapping[str, str] | None = None,
                 environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Request headers from ``OTEL_EXPORTER_OTLP_HEADERS``, then
    ``OTEL_EXPORTER_OTLP_TRACES_HEADERS`` (it wins for a name in both), then ``extra``: comma-
    separated ``key=value`` pairs, URL-decoded (as the OpenTelemetry specification says).
    ConfigError for a malformed entry; values are never echoed (they are often secrets)."""
    env = os.environ if environ is None else environ
    out: dict[str, str] = {}

    def put(name: str, value: str, where: str) -> None:
        if not _TOKEN.match(name):
            raise ConfigError(f"{where}: {name!r} is not a valid HTTP header name")
        if any(c in value for c in "\r\n\0"):
            raise ConfigError(f"{where}: the value of header {name!r} has a line break or NUL")
        for old in [k for k in out if k.lower() == name.lower()]:
            del out[old]
        out[name] = value

    for var in _HEADER_VARS:
        for n, entry in enumerate(env.get(var, "").split(","), 1):
            if not entry.strip():
                continue
            key, sep, value = entry.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"${var}: entry {n} is not key=value (expected "
                                  "key1=value1,key2=value2, values URL-encoded)")
            put(unquote(key).strip(), unquote(value).strip(), f"${var}")
    for key, value in (extra or {}).items():
        put(str(key), str(value), "headers")
    return out


def otlp_timeout(environ: Mapping[str, str] | None = None) -> float:
    """Seconds per request: ``OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`` / ``OTEL_EXPORTER_OTLP_TIMEOUT``
    (milliseconds, as the specification says), else 10 s."""
    env = os.environ if environ is None else environ
    for var in ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"):
        text = env.get(var, "").strip()
        if text:
            try:
                ms = float(text)
            except ValueError:
                raise ConfigError(f"${var}: expected milliseconds, got {text!r}") from None
            if not 0 < ms < 3_600_000:
                raise ConfigError(f"${var}: expected milliseconds between 1 and 3600000, "
                                  f"got {text!r}")
            return ms / 1000
    return DEFAULT_TIMEOUT_S


def otlp_compression(environ: Mapping[str, str] | None = None) -> str | None:
    """``gzip`` or None, from ``OTEL_EXPORTER_OTLP_TRACES_COMPRESSION`` /
    ``OTEL_EXPORTER_OTLP_COMPRESSION``."""
    env = os.environ if environ is None else environ
    for var in ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION"):
        text = env.get(var, "").strip().lower()
        if text:
            if text not in ("gzip", "none"):
                raise ConfigError(f"${var}: expected gzip or none, got {text!r}")
            return None if text == "none" else "gzip"
    return None


@dataclass
class Sender:
    """POSTs OTLP/protobuf bodies to one traces URL with the standard library (no global state:
    its own opener; ``HTTPS_PROXY``/``NO_PROXY`` are honoured as urllib does)."""

    url: str
    headers: dict[str, str]
    timeout: float = DEFAULT_TIMEOUT_S
    compression: str | None = None

    @classmethod
    def from_env(cls, url: str, headers: Mapping[str, str] | None = None,
                 timeout: float | None = None, what: str = "--otlp-endpoint") -> Sender:
        return cls(traces_url(url, what), otlp_headers(headers),
                   otlp_timeout() if timeout is None else timeout, otlp_compression())

    def __post_init__(self) -> None:
        self._opener = urllib.request.build_opener()

    def send(self, message: Any) -> None:
        """Send one ``ExportTraceServiceRequest``; OtlpExportError when the receiver did not
        take it all (an error reply, no reply, or spans rejected in a partial success)."""
        body = message.SerializeToString()
        headers = {"User-Agent": "codexflow_nb", **self.headers,
                   "Content-Type": "application/x-protobuf"}
        if self.compression == "gzip":
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.timeout) as reply:
                data = reply.read()
                status = reply.status
        except urllib.error.HTTPError as exc:
            detail = _error_detail(exc)
            hint = (" (MLflow: set OTEL_EXPORTER_OTLP_TRACES_HEADERS=x-mlflow-experiment-id=ID)"
                    if "x-mlflow-experiment-id" in detail.lower() else _hint(exc.code))
            raise OtlpExportError(
                f"HTTP {exc.code} {exc.reason} from {self.url}" + (f": {detail}" if detail else "")
                + hint, retryable=exc.code in (429, 502, 503, 504),
                status=exc.code) from None
        except urllib.error.URLError as exc:
            raise OtlpExportError(f"cannot reach {self.url} ({_reason(exc.reason)})",
                                  retryable=True) from None
        except TimeoutError:
            raise OtlpExportError(f"no reply from {self.url} within {self.timeout:g} s",
                                  retryable=True) from None
        except (OSError, ValueError) as exc:  # a connection reset mid-reply, a bad status line
            raise OtlpExportError(f"cannot reach {self.url} ({_reason(exc)})",
                                  retryable=True) from None
        if not 200 <= status < 300:
            raise OtlpExportError(f"HTTP {status} from {self.url}", status=status)
        _check_partial(data, self.url)


def _check_partial(data: bytes, url: str) -> None:
    """OtlpExportError when an ``ExportTraceServiceResponse`` rejects spans."""
    if not data:
        return
    service = proto_modules()[0]
    try:
        reply = service.ExportTraceServiceResponse.FromString(data)
    except Exception:  # noqa: BLE001 - a receiver that answers with JSON or text
        return
    partial = reply.partial_success
    if partial.rejected_spans:
        raise OtlpExportError(f"{url} rejected {partial.rejected_spans} span(s)"
                              + (f": {partial.error_message}" if partial.error_message else ""))


def _reason(reason: Any) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, socket.gaierror):
        return f"unknown host: {reason.strerror or reason}"
    if isinstance(reason, ssl.SSLError):
        return f"TLS: {reason.reason or reason}"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower() if reason.strerror[:1].isupper() else reason.strerror
    return str(reason) or type(reason).__name__


def _hint(code: int) -> str:
    return {401: " (check the headers in $OTEL_EXPORTER_OTLP_HEADERS)",
            403: " (check the headers in $OTEL_EXPORTER_OTLP_HEADERS)",
            404: " (is this the OTLP/HTTP endpoint? Phoenix: http://HOST:6006/v1/traces, "
                 "a collector: http://HOST:4318/v1/traces)",
            415: " (the receiver does not take OTLP/protobuf over HTTP)"}.get(code, "")


def _error_detail(exc: urllib.error.HTTPError) -> str:
    """The reason in an error reply: a ``google.rpc.Status`` message (protobuf), else text."""
    try:
        data = exc.read(64 * 1024)
    except Exception:  # noqa: BLE001
        return ""
    if not data:
        return ""
    kind = (exc.headers.get("Content-Type") or "").lower() if exc.headers else ""
    text = _status_message(data) if "protobuf" in kind else None
    if text is None:
        text = data.decode("utf-8", "replace")
    flat = " ".join(text.split())
    return flat if len(flat) <= 200 else flat[:199] + "…"


def _status_message(data: bytes) -> str | None:
    """Field 2 (``message``) of a ``google.rpc.Status``, read off the wire format."""
    i = 0

    def varint() -> int:
        nonlocal i
        shift = value = 0
        while True:
            byte = data[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    try:
        while i < len(data):
            key = varint()
            field, wire = key >> 3, key & 7
            if wire == 0:
                varint()
            elif wire == 2:
                size = varint()
                chunk, i = data[i:i + size], i + size
                if field == 2:
                    return chunk.decode("utf-8", "replace")
            elif wire == 5:
                i += 4
            elif wire == 1:
                i += 8
            else:
                return None
    except IndexError:
        return None
    return None


def export_otlp(doc: Mapping[str, Any], url: str, *, headers: Mapping[str, str] | None = None,
                timeout: float | None = None) -> tuple[int, int]:
    """POST an OTLP/JSON document (``to_otel``) as OTLP/protobuf to ``{url}/v1/traces``, in
    requests of at most ``MAX_SPANS_PER_REQUEST`` spans. Returns (spans, requests).
    ConfigError for a bad URL or headers; OtlpExportError when the receiver does not take it."""
    sender = Sender.from_env(url, headers, timeout)
    proto_modules()
    spans = requests = 0
    for part in split_document(doc, MAX_SPANS_PER_REQUEST):
        sender.send(to_proto(part))
        spans += len(part["resourceSpans"][0]["scopeSpans"][0]["spans"])
        requests += 1
    return spans, requests

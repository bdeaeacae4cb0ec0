"""OpenTelemetry that collectors accept: OTLP/protobuf files, the push to an OTLP/HTTP receiver
(``report --otlp-endpoint``) and the live exporter (``run --otlp-endpoint``, ``OtlpExporter``),
checked against a local receiver that decodes every request with ``opentelemetry-proto``."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from servers import ServerThread, closed_port
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from codexflow_nb import ConfigError, prepare_run, run_async
from codexflow_nb.analysis import load_events, to_otel
from codexflow_nb.analysis import otel as otel_mod
from codexflow_nb.analysis.otel import (
    export_otlp,
    otlp_headers,
    to_otlp_proto,
    to_proto,
    traces_url,
)
from codexflow_nb.analysis.otel_live import OtlpExporter
from codexflow_nb.cli import main
from codexflow_nb.runtimes import Reply, RuntimeFailure, StubRuntime

pb = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")
trace_pb2 = pytest.importorskip("opentelemetry.proto.trace.v1.trace_pb2")

SPAN_KIND = trace_pb2.Span.SpanKind
STATUS = trace_pb2.Status.StatusCode


# -- the receiver ----------------------------------------------------------------------------
@dataclass
class Received:
    at: float  # time.time() when the request arrived
    path: str
    headers: dict[str, str]
    message: Any  # ExportTraceServiceRequest


class Receiver:
    """An OTLP/HTTP receiver on 127.0.0.1: decodes each POST with
    ``ExportTraceServiceRequest.FromString`` and answers as a collector does (or as told)."""

    def __init__(self, *, status: int = 200, body: bytes | None = None,
                 content_type: str = "application/x-protobuf", delay: float = 0.0,
                 fail_first: int = 0) -> None:
        self.requests: list[Received] = []
        self.status, self.body, self.content_type = status, body, content_type
        self.delay, self.fail_first = delay, fail_first
        self.calls = 0
        self.lock = threading.Lock()
        self.server = ServerThread(Starlette(routes=[
            Route("/{path:path}", self.handle, methods=["POST"])]))

    async def handle(self, request: Request) -> Response:
        raw = await request.body()
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if request.headers.get("content-type") != "application/x-protobuf":
            return Response(f"Unsupported content type: {request.headers.get('content-type')}",
                            415, media_type="text/plain")
        if self.calls <= self.fail_first:
            return Response("busy", 503, media_type="text/plain")
        if self.status != 200:
            return Response(self.body or b"", self.status, media_type=self.content_type)
        if request.headers.get("content-encoding") == "gzip":
            raw = gzip.decompress(raw)
        message = pb.ExportTraceServiceRequest.FromString(raw)
        with self.lock:
            self.requests.append(Received(time.time(), request.url.path,
                                          dict(request.headers), message))
        reply = self.body if self.body is not None else \
            pb.ExportTraceServiceResponse().SerializeToString()
        return Response(reply, 200, media_type=self.content_type)

    @property
    def url(self) -> str:
        return self.server.url

    def __enter__(self) -> Receiver:
        self.server.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.__exit__(*exc)

    def spans(self) -> list[Any]:
        with self.lock:
            return [s for r in self.requests for rs in r.message.resource_spans
                    for ss in rs.scope_spans for s in ss.spans]

    def wait_for(self, predicate: Any, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self.spans()):
            if time.monotonic() > deadline:
                raise AssertionError(f"receiver: condition not met in {timeout} s "
                                     f"({len(self.spans())} span(s))")
            time.sleep(0.05)


def value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def attrs(span: Any) -> dict[str, Any]:
    return {kv.key: value(kv.value) for kv in span.attributes}


def kinds(span: Any) -> dict[str, str | None]:
    return {kv.key: kv.value.WhichOneof("value") for kv in span.attributes}


TOKEN_KEYS = ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens")


# -- a run with every status, retries, models and cached/reasoning tokens ----------------------
class Scripted(StubRuntime):
    """``boom`` fails, ``flaky`` fails its first attempt, ``slow`` times out; ``agent`` replies
    like a coding agent (a model, cached and reasoning tokens, changed files)."""

    def __init__(self, latency_ms: float = 30) -> None:
        super().__init__(latency_ms)

    async def run(self, call, on_chunk=None):
        if "boom" in call.task:
            raise RuntimeFailure("exploded", type="HTTPError", status=500)
        if "flaky" in call.task and call.attempt == 1:
            raise RuntimeFailure("busy", type="HTTPError", status=503, retryable=True,
                                 retry_after=0.05)
        if "slow" in call.task:
            await asyncio.sleep(5)
        reply = await super().run(call, on_chunk)
        if "agent" in call.task:  # as the agent runtimes do (the loader looks for it)
            call.emit("task_workspace", workspace={"kind": "none", "path": "/tmp/ws"})
            return Reply(reply.summary, reply.output, model="gpt-4o-2024-08-06",
                         usage={"tokensIn": 1200, "tokensOut": 300, "cachedTokensIn": 1000,
                                "reasoningTokens": 120},
                         annotations={"model": "gpt-4o", "agentCli": "codex-cli 0.169.0",
                                      "steps": 4, "changes": {
                                          "files": [{"path": "a.py", "status": "modified",
                                                     "insertions": 3, "deletions": 1}],
                                          "insertions": 3, "deletions": 1}})
        return reply


def limits(**aliases: tuple[str, int]) -> dict:
    return {name: {"id": agent, "overrides": {"runtime": {"concurrency": {"max_parallel_tasks": n}}}}
            for name, (agent, n) in aliases.items()}


PLAN = {"phases": [
    {"name": "build", "tasks": [
        {"id": "rev-1", "alias": "rev", "task": "Review part 1"},
        {"id": "rev-2", "alias": "rev", "task": "Review part 2", "dependsOn": ["rev-1"]},
        {"id": "coder", "alias": "dev", "task": "agent: fix the parser"},
        {"id": "flaky", "alias": "dev", "task": "flaky fix"},
        {"id": "boom", "alias": "dev", "task": "boom goes the build"},
        {"id": "slow", "alias": "dev", "task": "slow migration"},
    ]},
    {"name": "ship", "tasks": [
        {"id": "after-boom", "alias": "dev", "task": "package it", "dependsOn": ["boom"]},
    ]},
]}
ALIASES = limits(rev=("code-analyzer", 2), dev=("coder", 4))


@pytest.fixture(scope="module")
def run_log(tmp_path_factory, registry):
    base = tmp_path_factory.mktemp("otlp")
    result = asyncio.run(run_async(
        plan=PLAN, aliases=ALIASES, runtime=Scripted(), registry=registry,
        log_file=base / "events.jsonl", runs_dir=base / "runs", retries=1, backoff_base_ms=10,
        timeout_ms=400))
    return base / "events.jsonl", result


def check_spans(spans: list[Any], run_id: str) -> None:
    """Names, parents, kinds, attributes (ints are ints) and statuses of the PLAN run."""
    roots = [s for s in spans if not s.parent_span_id]
    assert len(roots) == 1 and len(spans) == 8
    root = roots[0]
    children = [s for s in spans if s.parent_span_id]
    assert root.name == "invoke_workflow codex-flow" and root.kind == SPAN_KIND.SPAN_KIND_INTERNAL
    assert len(root.trace_id) == 16 and len(root.span_id) == 8
    assert all(s.trace_id == root.trace_id and s.parent_span_id == root.span_id for s in children)
    assert len({s.span_id for s in spans}) == 8
    assert all(s.start_time_unix_nano <= s.end_time_unix_nano for s in spans)
    for s in spans:  # token counts are integers on every span, the run span too
        k = kinds(s)
        for key in TOKEN_KEYS:
            if key in k:
                assert k[key] == "int_value", (s.name, key)
    ra = attrs(root)
    assert ra["gen_ai.operation.name"] == "invoke_workflow" and ra["codexflow.run.id"] == run_id
    assert ra["codexflow.run.tasks"] == 7 and ra["codexflow.runtime"] == "stub"
    by_key = {attrs(s)["codexflow.task.key"]: s for s in children}
    assert set(by_key) == {"rev-1", "rev-2", "coder", "flaky", "boom", "slow", "after-boom"}
    assert ra["gen_ai.usage.input_tokens"] == sum(
        attrs(s).get("gen_ai.usage.input_tokens", 0) for s in children)
    assert ra["gen_ai.usage.cache_read.input_tokens"] == 1000
    assert root.status.code == STATUS.STATUS_CODE_ERROR
    assert root.status.message == "3 of 7 task(s) did not complete"
    for s in children:
        assert s.name == f"invoke_agent {attrs(s)['gen_ai.agent.name']}"
        assert s.kind == SPAN_KIND.SPAN_KIND_INTERNAL  # the stub runs in this process
    rev = attrs(by_key["rev-1"])
    assert rev["gen_ai.operation.name"] == "invoke_agent" and rev["gen_ai.agent.id"] == "code-analyzer"
    assert rev["gen_ai.request.model"] == "stub" and rev["gen_ai.response.model"] == "stub"
    assert isinstance(rev["gen_ai.usage.input_tokens"], int) and rev["gen_ai.usage.input_tokens"] > 0
    assert rev["codexflow.task.status"] == "completed" and rev["codexflow.task.attempts"] == 1
    assert attrs(by_key["rev-2"])["codexflow.task.depends_on"] == ["rev-1"]
    assert by_key["rev-1"].status.code == STATUS.STATUS_CODE_OK
    coder = attrs(by_key["coder"])
    assert coder["gen_ai.request.model"] == "gpt-4o"
    assert coder["gen_ai.response.model"] == "gpt-4o-2024-08-06"
    assert coder["gen_ai.provider.name"] == "openai"
    assert coder["gen_ai.usage.input_tokens"] == 1200 and coder["gen_ai.usage.output_tokens"] == 300
    assert coder["gen_ai.usage.cache_read.input_tokens"] == 1000
    assert coder["gen_ai.usage.reasoning.output_tokens"] == 120
    assert coder["llm.token_count.total"] == 1500 and coder["openinference.span.kind"] == "LLM"
    assert coder["codexflow.agent.cli"] == "codex-cli 0.169.0" and coder["codexflow.task.steps"] == 4
    assert (coder["codexflow.task.files_changed"], coder["codexflow.task.insertions"],
            coder["codexflow.task.deletions"]) == (1, 3, 1)
    # gpt-4o: $2.50 / $1.25 cached / $10 per million tokens in the shipped table
    assert coder["codexflow.cost_usd"] == pytest.approx((200 * 2.5 + 1000 * 1.25 + 300 * 10) / 1e6)
    boom = by_key["boom"]
    assert boom.status.code == STATUS.STATUS_CODE_ERROR and boom.status.message == "exploded"
    assert attrs(boom)["error.type"] == "HTTPError"
    slow = by_key["slow"]
    assert slow.status.code == STATUS.STATUS_CODE_ERROR and attrs(slow)["error.type"] == "Timeout"
    assert "400" in slow.status.message
    flaky = by_key["flaky"]
    assert flaky.status.code == STATUS.STATUS_CODE_OK and attrs(flaky)["codexflow.task.attempts"] == 2
    assert [e.name for e in flaky.events] == ["retry"]
    assert attrs(flaky.events[0])["error.type"] == "HTTPError"
    assert by_key["after-boom"].status.code == STATUS.STATUS_CODE_UNSET  # skipped: not an error


# -- files -----------------------------------------------------------------------------------
def test_otlp_proto_file(run_log, tmp_path, capsys):
    log, result = run_log
    out, js = tmp_path / "spans.pb", tmp_path / "spans.json"
    assert main(["report", "--log-file", str(log), "--otlp-proto", str(out),
                 "--otlp-json", str(js)]) == 0
    assert f"otlp: {out} (protobuf, 1 trace(s), 8 spans)" in capsys.readouterr().out
    message = pb.ExportTraceServiceRequest.FromString(out.read_bytes())
    rs = message.resource_spans[0]
    assert {"service.name": "codex-flow"}.items() <= {kv.key: value(kv.value)
                                                      for kv in rs.resource.attributes}.items()
    assert rs.scope_spans[0].scope.name == "codexflow_nb.analysis"
    spans = list(rs.scope_spans[0].spans)
    check_spans(spans, result.run_id)
    # the JSON file holds the same spans; its run span's tokens are intValue, not doubleValue
    doc = json.loads(js.read_text())
    assert to_proto(doc) == message
    root = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    tokens = {a["key"]: a["value"] for a in root["attributes"]}["gen_ai.usage.input_tokens"]
    assert list(tokens) == ["intValue"] and isinstance(tokens["intValue"], str)
    assert to_otlp_proto(load_events(log)) == message


def test_missing_package_is_one_line(run_log, tmp_path, workdir, monkeypatch, capsys):
    log, _ = run_log
    monkeypatch.setitem(__import__("sys").modules,
                        "opentelemetry.proto.collector.trace.v1", None)
    with pytest.raises(ConfigError, match=r"pip install 'codexflow-nb\[otel\]'"):
        otel_mod.proto_modules()
    assert main(["report", "--log-file", str(log), "--otlp-proto", str(tmp_path / "x.pb")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'codexflow-nb[otel]'" in err[0]
    assert not (tmp_path / "x.pb").exists()
    assert main(["run", "--example", "--otlp-endpoint", "http://127.0.0.1:9",
                 "--log-file", str(tmp_path / "e.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "codexflow-nb[otel]" in err[0]
    assert not (tmp_path / "e.jsonl").exists()  # nothing ran


# -- the push ----------------------------------------------------------------------------------
def test_report_push_to_receiver(run_log, monkeypatch, capsys):
    log, result = run_log
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS",
                       "Authorization=Bearer%20s3cret, x-team = a%3Db%2Cc ,x-over=generic")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "X-Over=traces")
    with Receiver() as rx:
        assert main(["report", "--log-file", str(log), "--otlp-endpoint", rx.url]) == 0
        out = capsys.readouterr().out
        assert f"otlp: sent 8 spans to {rx.url}/v1/traces (1 request)" in out
        assert len(rx.requests) == 1
        req = rx.requests[0]
        assert req.path == "/v1/traces"
        assert req.headers["content-type"] == "application/x-protobuf"
        assert req.headers["authorization"] == "Bearer s3cret"
        assert req.headers["x-team"] == "a=b,c"
        assert req.headers["x-over"] == "traces"  # the traces variable wins
        check_spans(rx.spans(), result.run_id)


def test_push_paths_chunks_and_gzip(run_log, monkeypatch):
    doc = to_otel(load_events(run_log[0]))
    with Receiver() as rx:
        assert export_otlp(doc, rx.url + "/v1/traces") == (8, 1)  # kept as is
        assert export_otlp(doc, rx.url + "/api/otel/") == (8, 1)
        monkeypatch.setattr(otel_mod, "MAX_SPANS_PER_REQUEST", 3)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
        assert export_otlp(doc, rx.url) == (8, 3)
        assert [r.path for r in rx.requests] == ["/v1/traces", "/api/otel/v1/traces",
                                                 *["/v1/traces"] * 3]
        assert [r.headers.get("content-encoding") for r in rx.requests[2:]] == ["gzip"] * 3
        assert [s.span_id for s in rx.spans()[16:]] == [s.span_id for s in rx.spans()[:8]]


def test_push_failures_are_one_line(run_log, monkeypatch, capsys):
    log, _ = run_log
    args = ["report", "--log-file", str(log), "--otlp-endpoint"]
    # a receiver that does not take protobuf (as Phoenix does not take JSON)
    with Receiver(status=415, body=b"Unsupported content type", content_type="text/plain") as rx:
        assert main([*args, rx.url]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"HTTP 415 Unsupported Media Type from {rx.url}/v1/traces" in err[0]
    assert "Unsupported content type" in err[0]
    # a collector's error reply: a google.rpc.Status message (field 2: the message)
    status = b"\x08\x03\x12\x0dbad span data"
    with Receiver(status=400, body=status) as rx:
        assert main([*args, rx.url]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("HTTP 400 Bad Request from "
                                             f"{rx.url}/v1/traces: bad span data")
    # partial success: the receiver took the request but rejected spans
    partial = pb.ExportTraceServiceResponse(partial_success=pb.ExportTracePartialSuccess(
        rejected_spans=2, error_message="too old")).SerializeToString()
    with Receiver(body=partial) as rx:
        assert main([*args, rx.url]) == 1
    assert "rejected 2 span(s): too old" in capsys.readouterr().err
    # nothing listening
    port = closed_port()
    assert main([*args, f"http://127.0.0.1:{port}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"codex-flow: error: OTLP export failed: cannot reach "
                   f"http://127.0.0.1:{port}/v1/traces (connection refused)"]
    # bad URLs and headers exit 2 before any work, and never echo a header's value
    for url in ("ftp://x", "127.0.0.1:4318", "http://", "http://h:99999", "http://u:p@h"):
        assert main([*args, url]) == 2, url
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20s3cret,oops")
    assert main([*args, "http://127.0.0.1:4318"]) == 2
    err = capsys.readouterr().err
    assert "OTEL_EXPORTER_OTLP_HEADERS: entry 2 is not key=value" in err and "s3cret" not in err


def test_header_and_url_rules():
    env = {"OTEL_EXPORTER_OTLP_HEADERS": "a=1,,b=x%20y",
           "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "A=2"}
    assert otlp_headers(environ=env) == {"b": "x y", "A": "2"}
    assert otlp_headers({"c": "3"}, environ={}) == {"c": "3"}
    for bad in ("=x", "novalue", "bad name=1", "a=x%0Ay"):
        with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_HEADERS") as info:
            otlp_headers(environ={"OTEL_EXPORTER_OTLP_HEADERS": bad})
        assert "x y" not in str(info.value)
    assert traces_url("http://h:4318") == "http://h:4318/v1/traces"
    assert traces_url(" https://h/otel/v1/traces ") == "https://h/otel/v1/traces"
    assert traces_url("http://h:6006/") == "http://h:6006/v1/traces"
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_TIMEOUT"):
        otel_mod.otlp_timeout({"OTEL_EXPORTER_OTLP_TIMEOUT": "soon"})
    assert otel_mod.otlp_timeout({"OTEL_EXPORTER_OTLP_TIMEOUT": "2500"}) == 2.5
    with pytest.raises(ConfigError, match="gzip or none"):
        otel_mod.otlp_compression({"OTEL_EXPORTER_OTLP_COMPRESSION": "zstd"})


# -- live ------------------------------------------------------------------------------------
def _ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_live_export_during_a_cli_run(workdir, capsys):
    """A run of ~4 s: task spans reach the receiver while it goes on; the run span at the end;
    everything matches what ``report`` exports from the log afterwards."""
    chain = {"phases": [{"name": "main", "tasks": [
        {"id": f"step-{i}", "alias": "reviewer", "task": f"step {i}",
         **({"dependsOn": [f"step-{i - 1}"]} if i > 1 else {})} for i in range(1, 9)]}]}
    (workdir / "plan.json").write_text(json.dumps(chain))
    with Receiver() as rx:
        code = main(["run", "--plan-file", "plan.json", "--stub-latency-ms", "500",
                     "--no-progress", "--no-plan", "--otlp-endpoint", rx.url])
        assert code == 0
        err = capsys.readouterr().err
        assert "OTLP" not in err
        lines = [json.loads(line) for line in (workdir / "data/logs/events.jsonl").open()]
        started = _ts(next(e["ts"] for e in lines if e["kind"] == "run_started"))
        ended = _ts(next(e["ts"] for e in lines if e["kind"] == "run_complete"))
        assert ended - started > 3.5
        spans = rx.spans()
        assert len(spans) == 9 and len(rx.requests) >= 3  # batched about once a second
        early = [r for r in rx.requests if r.at < ended - 1.0]
        assert early, "no span arrived before the run ended"
        assert sum(len(r.message.resource_spans[0].scope_spans[0].spans) for r in early) >= 2
        root = [s for s in spans if not s.parent_span_id]
        assert len(root) == 1 and root[0] in rx.requests[-1].message.resource_spans[0] \
            .scope_spans[0].spans  # the run span comes last
        assert all(s.parent_span_id == root[0].span_id for s in spans if s is not root[0])
        # the same spans as the file export (ids, names, times, attributes, status)
        from_log = to_proto(to_otel(load_events(workdir / "data/logs/events.jsonl")))
        expected = {s.span_id: s for s in from_log.resource_spans[0].scope_spans[0].spans}
        assert {s.span_id for s in spans} == set(expected)
        for s in spans:
            e = expected[s.span_id]
            assert (s.name, s.kind, s.parent_span_id, s.status, s.start_time_unix_nano,
                    s.end_time_unix_nano) == (e.name, e.kind, e.parent_span_id, e.status,
                                              e.start_time_unix_nano, e.end_time_unix_nano)
            got, want = attrs(s), attrs(e)
            assert got.pop("codexflow.cost_usd", 0) == pytest.approx(want.pop("codexflow.cost_usd", 0))
            assert got == want
            assert kinds(s)["gen_ai.usage.input_tokens"] == "int_value"


def test_live_export_dead_endpoint_warns_once(workdir, capsys):
    port = closed_port()
    code = main(["run", "--example", "--stub-latency-ms", "300", "--no-progress", "--no-plan",
                 "--otlp-endpoint", f"http://127.0.0.1:{port}"])
    captured = capsys.readouterr()
    assert code == 0 and "Orchestration Summary" in captured.out
    last = json.loads((workdir / "data/logs/events.jsonl").read_text().splitlines()[-1])
    assert last["kind"] == "run_complete" and last["ok"] is True
    warnings = [line for line in captured.err.splitlines() if "OTLP" in line]
    assert warnings == [f"codex-flow: warning: OTLP export failed: cannot reach "
                        f"http://127.0.0.1:{port}/v1/traces (connection refused) (the run goes "
                        f"on; spans that cannot be sent are dropped, and further failures are "
                        f"not reported)"]


def test_live_exporter_from_python(tmp_path, registry):
    """``prepare_run(on_event=OtlpExporter(url))``: no close() needed; a slow receiver never
    slows the run; a 503 is tried again."""
    with Receiver(delay=1.0, fail_first=1) as rx:
        exporter = OtlpExporter(rx.url, headers={"x-api-key": "k"})
        run = prepare_run(plan=PLAN, aliases=ALIASES, runtime=Scripted(), registry=registry,
                          log_file=tmp_path / "events.jsonl", runs_dir=tmp_path / "runs",
                          retries=1, backoff_base_ms=10, timeout_ms=400, on_event=exporter)
        t0 = time.monotonic()
        result = asyncio.run(run.execute())
        took = time.monotonic() - t0
        assert took < 1.5, took  # 3 requests at 1 s each would show here
        rx.wait_for(lambda spans: len(spans) == 8, timeout=15)
        check_spans(rx.spans(), result.run_id)
        assert rx.requests[0].headers["x-api-key"] == "k"
        deadline = time.monotonic() + 5
        while exporter._thread is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert exporter._thread is None  # the thread ends with the run
        assert (exporter.sent, exporter.dropped) == (8, 0)
        assert exporter.last_error and "HTTP 503" in exporter.last_error


def test_live_exporter_checks_before_the_run(monkeypatch):
    with pytest.raises(ConfigError, match="--otlp-endpoint"):
        OtlpExporter("localhost:4318")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "bad")
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_TRACES_HEADERS"):
        OtlpExporter("http://127.0.0.1:4318")
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/")
    assert OtlpExporter().url == "http://127.0.0.1:4318/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:9/t/v1/traces")
    assert OtlpExporter().url == "http://127.0.0.1:9/t/v1/traces"


def test_cli_run_bad_endpoint_exits_2(workdir, capsys):
    assert main(["run", "--example", "--otlp-endpoint", "grpc://127.0.0.1:4317"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--otlp-endpoint" in err[0]
    assert not Path("data/logs/events.jsonl").exists()

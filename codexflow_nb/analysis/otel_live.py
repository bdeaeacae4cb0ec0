"""Send a run's spans to an OTLP/HTTP receiver while the run goes on.

>>> from codexflow_nb import prepare_run
>>> from codexflow_nb.analysis.otel_live import OtlpExporter
>>> run = prepare_run("tasks.yaml", on_event=OtlpExporter("http://127.0.0.1:6006"))

``OtlpExporter`` is an event subscriber (``on_event=``, ``run.bus.subscribe``; the CLI's
``codex-flow run --otlp-endpoint URL``). In the engine it only files the events it needs (a
lock and a list append); a background thread turns them into the same spans as
``codex-flow report --otlp-proto`` (same ids, same attributes) and POSTs finished task spans
about once a second, and the run span when the run ends. A failed export is one warning line and
never fails the run: while the run goes on, spans that could not be sent are kept (up to
``max_queue``) and tried again with a backoff; at the end they are tried once more.
"""

from __future__ import annotations

import calendar
import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from ..errors import ConfigError
from ..events import TERMINAL_KINDS, Event
from . import otel
from .otel import (
    OtlpExportError,
    RunTotals,
    Sender,
    env_endpoint,
    proto_modules,
    request_message,
    retry_event,
    run_span,
    span_message,
    task_span,
)
from .pricing import Pricing, as_pricing

log = logging.getLogger("codexflow_nb.otel")

_KINDS = frozenset({"run_started", "task_queued", "task_started", "task_retry", "telemetry",
                    "run_complete", *TERMINAL_KINDS})
#: A thread with nothing to send and no event for this long ends (the next event starts one).
IDLE_EXIT_S = 300.0
MAX_BACKOFF_S = 30.0
#: While a run is open the thread works in slices of SLICE_S and pauses PAUSE_S after each, so
#: the engine (same process, same GIL) keeps most of the interpreter even in a burst of tasks.
SLICE_S = 0.002
PAUSE_S = 0.004
FINAL_RETRIES = 2


class OtlpExporter:
    """An event subscriber that exports spans over OTLP/HTTP (protobuf) during the run.

    ``url``: the receiver (``/v1/traces`` is added unless the URL ends with it); None uses
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT``. ``headers`` go
    over those of ``OTEL_EXPORTER_OTLP_HEADERS`` / ``OTEL_EXPORTER_OTLP_TRACES_HEADERS``.
    ``on_warning`` gets the one warning line of a failed export (default: the
    ``codexflow_nb.otel`` logger). A bad URL or header, or a missing ``opentelemetry-proto``,
    raises ConfigError here, before the run starts.

    ``close()`` sends what is left and waits for it; without it, the exporter sends the run
    span and the last tasks as soon as ``run_complete`` arrives, and a script's exit waits for
    that send (at most the request timeout). ``sent``, ``dropped`` and ``last_error`` tell how
    it went.
    """

    def __init__(self, url: str | None = None, *, headers: Mapping[str, str] | None = None,
                 pricing: Pricing | str | None = None, service_name: str = "codex-flow",
                 interval: float = 1.0, timeout: float | None = None,
                 max_queue: int = 100_000,
                 on_warning: Callable[[str], None] | None = None) -> None:
        target = url if url is not None else env_endpoint()
        what = "--otlp-endpoint" if url is not None else "$OTEL_EXPORTER_OTLP_ENDPOINT"
        if target is None:
            raise ConfigError("OtlpExporter: give a URL (or set OTEL_EXPORTER_OTLP_ENDPOINT)")
        self._sender = Sender.from_env(target, headers, timeout, what)
        proto_modules()  # a missing opentelemetry-proto fails now, not in the thread
        self.url = self._sender.url
        self.service_name = service_name
        self.interval = interval
        self.max_queue = max_queue
        self._pricing = as_pricing(pricing)
        self._warn = on_warning or log.warning
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._inbox: list[Event] = []
        self._thread: threading.Thread | None = None
        self._closing = False
        # worker-only state
        self._tasks: dict[tuple[str, str], dict[str, Any]] = {}
        self._runs: dict[str, dict[str, Any]] = {}
        self._pending: list[Any] = []  # Span messages
        self._next_try = 0.0
        self._backoff = 0.0
        self._last_event = time.monotonic()
        self._slice = 0.0
        #: Spans the receiver took, spans given up on, and the latest failure.
        self.sent = 0
        self.dropped = 0
        self.requests = 0
        self.last_error: str | None = None
        self._warned = False

    def __repr__(self) -> str:
        return f"OtlpExporter({self.url!r})"

    # -- in the engine: file the event, nothing more --------------------------------------
    def __call__(self, event: Event) -> None:
        kind = event.get("kind")
        if kind not in _KINDS:
            return
        with self._lock:
            self._inbox.append(event)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="codexflow-otlp",
                                                daemon=False)
                self._thread.start()
        if kind == "run_complete":
            self._wake.set()

    def close(self, timeout: float | None = None) -> None:
        """Send what is left (one try) and wait for it (at most ``timeout`` seconds, default
        the request timeout and a bit). The exporter can be used again afterwards."""
        with self._lock:
            thread = self._thread  # None: nothing filed since the last send
            self._closing = True
        self._wake.set()
        if thread is not None:
            thread.join(self._sender.timeout * 2 + 5 if timeout is None else timeout)
        with self._lock:
            self._closing = False

    def __enter__(self) -> OtlpExporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the background thread --------------------------------------------------------------
    def _work(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # pragma: no cover - a bug: say it once, never hang on
            with self._lock:
                self._thread = None
            self._failed(f"the exporter stopped: {type(exc).__name__}: {exc}")

    def _loop(self) -> None:
        main = threading.main_thread()
        more = False
        while True:
            if not more:
                self._wake.wait(self.interval)
                self._wake.clear()
            with self._lock:
                events, self._inbox = self._inbox, []
                closing = self._closing
            if events:
                self._last_event = time.monotonic()
            ended = False
            self._slice = time.perf_counter()
            for event in events:
                self._pace()
                try:
                    ended |= self._file(event)
                except Exception as exc:  # noqa: BLE001 - an odd event costs its span only
                    self._failed(f"cannot read a {event.get('kind')} event: "
                                 f"{type(exc).__name__}: {exc}")
            # the interpreter is exiting (a script's end): send now, do not wait for a tick
            final = closing or not main.is_alive() or not self._runs
            if self._pending and (final or ended or time.monotonic() >= self._next_try):
                self._flush(final=final)
            with self._lock:
                more = bool(self._inbox)
                if more:
                    continue
                idle = time.monotonic() - self._last_event > IDLE_EXIT_S
                if closing or not main.is_alive() or (not self._pending
                                                      and (not self._runs or idle)):
                    self._thread = None
                    return

    def _pace(self) -> None:
        if time.perf_counter() - self._slice >= SLICE_S:
            if self._runs:
                time.sleep(PAUSE_S)
            self._slice = time.perf_counter()

    def _file(self, event: Event) -> bool:
        """Update the run's state with one event; True when a run ended."""
        kind, run_id = event["kind"], str(event.get("runId"))
        ts = _ts_ns(event.get("ts"))
        if kind == "run_started":
            self._runs[run_id] = {"start": ts, "runtime": event.get("runtime"),
                                  "totals": RunTotals()}
            return False
        run = self._runs.get(run_id)
        if run is None:  # subscribed mid-run: start the run span at its first event seen
            run = self._runs[run_id] = {"start": ts, "runtime": None, "totals": RunTotals()}
        if kind == "run_complete":
            self._runs.pop(run_id, None)
            self._pending.append(span_message(run_span(
                run_id, run["start"], max(ts, run["start"]), run["totals"], ok=event.get("ok"),
                completed=True, runtime=run["runtime"])))
            return True
        task_id = event.get("taskId")
        if task_id is None:
            return False
        task = self._tasks.setdefault((run_id, task_id), {})
        if kind == "task_queued":
            task["queued"] = ts
            task["depends_on"] = list(event.get("dependsOn") or [])
        elif kind == "task_started":
            task["started"] = ts
            task["retries"] = []
        elif kind == "task_retry":
            error = event.get("error") or {}
            task.setdefault("retries", []).append(
                retry_event(ts, event.get("attempt"), error.get("type"), event.get("delayMs")))
        elif kind == "telemetry":
            task["t_usage"] = event.get("usage") or {}
            task["t_model"] = event.get("model")
        elif kind in TERMINAL_KINDS:
            del self._tasks[(run_id, task_id)]
            rec = self._record(run_id, task, event, ts, run["runtime"])
            run["totals"].add(rec)
            self._pending.append(span_message(task_span(rec)))
        return False

    def _record(self, run_id: str, task: dict[str, Any], event: Event, end: int,
                runtime: str | None) -> dict[str, Any]:
        """A task record as ``to_otel`` builds it from the tasks frame."""
        usage = event.get("usage") or task.get("t_usage") or {}
        model = event.get("model") or task.get("t_model")
        price = self._pricing.lookup(model)
        tokens_in, tokens_out = usage.get("tokensIn"), usage.get("tokensOut")
        cached, written = usage.get("cachedTokensIn"), usage.get("cacheWriteTokensIn")
        cost = (price.cost(tokens_in, tokens_out, cached or 0, written or 0,
                           usage.get("cacheWrite1hTokensIn") or 0)
                if price and tokens_in is not None and tokens_out is not None else None)
        queued, started = task.get("queued"), task.get("started")
        error = event.get("error") or {}
        changes = event.get("changes") or {}
        files = changes.get("files") if isinstance(changes, dict) else None
        status = TERMINAL_KINDS[event["kind"]]
        return {
            "run": run_id, "task_id": event.get("taskId"), "key": event.get("key"),
            "alias": event.get("alias"), "agent": event.get("agentId"), "status": status,
            "model": model, "response_model": task.get("t_model") or model,
            "provider": price.provider if price else None, "phase": event.get("phase"),
            "attempts": event.get("attempt") or (len(task.get("retries") or []) + 1
                                                 if started is not None else None),
            "tokens_in": tokens_in, "tokens_out": tokens_out, "cached_tokens_in": cached,
            "cache_write_tokens_in": written,
            "reasoning_tokens": usage.get("reasoningTokens"),
            "queued_ms": (started - queued) / 1e6 if queued is not None and started is not None
            else None,
            "depends_on": task.get("depends_on"), "cost": cost,
            "error_type": error.get("type") if status != "completed" else None,
            "error_message": error.get("message") if status != "completed" else None,
            "agent_cli": event.get("agentCli"), "steps": event.get("steps"),
            "files_changed": len(files) if isinstance(files, list) else None,
            "insertions": changes.get("insertions") if isinstance(changes, dict) else None,
            "deletions": changes.get("deletions") if isinstance(changes, dict) else None,
            "start": started if started is not None else queued if queued is not None else end,
            "end": end, "retries": task.get("retries"), "runtime": runtime,
        }

    def _flush(self, *, final: bool) -> None:
        """Send the pending spans, in requests of at most MAX_SPANS_PER_REQUEST. On a failure
        that may pass, keep them for a later try; when ``final``, only a busy receiver (429,
        502-504) is tried again, twice, within 1.5 s."""
        tries = 0
        while self._pending:
            batch = self._pending[:otel.MAX_SPANS_PER_REQUEST]
            try:
                self._sender.send(request_message(batch, self.service_name))
            except OtlpExportError as exc:
                self._failed(str(exc))
                if final and exc.busy and tries < FINAL_RETRIES:
                    tries += 1
                    time.sleep(0.5 * tries)
                    continue
                if final or not exc.retryable:
                    self.dropped += len(self._pending) if final else len(batch)
                    del self._pending[:None if final else len(batch)]
                    if final:
                        return
                    continue
                self._backoff = min(MAX_BACKOFF_S, max(self.interval, self._backoff * 2))
                self._next_try = time.monotonic() + self._backoff
                excess = len(self._pending) - self.max_queue
                if excess > 0:  # keep the newest; the oldest are given up on
                    self.dropped += excess
                    del self._pending[:excess]
                return
            except Exception as exc:  # noqa: BLE001 - never let the thread die silently
                self._failed(f"{type(exc).__name__}: {exc}")
                self.dropped += len(batch)
                del self._pending[:len(batch)]
                continue
            self.sent += len(batch)
            self.requests += 1
            self._backoff = 0.0
            del self._pending[:len(batch)]

    def _failed(self, message: str) -> None:
        self.last_error = message
        if not self._warned:
            self._warned = True
            self._warn(f"OTLP export failed: {message} (the run goes on; spans that cannot be "
                       f"sent are dropped, and further failures are not reported)")


_seconds: dict[str, int] = {}


def _ts_ns(ts: Any) -> int:
    """Unix nanoseconds of an event's ``ts`` (``2026-11-25T14:40:55.204Z``; the seconds part is
    looked up once per second of events)."""
    if not isinstance(ts, str):
        return time.time_ns()
    if len(ts) == 24 and ts[19] == "." and ts[23] == "Z" and ts[20:23].isdigit():
        sec = _seconds.get(ts[:19])
        if sec is None:
            try:
                sec = calendar.timegm(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S"))
            except ValueError:
                return time.time_ns()
            if len(_seconds) > 4096:
                _seconds.clear()
            _seconds[ts[:19]] = sec
        return (sec * 1000 + int(ts[20:23])) * 1_000_000
    try:
        dt = datetime.fromisoformat(ts)
    except ValueError:
        return time.time_ns()
    return (calendar.timegm(dt.utctimetuple()) * 1_000_000 + dt.microsecond) * 1000

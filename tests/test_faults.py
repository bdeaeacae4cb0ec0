"""Fault injection: 1,000 tasks through the codex runtime against the real demo endpoint
(``create_app`` with a seeded ``fail_rate``) behind a dispatcher that injects one more fault per
task, chosen from a hash of the task text: 429 with ``Retry-After: 0``, 503, a connection reset
(RST), half a body on the wire, a whole 200 reply holding half a JSON document, a stall past the
task timeout, a non-retryable 404, and for the streaming variant an SSE stream cut before
``complete``, reset mid-stream, stalled mid-stream or ending in an ``error`` event.

The dispatcher records what it did with every request (its action and the status the endpoint
answered), and the test replays that record against the event log: every attempt the server saw
must show up as a ``task_retry`` or the terminal event with the matching classification, and
every ``task_complete`` must have an ``output.json`` holding the echo reply for its own task.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import zlib
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import ServerThread

from codexflow_nb.api import RunResult, run_async
from codexflow_nb.events import TERMINAL_KINDS
from codexflow_nb.registry import Registry
from codexflow_nb.server import create_app

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

RETRIES = 3
TIMEOUT_MS = 3000  # generous: a forwarded request takes milliseconds even on a busy machine
ECHO_FAIL_RATE = 0.09
ALIASES = {name: {"id": agent, "overrides": {"runtime": {"concurrency": {"max_parallel_tasks": 10}}}}
           for name, agent in (("rev", "code-analyzer"), ("arch", "system-architect"),
                               ("qa", "unit-tester"), ("dev", "backend-dev"))}


@dataclass(frozen=True)
class Fault:
    """What the dispatcher does with a task: ``first`` on attempt 1, ``then`` on later ones."""

    name: str
    per_mille: int
    first: str
    then: str


JSON_FAULTS = [
    Fault("429-once", 25, "429", "forward"),
    Fault("reset-once", 25, "reset", "forward"),
    Fault("reset-always", 12, "reset", "reset"),
    Fault("half-once", 10, "half", "forward"),
    Fault("half-always", 10, "half", "half"),
    Fault("503-always", 10, "503", "503"),
    Fault("malformed", 12, "malformed", "malformed"),
    Fault("stall", 12, "stall", "stall"),
    Fault("not-found", 12, "notfound", "notfound"),
]
STREAM_FAULTS = [
    Fault("429-once", 25, "429", "forward"),
    Fault("cut-once", 30, "cut", "forward"),
    Fault("cut-always", 15, "cut", "cut"),
    Fault("stream-reset", 15, "streamreset", "streamreset"),
    Fault("reset-once", 15, "reset", "forward"),
    Fault("stream-error", 15, "streamerror", "streamerror"),
    Fault("stream-stall", 12, "streamstall", "streamstall"),
]
OK = Fault("ok", 0, "forward", "forward")

#: action -> (retryable?, error type the client must report, HTTP status or None)
OUTCOMES: dict[str, tuple[bool, str, int | None]] = {
    "forward:500": (True, "HttpError", 500),  # the endpoint's own --fail-rate
    "429": (True, "HttpError", 429),
    "503": (True, "HttpError", 503),
    "reset": (True, "ConnectionError", None),
    "half": (True, "ConnectionError", None),
    "cut": (True, "StreamEndedEarly", None),
    "streamreset": (True, "StreamEndedEarly", None),
    "malformed": (False, "MalformedReply", None),
    "forward:404": (False, "HttpError", 404),
    "streamerror": (False, "StreamError", None),
    "stall": (False, "Timeout", None),
    "streamstall": (False, "Timeout", None),
}


def fault_of(task: str, faults: list[Fault]) -> Fault:
    """The fault for a task: a stable hash of its text picks a slot out of 1,000."""
    slot = zlib.crc32(task.encode()) % 1000
    for fault in faults:
        if slot < fault.per_mille:
            return fault
        slot -= fault.per_mille
    return OK


def _transport(send: Send) -> asyncio.Transport:
    """The connection under uvicorn's ``send`` (its request cycle keeps it as ``.transport``);
    the dispatcher is the outermost app, so it receives uvicorn's own ``send``. On uvloop the
    transport is uvloop's own class, so it is recognised by what it can do."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if not (hasattr(transport, "abort") and hasattr(transport, "get_extra_info")):
        raise RuntimeError("uvicorn's send no longer exposes its transport: update _transport()")
    return transport


def reset(send: Send) -> None:
    """Drop the connection with a TCP RST (SO_LINGER 0, then abort)."""
    transport = _transport(send)
    transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                  struct.pack("ii", 1, 0))
    transport.abort()


async def until_disconnect(receive: Receive, limit_s: float = 30.0) -> None:
    """Wait for the client to go away (it times out or sees the reset)."""
    async def wait() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(wait(), limit_s)


def sse(doc: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(doc).encode() + b"\n\n"


class FaultDispatcher:
    """An ASGI app in front of the demo endpoint. Per request it reads the task, picks the
    action for this attempt and records ``action`` (``forward:<status>`` when forwarded)."""

    def __init__(self, endpoint: ASGIApp, faults: list[Fault]) -> None:
        self.endpoint = endpoint
        self.faults = faults
        self.seen: dict[str, list[str]] = defaultdict(list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/run":
            await self.endpoint(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        doc = json.loads(body)
        task: str = doc["task"]
        fault = fault_of(task, self.faults)
        action = fault.first if not self.seen[task] else fault.then
        record = self.seen[task]
        record.append(action)
        if action == "forward":
            await self._forward(scope, body, receive, send, record, "forward:200")
        elif action == "notfound":  # a real 404 from the endpoint: an agent it does not know
            await self._forward(scope, json.dumps({**doc, "agentId": "no-such-agent"}).encode(),
                                receive, send, record, "unexpected 200")
        elif action in ("429", "503"):
            headers = [(b"content-type", b"application/json")]
            if action == "429":
                headers.append((b"retry-after", b"0"))
            await send({"type": "http.response.start", "status": int(action), "headers": headers})
            await send({"type": "http.response.body", "body": b'{"error": "injected"}'})
        elif action == "reset":
            reset(send)
            await until_disconnect(receive)
        elif action == "half":  # 100 bytes promised, 20 sent, then FIN
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"application/json"), (b"content-length", b"100")]})
            await send({"type": "http.response.body", "body": b'{"summary": "half a ',
                        "more_body": True})
            _transport(send).close()
            await until_disconnect(receive)
        elif action == "malformed":  # a whole HTTP reply whose JSON stops half way
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": b'{"summary": "half a '})
        elif action == "stall":
            await until_disconnect(receive)
        elif action in ("streamerror", "streamstall"):
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})
            await send({"type": "http.response.body", "more_body": True,
                        "body": sse({"event": "start"}) + sse({"event": "chunk", "content": "so "})})
            if action == "streamerror":
                await send({"type": "http.response.body", "body": sse(
                    {"event": "error", "message": "model overloaded", "retryable": False})})
            else:
                await until_disconnect(receive)
        elif action in ("cut", "streamreset"):
            await self._forward(scope, body, receive, self._cutter(send, action), record, action)
        else:
            raise AssertionError(action)

    async def _forward(self, scope: Scope, body: bytes, receive: Receive, send: Send,
                       record: list[str], label: str) -> None:
        """Hand the request to the endpoint; ``record`` notes ``label`` when it answered 200,
        else ``forward:<status>`` (its ``--fail-rate`` strikes whatever the action)."""
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = message["status"]
                record[-1] = label if status == 200 else f"forward:{status}"
            await send(message)

        headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"]
        await self.endpoint({**scope, "headers": headers}, replay, watch)

    @staticmethod
    def _cutter(send: Send, action: str) -> Send:
        """A ``send`` that passes the stream until the ``complete`` event, then ends the
        response there (``cut``) or resets the connection (``streamreset``)."""
        state = {"stopped": False}

        async def cut(message: Message) -> None:
            if state["stopped"]:
                return  # the endpoint keeps writing into a response that is over
            if message["type"] == "http.response.body" and b'"event":"complete"' in message.get(
                    "body", b""):
                state["stopped"] = True
                if action == "cut":
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                else:
                    reset(send)
                return
            await send(message)
        return cut


# -- the checks -------------------------------------------------------------------------------
def replay_attempts(task: str, actions: list[str], retries: list[dict[str, Any]],
                    terminal: dict[str, Any]) -> None:
    """The events of one task must match what the server did with each of its attempts."""
    where = f"{task!r}: server saw {actions}, terminal {terminal['kind']} {terminal.get('error')}"
    assert terminal["attempt"] == len(actions) == len(retries) + 1, where
    for n, action in enumerate(actions, 1):
        last = n == len(actions)
        if action == "forward:200":
            assert last and terminal["kind"] == "task_complete" and terminal["ok"] is True, where
            continue
        retryable, type_, status = OUTCOMES[action]
        error = terminal["error"] if last else retries[n - 1]["error"]
        assert error["type"] == type_ and error.get("status") == status, where
        if action == "forward:500":
            assert "InjectedFailure" in error["message"], where
        if not last:
            assert retryable and retries[n - 1]["attempt"] == n, where
        elif type_ == "Timeout":
            assert terminal["kind"] == "task_timeout", where
        else:  # failed for good: not retryable, or out of retries
            assert terminal["kind"] == "task_failed" and terminal["ok"] is False, where
            assert not retryable or n == RETRIES + 1, where


def check_run(tmp_path: Path, result: RunResult, dispatcher: FaultDispatcher,
              tasks: dict[str, list[str]], stream: bool) -> Counter[str]:
    """Every assertion of the suite; returns the terminal kinds per fault for the report."""
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    all_tasks = [t for items in tasks.values() for t in items]
    terminal = [e for e in events if e["kind"] in TERMINAL_KINDS]
    # every task accounted for: one terminal event each, nothing left over
    assert len(terminal) == len(all_tasks) == len(result.tasks)
    assert len({e["taskId"] for e in terminal}) == len(terminal)
    assert {e["taskId"] for e in terminal} == {t.task_id for t in result.tasks}
    (done,) = [e for e in events if e["kind"] == "run_complete"]
    assert sum(done["counts"].values()) == len(all_tasks)
    text_of = {t.task_id: t.task for t in result.tasks}
    retries: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        if e["kind"] == "task_retry":
            retries[e["taskId"]].append(e)
    started = Counter(e["taskId"] for e in events if e["kind"] == "task_started")
    assert set(started.values()) == {1}
    assert set(dispatcher.seen) == set(all_tasks)  # every task reached the server

    outcome: Counter[str] = Counter()
    for e in terminal:
        task = text_of[e["taskId"]]
        fault = fault_of(task, dispatcher.faults)
        replay_attempts(task, dispatcher.seen[task], retries[e["taskId"]], e)
        outcome[f"{fault.name} -> {e['kind']}"] += 1
        out = json.loads((tmp_path / ".runs" / e["alias"] / e["taskId"] / "output.json").read_text())
        assert out["attempts"] == e["attempt"] and out["status"] == TERMINAL_KINDS[e["kind"]]
        if e["kind"] != "task_complete":
            assert out["ok"] is False and out["output"] is None and out["summary"] is None
            continue
        # no task ok without a valid reply: the echo reply for this very task and agent
        assert out["ok"] is True and isinstance(out["summary"], str)
        reply = out["output"]
        assert reply["provider"] == "echo" and reply["agentId"] == e["agentId"]
        assert reply["alias"] == e["alias"] and task in reply["text"]
        assert out["summary"] == reply["text"].splitlines()[0] and task in out["summary"]
        if stream:
            assert out["chunks"] == reply["text"]  # the chunks of the attempt that completed
    return outcome


def make_tasks(count: int, prefix: str) -> dict[str, list[str]]:
    tasks: dict[str, list[str]] = {alias: [] for alias in ALIASES}
    for i in range(count):
        tasks[list(ALIASES)[i % len(ALIASES)]].append(f"{prefix} {i:04d}: check retry safety")
    return tasks


@pytest.fixture
def dispatcher_server(registry: Registry, request: pytest.FixtureRequest
                      ) -> Iterator[tuple[FaultDispatcher, str]]:
    faults: list[Fault] = request.param
    endpoint = create_app(registry, fail_rate=ECHO_FAIL_RATE, fail_seed=2026)
    dispatcher = FaultDispatcher(endpoint, faults)
    with ServerThread(dispatcher) as server:
        yield dispatcher, server.url


@pytest.mark.slow
@pytest.mark.parametrize(("dispatcher_server", "count", "stream"),
                         [(JSON_FAULTS, 1000, False), (STREAM_FAULTS, 300, True)],
                         ids=["json-1000", "stream-300"], indirect=["dispatcher_server"])
def test_faults_are_retried_classified_and_accounted_for(
        tmp_path: Path, dispatcher_server: tuple[FaultDispatcher, str], count: int,
        stream: bool) -> None:
    dispatcher, url = dispatcher_server
    tasks = make_tasks(count, "Stream task" if stream else "Task")
    planned = Counter(fault_of(t, dispatcher.faults).name for items in tasks.values() for t in items)
    assert set(planned) == {f.name for f in dispatcher.faults} | {"ok"}  # every fault is used
    injected = sum(n for name, n in planned.items() if name != "ok")
    assert 0.09 * count < injected < 0.17 * count

    result = asyncio.run(run_async(
        tasks, aliases=ALIASES, runtime="codex", url=url, retries=RETRIES, backoff_base_ms=2,
        timeout_ms=TIMEOUT_MS, stream=stream, log_file=tmp_path / "events.jsonl",
        runs_dir=tmp_path / ".runs"))
    outcome = check_run(tmp_path, result, dispatcher, tasks, stream)

    # the endpoint's own --fail-rate struck too: with it, about 20% of the tasks met a fault
    fail_rate_hit = {t for t, seen in dispatcher.seen.items() if "forward:500" in seen}
    assert fail_rate_hit
    faulted = {t for items in tasks.values() for t in items
               if fault_of(t, dispatcher.faults).name != "ok" or t in fail_rate_hit}
    assert 0.15 * count < len(faulted) < 0.3 * count, len(faulted)
    # the faults that must fail for good did, and the recoverable ones mostly recovered
    for fault in dispatcher.faults:
        ends = {k.split(" -> ")[1]: n for k, n in outcome.items() if k.startswith(fault.name + " ")}
        if fault.then == "forward":
            assert ends.get("task_complete", 0) >= planned[fault.name] - 1, (fault, ends)
        elif fault.then in ("stall", "streamstall"):
            assert ends == {"task_timeout": planned[fault.name]}, (fault, ends)
        else:
            assert ends == {"task_failed": planned[fault.name]}, (fault, ends)


# -- the endpoint's fault options from the command line ----------------------------------------
@contextlib.contextmanager
def served(*args: str) -> Iterator[str]:
    """``codex-flow serve --port 0 ARGS`` as a subprocess; yields its URL."""
    env = {k: v for k, v in os.environ.items() if k != "CODEX_API_KEY"}
    proc = subprocess.Popen([sys.executable, "-m", "codexflow_nb", "serve", "--port", "0", *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        assert banner.startswith("codex-flow serve: http://127.0.0.1:"), banner
        yield banner.split()[2]
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0 and "Traceback" not in err, err


def sequential_run(tmp_path: Path, url: str, name: str) -> list[tuple[str, str, Any]]:
    """Twelve tasks one at a time with retries: the (key, kind, attempt) sequence."""
    log = tmp_path / f"{name}.jsonl"
    asyncio.run(run_async({"rev": [f"Review part {i}" for i in range(12)]},
                          aliases={"rev": {"id": "code-analyzer", "overrides": {
                              "runtime": {"concurrency": {"max_parallel_tasks": 1}}}}},
                          runtime="codex", url=url, retries=RETRIES, backoff_base_ms=1,
                          log_file=log, runs_dir=tmp_path / name))
    events = [json.loads(line) for line in log.read_text().splitlines()]
    return [(e["key"], e["kind"], e.get("attempt")) for e in events
            if e["kind"] == "task_retry" or e["kind"] in TERMINAL_KINDS]


def test_serve_fail_seed_repeats_the_same_faults(tmp_path: Path) -> None:
    args = ("--fail-rate", "0.4", "--fail-seed", "11", "--chunk-delay-ms", "0")
    runs = []
    for n in range(2):
        with served(*args) as url:
            runs.append(sequential_run(tmp_path, url, f"run{n}"))
    assert runs[0] == runs[1]
    kinds = Counter(kind for _, kind, _ in runs[0])
    assert kinds["task_retry"] > 0 and kinds["task_complete"] > 0
    with served("--fail-rate", "0.4", "--fail-seed", "12") as url:
        assert sequential_run(tmp_path, url, "other") != runs[0]
    with served() as url:  # without --fail-rate nothing is injected
        statuses = {httpx.post(f"{url}/run", json={"agentId": "reviewer", "alias": "r",
                                                   "task": f"t{i}"}).status_code
                    for i in range(20)}
        assert statuses == {200}

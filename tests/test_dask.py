"""The Dask executor on a real LocalCluster of 2 worker processes on 127.0.0.1.

Measured from the event log and the cluster itself: per-alias limits and the global cap hold,
every task ends once, the worker address is on terminal events, a SIGKILLed worker loses no
task, cancel stops the work on the cluster, and credentials never show up anywhere.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from codexflow_nb import Plan, prepare_run, run
from codexflow_nb.aliases import Aliases
from codexflow_nb.cli import main
from codexflow_nb.errors import ConfigError
from codexflow_nb.events import TERMINAL_KINDS

SECRET = "sk-test-d4sk-NEVER-LOG-ME-7731"


def limited(agent: str, limit: int) -> dict[str, Any]:
    return {"id": agent, "overrides": {"runtime": {"concurrency": {"max_parallel_tasks": limit}}}}


ALIASES = {"one": limited("system-architect", 1), "two": limited("code-analyzer", 2),
           "three": limited("coder", 3)}


def read_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def terminal_counts(events: list[dict[str, Any]]) -> Counter[str]:
    return Counter(e["taskId"] for e in events if e["kind"] in TERMINAL_KINDS)


def wait_until(predicate: Any, what: str, limit_s: float = 30.0) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def codexflow_tasks_on_workers(client: Any) -> dict[str, dict[str, str]]:
    """{worker: {key: state}} for this project's Dask tasks that a worker still knows."""
    return client.run(lambda dask_worker: {
        str(k): ts.state for k, ts in dask_worker.state.tasks.items()
        if str(k).startswith("codexflow-")})


# -- fixtures: clusters are always closed, so no worker process outlives the tests --------------

def _cluster(threads_per_worker: int) -> Any:
    pytest.importorskip("distributed", reason="the dask extra is not installed "
                                              "(pip install codexflow-nb[dask])")
    from codexflow_nb.executors.dask import start_local_cluster

    return start_local_cluster(n_workers=2, threads_per_worker=threads_per_worker)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """2 worker processes x 2 threads, shared by the tests that leave it as they found it."""
    with _cluster(threads_per_worker=2) as c:
        yield c


@pytest.fixture(scope="module")
def client(cluster: Any) -> Iterator[Any]:
    import distributed

    with distributed.Client(cluster, set_as_default=False) as c:
        yield c


@pytest.fixture
def lone_cluster() -> Iterator[Any]:
    """A cluster of its own (2 processes x 1 thread) for the test that kills a worker."""
    with _cluster(threads_per_worker=1) as c:
        yield c


# -- without a cluster ------------------------------------------------------------------------

def test_missing_extra_names_it(workdir, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)  # makes `import distributed` fail
    assert main(["run", "--example", "--executor", "dask"]) == 2
    err = capsys.readouterr().err
    assert "pip install codexflow-nb[dask]" in err and "Traceback" not in err
    assert not (workdir / "data").exists()


def test_dask_address_needs_the_dask_executor(workdir, capsys):
    assert main(["run", "--example", "--dask-address", "tcp://127.0.0.1:8786"]) == 2
    assert "--executor dask" in capsys.readouterr().err


def test_own_http_client_cannot_go_to_dask_workers(workdir):
    httpx = pytest.importorskip("httpx")
    client = httpx.AsyncClient()
    with pytest.raises(ConfigError) as caught:
        prepare_run({"two": ["a"]}, aliases=ALIASES, runtime="codex", url="http://127.0.0.1:1",
                    executor="dask", http_client=client)
    message = str(caught.value)
    assert "\n" not in message and "cannot be shipped to Dask workers" in message
    assert "executor='local'" in message and "HTTPS_PROXY" in message
    assert not (workdir / "data").exists() and not (workdir / ".runs").exists()


def test_runtime_spec_refuses_a_client_object():
    pytest.importorskip("distributed", reason="the dask extra is not installed")
    from codexflow_nb.executors.dask import RuntimeSpec

    with pytest.raises(ConfigError, match="cannot be shipped to Dask workers"):
        RuntimeSpec.of("codex", {"url": "http://127.0.0.1:1", "http_client": object()})


def test_unreachable_scheduler_is_a_config_error():
    pytest.importorskip("distributed", reason="the dask extra is not installed")
    from codexflow_nb.executors.dask import DaskRuntime, RuntimeSpec

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    rt = DaskRuntime(RuntimeSpec.of("stub"), f"tcp://127.0.0.1:{port}", connect_timeout_s=1)
    with pytest.raises(ConfigError, match="cannot reach the Dask scheduler"):
        rt.capacity()


def test_secret_never_shows_in_reprs():
    pytest.importorskip("distributed", reason="the dask extra is not installed")
    import pickle

    from codexflow_nb.executors.dask import DaskRuntime, RuntimeHost, RuntimeSpec, Secret

    spec = RuntimeSpec.of("codex", {"url": "http://127.0.0.1:9", "api_key": SECRET})
    assert isinstance(spec.options["api_key"], Secret)
    rt = DaskRuntime(spec, "tcp://127.0.0.1:8786")
    for text in (repr(spec), str(spec), repr(rt), repr(RuntimeHost("p", spec)),
                 repr(spec.build()), str(spec.options)):
        assert SECRET not in text
    assert pickle.loads(pickle.dumps(spec)).options["api_key"].reveal() == SECRET


def test_unreachable_cluster_fails_each_task_once(registry, workdir):
    pytest.importorskip("distributed", reason="the dask extra is not installed")
    from codexflow_nb.api import Run
    from codexflow_nb.engine import RunOptions
    from codexflow_nb.executors.dask import DaskRuntime, RuntimeSpec

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # built without prepare_run's reachability check, so the run itself meets the dead address
    rt = DaskRuntime(RuntimeSpec.of("stub"), f"tcp://127.0.0.1:{port}", connect_timeout_s=0.5)
    plan = Plan.from_task_map({"two": ["a", "b", "c"]})
    log = workdir / "events.jsonl"
    result = asyncio.run(Run(plan, plan.validate(registry, Aliases(ALIASES)), rt,
                             RunOptions(log_file=log, runs_dir=None)).execute())
    assert not result.ok and {t.status for t in result.tasks} == {"failed"}
    assert all(t.error["type"] == "ClusterUnavailable" and t.attempts == 1 for t in result.tasks)
    events = read_events(log)
    assert terminal_counts(events) == Counter({t.task_id: 1 for t in result.tasks})
    assert events[-1]["kind"] == "run_complete"


# -- on the shared cluster ----------------------------------------------------------------------

@pytest.mark.slow
def test_a_passed_client_works_inside_a_running_loop(cluster, client, workdir):
    async def notebook_cell() -> Any:  # run() inside a running loop, as in a notebook
        return run({"two": ["a", "b"], "one": ["c"]}, aliases=ALIASES, executor="dask",
                   dask_address=client, latency_ms=5)

    result = asyncio.run(notebook_cell())
    assert result.ok and len(result.tasks) == 3
    events = read_events(workdir / "data/logs/events.jsonl")
    assert next(e for e in events if e["kind"] == "run_started")["maxConcurrency"] == 4
    assert all(e["worker"] in client.nthreads() for e in events if e["kind"] == "task_complete")


@pytest.mark.slow
def test_limits_counts_and_worker_on_terminal_events(cluster, client, workdir):
    tasks = {alias: [f"{alias} task {i}" for i in range(5)] for alias in ALIASES}
    result = run(tasks, aliases=ALIASES, executor="dask", dask_address=cluster.scheduler_address,
                 latency_ms=150)
    assert result.ok and len(result.tasks) == 15
    events = read_events(workdir / "data/logs/events.jsonl")
    started = next(e for e in events if e["kind"] == "run_started")
    assert started["maxConcurrency"] == 4  # the global cap is the cluster's 2 x 2 threads

    running: Counter[str] = Counter()
    peak: Counter[str] = Counter()
    total = total_peak = 0
    for e in events:
        if e["kind"] == "task_started":
            running[e["alias"]] += 1
            total += 1
            peak[e["alias"]] = max(peak[e["alias"]], running[e["alias"]])
            total_peak = max(total_peak, total)
        elif e["kind"] in TERMINAL_KINDS:
            running[e["alias"]] -= 1
            total -= 1
    assert all(peak[a] <= limit for a, limit in (("one", 1), ("two", 2), ("three", 3)))
    assert total_peak == 4

    terminal = [e for e in events if e["kind"] in TERMINAL_KINDS]
    assert terminal_counts(events) == Counter({t.task_id: 1 for t in result.tasks})
    workers = set(client.nthreads())
    assert all(e["kind"] == "task_complete" and e["worker"] in workers for e in terminal)
    done = next(e for e in events if e["kind"] == "run_complete")
    assert done["counts"] == {"completed": 15}


@pytest.mark.slow
def test_cli_runs_on_the_cluster_and_streams_chunks_at_the_end(cluster, workdir, capsys):
    code = main(["run", "--example", "--executor", "dask", "--dask-address",
                 cluster.scheduler_address, "--stream", "--stub-latency-ms", "20", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["ok"] and summary["totalTasks"] == 5
    events = read_events(workdir / "data/logs/events.jsonl")
    for task_id in terminal_counts(events):
        mine = [e for e in events if e.get("taskId") == task_id]
        kinds = [e["kind"] for e in mine]
        assert kinds.count("task_chunk") >= 1
        assert kinds.index("task_started") < kinds.index("task_chunk") < kinds.index("task_complete")
        text = "".join(e["content"] for e in mine if e["kind"] == "task_chunk")
        output = json.loads((workdir / ".runs" / mine[0]["alias"] / task_id / "output.json")
                            .read_text())
        assert text == output["output"]["text"]  # every chunk, in order
        assert mine[-1]["worker"].startswith("tcp://127.0.0.1:")


@pytest.mark.slow
def test_cancel_cancels_the_futures(cluster, client, workdir):
    tasks = {"three": [f"long task {i}" for i in range(6)], "one": ["long design"]}

    async def scenario() -> Any:
        prepared = prepare_run(tasks, aliases=ALIASES, executor="dask",
                               dask_address=cluster.scheduler_address, latency_ms=120_000)
        execution = asyncio.create_task(prepared.execute())

        def executing() -> int:
            states = codexflow_tasks_on_workers(client)
            return sum(s == "executing" for keys in states.values() for s in keys.values())

        deadline = time.monotonic() + 30
        while await asyncio.to_thread(executing) < 4:  # the cap: 4 calls run on the workers
            assert time.monotonic() < deadline, "the tasks never ran on the cluster"
            await asyncio.sleep(0.05)
        prepared.cancel("test cancel")
        return await execution

    result = asyncio.run(scenario())
    assert result.cancelled == "test cancel"
    assert {t.status for t in result.tasks} == {"cancelled"}
    events = read_events(workdir / "data/logs/events.jsonl")
    assert terminal_counts(events) == Counter({t.task_id: 1 for t in result.tasks})
    # the calls were stopped on the workers, long before their 120 s of latency
    wait_until(lambda: not any(codexflow_tasks_on_workers(client).values())
               and not any(client.processing().values()), "the cluster to forget the tasks")


@pytest.mark.slow
def test_credentials_travel_to_workers_but_never_show(cluster, client, workdir, monkeypatch):
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def endpoint(request: Request) -> JSONResponse:
        if request.headers.get("authorization") != f"Bearer {SECRET}":
            return JSONResponse({"error": "bad key"}, 401)
        doc = json.loads(await request.body())
        return JSONResponse({"summary": f"done: {doc['task']}", "output": {"ok": True}})

    server = _Server(Starlette(routes=[Route("/run", endpoint, methods=["POST"])]))
    with server as url:
        tasks = {"two": ["first", "second", "third"]}
        # 1. the key from the driver travels once per worker, inside the runtime spec
        result = run(tasks, aliases=ALIASES, runtime="codex", url=url, api_key=SECRET,
                     executor="dask", dask_address=cluster.scheduler_address)
        assert result.ok, [t.error for t in result.tasks]
        # 2. or the workers read it from their own environment; the driver has none
        monkeypatch.delenv("CODEX_API_KEY", raising=False)
        client.run(lambda: os.environ.__setitem__("CODEX_API_KEY", SECRET))
        try:
            main(["run", "-f", _write(workdir / "t.json", tasks), "--aliases",
                  _write(workdir / "a.json", ALIASES), "--runtime", "codex", "--codex-url", url,
                  "--executor", "dask", "--dask-address", cluster.scheduler_address, "--json"])
        finally:
            client.run(lambda: os.environ.pop("CODEX_API_KEY", None))
        # each run closed the runtimes it opened on the workers: no connection is left open
        wait_until(lambda: not server.server.server_state.connections, "connections to close", 15)
    events = read_events(workdir / "data/logs/events.jsonl")
    assert sum(e["kind"] == "task_complete" for e in events) == 6
    places = [(workdir / "data/logs/events.jsonl").read_text(), repr(result)]
    places += [p.read_text() for p in (workdir / ".runs").rglob("*") if p.is_file()]
    places += [str(client.get_worker_logs()), str(client.get_scheduler_logs())]
    assert all(SECRET not in text for text in places)


# -- with a cluster of its own ------------------------------------------------------------------

@pytest.mark.slow
def test_worker_killed_mid_run_loses_no_task(lone_cluster, workdir):
    import distributed

    with distributed.Client(lone_cluster, set_as_default=False) as client:
        pids = client.run(os.getpid)
        victim = sorted(pids)[0]
        tasks = {"three": [f"task {i}" for i in range(6)]}
        lost: dict[str, str] = {}

        async def scenario() -> Any:
            prepared = prepare_run(tasks, aliases=ALIASES, executor="dask",
                                   dask_address=lone_cluster.scheduler_address, latency_ms=1500)
            execution = asyncio.create_task(prepared.execute())
            deadline = time.monotonic() + 30
            while not lost:
                assert time.monotonic() < deadline, "no task ever ran on the victim"
                states = await asyncio.to_thread(codexflow_tasks_on_workers, client)
                lost.update({k: s for k, s in states.get(victim, {}).items() if s == "executing"})
                await asyncio.sleep(0.02)
            os.kill(pids[victim], signal.SIGKILL)
            return await execution

        result = asyncio.run(scenario())
    assert result.ok, [(t.key, t.error) for t in result.tasks]
    events = read_events(workdir / "data/logs/events.jsonl")
    assert terminal_counts(events) == Counter({t.task_id: 1 for t in result.tasks})
    killed = {t.task_id for t in result.tasks if any(k.startswith(f"codexflow-{t.task_id}-a1-")
                                                      for k in lost)}
    assert killed, lost
    for t in result.tasks:
        if t.task_id in killed:
            assert t.attempts >= 2 and t.status == "completed"
            retry = next(e for e in events if e["kind"] == "task_retry" and e["taskId"] == t.task_id)
            assert retry["error"]["type"] == "WorkerLost" and victim in retry["error"]["message"]
            end = next(e for e in events if e["kind"] == "task_complete" and e["taskId"] == t.task_id)
            assert end["worker"] != victim and end["attempt"] >= 2


@pytest.mark.slow
def test_own_local_cluster_starts_and_closes(workdir):
    pytest.importorskip("distributed", reason="the dask extra is not installed")
    import psutil

    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    result = run({"two": ["a", "b", "c"]}, aliases=ALIASES, executor="dask", latency_ms=10)
    assert result.ok
    events = read_events(workdir / "data/logs/events.jsonl")
    assert all(e["worker"].startswith("tcp://127.0.0.1:") for e in events
               if e["kind"] == "task_complete")
    wait_until(lambda: {p.pid for p in me.children(recursive=True)
                        if p.status() != psutil.STATUS_ZOMBIE} <= before,
               "the local cluster's processes to exit", 30)


# -- helpers ----------------------------------------------------------------------------------

def _write(path: Path, doc: Any) -> str:
    path.write_text(json.dumps(doc))
    return str(path)


class _Server:
    """A Starlette app served by uvicorn on a free 127.0.0.1 port in a thread."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                                        timeout_keep_alive=120))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        wait_until(lambda: self.server.started, "the test endpoint to start", 15)
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()

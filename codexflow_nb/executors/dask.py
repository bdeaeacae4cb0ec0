"""The Dask executor: each task attempt's runtime call runs on a Dask distributed worker.

The engine stays on the driver: scheduling, per-alias limits, the global cap, retries, events
and the run store are unchanged. :class:`DaskRuntime` implements the runtime protocol by
submitting one Dask task per attempt. On the worker, a :class:`RuntimeHost` (a worker plugin,
sent once per worker when the run opens) builds the inner runtime from a :class:`RuntimeSpec`,
one per worker thread, each with its own event loop, so HTTP connections are reused across
tasks. Credentials travel in that spec (or come from the worker's environment), never in a
task's payload, and :class:`Secret` keeps them out of every ``repr``.

Streamed chunks are collected on the worker and delivered when the attempt ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import distributed
from distributed.client import FutureCancelledError
from distributed.comm.core import CommClosedError
from distributed.diagnostics.plugin import WorkerPlugin
from distributed.scheduler import KilledWorker

from .. import loops
from ..errors import ConfigError
from ..runtimes import make_runtime
from ..runtimes.base import ChunkCallback, Reply, Runtime, RuntimeCall, RuntimeFailure
from . import HTTP_CLIENT_ON_DASK

#: Options whose values are credentials; they are wrapped in :class:`Secret`.
SECRET_OPTIONS = frozenset({"api_key"})
#: Retries for retryable failures (a lost worker is one) when the inner runtime asks for fewer.
WORKER_LOSS_RETRIES = 2
#: How often a running call on a worker checks that its Dask task was not cancelled.
CANCEL_POLL_S = 0.1
#: Seconds to reach a scheduler.
CONNECT_TIMEOUT_S = 10.0


class Secret:
    """A credential that never shows itself: ``repr``/``str`` are masked; ``reveal()`` gives it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __reduce__(self) -> tuple[Any, ...]:
        return Secret, (self._value,)


@dataclass(frozen=True)
class RuntimeSpec:
    """How a worker builds the inner runtime: ``make_runtime(name, **options)``.

    ``env`` maps option names to environment variables read on the worker (when set there),
    for credentials that should come from the workers' environment instead of the driver.
    """

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.options.get("http_client") is not None:
            raise ConfigError(HTTP_CLIENT_ON_DASK)

    @classmethod
    def of(cls, name: str, options: Mapping[str, Any] | None = None,
           env: Mapping[str, str] | None = None) -> RuntimeSpec:
        """A spec with the credential options wrapped in :class:`Secret`."""
        wrapped = {k: Secret(v) if k in SECRET_OPTIONS and isinstance(v, str) else v
                   for k, v in (options or {}).items()}
        return cls(name, wrapped, dict(env or {}))

    def build(self) -> Runtime:
        """The inner runtime (not opened). Raises ConfigError for bad options."""
        options = {k: v.reveal() if isinstance(v, Secret) else v for k, v in self.options.items()}
        for option, variable in self.env.items():
            if os.environ.get(variable):
                options[option] = os.environ[variable]
        return make_runtime(self.name, **options)


# -- the worker side ----------------------------------------------------------------------------

class _Abandoned(Exception):
    """The Dask task was cancelled while its call ran; the call was cancelled too."""


class RuntimeHost(WorkerPlugin):
    """A worker plugin that runs calls with the inner runtime: one runtime and one event loop
    per worker thread, opened on first use and closed when the plugin is removed."""

    def __init__(self, name: str, spec: RuntimeSpec) -> None:
        self.name = name
        self.spec = spec
        self._local = threading.local()
        self._opened: list[tuple[asyncio.AbstractEventLoop, Runtime]] = []
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name, "spec": self.spec}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["name"], state["spec"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"RuntimeHost({self.name!r}, runtime={self.spec.name!r})"

    async def teardown(self, worker: distributed.Worker) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
        if opened:  # the loops belong to worker threads; close them from another thread
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.to_thread(_close_all, opened), 10)

    def _thread_runtime(self) -> tuple[asyncio.AbstractEventLoop, Runtime]:
        state = getattr(self._local, "state", None)
        if state is None:
            loop = loops.new_event_loop()
            try:
                runtime = self.spec.build()
                loop.run_until_complete(runtime.open(1))
            except BaseException:
                loop.close()
                raise
            state = self._local.state = (loop, runtime)
            with self._lock:
                self._opened.append(state)
        return state

    def execute(self, call: RuntimeCall, stream: bool, still_wanted: Callable[[], bool],
                address: str) -> dict[str, Any]:
        """Run one call; the outcome as a plain dict (nothing raised, so nothing logged)."""
        chunks: list[str] | None = [] if stream else None
        try:
            loop, runtime = self._thread_runtime()
            reply = loop.run_until_complete(_guarded(runtime, call, chunks, still_wanted))
        except RuntimeFailure as exc:
            return {"status": "failure", "worker": address, "message": str(exc), "type": exc.type,
                    "retryable": exc.retryable, "retry_after": exc.retry_after,
                    "http_status": exc.status, "chunks": chunks}
        except _Abandoned:
            return {"status": "abandoned", "worker": address}
        except Exception as exc:  # a runtime bug: reported, not raised
            return {"status": "error", "worker": address, "type": type(exc).__name__,
                    "message": str(exc)[:500]}
        return {"status": "ok", "worker": address, "reply": reply, "chunks": chunks}


def _close_all(opened: list[tuple[asyncio.AbstractEventLoop, Runtime]]) -> None:
    for loop, runtime in opened:
        if loop.is_running():  # still busy with an abandoned call; the process exit ends it
            continue
        with contextlib.suppress(Exception):
            loop.run_until_complete(runtime.close())
        loop.close()


async def _guarded(runtime: Runtime, call: RuntimeCall, chunks: list[str] | None,
                   still_wanted: Callable[[], bool]) -> Reply:
    """Run the call, cancelling it as soon as its Dask task is no longer wanted."""
    job = asyncio.ensure_future(runtime.run(call, chunks.append if chunks is not None else None))
    while True:
        done, _ = await asyncio.wait({job}, timeout=CANCEL_POLL_S)
        if done:
            return job.result()
        if not still_wanted():
            job.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await job
            raise _Abandoned


def run_on_worker(plugin_name: str, call: RuntimeCall, stream: bool) -> dict[str, Any]:
    """The function each Dask task runs: hand the call to this worker's :class:`RuntimeHost`."""
    worker = distributed.get_worker()
    host = worker.plugins.get(plugin_name)
    if not isinstance(host, RuntimeHost):
        return {"status": "error", "worker": worker.address, "type": "WorkerNotReady",
                "message": f"worker {worker.address} has no codexflow runtime {plugin_name!r}"}
    key = worker.get_current_task()

    def still_wanted() -> bool:
        task = worker.state.tasks.get(key)
        return task is not None and task.state not in ("cancelled", "released", "forgotten")

    return host.execute(call, stream, still_wanted, worker.address)


# -- the driver side ----------------------------------------------------------------------------

def start_local_cluster(n_workers: int | None = None, threads_per_worker: int = 1, *,
                        asynchronous: bool = False, **kwargs: Any) -> distributed.LocalCluster:
    """A ``LocalCluster`` of worker processes on 127.0.0.1 (one per core by default); its HTTP
    endpoints take free loopback ports. Await it when ``asynchronous``; then call
    :func:`count_worker_loss`."""
    settings: dict[str, Any] = {"n_workers": n_workers or local_cores(),
                                "threads_per_worker": threads_per_worker, "processes": True,
                                "host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"}
    settings.update(kwargs)
    cluster = distributed.LocalCluster(asynchronous=asynchronous, **settings)
    if not asynchronous:
        count_worker_loss(cluster)
    return cluster


def count_worker_loss(cluster: distributed.LocalCluster) -> None:
    """Make the scheduler report a task whose worker died instead of re-running it silently,
    so the engine sees the loss and retries it as a counted attempt."""
    cluster.scheduler.allowed_failures = 0


def local_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class DaskRuntime:
    """The runtime protocol over a Dask cluster.

    ``client_or_address``: a scheduler address (``tcp://host:port``), a ``distributed.Client``
    (its scheduler is used), or None to start a local cluster of ``n_workers`` processes (one
    per core by default) with ``threads_per_worker`` threads each, closed with the run.
    """

    def __init__(self, spec: RuntimeSpec, client_or_address: Any = None, *,
                 n_workers: int | None = None, threads_per_worker: int = 1,
                 connect_timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        inner = spec.build()  # validates the options on the driver, before anything starts
        self.spec = spec
        self.name = inner.name
        self.default_retries = max(inner.default_retries, WORKER_LOSS_RETRIES)
        if not (client_or_address is None or isinstance(client_or_address, str | distributed.Client)):
            raise ConfigError("dask_address must be a scheduler address such as "
                              "tcp://host:8786 or a distributed.Client")
        self.target = client_or_address
        self.n_workers = n_workers or local_cores()
        self.threads_per_worker = threads_per_worker
        self.connect_timeout_s = connect_timeout_s
        self._plugin_name = f"codexflow-runtime-{secrets.token_hex(4)}"
        self._client: distributed.Client | None = None
        self._own_client = False
        self._cluster: distributed.LocalCluster | None = None
        self._futures: set[distributed.Future] = set()
        self._open_error: str | None = None

    def __repr__(self) -> str:
        where = self.target if isinstance(self.target, str | None) else "Client"
        return f"DaskRuntime({self.spec.name!r}, {where!r})"

    @property
    def address(self) -> str | None:
        """The scheduler address once open."""
        return self._client.scheduler.address if self._client is not None else None

    def capacity(self) -> int:
        """The cluster's total worker threads (0 when it has none yet). Asks a given scheduler,
        so an unreachable one raises ConfigError."""
        if self.target is None:
            return self.n_workers * self.threads_per_worker
        if isinstance(self.target, distributed.Client):
            if self.target.asynchronous:
                threads = int(self.target.scheduler_info().get("total_threads", 0))
            else:
                threads = sum(self.target.nthreads().values())
            where = self.target.scheduler.address
        else:
            where = self.target
            try:
                with distributed.Client(where, timeout=self.connect_timeout_s,
                                        set_as_default=False) as probe:
                    threads = sum(probe.nthreads().values())
            except (OSError, TimeoutError, ValueError) as exc:
                raise ConfigError(f"cannot reach the Dask scheduler at {where}: "
                                  f"{exc or type(exc).__name__}") from None
        return threads

    async def open(self, max_connections: int) -> None:
        """Connect (starting a local cluster when no address was given) and install the
        runtime on the workers. A failure here fails each task with its message."""
        try:
            self._client = await self._connect()
            host = RuntimeHost(self._plugin_name, self.spec)
            await self._client.register_plugin(host, name=self._plugin_name)
        except Exception as exc:
            self._open_error = f"{type(exc).__name__}: {exc}"[:500]
            if isinstance(exc, ModuleNotFoundError):
                self._open_error += " (install codexflow-nb on every Dask worker)"

    async def _connect(self) -> distributed.Client:
        loop = asyncio.get_running_loop()
        target = self.target
        if isinstance(target, distributed.Client):
            if target.asynchronous and target.loop.asyncio_loop is loop:
                return target
            target = target.scheduler.address
        if target is None:
            self._cluster = await start_local_cluster(self.n_workers, self.threads_per_worker,
                                                      asynchronous=True)
            count_worker_loss(self._cluster)
            target = self._cluster.scheduler_address
        self._own_client = True
        return await distributed.Client(target, asynchronous=True, set_as_default=False,
                                        timeout=self.connect_timeout_s)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            if self._futures:
                with contextlib.suppress(Exception):
                    await client.cancel(list(self._futures))
            self._futures.clear()
            with contextlib.suppress(Exception):
                await client.unregister_worker_plugin(self._plugin_name)
            if self._own_client:
                with contextlib.suppress(Exception):
                    await client.close()
        cluster, self._cluster = self._cluster, None
        if cluster is not None:
            with contextlib.suppress(Exception):
                await cluster.close()

    async def run(self, call: RuntimeCall, on_chunk: ChunkCallback | None = None) -> Reply:
        client = self._client
        if client is None or self._open_error:
            raise RuntimeFailure(f"Dask cluster unavailable: {self._open_error or 'not open'}",
                                 type="ClusterUnavailable")
        key = f"codexflow-{call.task_id}-a{call.attempt}-{secrets.token_hex(3)}"
        call = replace(call, emit=None)  # a callback into this process: not sent
        future = client.submit(run_on_worker, self._plugin_name, call, on_chunk is not None,
                               key=key, pure=False, retries=0)
        self._futures.add(future)
        try:
            outcome = await future
        except asyncio.CancelledError:  # cancelled run or timeout: stop the work on the cluster
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.cancel([future]), 5)
            raise
        except KilledWorker as exc:
            worker = exc.last_worker.address
            raise RuntimeFailure(f"Dask worker {worker} died while running the task",
                                 type="WorkerLost", retryable=True,
                                 annotations={"worker": worker}) from None
        except (CommClosedError, FutureCancelledError, OSError) as exc:
            raise RuntimeFailure(f"lost the task on the Dask cluster: {type(exc).__name__}: {exc}",
                                 type="WorkerLost", retryable=True) from None
        except Exception as exc:  # e.g. the call could not be unpickled on the worker
            raise RuntimeFailure(f"Dask task failed: {type(exc).__name__}: {exc}"[:500],
                                 type=type(exc).__name__) from None
        finally:
            self._futures.discard(future)
        return self._unpack(outcome, on_chunk)

    @staticmethod
    def _unpack(outcome: dict[str, Any], on_chunk: ChunkCallback | None) -> Reply:
        worker = outcome["worker"]
        if on_chunk is not None:  # chunks arrive when the attempt ends, in order
            for piece in outcome.get("chunks") or []:
                on_chunk(piece)
        status = outcome["status"]
        if status == "ok":
            reply: Reply = outcome["reply"]
            reply.annotations = {**(reply.annotations or {}), "worker": worker}
            return reply
        if status == "failure":
            raise RuntimeFailure(outcome["message"], type=outcome["type"],
                                 retryable=outcome["retryable"], retry_after=outcome["retry_after"],
                                 status=outcome["http_status"], annotations={"worker": worker})
        if status == "abandoned":
            raise RuntimeFailure(f"the task was cancelled on Dask worker {worker}",
                                 type="Cancelled", annotations={"worker": worker})
        raise RuntimeFailure(outcome["message"], type=outcome["type"],
                             annotations={"worker": worker})

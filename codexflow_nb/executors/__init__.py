"""Executors: where each task attempt's runtime call runs.

``local`` (the default) runs the runtime in the engine's own event loop. ``dask`` keeps the
engine on the driver and sends each runtime call to a Dask distributed cluster
(:mod:`codexflow_nb.executors.dask`, needs the ``dask`` extra).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..engine import RunOptions
    from ..runtimes.base import Runtime

EXECUTORS = ("local", "dask")
MISSING_DASK = ("--executor dask needs the 'distributed' package: "
                "pip install codexflow-nb[dask]")
HTTP_CLIENT_ON_DASK = (
    "http_client= cannot be used with executor='dask': a client object cannot be shipped to "
    "Dask workers (each worker builds its own HTTP session); drop http_client= and configure "
    "the workers instead (HTTPS_PROXY/HTTP_PROXY/NO_PROXY in their environment, ca_bundle= "
    "with a path they can read), or use executor='local' to keep your client")


def require_distributed() -> None:
    """Raise a ConfigError naming the extra when ``distributed`` cannot be imported."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise ConfigError(MISSING_DASK) from None


def executor_runtime(executor: str, runtime: str | Runtime, runtime_options: dict[str, Any],
                     run_options: RunOptions, dask_address: Any = None) -> Runtime | None:
    """The runtime to hand the engine for ``executor``, or None for the local executor.

    For ``dask`` the named runtime is wrapped in a :class:`~.dask.DaskRuntime` (rebuilt on each
    worker), a given scheduler must answer, and without ``max_concurrency`` the global cap
    becomes the cluster's thread count.
    """
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}: choose local or dask")
    if executor == "local":
        if dask_address is not None:
            raise ConfigError("a Dask address was given but the executor is local: "
                              "add --executor dask (executor='dask')")
        return None
    if runtime_options.get("http_client") is not None:
        raise ConfigError(HTTP_CLIENT_ON_DASK)
    require_distributed()
    from .dask import DaskRuntime, RuntimeSpec

    if isinstance(runtime, DaskRuntime):
        if dask_address is not None:
            raise ConfigError("give the cluster to DaskRuntime(...), not also dask_address")
        rt = runtime
    elif isinstance(runtime, str):
        options = {k: v for k, v in runtime_options.items() if v is not None}
        env = {"api_key": "CODEX_API_KEY"} if runtime == "codex" and not options.get("api_key") else {}
        rt = DaskRuntime(RuntimeSpec.of(runtime, {**options, "stream": run_options.stream}, env=env),
                         dask_address)
    else:
        raise ConfigError(f"executor 'dask' rebuilds the runtime on each worker, so it needs a "
                          f"runtime name ('stub' or 'codex') or a DaskRuntime, not a "
                          f"{type(runtime).__name__} object")
    threads = rt.capacity()  # asks a given scheduler: an unreachable one is a ConfigError here
    if run_options.max_concurrency is None:
        if threads <= 0:
            raise ConfigError("the Dask cluster has no workers yet: start some, or pass "
                              "--max-concurrency (max_concurrency=) to set the global cap")
        run_options.max_concurrency = threads
    return rt

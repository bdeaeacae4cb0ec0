"""The event loops codexflow_nb starts itself: uvloop when it is installed (a dependency on
Linux and macOS), asyncio's own otherwise, or as ``$CODEXFLOW_LOOP`` says.

This covers ``codex-flow run``, ``cf.run()`` and the ``%%codexflow`` magic, which own their
loop. ``run_async`` and the dashboard run on the caller's loop (a notebook kernel's is
asyncio's) and are not affected. Measured in ``bench/`` (docs/PERFORMANCE.md): uvloop ran
the same HTTP workload at 1.07-1.35x the tasks/s, and its timers overshoot a 50 ms sleep by
less than asyncio's, whose ``epoll`` timeout is rounded up to the next millisecond.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .errors import ConfigError

#: ``auto`` (default: uvloop if installed), ``uvloop`` (required) or ``asyncio``.
LOOP_ENV = "CODEXFLOW_LOOP"
T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory for a new loop; None means asyncio's default."""
    choice = (os.environ.get(LOOP_ENV) or "auto").strip().lower()
    if choice not in ("auto", "uvloop", "asyncio"):
        raise ConfigError(f"${LOOP_ENV} must be auto, uvloop or asyncio, not {choice!r}")
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigError(f"${LOOP_ENV}=uvloop, but uvloop is not installed "
                              "(pip install uvloop; not available on Windows)") from None
        return None
    return uvloop.new_event_loop


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new loop of the configured kind (not set as the thread's current loop)."""
    factory = loop_factory()
    return factory() if factory is not None else asyncio.new_event_loop()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on a loop of the configured kind."""
    try:
        factory = loop_factory()
    except ConfigError:
        coro.close()  # never awaited: no "coroutine was never awaited" warning
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def loop_kind(loop: asyncio.AbstractEventLoop) -> str:
    """``uvloop`` or ``asyncio`` (or the module of another loop class)."""
    module = type(loop).__module__.partition(".")[0]
    return "asyncio" if module == "asyncio" else module

"""The runtime protocol: what the engine asks of a runtime, and what it gets back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

ChunkCallback = Callable[[str], None]
#: ``emit(kind, **fields)``: an event about the task (``task_step``, ``task_workspace``).
EmitCallback = Callable[..., None]


@dataclass(frozen=True)
class RuntimeCall:
    """One attempt at one task, as handed to a runtime."""

    run_id: str
    task_id: str
    key: str
    alias: str
    agent_id: str
    agent: dict[str, Any]
    task: str
    attempt: int = 1
    context: list[dict[str, Any]] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    timeout_s: float | None = None
    #: ``(alias, taskId)`` of the task's dependencies, in plan order.
    deps: tuple[tuple[str, str], ...] = ()
    #: The task's folder in the run store (``.runs/<alias>/<taskId>``), if there is one.
    task_dir: str | None = None
    #: Emits an event for this task (runtimes that report steps use it).
    emit: EmitCallback | None = None


@dataclass
class Reply:
    """A successful reply: ``{summary, output, logs?, usage? {tokensIn, tokensOut}}``."""

    summary: str
    output: Any
    usage: dict[str, int] | None = None
    logs: list[Any] | None = None
    model: str | None = None
    chunks: list[str] | None = None
    #: Extra fields for the task's terminal event (e.g. ``{"worker": "tcp://..."}``).
    annotations: dict[str, Any] | None = None


class RuntimeFailure(Exception):
    """A failed attempt. ``retryable`` failures are retried by the engine (with backoff,
    honouring ``retry_after`` seconds when given)."""

    def __init__(self, message: str, *, type: str = "RuntimeError", retryable: bool = False,
                 retry_after: float | None = None, status: int | None = None,
                 annotations: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.annotations = annotations
        self.type = type
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status


@runtime_checkable
class Runtime(Protocol):
    """A runtime runs one task attempt. It may call ``on_chunk`` with streamed text."""

    name: str
    default_retries: int

    async def open(self, max_connections: int) -> None: ...

    async def close(self) -> None: ...

    async def run(self, call: RuntimeCall, on_chunk: ChunkCallback | None = None) -> Reply: ...

"""The ``codex-cli`` and ``claude-code`` providers: each request runs the real agent CLI through
the same runtime as ``codex-flow run --runtime codex-cli`` (:mod:`codexflow_nb.runtimes.agent_cli`),
in its own workspace, with an explicit environment (never the server's whole one). The reply
carries the agent's final message, its steps and its change (files and the patch)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from ...engine import new_run_id
from ...runtimes.agent_cli import AgentCliRuntime
from ...runtimes.base import Reply, RuntimeCall, RuntimeFailure
from .base import AgentRequest, ProviderError, ProviderReply

#: Characters of a patch sent back in a reply (the server's run store keeps it whole).
PATCH_LIMIT = 1024 * 1024


class AgentCliProvider:
    """Serves ``POST /run`` with a coding-agent CLI; ``runtime`` is checked at start-up."""

    def __init__(self, runtime: AgentCliRuntime, *, timeout_s: float, runs_dir: str) -> None:
        self.runtime = runtime
        self.name = runtime.name
        self.timeout_s = timeout_s
        self.runs_dir = runs_dir

    def _call(self, request: AgentRequest, steps: list[dict[str, Any]]) -> RuntimeCall:
        run_id = new_run_id()
        task_id = f"{run_id}-000001"

        def emit(kind: str, **fields: Any) -> None:
            if kind == "task_step":
                steps.append(fields)

        return RuntimeCall(run_id, task_id, "serve", request.alias, request.agent.id,
                           request.agent.data, request.task, 1, request.context, {},
                           self.timeout_s, (), os.path.join(self.runs_dir, request.alias, task_id),
                           emit)

    async def complete(self, request: AgentRequest) -> ProviderReply:
        steps: list[dict[str, Any]] = []
        call = self._call(request, steps)
        return self._reply(call, await self._run(call, None), steps)

    async def stream(self, request: AgentRequest) -> AsyncIterator[str | ProviderReply]:
        steps: list[dict[str, Any]] = []
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        call = self._call(request, steps)
        job = asyncio.ensure_future(self._run(call, queue.put_nowait))
        job.add_done_callback(lambda _: queue.put_nowait(None))
        try:
            while (piece := await queue.get()) is not None:
                yield piece
            yield self._reply(call, job.result(), steps)
        finally:  # the client went away: end the agent's whole process tree
            if not job.done():
                job.cancel()
                with contextlib.suppress(asyncio.CancelledError, ProviderError):
                    await job

    async def _run(self, call: RuntimeCall, on_chunk: Any) -> Reply:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self.runtime.run(call, on_chunk)
        except TimeoutError:
            raise ProviderError(504, f"{self.name} did not finish within {self.timeout_s:g} s"
                                ) from None
        except RuntimeFailure as exc:
            raise ProviderError(502 if exc.retryable else 424, f"{self.name}: {exc}") from None

    def _reply(self, call: RuntimeCall, reply: Reply, steps: list[dict[str, Any]]) -> ProviderReply:
        """The contract's reply: the final message, and as output the change with its patch
        (capped) and the steps as logs."""
        output = dict(reply.output or {})
        assert call.task_dir is not None
        try:
            with open(os.path.join(call.task_dir, "changes.patch"), "rb") as fh:
                patch = fh.read(PATCH_LIMIT + 1).decode(errors="replace")
        except OSError:
            patch = None
        if patch is not None:
            output["patch"] = patch if len(patch) <= PATCH_LIMIT else (
                patch[:PATCH_LIMIT] + "\n... (patch cut; the endpoint's run store has it all)\n")
        return ProviderReply(text=str(output.get("message") or ""),
                             model=reply.model or self.name, usage=reply.usage or None,
                             extra={**output, "steps": steps})

"""The stub runtime: no network, deterministic replies, simulated latency."""

from __future__ import annotations

import asyncio
import hashlib
import time

from .base import ChunkCallback, Reply, RuntimeCall


def _digest(*parts: str) -> int:
    return int.from_bytes(hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest(), "big")


class StubRuntime:
    """Replies built from alias, agent and task; the same input always gives the same reply.

    ``latency_ms`` is the simulated time per task; with ``jitter`` (0..1) each task's latency is
    spread deterministically around it. ``cpu_ms`` burns real CPU (for scale-out tests);
    ``stream`` sends the output in ``chunks`` pieces.
    """

    name = "stub"
    default_retries = 0

    def __init__(self, latency_ms: float = 20.0, *, jitter: float = 0.0, cpu_ms: float = 0.0,
                 stream: bool = False, chunks: int = 4) -> None:
        if latency_ms < 0 or cpu_ms < 0 or not 0 <= jitter <= 1:
            raise ValueError("latency_ms and cpu_ms must be >= 0 and jitter in [0, 1]")
        self.latency_ms = latency_ms
        self.jitter = jitter
        self.cpu_ms = cpu_ms
        self.stream = stream
        self.chunks = max(1, chunks)

    async def open(self, max_connections: int) -> None:
        return None

    async def close(self) -> None:
        return None

    def latency_for(self, call: RuntimeCall) -> float:
        """Seconds of simulated latency for this call (deterministic)."""
        base = self.latency_ms / 1000.0
        if not self.jitter or not base:
            return base
        spread = (_digest(call.alias, call.task) % 10_000) / 10_000 * 2 - 1
        return base * (1 + self.jitter * spread)

    async def run(self, call: RuntimeCall, on_chunk: ChunkCallback | None = None) -> Reply:
        if self.cpu_ms:
            end = time.process_time() + self.cpu_ms / 1000
            while time.process_time() < end:
                pass
        agent = call.agent.get("agent", {})
        name = agent.get("name", call.agent_id)
        focus = ", ".join((call.agent.get("capabilities") or {}).get("core", [])[:3]) or "general work"
        primary = (call.agent.get("responsibilities") or {}).get("primary") or []
        steps = [f"{i}. {r}" for i, r in enumerate(primary[:3], 1)] or ["1. Work through the task."]
        summary = f"[{call.alias}] {name}: {call.task[:80]}"
        text = "\n".join([f"{name} ({call.agent_id}) on: {call.task}", f"Focus: {focus}", *steps])
        if call.context:
            text += f"\nBuilt on {len(call.context)} earlier result(s): " + ", ".join(
                str(c.get("key") or c.get("taskId")) for c in call.context)
        delay = self.latency_for(call)
        chunks: list[str] | None = None
        if self.stream and on_chunk is not None:
            size = max(1, -(-len(text) // self.chunks))
            chunks = [text[i:i + size] for i in range(0, len(text), size)]
            for piece in chunks:
                await asyncio.sleep(delay / len(chunks))
                on_chunk(piece)
        else:
            await asyncio.sleep(delay)
        usage = {"tokensIn": 40 + len(call.task) // 4, "tokensOut": len(text) // 4}
        output = {"text": text, "agent": call.agent_id, "alias": call.alias}
        return Reply(summary=summary, output=output, usage=usage, model="stub", chunks=chunks)

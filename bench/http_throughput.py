"""HTTP throughput: N tasks over 3 aliases against a zero-latency loopback endpoint
(`codex-flow serve`, echo provider, its own process), events and `.runs` on.

Baseline in the same run: a bare aiohttp client posting the same bodies at the same total
concurrency. Also reported: limit 16 per alias, and streaming (SSE).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson
from _common import header, parser, table
from _endpoint import endpoint

import codexflow_nb as cf
from codexflow_nb.runtimes import Reply, RuntimeCall


def aliases(limit: int) -> dict[str, dict]:
    return {f"a{i}": {"id": "coder", "overrides": {"runtime": {"concurrency": {
        "max_parallel_tasks": limit}}}} for i in range(3)}


def tasks(n: int) -> dict[str, list[str]]:
    return {f"a{i}": [f"task {j} of a{i}" for j in range(n // 3)] for i in range(3)}


async def bare(url: str, n: int, concurrency: int, stream: bool = False) -> float:
    bodies = [{"agentId": "coder", "alias": a, "task": t} for a, items in tasks(n).items() for t in items]
    sem = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def one(body: dict) -> None:
            if stream:  # read the whole SSE stream, as the engine does
                async with sem, session.post(f"{url}/run?stream=1", json=body,
                                             headers={"accept": "text/event-stream"}) as resp:
                    text = await resp.text()
                    assert resp.status == 200 and '"complete"' in text
                return
            async with sem, session.post(f"{url}/run", json=body) as resp:
                doc = await resp.json()
                assert resp.status == 200 and "summary" in doc

        t0 = time.perf_counter()
        await asyncio.gather(*(one(b) for b in bodies))
        return time.perf_counter() - t0


class BareAiohttpRuntime:
    """Bench only: the JSON path of the codex runtime with aiohttp used directly, no httpx.
    It separates the engine's own cost from the HTTP stack's (no retries or error mapping)."""

    name = "codex"
    default_retries = 0

    def __init__(self, url: str) -> None:
        self.url = f"{url}/run"

    async def open(self, max_connections: int) -> None:
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=max_connections))

    async def close(self) -> None:
        await self.session.close()

    async def run(self, call: RuntimeCall, on_chunk: object = None) -> Reply:
        body = orjson.dumps({"agentId": call.agent_id, "alias": call.alias, "task": call.task})
        async with self.session.post(self.url, data=body,
                                     headers={"content-type": "application/json"}) as resp:
            doc = orjson.loads(await resp.read())
        return Reply(doc["summary"], doc["output"], doc.get("usage"))


def engine(url: str, n: int, limit: int, tmp: Path, stream: bool = False,
           runtime: object = "codex") -> float:
    t0 = time.perf_counter()
    result = asyncio.run(cf.run_async(tasks(n), aliases=aliases(limit), runtime=runtime, url=url,
                                      stream=stream, log_file=tmp / "events.jsonl",
                                      runs_dir=tmp / "runs", keep_outputs=False))
    elapsed = time.perf_counter() - t0
    assert result.ok and len(result.tasks) == n, result.summary()
    return elapsed


def store_rate(root: Path, n: int) -> float:
    """Baseline for the disk: `.runs` writes per second with no engine at all."""
    from codexflow_nb.runstore import RunStore

    store = RunStore(root / "raw", background=False)
    doc = {"ok": True, "summary": "s" * 80, "output": {"text": "x" * 400}}
    t0 = time.perf_counter()
    for i in range(n):
        store.save("a0", f"t{i:06d}", {"task": {"task": f"task {i}"}}, doc)
    return n / (time.perf_counter() - t0)


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    n = 90 if args.short else 900
    header("HTTP throughput")
    rows = []
    shm = Path("/dev/shm")
    with endpoint(0) as url, tempfile.TemporaryDirectory() as disk, \
            tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as ram:
        asyncio.run(bare(url, 30, 6))  # warm up the endpoint
        for where, tmp in (("disk", Path(disk)), ("tmpfs", Path(ram))):
            print(f"run store on {where} ({tmp}): {store_rate(tmp, n):,.0f} task dirs/s written "
                  "with no engine")
        for limit, stream in ((2, False), (16, False), (2, True)):
            base = asyncio.run(bare(url, n, 3 * limit, stream))
            for where, tmp in (("disk", Path(disk)), ("tmpfs", Path(ram))):
                eng = engine(url, n, limit, tmp, stream)
                rows.append(["codex", limit, "sse" if stream else "json", where, n,
                             f"{n / base:,.0f}", f"{n / eng:,.0f}", f"{base / eng:.2f}"])
                if not stream:
                    eng = engine(url, n, limit, tmp, runtime=BareAiohttpRuntime(url))
                    rows.append(["bare-aiohttp*", limit, "json", where, n, f"{n / base:,.0f}",
                                 f"{n / eng:,.0f}", f"{base / eng:.2f}"])
    print()
    print(table(rows, ["runtime", "limit/alias", "mode", "log+.runs on", "tasks",
                       "bare aiohttp req/s", "engine tasks/s", "engine/bare"]))
    print("* bench-only runtime: the engine with aiohttp used directly instead of the codex "
          "runtime's httpx stack")
    print("\ntargets (limit 2, json): >= 3,000 tasks/s and >= 0.4 of the bare client")


if __name__ == "__main__":
    main()

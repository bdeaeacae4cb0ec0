"""HTTP throughput: N tasks over 3 aliases against a zero-latency loopback endpoint
(`codex-flow serve`, echo provider, its own process), events and `.runs` on.

Baseline in the same run: a bare aiohttp client posting the same bodies at the same total
concurrency. Also reported: limit 16 per alias, and streaming (SSE).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path

import aiohttp
from _common import disk_tmp, header, loop_kinds, median, parser, run_on, table, verdict
from _endpoint import endpoint

import codexflow_nb as cf

#: Runs of each configuration; the table shows medians.
REPEATS = 5


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


def engine(loop: str, url: str, n: int, limit: int, tmp: Path, stream: bool = False) -> float:
    shutil.rmtree(tmp / "runs", ignore_errors=True)
    (tmp / "events.jsonl").unlink(missing_ok=True)
    t0 = time.perf_counter()
    result = run_on(loop, cf.run_async(tasks(n), aliases=aliases(limit), runtime="codex", url=url,
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
    n, repeats = (90, 1) if args.short else (900, REPEATS)
    header("HTTP throughput")
    rows = []
    targets: list[tuple[str, str, float, float]] = []  # (loop, where, tasks/s, engine/bare)
    shm = Path("/dev/shm")
    with endpoint(0) as url, disk_tmp() as disk, \
            tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as ram:
        run_on("asyncio", bare(url, 30, 6))  # warm up the endpoint
        places = (("disk", Path(disk)), ("tmpfs", Path(ram)))
        for where, tmp in places:
            print(f"run store on {where} ({tmp}): {store_rate(tmp, n):,.0f} task dirs/s written "
                  "with no engine")
        for loop in loop_kinds():
            for limit, stream in ((2, False), (16, False), (2, True)):
                times: dict[str, list[float]] = {"bare": [], "disk": [], "tmpfs": []}
                for _ in range(repeats):  # interleaved, so a noisy moment hits all columns alike
                    times["bare"].append(run_on(loop, bare(url, n, 3 * limit, stream)))
                    for where, tmp in places:
                        times[where].append(engine(loop, url, n, limit, tmp, stream))
                base = median(times["bare"])
                for where, _ in places:
                    eng = median(times[where])
                    if limit == 2 and not stream:
                        targets.append((loop, where, n / eng, base / eng))
                    rows.append([loop, limit, "sse" if stream else "json", where, n,
                                 f"{n / base:,.0f}", f"{n / eng:,.0f}", f"{base / eng:.2f}"])
    print()
    print(table(rows, ["loop", "limit/alias", "mode", "log+.runs on", "tasks", "bare aiohttp req/s",
                       "engine tasks/s", "engine/bare"]))
    print(f"\nmedians of {repeats} interleaved runs; targets (limit 2, json, disk): "
          ">= 3,000 tasks/s and >= 0.4 of the bare client\nloop: uvloop is what codex-flow run "
          "and cf.run() use, asyncio a notebook's loop; the bare client runs on the same loop")
    on_disk = [t for t in targets if t[1] == "disk"]
    others = "; ".join(f"{where} {loop} {rate:,.0f}/s {ratio:.2f}"
                       for loop, where, rate, ratio in targets if where != "disk")
    verdict("http_throughput", all(rate >= 3000 and ratio >= 0.4 for _, _, rate, ratio in on_disk),
            "limit 2, json, .runs on disk: >= 3,000 tasks/s and >= 0.4 of bare aiohttp: "
            + "; ".join(f"{loop} {rate:,.0f}/s {ratio:.2f}" for loop, _, rate, ratio in on_disk)
            + f" (for comparison {others})", short=args.short)


if __name__ == "__main__":
    main()

"""Packing efficiency: 900 tasks over 3 aliases with limit 2 each, every task taking 50 ms.

Ideal makespan = tasks / total slots x latency = 900 / 6 x 50 ms = 7.5 s. Reported: ideal / actual,
through the stub runtime and through the HTTP runtime against the demo endpoint (echo provider
with a fixed 50 ms latency, run in its own process on a loopback port).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from _common import disk_tmp, header, loop_kinds, parser, run_on, table, verdict
from _endpoint import endpoint, raw_endpoint

import codexflow_nb as cf

ALIASES = {f"a{i}": {"id": "coder", "overrides": {"runtime": {"concurrency": {"max_parallel_tasks": 2}}}}
           for i in range(3)}


def tasks(n: int) -> dict[str, list[str]]:
    return {a: [f"task {j} of {a}" for j in range(n // 3)] for a in ALIASES}


async def bare(url: str, n: int, concurrency: int) -> float:
    """Baseline: a bare aiohttp client posting the same bodies, 6 at a time, no engine."""
    import aiohttp

    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def one(alias: str, text: str) -> None:
            async with sem, session.post(f"{url}/run", json={
                    "agentId": "coder", "alias": alias, "task": text}) as resp:
                assert resp.status == 200 and "summary" in await resp.json()

        t0 = time.perf_counter()
        await asyncio.gather(*(one(a, t) for a, items in tasks(n).items() for t in items))
        return time.perf_counter() - t0


def makespan(loop: str, n: int, tmp: Path, **runtime: object) -> tuple[float, float, float]:
    """(wall seconds incl. start-up, run seconds from the log, mean task ms from the log)."""
    log = tmp / f"events-{loop}-{runtime['runtime']}.jsonl"
    t0 = time.perf_counter()
    result = run_on(loop, cf.run_async(tasks(n), aliases=ALIASES, log_file=log,
                                       runs_dir=tmp / f"runs-{loop}", **runtime))
    elapsed = time.perf_counter() - t0
    assert result.ok and len(result.tasks) == n, result.summary()
    events = [json.loads(line) for line in log.read_text().splitlines()]
    run_s = next(e["ms"] for e in events if e["kind"] == "run_complete") / 1000
    task_ms = [e["ms"] for e in events if e["kind"] == "task_complete"]
    return elapsed, run_s, sum(task_ms) / len(task_ms)


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    n, latency = (90, 0.05) if args.short else (900, 0.05)
    ideal = n / 6 * latency
    header("packing efficiency")
    rows = []
    ratios: list[tuple[str, str, float]] = []  # (loop, runtime, ideal/actual)
    with disk_tmp() as tmp, endpoint(latency_ms=latency * 1000) as url:
        cases = [("stub", {"runtime": "stub", "latency_ms": latency * 1000}),
                 ("codex (HTTP)", {"runtime": "codex", "url": url})]
        with raw_endpoint(latency * 1000) as raw_url:
            floor_s = run_on(loop_kinds()[0], bare(raw_url, n, 6))
        rows.append([loop_kinds()[0], "bare aiohttp, minimal server", n, f"{ideal:.2f}",
                     f"{floor_s:.2f}", f"{ideal / floor_s:.3f}", "-", "-", "-"])
        for loop in loop_kinds():
            bare_s = run_on(loop, bare(url, n, 6))
            rows.append([loop, "bare aiohttp, same endpoint", n, f"{ideal:.2f}", f"{bare_s:.2f}",
                         f"{ideal / bare_s:.3f}", "-", "-", "-"])
            for label, runtime in cases:
                wall, run_s, mean_ms = makespan(loop, n, Path(tmp), **runtime)
                packing = mean_ms / 1000 * n / (run_s * 6)
                ratios.append((loop, label, ideal / wall))
                rows.append([loop, label, n, f"{ideal:.2f}", f"{wall:.2f}", f"{ideal / wall:.3f}",
                             f"{run_s:.2f}", f"{mean_ms:.2f}", f"{packing:.3f}"])
    print(table(rows, ["loop", "runtime", "tasks", "ideal s", "actual s", "ideal/actual", "run s (log)",
                       "mean task ms", "busy slots"]))
    print("\nactual: wall time of run_async, start-up included; run s: run_started to "
          "run_complete;\nbusy slots: sum of task time / (run s x 6 slots), the share of slot "
          "time spent inside tasks")
    print("minimal server: a 30-line asyncio HTTP server that sleeps 50 ms, the floor for any "
          "client here")
    print("loop: uvloop is what codex-flow run and cf.run() use; asyncio is a notebook's loop "
          "(run_async, dashboard)\nthe endpoint (codex-flow serve) runs on uvloop either way")
    print("\ntarget: ideal/actual >= 0.98 for both")
    verdict("packing", all(r >= 0.98 for *_, r in ratios), "ideal/actual >= 0.98 for the stub and "
            "HTTP runtimes: " + "; ".join(f"{loop} {label} {r:.3f}" for loop, label, r in ratios),
            short=args.short)


if __name__ == "__main__":
    main()

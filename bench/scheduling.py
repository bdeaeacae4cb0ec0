"""Scheduling overhead: N zero-latency tasks over 8 aliases (limits 1..16), events to a real log.

Baseline in the same run: bare asyncio tasks behind per-alias semaphores, no events, no store.
"""

from __future__ import annotations

import asyncio
import gc
import time
from pathlib import Path

from _common import ZeroRuntime, disk_tmp, header, loop_kinds, parser, run_on, table, verdict

from codexflow_nb import Plan, load_registry
from codexflow_nb.aliases import Aliases
from codexflow_nb.api import Run
from codexflow_nb.engine import RunOptions

LIMITS = [1, 2, 3, 4, 6, 8, 12, 16]
ALIASES = {f"a{i}": {"id": "coder", "overrides": {"runtime": {"concurrency": {"max_parallel_tasks": n}}}}
           for i, n in enumerate(LIMITS)}


def task_map(n: int) -> dict[str, list[str]]:
    per = n // len(LIMITS)
    return {alias: [f"task {j}" for j in range(per)] for alias in ALIASES}


async def bare(n: int) -> float:
    sems = {a: asyncio.Semaphore(limit) for a, limit in zip(ALIASES, LIMITS, strict=True)}

    async def one(alias: str) -> None:
        async with sems[alias]:
            await asyncio.sleep(0)

    tasks = task_map(n)
    t0 = time.perf_counter()
    await asyncio.gather(*(one(a) for a, items in tasks.items() for _ in items))
    return time.perf_counter() - t0


def engine_run(loop: str, n: int, tmp: Path, *, store: bool) -> float:
    registry = load_registry()
    plan = Plan.from_task_map(task_map(n))
    resolved = plan.validate(registry, Aliases(ALIASES))
    opts = RunOptions(log_file=tmp / f"events-{loop}-{n}-{store}.jsonl",
                      runs_dir=(tmp / f"runs-{loop}-{n}") if store else None, keep_outputs=False)
    run = Run(plan, resolved, ZeroRuntime(), opts)
    gc.collect()
    t0 = time.perf_counter()
    run_on(loop, run.execute())
    return time.perf_counter() - t0


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    sizes = [1_000, 4_000] if args.short else [1_000, 10_000, 20_000, 100_000]
    header("scheduling overhead")
    rows = []
    rates: list[tuple[float, str]] = []  # (engine tasks/s, where) for the verdict
    with disk_tmp() as tmp:
        for loop in loop_kinds():
            for n in sizes:
                base = run_on(loop, bare(n))
                eng = engine_run(loop, n, Path(tmp), store=False)
                rates.append((n / eng, f"{loop}, {n:,} tasks"))
                eng_store = engine_run(loop, n, Path(tmp), store=n <= 20_000)
                rows.append([loop, n, f"{n / base:,.0f}", f"{n / eng:,.0f}",
                             f"{eng / n * 1e6:.1f}", f"{base / eng:.2f}",
                             f"{n / eng_store:,.0f}" if n <= 20_000 else "-"])
    print(table(rows, ["loop", "tasks", "bare tasks/s", "engine tasks/s", "us/task", "engine/bare",
                       "with .runs tasks/s"]))
    print("\nengine: events to a real log file (4 lines per task: queued, started, telemetry, complete); target >= 20,000 tasks/s")
    low, where = min(rates)
    verdict("scheduling", low >= 20_000, f"engine with events >= 20,000 tasks/s: lowest "
            f"{low:,.0f} tasks/s ({where})", short=args.short)


if __name__ == "__main__":
    main()

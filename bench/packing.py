"""Packing efficiency: 900 tasks over 3 aliases with limit 2 each, every task taking 50 ms.

Ideal makespan = tasks / total slots x latency = 900 / 6 x 50 ms = 7.5 s. Reported: ideal / actual,
through the stub runtime and through the HTTP runtime against the demo endpoint (echo provider
with a fixed 50 ms latency, run in its own process on a loopback port).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from _common import header, parser, table
from _endpoint import endpoint

import codexflow_nb as cf

ALIASES = {f"a{i}": {"id": "coder", "overrides": {"runtime": {"concurrency": {"max_parallel_tasks": 2}}}}
           for i in range(3)}


def tasks(n: int) -> dict[str, list[str]]:
    return {a: [f"task {j} of {a}" for j in range(n // 3)] for a in ALIASES}


def makespan(n: int, tmp: Path, **runtime: object) -> float:
    t0 = time.perf_counter()
    result = asyncio.run(cf.run_async(tasks(n), aliases=ALIASES, log_file=tmp / "events.jsonl",
                                      runs_dir=tmp / "runs", **runtime))
    elapsed = time.perf_counter() - t0
    assert result.ok and len(result.tasks) == n, result.summary()
    return elapsed


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    n, latency = (90, 0.05) if args.short else (900, 0.05)
    ideal = n / 6 * latency
    header("packing efficiency")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t = makespan(n, Path(tmp), runtime="stub", latency_ms=latency * 1000)
        rows.append(["stub", n, f"{ideal:.2f}", f"{t:.2f}", f"{ideal / t:.3f}"])
        with endpoint(latency_ms=latency * 1000) as url:
            t = makespan(n, Path(tmp), runtime="codex", url=url)
            rows.append(["codex (HTTP)", n, f"{ideal:.2f}", f"{t:.2f}", f"{ideal / t:.3f}"])
    print(table(rows, ["runtime", "tasks", "ideal s", "actual s", "ideal/actual"]))
    print("\ntarget: ideal/actual >= 0.98 for both")


if __name__ == "__main__":
    main()

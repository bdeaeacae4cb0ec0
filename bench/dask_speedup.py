"""Scale-out speed-up: N CPU-bound stub tasks (``cpu_ms`` of real CPU each, no latency), run by
the local executor and by the Dask executor on a LocalCluster of worker processes (1 thread
each). The ideal speed-up is the number of workers.

The local executor burns each task's CPU in its one event loop, so it runs them one at a time;
Dask runs one per worker process. "span" is first task start to last task end (from the
events); "run" also counts connecting to the cluster and installing the runtime on the
workers. The cluster is started once before the timed runs (its start-up is shown apart), one
warm-up run lets each worker import codexflow_nb first, and local and Dask runs alternate.
Other load on the machine lowers what any parallel run can reach, so each repeat also measures
the machine's ceiling: bare processes burning the same CPU in parallel against one process.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _common import disk_tmp, verdict

from codexflow_nb import run
from codexflow_nb.events import TERMINAL_KINDS

ALIASES = {"cpu": {"id": "coder", "overrides": {"runtime": {"concurrency": {"max_parallel_tasks": 16}}}}}


#: Tasks per Dask worker address over the timed runs (shows that every worker took a share).
PER_WORKER: Counter[str] = Counter()


def timed_run(n: int, cpu_ms: float, log: Path, **options: Any) -> tuple[float, float]:
    """(run seconds, span seconds) of one run of ``n`` CPU-bound tasks."""
    marks: list[float] = []

    def on_event(event: dict[str, Any]) -> None:
        if event["kind"] == "task_started" and not marks:
            marks.append(time.perf_counter())
        elif event["kind"] in TERMINAL_KINDS:
            marks[1:] = [time.perf_counter()]
            if "worker" in event:
                PER_WORKER[event["worker"]] += 1

    tasks = {"cpu": [f"crunch {i}" for i in range(n)]}
    t0 = time.perf_counter()
    result = run(tasks, aliases=ALIASES, latency_ms=0, cpu_ms=cpu_ms, log_file=log, runs_dir=None,
                 keep_outputs=False, on_event=on_event, **options)
    elapsed = time.perf_counter() - t0
    if not result.ok:
        sys.exit(f"benchmark run failed: {[t.error for t in result.tasks if not t.ok][:3]}")
    return elapsed, marks[1] - marks[0]


def burn(cpu_s: float) -> None:
    end = time.process_time() + cpu_s
    while time.process_time() < end:
        pass


def machine_ceiling(workers: int, cpu_s: float) -> float:
    """The speed-up bare processes get right now: ``workers`` processes burning ``cpu_s`` each,
    against the same work in one process. An idle machine with that many cores gives ~workers."""
    t0 = time.perf_counter()
    burn(cpu_s * workers)
    serial = time.perf_counter() - t0
    procs = [multiprocessing.Process(target=burn, args=(cpu_s,)) for _ in range(workers)]
    t0 = time.perf_counter()
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    return serial / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--short", action="store_true", help="a quick run that only proves the bench works")
    p.add_argument("--cpu-ms", type=float, nargs="+",
                   help="CPU burnt per task, one table row pair each (default 50 200; 50 with --short)")
    p.add_argument("--tasks", type=int,
                   help="tasks per run (default: 10 s of CPU in all, 2 s with --short)")
    p.add_argument("--workers", type=int, default=2, help="Dask worker processes (default 2)")
    p.add_argument("--repeat", type=int, help="timed runs per executor (default 3; 1 with --short)")
    args = p.parse_args()
    try:
        from codexflow_nb.executors.dask import start_local_cluster
    except ImportError:
        sys.exit("this benchmark needs the dask extra: pip install codexflow-nb[dask]")
    costs = args.cpu_ms or ([50.0] if args.short else [50.0, 200.0])
    budget_ms = 2_000 if args.short else 10_000
    repeat = args.repeat or (1 if args.short else 3)
    print(f"# dask speed-up\n# {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f}\n"
          f"# command: python {' '.join(sys.argv)}\n# CPU-bound stub tasks, latency 0; "
          f"{repeat} timed run(s) per row, median; Dask: {args.workers} worker processes x 1 thread\n")
    rows = []
    ceilings: list[float] = []
    with disk_tmp() as tmp:
        log = Path(tmp) / "events.jsonl"
        t0 = time.perf_counter()
        with start_local_cluster(n_workers=args.workers, threads_per_worker=1) as cluster:
            startup = time.perf_counter() - t0
            options = {"executor": "dask", "dask_address": cluster.scheduler_address}
            timed_run(2 * args.workers, 1, log, **options)  # warm-up: imports on the workers
            PER_WORKER.clear()
            for cpu_ms in costs:
                n = args.tasks or max(1, round(budget_ms / cpu_ms))
                local, dask = [], []
                for _ in range(repeat):  # alternate, so all three see the same load
                    local.append(timed_run(n, cpu_ms, log))
                    dask.append(timed_run(n, cpu_ms, log, **options))
                    ceilings.append(machine_ceiling(args.workers, budget_ms / 1000 / 4))
                rows.append((cpu_ms, n, *(statistics.median(x) for x in zip(*local, strict=True)),
                             *(statistics.median(x) for x in zip(*dask, strict=True))))
    ideal = float(args.workers)
    ceiling = statistics.median(ceilings)
    print(f"{'cpu ms':>6}  {'tasks':>5}  {'executor':>8}  {'run s':>6}  {'span s':>6}  "
          f"{'tasks/s':>7}  {'speed-up':>8}  {'of ideal':>8}  {'of ceiling':>10}")
    for cpu_ms, n, local_run, local_span, dask_run, dask_span in rows:
        print(f"{cpu_ms:>6g}  {n:>5}  {'local':>8}  {local_run:>6.2f}  {local_span:>6.2f}  "
              f"{n / local_run:>7.1f}  {'1.00x':>8}")
        up = local_run / dask_run
        print(f"{'':>6}  {'':>5}  {'dask':>8}  {dask_run:>6.2f}  {dask_span:>6.2f}  "
              f"{n / dask_run:>7.1f}  {up:>7.2f}x  {up / ideal:>8.0%}  {up / ceiling:>10.0%}")
    print(f"\nideal speed-up {ideal:g}x; the machine's ceiling during the runs: {ceiling:.2f}x "
          f"({args.workers} bare processes burning CPU against one; range "
          f"{min(ceilings):.2f}-{max(ceilings):.2f}x)")
    print("run s: whole run; span s: first task start to last task end")
    print(f"cluster start-up, not in the figures: {startup:.2f} s; "
          f"load average at the end {os.getloadavg()[0]:.1f}")
    print("tasks per Dask worker: " + ", ".join(f"{w} {c}" for w, c in sorted(PER_WORKER.items())))
    ups = [(cpu_ms, local_run / dask_run) for cpu_ms, _, local_run, _, dask_run, _ in rows]
    longest, up_longest = max(ups)
    verdict("dask_speedup", all(up > 1 for _, up in ups) and up_longest >= 0.8 * ceiling,
            f"Dask faster than local at every task size and, at {longest:g} ms tasks, >= 80% of "
            f"the machine's ceiling {ceiling:.2f}x (ideal {ideal:g}x): "
            + ", ".join(f"{c:g} ms {up:.2f}x" for c, up in ups)
            + f"; {up_longest / ceiling:.0%} of ceiling", short=args.short)


if __name__ == "__main__":  # worker processes are spawned: they re-import this module
    main()

"""Benchmark: ``codexflow_nb.analysis.load_events`` against ``pandas.read_json(lines=True)``.

Writes an engine-shaped event log (runs of tasks scheduled under per-alias limits: queued,
started, retried, telemetry, completed or failed, in time order), then times both loaders on the
same file in the same process.

    python bench/load_events.py            # 1,000,000 events (the target: >= 3x and < 3 s)
    python bench/load_events.py --short    # 20,000 events, for CI
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

from _common import disk_tmp, verdict

ALIASES = [("reviewer", "code-analyzer", 4), ("architect", "system-architect", 2),
           ("tester", "tester", 3), ("coder", "coder", 3)]
TEXTS = ["Review codexflow_nb/engine.py for race conditions around cancellation",
         "Design the event schema versioning policy for events.jsonl",
         "Write property tests for the task-map parser", "Implement the retry budget per alias",
         "Second opinion: review the retry and backoff policy for rate-limited endpoints"]


def _iso(t: float) -> str:
    ms = int(round(t * 1000))
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def write_log(path: Path, n_events: int, seed: int = 7, tasks_per_run: int = 400) -> int:
    """Write at least ``n_events`` events (whole runs) to ``path``; returns the count."""
    rng = random.Random(seed)
    written, run_no, t0 = 0, 0, 1_790_000_000.0
    with open(path, "w", encoding="utf-8") as fh:
        while written < n_events:
            run_no += 1
            start = t0 + run_no * 120.0
            run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime(start)) + f"000-{run_no:06x}"
            n_tasks = min(tasks_per_run, max(1, (n_events - written) // 4))
            events = _run_events(rng, run_id, start, n_tasks)
            fh.write("".join(line for _, _, line in sorted(events, key=lambda e: (e[0], e[1]))))
            written += len(events)
    return written


def _run_events(rng: random.Random, run_id: str, start: float, n_tasks: int) -> list:
    aliases = {a: {"agentId": ag, "limit": lim} for a, ag, lim in ALIASES}
    head = {"v": 1, "ts": _iso(start), "kind": "run_started", "runId": run_id, "runtime": "codex",
            "tasks": n_tasks, "aliases": aliases, "maxConcurrency": None, "retries": 2,
            "phases": ["build", "verify"], "pid": 4242}
    events = [(start, 0, json.dumps(head, separators=(",", ":")) + "\n")]
    order = 1
    free = {a: [start] * lim for a, _, lim in ALIASES}
    done_at: dict[str, float] = {}
    counts: dict[str, int] = {}
    end_all = start
    for i in range(n_tasks):
        alias, agent, limit = ALIASES[i % len(ALIASES)]
        key = f"{alias}-{i + 1}"
        task_id = f"{run_id}-{i + 1:06d}"
        deps = [f"{ALIASES[(i - 4) % 4][0]}-{i - 3}"] if i >= 4 and i % 10 == 9 else []
        queued = max([start + 0.001] + [done_at[d] for d in deps if d in done_at])
        slots = free[alias]
        slot = min(range(limit), key=slots.__getitem__)
        started = max(queued, slots[slot])
        common = (f'"runId":"{run_id}","alias":"{alias}","agentId":"{agent}","taskId":"{task_id}",'
                  f'"key":"{key}","phase":{1 if deps else 0}')
        text = TEXTS[i % len(TEXTS)]
        dep_json = json.dumps(deps)

        def add(ts: float, kind: str, extra: str, common: str = common) -> None:
            nonlocal order
            events.append((ts, order, f'{{"v":1,"ts":"{_iso(ts)}","kind":"{kind}",{common}{extra}}}\n'))
            order += 1

        add(queued, "task_queued", f',"task":"{text}","dependsOn":{dep_json},"limit":{limit}')
        add(started, "task_started", f',"attempt":1,"limit":{limit}')
        t = started
        attempt = 1
        while rng.random() < 0.04 and attempt < 3:  # a retryable failure, then backoff
            t += rng.uniform(0.05, 0.4)
            delay = round(rng.uniform(250, 1000), 1)
            add(t, "task_retry", f',"attempt":{attempt},"error":{{"type":"HTTPError","message":'
                                 f'"HTTP 503: upstream busy","status":503}},"delayMs":{delay}')
            t += delay / 1000
            attempt += 1
        t += rng.uniform(0.5, 6.0)
        ms = round((t - started) * 1000, 3)
        if rng.random() < 0.03:
            add(t, "task_failed", f',"ok":false,"attempt":{attempt},"ms":{ms},"error":'
                                  f'{{"type":"HTTPError","message":"HTTP 500: internal error","status":500}}')
            status = "failed"
        else:
            tin, tout = rng.randint(300, 4000), rng.randint(100, 1500)
            usage = f'"usage":{{"tokensIn":{tin},"tokensOut":{tout}}}'
            add(t, "telemetry", f',{usage},"model":"gpt-4o-mini","ms":{ms}')
            add(t, "task_complete", f',"ok":true,"attempt":{attempt},"ms":{ms},{usage},'
                                    f'"summary":"[{alias}] {text[:60]}"')
            status = "completed"
        counts[status] = counts.get(status, 0) + 1
        slots[slot] = t
        done_at[key] = t
        end_all = max(end_all, t)
    tail = {"v": 1, "ts": _iso(end_all + 0.002), "kind": "run_complete", "runId": run_id,
            "ok": "failed" not in counts, "ms": round((end_all - start) * 1000, 1), "counts": counts}
    events.append((end_all + 0.002, order, json.dumps(tail, separators=(",", ":")) + "\n"))
    return events


def _time(fn, repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        result = None
        gc.collect()
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events to generate")
    parser.add_argument("--short", action="store_true", help="20,000 events (CI)")
    parser.add_argument("--repeat", type=int, default=None, help="best of N (default 1, short 3)")
    parser.add_argument("--log", help="reuse or keep the generated log at this path")
    args = parser.parse_args(argv)
    n = 20_000 if args.short else args.events
    repeat = args.repeat or (3 if args.short else 1)

    import pandas as pd
    import pyarrow as pa

    from codexflow_nb.analysis import load_events, tasks_frame

    with disk_tmp() as tmp:
        path = Path(args.log) if args.log else Path(tmp) / "events.jsonl"
        if not path.exists():
            t0 = time.perf_counter()
            count = write_log(path, n)
            print(f"generated {count:,} events ({path.stat().st_size / 1e6:.0f} MB) in "
                  f"{time.perf_counter() - t0:.1f} s")
        else:
            with open(path, "rb") as fh:
                count = sum(1 for _ in fh)
        ours, frame = _time(lambda: load_events(path), repeat)
        base, baseline = _time(lambda: pd.read_json(path, lines=True), repeat)
        assert len(frame) == len(baseline) == count, (len(frame), len(baseline), count)
        del baseline
        tasks_s, tasks = _time(lambda: tasks_frame(frame), 1)

    print(f"\nmachine: {os.cpu_count()} cores, Python {platform.python_version()}, pandas "
          f"{pd.__version__}, pyarrow {pa.__version__}; best of {repeat}")
    print(f"command: python bench/load_events.py {' '.join(argv or sys.argv[1:])}".rstrip())
    print("\n| loader | events | seconds | events/s | speed-up |")
    print("|---|---:|---:|---:|---:|")
    print(f"| pandas.read_json(lines=True) | {count:,} | {base:.2f} | {count / base:,.0f} | 1.0x |")
    print(f"| load_events | {count:,} | {ours:.2f} | {count / ours:,.0f} | {base / ours:.1f}x |")
    print(f"\ntasks_frame on the result: {len(tasks):,} tasks in {tasks_s:.2f} s")
    verdict("load_events", base / ours >= 3 and ours < 3,
            f"load_events >= 3x pandas.read_json and < 3 s for 1M events: {base / ours:.1f}x, "
            f"{ours:.2f} s for {count:,} events", short=count < 1_000_000)
    return 0


if __name__ == "__main__":
    sys.exit(main())

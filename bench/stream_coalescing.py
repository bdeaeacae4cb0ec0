"""How many front-end messages does a streaming task cost, and how late is its last chunk?

One task streams 1,000 chunks into a :class:`~codexflow_nb.widgets.RunPanel`. Every comm
message a widget sends to the front end is counted (``comm.create_comm`` is replaced by a
counting comm, the same hook ipykernel uses), with and without coalescing:

* messages for the task's output area, and all widget messages of the run;
* bytes sent (JSON state of those messages);
* delay from the moment the runtime hands over the last chunk to the message that carries it:
  at task end (the panel flushes at once) and when the task keeps working after its last
  chunk (the trailing update of the coalescing interval carries it).

Also counts the display updates of the ``%%codexflow`` live view for the same stream.

    python bench/stream_coalescing.py [--chunks 1000] [--spacing-ms 1] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from typing import Any

import comm
from _common import verdict
from comm.base_comm import BaseComm

from codexflow_nb.api import prepare_run
from codexflow_nb.plan import Plan
from codexflow_nb.runtimes.base import Reply, RuntimeCall
from codexflow_nb.widgets import LiveView, RunPanel

PLAN = Plan.from_task_map({"coder": ["Stream a long answer"]})


class CountingComm(BaseComm):
    """A comm that records every message instead of sending it to a kernel."""

    log: list[tuple[float, str, str, int]] = []  # (time, comm id, msg type, bytes)

    def publish_msg(self, msg_type: str, data: Any = None, metadata: Any = None,
                    buffers: Any = None, **keys: Any) -> None:
        payload = json.dumps(data, default=str)
        CountingComm.log.append((time.perf_counter(), self.comm_id, payload, len(payload)))


comm.create_comm = CountingComm  # widgets created from here on use it


class StreamRuntime:
    """Streams ``n`` numbered chunks ``spacing_s`` apart, then works ``tail_s`` more."""

    name = "bench-stream"
    default_retries = 0

    def __init__(self, n: int, spacing_s: float, tail_s: float) -> None:
        self.n, self.spacing_s, self.tail_s = n, spacing_s, tail_s
        self.last_chunk_at = 0.0

    async def open(self, max_connections: int) -> None:
        return None

    async def close(self) -> None:
        return None

    async def run(self, call: RuntimeCall, on_chunk: Any = None) -> Reply:
        start = time.perf_counter()
        for i in range(self.n):
            target = start + i * self.spacing_s
            delay = target - time.perf_counter()
            await asyncio.sleep(delay if delay > 0 else 0)
            if i == self.n - 1:
                self.last_chunk_at = time.perf_counter()
            on_chunk(f"<{i}> ")
        await asyncio.sleep(self.tail_s)
        return Reply(summary="streamed", output={"chunks": self.n})


async def measure_panel(n: int, spacing_s: float, tail_s: float, interval: float) -> dict[str, Any]:
    panel = RunPanel(plan=PLAN, stream_interval=interval, log_file=None, runs_dir=None)
    runtime = StreamRuntime(n, spacing_s, tail_s)
    run = prepare_run(plan=PLAN, runtime=runtime, on_event=panel._on_event, stream=True,
                      log_file=None, runs_dir=None)
    panel.reset(PLAN)
    out_id = panel.outputs["coder-1"].comm.comm_id
    CountingComm.log.clear()
    t0 = time.perf_counter()
    panel._begin(run)
    await panel._execute(run)
    elapsed = time.perf_counter() - t0
    log = list(CountingComm.log)
    marker = f"&lt;{n - 1}&gt;"
    shown_at = next(t for t, cid, payload, _ in log if cid == out_id and marker in payload)
    return {"interval_s": interval, "chunks": n, "spacing_ms": spacing_s * 1000,
            "tail_ms": tail_s * 1000, "run_s": round(elapsed, 3),
            "output_msgs": sum(1 for _, cid, _, _ in log if cid == out_id),
            "all_msgs": len(log), "kbytes": round(sum(b for *_, b in log) / 1024, 1),
            "last_chunk_delay_ms": round((shown_at - runtime.last_chunk_at) * 1000, 2)}


async def measure_live_view(n: int, spacing_s: float, interval: float) -> dict[str, Any]:
    published: list[float] = []
    view = LiveView(PLAN, interval=interval, publish=lambda _data: published.append(time.perf_counter()))
    run = prepare_run(plan=PLAN, runtime=StreamRuntime(n, spacing_s, 0.0), on_event=view,
                      stream=True, log_file=None, runs_dir=None)
    await run.execute()
    return {"interval_s": interval, "chunks": n, "display_updates": len(published)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chunks", type=int, default=1000)
    ap.add_argument("--spacing-ms", type=float, default=1.0, help="time between chunks (1 ms = 1,000/s)")
    ap.add_argument("--repeat", type=int, default=5, help="runs per case (median reported)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--short", action="store_true", help="one quick run per case (proves it runs)")
    args = ap.parse_args()
    if args.short:
        args.chunks, args.repeat = 200, 1
    spacing = args.spacing_ms / 1000
    cases = [("no coalescing (every chunk)", 0.0, 0.0), ("coalesced 0.1 s, ends at last chunk", 0.1, 0.0),
             ("coalesced 0.1 s, works 0.5 s after it", 0.1, 0.5)]
    rows = []
    for label, interval, tail in cases:
        runs = [asyncio.run(measure_panel(args.chunks, spacing, tail, interval))
                for _ in range(args.repeat)]
        row = {k: statistics.median(r[k] for r in runs) if isinstance(runs[0][k], (int, float))
               else runs[0][k] for k in runs[0]}
        row["last_chunk_delay_max_ms"] = max(r["last_chunk_delay_ms"] for r in runs)
        rows.append({"case": label, **row})
    live = [asyncio.run(measure_live_view(args.chunks, spacing, iv)) for iv in (0.0, 0.1)]
    if args.json:
        print(json.dumps({"panel": rows, "live_view": live}, indent=2))
        report(rows, args.short, file=sys.stderr)  # stdout stays JSON
        return
    print(f"{args.chunks} chunks, one every {args.spacing_ms} ms, median of {args.repeat} runs\n")
    print(f"{'case':<40} {'run s':>6} {'output msgs':>11} {'all msgs':>8} {'KiB':>8} "
          f"{'last chunk -> shown ms (median / max)':>38}")
    for r in rows:
        delay = f"{r['last_chunk_delay_ms']} / {r['last_chunk_delay_max_ms']}"
        print(f"{r['case']:<40} {r['run_s']:>6} {r['output_msgs']:>11} {r['all_msgs']:>8} "
              f"{r['kbytes']:>8} {delay:>38}")
    print("\n%%codexflow live view (display updates for the same stream):")
    for r in live:
        print(f"  interval {r['interval_s']} s: {r['display_updates']} updates")
    report(rows, args.short)


def report(rows: list[dict[str, Any]], short: bool, file: Any = None) -> None:
    """The verdict: with coalescing, the last chunk reaches the front end within the interval
    (plus 10 ms for the loop's timers) and a task's output area gets at most one message per
    interval (plus the first and the last)."""
    coalesced = [r for r in rows if r["interval_s"] > 0]
    late = max(r["last_chunk_delay_max_ms"] for r in coalesced)
    ok = all(r["last_chunk_delay_max_ms"] <= r["interval_s"] * 1000 + 10
             and r["output_msgs"] <= r["run_s"] / r["interval_s"] + 2 for r in coalesced)
    msgs = ", ".join(f"{r['output_msgs']:g} in {r['run_s']:g} s" for r in coalesced)
    verdict("stream_coalescing", ok, f"coalesced at 0.1 s, last chunk shown within the interval "
            f"+ 10 ms (max {late:g} ms) and at most one output message per interval ({msgs}; "
            f"{rows[0]['output_msgs']:g} without coalescing)", short=short, file=file)


if __name__ == "__main__":
    main()

"""Memory: peak RSS of a run of N stub tasks (outputs live on disk; the engine keeps summaries).

Baseline in the same run: the RSS of the same process after imports, before the run.
Each size runs in a fresh subprocess so peaks do not mix.
"""

from __future__ import annotations

import json
import subprocess
import sys

from _common import header, parser, table, verdict

CHILD = r"""
import asyncio, json, os, resource, sys, tempfile
from pathlib import Path
import codexflow_nb as cf
from codexflow_nb.aliases import Aliases
from codexflow_nb.api import Run
from codexflow_nb.engine import RunOptions
from codexflow_nb.runtimes import StubRuntime

def rss_mb():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

n, store = int(sys.argv[1]), sys.argv[2] == "1"
aliases = {f"a{i}": {"id": "coder", "overrides": {"runtime": {"concurrency": {"max_parallel_tasks": 8}}}}
           for i in range(4)}
tasks = {a: [f"task {j} for {a}" for j in range(n // 4)] for a in aliases}
base = rss_mb()
scratch = tempfile.TemporaryDirectory(dir=os.getcwd(), prefix='.bench-')
tmp = Path(scratch.name)
plan = cf.Plan.from_task_map(tasks)
resolved = plan.validate(cf.load_registry(), Aliases(aliases))
opts = RunOptions(log_file=tmp / "events.jsonl", runs_dir=(tmp / "runs") if store else None,
                  keep_outputs=False)
result = asyncio.run(Run(plan, resolved, StubRuntime(0), opts).execute())
assert len(result.tasks) == n and result.ok
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
scratch.cleanup()
print(json.dumps({"base": base, "peak": peak}))
"""


def measure(n: int, store: bool) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", CHILD, str(n), "1" if store else "0"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    sizes = [(2_000, True)] if args.short else [(10_000, True), (100_000, False), (100_000, True)]
    header("memory")
    rows = []
    peaks: list[tuple[float, str]] = []
    for n, store in sizes:
        m = measure(n, store)
        peaks.append((m["peak"], f"{n:,} tasks, .runs {'on' if store else 'off'}"))
        rows.append([f"{n:,}", "on" if store else "off", f"{m['base']:.0f}", f"{m['peak']:.0f}",
                     f"{(m['peak'] - m['base']) * 1024 / n:.2f}"])
    print(table(rows, ["tasks", ".runs", "RSS after import MB", "peak RSS MB", "KB per task"]))
    print("\ntarget: peak RSS under 300 MB for 100,000 stub tasks")
    # the target is for 100,000 tasks; a --short run only has 2,000
    counted = [p for p, (n, _) in zip(peaks, sizes, strict=True) if n >= 100_000] or peaks
    peak, where = max(counted)
    verdict("memory", peak < 300, f"peak RSS < 300 MB for 100,000 stub tasks: highest "
            f"{peak:.0f} MB ({where})", short=args.short)


if __name__ == "__main__":
    main()

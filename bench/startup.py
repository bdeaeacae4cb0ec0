"""Start-up: `import codexflow_nb` and `codex-flow run --example` end to end (median of 5).

Baseline in the same run: `python -c pass` (the interpreter alone).
"""

from __future__ import annotations

import subprocess
import sys
import time

from _common import disk_tmp, header, median, parser, table, verdict


def timed(cmd: list[str], cwd: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    repeats = 2 if args.short else 5
    header("start-up")
    rows = []
    with disk_tmp() as tmp:
        cases = [("python -c pass", [sys.executable, "-c", "pass"], None),
                 ("import codexflow_nb", [sys.executable, "-c", "import codexflow_nb"], 0.3),
                 ("codex-flow run --example", [sys.executable, "-m", "codexflow_nb", "run",
                                               "--example"], 1.5)]
        base = None
        checks: list[tuple[bool, str]] = []
        for label, cmd, target in cases:
            t = median([timed(cmd, tmp) for _ in range(repeats)])
            base = base or t
            if target:
                checks.append((t < target, f"{label} {t:.3f} s (< {target} s)"))
            rows.append([label, f"{t:.3f}", f"{t / base:.1f}x", f"{target} s" if target else "-"])
    print(table(rows, ["command", "median s", "vs interpreter", "target"]))
    verdict("startup", all(ok for ok, _ in checks), "; ".join(text for _, text in checks),
            short=args.short)


if __name__ == "__main__":
    main()

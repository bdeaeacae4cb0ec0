"""Helpers shared by the benchmark scripts (not a public API)."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
from collections.abc import Coroutine, Sequence
from typing import Any, TextIO, TypeVar

from codexflow_nb.runtimes import Reply, RuntimeCall

T = TypeVar("T")


class ZeroRuntime:
    """An in-process runtime that replies at once: measures the engine alone."""

    name = "zero"
    default_retries = 0

    async def open(self, max_connections: int) -> None:
        return None

    async def close(self) -> None:
        return None

    async def run(self, call: RuntimeCall, on_chunk=None) -> Reply:
        return Reply(summary="ok", output={"n": 1}, usage={"tokensIn": 1, "tokensOut": 1})


def machine() -> str:
    return (f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}")


def table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def parser(doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc)
    p.add_argument("--short", action="store_true", help="a quick run that only proves the bench works")
    return p


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def header(title: str) -> None:
    print(f"# {title}\n# {machine()}\n# command: python {' '.join(sys.argv)}\n")


def disk_tmp() -> tempfile.TemporaryDirectory[str]:
    """A scratch folder on the disk a run would use: under the current directory (where
    ``.runs`` and ``data/logs`` go by default) or ``$BENCH_DIR``, not ``/tmp``, whose history
    on a long-lived machine (folders of earlier 100k-task runs) can slow file creation 10x."""
    return tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR") or os.getcwd(),
                                       prefix=".bench-")


def loop_kinds() -> list[str]:
    """``uvloop`` (what ``codex-flow run`` and ``cf.run()`` start when it is installed) and
    ``asyncio`` (a notebook kernel's loop, which ``run_async`` and the dashboard use)."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return ["asyncio"]
    return ["uvloop", "asyncio"]


def verdict(name: str, met: bool, detail: str, *, short: bool = False, file: TextIO | None = None) -> str:
    """Print (and return) the benchmark's one-line verdict against its target(s):
    ``VERDICT <name>: met|NOT met — <detail>``. A benchmark with several targets prints one
    such line, ``met`` only if all are; ``short`` marks a ``--short`` run as indicative only."""
    line = f"VERDICT {name}: {'met' if met else 'NOT met'} — {detail}"
    if short:
        line += " (short run: indicative only)"
    print(line, file=file or sys.stdout, flush=True)
    return line


def run_on(kind: str, coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on a fresh loop of ``kind``."""
    factory = None
    if kind == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)

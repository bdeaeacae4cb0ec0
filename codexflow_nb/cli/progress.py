"""Live progress for ``codex-flow run``: per-alias bars on a terminal (rich), a plain progress
line every few seconds elsewhere. A view like any other: it only reads events.

On a TTY (and without ``NO_COLOR``, ``--json`` or ``--no-progress``) it redraws at most four
times a second, whatever the number of events: per alias done / running of the limit /
failed / cancelled, the elapsed time and the latest streamed line. Off a TTY it prints one
line when a run starts and one every :data:`PLAIN_EVERY_S` seconds while it goes, so a run is
never silent until its summary.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

from ..events import TERMINAL_KINDS, Event

PLAIN_EVERY_S = 2.0
REFRESH_PER_S = 4


@dataclass
class AliasProgress:
    total: int = 0
    limit: int = 1
    running: int = 0
    done: int = 0
    failed: int = 0
    cancelled: int = 0

    @property
    def ended(self) -> int:
        return self.done + self.failed + self.cancelled


class ProgressState:
    """Counts per alias and the latest line, from events (no drawing). ``totals``: tasks per
    alias in the plan (a plan revision adds to them)."""

    def __init__(self, totals: dict[str, int] | None = None) -> None:
        self.aliases: dict[str, AliasProgress] = {
            name: AliasProgress(total=n) for name, n in (totals or {}).items()}
        self.started = time.monotonic()
        self.latest = ""
        self._running: set[str] = set()

    def _alias(self, name: str) -> AliasProgress:
        return self.aliases.setdefault(name, AliasProgress())

    def __call__(self, event: Event) -> None:
        kind = event["kind"]
        alias = event.get("alias")
        if kind == "run_started":
            self.started = time.monotonic()
            for name, info in (event.get("aliases") or {}).items():
                self._alias(name).limit = int(info.get("limit") or 1)
        elif kind == "plan_revised":
            for task in event.get("added") or []:
                if isinstance(task, dict) and task.get("alias"):
                    self._alias(task["alias"]).total += 1
        elif kind == "task_started" and alias:
            self._running.add(event["taskId"])
            self._alias(alias).running += 1
        elif kind in TERMINAL_KINDS and alias:
            a = self._alias(alias)
            if event["taskId"] in self._running:
                self._running.discard(event["taskId"])
                a.running -= 1
            status = TERMINAL_KINDS[kind]
            if status == "completed":
                a.done += 1
            elif status == "cancelled":
                a.cancelled += 1
            else:
                a.failed += 1
            a.total = max(a.total, a.ended)
        elif kind in ("task_chunk", "task_step") and alias:
            text = event.get("content") or event.get("command") or event.get("message") or ""
            line = next((s for s in str(text).splitlines() if s.strip()), "")
            if line:
                self.latest = f"{alias}/{event.get('key')}: {line.strip()}"

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def plain_line(self) -> str:
        totals = AliasProgress(total=sum(a.total for a in self.aliases.values()))
        for a in self.aliases.values():
            totals.done += a.done
            totals.failed += a.failed
            totals.cancelled += a.cancelled
            totals.running += a.running
        parts = [f"{totals.ended}/{totals.total} ended", f"{totals.running} running"]
        if totals.failed:
            parts.append(f"{totals.failed} failed")
        if totals.cancelled:
            parts.append(f"{totals.cancelled} cancelled")
        return f"  progress: {', '.join(parts)} ({self.elapsed:.1f} s)"


class PlainProgress:
    """A progress line at the start and every few seconds (off a terminal, or NO_COLOR)."""

    def __init__(self, stream: TextIO = sys.stdout, every: float = PLAIN_EVERY_S,
                 totals: dict[str, int] | None = None) -> None:
        self.state = ProgressState(totals)
        self.stream = stream
        self.every = every
        self._last = 0.0

    def __call__(self, event: Event) -> None:
        self.state(event)
        now = time.monotonic()
        if event["kind"] == "run_started":
            n = int(event.get("tasks") or 0)
            print(f"  running {n} task{'' if n == 1 else 's'} on {event.get('runtime')}...",
                  file=self.stream, flush=True)
            self._last = now
        elif now - self._last >= self.every and event["kind"] != "run_complete":
            self._last = now
            print(self.state.plain_line(), file=self.stream, flush=True)

    def close(self) -> None:
        return None


class RichProgress:
    """Per-alias bars redrawn a few times a second with rich (imported only here)."""

    def __init__(self, stream: TextIO = sys.stdout, totals: dict[str, int] | None = None) -> None:
        from rich.console import Console
        from rich.live import Live

        self.state = ProgressState(totals)
        self.console = Console(file=stream)
        self.live = Live(console=self.console, refresh_per_second=REFRESH_PER_S,
                         get_renderable=self._render, transient=True)
        self.live.start()

    def __call__(self, event: Event) -> None:
        self.state(event)  # the Live thread redraws from the state on its own clock

    def _render(self) -> Any:
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        table = Table.grid(padding=(0, 1))
        for name, a in self.state.aliases.items():
            bar = ProgressBar(total=max(a.total, 1), completed=a.ended, width=24)
            extra = []
            if a.failed:
                extra.append(f"[red]{a.failed} failed[/red]")
            if a.cancelled:
                extra.append(f"[yellow]{a.cancelled} cancelled[/yellow]")
            table.add_row(f"[bold]{name}[/bold]", bar, f"{a.done}/{a.total} done",
                          f"running {a.running}/{a.limit}", " ".join(extra))
        latest = self.state.latest[: max(20, self.console.width - 4)]
        table.add_row(f"[dim]{self.state.elapsed:.1f} s[/dim]", "", "", "",
                      f"[dim]{latest}[/dim]" if latest else "")
        return table

    def close(self) -> None:
        self.live.stop()


def progress_view(stream: TextIO, *, enabled: bool = True, totals: dict[str, int] | None = None
                  ) -> PlainProgress | RichProgress | None:
    """The right view for ``stream``: rich bars on a colour terminal, plain lines elsewhere,
    None when progress is off."""
    if not enabled:
        return None
    tty = hasattr(stream, "isatty") and stream.isatty()
    if tty and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb":
        try:
            return RichProgress(stream, totals)
        except ImportError:  # rich missing: plain lines still say what is going on
            pass
    return PlainProgress(stream, totals=totals)

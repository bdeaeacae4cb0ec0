"""Run analysis: ``events.jsonl`` into pandas DataFrames (pandas and pyarrow load here only).

>>> ev = load_events("data/logs/events.jsonl")
>>> tasks = tasks_frame(ev)
>>> alias_summary(tasks); run_summary(ev); concurrency_frame(tasks); critical_path(ev)
>>> changes_frame(ev); steps_frame(ev)   # coding-agent runs: changed files, steps
"""

from __future__ import annotations

from .frames import (
    STATUSES,
    alias_summary,
    changes_frame,
    concurrency_frame,
    critical_path,
    run_summary,
    steps_frame,
    tasks_frame,
)
from .load import EventLogWarning, load_events
from .otel import to_otel
from .otel_live import OtlpExporter
from .pricing import Price, Pricing, load_pricing, reprice

__all__ = ["STATUSES", "EventLogWarning", "OtlpExporter", "Price", "Pricing", "alias_summary", "changes_frame",
           "concurrency_frame", "critical_path", "load_events", "load_pricing", "reprice",
           "run_summary", "steps_frame", "tasks_frame", "to_otel"]

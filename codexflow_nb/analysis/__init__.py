"""Run analysis: ``events.jsonl`` into pandas DataFrames (pandas and pyarrow load here only).

>>> ev = load_events("data/logs/events.jsonl")
>>> tasks = tasks_frame(ev)
>>> alias_summary(tasks); run_summary(ev); concurrency_frame(tasks); critical_path(ev)
"""

from __future__ import annotations

from .frames import (
    STATUSES,
    alias_summary,
    concurrency_frame,
    critical_path,
    run_summary,
    tasks_frame,
)
from .load import EventLogWarning, load_events
from .otel import to_otel
from .pricing import Price, Pricing, load_pricing, reprice

__all__ = ["STATUSES", "EventLogWarning", "Price", "Pricing", "alias_summary",
           "concurrency_frame", "critical_path", "load_events", "load_pricing", "reprice",
           "run_summary", "tasks_frame", "to_otel"]

"""Tidy frames built from the events frame: tasks, per-alias and per-run summaries,
concurrency over time, the critical path of a run, and the steps and changed files of
coding-agent tasks."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..events import TERMINAL_KINDS
from .load import USAGE_COLUMNS
from .pricing import Pricing, as_pricing

#: Every task status, terminal ones first; ``unfinished`` has no terminal event (a crash).
STATUSES = ["completed", "failed", "timeout", "cancelled", "skipped", "rejected", "unfinished"]
TASK_COLUMNS = ["run", "task_id", "key", "alias", "agent", "phase", "task", "depends_on", "status",
                "ok", "attempts", "retries", "queued", "started", "finished", "queued_ms",
                "run_ms", "retry_ms", "backoff_ms", "limit", "tokens_in", "tokens_out",
                "cached_tokens_in", "cache_write_tokens_in", "cache_write_1h_tokens_in",
                "reasoning_tokens", "model", "cost", "cache_write_cost", "agent_cli", "steps",
                "warnings", "files_changed", "insertions", "deletions", "workspace",
                "workspace_path", "branch", "error_type", "error_message", "summary",
                "start_seq", "end_seq"]
CHANGE_COLUMNS = ["run", "alias", "agent", "task_id", "key", "status", "path", "file_status",
                  "insertions", "deletions", "binary"]
STEP_COLUMNS = ["run", "alias", "agent", "task_id", "key", "ts", "seq", "step_type", "command",
                "tool", "exit_code", "status", "duration_ms", "files", "query", "output",
                "message"]
_IDS = ["run", "task_id"]
#: Usage columns: the terminal event's, else the task's last ``telemetry`` event's.
_USAGE = list(USAGE_COLUMNS)
#: Coding-agent columns of the terminal event (``task_workspace`` fills the workspace).
_AGENT = ["agent_cli", "steps", "warnings", "files_changed", "insertions", "deletions"]
_WORKSPACE = ["workspace", "workspace_path", "branch"]


def tasks_frame(events: pd.DataFrame, *, pricing: Pricing | str | None = None,
                with_outputs: bool = False, runs_dir: str | os.PathLike[str] = ".runs",
                text_width: int = 120) -> pd.DataFrame:
    """One row per task (``run``, ``task_id``); a task run again after a resume keeps its
    latest queued/started/terminal events. Times are UTC timestamps, durations in ms.

    ``queued_ms``: waiting for an alias slot (task_queued -> task_started); ``run_ms``: start to
    end, retries and backoff included; ``retry_ms``: the part before the final attempt.
    ``with_outputs`` adds ``output`` from ``<runs_dir>/<alias>/<task_id>/output.json``.

    Coding-agent tasks (``codex-cli``, ``claude-code``) also fill ``cached_tokens_in`` (part of
    ``tokens_in``), ``reasoning_tokens`` (part of ``tokens_out``), ``agent_cli``, ``steps``,
    ``warnings``, the change (``files_changed``, ``insertions``, ``deletions``) and the
    workspace (``workspace`` kind, ``workspace_path``, ``branch``); other tasks leave them empty.
    Claude Code tasks fill ``cache_write_tokens_in`` (the part of ``tokens_in`` written to the
    prompt cache) and ``cache_write_1h_tokens_in`` (the 1-hour part of those writes).
    ``cost`` charges cached input at the model's ``cached_input`` price and cache writes at its
    ``cache_write`` (5 minutes) and ``cache_write_1h`` prices when it lists them (else
    ``input``); ``cache_write_cost`` is the cache writes' part of ``cost`` (NaN where the usage
    reported no cache writes). See :meth:`Pricing.breakdown`.
    """
    ev = events[events["task_id"].notna()]
    ev = ev.assign(_k=_task_codes(ev))  # one integer per (run, task_id): fast joins
    kinds = ev["kind"].astype(str)
    base = ev.drop_duplicates("_k")[["_k", *_IDS, "key", "alias", "agent", "phase"]].set_index("_k")
    queued = _last(ev, kinds == "task_queued", {"ts": "queued", "task": "task",
                                                "depends_on": "depends_on", "limit": "q_limit"})
    started = _last(ev, kinds == "task_started", {"ts": "started", "limit": "s_limit",
                                                  "seq": "start_seq"})
    term = _last(ev, kinds.isin(list(TERMINAL_KINDS)), {
        "ts": "finished", "kind": "status", "ok": "ok", "ms": "ms", "attempt": "attempts",
        **{c: c for c in _USAGE}, "model": "model", "error_type": "error_type",
        "error_message": "error_message", "summary": "summary", "seq": "end_seq",
        **{c: c for c in _AGENT + _WORKSPACE}})
    tele = _last(ev, kinds == "telemetry", {"model": "t_model",
                                            **{c: f"t_{c}" for c in _USAGE}})
    space = _last(ev, kinds == "task_workspace", {c: f"w_{c}" for c in _WORKSPACE})
    out = base.join([queued, started, term, tele, space], how="left").reset_index()
    out["status"] = out["status"].astype(object).map(TERMINAL_KINDS).fillna("unfinished")
    out["status"] = pd.Categorical(out["status"], categories=STATUSES)
    out["ok"] = out["ok"].astype("boolean").fillna(False)
    out["limit"] = out["s_limit"].fillna(out["q_limit"]).astype("Int64")
    for col in _USAGE:
        out[col] = out[col].astype("Int64").fillna(out[f"t_{col}"].astype("Int64"))
    out["model"] = _fill(out["model"], out["t_model"])
    for col in _WORKSPACE:
        out[col] = _fill(out[col], out[f"w_{col}"])
    for col in ("steps", "warnings", "files_changed", "insertions", "deletions"):
        out[col] = out[col].astype("Int64")
    _count_steps(out, ev, kinds)
    out["queued_ms"] = _ms(out["started"] - out["queued"])
    out["run_ms"] = out["ms"].astype("float64").fillna(_ms(out["finished"] - out["started"]))
    _add_retries(out, ev, kinds)
    out["attempts"] = out["attempts"].astype("Int64").fillna(
        (out["retries"] + 1).where(out["started"].notna())).astype("Int64")
    long = (out["task"].str.len() > text_width).fillna(False).astype(bool)
    out["task"] = out["task"].astype("str").where(~long, out["task"].str.slice(0, text_width - 1) + "…")
    out["model"] = out["model"].astype("category")
    parts = as_pricing(pricing).breakdown(
        out["model"], out["tokens_in"], out["tokens_out"], out["cached_tokens_in"],
        out["cache_write_tokens_in"], out["cache_write_1h_tokens_in"])
    out["cost"] = parts["cost"]
    out["cache_write_cost"] = parts["cache_write_cost"]
    for col in ("run", "alias", "agent", "error_type", "agent_cli", "workspace"):
        out[col] = out[col].astype("category")
    for col in ("workspace_path", "branch"):
        out[col] = out[col].astype("str").where(out[col].notna())
    out = out[TASK_COLUMNS]
    if with_outputs:
        out["output"] = _outputs(out, Path(runs_dir))
    return out


def _task_codes(ev: pd.DataFrame) -> np.ndarray:
    run_codes, _ = pd.factorize(ev["run"].astype(str) if len(ev) else ev["run"])
    task_codes, uniques = pd.factorize(ev["task_id"])
    return run_codes.astype(np.int64) * (len(uniques) + 1) + task_codes


def _last(ev: pd.DataFrame, mask: pd.Series, columns: dict[str, str]) -> pd.DataFrame:
    sub = ev.loc[mask, ["_k", *columns]].drop_duplicates("_k", keep="last")
    return sub.set_index("_k").rename(columns=columns)


def _fill(first: pd.Series, then: pd.Series) -> pd.Series:
    """``first``, else ``then`` (categoricals compared as plain values)."""
    first = first.astype(object)
    return first.where(first.notna(), then.astype(object))


def _count_steps(out: pd.DataFrame, ev: pd.DataFrame, kinds: pd.Series) -> None:
    """``steps`` of a task whose terminal event has none (still running, or a crash): its
    ``task_step`` events since its latest start."""
    missing = out["steps"].isna()
    if not missing.any():
        return
    steps = ev.loc[kinds == "task_step", ["_k", "seq"]]
    if steps.empty:
        return
    steps = steps.merge(out[["_k", "start_seq"]], on="_k", how="left")
    steps = steps[steps["seq"] > steps["start_seq"].fillna(-1)]
    counts = steps.groupby("_k").size()
    found = out["_k"].map(counts).astype("Int64")
    out["steps"] = out["steps"].where(~missing, found)


def _ms(delta: pd.Series) -> pd.Series:
    return delta.dt.total_seconds() * 1000.0


def _add_retries(out: pd.DataFrame, ev: pd.DataFrame, kinds: pd.Series) -> None:
    """``retries``, ``backoff_ms`` and ``retry_ms`` of each task's latest start."""
    retry = ev.loc[kinds == "task_retry", ["_k", "ts", "delay_ms", "seq"]]
    retry = retry.merge(out[["_k", "start_seq"]], on="_k", how="left")
    retry = retry[retry["seq"] > retry["start_seq"].fillna(-1)]
    retry = retry.assign(resume=retry["ts"] + pd.to_timedelta(retry["delay_ms"].fillna(0), unit="ms"))
    agg = retry.groupby("_k").agg(
        retries=("seq", "size"), backoff_ms=("delay_ms", "sum"), resume=("resume", "max"))
    merged = out[["_k"]].merge(agg.reset_index(), on="_k", how="left").set_axis(out.index)
    out["retries"] = merged["retries"].fillna(0).astype("int64").to_numpy()
    out["backoff_ms"] = merged["backoff_ms"].fillna(0.0).to_numpy()
    retry_ms = _ms(merged["resume"] - out["started"])
    out["retry_ms"] = retry_ms.clip(lower=0).fillna(0.0).clip(upper=out["run_ms"]).to_numpy()


def _outputs(tasks: pd.DataFrame, runs_dir: Path) -> list[Any]:
    if not runs_dir.is_dir():
        raise ConfigError(f"{runs_dir}: no run store here (pass runs_dir= where the run wrote it)")
    values: list[Any] = []
    for alias, task_id in zip(tasks["alias"].astype(str), tasks["task_id"].astype(str), strict=True):
        try:
            doc = json.loads((runs_dir / alias / task_id / "output.json").read_text("utf-8"))
        except (OSError, ValueError):
            values.append(None)
            continue
        values.append(doc.get("output") if isinstance(doc, dict) else None)
    return values


def _as_tasks(frame: pd.DataFrame) -> pd.DataFrame:
    return tasks_frame(frame) if "kind" in frame.columns else frame


# -- coding agents ------------------------------------------------------------------------------
def changes_frame(events: pd.DataFrame) -> pd.DataFrame:
    """One row per task and file it changed, from the ``changes`` of each task's latest
    terminal event (coding-agent runtimes): ``run, alias, agent, task_id, key, status`` (the
    task's status), ``path``, ``file_status`` (``added``, ``modified``, ``deleted``),
    ``insertions``, ``deletions`` and ``binary`` (binary files count no lines). Tasks that
    changed nothing have no rows; a log without changes gives an empty frame."""
    ev = _events_only(events, "changes_frame")
    term = ev[ev["kind"].isin(list(TERMINAL_KINDS)) & ev["task_id"].notna()]
    term = term.assign(_run=term["run"].astype(str)).drop_duplicates(["_run", "task_id"],
                                                                      keep="last")
    term = term[term["changes"].notna()]
    counts = term["changes"].map(len).to_numpy(dtype=np.int64) if len(term) else np.zeros(0, int)
    files = [f for items in term["changes"] for f in items]
    if not files:
        return pd.DataFrame({c: pd.Series(dtype=_CHANGE_DTYPES.get(c, "object"))
                             for c in CHANGE_COLUMNS})
    rows = term.loc[term.index.repeat(counts)].reset_index(drop=True)
    out = pd.DataFrame({
        "run": rows["run"].astype(str), "alias": rows["alias"].astype(str),
        "agent": rows["agent"].astype(str), "task_id": rows["task_id"], "key": rows["key"],
        "status": rows["kind"].astype(str).map(TERMINAL_KINDS),
        "path": [f.get("path") for f in files], "file_status": [f.get("status") for f in files],
        "insertions": pd.array([f.get("insertions") for f in files], dtype="Int64"),
        "deletions": pd.array([f.get("deletions") for f in files], dtype="Int64"),
        "binary": [bool(f.get("binary")) for f in files]})
    return _typed(out, _CHANGE_DTYPES)[CHANGE_COLUMNS]


def steps_frame(events: pd.DataFrame) -> pd.DataFrame:
    """One row per ``task_step`` event (coding-agent runtimes), in log order: ``run, alias,
    agent, task_id, key, ts``, ``seq`` (1, 2, ... within the task), ``step_type``
    (``command``, ``file_change``, ``tool``, ``web_search``, ``warning``), ``command``,
    ``tool``, ``exit_code``, ``status``, ``duration_ms``, ``files`` (``,``-joined paths),
    ``query``, ``output`` (a preview) and ``message`` (warnings)."""
    ev = _events_only(events, "steps_frame")
    steps = ev[ev["kind"] == "task_step"]
    out = pd.DataFrame({c: steps[c] for c in STEP_COLUMNS if c != "seq"})
    out["seq"] = (out.groupby([out["run"].astype(str), out["task_id"]], sort=False).cumcount()
                  + 1).astype("int64")
    out = out.reset_index(drop=True)
    return _typed(out, _STEP_DTYPES)[STEP_COLUMNS]


_CHANGE_DTYPES = {"run": "category", "alias": "category", "agent": "category",
                  "status": pd.CategoricalDtype(STATUSES), "file_status": "category",
                  "insertions": "Int64", "deletions": "Int64", "binary": "bool"}
_STEP_DTYPES = {"run": "category", "alias": "category", "agent": "category",
                "step_type": "category", "status": "category", "exit_code": "Int64",
                "duration_ms": "float64", "seq": "int64"}


def _typed(frame: pd.DataFrame, dtypes: dict[str, Any]) -> pd.DataFrame:
    for col, dtype in dtypes.items():
        if dtype == "category" and isinstance(frame[col].dtype, pd.CategoricalDtype):
            frame[col] = frame[col].cat.remove_unused_categories()
        else:
            frame[col] = frame[col].astype(dtype)
    return frame


def _events_only(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    if "kind" not in frame.columns:
        raise ConfigError(f"{name}: give the events frame (load_events), not a tasks frame")
    return frame


# -- concurrency --------------------------------------------------------------------------------
def concurrency_frame(tasks: pd.DataFrame, freq: str | None = None, *,
                      by: str | None = "alias") -> pd.DataFrame:
    """Running tasks over time, a step function per run and alias (``by=None``: per run).

    Rows are ``run, alias, ts, running, limit``; ``running`` holds from ``ts`` to the next row.
    Starts and ends are ordered by their position in the log, so a slot handed from one task to
    the next at the same millisecond is never counted twice. ``freq`` (e.g. ``"100ms"``)
    resamples to regular bins holding the peak of each bin.
    """
    tasks = _as_tasks(tasks)
    keys = ["run"] + ([by] if by else [])
    cols = [*keys, "ts", "running", "limit"] if by else [*keys, "ts", "running"]
    ran = tasks[tasks["started"].notna()]
    if ran.empty:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in cols})
    end_ts = ran["finished"].fillna(ran.groupby("run", observed=True)["finished"].transform("max"))
    has_seq = "start_seq" in ran and ran["start_seq"].notna().all()
    big = np.iinfo(np.int64).max
    start_order = ran["start_seq"].astype("int64") if has_seq else pd.Series(1, index=ran.index)
    end_order = (ran["end_seq"].fillna(big).astype("int64") if has_seq
                 else pd.Series(0, index=ran.index))
    steps = pd.concat([
        pd.DataFrame({**{k: ran[k].astype(str) for k in keys}, "ts": ran["started"],
                      "order": start_order, "delta": 1}),
        pd.DataFrame({**{k: ran[k].astype(str) for k in keys}, "ts": end_ts,
                      "order": end_order, "delta": -1}),
    ], ignore_index=True)
    steps = steps[steps["ts"].notna()]
    sort = ["order", "ts"] if has_seq else ["ts", "order"]
    steps = steps.sort_values([*keys, *sort], kind="stable", ignore_index=True)
    steps["running"] = steps.groupby(keys, sort=False)["delta"].cumsum().astype("int64")
    out = steps[[*keys, "ts", "running"]]
    if by:
        limits = tasks.assign(**{k: tasks[k].astype(str) for k in keys}).groupby(keys)["limit"].max()
        out = out.merge(limits.rename("limit").reset_index(), on=keys, how="left")
    if freq:
        out = _resample(out, keys, freq)
    for k in keys:
        out[k] = out[k].astype("category")
    return out.reset_index(drop=True)


def _resample(steps: pd.DataFrame, keys: list[str], freq: str) -> pd.DataFrame:
    parts = []
    for group, g in steps.groupby(keys, sort=False):
        s = g.set_index("ts")["running"]
        peak = s.resample(freq).max()
        carried = s.resample(freq).last().ffill().shift(1)
        value = pd.concat([peak, carried], axis=1).max(axis=1).fillna(0).astype("int64")
        part = value.rename("running").reset_index()
        for k, v in zip(keys, group if isinstance(group, tuple) else (group,), strict=True):
            part[k] = v
        if "limit" in g:
            part["limit"] = g["limit"].iloc[0]
        parts.append(part)
    return pd.concat(parts, ignore_index=True)[list(steps.columns)]


def _peaks(tasks: pd.DataFrame, by: str | None) -> pd.Series:
    steps = concurrency_frame(tasks, by=by)
    keys = ["run"] + ([by] if by else [])
    if steps.empty:
        return pd.Series(dtype="int64")
    return steps.groupby(keys, observed=True)["running"].max()


# -- summaries --------------------------------------------------------------------------------
def alias_summary(tasks: pd.DataFrame) -> pd.DataFrame:
    """Per alias: task counts by status, success rate, latency of completed tasks (mean, p50,
    p95, max ms), mean queued ms, retries, tokens (cache reads and writes among the input),
    cost (``cache_write_cost``: its cache-write part), the files and lines coding agents
    changed, and the busiest concurrency seen."""
    tasks = _as_tasks(tasks)
    g = tasks.groupby("alias", observed=True)
    out = pd.DataFrame({"agent": g["agent"].first().astype(str), "limit": g["limit"].max(),
                        "tasks": g.size()})
    out = out.join(_status_counts(tasks, "alias").reindex(out.index, fill_value=0))
    out["success_rate"] = out["completed"] / out["tasks"]
    done = tasks[tasks["status"] == "completed"].groupby("alias", observed=True)["run_ms"]
    out["mean_ms"] = done.mean()
    out["p50_ms"] = done.quantile(0.5)
    out["p95_ms"] = done.quantile(0.95)
    out["max_ms"] = done.max()
    out["mean_queued_ms"] = g["queued_ms"].mean()
    out["retries"] = g["retries"].sum()
    out["tokens_in"] = g["tokens_in"].sum(min_count=1)
    out["tokens_out"] = g["tokens_out"].sum(min_count=1)
    out["cached_tokens_in"] = g["cached_tokens_in"].sum(min_count=1)
    out["cache_write_tokens_in"] = g["cache_write_tokens_in"].sum(min_count=1)
    out["cost"] = g["cost"].sum(min_count=1)
    out["cache_write_cost"] = g["cache_write_cost"].sum(min_count=1)
    for col in ("files_changed", "insertions", "deletions"):
        out[col] = g[col].sum(min_count=1)
    peaks = _peaks(tasks, "alias")
    out["peak_concurrency"] = (peaks.groupby(level="alias", observed=True).max()
                               if len(peaks) else pd.Series(dtype="int64"))
    out["peak_concurrency"] = out["peak_concurrency"].fillna(0).astype("int64")
    out.index = out.index.astype(str)
    out.columns.name = None
    return _rounded(out)


def _status_counts(tasks: pd.DataFrame, by: str) -> pd.DataFrame:
    """Tasks per ``by`` and status, one int64 column per status (cancelled is its own, never
    failed)."""
    counts = pd.crosstab(tasks[by], tasks["status"].astype(str))
    counts = counts.reindex(columns=STATUSES, fill_value=0).astype("int64")
    counts.columns.name = None
    return counts


#: Decimals summaries keep: times to 0.1 ms (the log's clock counts milliseconds), shares
#: (success rate, efficiency, retry share) to 0.1 %, costs to 1e-8 USD (no float noise left from
#: summing, no price lost).
ROUNDING = {"ms": 1, "share": 3, "cost": 8}
_SHARES = ("success_rate", "efficiency", "retry_share")


def _rounded(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its float columns rounded as :data:`ROUNDING` says."""
    for col in frame.columns:
        if not pd.api.types.is_float_dtype(frame[col].dtype):
            continue
        if col.endswith("_ms"):
            frame[col] = frame[col].round(ROUNDING["ms"])
        elif col in _SHARES:
            frame[col] = frame[col].round(ROUNDING["share"])
        elif col == "cost" or col.endswith("_cost"):
            frame[col] = frame[col].round(ROUNDING["cost"])
    return frame


def run_summary(tasks: pd.DataFrame, events: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per run: makespan, total task time, capacity, parallel efficiency
    (``task_ms / (makespan_ms x cap)``), peak concurrency, retries and backoff, the critical
    path's length and its retry share of the makespan, tokens and cost (``cache_write_cost``:
    the part of it paid for prompt-cache writes).

    Give the events frame (as ``tasks`` or ``events``) for exact makespans (run_started to
    run_complete, summed over resumed sessions) and the run's ``maxConcurrency``; ``cap`` is the
    sum of the aliases' limits, capped by ``maxConcurrency``.
    """
    if "kind" in tasks.columns:
        events, tasks = tasks, tasks_frame(tasks)
    g = tasks.groupby("run", observed=True)
    out = pd.DataFrame({"started": g["queued"].min().fillna(g["started"].min()),
                        "finished": g["finished"].max(), "tasks": g.size().astype("int64")})
    out = out.join(_status_counts(tasks, "run").reindex(out.index, fill_value=0))
    out["sessions"] = 1
    out["makespan_ms"] = _ms(out["finished"] - out["started"])
    max_conc = pd.Series(np.nan, index=out.index)
    if events is not None and len(events):
        spans = _sessions(events)
        out["started"] = spans.groupby("run", observed=True)["start"].min().reindex(out.index)
        out["finished"] = spans.groupby("run", observed=True)["end"].max().reindex(out.index)
        out["sessions"] = spans.groupby("run", observed=True).size().reindex(out.index)
        out["makespan_ms"] = spans.groupby("run", observed=True)["ms"].sum().reindex(out.index)
        rs = events[events["kind"] == "run_started"].groupby("run", observed=True)["max_concurrency"]
        max_conc = rs.last().reindex(out.index).astype("float64")
    out["task_ms"] = g["run_ms"].sum()
    limits = tasks.groupby(["run", "alias"], observed=True)["limit"].max()
    cap = limits.groupby(level="run", observed=True).sum(min_count=1).astype("float64")
    out["cap"] = np.fmin(cap.reindex(out.index), max_conc.fillna(np.inf)).replace(np.inf, np.nan)
    out["efficiency"] = out["task_ms"] / (out["makespan_ms"] * out["cap"])
    peaks = _peaks(tasks, None)
    out["peak_concurrency"] = peaks.reindex(out.index).fillna(0).astype("int64")
    out["retries"] = g["retries"].sum()
    out["backoff_ms"] = g["backoff_ms"].sum()
    out["retry_ms"] = g["retry_ms"].sum()
    crit = critical_path(tasks, events)
    cg = crit.groupby("run", observed=True) if len(crit) else None
    out["critical_path"] = (cg["key"].agg(lambda k: " -> ".join(k)) if cg is not None
                            else pd.Series(dtype=object))
    out["critical_retry_ms"] = cg["retry_ms"].sum() if cg is not None else 0.0
    out["critical_retry_ms"] = out["critical_retry_ms"].fillna(0.0)
    out["retry_share"] = out["critical_retry_ms"] / out["makespan_ms"]
    out["tokens_in"] = g["tokens_in"].sum(min_count=1)
    out["tokens_out"] = g["tokens_out"].sum(min_count=1)
    out["cost"] = g["cost"].sum(min_count=1)
    out["cache_write_cost"] = g["cache_write_cost"].sum(min_count=1)
    out.index = out.index.astype(str)
    out.columns.name = None
    return _rounded(out).sort_values("started")


def _sessions(events: pd.DataFrame) -> pd.DataFrame:
    """Start, end and length of each session of each run (a resume starts a new session)."""
    ev = events[events["run"].notna()][["run", "kind", "ts"]]
    session = (ev["kind"] == "run_started").astype("int64").groupby(ev["run"], observed=True).cumsum()
    spans = ev.groupby([ev["run"], session.rename("session")], observed=True)["ts"].agg(["min", "max"])
    spans.columns = ["start", "end"]
    spans["ms"] = _ms(spans["end"] - spans["start"])
    return spans.reset_index()


# -- critical path -------------------------------------------------------------------------------
def critical_path(tasks: pd.DataFrame, events: pd.DataFrame | None = None,
                  run: str | None = None) -> pd.DataFrame:
    """The chain of tasks through ``dependsOn`` that ended last: from the last task to finish,
    repeatedly the dependency that finished last. Only tasks that ran count (a task cancelled or
    skipped before it started set no time). One row per step, first task first, with
    ``offset_ms`` from the run's start (its first event when ``events`` is given) to the
    step's start, ``gap_ms`` from the previous step's end to this start, and the step's times.
    """
    if "kind" in tasks.columns:
        events, tasks = tasks, tasks_frame(tasks)
    if run is not None:
        tasks = tasks[tasks["run"].astype(str) == run]
    cols = ["run", "step", "key", "alias", "status", "queued", "started", "finished", "queued_ms",
            "run_ms", "retry_ms", "offset_ms", "gap_ms", "task_id"]
    done = tasks[tasks["finished"].notna() & tasks["started"].notna()]  # tasks that ran
    done = done.assign(run=done["run"].astype(str)).sort_values(["finished", "end_seq"], kind="stable")
    done = done.drop_duplicates(["run", "key"], keep="last")
    if done.empty:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in cols})
    # each task's dependency that finished last (done is sorted by finish, so keep the last)
    pos = pd.Series(np.arange(len(done)), index=pd.MultiIndex.from_arrays([done["run"], done["key"]]))
    deps = pd.DataFrame({"run": done["run"].to_numpy(), "me": np.arange(len(done)),
                         "dep": done["depends_on"].fillna("").astype(str).str.split(",").to_numpy()})
    deps = deps.explode("dep")
    deps = deps[deps["dep"].notna() & (deps["dep"] != "")]
    deps["at"] = pos.reindex(pd.MultiIndex.from_arrays([deps["run"], deps["dep"]])).to_numpy()
    deps = deps.dropna(subset=["at"]).sort_values("at", kind="stable")
    pred = dict(zip(deps["me"], deps["at"].astype("int64"), strict=True))  # later rows win
    last = done.groupby("run", sort=False).tail(1)  # the last task to finish in each run
    chains: list[int] = []
    for end_pos in pos[list(zip(last["run"], last["key"], strict=True))]:
        chain = [int(end_pos)]
        while chain[-1] in pred and pred[chain[-1]] not in chain:
            chain.append(pred[chain[-1]])
        chains.extend(chain[::-1])
    steps = done.iloc[chains].reset_index(drop=True)
    steps["step"] = steps.groupby("run", sort=False).cumcount() + 1
    if events is not None and len(events):
        starts = events.groupby(events["run"].astype(str), observed=True)["ts"].min()
    else:
        starts = done.groupby("run")["queued"].min().fillna(done.groupby("run")["started"].min())
    steps["offset_ms"] = _ms(steps["started"] - steps["run"].map(starts))
    prev_end = steps.groupby("run", sort=False)["finished"].shift(1)
    steps["gap_ms"] = _ms(steps["started"] - prev_end)
    steps["run"] = steps["run"].astype("category")
    return _rounded(steps[cols].copy())

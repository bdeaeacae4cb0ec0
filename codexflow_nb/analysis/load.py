"""Read ``events.jsonl`` (and logs of the Node ``codex-flow`` tool) into one typed DataFrame.

The fast path hands the whole file to ``pyarrow.json`` with an explicit schema. A file that
pyarrow cannot take (a torn or bad line, bytes that are not UTF-8, a field of the wrong type) is
read again line by line: bad lines are skipped and reported in a warning (count and line
numbers) and in ``df.attrs["bad_lines"]``; loading never fails because of the log's content.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from ..errors import ConfigError
from ..inputs import check_readable

#: Fields read from each line (JSON name, Arrow type). Other fields are ignored.
USAGE_TYPE = pa.struct([("tokensIn", pa.int64()), ("tokensOut", pa.int64()),
                        ("cachedTokensIn", pa.int64()), ("reasoningTokens", pa.int64()),
                        ("cacheWriteTokensIn", pa.int64()), ("cacheWrite1hTokensIn", pa.int64())])
#: The usage struct's fields as frame columns, in order.
USAGE_COLUMNS = ("tokens_in", "tokens_out", "cached_tokens_in", "reasoning_tokens",
                 "cache_write_tokens_in", "cache_write_1h_tokens_in")
ERROR_TYPE = pa.struct([("type", pa.string()), ("message", pa.string()), ("status", pa.int64())])
#: Coding-agent runtimes: a task's workspace and the files it changed (terminal events).
WORKSPACE_TYPE = pa.struct([("kind", pa.string()), ("path", pa.string()), ("branch", pa.string())])
FILE_TYPE = pa.struct([("path", pa.string()), ("status", pa.string()), ("insertions", pa.int64()),
                       ("deletions", pa.int64()), ("binary", pa.bool_())])
CHANGES_TYPE = pa.struct([("files", pa.list_(FILE_TYPE)), ("insertions", pa.int64()),
                          ("deletions", pa.int64())])
SCHEMA = pa.schema([
    ("v", pa.int64()), ("ts", pa.timestamp("us", tz="UTC")), ("kind", pa.string()),
    ("runId", pa.string()), ("alias", pa.string()), ("agentId", pa.string()),
    ("taskId", pa.string()), ("key", pa.string()), ("phase", pa.int64()),
    ("attempt", pa.int64()), ("ok", pa.bool_()), ("ms", pa.float64()), ("usage", USAGE_TYPE),
    ("model", pa.string()), ("error", ERROR_TYPE), ("delayMs", pa.float64()),
    ("limit", pa.int64()), ("task", pa.string()), ("dependsOn", pa.list_(pa.string())),
    ("summary", pa.string()), ("runtime", pa.string()), ("maxConcurrency", pa.int64()),
    ("cancelled", pa.string()),
    # coding agents (from here on, see AGENT_KINDS): terminal events
    ("agentCli", pa.string()), ("steps", pa.int64()), ("warnings", pa.int64()),
    ("workspace", WORKSPACE_TYPE), ("changes", CHANGES_TYPE),
    # task_step events (``message`` also on run_warning)
    ("stepType", pa.string()), ("command", pa.string()), ("exitCode", pa.int64()),
    ("status", pa.string()), ("durationMs", pa.float64()), ("output", pa.string()),
    ("files", pa.list_(pa.string())), ("tool", pa.string()), ("query", pa.string()),
    ("message", pa.string()),
])
#: The fast path reads the coding-agent fields (the usage struct's fields after the first two:
#: cache reads, reasoning, cache writes; and the fields from ``agentCli`` on) in a second pass,
#: only from a file that holds one of these kinds (agent runtimes always emit
#: ``task_workspace``): the parser pays for every field of the schema on every line, present
#: or not, about 4% of the parse per field.
AGENT_KINDS = ("task_workspace", "task_step", "run_warning")
_FIRST_AGENT = SCHEMA.get_field_index("agentCli")
_MAIN_SCHEMA = pa.schema([pa.field("usage", pa.struct(list(USAGE_TYPE)[:2])) if f.name == "usage"
                          else f for f in list(SCHEMA)[:_FIRST_AGENT]])
_AGENT_SCHEMA = pa.schema([("usage", pa.struct(list(USAGE_TYPE)[2:])),
                           *list(SCHEMA)[_FIRST_AGENT:]])

#: Output column for each JSON field (struct fields are flattened separately).
RENAME = {"runId": "run", "agentId": "agent", "taskId": "task_id", "delayMs": "delay_ms",
          "dependsOn": "depends_on", "maxConcurrency": "max_concurrency",
          "agentCli": "agent_cli", "stepType": "step_type", "exitCode": "exit_code",
          "durationMs": "duration_ms"}
CATEGORIES = ("kind", "run", "alias", "agent", "model", "error_type", "runtime", "source",
              "agent_cli", "workspace", "step_type", "status")
#: Column order of the frame ``load_events`` returns.
COLUMNS = ["ts", "kind", "run", "alias", "agent", "task_id", "key", "phase", "attempt", "ok",
           "ms", "tokens_in", "tokens_out", "cached_tokens_in", "reasoning_tokens",
           "cache_write_tokens_in", "cache_write_1h_tokens_in", "model",
           "error_type", "error_message", "error_status", "delay_ms", "limit", "task",
           "depends_on", "summary", "runtime", "max_concurrency", "cancelled",
           "agent_cli", "steps", "warnings", "workspace", "workspace_path", "branch",
           "files_changed", "insertions", "deletions", "changes",
           "step_type", "command", "exit_code", "status", "duration_ms", "output", "files",
           "tool", "query", "message", "v", "source"]

BLOCK_SIZE = 4 << 20  # measured best on the 1M-event benchmark (1 MiB: 2.3 s, 4 MiB: 1.5 s)
_PARSE = pj.ParseOptions(explicit_schema=_MAIN_SCHEMA, unexpected_field_behavior="ignore")
_PARSE_AGENT = pj.ParseOptions(explicit_schema=_AGENT_SCHEMA, unexpected_field_behavior="ignore")
_MAX_LISTED = 20


class EventLogWarning(UserWarning):
    """Lines of an event log were skipped or fields dropped while loading."""


def load_events(path_or_paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
                runs: str | Iterable[str] | None = None,
                since: datetime | str | pd.Timestamp | timedelta | None = None) -> pd.DataFrame:
    """One row per event, in log order, with typed columns.

    ``path_or_paths``: a log file, a folder (its ``*.jsonl`` files) or a list of them.
    ``runs``: keep only these run ids. ``since``: keep events at or after this time (a datetime,
    an ISO string, or a timedelta / ``"2h"`` meaning that long ago).
    """
    files = _files(path_or_paths)
    run_set = [runs] if isinstance(runs, str) else (list(runs) if runs is not None else None)
    since_ts = _since(since)
    tables: list[pa.Table] = []
    bad_lines: list[dict[str, Any]] = []
    for path in files:
        try:
            table, bad = _read_file(path)
        except OSError as exc:  # changed since it was checked (removed, permissions), or EIO
            raise ConfigError(f"{path}: cannot read the event log: "
                              f"{exc.strerror or exc}") from None
        bad_lines.extend({"file": str(path), "line": n, "reason": why} for n, why in bad)
        if bad:
            _warn_bad(path, bad)
        table = table.append_column("source", pa.DictionaryArray.from_arrays(
            pa.array(np.zeros(table.num_rows, dtype=np.int32)), pa.array([path.name])))
        if run_set is not None:
            table = table.filter(pc.is_in(table.column("runId"), value_set=pa.array(run_set)))
        if since_ts is not None:
            table = table.filter(pc.greater_equal(table.column("ts"), pa.scalar(since_ts)))
        tables.append(table)
    table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    frame = _to_frame(table)
    if len(files) > 1:  # several files: one timeline, file order then line order on ties
        frame = frame.sort_values("ts", kind="stable", ignore_index=True)
    frame["seq"] = np.arange(len(frame), dtype=np.int64)
    frame.attrs["bad_lines"] = bad_lines
    frame.attrs["files"] = [str(p) for p in files]
    return frame


# -- files ---------------------------------------------------------------------------------
def _files(spec: Any) -> list[Path]:
    """The log files named (a folder: its ``*.jsonl``), each checked readable and regular
    before any is read: one ConfigError line per path that is not."""
    items = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    if not items:
        raise ConfigError("load_events: no log file given")
    files: list[Path] = []
    problems: list[str] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            try:  # not glob(): it reads an unreadable folder as an empty one
                names = os.listdir(path)
            except OSError as exc:
                problems.append(f"{path}: cannot read the folder: {exc.strerror or exc}")
                continue
            found = sorted(path / name for name in names if name.endswith(".jsonl"))
            if not found:
                problems.append(f"{path}: folder holds no *.jsonl event log")
            files.extend(found)
        elif path.exists() or path.is_symlink():
            files.append(path)
        else:
            problems.append(f"{path}: no such event log (run something first, or pass --log-file)")
    for path in files:
        try:  # a FIFO or device would hang or never end; an unreadable file: a clear line
            check_readable(path, "event log")
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return files


def _since(since: Any) -> pd.Timestamp | None:
    if since is None:
        return None
    if isinstance(since, timedelta):
        return pd.Timestamp.now(tz="UTC") - pd.Timedelta(since)
    if isinstance(since, str):
        try:
            return _utc(pd.Timestamp(since))
        except ValueError:
            try:
                return pd.Timestamp.now(tz="UTC") - pd.Timedelta(since)
            except ValueError:
                raise ConfigError(f"since: {since!r} is neither a time (ISO-8601) nor a "
                                  f"duration like '2h'") from None
    return _utc(pd.Timestamp(since))


def _utc(ts: pd.Timestamp) -> pd.Timestamp:
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _warn_bad(path: Path, bad: list[tuple[int, str]]) -> None:
    listed = ", ".join(str(n) for n, _ in bad[:_MAX_LISTED]) + (" ..." if len(bad) > _MAX_LISTED else "")
    warnings.warn(f"{path}: skipped {len(bad)} bad line(s): {listed} (first: {bad[0][1]})",
                  EventLogWarning, stacklevel=3)


# -- reading one file --------------------------------------------------------------------------
def _read_file(path: Path) -> tuple[pa.Table, list[tuple[int, str]]]:
    """The file as a table in ``SCHEMA``, plus ``(line, reason)`` for each skipped line."""
    if path.stat().st_size == 0:
        return SCHEMA.empty_table(), []
    if _is_node_log(path):
        return _scan(path.read_bytes(), node_name=path.name)
    try:
        return _fast(path), []
    except (pa.ArrowInvalid, UnicodeDecodeError):
        pass
    data = path.read_bytes()
    # The usual damage is a torn last line (a crash mid-write): drop it and stay on the fast path.
    cut = data.rfind(b"\n", 0, len(data) - 1) + 1
    if cut > 0 and not _parses(data[cut:]):
        try:
            return _fast(data[:cut]), [(data.count(b"\n", 0, cut) + 1, _reason(data[cut:]))]
        except (pa.ArrowInvalid, UnicodeDecodeError):
            pass
    return _scan(data)


def _fast(source: Path | bytes) -> pa.Table:
    """The file in ``SCHEMA``: the main fields, then the agent fields (a second pass when the
    file holds agent events, else nulls)."""
    main = _read_json(source, _PARSE)
    n = main.num_rows
    agent = (_read_json(source, _PARSE_AGENT) if pc.any(pc.is_in(
        main.column("kind"), value_set=pa.array(AGENT_KINDS))).as_py() else None)
    if agent is not None and agent.num_rows != n:  # cannot happen: same file, same parser
        raise pa.ArrowInvalid("the two passes disagree on the number of lines")
    usage = main.column("usage").combine_chunks()
    extra = (agent.column("usage").combine_chunks() if agent is not None
             else pa.nulls(n, _AGENT_SCHEMA.field("usage").type))
    children = [*usage.flatten(), *extra.flatten()]
    columns = [pa.StructArray.from_arrays(children, fields=list(USAGE_TYPE),
                                          mask=usage.is_null()) if f.name == "usage"
               else main.column(f.name) for f in _MAIN_SCHEMA]
    columns += [agent.column(f.name) if agent is not None else pa.nulls(n, f.type)
                for f in list(SCHEMA)[_FIRST_AGENT:]]
    return pa.Table.from_arrays(columns, schema=SCHEMA)


def _read_json(source: Path | bytes, options: pj.ParseOptions) -> pa.Table:
    table = pj.read_json(io.BytesIO(source) if isinstance(source, bytes) else source,
                         read_options=pj.ReadOptions(block_size=BLOCK_SIZE), parse_options=options)
    table.validate(full=True)  # pyarrow does not check UTF-8 while parsing
    return table


def _parses(raw: bytes) -> bool:
    try:
        return isinstance(json.loads(raw), dict)
    except ValueError:
        return False


def _reason(raw: bytes) -> str:
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return "not UTF-8"
    except ValueError as exc:
        return f"not JSON ({exc.msg})"
    return f"not a JSON object ({type(obj).__name__})"


def _is_node_log(path: Path) -> bool:
    """Node ``codex-flow`` logs have no schema version and no run id."""
    with open(path, "rb") as fh:
        for raw in fh:
            if raw.strip():
                try:
                    obj = json.loads(raw)
                except ValueError:
                    return False
                return isinstance(obj, dict) and "v" not in obj and "runId" not in obj
    return False


# -- line-by-line scan (damaged logs, Node logs) --------------------------------------------------
_SALVAGE = b'{"v":'


def _scan(data: bytes, node_name: str | None = None) -> tuple[pa.Table, list[tuple[int, str]]]:
    """Parse line by line; skip what cannot be used; coerce fields to ``SCHEMA`` types."""
    rows: list[dict[str, Any]] = []
    bad: list[tuple[int, str]] = []
    dropped: dict[str, int] = {}
    for number, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw.decode("utf-8"))
        except ValueError:
            obj = None
            # A torn line followed by a later append shares one line: keep the later event.
            at = raw.rfind(_SALVAGE)
            if at > 0 and _parses(raw[at:]):
                obj = json.loads(raw[at:])
            bad.append((number, _reason(raw) + (", event after it kept" if obj else "")))
            if obj is None:
                continue
        if not isinstance(obj, dict):
            bad.append((number, f"not a JSON object ({type(obj).__name__})"))
            continue
        if node_name is not None:
            obj = _from_node(obj, node_name)
        row, why = _coerce_row(obj, dropped)
        if row is None:
            bad.append((number, why))
        else:
            rows.append(row)
    if dropped:
        warnings.warn("fields of an unexpected type were left empty: " + ", ".join(
            f"{name} ({count} line(s))" for name, count in sorted(dropped.items())),
            EventLogWarning, stacklevel=4)
    columns = {f.name: pa.array([r.get(f.name) for r in rows], type=f.type) for f in SCHEMA}
    return pa.table(columns, schema=SCHEMA), bad


def _from_node(obj: dict[str, Any], name: str) -> dict[str, Any]:
    """Map a Node-tool event onto the engine's fields (one synthetic run per file)."""
    out = dict(obj)
    out["runId"] = f"node:{name}"
    if out.get("key") is None:
        out["key"] = out.get("taskId")
    if "engine" in out and out.get("runtime") is None:
        out["runtime"] = out["engine"]
    if out.get("kind") == "task_complete" and out.get("ok") is False:
        out["kind"] = "task_failed"
    if out.get("usage") is None and ("tokensIn" in out or "tokensOut" in out):
        out["usage"] = {"tokensIn": out.get("tokensIn"), "tokensOut": out.get("tokensOut")}
    if isinstance(out.get("error"), str):
        out["error"] = {"type": "Error", "message": out["error"]}
    return out


def _coerce_row(obj: dict[str, Any], dropped: dict[str, int]) -> tuple[dict[str, Any] | None, str]:
    ts = _coerce_ts(obj.get("ts"))
    if ts is None:
        return None, "no usable 'ts'"
    if not isinstance(obj.get("kind"), str):
        return None, "no 'kind'"
    row: dict[str, Any] = {"ts": ts}
    for f in SCHEMA:
        if f.name == "ts" or obj.get(f.name) is None:
            continue
        value = _coerce(obj[f.name], f.type)
        if value is _BAD:
            dropped[f.name] = dropped.get(f.name, 0) + 1
        else:
            row[f.name] = value
    return row, ""


_BAD = object()


def _coerce(value: Any, typ: pa.DataType) -> Any:
    if pa.types.is_string(typ):
        return value if isinstance(value, str) else _BAD
    if pa.types.is_boolean(typ):
        return value if isinstance(value, bool) else _BAD
    if pa.types.is_integer(typ):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value if isinstance(value, int) and not isinstance(value, bool) else _BAD
    if pa.types.is_floating(typ):
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else _BAD
    if pa.types.is_list(typ):
        if not isinstance(value, list):
            return _BAD
        items = [None if x is None else _coerce(x, typ.value_type) for x in value]
        return _BAD if any(x is _BAD for x in items) else items
    if pa.types.is_struct(typ):
        if not isinstance(value, dict):
            return _BAD
        out = {}
        for child in typ:
            v = value.get(child.name)
            c = _coerce(v, child.type) if v is not None else None
            out[child.name] = None if c is _BAD else c
        return out
    return _BAD


def _coerce_ts(value: Any) -> datetime | None:
    if isinstance(value, str):
        try:
            ts = datetime.fromisoformat(value)
        except ValueError:
            return None
        return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = value / 1000 if value > 1e11 else value  # epoch milliseconds or seconds
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return None


# -- Arrow table -> pandas --------------------------------------------------------------------------
_PANDAS_TYPES = {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype()}


def _to_frame(table: pa.Table) -> pd.DataFrame:
    cols: dict[str, pa.ChunkedArray] = {}
    for name in table.column_names:
        col = table.column(name)
        if name == "usage":
            for i, out in enumerate(USAGE_COLUMNS):
                cols[out] = _field(col, i)
        elif name == "error":
            cols["error_type"] = _field(col, 0)
            cols["error_message"] = _field(col, 1)
            cols["error_status"] = _field(col, 2)
        elif name == "workspace":
            cols["workspace"] = _field(col, 0)
            cols["workspace_path"] = _field(col, 1)
            cols["branch"] = _field(col, 2)
        elif name == "changes":
            files = _field(col, 0)
            cols["files_changed"] = pc.cast(pc.list_value_length(files), pa.int64())
            cols["insertions"] = _field(col, 1)
            cols["deletions"] = _field(col, 2)
            cols["changes"] = files
        elif name in ("dependsOn", "files"):
            cols[RENAME.get(name, name)] = _join(col)
        else:
            cols[RENAME.get(name, name)] = col
    for name in CATEGORIES:
        if not pa.types.is_dictionary(cols[name].type):
            cols[name] = cols[name].dictionary_encode()
    out = pa.table({name: cols[name] for name in COLUMNS})
    frame = out.to_pandas(types_mapper=_PANDAS_TYPES.get)
    for name in CATEGORIES:  # unify categories across files (concat keeps one dictionary per chunk)
        if not isinstance(frame[name].dtype, pd.CategoricalDtype):
            frame[name] = frame[name].astype("category")
    return frame


def _field(col: pa.ChunkedArray, index: int) -> pa.ChunkedArray:
    return pc.struct_field(col, [index])


def _join(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """A list of strings as one ``,``-joined string (null items left out)."""
    if pc.list_flatten(col).null_count == 0:
        return pc.binary_join(col, ",")
    return pa.chunked_array([pa.array(
        [None if items is None else ",".join(x for x in items if x is not None)
         for items in col.to_pylist()], pa.string())])

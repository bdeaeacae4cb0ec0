"""Static renderings of a run (HTML and plain text), and a live view built on display handles.

The HTML here needs no widgets and no kernel: it is what a shared notebook keeps after a
run, what front ends without widget support show, and what ``%%codexflow`` streams into.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from html import escape
from typing import TYPE_CHECKING, Any

from ..events import Event
from ..plan import Plan

if TYPE_CHECKING:
    from ..api import RunResult
from .coalesce import Throttle
from .state import RunState, TaskState, step_level

#: Streamed text kept per task in renderings (the tail; the whole text is in ``.runs``).
TAIL_CHARS = 4000

STATUS_COLORS = {
    "planned": "#9e9e9e", "queued": "#bdbdbd", "running": "#1e88e5", "completed": "#43a047",
    "failed": "#e53935", "timeout": "#fb8c00", "cancelled": "#757575", "skipped": "#b0bec5",
    "rejected": "#8e24aa",
}


#: How a step's line is marked, by :func:`~.state.step_level`.
STEP_STYLES = {"ok": ("▸", "color:#546e7a"), "failed": ("✗", "color:#e53935;font-weight:600"),
               "warning": ("⚠", "color:#fb8c00")}
#: Lines of a failed command's output shown under it.
OUTPUT_LINES = 3


def format_step(event: Event) -> str:
    """One line for a ``task_step`` event: ``$ cmd (exit 0, 12 ms)``, a file change, a tool."""
    kind = event.get("stepType")
    ms = f", {event['durationMs']:.0f} ms" if event.get("durationMs") is not None else ""
    if kind == "command":
        code = event.get("exitCode")
        return f"$ {str(event.get('command'))[:160]} (exit {'-' if code is None else code}{ms})"
    if kind == "file_change":
        return f"edited {', '.join(str(f) for f in event.get('files') or [])[:160]}"
    if kind == "warning":
        return f"warning: {str(event.get('message'))[:200]}"
    what = event.get("tool") or event.get("query") or ""
    return f"{kind} {what}{f' ({ms[2:]})' if ms else ''}"


def step_line(step: Event) -> str:
    """A step as shown in a task's output: a mark, the :func:`format_step` line, and for a
    failed step that is not a command (whose exit code says it) the word *failed*."""
    level = step_level(step)
    line = f"{STEP_STYLES[level][0]} {format_step(step)}"
    if level == "failed" and step.get("stepType") != "command":
        line += " failed"
    return line


def _failed_output(step: Event) -> str:
    """The first lines of a failed command's output, indented (empty for other steps)."""
    if step_level(step) != "failed" or not step.get("output"):
        return ""
    lines = str(step["output"]).strip("\n").splitlines()
    more = f"\n    … ({len(lines) - OUTPUT_LINES} more lines)" if len(lines) > OUTPUT_LINES else ""
    return "".join(f"\n    {line[:200]}" for line in lines[:OUTPUT_LINES]) + more


def changes_line(changes: dict[str, Any] | None) -> str:
    """``2 files changed (+10 -3): a.py, b.py`` from a terminal event's ``changes``."""
    files = (changes or {}).get("files") or []
    if not files:
        return "no files changed"
    names = ", ".join(str(f.get("path")) for f in files[:8]) + (" …" if len(files) > 8 else "")
    return (f"{len(files)} file{'s' if len(files) != 1 else ''} changed "
            f"(+{changes.get('insertions', 0)} -{changes.get('deletions', 0)}): {names}")


def _workspace_line(ws: dict[str, Any]) -> str:
    branch = f" · branch {ws['branch']}" if ws.get("branch") else ""
    return f"workspace: {ws.get('kind')} {ws.get('path')}{branch}"


def _log_tail(task: TaskState, limit: int) -> tuple[list[str | Event], int]:
    """The newest entries of a task's log (texts and steps) within ``limit`` characters, oldest
    first, and how many characters were left out."""
    out: list[str | Event] = []
    budget, left_out = limit, 0
    for entry in reversed(task.log):
        if isinstance(entry, list):
            if len(entry) > 1:  # keep renderings cheap when a view redraws often
                entry[:] = ["".join(entry)]
            item: str | Event = entry[0] if entry else ""
            size = len(item)  # type: ignore[arg-type]
        else:
            item, size = entry, len(format_step(entry)) + 3
        if budget <= 0:
            left_out += size
        elif size <= budget or not isinstance(item, str):
            out.append(item)
            budget -= size
        else:
            out.append(item[-budget:])
            left_out += size - budget
            budget = 0
    out.reverse()
    return out, left_out


def transcript_text(task: TaskState, limit: int = TAIL_CHARS) -> str:
    """A task's streamed messages and steps, in order, as plain text (the tail)."""
    return _transcript(task, limit, html=False)


def transcript_html(task: TaskState, limit: int = TAIL_CHARS) -> str:
    """A task's streamed messages and steps, in order, as a ``<pre>`` block (the tail):
    steps on lines of their own, failed ones red with their first output lines; the workspace
    first and the changed files last (once the task has ended). Empty before any output."""
    body = _transcript(task, limit, html=True)
    return f"<pre style='white-space:pre-wrap;margin:0'>{body}</pre>" if body else ""


def _transcript(task: TaskState, limit: int, *, html: bool) -> str:
    def note(text: str, style: str = "color:#757575") -> str:
        return f"<span style='{style}'>{escape(text)}</span>" if html else text

    items, left_out = _log_tail(task, limit)
    parts: list[str] = []
    if task.workspace:
        parts.append(note(_workspace_line(task.workspace)) + "\n")
    if left_out:
        parts.append(note(f"… ({left_out} earlier characters)") + "\n")
    for item in items:
        if isinstance(item, str):
            parts.append(escape(item) if html else item)
            continue
        if parts and not parts[-1].endswith("\n"):
            parts.append("\n")
        line = step_line(item) + _failed_output(item)
        parts.append(note(line, STEP_STYLES[step_level(item)][1]) + "\n")
    if task.finished and task.changes is not None:
        if parts and not parts[-1].endswith("\n"):
            parts.append("\n")
        parts.append(note(changes_line(task.changes)))
    return "".join(parts)


def _last_line(task: TaskState) -> str:
    """The newest line of a task's output (a step or the last line of its text)."""
    for entry in reversed(task.log):
        if isinstance(entry, dict):
            return step_line(entry)
        text = "".join(entry).rstrip()
        if text:
            return text.splitlines()[-1]
    return ""


def text_bar(done: int, total: int, width: int = 20) -> str:
    filled = round(width * done / total) if total else width
    return "█" * filled + "░" * (width - filled)


def tail(text: str, limit: int = TAIL_CHARS) -> str:
    if len(text) <= limit:
        return text
    return f"… ({len(text) - limit} earlier characters)\n" + text[-limit:]


def headline(state: RunState) -> str:
    if state.complete:
        how = f"cancelled: {state.cancelled}" if state.cancelled else ("ok" if state.ok else "failed")
        ms = f" in {state.ms / 1000:.2f} s" if state.ms is not None else ""
        return f"run {state.run_id} finished{ms}: {how}"
    if state.started:
        return f"run {state.run_id} · {state.runtime} · {state.done}/{state.total} done · " \
               f"{state.running} running"
    return f"{state.total} task(s) for {len(state.aliases)} alias(es) · not started"


def step_count(t: TaskState) -> str:
    """``3 steps, 1 failed`` (empty for a task without steps)."""
    if not t.steps:
        return ""
    failed = t.failed_steps
    return f"{len(t.steps)} step{'s' if len(t.steps) != 1 else ''}" + \
        (f", {failed} failed" if failed else "")


def _task_line(t: TaskState) -> str:
    ms = f" {t.ms:.0f} ms" if t.ms is not None else ""
    steps = f" · {step_count(t)}" if t.steps else ""
    detail = f": {t.error}" if t.error else ""
    return f"{t.key} ({t.alias}) {t.status}{ms}{steps}{detail}"


def render_text(state: RunState, *, streamed: bool = True) -> str:
    """The run as plain text (``text/plain`` of every bundle)."""
    lines = [f"codexflow · {headline(state)}"]
    for a in state.aliases.values():
        limit = f" · running {a.running}/{a.limit}" if a.limit else ""
        lines.append(f"  {a.alias:<16} {text_bar(a.done, a.total)} {a.done}/{a.total}{limit}")
    for t in state.tasks.values():
        lines.append(f"  - {_task_line(t)}")
        if streamed and t.log and not t.finished:
            lines.append(f"      {_last_line(t)[:100]}")
        if t.finished and t.changes is not None:
            lines.append(f"      {changes_line(t.changes)[:100]}")
    return "\n".join(lines)


def _badge(status: str) -> str:
    color = STATUS_COLORS.get(status, "#616161")
    return f'<span style="color:{color};font-weight:600">{escape(status)}</span>'


def _alias_table(state: RunState) -> str:
    rows = "".join(
        f"<tr><td>{escape(a.alias)}</td><td>{escape(a.agent_id or '')}</td>"
        f"<td><code>{text_bar(a.done, a.total, 12)}</code> {a.done}/{a.total}</td>"
        f"<td>{a.running}/{a.limit if a.limit is not None else '-'}</td>"
        f"<td>{escape(', '.join(f'{k} {v}' for k, v in sorted(a.counts.items())))}</td></tr>"
        for a in state.aliases.values())
    return ("<table><thead><tr><th>alias</th><th>agent</th><th>done</th><th>running/limit</th>"
            f"<th>statuses</th></tr></thead><tbody>{rows}</tbody></table>")


def render_html(state: RunState, *, streamed: bool = True) -> str:
    """The run as HTML: headline, per-alias table, one collapsible block per task."""
    parts = [f"<div class='codexflow-run'><p><b>codexflow</b> · {escape(headline(state))}</p>",
             _alias_table(state)]
    for t in state.tasks.values():
        ms = f" · {t.ms:.0f} ms" if t.ms is not None else ""
        ms += f" · {step_count(t)}" if t.steps else ""
        body = ""
        if streamed and (t.log or t.workspace):
            body = transcript_html(t)
        if t.error:
            body += f"<div style='color:#e53935'>{escape(t.error)}</div>"
        parts.append(f"<details><summary><code>{escape(t.key)}</code> · {escape(t.alias)} · "
                     f"{_badge(t.status)}{ms}</summary>{body}</details>")
    parts.append("</div>")
    return "".join(parts)


def summary_html(state: RunState, *, streamed: bool = True) -> str:
    """A static end-of-run summary: final statuses per alias and per task, and (collapsed)
    the tail of each task's streamed text."""
    rows = "".join(
        f"<tr><td>{escape(r['alias'])}</td><td>{escape(r['agent'])}</td><td>{r['limit'] or '-'}</td>"
        f"<td>{r['tasks']}</td><td>{r['completed']}</td><td>{r['other']}</td>"
        f"<td>{r['avg_ms'] if r['avg_ms'] is not None else '-'}</td></tr>"
        for r in state.summary_rows())
    agents = state.has_workspaces  # coding agents: their steps and changed files too
    tasks = "".join(
        f"<tr><td><code>{escape(t.key)}</code></td><td>{escape(t.alias)}</td><td>{_badge(t.status)}</td>"
        f"<td>{f'{t.ms:.0f}' if t.ms is not None else '-'}</td>"
        + (f"<td>{escape(step_count(t) or '-')}</td>"
           f"<td style='text-align:left'>{escape(changes_line(t.changes) if t.changes else '-')}</td>"
           if agents else "")
        + f"<td style='text-align:left'>{escape((t.error or t.summary or '')[:160])}</td></tr>"
        for t in state.tasks.values())
    agent_heads = "<th>steps</th><th>changes</th>" if agents else ""
    return (f"<div class='codexflow-summary'><p><b>codexflow</b> · {escape(headline(state))}</p>"
            "<table><thead><tr><th>alias</th><th>agent</th><th>limit</th><th>tasks</th>"
            "<th>completed</th><th>not completed</th><th>avg ms</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
            "<table><thead><tr><th>task</th><th>alias</th><th>status</th><th>ms</th>"
            f"{agent_heads}<th>summary / error</th></tr></thead><tbody>{tasks}</tbody></table>"
            f"{_streamed_blocks(state) if streamed else ''}</div>")


def _streamed_blocks(state: RunState) -> str:
    return "".join(
        f"<details><summary>streamed: <code>{escape(t.key)}</code> ({t.chars} characters"
        f"{f', {step_count(t)}' if t.steps else ''})</summary>{transcript_html(t)}</details>"
        for t in state.tasks.values() if t.log)


def bundle(state: RunState, *, final: bool = False) -> dict[str, str]:
    """A display bundle (``text/html`` + ``text/plain``) for the current state."""
    if final:
        return {"text/html": summary_html(state), "text/plain": render_text(state, streamed=False)}
    return {"text/html": render_html(state), "text/plain": render_text(state)}


class LiveView:
    """A run shown through one display handle, updated from events at most ``1/interval``
    times a second. Works in every front end that renders HTML (no widgets needed).

    ``LiveView(plan)`` is an ``on_event`` subscriber: ``await run_async(..., on_event=view)``.
    """

    def __init__(self, plan: Plan | None = None, *, interval: float = 0.1, timers: bool = True,
                 publish: Callable[[dict[str, str]], None] | None = None) -> None:
        self.state = RunState(plan)
        self._publish = publish or self._display
        self._handle: Any = None
        self.updates = 0
        self._throttle = Throttle(self._flush, interval, timers=timers)

    def _display(self, data: dict[str, str]) -> None:
        from IPython.display import display

        if self._handle is None:
            self._handle = display(data, raw=True, display_id=True)
        else:
            self._handle.update(data, raw=True)

    def show(self) -> None:
        """Put the view in the output now (before the run starts)."""
        self._throttle.flush("view")

    def __call__(self, event: Event) -> None:
        self.state.apply(event)
        if event.get("kind") == "run_complete":
            self.finish()
        else:
            self._throttle.request("view")

    def poll(self) -> None:
        """Send a held-back update whose interval has passed (views made with ``timers=False``)."""
        self._throttle.poll()

    def finish(self) -> None:
        """Replace the live view with the static summary."""
        self._throttle.cancel()
        self.updates += 1
        self._publish(bundle(self.state, final=True))

    def _flush(self, _key: Hashable) -> None:
        self.updates += 1
        self._publish(bundle(self.state))


async def run_live(tasks: Any = None, *, plan: Any = None, interval: float = 0.1,
                   **kwargs: Any) -> RunResult:
    """Run in this cell and show it with a :class:`LiveView` (HTML, no widgets needed):
    ``await run_live(tasks, aliases=..., stream=True)``. Other arguments go to ``prepare_run``;
    after a run whose tasks had workspaces (coding agents) their diffs follow as static HTML."""
    from ..api import prepare_run
    from .run_panel import _plan_from

    the_plan = _plan_from({"tasks": tasks, "plan": plan})
    view = LiveView(the_plan, interval=interval)
    extra = kwargs.pop("on_event", None)

    def on_event(event: Event) -> None:
        view(event)
        if extra is not None:
            extra(event)

    run = prepare_run(plan=the_plan, on_event=on_event, **kwargs)
    view.show()
    result = await run.execute()
    if view.state.has_workspaces:
        from .diffs import display_changes

        display_changes(result)
    return result

"""Static renderings of a run (HTML and plain text), and a live view built on display handles.

The HTML here needs no widgets and no kernel: it is what a shared notebook keeps after a
run, what front ends without widget support show, and what ``%%codexflow`` streams into.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Hashable, Mapping
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
#: Tasks listed one by one in a rendering (beyond: those that need a look first, and a count
#: of the rest; see ``RunState.listed``): 5,000 tasks must not mean 5,000 blocks in a page.
MAX_TASKS = 50
#: Tasks listed in a live view, redrawn up to ten times a second.
LIVE_TASKS = 30
#: In a live view (``LiveView``): a user's opened blocks stay open when the view is redrawn
#: (JupyterLab reuses the output's element; this remembers open blocks by task key there).
KEEP_OPEN_JS = (
    "<script>(function(){var s=document.currentScript,r=s&&s.parentNode,h=r&&r.parentNode;"
    "if(!h)return;if(h.__cfOpen){h.__cfRestore();return;}var o=h.__cfOpen={};"
    "var k=function(d){var c=d.querySelector('summary code');return c?c.textContent:null;};"
    "h.addEventListener('toggle',function(e){var d=e.target;if(d.tagName==='DETAILS'){"
    "var n=k(d);if(n!==null)o[n]=d.open;}},true);var f=h.__cfRestore=function(){"
    "h.querySelectorAll('details').forEach(function(d){var n=k(d);"
    "if(n!==null&&o[n]&&!d.open)d.open=true;});};"
    "new MutationObserver(f).observe(h,{childList:true});f();})();</script>")

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


def render_text(state: RunState, *, streamed: bool = True, max_tasks: int | None = MAX_TASKS) -> str:
    """The run as plain text (``text/plain`` of every bundle)."""
    lines = [f"codexflow · {headline(state)}"]
    for a in state.aliases.values():
        limit = f" · running {a.running}/{a.limit}" if a.limit else ""
        lines.append(f"  {a.alias:<16} {text_bar(a.done, a.total)} {a.done}/{a.total}{limit}")
    tasks, left_out = state.listed(max_tasks)
    if left_out:
        lines.append(f"  ({left_out} more tasks not listed)")
    for t in tasks:
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


def render_html(state: RunState, *, streamed: bool = True, max_tasks: int | None = MAX_TASKS,
                keep_open: bool = False) -> str:
    """The run as HTML: headline, per-alias table, one collapsible block per task (up to
    ``max_tasks``); ``keep_open`` for a view that is redrawn (see ``KEEP_OPEN_JS``)."""
    parts = [f"<div class='codexflow-run'><p><b>codexflow</b> · {escape(headline(state))}</p>",
             _alias_table(state)]
    tasks, left_out = state.listed(max_tasks)
    if left_out:
        parts.append(f"<p><i>{len(tasks)} of {state.total} tasks listed (those that need a "
                     "look first)</i></p>")
    for t in tasks:
        ms = f" · {t.ms:.0f} ms" if t.ms is not None else ""
        ms += f" · {step_count(t)}" if t.steps else ""
        body = ""
        if streamed and (t.log or t.workspace):
            body = transcript_html(t)
        if t.error:
            body += f"<div style='color:#e53935'>{escape(t.error)}</div>"
        parts.append(f"<details><summary><code>{escape(t.key)}</code> · {escape(t.alias)} · "
                     f"{_badge(t.status)}{ms}</summary>{body}</details>")
    parts.append((KEEP_OPEN_JS if keep_open else "") + "</div>")
    return "".join(parts)


def summary_html(state: RunState, *, streamed: bool = True,
                 max_tasks: int | None = MAX_TASKS) -> str:
    """A static end-of-run summary: final statuses per alias and per task (up to
    ``max_tasks``), and (collapsed) the tail of each listed task's streamed text."""
    listed, left_out = state.listed(max_tasks)
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
        for t in listed)
    if left_out:
        tasks += (f"<tr><td colspan='{7 if agents else 5}' style='text-align:left'><i>… "
                  f"{left_out} more tasks not listed (all are in the event log)</i></td></tr>")
    agent_heads = "<th>steps</th><th>changes</th>" if agents else ""
    return (f"<div class='codexflow-summary'><p><b>codexflow</b> · {escape(headline(state))}</p>"
            "<table><thead><tr><th>alias</th><th>agent</th><th>limit</th><th>tasks</th>"
            "<th>completed</th><th>not completed</th><th>avg ms</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
            "<table><thead><tr><th>task</th><th>alias</th><th>status</th><th>ms</th>"
            f"{agent_heads}<th>summary / error</th></tr></thead><tbody>{tasks}</tbody></table>"
            f"{_streamed_blocks(listed) if streamed else ''}</div>")


def _streamed_blocks(tasks: list[TaskState]) -> str:
    return "".join(
        f"<details><summary>streamed: <code>{escape(t.key)}</code> ({t.chars} characters"
        f"{f', {step_count(t)}' if t.steps else ''})</summary>{transcript_html(t)}</details>"
        for t in tasks if t.log)


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
        self._publish({"text/html": render_html(self.state, keep_open=True, max_tasks=LIVE_TASKS),
                       "text/plain": render_text(self.state, max_tasks=LIVE_TASKS)})


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


# -- static renderings of widgets ---------------------------------------------------------------
# A widget output stored in a notebook shows only where a widget manager runs (JupyterLab with
# saved widget state, nbviewer). Everywhere else (GitHub, VS Code without a kernel, nbconvert
# without the widget script) the viewer falls back to the output's ``text/html``: these
# functions draw a widget, and everything inside it, from its model state, so that fallback
# shows what the widget showed. ``state_html`` works on saved state alone (the notebook's
# ``metadata.widgets``), which is how ``scripts/store_notebooks.py`` refreshes stored outputs.

#: A static rendering is wrapped in this element (and the closing comment), so tools can find
#: it: nbval's sanitizer folds it (widget state is not compared), the store script refreshes it.
STATIC_START = '<div class="codexflow-static">'
STATIC_END = "</div><!--/codexflow-static-->"
WIDGET_VIEW_MIME = "application/vnd.jupyter.widget-view+json"
_MODEL_REF = "IPY_MODEL_"
#: Characters of a text field or area shown in a static rendering.
STATIC_TEXT_CHARS = 4000
#: Options of a select list shown (the rest are counted).
STATIC_OPTIONS = 8

_BUTTON_COLORS = {"primary": "#2196f3", "success": "#4caf50", "info": "#00bcd4",
                  "warning": "#ff9800", "danger": "#f44336"}
_BOX = ("display:inline-block;border:1px solid #9e9e9e;border-radius:2px;padding:1px 6px;"
        "min-width:8em;background:#fff;color:#212121;vertical-align:middle")


def static_block(html: str) -> str:
    """``html`` marked as a static rendering (see :data:`STATIC_START`)."""
    return f"{STATIC_START}{html}{STATIC_END}"


def widget_states(widget: Any) -> dict[str, Any]:
    """The embed state (``{model_id: {model_name, state, ...}}``) of ``widget`` and of every
    widget it refers to (children, layout, style), as JupyterLab saves it."""
    from ipywidgets.embed import dependency_state
    from ipywidgets.widgets import widget as module

    live = getattr(module, "_instances", {})
    states = dependency_state([widget], drop_defaults=True)
    while True:  # widgets shown inside Output widgets, which dependency_state does not follow
        shown = [live[i] for i in _shown_in_outputs(states) if i not in states and i in live]
        if not shown:
            return states
        states.update(dependency_state(shown, drop_defaults=True))


def _shown_in_outputs(states: Mapping[str, Any]) -> list[str]:
    return [view["model_id"] for entry in states.values()
            for out in (entry.get("state") or {}).get("outputs") or []
            if isinstance(out, Mapping) and isinstance(view := (out.get("data") or {}).get(
                WIDGET_VIEW_MIME), Mapping) and isinstance(view.get("model_id"), str)]


def widget_html(widget: Any) -> str:
    """The widget as static HTML, drawn from its current state (a :func:`static_block`)."""
    return state_html(widget.model_id, widget_states(widget))


def state_html(model_id: str, states: Mapping[str, Any],
               figure: Callable[[dict[str, Any]], str] | None = None) -> str:
    """The widget ``model_id`` as static HTML, drawn from saved widget state ``states``
    (``{model_id: {"model_name": ..., "state": {...}}}``). Plotly figures inside Output widgets
    are drawn by ``figure`` (default: :func:`codexflow_nb.charts.static_figure_html`)."""
    if figure is None:
        from ..charts import static_figure_html as figure
    body = _StaticWidgets(states, figure).widget(model_id)
    return static_block(f"<div style='font-family:sans-serif;font-size:13px'>{body}</div>")


def static_bundle(widget: Any, data: Any) -> Any:
    """Add the widget's static rendering (``text/html``) to its display bundle ``data``; its
    ``text/plain`` names the widget (``<codexflow_nb.widgets.PlanGraph widget>``) instead of
    ipywidgets' repr of its children, which says nothing to a reader and changes with every
    internal change of the widget."""
    if isinstance(data, dict) and WIDGET_VIEW_MIME in data:
        data["text/html"] = widget_html(widget)
        data["text/plain"] = f"<codexflow_nb.widgets.{type(widget).__name__} widget>"
    return data


def use_static_html() -> None:
    """Give every ipywidget displayed from now on in this IPython session a static
    ``text/html`` copy next to its view (widgets of this package always have one), so a saved
    notebook shows the content where no widget manager runs (GitHub, nbconvert, VS Code
    without a kernel). Does nothing outside IPython."""
    try:
        import ipywidgets
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return

    def html(widget: Any) -> str | None:
        own = widget._repr_mimebundle_()
        if not isinstance(own, dict):
            return None
        return own.get("text/html") or widget_html(widget)

    shell.display_formatter.formatters["text/html"].for_type(ipywidgets.DOMWidget, html)


_SVG = re.compile(r"<svg\b[^>]*>.*?</svg>", re.DOTALL)
_XML_ENTITIES = re.compile(r"&(?!(?:amp|lt|gt|quot|apos|#\d+|#x[0-9a-fA-F]+);)")


def svg_as_img(html: str) -> str:
    """Inline ``<svg>`` drawings in ``html`` as ``<img>`` with a data URI: viewers that clean
    the HTML of an output (GitHub) drop ``<svg>`` and its ``<style>``, but keep images. An SVG
    that is not valid XML on its own (HTML entities) stays inline."""
    def image(match: re.Match[str]) -> str:
        svg = match.group(0)
        if _XML_ENTITIES.search(svg):
            return svg
        head_end = svg.index(">")
        head = svg[:head_end]
        if "xmlns=" not in head:
            head += ' xmlns="http://www.w3.org/2000/svg"'
        box = re.search(r'viewBox="\s*[-\d.]+[\s,]+[-\d.]+[\s,]+([\d.]+)[\s,]+([\d.]+)\s*"', head)
        if box:  # an image needs a size of its own; width="100%" has none
            head = re.sub(r'\s(width|height)="[^"]*"', "", head)
            head += f' width="{box.group(1)}" height="{box.group(2)}"'
        label = re.search(r'aria-label="([^"]*)"', head)
        data = base64.b64encode((head + svg[head_end:]).encode("utf-8")).decode("ascii")
        return (f"<img style='max-width:100%;height:auto' alt=\"{label.group(1) if label else ''}\" "
                f"src='data:image/svg+xml;base64,{data}'>")

    return _SVG.sub(image, html)


class _StaticWidgets:
    """Draws widgets from their saved state (ipywidgets 8 model names and defaults)."""

    def __init__(self, states: Mapping[str, Any], figure: Callable[[dict[str, Any]], str]) -> None:
        self.states = states
        self.figure = figure
        self.seen: set[str] = set()

    def _state(self, ref: Any) -> tuple[str, dict[str, Any]] | None:
        if not isinstance(ref, str):
            return None
        entry = self.states.get(ref.removeprefix(_MODEL_REF))
        if not isinstance(entry, Mapping):
            return None
        return str(entry.get("model_name", "")), dict(entry.get("state") or {})

    def _hidden(self, state: Mapping[str, Any]) -> bool:
        layout = self._state(state.get("layout"))
        return layout is not None and (layout[1].get("display") == "none"
                                       or layout[1].get("visibility") == "hidden")

    def widget(self, ref: Any) -> str:
        found = self._state(ref)
        if found is None:
            return ""
        key = str(ref).removeprefix(_MODEL_REF)
        if key in self.seen:  # a widget shown twice, or a cycle through an Output
            return ""
        self.seen.add(key)
        try:
            name, state = found
            if self._hidden(state):
                return ""
            draw = getattr(self, f"_{name.removesuffix('Model').lower()}", None)
            body = draw(state) if draw is not None else self._other(name, state)
            return body
        finally:
            self.seen.discard(key)

    # containers
    def _children(self, state: Mapping[str, Any]) -> list[str]:
        return [html for html in (self.widget(c) for c in state.get("children") or []) if html]

    def _vbox(self, state: Mapping[str, Any]) -> str:
        return ("<div style='display:flex;flex-direction:column;gap:4px;margin:2px 0'>"
                + "".join(f"<div>{c}</div>" for c in self._children(state)) + "</div>")

    _box = _gridbox = _vbox

    def _hbox(self, state: Mapping[str, Any]) -> str:
        return ("<div style='display:flex;flex-flow:row wrap;gap:6px;align-items:center;"
                "margin:2px 0'>" + "".join(f"<div>{c}</div>" for c in self._children(state))
                + "</div>")

    def _tab(self, state: Mapping[str, Any]) -> str:
        children = state.get("children") or []
        titles = list(state.get("titles") or [])
        index = state.get("selected_index")
        heads = "".join(
            "<span style='padding:3px 10px;border:1px solid #bdbdbd;"
            + ("border-bottom:2px solid #1976d2;font-weight:600;background:#fff'>" if i == index
               else "background:#eeeeee;color:#616161'>")
            + f"{escape(str(titles[i]) if i < len(titles) and titles[i] else f'Tab {i + 1}')}</span>"
            for i in range(len(children)))
        body = self.widget(children[index]) if isinstance(index, int) and 0 <= index < len(children) else ""
        return (f"<div><div style='display:flex;gap:2px'>{heads}</div>"
                f"<div style='border:1px solid #bdbdbd;padding:6px'>{body}</div></div>")

    def _accordion(self, state: Mapping[str, Any]) -> str:
        titles = list(state.get("titles") or [])
        index = state.get("selected_index")
        parts = []
        for i, child in enumerate(state.get("children") or []):
            title = str(titles[i]) if i < len(titles) and titles[i] else f"Item {i + 1}"
            parts.append(f"<details{' open' if i == index else ''} style='border:1px solid #e0e0e0;"
                         f"padding:2px 6px'><summary>{escape(title)}</summary>{self.widget(child)}"
                         "</details>")
        return "<div>" + "".join(parts) + "</div>"

    # values
    @staticmethod
    def _desc(state: Mapping[str, Any]) -> str:
        text = state.get("description") or ""
        return (f"<span style='display:inline-block;min-width:6em;color:#424242;"
                f"margin-right:4px'>{escape(str(text))}</span>") if text else ""

    def _html(self, state: Mapping[str, Any]) -> str:
        return f"{self._desc(state)}{svg_as_img(str(state.get('value') or ''))}"

    _htmlmath = _html

    def _label(self, state: Mapping[str, Any]) -> str:
        return escape(str(state.get("value") or ""))

    def _text(self, state: Mapping[str, Any], *, secret: bool = False) -> str:
        raw = state.get("value")
        # numbers as the front end shows them: 150.0 -> 150
        value = ("" if raw is None else str(int(raw)) if isinstance(raw, float) and raw.is_integer()
                 else str(raw))
        shown = ("•" * min(len(value), 12) if secret else escape(value[:STATIC_TEXT_CHARS])) or (
            f"<span style='color:#9e9e9e'>{escape(str(state.get('placeholder') or ''))}</span>")
        return f"{self._desc(state)}<span style='{_BOX}'>{shown}&nbsp;</span>"

    def _password(self, state: Mapping[str, Any]) -> str:
        return self._text(state, secret=True)

    _combobox = _inttext = _floattext = _boundedinttext = _boundedfloattext = _text

    def _textarea(self, state: Mapping[str, Any]) -> str:
        value = str(state.get("value") or "")
        more = (f"\n… ({len(value) - STATIC_TEXT_CHARS} more characters)"
                if len(value) > STATIC_TEXT_CHARS else "")
        shown = escape(value[:STATIC_TEXT_CHARS]) + escape(more) or (
            f"<span style='color:#9e9e9e'>{escape(str(state.get('placeholder') or ''))}</span>")
        return (f"{self._desc(state)}<pre style='{_BOX};display:block;white-space:pre-wrap;"
                f"margin:2px 0;font-size:90%'>{shown}</pre>")

    @staticmethod
    def _selected(state: Mapping[str, Any]) -> str:
        labels = list(state.get("_options_labels") or [])
        index = state.get("index")
        return str(labels[index]) if isinstance(index, int) and 0 <= index < len(labels) else ""

    def _dropdown(self, state: Mapping[str, Any]) -> str:
        return (f"{self._desc(state)}<span style='{_BOX}'>{escape(self._selected(state))}"
                "&nbsp;<span style='float:right;color:#757575'>▾</span></span>")

    def _select(self, state: Mapping[str, Any]) -> str:
        labels = list(state.get("_options_labels") or [])
        index = state.get("index")
        rows = []
        for i, label in enumerate(labels[:STATIC_OPTIONS]):
            style = "background:#1976d2;color:#fff" if i == index else ""
            rows.append(f"<div style='{style};padding:0 4px'>{escape(str(label))}</div>")
        if len(labels) > STATIC_OPTIONS:
            chosen = (f"; selected: {escape(str(labels[index]))}"
                      if isinstance(index, int) and index >= STATIC_OPTIONS else "")
            rows.append(f"<div style='color:#757575;padding:0 4px'>… {len(labels) - STATIC_OPTIONS}"
                        f" more{chosen}</div>")
        return (f"{self._desc(state)}<div style='{_BOX};display:inline-block;padding:1px 0'>"
                + "".join(rows) + "</div>")

    def _togglebuttons(self, state: Mapping[str, Any]) -> str:
        index = state.get("index")
        return self._desc(state) + "".join(
            self._button_look(str(label), pressed=i == index)
            for i, label in enumerate(state.get("_options_labels") or []))

    @staticmethod
    def _button_look(text: str, *, style: str = "", pressed: bool = False,
                     disabled: bool = False) -> str:
        color = _BUTTON_COLORS.get(style)
        look = (f"background:{color};color:#fff;border:1px solid {color}" if color else
                "background:#bdbdbd;color:#212121;border:1px solid #9e9e9e" if pressed else
                "background:#eeeeee;color:#212121;border:1px solid #bdbdbd")
        return (f"<span style='display:inline-block;padding:2px 10px;margin:1px 2px;"
                f"border-radius:2px;{look}{';opacity:0.5' if disabled else ''}'>"
                f"{escape(text)}</span>")

    def _button(self, state: Mapping[str, Any]) -> str:
        icon = f"[{state['icon']}]" if state.get("icon") else ""
        return self._button_look(str(state.get("description") or icon),
                                 style=str(state.get("button_style") or ""),
                                 disabled=bool(state.get("disabled")))

    def _togglebutton(self, state: Mapping[str, Any]) -> str:
        return self._button_look(str(state.get("description") or ""),
                                 style=str(state.get("button_style") or ""),
                                 pressed=bool(state.get("value")), disabled=bool(state.get("disabled")))

    def _fileupload(self, state: Mapping[str, Any]) -> str:
        n = len(state.get("value") or [])
        return self._button_look(f"⤒ {state.get('description') or 'Upload'} ({n})",
                                 disabled=bool(state.get("disabled")))

    def _checkbox(self, state: Mapping[str, Any]) -> str:
        return f"{'☑' if state.get('value') else '☐'} {escape(str(state.get('description') or ''))}"

    def _intprogress(self, state: Mapping[str, Any]) -> str:
        low, high = float(state.get("min", 0) or 0), float(state.get("max", 100) or 0)
        value = float(state.get("value", 0) or 0)
        share = 0.0 if high <= low else max(0.0, min(1.0, (value - low) / (high - low)))
        style = self._state(state.get("style"))
        color = (style[1].get("bar_color") if style else None) or _BUTTON_COLORS.get(
            str(state.get("bar_style") or ""), "#2196f3")
        return (f"{self._desc(state)}<span style='display:inline-block;width:14em;height:0.9em;"
                f"background:#e0e0e0;vertical-align:middle'><span style='display:block;height:100%;"
                f"width:{share * 100:.0f}%;background:{color}'></span></span>")

    _floatprogress = _intprogress

    def _output(self, state: Mapping[str, Any]) -> str:
        return "".join(self.output(o) for o in state.get("outputs") or [])

    def output(self, out: Mapping[str, Any]) -> str:
        """One stored output (as in a notebook or an Output widget's state)."""
        kind = out.get("output_type")
        if kind == "stream":
            text = "".join(out.get("text") or "")
            color = ";color:#c62828" if out.get("name") == "stderr" else ""
            return f"<pre style='margin:2px 0;white-space:pre-wrap{color}'>{escape(text)}</pre>"
        if kind == "error":
            return (f"<pre style='color:#c62828'>{escape(str(out.get('ename')))}: "
                    f"{escape(str(out.get('evalue')))}</pre>")
        data = out.get("data") or {}
        view = data.get(WIDGET_VIEW_MIME)
        if isinstance(view, Mapping) and self._state(view.get("model_id")) is not None:
            return self.widget(view.get("model_id"))
        if "text/html" in data:
            return "".join(data["text/html"])
        if "image/png" in data:
            return (f"<img style='max-width:100%' alt='{escape(str(data.get('text/plain', '')))}' "
                    f"src='data:image/png;base64,{''.join(data['image/png']).strip()}'>")
        if "image/svg+xml" in data:
            return "".join(data["image/svg+xml"])
        if "application/vnd.plotly.v1+json" in data:
            return self.figure(data["application/vnd.plotly.v1+json"])
        if "text/plain" in data:
            return f"<pre style='margin:2px 0'>{escape(''.join(data['text/plain']))}</pre>"
        return ""

    def _other(self, name: str, state: Mapping[str, Any]) -> str:
        if name.endswith(("LayoutModel", "StyleModel")) or name in ("LinkModel", "DirectionalLinkModel"):
            return ""
        if "children" in state:
            return self._vbox(state)
        value = state.get("value")
        shown = f": {escape(str(value))[:200]}" if isinstance(value, (str, int, float, bool)) else ""
        return f"{self._desc(state)}<span style='color:#757575'>[{escape(name)}{shown}]</span>"

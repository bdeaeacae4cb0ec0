"""A run's changes as static HTML and text: each coding-agent task's files with +/- counts
and its coloured diff. No widgets and no kernel needed, so these outputs stay readable in a
saved notebook; :class:`~.changes.ChangesView` adds the Apply buttons.

The data comes from :func:`codexflow_nb.changes.run_changes` (the event log and the run store).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from html import escape
from typing import TYPE_CHECKING

from ..changes import ApplyResult, TaskChanges, run_changes
from ..errors import ConfigError
from .render import STATUS_COLORS

if TYPE_CHECKING:
    from ..api import RunResult

#: Patch lines shown per task; the rest is left out with a note.
MAX_PATCH_LINES = 400
#: Longest patch line shown (minified files, generated data).
MAX_LINE_CHARS = 400
#: Patches up to this many lines start unfolded in the static HTML.
OPEN_LINES = 80

_STYLE = {
    "file": "font-weight:600;color:#24292e;background:#f6f8fa",
    "meta": "color:#6a737d",
    "hunk": "color:#6f42c1;background:#f5f0ff",
    "add": "color:#22863a;background:#e6ffed",
    "del": "color:#b31d28;background:#ffeef0",
    "ctx": "color:#24292e",
    "note": "color:#6a737d;font-style:italic",
}
#: Each line spans the block's width; lines are also separated by newlines, so the diff keeps
#: its lines where a front end drops the styles (GitHub's notebook view).
_LINE = "display:inline-block;min-width:100%;"
_META = ("index ", "new file mode", "deleted file mode", "old mode", "new mode", "similarity ",
         "rename ", "copy ", "dissimilarity ", "Binary files ", "--- ", "+++ ")
STATUS_LETTERS = {"added": "A", "modified": "M", "deleted": "D", "renamed": "R", "copied": "C"}


def _classify(lines: Sequence[str]) -> list[tuple[str, str]]:
    """Each patch line with its kind: file header, meta, hunk, add, del, ctx; the literal
    lines of a binary patch are folded into one note."""
    out: list[tuple[str, str]] = []
    in_hunk = binary = False
    for line in lines:
        if line.startswith("diff --git "):
            in_hunk = binary = False
            out.append(("file", line))
        elif binary:
            continue
        elif line.startswith("GIT binary patch"):
            binary = True
            out.append(("note", "(binary content not shown)"))
        elif line.startswith("@@"):
            in_hunk = True
            out.append(("hunk", line))
        elif not in_hunk and line.startswith(_META):
            out.append(("meta", line))
        elif in_hunk and line.startswith("+"):
            out.append(("add", line))
        elif in_hunk and line.startswith("-"):
            out.append(("del", line))
        else:
            out.append(("ctx", line))
    return out


def diff_html(patch: str, *, max_lines: int = MAX_PATCH_LINES, source: str | None = None) -> str:
    """A patch as a coloured ``<pre>``: added lines green, removed red, hunk headers purple,
    all text escaped; after ``max_lines`` lines a note says how many were left out (and where
    the whole patch is, ``source``)."""
    lines = _classify(patch.splitlines())
    if not lines:
        return f"<div style='{_STYLE['note']}'>empty patch</div>"
    shown = lines[:max_lines]
    rows = []
    for kind, line in shown:
        cut = line if len(line) <= MAX_LINE_CHARS else line[:MAX_LINE_CHARS] + " …"
        rows.append(f"<span class='cf-diff-{kind}' style='{_LINE}{_STYLE[kind]}'>"
                    f"{escape(cut)}</span>")
    if len(lines) > len(shown):
        where = f"; the whole patch: {source}" if source else ""
        rows.append(f"<span class='cf-diff-truncated' style='{_LINE}{_STYLE['note']}'>"
                    f"… patch truncated: {len(lines) - len(shown)} more line(s) not shown"
                    f"{escape(where)}</span>")
    return ("<pre class='cf-diff' style='white-space:pre;overflow-x:auto;margin:2px 0;"
            "font-size:12px;line-height:1.35'>" + "\n".join(rows) + "</pre>")


def files_html(tc: TaskChanges) -> str:
    """The task's changed files with their status and +/- counts."""
    if not tc.files:
        return f"<div style='{_STYLE['note']}'>no files changed</div>"
    rows = "".join(
        f"<tr><td>{escape(STATUS_LETTERS.get(str(f.get('status')), '?'))}</td>"
        f"<td style='text-align:left'><code>{escape(str(f.get('path')))}</code></td>"
        f"<td style='color:#22863a'>+{int(f.get('insertions') or 0)}</td>"
        f"<td style='color:#b31d28'>-{int(f.get('deletions') or 0)}</td></tr>"
        for f in tc.files)
    return (f"<table class='cf-files'><tbody>{rows}</tbody><tfoot><tr><td></td>"
            f"<td style='text-align:left'>{len(tc.files)} file(s)</td>"
            f"<td style='color:#22863a'>+{tc.insertions}</td>"
            f"<td style='color:#b31d28'>-{tc.deletions}</td></tr></tfoot></table>")


def task_title(tc: TaskChanges) -> str:
    color = STATUS_COLORS.get(tc.status, "#616161")
    return (f"<code>{escape(tc.label)}</code> · <span style='color:{color};font-weight:600'>"
            f"{escape(tc.status)}</span> · {len(tc.files)} file(s) "
            f"<span style='color:#22863a'>+{tc.insertions}</span> "
            f"<span style='color:#b31d28'>-{tc.deletions}</span>")


def _patch_of(tc: TaskChanges) -> tuple[str | None, str | None]:
    """(patch text, None) or (None, why there is none)."""
    try:
        return tc.patch(), None
    except ConfigError as exc:
        return None, "; ".join(exc.problems)


def task_diff_html(tc: TaskChanges, *, max_lines: int = MAX_PATCH_LINES,
                   fold: bool = True) -> str:
    """The task's diff (folded under ``<details>`` when long and ``fold``)."""
    text, why = _patch_of(tc)
    if text is None:
        return f"<div style='color:#e53935'>{escape(why or 'no patch')}</div>"
    if not text.strip():
        return ""
    diff = diff_html(text, max_lines=max_lines,
                     source=str(tc.patch_path) if tc.patch_path else None)
    if not fold:
        return diff
    n = text.count("\n")
    return (f"<details{' open' if n <= OPEN_LINES else ''}><summary>diff ({n} lines)</summary>"
            f"{diff}</details>")


def apply_html(result: ApplyResult) -> str:
    """What Apply did: green when applied, red with the conflicting files otherwise."""
    if result.ok:
        return f"<div style='color:#2e7d32'>✓ {escape(result.message)}</div>"
    conflicts = "".join(f"<li><code>{escape(c)}</code></li>" for c in result.conflicts)
    head = (f"<div style='color:#e53935;font-weight:600'>✗ conflicts in {len(result.conflicts)} "
            f"file(s):</div><ul style='margin:0'>{conflicts}</ul>" if conflicts else "")
    return f"{head}<div style='color:#e53935'>{escape(result.message)}</div>"


def changes_html(changes: Sequence[TaskChanges], *, max_lines: int = MAX_PATCH_LINES,
                 applied: dict[str, ApplyResult] | None = None) -> str:
    """Every task's files and diff as static HTML (no widgets, no kernel needed)."""
    if not changes:
        return ("<div class='codexflow-changes'><p><b>Changes</b> · no task of this run ran "
                "in a workspace</p></div>")
    parts = [f"<div class='codexflow-changes'><p><b>Changes</b> · run "
             f"<code>{escape(changes[0].run_id)}</code> · {len(changes)} task(s) · "
             f"{sum(len(tc.files) for tc in changes)} file(s) changed</p>"]
    for tc in changes:
        done = (applied or {}).get(tc.task_id)
        parts.append(f"<div class='cf-task' style='margin:6px 0'><div>{task_title(tc)}</div>"
                     f"{files_html(tc)}{task_diff_html(tc, max_lines=max_lines)}"
                     f"{apply_html(done) if done else ''}</div>")
    parts.append("</div>")
    return "".join(parts)


def changes_text(changes: Sequence[TaskChanges]) -> str:
    """The changed files per task as plain text (``text/plain`` of the bundle)."""
    if not changes:
        return "Changes: no task of this run ran in a workspace"
    lines = [f"Changes · run {changes[0].run_id}"]
    for tc in changes:
        lines.append(f"  {tc.label} {tc.status}: {len(tc.files)} file(s) "
                     f"+{tc.insertions} -{tc.deletions}")
        lines += [f"    {STATUS_LETTERS.get(str(f.get('status')), '?')} {f.get('path')} "
                  f"+{f.get('insertions', 0)} -{f.get('deletions', 0)}" for f in tc.files]
    return "\n".join(lines)


def changes_bundle(run_id: str = "last", *,
                   log_file: str | os.PathLike[str] = "data/logs/events.jsonl",
                   runs_dir: str | os.PathLike[str] | None = ".runs",
                   max_lines: int = MAX_PATCH_LINES) -> dict[str, str]:
    """A display bundle (``text/html`` + ``text/plain``) of a run's changes; a problem
    reading them (no such run, unreadable log) is shown as its message."""
    try:
        changes = run_changes(run_id, log_file=log_file, runs_dir=runs_dir)
    except ConfigError as exc:
        message = "; ".join(exc.problems)
        return {"text/html": f"<div style='color:#e53935'>Changes: {escape(message)}</div>",
                "text/plain": f"Changes: {message}"}
    return {"text/html": changes_html(changes, max_lines=max_lines),
            "text/plain": changes_text(changes)}


def display_changes(result: RunResult) -> None:
    """Display a finished run's changed files and diffs as an ordinary (static HTML) output,
    which stays readable in a saved notebook. Apply is in :class:`~.changes.ChangesView` or
    ``codex-flow changes --apply TASK``."""
    from IPython.display import display

    if result.log_file is None:
        note = "Changes: the run kept no event log; each task's change is on its branch"
        display({"text/plain": note, "text/html": f"<p><i>{escape(note)}</i></p>"}, raw=True)
        return
    display(changes_bundle(result.run_id, log_file=result.log_file, runs_dir=result.runs_dir),
            raw=True)

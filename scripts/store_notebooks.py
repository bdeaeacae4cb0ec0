#!/usr/bin/env python
"""Re-execute the tutorial notebooks and store them so they read without a kernel.

For maintainers, after changing a tutorial or what it shows (CI does not run this; CI re-runs
the notebooks with ``pytest --nbval`` and compares their outputs with the stored ones)::

    python scripts/store_notebooks.py                      # every notebooks/*.ipynb
    python scripts/store_notebooks.py notebooks/03-*.ipynb
    python scripts/store_notebooks.py --no-execute my.ipynb  # only refresh the static copies

For each notebook, on a fresh ``python3`` kernel with ``notebooks/`` as working directory:

1. every cell runs top to bottom (nbclient); a failing cell leaves the file untouched and
   makes the script exit 1;
2. the widget state is read from the kernel (``ipywidgets.Widget.get_manager_state``), cut
   down to the widgets the outputs show (and what they contain), and saved in
   ``metadata.widgets`` as ``application/vnd.jupyter.widget-state+json``, as JupyterLab's
   *Save Widget State* does, so JupyterLab and nbviewer draw the widgets without a kernel;
3. each widget output's ``text/html`` (its static copy, for GitHub, VS Code without a
   kernel and ``nbconvert`` without the widget script) is drawn again from that saved state,
   so it shows what the widget showed at the end, not when it was displayed; a widget closed
   before the end keeps only its static copy;
4. widget model ids are renamed to ids derived from the notebook's name and their order, so
   storing an unchanged notebook again gives no diff; timing metadata is dropped and the
   kernelspec is the one JupyterLab writes, so opening a tutorial does not mark it modified.

Figures carry their PNG when kaleido and a Chromium are installed (``charts.use_static_fallback``
in the notebooks); they are, in CI and wherever the tutorials are stored.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
WIDGET_STATE_MIME = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW_MIME = "application/vnd.jupyter.widget-view+json"
PLOTLY_MIME = "application/vnd.plotly.v1+json"
MODEL_REF = "IPY_MODEL_"
#: Run in the kernel after the last cell (not stored): the state of every live widget.
STATE_PROBE = """\
import json as _json
from ipywidgets import Widget as _Widget
with open({path!r}, "w", encoding="utf-8") as _fh:
    _json.dump(_Widget.get_manager_state(drop_defaults=True), _fh)
"""


def _views(node: Any) -> Iterator[str]:
    """Model ids of widget views in an output, state or any JSON below it."""
    if isinstance(node, dict):
        view = node.get(WIDGET_VIEW_MIME)
        if isinstance(view, dict) and isinstance(view.get("model_id"), str):
            yield view["model_id"]
        for value in node.values():
            yield from _views(value)
    elif isinstance(node, list):
        for value in node:
            yield from _views(value)


def _refs(node: Any) -> Iterator[str]:
    """Model ids a widget's state refers to (``IPY_MODEL_...``) or shows (Output widgets)."""
    if isinstance(node, str):
        if node.startswith(MODEL_REF):
            yield node.removeprefix(MODEL_REF)
    elif isinstance(node, dict):
        view = node.get(WIDGET_VIEW_MIME)
        if isinstance(view, dict) and isinstance(view.get("model_id"), str):
            yield view["model_id"]  # a widget shown inside an Output widget
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def shown_state(nb: Any, state: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The part of ``state`` the notebook's outputs need, in the order they need it, and the
    ids of widget views whose model is gone (closed before the end)."""
    roots = [mid for cell in nb.cells if cell.cell_type == "code"
             for out in cell.get("outputs", []) for mid in _views(out)]
    kept: dict[str, Any] = {}
    missing: list[str] = []
    stack = list(reversed(roots))
    while stack:
        mid = stack.pop()
        if mid in kept:
            continue
        if mid not in state:
            if mid in roots and mid not in missing:
                missing.append(mid)
            continue
        kept[mid] = state[mid]
        stack.extend(reversed([r for r in _refs(state[mid].get("state")) if r not in kept]))
    return kept, missing


def refresh_static_copies(nb: Any, state: dict[str, Any], missing: list[str]) -> int:
    """Draw each widget output's ``text/html`` from the saved ``state``; returns how many."""
    from codexflow_nb.widgets.render import STATIC_START, state_html

    drawn = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            data = out.get("data") or {}
            view = data.get(WIDGET_VIEW_MIME)
            if not isinstance(view, dict):
                continue
            mid = view.get("model_id")
            html = data.get("text/html")
            ours = html is None or "".join(html).startswith(STATIC_START)
            if mid in state and ours:
                data["text/html"] = state_html(mid, state)
                drawn += 1
            elif mid in missing and html is not None:
                del data[WIDGET_VIEW_MIME]  # closed: only the static copy is left to show
    return drawn


def add_figure_images(state: dict[str, Any]) -> int:
    """Give the plotly figures inside saved Output widgets (the plan graph) a PNG (or an SVG
    sketch), so widget managers without plotly's renderer (nbviewer, nbconvert's widget
    script) show them too; returns how many. JupyterLab still draws the interactive figure."""
    from codexflow_nb import charts

    added = 0
    for entry in state.values():
        if entry.get("model_name") != "OutputModel":
            continue
        for out in (entry.get("state") or {}).get("outputs") or []:
            data = out.get("data") or {}
            if PLOTLY_MIME not in data or "image/png" in data or "text/html" in data:
                continue
            png = charts.static_png(data[PLOTLY_MIME])
            svg = None if png is not None else charts.figure_svg(data[PLOTLY_MIME])
            if png is not None:
                data["image/png"] = base64.b64encode(png).decode("ascii")
            elif svg is not None:
                data["image/svg+xml"] = svg
            else:
                continue
            added += 1
    return added


def stable_ids(text: str, ids: list[str], salt: str) -> str:
    """Rename the model ids in a notebook's JSON to ids derived from ``salt`` and their order."""
    mapping = {old: hashlib.sha1(f"{salt}:{n}".encode()).hexdigest()[:32]
               for n, old in enumerate(ids)}
    if not mapping:
        return text
    pattern = re.compile("|".join(re.escape(old) for old in mapping))
    return pattern.sub(lambda m: mapping[m.group(0)], text)


def execute(nb: Any, cwd: Path, *, timeout: int, kernel_name: str) -> dict[str, Any]:
    """Run every cell of ``nb`` in place; returns the kernel's widget state at the end."""
    import nbformat
    from nbclient import NotebookClient

    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel_name, record_timing=False,
                            resources={"metadata": {"path": str(cwd)}},
                            extra_arguments=["--IPKernelApp.log_level=ERROR"])
    fd, state_file = tempfile.mkstemp(suffix=".json", prefix="widget-state-")
    os.close(fd)
    try:
        with client.setup_kernel():
            assert client.kc is not None and client.km is not None
            info = client.wait_for_reply(client.kc.kernel_info())
            if info is not None:
                nb.metadata["language_info"] = info["content"]["language_info"]
            spec = client.km.kernel_spec
            if spec is not None:
                nb.metadata["kernelspec"] = {"display_name": spec.display_name,
                                             "language": spec.language, "name": kernel_name}
            for index, cell in enumerate(nb.cells):
                client.execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
            probe = nbformat.v4.new_code_cell(STATE_PROBE.format(path=state_file))
            nb.cells.append(probe)
            try:
                client.execute_cell(probe, len(nb.cells) - 1, store_history=False)
            finally:
                nb.cells.pop()
        return json.loads(Path(state_file).read_text(encoding="utf-8"))["state"]
    finally:
        os.unlink(state_file)


def store_notebook(path: Path, *, timeout: int = 120, kernel_name: str = "python3",
                   run: bool = True) -> str:
    """Execute (unless ``run`` is False) and store ``path``; returns a line for the log."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    started = time.perf_counter()
    if run:
        state = execute(nb, path.parent, timeout=timeout, kernel_name=kernel_name)
    else:
        state = nb.metadata.get("widgets", {}).get(WIDGET_STATE_MIME, {}).get("state", {})
    kept, missing = shown_state(nb, state)
    add_figure_images(kept)
    drawn = refresh_static_copies(nb, kept, missing)
    nb.metadata.pop("widgets", None)
    if kept:
        nb.metadata["widgets"] = {WIDGET_STATE_MIME: {"version_major": 2, "version_minor": 0,
                                                      "state": kept}}
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    text = stable_ids(nbformat.writes(nb), list(kept) + missing, salt=path.stem)
    nb = nbformat.reads(text, as_version=4)
    nbformat.validate(nb)
    tmp = path.with_name(f".{path.name}.tmp")
    nbformat.write(nb, tmp)
    os.replace(tmp, path)
    closed = f", {len(missing)} closed before the end" if missing else ""
    return (f"{path} ({time.perf_counter() - started:.1f} s; {len(kept)} widget models saved, "
            f"{drawn} static copies drawn{closed})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="notebooks to store (default: every notebooks/*.ipynb)")
    parser.add_argument("--timeout", type=int, default=120, help="seconds per cell (default 120)")
    parser.add_argument("--no-execute", dest="run", action="store_false",
                        help="do not run the cells: redraw the static copies from the widget "
                             "state saved in the notebook (e.g. by JupyterLab)")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
    if not paths:
        print(f"no notebooks found in {NOTEBOOKS_DIR}", file=sys.stderr)
        return 1
    from nbclient.exceptions import CellExecutionError

    from codexflow_nb import charts

    # Figures inside widgets (the plan graph) get a PNG copy too, like the notebooks' charts.
    charts.use_static_fallback()
    failed = 0
    for path in paths:
        try:
            line = store_notebook(path, timeout=args.timeout, run=args.run)
        except CellExecutionError as exc:
            failed += 1
            print(f"FAILED {path}: {str(exc).strip().splitlines()[-1]}", file=sys.stderr)
            continue
        print(f"stored {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

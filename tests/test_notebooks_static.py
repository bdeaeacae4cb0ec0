"""Stored notebooks read without a kernel: every widget output has saved widget state and a
static copy (``text/html``), every chart carries HTML and a PNG, nothing is a bare widget repr.

Also the pieces that make it so: the static renderings of widgets (``widgets.render``), the
charts' notebook renderer with and without kaleido (``charts.use_static_fallback``), the
sanitizer rules that let nbval compare both, and ``scripts/store_notebooks.py``, which stores
the tutorials (``python scripts/store_notebooks.py``; ``--no-execute`` redraws the static
copies from the saved state in a second or so).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ipywidgets as w
import nbformat
import plotly.graph_objects as go
import plotly.io as pio
import pytest

from codexflow_nb import charts
from codexflow_nb.widgets.render import (
    STATIC_END,
    STATIC_START,
    state_html,
    use_static_html,
    widget_html,
    widget_states,
)

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
IDS = [p.name for p in NOTEBOOKS]
STATE_MIME = "application/vnd.jupyter.widget-state+json"
VIEW_MIME = "application/vnd.jupyter.widget-view+json"
PLOTLY_MIME = "application/vnd.plotly.v1+json"
PLOTLYJS_MARK = "* plotly.js v"
STORE_HINT = "store it again: python scripts/store_notebooks.py"


def _widget_class_names() -> set[str]:
    import codexflow_nb.widgets as ours

    names = {name for name in dir(w) if isinstance(getattr(w, name), type)
             and issubclass(getattr(w, name), w.Widget)}
    return names | {name for name in ours.__all__ if name[0].isupper()}


#: A widget's default repr: ``HTML(value='...``, ``VBox(children=...``, ``PlanGraph(...``.
_NAMES = "|".join(sorted(_widget_class_names()))
WIDGET_REPR = re.compile(rf"^\s*(?:{_NAMES}|\w+Widget)\(")


def _outputs(nb: Any) -> Iterator[tuple[int, Any]]:
    code = [c for c in nb.cells if c.cell_type == "code"]
    for n, cell in enumerate(code, 1):
        for out in cell.get("outputs", []):
            yield n, out


def _saved_state(nb: Any) -> dict[str, Any]:
    return nb.metadata.get("widgets", {}).get(STATE_MIME, {}).get("state", {})


def _sanitizer() -> list[tuple[re.Pattern[str], str]]:
    """The rules of notebooks/sanitize.cfg, read as nbval reads them."""
    rules, regex = [], None
    for line in (REPO / "notebooks" / "sanitize.cfg").read_text().splitlines():
        if line.startswith("regex:"):
            regex = line[len("regex:"):].strip()
        elif line.startswith("replace:") and regex is not None:
            rules.append((re.compile(regex), line[len("replace:"):].strip()))
            regex = None
    return rules


def _sanitize(text: str) -> str:
    for pattern, replacement in _sanitizer():
        text = pattern.sub(replacement, text)
    return text


# -- the stored notebooks -------------------------------------------------------------------------
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_no_stored_output_is_a_bare_widget_repr(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    for n, out in _outputs(nb):
        data = out.get("data") or {}
        plain = data.get("text/plain", "")
        if VIEW_MIME in data or WIDGET_REPR.match(plain):
            assert "text/html" in data, (
                f"{path.name}: code cell {n} shows a widget ({plain[:60]!r}) with no static copy "
                f"(text/html); {STORE_HINT}")


def test_the_widget_repr_pattern() -> None:
    for text in ("HTML(value='<table>", "VBox(children=(", "PlanGraph(children=", "Dashboard(",
                 "Output(outputs=", "FigureWidget(", "SomethingWidget(x=1)"):
        assert WIDGET_REPR.match(text), text
    for text in ("HTML tables are fine", "Plan: 6 task(s)", "{'HTML(': 1}", "print(HTML('x'))"):
        assert not WIDGET_REPR.match(text), text


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_every_widget_view_has_saved_state(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    views = [(n, out["data"][VIEW_MIME]["model_id"]) for n, out in _outputs(nb)
             if VIEW_MIME in (out.get("data") or {})]
    if not views:
        assert "widgets" not in nb.metadata, f"{path.name}: widget state saved but no widget shown"
        return
    saved = nb.metadata["widgets"][STATE_MIME]
    assert (saved["version_major"], saved["version_minor"]) == (2, 0)
    state = saved["state"]
    for n, model_id in views:
        assert model_id in state, (
            f"{path.name}: code cell {n} shows widget {model_id} whose model is not in the saved "
            f"widget state (metadata.widgets); {STORE_HINT}")
    for model_id, entry in state.items():
        assert {"model_name", "model_module", "model_module_version", "state"} <= set(entry)
        for ref in re.findall(r"IPY_MODEL_([0-9a-f]{32})", str(entry["state"])):
            assert ref in state, f"{path.name}: {model_id} refers to {ref}, which is not saved"
    expected = [hashlib.sha1(f"{path.stem}:{n}".encode()).hexdigest()[:32]
                for n in range(len(state))]
    assert sorted(state) == sorted(expected), (
        f"{path.name}: model ids are not the store script's stable ids; {STORE_HINT}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_static_copies_show_the_saved_widget_state(path: Path) -> None:
    """The text/html of each widget output is the rendering of its saved state (what the
    widget showed at the end), not a snapshot from when it was displayed."""
    nb = nbformat.read(path, as_version=4)
    state = _saved_state(nb)
    for n, out in _outputs(nb):
        data = out.get("data") or {}
        view = data.get(VIEW_MIME)
        html = data.get("text/html")
        if view is None or html is None or not html.startswith(STATIC_START):
            continue
        assert html == state_html(view["model_id"], state), (
            f"{path.name}: code cell {n}: the static copy differs from the saved widget state; "
            f"python scripts/store_notebooks.py --no-execute {path.relative_to(REPO)}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_charts_carry_html_and_a_png_and_plotlyjs_once(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    figures = [(n, out["data"]) for n, out in _outputs(nb) if PLOTLY_MIME in (out.get("data") or {})]
    for n, data in figures:
        assert "text/html" in data and "image/png" in data, (
            f"{path.name}: code cell {n}: a chart without text/html and a PNG (tutorials call "
            "charts.use_static_fallback(); store them where kaleido works)")
        assert "codexflow-static" in data["text/html"] and "<img " in data["text/html"]
    with_js = [n for n, out in _outputs(nb) if PLOTLYJS_MARK in str(out.get("data", {}).get("text/html"))]
    assert len(with_js) == (1 if figures else 0), (
        f"{path.name}: plotly.js is in the outputs of cells {with_js}; once per notebook")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_no_output_mentions_kaleido_or_static_images(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    for n, out in _outputs(nb):
        text = out.get("text") or (out.get("data") or {}).get("text/plain", "")
        assert "kaleido" not in text and "static images" not in text, (
            f"{path.name}: code cell {n} prints a note about static images: {text[:80]!r}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_the_kernelspec_is_the_one_jupyterlab_writes(path: Path) -> None:
    """JupyterLab rewrites a kernelspec that differs from the kernel's, which marks a tutorial
    modified as soon as it is opened."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    nb = nbformat.read(path, as_version=4)
    try:
        spec = KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        pytest.skip("no python3 kernelspec installed")
    assert nb.metadata.kernelspec == {"display_name": spec.display_name,
                                      "language": spec.language, "name": "python3"}, STORE_HINT


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_cells_nbval_ignores_say_why_in_their_metadata(path: Path) -> None:
    """Tutorials tag such cells (``nbval-ignore-output``, ``nbval-skip``) instead of showing a
    marker comment to the reader, and give the reason in the cell's ``nbval_why``."""
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    for n, cell in enumerate(code, 1):
        tags = set(cell.metadata.get("tags", [])) & {"nbval-ignore-output", "nbval-skip"}
        if tags:
            assert str(cell.metadata.get("nbval_why", "")).strip(), (
                f"{path.name}: code cell {n} is tagged {sorted(tags)} without a reason in its "
                "metadata (nbval_why)")


# -- static renderings of widgets -----------------------------------------------------------------
def test_composed_widgets_carry_a_static_copy(workdir: Path) -> None:
    import codexflow_nb
    from codexflow_nb.widgets import AgentPicker, AliasEditor, PlanGraph, TaskEditor

    dash = codexflow_nb.dashboard(latency_ms=10, log_file=None, runs_dir=None)
    plan = dash.plan()
    widgets = {
        "dashboard": (dash, ["reviewer2", "reviewer-1", "architect-2", "Run", "Agents"]),
        "picker": (AgentPicker(dash.registry), ["code-analyzer", "Add as alias"]),
        "aliases": (AliasEditor({"reviewer": {"id": "code-analyzer"}}, registry=dash.registry),
                    ["reviewer", "code-analyzer"]),
        "tasks": (TaskEditor({"reviewer": ["Review the parser"]}, registry=dash.registry),
                  ["Review the parser"]),
        "graph": (PlanGraph(plan), ["Plan: 5 task(s)", "data:image/svg+xml;base64,"]),
        "panel": (dash.panel, ["reviewer-1", "Stop"]),
    }
    try:
        for name, (widget, words) in widgets.items():
            data = widget._repr_mimebundle_()
            assert VIEW_MIME in data, name
            html = data["text/html"]
            assert html.startswith(STATIC_START) and html.endswith(STATIC_END), name
            for word in words:
                assert word in html, (name, word)
            assert "IPY_MODEL_" not in html, name
            assert data["text/plain"] == f"<codexflow_nb.widgets.{type(widget).__name__} widget>"
        graph_html = widgets["graph"][0]._repr_mimebundle_()["text/html"]
        drawing = base64.b64decode(graph_html.split("base64,")[1].split("'")[0]).decode()
        assert "reviewer-1" in drawing and "architect-2" in drawing  # the graph, as an image
    finally:
        for widget, _ in widgets.values():
            widget.close()


def test_a_static_copy_from_saved_state_equals_the_live_one(workdir: Path) -> None:
    import codexflow_nb

    dash = codexflow_nb.dashboard(latency_ms=10, log_file=None, runs_dir=None)
    try:
        states = widget_states(dash)
        assert state_html(dash.model_id, states) == widget_html(dash)
        assert len(states) > 50  # children, layouts and styles: what JupyterLab saves
    finally:
        dash.close()


def test_the_static_renderer_draws_what_the_front_end_shows() -> None:
    secret = w.Password(value="sk-secret-value")
    hidden = w.HTML("<b>hidden</b>", layout=w.Layout(display="none"))
    tab = w.Tab([w.HTML("<i>first</i>"), w.HTML("<i>second</i>")], titles=("One", "Two"))
    tab.selected_index = 1
    acc = w.Accordion([w.HTML("inside")], titles=("Open me",))
    acc.selected_index = 0
    out = w.Output()
    out.outputs = (
        {"output_type": "stream", "name": "stdout", "text": "printed <text>\n"},
        {"output_type": "display_data", "metadata": {}, "data": {"image/png": "iVBORw0K",
                                                                 "text/plain": "a picture"}},
        {"output_type": "display_data", "metadata": {}, "data": {
            VIEW_MIME: {"version_major": 2, "version_minor": 0, "model_id": tab.model_id},
            "text/plain": "Tab(...)"}},
    )
    box = w.VBox([
        w.HBox([w.Button(description="Go", button_style="success"), w.Dropdown(
            options=["stub", "codex"], value="codex", description="runtime")]),
        w.IntProgress(value=3, max=4, bar_style="danger"),
        w.Textarea(value="line 1\nline <2>"), w.BoundedFloatText(value=150.0, max=1000),
        secret, hidden, acc, out,
    ])
    try:
        html = widget_html(box)
        assert "sk-secret-value" not in html and "•" in html
        assert "hidden" not in html
        assert "<i>second</i>" in html and "<i>first</i>" not in html  # the selected tab only
        assert "One" in html and "Two" in html
        assert "<details open" in html and "Open me" in html
        assert "printed &lt;text&gt;" in html and "data:image/png;base64,iVBORw0K" in html
        assert "line &lt;2&gt;" in html and ">150&nbsp;" in html
        assert "width:75%" in html and "#f44336" in html
        assert ">codex&nbsp;" in html and ">Go</span>" in html
    finally:
        box.close()
        tab.close()


def test_inline_svg_becomes_an_image_that_html_cleaners_keep() -> None:
    from codexflow_nb.widgets.render import svg_as_img

    svg = ('<svg class="g" aria-label="Plan: 2 task(s)" viewBox="0 0 300 120" width="100%">'
           '<style>.g text{fill:#333}</style><text x="5" y="20">d1 &amp; b1</text></svg>')
    html = svg_as_img(f"<div>before</div>{svg}<p>after</p>")
    assert html.startswith("<div>before</div><img ") and html.endswith("<p>after</p>")
    assert 'alt="Plan: 2 task(s)"' in html and "<svg" not in html
    data = base64.b64decode(html.split("base64,")[1].split("'")[0]).decode()
    assert 'xmlns="http://www.w3.org/2000/svg"' in data and 'width="300" height="120"' in data
    assert "<style>.g text{fill:#333}</style>" in data and 'width="100%"' not in data
    not_xml = "<svg viewBox='0 0 1 1'><text>a&nbsp;b</text></svg>"
    assert svg_as_img(not_xml) == not_xml  # HTML entities: an image would not render; left inline


def test_use_static_html_gives_plain_widgets_a_static_copy() -> None:
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    formatter = shell.display_formatter.formatters["text/html"]
    view = w.HTML("<table><tr><td>peak 3</td></tr></table>")
    try:
        before, _ = shell.display_formatter.format(view)
        assert "text/html" not in before
        assert use_static_html() is None
        data, _ = shell.display_formatter.format(view)
        assert VIEW_MIME in data and data["text/html"].startswith(STATIC_START)
        assert "<td>peak 3</td>" in data["text/html"]
    finally:
        formatter.pop(w.DOMWidget, None)
        view.close()


# -- charts with and without kaleido --------------------------------------------------------------
@pytest.fixture
def in_kernel(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``use_static_fallback`` as called in a notebook kernel; the renderer is restored after."""
    before = pio.renderers.default
    monkeypatch.setattr(charts, "_in_kernel", lambda: True)
    yield
    pio.renderers.default = before
    charts._STATIC.update(png=False, problem="use_static_fallback() was not called",
                          plotlyjs_sent=False, figures=0)


def _bar() -> go.Figure:
    return go.Figure(go.Bar(x=["a", "b"], y=[1, 2]), layout={"title": "Tokens per alias"})


def _bundle(fig: go.Figure) -> dict[str, Any]:
    return pio.renderers[charts.RENDERER].to_mimebundle(fig.to_plotly_json())


def test_without_kaleido_charts_carry_html_and_say_why_there_is_no_image(
        in_kernel: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "kaleido", None)  # import fails
    assert charts.use_static_fallback() is False
    assert capsys.readouterr() == ("", "")  # nothing printed into the cell
    assert pio.renderers.default == f"plotly_mimetype+{charts.RENDERER}"
    first, second = _bundle(_bar()), _bundle(_bar())
    assert set(first) == {"text/html"} == set(second)
    assert first["text/html"].count(PLOTLYJS_MARK) == 1  # plotly.js, inline, once
    assert PLOTLYJS_MARK not in second["text/html"]
    assert "no static image was made (kaleido is not installed" in first["text/html"]
    assert "Tokens per alias" in first["text/html"]
    assert "Plotly.newPlot" in first["text/html"]


def test_with_kaleido_charts_carry_a_png_in_the_html_too(
        in_kernel: None, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("kaleido")
    fake.start_sync_server = lambda **kw: None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "kaleido", fake)
    monkeypatch.setenv("BROWSER_PATH", "/usr/bin/chromium")
    monkeypatch.setattr(pio, "to_image", lambda fig, format: b"\x89PNG fake")
    assert charts.use_static_fallback() is True
    data = _bundle(_bar())
    assert data["image/png"] == base64.b64encode(b"\x89PNG fake").decode()
    assert f"data:image/png;base64,{data['image/png']}" in data["text/html"]


def test_chart_html_is_the_same_for_nbval_with_and_without_kaleido(
        in_kernel: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "kaleido", None)
    charts.use_static_fallback()
    without = _bundle(_bar())["text/html"]
    fake = types.ModuleType("kaleido")
    fake.start_sync_server = lambda **kw: None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "kaleido", fake)
    monkeypatch.setenv("BROWSER_PATH", "/usr/bin/chromium")
    monkeypatch.setattr(pio, "to_image", lambda fig, format: b"\x89PNG fake")
    charts.use_static_fallback()
    with_png = _bundle(_bar())["text/html"]
    assert without != with_png
    assert _sanitize(without) == _sanitize(with_png)
    assert "PLOTLY-JS" in _sanitize(with_png) and "STATIC-COPY" in _sanitize(with_png)


def test_figure_svg_sketches_scatter_figures_and_declines_others() -> None:
    from codexflow_nb.plan import Plan
    from codexflow_nb.widgets import build_figure

    plan = Plan.from_data({"phases": [
        {"name": "design", "tasks": [{"id": "d1", "alias": "architect", "task": "Design it"}]},
        {"name": "build", "tasks": [{"id": "b1", "alias": "reviewer", "task": "Build it",
                                     "dependsOn": ["d1"]}]}]})
    svg = charts.figure_svg(build_figure(plan))
    assert svg is not None and svg.startswith("<svg") and ">d1</text>" in svg and ">b1</text>" in svg
    assert "design" in svg and "build" in svg
    assert charts.figure_svg(_bar()) is None
    note = charts.static_figure_html(_bar())
    assert "Tokens per alias" in note and "needs JavaScript" in note


# -- the sanitizer and the store script -----------------------------------------------------------
def test_the_sanitizer_folds_static_copies_and_plotlyjs() -> None:
    a = f"<p>x</p>{STATIC_START}<div><b>3/3 done</b></div>{STATIC_END}<p>y</p>"
    b = f"<p>x</p>{STATIC_START}<div><b>0/3 done</b></div>{STATIC_END}<p>y</p>"
    assert _sanitize(a) == _sanitize(b) and "<p>y</p>" in _sanitize(a)
    js = "<script type='text/javascript' charset='utf-8'>/**\n* plotly.js v4.1.1\n*/ var x = 1;</script>"
    assert _sanitize(js + "<div>") == "<script>PLOTLY-JS</script><div>"


@pytest.fixture(scope="module")
def store() -> Any:
    spec = importlib.util.spec_from_file_location("store_notebooks",
                                                  REPO / "scripts" / "store_notebooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _view(model_id: str) -> Any:
    return nbformat.from_dict({"output_type": "display_data", "metadata": {}, "data": {
        VIEW_MIME: {"version_major": 2, "version_minor": 0, "model_id": model_id},
        "text/plain": "HTML(value='...')",
        "text/html": f"{STATIC_START}old{STATIC_END}"}})


def test_the_store_script_keeps_the_shown_state_redraws_copies_and_renames_ids(store: Any) -> None:
    def html(value: str) -> dict[str, Any]:
        return {"model_name": "HTMLModel", "model_module": "@jupyter-widgets/controls",
                "model_module_version": "2.0.0", "state": {"value": value,
                                                           "layout": "IPY_MODEL_" + "l" * 32}}
    a, b, gone, unshown = "a" * 32, "b" * 32, "c" * 32, "d" * 32
    layout = {"model_name": "LayoutModel", "model_module": "@jupyter-widgets/base",
              "model_module_version": "2.0.0", "state": {}}
    box = {"model_name": "VBoxModel", "model_module": "@jupyter-widgets/controls",
           "model_module_version": "2.0.0", "state": {"children": [f"IPY_MODEL_{b}"]}}
    state = {a: box, b: html("<b>final</b>"), unshown: html("never shown"), "l" * 32: layout}
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("box", outputs=[_view(a)]),
                nbformat.v4.new_code_cell("closed", outputs=[_view(gone)])]
    kept, missing = store.shown_state(nb, state)
    assert list(kept) == [a, b, "l" * 32] and missing == [gone]
    assert store.refresh_static_copies(nb, kept, missing) == 1
    assert "<b>final</b>" in nb.cells[0].outputs[0]["data"]["text/html"]
    assert VIEW_MIME not in nb.cells[1].outputs[0]["data"]  # closed: the static copy is left
    text = store.stable_ids(nbformat.writes(nb), list(kept) + missing, salt="demo")
    assert a not in text and hashlib.sha1(b"demo:0").hexdigest()[:32] in text
    assert store.stable_ids(text, [], salt="demo") == text

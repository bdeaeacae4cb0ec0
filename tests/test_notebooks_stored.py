"""The tutorial notebooks are stored executed: outputs present, no errors, run top to bottom.

``pytest --nbval notebooks/`` re-runs them and compares outputs; this test checks what is
committed, so a notebook saved after "Clear all outputs" or after a failing cell is caught
(nbval would happily compare an empty notebook with itself). Re-execute with
``python scripts/store_notebooks.py``.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
NBVAL_MARKERS = {"NBVAL_IGNORE_OUTPUT", "NBVAL_CHECK_OUTPUT", "NBVAL_RAISES_EXCEPTION",
                 "NBVAL_SKIP"}


def _code_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]


def test_there_are_notebooks() -> None:
    names = {p.name for p in NOTEBOOKS}
    assert {"01-quickstart.ipynb", "02-aliases-and-concurrency.ipynb"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_stored_executed(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    cells = _code_cells(nb)
    assert cells, f"{path.name}: no code cells"
    assert any(c.outputs for c in cells), f"{path.name}: stored without outputs"
    counts = [c.execution_count for c in cells]
    assert None not in counts, (
        f"{path.name}: cell {counts.index(None) + 1} was never executed")
    assert counts == list(range(1, len(cells) + 1)), (
        f"{path.name}: not executed once top to bottom on a fresh kernel (counts {counts})")
    for n, cell in enumerate(cells, 1):
        for out in cell.outputs:
            assert out.output_type != "error", (
                f"{path.name}: code cell {n} stored with an error: {out.ename}: {out.evalue}")
            if out.output_type == "stream" and out.name == "stderr":
                assert "Traceback (most recent call last)" not in out.text, (
                    f"{path.name}: code cell {n} stored with a traceback on stderr")


def marker_problems(source: str) -> list[str]:
    """Problems with the nbval comment markers of one cell's source.

    nbval only honours a comment that is exactly the marker and silently ignores, say,
    ``# NBVAL_IGNORE_OUTPUT: because ...``; an ignored cell says why on the next line.
    """
    problems = []
    lines = [line.strip() for line in source.splitlines()]
    for i, line in enumerate(lines):
        if not (line.startswith("#") and "NBVAL_" in line):
            continue
        marker = line.lstrip("#").strip()
        if marker not in NBVAL_MARKERS:
            problems.append(f"{line!r} is not a marker nbval recognises (put it alone on its line)")
        elif marker in ("NBVAL_IGNORE_OUTPUT", "NBVAL_SKIP"):
            reason = lines[i + 1] if i + 1 < len(lines) else ""
            if not reason.startswith("# why:"):
                problems.append(f"{marker} needs a '# why: ...' line after it")
    return problems


def test_marker_problems_catches_ignored_and_unexplained_markers() -> None:
    assert marker_problems("# NBVAL_IGNORE_OUTPUT\n# why: timestamps\nx") == []
    assert len(marker_problems("# NBVAL_IGNORE_OUTPUT: timestamps\nx")) == 1
    assert len(marker_problems("# NBVAL_IGNORE_OUTPUT\nx")) == 1
    assert marker_problems("print('NBVAL_ is just text here')") == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_nbval_markers_are_exact_and_explained(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    for n, cell in enumerate(_code_cells(nb), 1):
        problems = marker_problems(cell.source)
        assert not problems, f"{path.name}: code cell {n}: {'; '.join(problems)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_in_a_temporary_folder(path: Path) -> None:
    """Every tutorial moves into a folder it creates before it writes anything."""
    nb = nbformat.read(path, as_version=4)
    first = _code_cells(nb)[0].source
    assert "tempfile.mkdtemp(" in first and "os.chdir(" in first, (
        f"{path.name}: the first code cell must chdir into a tempfile.mkdtemp() folder")

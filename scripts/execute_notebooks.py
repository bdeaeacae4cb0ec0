#!/usr/bin/env python
"""Re-execute the tutorial notebooks in place so they are stored with fresh outputs.

For developers, after editing a notebook or changing what it shows (CI does not run this; CI
compares fresh outputs with the stored ones through ``pytest --nbval``)::

    python scripts/execute_notebooks.py                 # every notebooks/*.ipynb
    python scripts/execute_notebooks.py notebooks/02-aliases-and-concurrency.ipynb

Each notebook runs top to bottom on a fresh ``python3`` kernel with ``notebooks/`` as its working
directory (the notebooks themselves move into a temporary folder). A cell that raises stops that
notebook, leaves the file untouched and makes the script exit 1. Timing metadata and widget state
are not stored, so re-executing an unchanged notebook gives a small diff.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"


def execute_notebook(path: Path, *, timeout: int = 120, kernel_name: str = "python3",
                     store_widget_state: bool = False) -> float:
    """Execute ``path`` in place; return the seconds it took. Raises on a failing cell."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=timeout, kernel_name=kernel_name, record_timing=False,
        store_widget_state=store_widget_state,
        resources={"metadata": {"path": str(path.parent)}},
        extra_arguments=["--IPKernelApp.log_level=ERROR"])  # no TCP-transport warning
    started = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - started
    for cell in nb.cells:  # older runs may have left timing metadata behind
        cell.metadata.pop("execution", None)
    nbformat.validate(nb)
    nbformat.write(nb, path)
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="notebooks to execute (default: every notebooks/*.ipynb)")
    parser.add_argument("--timeout", type=int, default=120, help="seconds per cell (default 120)")
    parser.add_argument("--store-widget-state", action="store_true",
                        help="also store widget state in the notebook metadata (random model ids)")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
    if not paths:
        print(f"no notebooks found in {NOTEBOOKS_DIR}", file=sys.stderr)
        return 1
    from nbclient.exceptions import CellExecutionError

    failed = 0
    for path in paths:
        try:
            seconds = execute_notebook(path, timeout=args.timeout,
                                       store_widget_state=args.store_widget_state)
        except CellExecutionError as exc:
            failed += 1
            print(f"FAILED {path}: {str(exc).strip().splitlines()[-1]}", file=sys.stderr)
            continue
        print(f"ok     {path} ({seconds:.1f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

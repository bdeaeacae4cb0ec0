"""The run store's writer threads: everything queued lands, in order per task, and a failed
write is reported instead of lost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codexflow_nb.errors import RunStorageError
from codexflow_nb.runstore import WRITERS, RunStore


def test_every_task_lands_whole_across_writer_threads(tmp_path: Path) -> None:
    assert WRITERS >= 2
    store = RunStore(tmp_path)
    for i in range(600):
        store.save(f"a{i % 3}", f"t{i:04d}", {"task": i}, {"ok": True, "n": i})
    store.close()
    assert store.backlog == 0
    folders = sorted(tmp_path.glob("a*/t*"))
    assert len(folders) == 600
    for folder in folders:
        n = int(folder.name[1:])
        assert json.loads((folder / "input.json").read_text()) == {"task": n}
        assert json.loads((folder / "output.json").read_text()) == {"ok": True, "n": n}
    assert not list(tmp_path.rglob("*.tmp"))


def test_saves_of_one_task_are_written_in_order(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    for version in range(200):  # the same folder each time: one writer, first in first out
        store.save("rev", "t1", {"v": version}, {"v": version})
        store.save("rev", f"other{version}", {}, {})
    store.close()
    assert json.loads((tmp_path / "rev/t1/output.json").read_text()) == {"v": 199}


def test_a_failed_write_is_raised_by_close(tmp_path: Path) -> None:
    (tmp_path / "rev").write_text("a file where the alias folder should be")
    store = RunStore(tmp_path)
    store.save("rev", "t1", {}, {})
    store.save("ok", "t2", {}, {})
    with pytest.raises(RunStorageError, match="run store write failed"):
        store.close()
    assert (tmp_path / "ok/t2/output.json").exists()

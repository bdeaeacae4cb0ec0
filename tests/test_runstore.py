"""The run store's writer threads: everything queued lands, in order per task, and a failed
write is reported instead of lost."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from codexflow_nb.errors import RunStorageError
from codexflow_nb.runstore import WRITERS, RunStore


@pytest.mark.parametrize(("slow_s", "threads"), [(0.0, 2), (60.0, 1)])
def test_every_task_lands_whole_and_slow_storage_gets_a_second_writer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slow_s: float, threads: int) -> None:
    from codexflow_nb import runstore

    assert WRITERS == 2
    monkeypatch.setattr(runstore, "SLOW_TASK_S", slow_s)  # 0: every write counts as slow
    store = RunStore(tmp_path)
    for i in range(600):
        store.save(f"a{i % 3}", f"t{i:04d}", {"task": i}, {"ok": True, "n": i})
        if i == 300:  # let the first writer measure itself on what it has
            deadline = time.monotonic() + 30
            while store.backlog and time.monotonic() < deadline:
                time.sleep(0.01)
    assert len(store._threads) == threads
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


def test_a_task_folder_is_whole_or_absent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from codexflow_nb import runstore

    stale = tmp_path / "rev" / ".t1.tmp"  # a crash's leftover for the same task
    stale.mkdir(parents=True)
    (stale / "input.json").write_text("half")
    store = RunStore(tmp_path, background=False)
    store.save("rev", "t1", {"v": 1}, {"v": 1})
    assert sorted(p.name for p in (tmp_path / "rev").iterdir()) == ["t1"]
    assert json.loads((tmp_path / "rev/t1/input.json").read_text()) == {"v": 1}

    real_create = runstore._create

    def failing_create(path: str, payload: bytes) -> None:
        if path.endswith("output.json"):
            raise OSError(28, "No space left on device")
        real_create(path, payload)

    monkeypatch.setattr(runstore, "_create", failing_create)
    with pytest.raises(OSError):
        store.save("rev", "t2", {"v": 2}, {"v": 2})
    assert sorted(p.name for p in (tmp_path / "rev").iterdir()) == ["t1"]  # no t2, no staging

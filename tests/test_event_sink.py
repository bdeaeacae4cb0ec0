"""The event log sink batches the lines of one loop iteration into one write, and loses
nothing doing so: close and flush write the rest, and a failed deferred write is raised."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from codexflow_nb.errors import RunStorageError
from codexflow_nb.events import JsonlSink


def _count_writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    sizes: list[int] = []
    real_write = os.write

    def counting_write(fd: int, data: bytes) -> int:
        sizes.append(len(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", counting_write)
    return sizes


def test_one_write_per_loop_iteration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sink = JsonlSink(tmp_path / "events.jsonl", fsync="never")
    sizes = _count_writes(monkeypatch)

    async def emit() -> None:
        for i in range(50):
            sink.write({"i": i})
        assert sizes == []  # nothing written until the iteration ends
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert len(sizes) == 1
        sink.write({"i": 50})  # the next iteration: a second write

    asyncio.run(emit())
    sink.close()
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    assert [json.loads(line)["i"] for line in lines] == list(range(51))
    assert len(sizes) == 2


def test_without_a_loop_and_with_fsync_every_each_line_is_written_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = _count_writes(monkeypatch)
    plain = JsonlSink(tmp_path / "a.jsonl", fsync="never")
    plain.write({"i": 1})
    assert len(sizes) == 1

    async def emit(sink: JsonlSink) -> None:
        sink.write({"i": 2})
        assert len(sizes) == 2

    strict = JsonlSink(tmp_path / "b.jsonl", fsync="every")
    asyncio.run(emit(strict))
    plain.close()
    strict.close()


def test_close_writes_what_the_loop_did_not(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path / "events.jsonl", fsync="batch")

    async def emit() -> None:
        sink.write({"i": 1})
        sink.close()  # before the iteration ends

    asyncio.run(emit())
    assert json.loads((tmp_path / "events.jsonl").read_text()) == {"i": 1}


def test_a_failed_deferred_write_is_raised_by_the_next_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sink = JsonlSink(tmp_path / "events.jsonl", fsync="never")

    def failing_write(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    async def emit() -> None:
        sink.write({"i": 1})
        monkeypatch.setattr(os, "write", failing_write)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        with pytest.raises(RunStorageError, match="No space left"):
            sink.write({"i": 2})
        with pytest.raises(RunStorageError, match="No space left"):
            sink.flush()

    asyncio.run(emit())
    monkeypatch.undo()
    sink.close()


def test_a_burst_is_written_in_bounded_pieces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from codexflow_nb import events

    monkeypatch.setattr(events, "PENDING_BYTES", 4096)
    sink = JsonlSink(tmp_path / "events.jsonl", fsync="never")
    sizes = _count_writes(monkeypatch)

    async def burst() -> None:
        for i in range(1000):  # one loop iteration, ~20 KB of lines
            sink.write({"i": i, "pad": "x" * 10})
        assert len(sizes) >= 4 and max(sizes) < 4096 + 100

    asyncio.run(burst())
    sink.close()
    assert len((tmp_path / "events.jsonl").read_text().splitlines()) == 1000

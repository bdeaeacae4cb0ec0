"""The loop codexflow_nb starts itself: uvloop by default where it is installed, asyncio's
with $CODEXFLOW_LOOP=asyncio, a clear error for a bad value; recorded in run_started."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import codexflow_nb as cf
from codexflow_nb import loops
from codexflow_nb.errors import ConfigError

LOG = Path("data/logs/events.jsonl")


def cli(*args: str, cwd: Path, loop: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != loops.LOOP_ENV}
    if loop is not None:
        env[loops.LOOP_ENV] = loop
    return subprocess.run([sys.executable, "-m", "codexflow_nb", *args], cwd=cwd, env=env,
                          text=True, capture_output=True, timeout=60)


def started(workdir: Path) -> dict:
    first = json.loads((workdir / LOG).read_text().splitlines()[0])
    assert first["kind"] == "run_started"
    return first


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop is not a dependency on Windows")
@pytest.mark.parametrize(("setting", "kind"), [(None, "uvloop"), ("auto", "uvloop"),
                                               ("uvloop", "uvloop"), ("asyncio", "asyncio")])
def test_the_cli_runs_on_the_configured_loop(workdir: Path, setting: str | None, kind: str) -> None:
    proc = cli("run", "--example", "--stub-latency-ms", "1", cwd=workdir, loop=setting)
    assert proc.returncode == 0, proc.stderr
    assert started(workdir)["loop"] == kind


def test_a_bad_setting_is_one_clear_line(workdir: Path) -> None:
    proc = cli("run", "--example", cwd=workdir, loop="trio")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "codex-flow: error: $CODEXFLOW_LOOP must be auto, uvloop or asyncio, not 'trio'"]
    assert not (workdir / LOG).exists()


def test_without_uvloop_auto_falls_back_and_uvloop_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if not installed
    monkeypatch.setenv(loops.LOOP_ENV, "auto")
    assert loops.loop_factory() is None
    monkeypatch.setenv(loops.LOOP_ENV, "uvloop")

    async def nothing() -> None:
        return None

    with pytest.raises(ConfigError, match="uvloop is not installed"):
        loops.run(nothing())


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop is not a dependency on Windows")
def test_run_uses_its_own_uvloop_but_run_async_the_callers_loop(
        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(loops.LOOP_ENV, raising=False)
    cf.run({"reviewer": ["a"]}, latency_ms=0)
    assert started(workdir)["loop"] == "uvloop"
    (workdir / LOG).unlink()
    asyncio.run(cf.run_async({"reviewer": ["a"]}, latency_ms=0))
    assert started(workdir)["loop"] == "asyncio"

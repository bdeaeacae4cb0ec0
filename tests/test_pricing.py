"""Prices: cache reads and writes (5-minute and 1-hour) each at their own price, the fallbacks
when a model lists no such price, the checks of a pricing file, and reading it safely (a FIFO,
a device or an unreadable file is one ConfigError line, through the Python API too)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from codexflow_nb import ConfigError
from codexflow_nb.analysis.pricing import Price, load_pricing

ANTHROPIC = ["claude-sonnet-4-5", "claude-opus-4-5", "claude-opus-4-1", "claude-haiku-4-5",
             "claude-3-5-haiku", "claude-3-5-sonnet", "claude-sonnet-4", "claude-opus-4"]


@pytest.mark.parametrize("model", ANTHROPIC)
def test_shipped_anthropic_rows_price_writes_at_1_25x_and_2x_input(model: str) -> None:
    price = load_pricing().lookup(model)
    assert price is not None and price.provider == "anthropic"
    assert price.cache_write == pytest.approx(1.25 * price.input, rel=1e-12)
    assert price.cache_write_1h == pytest.approx(2 * price.input, rel=1e-12)
    assert price.written == price.cache_write and price.written_1h == price.cache_write_1h


def test_a_task_with_cache_writes_costs_each_part_at_its_price() -> None:
    sonnet = load_pricing().lookup("claude-sonnet-4-5-20250929")  # $3 / $0.30 / $3.75 / $6 / $15
    # 10,000 in: 3,000 cache reads, 2,000 cache writes (500 of them for 1 hour), 5,000 plain
    cost = sonnet.cost(10_000, 1_000, cached_in=3_000, written_in=2_000, written_1h_in=500)
    assert cost == pytest.approx((5_000 * 3 + 3_000 * 0.3 + 1_500 * 3.75 + 500 * 6
                                  + 1_000 * 15) / 1e6, rel=1e-12)
    assert cost == pytest.approx(0.039525, rel=1e-12)
    # parts never exceed what holds them: reads <= input, writes <= input left, 1h <= writes
    assert sonnet.cost(100, 0, cached_in=80, written_in=50, written_1h_in=70) == pytest.approx(
        (80 * 0.3 + 20 * 6) / 1e6, rel=1e-12)


def test_without_cache_write_prices_writes_fall_back() -> None:
    table = load_pricing()
    gpt = table.lookup("gpt-5")  # no cache_write, no cache_write_1h: both at input
    assert gpt.cache_write is None and gpt.written == gpt.input == gpt.written_1h
    assert gpt.cost(10_000, 1_000, 3_000, 2_000, 500) == pytest.approx(
        (7_000 * 1.25 + 3_000 * 0.125 + 1_000 * 10) / 1e6, rel=1e-12)
    five = Price("acme", "five", input=0.004, output=0.02, cache_write=0.005)  # no 1h: 5-minute
    assert five.written_1h == 0.005 and five.cached == 0.004
    assert five.cost(1_000, 0, written_in=400, written_1h_in=100) == pytest.approx(
        (600 * 4 + 400 * 5) / 1e6, rel=1e-12)


def test_vectorised_cost_and_breakdown_match_the_scalar_cost() -> None:
    table = load_pricing()
    models = pd.Series(["claude-sonnet-4-5", "gpt-5", "nope", None, "claude-haiku-4-5"])
    tin = pd.Series([10_000, 10_000, 10, 5, None], dtype="Int64")
    tout = pd.Series([1_000, 1_000, 1, 1, 7], dtype="Int64")
    cached = pd.Series([3_000, 3_000, 0, 0, 0], dtype="Int64")
    written = pd.Series([2_000, None, 0, 0, 0], dtype="Int64")
    hour = pd.Series([500, None, 0, 0, 0], dtype="Int64")
    parts = table.breakdown(models, tin, tout, cached, written, hour)
    assert list(parts.columns) == ["input_cost", "cached_cost", "cache_write_cost",
                                   "output_cost", "cost"]
    sonnet = table.lookup("claude-sonnet-4-5")
    assert parts["cost"][0] == pytest.approx(sonnet.cost(10_000, 1_000, 3_000, 2_000, 500))
    assert parts["cache_write_cost"][0] == pytest.approx((1_500 * 3.75 + 500 * 6) / 1e6)
    assert parts.iloc[0, :4].sum() == pytest.approx(parts["cost"][0], rel=1e-12)
    # gpt-5 reported no writes: costed as before, cache-write cost unknown (NaN), not 0
    assert parts["cost"][1] == pytest.approx((7_000 * 1.25 + 3_000 * 0.125 + 1_000 * 10) / 1e6)
    assert math.isnan(parts["cache_write_cost"][1])
    # unknown model, no model, no input tokens: every part NaN
    assert parts.iloc[2:].isna().all().all()
    got = table.cost(models, tin, tout, cached, written, hour)
    assert got.name == "cost" and got.equals(parts["cost"].rename("cost"))
    # the older call (no writes given) still works and charges no write price
    old = table.cost(models, tin, tout, cached)
    assert old[0] == pytest.approx((7_000 * 3 + 3_000 * 0.3 + 1_000 * 15) / 1e6)


def test_a_pricing_file_may_list_write_prices_and_they_are_checked(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("providers:\n  acme:\n    r: {input: 1, output: 2, cache_write: 1.5,"
                    " cache_write_1h: 3}\n")
    r = load_pricing(good).lookup("r")
    assert (r.cache_write, r.cache_write_1h) == (1.5, 3.0)
    frame = load_pricing(good).to_frame()
    assert {"cache_write", "cache_write_1h"} <= set(frame.columns)
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers:\n  acme:\n    r: {input: 1, output: 2, cache_write: -1,"
                   " cache_write_1h: cheap}\n")
    with pytest.raises(ConfigError) as exc:
        load_pricing(bad)
    assert any("r.cache_write: expected a number >= 0" in p for p in exc.value.problems)
    assert any("r.cache_write_1h: expected a number >= 0" in p and "'cheap'" in p
               for p in exc.value.problems)


# -- reading the file safely ------------------------------------------------------------------
def _api(code: str, *, prefix: list[str] | None = None, cwd: Path) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter (a hang fails the test instead of stalling the run)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    env.pop("CODEXFLOW_PRICING", None)
    return subprocess.run([*(prefix or []), sys.executable, "-c", code], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


CATCH = ("from codexflow_nb import ConfigError\n"
         "try:\n    {call}\nexcept ConfigError as exc:\n    print(repr(str(exc)))\n"
         "else:\n    print('no error')\n")


@pytest.mark.parametrize("target, problem", [
    ("pipe", "pipe: not a regular file (a FIFO, device or socket cannot be a pricing file)"),
    ("/dev/zero", "/dev/zero: not a regular file"),
    ("adir", "adir: a folder, not a pricing file"),
    ("missing.yaml", "missing.yaml: pricing file not found"),
])
def test_python_api_refuses_special_pricing_files_in_one_line(tmp_path: Path, target: str,
                                                              problem: str) -> None:
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "adir").mkdir()
    (tmp_path / "e.jsonl").write_text(
        '{"v": 1, "ts": "2026-12-02T00:00:00Z", "kind": "run_started", "runId": "r"}\n')
    for call in (f"load_pricing({target!r})",
                 f"tasks_frame(load_events('e.jsonl'), pricing={target!r})"):
        code = ("from codexflow_nb.analysis import load_events, load_pricing, tasks_frame\n"
                + CATCH.format(call=call))
        proc = _api(code, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        line = eval(proc.stdout.strip())  # the message, one line
        assert "\n" not in line and problem in line, line


def test_python_api_huge_pricing_file_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with open(big, "wb") as fh:
        fh.truncate(5 * 1024 * 1024)
    with pytest.raises(ConfigError, match="big.yaml: pricing file is 5.0 MiB, larger than"):
        load_pricing(big)


def test_python_api_names_an_unreadable_pricing_file(tmp_path: Path,
                                                     no_read_rights: list[str]) -> None:
    prefix = no_read_rights
    secret = tmp_path / "secret.yaml"
    secret.write_text("providers:\n  acme:\n    r: {input: 1, output: 2}\n")
    secret.chmod(0)
    try:
        proc = _api("from codexflow_nb.analysis import load_pricing\n"
                    + CATCH.format(call="load_pricing('secret.yaml')"),
                    prefix=prefix, cwd=tmp_path)
    finally:
        secret.chmod(0o600)
    assert proc.returncode == 0, proc.stderr
    assert eval(proc.stdout.strip()) == ("secret.yaml: cannot read the pricing file: "
                                         "Permission denied")


def test_a_deeply_nested_or_broken_pricing_file_is_one_error(tmp_path: Path) -> None:
    deep = tmp_path / "deep.yaml"
    deep.write_text("providers: " + "[" * 5000 + "]" * 5000)
    with pytest.raises(ConfigError, match="nested more than 64 levels deep"):
        load_pricing(deep)
    broken = tmp_path / "broken.yaml"
    broken.write_text("providers: [1,\n  b: }")
    with pytest.raises(ConfigError, match=r"broken.yaml: not valid YAML: line 2, column \d+"):
        load_pricing(broken)

"""Token prices (USD per 1K tokens) and the cost of usage; ``reprice`` for "what if" questions.

The shipped table is ``codexflow_nb/data/pricing.yaml``; a user file (argument or
``$CODEXFLOW_PRICING``) is merged over it. Unknown models cost NaN, never 0.

Input tokens are split three ways, each part of ``tokens_in``: cache reads (``cached_in``,
charged at ``cached_input``), prompt-cache writes (``written_in``, charged at ``cache_write``;
the 1-hour share of them, ``written_1h_in``, at ``cache_write_1h``) and the rest, at
``input``. A price that is not listed falls back: ``cached_input`` and ``cache_write`` to
``input``, ``cache_write_1h`` to ``cache_write`` (so to ``input`` when neither is listed).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..aliases import deep_merge
from ..errors import ConfigError
from ..inputs import MIB, read_text
from ..registry import parse_yaml

DEFAULT_PRICING = Path(__file__).resolve().parent.parent / "data" / "pricing.yaml"
ENV_VAR = "CODEXFLOW_PRICING"
#: Largest pricing file read (the shipped one is about 8 kB).
MAX_PRICING_BYTES = 4 * MIB
#: The optional prices of a model, each falling back as the module docstring says.
OPTIONAL = ("cached_input", "cache_write", "cache_write_1h")


@dataclass(frozen=True)
class Price:
    """USD per 1,000 tokens of one model: ``input`` and ``output``; ``cached_input`` for input
    served from the provider's prompt cache (None: ``input``); ``cache_write`` for input written
    to the prompt cache with the default 5-minute lifetime (None: ``input``) and
    ``cache_write_1h`` for a 1-hour write (None: ``cache_write``)."""

    provider: str
    model: str
    input: float
    output: float
    note: str = ""
    cached_input: float | None = None
    cache_write: float | None = None
    cache_write_1h: float | None = None

    @property
    def cached(self) -> float:
        """The price of a cached input token (the input price when none is listed)."""
        return self.input if self.cached_input is None else self.cached_input

    @property
    def written(self) -> float:
        """The price of a token written to the prompt cache for 5 minutes (the input price
        when none is listed)."""
        return self.input if self.cache_write is None else self.cache_write

    @property
    def written_1h(self) -> float:
        """The price of a token written to the prompt cache for 1 hour (the 5-minute write
        price when none is listed)."""
        return self.written if self.cache_write_1h is None else self.cache_write_1h

    def cost(self, tokens_in: float, tokens_out: float, cached_in: float = 0,
             written_in: float = 0, written_1h_in: float = 0) -> float:
        """``tokens_in`` includes ``cached_in`` and ``written_in``, ``written_in`` includes
        ``written_1h_in``: ``(in - cached - written) x input + cached x cached_input +
        (written - written_1h) x cache_write + written_1h x cache_write_1h + out x output``
        (per 1,000 tokens). A part larger than what holds it is cut to fit."""
        cached_in = min(cached_in, tokens_in)
        written_in = min(written_in, tokens_in - cached_in)
        written_1h_in = min(written_1h_in, written_in)
        return ((tokens_in - cached_in - written_in) / 1000 * self.input
                + cached_in / 1000 * self.cached
                + (written_in - written_1h_in) / 1000 * self.written
                + written_1h_in / 1000 * self.written_1h
                + tokens_out / 1000 * self.output)


#: What may follow a listed name in a variant of it: a date (``-20250929``, ``-2024-08-06``),
#: ``-latest``, or a tag after ``:`` or ``@`` (``llama3.1:8b``, ``claude-sonnet-4-5@20250929``).
#: Anything else is another model (``gpt-5.1`` is not ``gpt-5``; ``gpt-5-pro`` is not either).
_VARIANT = re.compile(r"(?:-(?:\d{8}|\d{4}-\d{2}-\d{2}|latest)(?![^-:@])|[:@])")


class Pricing:
    """A price table. ``lookup`` accepts ``provider/model``, a bare model name, or a dated or
    tagged variant of a listed name (``gpt-4o-2024-08-06`` uses ``gpt-4o``,
    ``claude-sonnet-4-5-20250929`` uses ``claude-sonnet-4-5``)."""

    def __init__(self, prices: list[Price], source: str = "") -> None:
        self.prices = prices
        self.source = source
        self._by_name: dict[str, Price] = {}
        for p in prices:
            self._by_name[f"{p.provider}/{p.model}"] = p
            self._by_name.setdefault(p.model, p)
        self._bare = sorted({p.model for p in prices}, key=len, reverse=True)

    def lookup(self, model: str | None) -> Price | None:
        if not model or not isinstance(model, str):
            return None
        if model in self._by_name:
            return self._by_name[model]
        name = model.split("/", 1)[1] if "/" in model else model
        for bare in self._bare:  # longest first
            if name == bare or (name.startswith(bare) and _VARIANT.match(name, len(bare))):
                return self._by_name[bare]
        return None

    def cost(self, models: pd.Series, tokens_in: pd.Series, tokens_out: pd.Series,
             cached_in: pd.Series | None = None, written_in: pd.Series | None = None,
             written_1h_in: pd.Series | None = None) -> pd.Series:
        """Cost per row; NaN where the model is unknown or usage is missing. ``cached_in``
        and ``written_in`` (parts of ``tokens_in``) and ``written_1h_in`` (part of
        ``written_in``) are charged at the cached-input, cache-write and 1-hour cache-write
        prices; a missing one counts as 0."""
        return self.breakdown(models, tokens_in, tokens_out, cached_in, written_in,
                              written_1h_in)["cost"]

    def breakdown(self, models: pd.Series, tokens_in: pd.Series, tokens_out: pd.Series,
                  cached_in: pd.Series | None = None, written_in: pd.Series | None = None,
                  written_1h_in: pd.Series | None = None) -> pd.DataFrame:
        """The cost per row (as :meth:`cost`) and its parts, in USD: ``input_cost`` (input
        neither read from nor written to the cache), ``cached_cost``, ``cache_write_cost``
        (5-minute and 1-hour writes; NaN where ``written_in`` is missing, i.e. the usage did
        not report cache writes), ``output_cost`` and ``cost``."""
        cat = models.astype(str).where(models.notna()).astype("category")
        found = [self.lookup(m) for m in cat.cat.categories]
        codes = cat.cat.codes.to_numpy()  # -1 (missing model) picks the trailing NaN

        def unit(get: Any) -> np.ndarray:
            return np.array([get(p) if p else np.nan for p in found] + [np.nan])[codes]

        tin = _floats(tokens_in)
        tout = _floats(tokens_out)
        cached = np.zeros_like(tin) if cached_in is None else np.nan_to_num(_floats(cached_in))
        cached = np.fmin(cached, tin)  # never more than the input (NaN input stays NaN below)
        raw_written = np.full_like(tin, np.nan) if written_in is None else _floats(written_in)
        written = np.fmin(np.nan_to_num(raw_written), tin - cached)
        written_1h = (np.zeros_like(tin) if written_1h_in is None
                      else np.nan_to_num(_floats(written_1h_in)))
        written_1h = np.fmin(written_1h, written)
        parts = {
            "input_cost": (tin - cached - written) / 1000 * unit(lambda p: p.input),
            "cached_cost": cached / 1000 * unit(lambda p: p.cached),
            "cache_write_cost": ((written - written_1h) / 1000 * unit(lambda p: p.written)
                                 + written_1h / 1000 * unit(lambda p: p.written_1h)),
            "output_cost": tout / 1000 * unit(lambda p: p.output)}
        total = sum(parts.values())
        unknown = np.isnan(total)  # unknown model, or usage missing: every part is NaN too
        parts = {name: np.where(unknown, np.nan, part) for name, part in parts.items()}
        parts["cache_write_cost"] = np.where(np.isnan(raw_written), np.nan,
                                             parts["cache_write_cost"])
        parts["cost"] = total
        return pd.DataFrame(parts, index=models.index)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([p.__dict__ for p in self.prices])


def _floats(values: pd.Series) -> np.ndarray:
    return pd.to_numeric(values, errors="coerce").astype("float64").to_numpy()


def load_pricing(path: str | os.PathLike[str] | None = None) -> Pricing:
    """The shipped table, with ``path`` (or ``$CODEXFLOW_PRICING``) merged over it."""
    data = _read(DEFAULT_PRICING)
    source = str(DEFAULT_PRICING)
    user = path if path is not None else os.environ.get(ENV_VAR) or None
    if user is not None:
        data = deep_merge(data, _read(Path(user)))
        source = f"{DEFAULT_PRICING} + {user}"
    return Pricing(_parse(data, source), source)


def as_pricing(pricing: Pricing | str | os.PathLike[str] | None) -> Pricing:
    return pricing if isinstance(pricing, Pricing) else load_pricing(pricing)


def reprice(tasks: pd.DataFrame, model: str, pricing: Pricing | str | None = None) -> pd.DataFrame:
    """A copy of ``tasks`` costed as if the same usage had gone to ``model``: ``cost`` (and
    ``cache_write_cost`` when there is one) recomputed from the same tokens (cache reads and
    writes included), ``model`` set, and the original cost kept as ``cost_before``."""
    table = as_pricing(pricing)
    if table.lookup(model) is None:
        known = ", ".join(sorted({f"{p.provider}/{p.model}" for p in table.prices}))
        raise ConfigError(f"reprice: no price for model {model!r} in {table.source} "
                          f"(known: {known}); add it to a pricing file")
    out = tasks.copy()
    out["cost_before"] = tasks.get("cost", math.nan)
    out["model"] = pd.Series(model, index=out.index, dtype="category")
    parts = table.breakdown(out["model"], out["tokens_in"], out["tokens_out"],
                            out.get("cached_tokens_in"), out.get("cache_write_tokens_in"),
                            out.get("cache_write_1h_tokens_in"))
    out["cost"] = parts["cost"]
    if "cache_write_cost" in out.columns:
        out["cache_write_cost"] = parts["cache_write_cost"]
    return out


def _read(path: Path) -> dict[str, Any]:
    """A pricing file through the bounded reader: regular files only (a FIFO or a device is
    refused, never waited on), one ConfigError line for a file that cannot be read."""
    data = parse_yaml(read_text(path, MAX_PRICING_BYTES, "pricing file"), str(path),
                      "not valid YAML")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a pricing file is a mapping with 'providers'")
    return data


def _parse(data: dict[str, Any], source: str) -> list[Price]:
    problems: list[str] = []
    per = data.get("per_tokens", 1000)
    if per != 1000:
        problems.append(f"{source}: per_tokens: only 1000 is supported, got {per!r}")
    providers = data.get("providers")
    if not isinstance(providers, dict):
        raise ConfigError(f"{source}: providers: expected a mapping of provider -> model -> prices")
    prices: list[Price] = []
    for provider, models in providers.items():
        if not isinstance(models, dict):
            problems.append(f"{source}: providers.{provider}: expected a mapping of model -> prices")
            continue
        for model, entry in models.items():
            where = f"{source}: providers.{provider}.{model}"
            if not isinstance(entry, dict):
                problems.append(f"{where}: expected {{input: USD, output: USD}} per 1K tokens")
                continue
            values = []
            for field in ("input", "output", *OPTIONAL):
                v = entry.get(field)
                if field in OPTIONAL and v is None:
                    values.append(None)
                    continue
                if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                    problems.append(f"{where}.{field}: expected a number >= 0 (USD per 1K tokens), "
                                    f"got {v!r}")
                values.append(float(v) if isinstance(v, (int, float)) else math.nan)
            prices.append(Price(str(provider), str(model), values[0], values[1],
                                str(entry.get("note") or ""), *values[2:]))
    if problems:
        raise ConfigError(problems)
    return prices

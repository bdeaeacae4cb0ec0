"""Token prices (USD per 1K tokens) and the cost of usage; ``reprice`` for "what if" questions.

The shipped table is ``codexflow_nb/data/pricing.yaml``; a user file (argument or
``$CODEXFLOW_PRICING``) is merged over it. Unknown models cost NaN, never 0. A model may list a
``cached_input`` price: cached input tokens (part of the input tokens) are charged at it.
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
import yaml

from ..aliases import deep_merge
from ..errors import ConfigError

DEFAULT_PRICING = Path(__file__).resolve().parent.parent / "data" / "pricing.yaml"
ENV_VAR = "CODEXFLOW_PRICING"


@dataclass(frozen=True)
class Price:
    """USD per 1,000 input and output tokens of one model; ``cached_input`` (None: the input
    price) for input tokens served from the provider's prompt cache."""

    provider: str
    model: str
    input: float
    output: float
    note: str = ""
    cached_input: float | None = None

    @property
    def cached(self) -> float:
        """The price of a cached input token (the input price when none is listed)."""
        return self.input if self.cached_input is None else self.cached_input

    def cost(self, tokens_in: float, tokens_out: float, cached_in: float = 0) -> float:
        """``tokens_in`` includes ``cached_in``: ``(in - cached) x input + cached x
        cached_input + out x output``."""
        cached_in = min(cached_in, tokens_in)
        return ((tokens_in - cached_in) / 1000 * self.input + cached_in / 1000 * self.cached
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
             cached_in: pd.Series | None = None) -> pd.Series:
        """Cost per row; NaN where the model is unknown or usage is missing. ``cached_in``
        (part of ``tokens_in``; missing counts as 0) is charged at the cached-input price."""
        cat = models.astype(str).where(models.notna()).astype("category")
        found = [self.lookup(m) for m in cat.cat.categories]
        codes = cat.cat.codes.to_numpy()  # -1 (missing model) picks the trailing NaN
        unit_in = np.array([p.input if p else np.nan for p in found] + [np.nan])[codes]
        unit_cached = np.array([p.cached if p else np.nan for p in found] + [np.nan])[codes]
        unit_out = np.array([p.output if p else np.nan for p in found] + [np.nan])[codes]
        tin = _floats(tokens_in)
        tout = _floats(tokens_out)
        cached = np.zeros_like(tin) if cached_in is None else np.nan_to_num(_floats(cached_in))
        cached = np.fmin(cached, tin)  # never more than the input (NaN input stays NaN below)
        cost = (tin - cached) / 1000 * unit_in + cached / 1000 * unit_cached + tout / 1000 * unit_out
        return pd.Series(cost, index=models.index, name="cost")

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
    """A copy of ``tasks`` costed as if the same usage had gone to ``model``: ``cost`` is
    recomputed, ``model`` set, and the original cost kept as ``cost_before``."""
    table = as_pricing(pricing)
    if table.lookup(model) is None:
        known = ", ".join(sorted({f"{p.provider}/{p.model}" for p in table.prices}))
        raise ConfigError(f"reprice: no price for model {model!r} in {table.source} "
                          f"(known: {known}); add it to a pricing file")
    out = tasks.copy()
    out["cost_before"] = tasks.get("cost", math.nan)
    out["model"] = pd.Series(model, index=out.index, dtype="category")
    out["cost"] = table.cost(out["model"], out["tokens_in"], out["tokens_out"],
                             out.get("cached_tokens_in"))
    return out


def _read(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the pricing file: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
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
            for field in ("input", "output", "cached_input"):
                v = entry.get(field)
                if field == "cached_input" and v is None:
                    values.append(None)
                    continue
                if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                    problems.append(f"{where}.{field}: expected a number >= 0 (USD per 1K tokens), "
                                    f"got {v!r}")
                values.append(float(v) if isinstance(v, (int, float)) else math.nan)
            prices.append(Price(str(provider), str(model), values[0], values[1],
                                str(entry.get("note") or ""), values[2]))
    if problems:
        raise ConfigError(problems)
    return prices

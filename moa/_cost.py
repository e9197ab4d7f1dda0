"""What a run cost in US dollars: per-model list prices and the sum over a run's calls.

A call is priced from the tokens it reported and its model's price. A call that cannot be
priced (no price for its model, or no token counts) makes the cost partly unknown: it is
named as unknown, never counted as $0.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Protocol

from ._bounds import describe, safe_repr

__all__ = ("DEFAULT_PRICES", "PRICES_AS_OF", "Cost", "Price", "Prices", "cost")

_PER = 1_000_000  # prices are quoted per million tokens


@dataclass(frozen=True, slots=True)
class Price:
    """US dollars per million input tokens and per million output tokens."""

    input: float
    output: float

    def __post_init__(self) -> None:
        for name in ("input", "output"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(
                    f"Price({name}=...): a price must be a number of dollars per "
                    f"million tokens, not {describe(value)}"
                )
            if not math.isfinite(value) or value < 0:
                raise ValueError(
                    f"Price({name}=...): a price must be a finite number >= 0 "
                    f"dollars per million tokens, got {safe_repr(value)}"
                )
            # Stored as float so Price(1, 2) and Price(1.0, 2.0) print alike.
            object.__setattr__(self, name, float(value))


def _as_price(where: str, model: object, value: object) -> Price:
    if not isinstance(model, str) or not model:
        raise TypeError(f"{where}: model names must be non-empty str, not {describe(model)}")
    if isinstance(value, Price):
        return value
    if isinstance(value, (tuple, list)) and len(value) == 2:
        try:
            return Price(*value)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{where}: the price of {safe_repr(model)}: {exc}") from exc
    raise TypeError(
        f"{where}: the price of {safe_repr(model)} must be a moa.Price or an (input, output) "
        f"pair of dollars per million tokens, not {describe(value)}"
    )


_NO_PRICES: Mapping[str, Price] = MappingProxyType({})


class Prices(Mapping[str, Price]):
    """A price table: model name -> Price. Immutable; ``prices | {"my-model": (0.5, 1.5)}``
    (or ``| other_prices``) returns a new table with those entries added or replaced.

    Values may be given as a :class:`Price` or as an ``(input, output)`` pair of dollars per
    million tokens. Lookups are by exact model name.
    """

    __slots__ = ("_table",)

    def __init__(self, table: Mapping[str, Price | tuple[float, float]] = _NO_PRICES) -> None:
        if not isinstance(table, Mapping):
            raise TypeError(
                f"Prices(table): table must be a mapping of model name to Price or "
                f"(input, output), not {describe(table)}"
            )
        self._table: dict[str, Price] = {
            model: _as_price("Prices", model, value) for model, value in table.items()
        }

    # -- Mapping --------------------------------------------------------------------------------
    def __getitem__(self, model: str) -> Price:
        return self._table[model]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Prices):
            return self._table == other._table
        return NotImplemented

    def __hash__(self) -> int:
        return hash(frozenset(self._table.items()))

    def __repr__(self) -> str:
        body = ", ".join(f"{m!r}: ({p.input!r}, {p.output!r})" for m, p in self._table.items())
        return f"Prices({{{body}}})"

    # -- lookups --------------------------------------------------------------------------------
    def price(self, model: str) -> Price | None:
        """The price of ``model`` (exact name), or None when the table has none."""
        return self._table.get(model)

    def call_cost(
        self, model: str, input_tokens: int | None, output_tokens: int | None
    ) -> float | None:
        """Dollars for one call of ``model``; None when the model has no price or either
        token count is unknown."""
        price = self._table.get(model)
        if price is None or input_tokens is None or output_tokens is None:
            return None
        return (input_tokens * price.input + output_tokens * price.output) / _PER

    # -- building new tables --------------------------------------------------------------------
    def override(self, table: Mapping[str, Price | tuple[float, float]]) -> Prices:
        """A new table: these prices, with ``table``'s entries added or replacing them."""
        if not isinstance(table, Mapping):
            raise TypeError(
                f"Prices | ...: the right side must be a Prices or a mapping of model "
                f"name to Price or (input, output), not {describe(table)}"
            )
        return Prices({**self._table, **Prices(table)._table})

    def __or__(self, table: Mapping[str, Price | tuple[float, float]]) -> Prices:
        return self.override(table)

    def __ror__(self, table: Mapping[str, Price | tuple[float, float]]) -> Prices:
        # ``{...} | prices``: as with dicts, the right side wins.
        return Prices(table).override(self)

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> Prices:
        """The table in a JSON file: an object mapping each model name to ``[input, output]``
        or ``{"input": x, "output": y}``, in dollars per million tokens.

        A file that does not hold such a table raises ValueError naming the file and the entry.
        """
        where = os.fspath(path)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(
                f"{where}: a price table must be a JSON object "
                f'{{"model": [input, output], ...}}, not a JSON {type(data).__name__}'
            )
        table: dict[str, Price] = {}
        for model, entry in data.items():
            if isinstance(entry, list) and len(entry) == 2:
                args = entry
            elif isinstance(entry, dict) and set(entry) == {"input", "output"}:
                args = [entry["input"], entry["output"]]
            else:
                raise ValueError(
                    f"{where}: the entry {safe_repr(model)} must be [input, output] or "
                    f'{{"input": x, "output": y}} in dollars per million tokens, '
                    f"got {json.dumps(entry)}"
                )
            if not model:
                raise ValueError(f'{where}: model names must be non-empty, got ""')
            try:
                table[model] = Price(*args)
            except (TypeError, ValueError) as exc:
                # A bad value in a file is bad data whatever its type: one exception to catch.
                raise ValueError(f"{where}: the entry {safe_repr(model)}: {exc}") from None
        return cls(table)


#: When and where :data:`DEFAULT_PRICES` were taken from.
PRICES_AS_OF = (
    "approximate providers' list prices (OpenAI, Anthropic, Google, Groq, OpenRouter, "
    "Together), USD per million tokens, as of 2025"
)

#: Approximate list prices, in dollars per million (input, output) tokens, for the models this
#: package's README, examples and recipes name (see :data:`PRICES_AS_OF`). Prices change and
#: differ by provider and tier: for figures you rely on, pass your own table,
#: ``DEFAULT_PRICES | {"my-model": (0.5, 1.5)}`` or ``Prices.from_json("prices.json")``.
#: Generic names that do not say which model or provider ("llama-70b", "claude") have no price.
DEFAULT_PRICES = Prices(
    {
        # OpenAI
        "gpt-5-nano-2025-08-07": (0.05, 0.40),
        "gpt-5": (1.25, 10.0),
        "gpt-4o": (2.50, 10.0),
        "gpt-4o-mini": (0.15, 0.60),
        # Anthropic
        "claude-sonnet-4-5": (3.0, 15.0),
        # Google
        "gemini-2.5-flash": (0.30, 2.50),
        # Groq
        "llama-3.3-70b-versatile": (0.59, 0.79),
        "llama-3.1-8b-instant": (0.05, 0.08),
        "meta-llama/llama-4-scout-17b-16e-instruct": (0.11, 0.34),
        "qwen/qwen3-32b": (0.29, 0.59),
        # OpenRouter
        "qwen/qwen-2.5-72b-instruct": (0.12, 0.39),
        "meta-llama/llama-3.3-70b-instruct": (0.13, 0.40),
        "mistralai/mixtral-8x22b-instruct": (0.90, 0.90),
        # Together, including the models of Wang et al. (2024)'s Together MoA (moa.recipes)
        "Qwen/Qwen2.5-72B-Instruct-Turbo": (1.20, 1.20),
        "wizardlm-2-8x22b": (1.20, 1.20),
        "qwen1.5-110b-chat": (1.80, 1.80),
        "qwen1.5-72b-chat": (0.90, 0.90),
        "llama-3-70b-instruct": (0.90, 0.90),
        "mixtral-8x22b-instruct": (1.20, 1.20),
        "dbrx-instruct": (1.20, 1.20),
        # The embedded model runs on your own machine.
        "SmolLM2-135M-Instruct": (0.0, 0.0),
    }
)


def _dollars(amount: float) -> str:
    # Four significant digits below a dollar (a cheap run is a fraction of a cent), cents above;
    # never scientific notation.
    if amount == 0:
        return "$0"
    rounded = float(f"{amount:.4g}")
    if rounded >= 1:
        return f"${amount:,.2f}"
    digits = 3 - math.floor(math.log10(rounded))
    return "$" + f"{rounded:.{digits}f}".rstrip("0").rstrip(".")


@dataclass(frozen=True, slots=True)
class Cost:
    """What a run cost in US dollars.

    ``known`` sums the calls whose model has a price and whose token counts were reported.
    ``unknown`` names, sorted, the models of answered calls that could not be priced (no price
    in the table, or unknown token counts): those are shown as unknown, never as $0.
    ``by_model`` maps every model that answered to its dollars, or None when any of its calls
    could not be priced. ``cached_calls`` counts calls served from the cache (free this run).
    """

    known: float
    unknown: tuple[str, ...]
    by_model: Mapping[str, float | None]
    cached_calls: int = 0

    def __post_init__(self) -> None:
        if (
            isinstance(self.known, bool)
            or not isinstance(self.known, numbers.Real)
            or not math.isfinite(self.known)
            or self.known < 0
        ):
            raise ValueError(
                f"Cost(known=...): known must be a finite number of dollars >= 0, "
                f"got {self.known!r}"
            )
        object.__setattr__(self, "unknown", tuple(self.unknown))
        object.__setattr__(self, "by_model", MappingProxyType(dict(self.by_model)))

    @property
    def complete(self) -> bool:
        """Every answered call was priced."""
        return not self.unknown

    @property
    def total(self) -> float | None:
        """The run's dollars when every answered call was priced, else None."""
        return self.known if self.complete else None

    def __hash__(self) -> int:
        return hash((self.known, self.unknown, frozenset(self.by_model.items()), self.cached_calls))

    def plus(self, other: Cost) -> Cost:
        """The cost of both runs together: dollars added, unknown models united (a model
        unknown in either is unknown in the sum)."""
        if not isinstance(other, Cost):
            raise TypeError(f"Cost.plus(other): other must be a Cost, not {type(other).__name__}")
        by_model = dict(self.by_model)
        for m, d in other.by_model.items():
            have = by_model.get(m, 0.0)
            by_model[m] = None if d is None or have is None else have + d
        return Cost(
            self.known + other.known,
            tuple(sorted({*self.unknown, *other.unknown})),
            by_model,
            self.cached_calls + other.cached_calls,
        )

    __add__ = plus

    #: The cost of no run: the start of a sum, ``sum(costs, Cost.ZERO)``.
    ZERO: ClassVar[Cost]

    def __repr__(self) -> str:
        return (
            f"Cost(known={self.known!r}, unknown={self.unknown!r}, "
            f"by_model={dict(self.by_model)!r}, cached_calls={self.cached_calls!r})"
        )

    def __str__(self) -> str:
        """``$0.0042``; ``$0.0042 + unknown (model-x)``; ``unknown (model-x)`` when nothing
        priced cost anything, so an unknown cost never reads as $0."""
        if not self.unknown:
            return _dollars(self.known)
        unknown = f"unknown ({', '.join(self.unknown)})"
        return unknown if self.known == 0 else f"{_dollars(self.known)} + {unknown}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (an unknown amount is null)."""
        return {
            "known": self.known,
            "total": self.total,
            "unknown": list(self.unknown),
            "by_model": dict(self.by_model),
            "cached_calls": self.cached_calls,
        }


Cost.ZERO = Cost(0.0, (), {})


class Spent(Protocol):
    """What a cost reads of one call (a :class:`~moa.CallRecord`): costs depend on records,
    never records on costs."""

    @property
    def model(self) -> str: ...
    @property
    def input_tokens(self) -> int | None: ...
    @property
    def output_tokens(self) -> int | None: ...
    @property
    def cached(self) -> bool: ...
    @property
    def ok(self) -> bool: ...
    @property
    def hedges(self) -> tuple[Any, ...]: ...


class Calls(Protocol):
    """What a cost reads of a run (a :class:`~moa.History`): its calls."""

    @property
    def calls(self) -> tuple[Spent, ...]: ...


def _answered(calls: Iterable[Spent]) -> Iterator[Spent]:
    # Every attempt that answered, hedges included. One that failed or was cancelled reported
    # no usage: its spend is unknown to moa, so it is left out (as the token totals do) rather
    # than making the whole cost unknown. Cached answers are included, to be counted as free.
    for call in calls:
        for attempt in (call, *call.hedges):
            if attempt.ok:
                yield attempt


def cost(history: Calls, prices: Mapping[str, Price | tuple[float, float]] | None = None) -> Cost:
    """What the run in ``history`` cost at ``prices`` (:data:`DEFAULT_PRICES` when None).

    Counted as the token totals are: every call and hedge that answered. Failed and cancelled
    attempts reported no usage and are left out. A cached answer costs nothing this run.
    """
    calls = getattr(history, "calls", None)
    if not isinstance(calls, tuple):
        raise TypeError(f"cost(history): history must be a moa.History, not {describe(history)}")
    if prices is None:
        table = DEFAULT_PRICES
    elif isinstance(prices, Prices):
        table = prices
    elif isinstance(prices, Mapping):
        table = Prices(prices)
    else:
        raise TypeError(
            f"cost(prices=...): prices must be a moa.Prices, a mapping of model name "
            f"to Price or (input, output), or None, not {describe(prices)}"
        )
    known = 0.0
    by_model: dict[str, float | None] = {}
    cached = 0
    for call in _answered(calls):
        if call.cached:
            cached += 1
            by_model.setdefault(call.model, 0.0)
            continue
        dollars = table.call_cost(call.model, call.input_tokens, call.output_tokens)
        if dollars is None:
            by_model[call.model] = None
            continue
        known += dollars
        # One unpriced call makes its model's sum unknown for good.
        if call.model not in by_model or by_model[call.model] is not None:
            by_model[call.model] = (by_model.get(call.model) or 0.0) + dollars
    unknown = tuple(sorted(m for m, d in by_model.items() if d is None))
    return Cost(
        known=known, unknown=unknown, by_model=dict(sorted(by_model.items())), cached_calls=cached
    )

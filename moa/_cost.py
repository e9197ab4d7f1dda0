"""What a run cost in US dollars: price tables, and the sum over a run's calls.

A call is priced from the tokens it reported and its model's price. A call that cannot be
priced (no price for its model, or no token counts) makes the cost partly unknown: it is
named as unknown, never counted as $0.

Where the default prices come from. moa keeps no price list of its own: providers change
their prices every few months, and a copy here would be out of date by the next release.
:data:`DEFAULT_PRICES` holds the one price moa knows for certain, $0 for the embedded model
(SmolLM2-135M-Instruct, which runs on your own machine). Every other model is looked up in
genai-prices (https://github.com/pydantic/genai-prices), a price list its maintainers keep up
to date, when it is installed (``pip install 'moa-dsl[prices]'``). Without it, those models'
costs are unknown until you give their prices.

How moa uses genai-prices:

- Only the data bundled with the installed version, read offline. moa never starts its
  ``UpdatePrices``, the one part of it that uses the network. A program that starts it
  itself gets the prices it fetched.
- A model is found by its name, in any case (``gpt-5-nano-2025-08-07`` is listed as
  ``gpt-5-nano``). A call's record does not say which provider answered, so genai-prices
  infers it from the name, as it can for OpenAI, Anthropic, Google, Mistral, DeepSeek, xAI
  and others. It infers none from Groq's, OpenRouter's or Together's names
  (``llama-3.3-70b-versatile``, ``qwen/qwen-2.5-72b-instruct``): name the provider for
  those, ``Prices(DEFAULT_PRICES, genai_prices="groq")``.
- moa knows a call's input and output tokens, nothing more. A discount for cached input is
  not applied, so such a call is charged in full. A price with tiers (a higher rate past
  200,000 input tokens, say) is applied call by call, by that call's input tokens.
- It is imported the first time a model is missing from the table, never by ``import moa``.
"""

from __future__ import annotations

import importlib
import json
import math
import numbers
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType, ModuleType
from typing import Any, ClassVar, Protocol

from ._bounds import describe, safe_repr

__all__ = (
    "DEFAULT_PRICES",
    "EMBEDDED_MODELS",
    "PRICES_AS_OF",
    "Cost",
    "Price",
    "Prices",
    "cost",
    "price_table",
)

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


# -- genai-prices, the optional price list -------------------------------------------------------
# Reached through importlib and typed as Any, so that moa type-checks whether or not the extra
# is installed.
def _genai_prices() -> ModuleType | None:
    """The genai-prices package, or None where it is not installed. Tests replace this."""
    try:
        return importlib.import_module("genai_prices")
    except ModuleNotFoundError as exc:
        if exc.name != "genai_prices":
            raise  # installed but broken: say so rather than price nothing
        return None


def _check_source(value: object) -> bool | str:
    if isinstance(value, bool):
        return value
    if not isinstance(value, str):
        raise TypeError(
            f"Prices(genai_prices=...): genai_prices must be True, False or a genai-prices "
            f"provider id such as 'groq', not {describe(value)}"
        )
    if not value:
        raise ValueError(
            "Prices(genai_prices=...): a provider id must be non-empty, such as 'groq'"
        )
    library = _genai_prices()
    if library is not None:
        snapshot = library.data_snapshot
        if snapshot.find_provider_by_id(snapshot.get_snapshot().providers, value) is None:
            raise ValueError(
                f"Prices(genai_prices={value!r}): genai-prices lists no such provider "
                f"(ids such as 'openai', 'groq', 'openrouter', 'together')"
            )
    return value


@dataclass(frozen=True, slots=True)
class _Listed:
    """A model as genai-prices lists it, with its flat input and output prices."""

    library: Any  # the genai_prices module
    provider: Any  # genai_prices.types.Provider
    model: Any  # genai_prices.types.ModelInfo
    price: Price  # the first tier, where its price has tiers

    def call_cost(self, input_tokens: int, output_tokens: int) -> float:
        """Dollars for one call, by genai-prices' own rules (tiers, any fee per request)."""
        usage = self.library.Usage(input_tokens=input_tokens, output_tokens=output_tokens)
        return float(self.model.calc_price(usage, self.provider).total_price)


def _listed(source: bool | str, model: str) -> _Listed | None:
    """``model`` as genai-prices lists it (at ``source``'s provider when it names one), or None
    where it is not installed, does not list the model, or lists no token prices for it."""
    library = None if source is False else _genai_prices()
    if library is None:
        return None
    snapshot = library.data_snapshot.get_snapshot()
    provider_id = source if isinstance(source, str) else None
    try:
        provider, info = snapshot.find_provider_model(model, None, provider_id, None)
    except LookupError:
        return None
    prices = info.get_prices(datetime.now(UTC))
    flat = []
    for value in (prices.input_mtok, prices.output_mtok):
        if value is None:  # not priced by the token (an embedding or image model)
            return None
        flat.append(float(value.base if isinstance(value, library.types.TieredPrices) else value))
    return _Listed(library, provider, info, Price(*flat))


class Prices(Mapping[str, Price]):
    """A price table: model name -> Price. Immutable; ``prices | {"my-model": (0.5, 1.5)}``
    (or ``| other_prices``) returns a new table with those entries added or replaced.

    Values may be given as a :class:`Price` or as an ``(input, output)`` pair of dollars per
    million tokens. The table's own entries are looked up by exact model name, and win.

    ``genai_prices`` says whether :meth:`price` and :meth:`call_cost` look a model missing from
    the table up in genai-prices' bundled data (when that package is installed): False, no;
    True, yes, the provider inferred from the model's name; a genai-prices provider id such as
    ``"groq"``, yes, at that provider. Left out, it is ``table``'s own when ``table`` is a
    Prices, else False. The mapping itself (``[]``, ``in``, ``len``, iteration) holds only the
    table's own entries.
    """

    __slots__ = ("_source", "_table")
    _source: bool | str
    _table: dict[str, Price]

    def __init__(
        self,
        table: Mapping[str, Price | tuple[float, float]] = _NO_PRICES,
        *,
        genai_prices: bool | str | None = None,
    ) -> None:
        if not isinstance(table, Mapping):
            raise TypeError(
                f"Prices(table): table must be a mapping of model name to Price or "
                f"(input, output), not {describe(table)}"
            )
        if genai_prices is None:
            genai_prices = table._source if isinstance(table, Prices) else False
        self._source = _check_source(genai_prices)
        self._table = {model: _as_price("Prices", model, value) for model, value in table.items()}

    @property
    def genai_prices(self) -> bool | str:
        """Where a model missing from the table is looked up: False (nowhere), True
        (genai-prices, the provider inferred from the name) or a genai-prices provider id."""
        return self._source

    # -- Mapping --------------------------------------------------------------------------------
    def __getitem__(self, model: str) -> Price:
        return self._table[model]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Prices):
            return self._table == other._table and self._source == other._source
        return NotImplemented

    def __hash__(self) -> int:
        return hash((frozenset(self._table.items()), self._source))

    def __repr__(self) -> str:
        body = ", ".join(f"{m!r}: ({p.input!r}, {p.output!r})" for m, p in self._table.items())
        source = f", genai_prices={self._source!r}" if self._source is not False else ""
        return f"Prices({{{body}}}{source})"

    # -- lookups --------------------------------------------------------------------------------
    def price(self, model: str) -> Price | None:
        """The price of ``model``: the table's (exact name), else genai-prices' where
        :attr:`genai_prices` allows and it lists one (the first tier where the price has
        tiers), else None."""
        price = self._table.get(model)
        if price is not None:
            return price
        listed = _listed(self._source, model)
        return None if listed is None else listed.price

    def call_cost(
        self, model: str, input_tokens: int | None, output_tokens: int | None
    ) -> float | None:
        """Dollars for one call of ``model``; None when the model has no price (see
        :meth:`price`) or either token count is unknown. A genai-prices price with tiers is
        applied at the tier this call's input tokens reach."""
        if input_tokens is None or output_tokens is None:
            return None
        return self.pricer(model)(input_tokens, output_tokens)

    def pricer(self, model: str) -> Callable[[int, int], float | None]:
        """:meth:`call_cost` for ``model``, looked up once: ``pricer(input, output)`` in
        dollars, or None where the model has no price (a genai-prices lookup is ~100 us; a
        caller that prices many calls of one model keeps the pricer)."""
        price = self._table.get(model)
        if price is not None:
            return lambda tin, tout: (tin * price.input + tout * price.output) / _PER
        listed = _listed(self._source, model)
        if listed is None:
            return lambda tin, tout: None
        return listed.call_cost

    # -- building new tables --------------------------------------------------------------------
    def override(self, table: Mapping[str, Price | tuple[float, float]]) -> Prices:
        """A new table: these prices, with ``table``'s entries added or replacing them. It
        looks missing models up where ``table`` does when ``table`` is a Prices that does, else
        where these prices do."""
        if not isinstance(table, Mapping):
            raise TypeError(
                f"Prices | ...: the right side must be a Prices or a mapping of model "
                f"name to Price or (input, output), not {describe(table)}"
            )
        other = Prices(table)
        return Prices({**self._table, **other._table}, genai_prices=other._source or self._source)

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


#: Where :data:`DEFAULT_PRICES` come from (see the module's docstring).
PRICES_AS_OF = (
    "no dated table: $0 for the embedded model (it runs on your machine); any other model "
    "from the data bundled with the installed genai-prices, when it is installed"
)

#: Names the embedded model answers to (SmolLM2-135M-Instruct, run by
#: ``moa.clients.local_client`` on your own machine): the CLI's ``--model`` spellings and the
#: model file's name.
EMBEDDED_MODELS = (
    "SmolLM2-135M-Instruct",
    "SmolLM2-135M-Instruct.Q4_1",
    "smollm2",
    "smollm2-135m-instruct",
    "smollm2-135m-instruct.q4_1",
)

#: The default table: $0 for the embedded model's names, and every other model looked up in
#: genai-prices' bundled data when that package is installed (``pip install
#: 'moa-dsl[prices]'``); a model neither knows costs "unknown". Prices differ by provider and
#: tier and change: for figures you rely on, add your own,
#: ``DEFAULT_PRICES | {"my-model": (0.5, 1.5)}`` or ``DEFAULT_PRICES | Prices.from_json(path)``.
DEFAULT_PRICES = Prices(dict.fromkeys(EMBEDDED_MODELS, (0.0, 0.0)), genai_prices=True)


def price_table(where: str, prices: object) -> Prices:
    """The prices an entry point named ``where`` runs at: :data:`DEFAULT_PRICES` for None, a
    :class:`Prices` as given, a mapping of model to (input, output) $ per million tokens over
    the defaults; TypeError naming ``where`` for anything else."""
    if prices is None:
        return DEFAULT_PRICES
    if isinstance(prices, Prices):
        return prices
    if isinstance(prices, Mapping):
        return DEFAULT_PRICES | prices
    raise TypeError(
        f"{where}(prices=...): a moa.Prices, a mapping of model to (input, output) $ per "
        f"million tokens, or None, not {describe(prices)}"
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

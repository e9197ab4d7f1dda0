"""A budget that is never passed: :class:`Budget` holds the limits and what was spent against
them, and a layer around every try of every call keeps it.

Before a try is sent it is charged at its upper bound: one call, its messages' UTF-8 bytes (a
token is at least one byte) plus a chat template's few tokens per message, its ``max_tokens``
out, and those at the budget's prices in dollars. A try that would pass a limit is not sent: it
raises :class:`~moa.errors.BudgetExceededError`, which no retry repeats and no quorum absorbs.
After the reply the charge is settled at what the provider reported; a try that failed or was
cancelled keeps its whole charge (what it spent is unknown). What is used counts the calls in
flight at their most until they answer. So however many tries run at once,
what was charged never passes the budget, and what was spent is never more. Answers a cache
serves are free: they never reach this layer.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from time import monotonic
from typing import Any

import anyio

from ._bounds import describe
from ._client import Reply
from ._contract import Request
from ._cost import Prices, price_table
from .errors import BudgetExceededError

__all__ = ("Budget", "request_tokens", "with_budget")

#: Tokens a chat template adds around each message, at most (as :func:`moa.plan` counts).
MESSAGE_OVERHEAD = 8
#: The limits a budget may set, in the order they are shown.
LIMITS = ("usd", "calls", "input_tokens", "output_tokens", "seconds")
_SPENT = ("usd", "calls", "input_tokens", "output_tokens")


def request_tokens(req: Request) -> int:
    """A request's input tokens at most: its messages' bytes and the template's overhead."""
    total = 0
    for m in req.messages:
        text = m["content"]
        total += (len(text) if text.isascii() else len(text.encode())) + MESSAGE_OVERHEAD
    return total


def _checked(name: str, value: object) -> float | int | None:
    if value is None:
        return None
    whole = name in ("calls", "input_tokens", "output_tokens")
    kinds: tuple[type, ...] = (int,) if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        kind = "a whole number" if whole else "a number"
        raise TypeError(f"Budget({name}=...): {name} must be {kind} or None, not {describe(value)}")
    assert isinstance(value, (int, float))
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"Budget({name}=...): {name} must be above 0 and finite, got {value!r}")
    return value


class Budget:
    """The most that may be spent: ``usd`` (at ``prices``, default ``moa.DEFAULT_PRICES``),
    ``calls`` (tries: a retry or a hedge is a call too), ``input_tokens``, ``output_tokens``,
    and ``seconds`` from its first call (no try starts after that, and tries still running
    then are stopped). Each limit is None (none) or above 0; at least one is given.

    A Budget is shared by everything given it, as :class:`~moa.Limits` is: a run, a batch
    (``run_many``, ``as_completed``, ``moa batch``), several runs one after another.
    :meth:`used` and :meth:`left` say where it stands; ``run_dataset`` gives each Ray worker
    a share (:meth:`split`)."""

    __slots__ = (
        "_cap",
        "_costs",
        "_lock",
        "_seconds",
        "_start",
        "_tokens",
        "_usd",
        "_used",
        "limits",
        "prices",
    )

    def __init__(
        self,
        *,
        usd: float | None = None,
        calls: int | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        seconds: float | None = None,
        prices: Prices | Mapping[str, Any] | None = None,
    ) -> None:
        given = {"usd": usd, "calls": calls, "input_tokens": input_tokens}
        given |= {"output_tokens": output_tokens, "seconds": seconds}
        self.limits: dict[str, float | int | None] = {n: _checked(n, v) for n, v in given.items()}
        if all(v is None for v in self.limits.values()):
            raise ValueError(
                "Budget(): give at least one limit: usd, calls, input_tokens, output_tokens or "
                "seconds"
            )
        self.prices = price_table("Budget", prices)
        # Used, as [usd, calls, input tokens, output tokens]: what was spent, and what calls in
        # flight may spend at their most (settled when they answer). Only the limits given are
        # checked, and a request's bytes are counted only where a limit reads them.
        self._used = [0.0, 0.0, 0.0, 0.0]
        # Each limit as the most that may be used (a float's rounding allowed), inf for none.
        self._cap = tuple(
            math.inf if (limit := self.limits[name]) is None else float(limit) * (1 + 1e-12)
            for name in _SPENT
        )
        self._tokens = usd is not None or input_tokens is not None
        self._usd = usd is not None
        self._seconds = seconds
        # A model's price, looked up once: (input, output), or () to ask call_cost each time
        # (a tiered genai-prices price).
        self._costs: dict[str, tuple[float, ...]] = {}
        self._start: float | None = None
        self._lock = threading.Lock()  # runs on other threads' event loops may share it

    def __repr__(self) -> str:
        shown = [f"{n}={v!r}" for n, v in self.limits.items() if v is not None]
        return f"Budget({', '.join(shown)})"

    def __reduce__(self) -> Any:
        # A Budget sent to another process (a Ray worker) arrives unspent.
        return (_rebuilt, (self.limits, self.prices))

    # -- where it stands --------------------------------------------------------------------
    def used(self) -> dict[str, float]:
        """What was spent (dollars, calls, tokens; calls in flight at their most), and the
        seconds since its first call."""
        with self._lock:
            out = dict(zip(_SPENT, self._used, strict=True))
        out["seconds"] = 0.0 if self._start is None else monotonic() - self._start
        return out

    def left(self, used: Mapping[str, float] | None = None) -> dict[str, float | None]:
        """What is left of each limit (None: no limit), from ``used`` (now's, if None)."""
        if used is None:
            used = self.used()
        return {n: None if v is None else v - used[n] for n, v in self.limits.items()}

    def split(self, parts: int) -> list[Budget]:
        """``parts`` budgets, one per worker, that together never pass this one: each limit
        divided (whole limits rounded down, at least 1), the time limit kept."""
        share: dict[str, Any] = {}
        for name, value in self.limits.items():
            if value is None or name == "seconds":
                share[name] = value
            elif isinstance(value, int):
                share[name] = max(1, value // parts)
            else:
                share[name] = value / parts
        return [Budget(**share, prices=self.prices) for _ in range(parts)]

    # -- keeping it ---------------------------------------------------------------------------
    def deadline(self) -> float | None:
        """When no more try may run (monotonic seconds), once the clock started."""
        seconds = self.limits["seconds"]
        if seconds is None or self._start is None:
            return None
        return self._start + seconds

    def charge(self, req: Request) -> tuple[float, int, int]:
        """Hold ``req``'s upper bound, ``(dollars, input tokens, output tokens)``;
        BudgetExceededError where that would pass a limit. (On every try's path: kept lean.)"""
        start = self._start
        if start is None:
            start = self._start = monotonic()
        if self._seconds is not None and monotonic() >= start + self._seconds:
            raise BudgetExceededError(
                f"the budget's {self._seconds:g} s are up: no call starts after them",
                limit="seconds",
            )
        out = req.max_tokens
        tokens = request_tokens(req) if self._tokens else 0
        usd = self._dollars(req.model, tokens, out) if self._usd else 0.0
        with self._lock:
            used = self._used
            now = (used[0] + usd, used[1] + 1.0, used[2] + tokens, used[3] + out)
            cap = self._cap
            if now[0] > cap[0] or now[1] > cap[1] or now[2] > cap[2] or now[3] > cap[3]:
                raise self._refused(now, usd, tokens, out, req.model)
            used[:] = now
        return usd, tokens, out

    def _dollars(self, model: str, tin: int, tout: int) -> float:
        rate = self._costs.get(model)
        if rate is None:
            price = self.prices.get(model)  # the table's own: no tiers
            rate = self._costs[model] = (price.input, price.output) if price else ()
        if rate:
            return (tin * rate[0] + tout * rate[1]) / 1_000_000  # as Prices.call_cost
        cost = self.prices.call_cost(model, tin, tout)  # genai-prices, maybe tiered
        if cost is None:
            raise BudgetExceededError(
                f"no price for model {model!r}: a budget in dollars cannot be kept; give "
                "Budget(prices=...) a price for it",
                limit="usd",
            )
        return cost

    def _refused(
        self, now: tuple[float, ...], usd: float, tokens: int, out: int, model: str
    ) -> BudgetExceededError:
        i = next(i for i, cap in enumerate(self._cap) if now[i] > cap)
        name, limit, more = _SPENT[i], self.limits[_SPENT[i]], (usd, 1, tokens, out)[i]
        return BudgetExceededError(
            f"the budget's {name.replace('_', ' ')} would pass {limit:g} with this call to "
            f"{model!r} (up to {more:g} more; {self._used[i]:g} used, calls in flight counted "
            "at their most): it is not sent",
            limit=name,
        )

    def settle(self, want: tuple[float, int, int], reply: Any, model: str) -> None:
        """Release a charge and spend what the reply reports (the whole charge where it
        reports nothing, or there is no reply: a failed or cancelled try)."""
        if type(reply) not in _REPLIES or len(reply) < 3:
            return  # no reply (failed or cancelled): what it spent is unknown, the charge stays
        got_in, got_out = reply[1], reply[2]
        if type(got_in) is not int or type(got_out) is not int:
            return
        held_usd, held_in, held_out = want
        usd = held_usd
        if self._usd:
            try:
                usd = self._dollars(model, got_in, got_out)
            except BudgetExceededError:  # priced at the charge, so never here
                pass
        with self._lock:
            used = self._used
            used[0] += usd - held_usd
            used[2] += got_in - held_in
            used[3] += got_out - held_out


_REPLIES = (tuple, Reply)


def _rebuilt(limits: dict[str, Any], prices: Prices) -> Budget:
    return Budget(**limits, prices=prices)


def with_budget(budget: Budget) -> Callable[[Any], Any]:
    """The attempt layer: each try charged before it is sent and settled after; with a time
    limit, stopped at the budget's deadline."""
    charge, settle = budget.charge, budget.settle

    def layer(inner: Any) -> Any:
        if budget.limits["seconds"] is None:

            async def attempt(req: Request, tap: Any) -> Any:
                want = charge(req)
                try:
                    reply = await inner(req, tap)
                except BaseException:
                    settle(want, None, req.model)
                    raise
                settle(want, reply, req.model)
                return reply

            return attempt

        async def timed(req: Request, tap: Any) -> Any:
            want = charge(req)
            reply = None
            try:
                ends = budget.deadline()
                assert ends is not None  # the clock started with this charge
                with anyio.CancelScope(deadline=anyio.current_time() + ends - monotonic()) as scope:
                    reply = await inner(req, tap)
                if scope.cancelled_caught:
                    raise BudgetExceededError(
                        f"the budget's {budget.limits['seconds']:g} s ran out while the call to "
                        f"{req.model!r} was in flight: it was stopped",
                        limit="seconds",
                    )
                return reply
            finally:
                settle(want, reply, req.model)

        return timed

    return layer

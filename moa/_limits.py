"""Per-model limits: calls in flight, requests per minute, tokens per minute, and pauses.

A provider limits each model on its own, so moa does too: a 429's Retry-After pauses that
model's gate, and every other model keeps going. ``ModelLimit`` is a value (what the limit
is); ``Limits`` is the run-time state shared by every run that is given it.

No maintained anyio-compatible rate limiter fits (aiolimiter is asyncio-only; the token
buckets on the package index are thread- or asyncio-bound), so this is a small token bucket
on anyio's clock and primitives: it runs on asyncio and trio alike.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Mapping
from dataclasses import InitVar, dataclass

import anyio
import anyio.lowlevel

from ._bounds import check_int, check_number, safe_repr
from ._pool import Slots

__all__ = ("Limits", "ModelLimit")


@dataclass(frozen=True, slots=True)
class ModelLimit:
    """How hard one model may be driven: ``max_concurrency`` calls in flight, ``rpm``
    requests and ``tpm`` tokens (input + output) per minute. None means no limit of that
    kind. ``concurrency=`` is the old name of ``max_concurrency`` (deprecated)."""

    max_concurrency: int | None = None
    rpm: float | None = None
    tpm: float | None = None
    concurrency: InitVar[int | None] = None

    def __post_init__(self, concurrency: int | None) -> None:
        if concurrency is not None:
            warnings.warn(
                "ModelLimit(concurrency=...) is max_concurrency=... now; the old name goes in "
                "the next release",
                DeprecationWarning,
                stacklevel=3,
            )
            if self.max_concurrency is not None:
                raise TypeError("ModelLimit: give max_concurrency= (concurrency= is its old name)")
            object.__setattr__(self, "max_concurrency", concurrency)
        check_int("ModelLimit", "max_concurrency", self.max_concurrency, 1, sys.maxsize, none=True)
        check_number("ModelLimit", "rpm", self.rpm, above=True, none=True)
        check_number("ModelLimit", "tpm", self.tpm, above=True, none=True)


class _Bucket:
    """A token bucket refilled at ``per_minute / 60`` per second, holding at most a minute's
    worth. Takers queue in order; usage learned after the fact may drive it below zero, and
    later takers then wait for the debt to clear."""

    __slots__ = ("capacity", "level", "lock", "rate", "stamp")

    def __init__(self, per_minute: float) -> None:
        self.rate = per_minute / 60.0
        # At least one whole request fits, or a limit under 1 a minute would run at 1 a minute.
        self.capacity = max(float(per_minute), 1.0)
        self.level = self.capacity
        self.stamp = anyio.current_time()
        self.lock = anyio.Lock()

    def _refill(self) -> None:
        now = anyio.current_time()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    async def take(self, amount: float) -> float:
        """Wait for ``amount`` and take it; return what was taken (at most the capacity: a
        call larger than a minute's budget still runs once the bucket is full)."""
        amount = min(amount, self.capacity)
        async with self.lock:
            while True:
                self._refill()
                # Within a rounding error of enough is enough: refills in small steps can
                # leave it 1e-16 short, and a sleep that short cannot move the clock.
                if self.level >= amount - 1e-9 * max(1.0, amount):
                    self.level -= amount
                    return amount
                await anyio.sleep((amount - self.level) / self.rate)

    def charge(self, amount: float) -> None:
        """Settle a guess: a positive amount is debt, a negative one a refund."""
        self._refill()
        self.level = min(self.capacity, self.level - amount)


class _Gate:
    """One model's run-time limit state."""

    __slots__ = ("limiter", "paused_until", "requests", "tokens")

    def __init__(self, limit: ModelLimit) -> None:
        self.limiter = Slots(limit.max_concurrency) if limit.max_concurrency else None
        self.requests = _Bucket(limit.rpm) if limit.rpm else None
        self.tokens = _Bucket(limit.tpm) if limit.tpm else None
        self.paused_until = 0.0

    async def _unpaused(self) -> None:
        while (wait := self.paused_until - anyio.current_time()) > 0:
            await anyio.sleep(wait)

    async def enter(self, estimate: int) -> int:
        """Wait until the model may take one more call; return the tokens charged for it."""
        await self._unpaused()
        if self.limiter is not None:
            await self.limiter.acquire()
        try:
            if self.requests is not None:
                await self.requests.take(1)
            charged = int(await self.tokens.take(estimate)) if self.tokens is not None else estimate
            # A pause that began while this call queued holds it too.
            await self._unpaused()
        except BaseException:
            if self.limiter is not None:
                self.limiter.release()
            raise
        return charged

    def leave(self, charged: int, used: int | None) -> None:
        if self.limiter is not None:
            self.limiter.release()
        if self.tokens is not None and used is not None:
            self.tokens.charge(used - charged)

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, anyio.current_time() + seconds)


class Limits:
    """Per-model limits shared by every run given this object (``run(..., limits=...)``,
    ``run_many`` shares one across its runs). ``per_model`` maps a model name to its
    ``ModelLimit``; ``default`` applies to every other model (None: unlimited)."""

    def __init__(
        self,
        per_model: Mapping[str, ModelLimit] | None = None,
        *,
        default: ModelLimit | None = None,
    ) -> None:
        if per_model is not None and not isinstance(per_model, Mapping):
            raise TypeError(
                f"Limits(per_model): per_model must be a mapping of model name to "
                f"moa.ModelLimit, e.g. {{'gpt-4o': ModelLimit(rpm=500)}}, not "
                f"{type(per_model).__name__}"
            )
        per_model = dict(per_model or {})
        for name, limit in per_model.items():
            if not isinstance(name, str) or not name:
                raise TypeError(f"Limits: model names must be non-empty str, got {safe_repr(name)}")
            if not isinstance(limit, ModelLimit):
                raise TypeError(
                    f"Limits: the limit for {name!r} must be a moa.ModelLimit, "
                    f"got {safe_repr(limit)}"
                )
        if default is not None and not isinstance(default, ModelLimit):
            raise TypeError(
                f"Limits(default=...): default must be a moa.ModelLimit or None, "
                f"got {safe_repr(default)}"
            )
        self.per_model = per_model
        self.default = default
        self._gates: dict[str, _Gate | None] = {}
        self._loop: object = None  # the event loop the gates belong to, once one is made

    def __repr__(self) -> str:
        try:
            now = anyio.current_time()
        except Exception:  # no event loop running: nothing can be paused now
            now = float("inf")
        paused = [m for m, g in self._gates.items() if g and g.paused_until > now]
        return f"<Limits models={sorted(self.per_model)} default={self.default} paused={paused}>"

    def gate(self, model: str) -> _Gate | None:
        """The model's gate, made on first use (inside the event loop), or None if unlimited.
        A Limits belongs to the event loop that first used it (:meth:`claim`): its locks and
        clock are that loop's."""
        try:
            return self._gates[model]
        except KeyError:
            limit = self.per_model.get(model, self.default)
            gate = self._gates[model] = _Gate(limit) if limit is not None else None
            return gate

    def claim(self) -> None:
        """Check, at the start of a run (inside its event loop), that this Limits is this
        loop's: the first loop to use it owns it."""
        now = anyio.lowlevel.current_token()
        if self._loop is None:
            self._loop = now
        elif self._loop != now:
            raise RuntimeError(
                "this moa.Limits was first used in another event loop, and its locks and "
                "clock belong to that one; make a Limits for each event loop (to share a "
                "provider's budget among processes, split it: moa.ray.split_limits)"
            )

"""Transform steps: functions of the current responses and the run's RNG, no model calls.

Every random draw comes from the RNG the executor hands in (seeded by ``run(..., seed=...)``);
the global ``random`` module is never touched.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from ._bounds import MAX_COUNT, describe, shown
from ._pipeline import Step

__all__ = ("Dropout", "Filter", "Map", "Sample", "Shuffle", "Take", "Transform")


class Transform(Step):
    """A step that rewrites the list of responses without calling a model.

    The short way to write one is :func:`moa.transform` on a function. A subclass is a
    ``@dataclass(frozen=True, slots=True, repr=False)`` whose fields are its arguments
    (``_positional`` of them shown positionally in its repr) and implements :meth:`apply`.
    """

    __slots__ = ()

    def apply(self, responses: list[str], rng: random.Random) -> list[str]:
        """The new responses, a list of str. ``responses`` is the step's own copy; every random
        draw must come from ``rng`` (the run's generator, seeded by ``run(..., seed=...)``)."""
        raise NotImplementedError


def _check_count(step: str, n: object) -> None:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{step}(n): n must be an int >= 0, not {describe(n)}")
    if n < 0:
        raise ValueError(f"{step}(n): n must be >= 0, got {shown(n)}")
    if n > MAX_COUNT:
        raise ValueError(f"{step}(n): n must be <= {MAX_COUNT:,}, got {shown(n)}")


def _check_callable(step: str, fn: object, returns: str) -> None:
    if not callable(fn):
        raise TypeError(
            f"{step}(fn): fn must be a callable taking a str and returning {returns}, "
            f"not {describe(fn)}"
        )


@dataclass(frozen=True, slots=True, repr=False)
class Shuffle(Transform):
    """Put the responses in a random order (counters an aggregator's position bias)."""

    def apply(self, responses: list[str], rng: random.Random) -> list[str]:
        return rng.sample(responses, len(responses))


@dataclass(frozen=True, slots=True, repr=False)
class Dropout(Transform):
    """Drop each response with probability ``rate``, keeping order. Never empties a non-empty
    list: when every response would be dropped, one chosen at random is kept."""

    rate: float
    _positional: ClassVar[int] = 1

    def __post_init__(self) -> None:
        if isinstance(self.rate, bool) or not isinstance(self.rate, (int, float)):
            raise TypeError(f"Dropout(rate): rate must be a number, not {describe(self.rate)}")
        if not 0 <= self.rate <= 1:
            raise ValueError(f"Dropout(rate): rate must be between 0 and 1, got {self.rate}")

    def apply(self, responses: list[str], rng: random.Random) -> list[str]:
        if self.rate == 0 or not responses:
            return list(responses)
        kept = [r for r in responses if rng.random() >= self.rate]
        if not kept:
            kept = [rng.choice(responses)]
        return kept


@dataclass(frozen=True, slots=True, repr=False)
class Sample(Transform):
    """A random subset of ``min(n, len(responses))`` responses, in random order."""

    n: int
    _positional: ClassVar[int] = 1

    def __post_init__(self) -> None:
        _check_count("Sample", self.n)

    def apply(self, responses: list[str], rng: random.Random) -> list[str]:
        return rng.sample(responses, min(self.n, len(responses)))


@dataclass(frozen=True, slots=True, repr=False)
class Take(Transform):
    """The first ``n`` responses."""

    n: int
    _positional: ClassVar[int] = 1

    def __post_init__(self) -> None:
        _check_count("Take", self.n)

    def apply(self, responses: list[str], rng: random.Random) -> list[str]:
        return responses[: self.n]


@dataclass(frozen=True, slots=True, repr=False)
class Filter(Transform):
    """Keep the responses for which ``fn(text)`` is true, in order."""

    fn: Callable[[str], object]
    _positional: ClassVar[int] = 1

    def __post_init__(self) -> None:
        _check_callable("Filter", self.fn, "a bool")

    def apply(self, responses: list[str], rng: random.Random) -> list[str]:
        return [r for r in responses if self.fn(r)]


@dataclass(frozen=True, slots=True, repr=False)
class Map(Transform):
    """Replace each response by ``fn(text)``; ``fn`` must return a str."""

    fn: Callable[[str], str]
    _positional: ClassVar[int] = 1

    def __post_init__(self) -> None:
        _check_callable("Map", self.fn, "a str")

    def apply(self, responses: list[str], rng: random.Random) -> list[str]:
        out = [self.fn(r) for r in responses]
        for value in out:
            if not isinstance(value, str):
                raise TypeError(f"{self!r}: fn must return a str, returned {describe(value)}")
        return out

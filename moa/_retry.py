"""The retry policy: how often and how long a failed call is tried again, on tenacity and
anyio's clock."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

from ._bounds import MAX_CALLS, check_int, check_number, safe_repr
from .errors import RetryAfterTooLongError

__all__ = ("DEFAULT_RETRY", "Retry", "retry_after")


# Jitter only moves when a retry happens, never what a run returns; it has its own generator
# so the global ``random`` module is never touched.
_jitter = random.Random()


@dataclass(frozen=True, slots=True)
class Retry:
    """How a failed call is retried: up to ``attempts`` tries in all, waiting
    ``initial * 2**k`` seconds (at most ``max_wait``) plus up to ``jitter`` times that, at
    random, between tries. An exception is retried when it is an instance of ``retry_on``
    and does not say ``retryable = False``; a ``retry_after`` attribute (seconds, as a
    provider's 429 sends it) is the least wait, up to ``max_retry_after`` seconds: a provider
    asking for longer fails the call at once with :class:`~moa.errors.RetryAfterTooLongError`
    (it is not slept through, and a model's ``Limits`` are not paused for it).

    ``Retry(attempts=1)`` never retries. The default is 3 attempts starting near 0.5 s.
    """

    attempts: int = 3
    initial: float = 0.5
    max_wait: float = 8.0
    jitter: float = 0.5
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    max_retry_after: float = 120.0

    def __post_init__(self) -> None:
        check_int("Retry", "attempts", self.attempts, 1, MAX_CALLS)
        for name in ("initial", "max_wait", "jitter", "max_retry_after"):
            check_number("Retry", name, getattr(self, name))
        if isinstance(self.retry_on, type):
            object.__setattr__(self, "retry_on", (self.retry_on,))
        if not all(isinstance(t, type) and issubclass(t, BaseException) for t in self.retry_on):
            raise TypeError(
                f"Retry(retry_on=...): retry_on must be exception types, got {safe_repr(self.retry_on)}"
            )

    def should_retry(self, exc: BaseException) -> bool:
        """Whether ``exc`` may be retried under this policy (attempts left aside)."""
        return (
            isinstance(exc, self.retry_on)
            and getattr(exc, "retryable", True) is not False
            and self.too_long(exc) is None
        )

    def too_long(self, exc: BaseException) -> RetryAfterTooLongError | None:
        """The error to fail with when ``exc`` asks to wait longer than ``max_retry_after``."""
        after = retry_after(exc)
        if after is None or after <= self.max_retry_after:
            return None
        too_long = RetryAfterTooLongError(
            getattr(exc, "model", "?"), after, self.max_retry_after, exc
        )
        too_long.__cause__ = exc
        return too_long

    def wait(self, attempt: int, exc: BaseException | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        base = min(self.max_wait, self.initial * 2.0 ** (attempt - 1))
        delay = base + self.jitter * base * _jitter.random()
        after = retry_after(exc)
        if after is not None and after > delay:
            delay = min(after, self.max_retry_after)
        return delay

    def _tenacity_wait(self, state: Any) -> float:
        return self.wait(state.attempt_number, state.outcome.exception() if state.outcome else None)

    def retrying(self, before_sleep: Callable[[Any], Any] | None = None) -> AsyncRetrying:
        """A tenacity ``AsyncRetrying`` that carries out this policy on anyio's clock;
        ``before_sleep(retry_state)`` is called before each wait."""
        return AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=self._tenacity_wait,
            retry=retry_if_exception(self.should_retry),
            sleep=anyio.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )


DEFAULT_RETRY = Retry()


def retry_after(exc: BaseException | None) -> float | None:
    """The seconds ``exc`` asks to wait before a retry (its ``retry_after``), or None when it
    asks nothing usable (missing, not a number, NaN, or not above 0)."""
    after = getattr(exc, "retry_after", None)
    if isinstance(after, bool) or not isinstance(after, (int, float)) or not after > 0:
        return None
    return float(after)

"""A run's options as one value: :class:`RunOptions`, checked once where it is made and handed
whole to :func:`moa._calls.compose`.

Every entry point (``run``, ``run_stream``, ``run_many``, ``as_completed``, ``run_dataset``, the
command line) takes the same options, as ``options=RunOptions(...)`` or as keywords, or both
(the keywords replace those fields). A new option is one field and its check here, one line
in :class:`RunKwargs`, and the layer in ``compose`` that carries it out.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from typing import Any, TypedDict

from ._bounds import check_int, check_seconds, check_seed, describe
from ._budget import Budget
from ._cache import Cache
from ._events import EventHandler
from ._limits import Limits
from ._retry import DEFAULT_RETRY, Retry
from ._trace import Tracing

__all__ = ("RunKwargs", "RunOptions")


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOptions:
    """How a pipeline runs, whatever runs it.

    ``seed`` seeds every random step and the model's own sampling where the client takes a
    seed (drawn and recorded in history when None). ``max_concurrency`` caps the calls in
    flight in one process: one run's, or one batch's across all its prompts (one Ray
    worker's). ``timeout`` bounds each call attempt in seconds. ``retry`` is the policy for
    failed calls. ``limits`` holds per-model limits, shared by every run given the same
    object. ``hedge_after`` starts a duplicate of a call unanswered after that many seconds;
    the first answer wins. ``cache`` serves answers it holds and stores new ones.
    ``on_event(event)`` is called as steps start and calls finish or retry; it must be quick
    and must not raise. ``budget`` (a :class:`~moa.Budget`, shared by every run given it) is
    never passed: a call that could pass it is not made. ``deadline`` is the seconds each
    round of a step that can go on without some of its calls (``Propose``, ``Synthesize``,
    ``Refine``) waits for them, where the step sets none of its own: at the deadline it goes
    on with the replies it has (if ``min_success`` arrived) and is marked degraded.
    ``tracing`` (a :class:`~moa.Tracing`) says how the run reports OpenTelemetry spans; None
    traces with the defaults whenever the application has configured a tracer provider.
    """

    seed: int | None = None
    max_concurrency: int | None = None
    timeout: float | None = None
    retry: Retry = DEFAULT_RETRY
    limits: Limits | None = None
    hedge_after: float | None = None
    cache: Cache | None = None
    on_event: EventHandler | None = None
    budget: Budget | None = None
    deadline: float | None = None
    tracing: Tracing | None = None

    def __post_init__(self) -> None:
        if self.retry is None:  # retry=None: the default policy
            object.__setattr__(self, "retry", DEFAULT_RETRY)
        if not self._plainly_valid():
            self._check()

    def _plainly_valid(self) -> bool:
        """The common case, decided fast (every run makes a RunOptions): every field None or
        plainly of its kind; anything else goes through :meth:`_check`, the rules."""
        seed, cap, timeout, hedge = self.seed, self.max_concurrency, self.timeout, self.hedge_after
        return (
            (seed is None or (type(seed) is int and -_SEED_LIMIT <= seed < _SEED_LIMIT))
            and (cap is None or (type(cap) is int and 0 < cap <= sys.maxsize))
            and (timeout is None or (type(timeout) in _NUMBERS and 0 < timeout <= _FLOAT_MAX))
            and (hedge is None or (type(hedge) in _NUMBERS and 0 < hedge <= _FLOAT_MAX))
            and type(self.retry) is Retry
            and (self.limits is None or type(self.limits) is Limits)
            and (self.cache is None or type(self.cache) is Cache)
            and self.on_event is None
            and (self.budget is None or type(self.budget) is Budget)
            and self.deadline is None
            and self.tracing is None
        )

    def _check(self) -> None:
        check_seed("RunOptions", "seed", self.seed)
        check_int("RunOptions", "max_concurrency", self.max_concurrency, 1, sys.maxsize, none=True)
        check_seconds("RunOptions", "timeout", self.timeout)
        check_seconds("RunOptions", "hedge_after", self.hedge_after)
        check_seconds("RunOptions", "deadline", self.deadline)
        _instance("retry", self.retry, Retry, "a moa.Retry policy or None")
        _instance("limits", self.limits, Limits, "a moa.Limits or None", none=True)
        _instance("cache", self.cache, Cache, "a moa.Cache or None", none=True)
        _instance("budget", self.budget, Budget, "a moa.Budget or None", none=True)
        _instance("tracing", self.tracing, Tracing, "a moa.Tracing or None", none=True)
        if self.on_event is not None and not callable(self.on_event):
            raise TypeError(
                "RunOptions(on_event=...): on_event must be a callable on_event(event) or "
                f"None, not {describe(self.on_event)}"
            )

    def replace(self, **changes: Any) -> RunOptions:
        """These options with ``changes`` made (checked as when made)."""
        return dataclasses.replace(self, **changes) if changes else self

    @classmethod
    def of(cls, where: str, options: object, changes: dict[str, Any]) -> RunOptions:
        """What an entry point named ``where`` runs with: ``options`` (a RunOptions, or None
        for the defaults) with the keyword ``changes`` made. A bad option raises TypeError or
        ValueError naming ``where``, as ``run(timeout=...)``."""
        if options is None:
            if not changes:
                return _DEFAULT
            options = _DEFAULT
        elif not isinstance(options, RunOptions):
            raise TypeError(
                f"{where}(options=...): options must be a moa.RunOptions or None, "
                f"not {describe(options)}"
            )
        unknown = sorted(set(changes) - _FIELDS)
        if unknown:
            raise TypeError(_unknown(where, unknown[0]))
        try:
            return RunOptions(**changes) if options is _DEFAULT else options.replace(**changes)
        except (TypeError, ValueError) as exc:
            raise type(exc)(str(exc).replace("RunOptions(", f"{where}(", 1)) from None


class RunKwargs(TypedDict, total=False):
    """:class:`RunOptions`' fields as keyword arguments of an entry point (its static types)."""

    seed: int | None
    max_concurrency: int | None
    timeout: float | None
    retry: Retry | None
    limits: Limits | None
    hedge_after: float | None
    cache: Cache | None
    on_event: EventHandler | None
    budget: Budget | None
    deadline: float | None
    tracing: Tracing | None


def _instance(name: str, value: object, kind: type, rule: str, none: bool = False) -> None:
    if value is None and none:
        return
    if not isinstance(value, kind):
        raise TypeError(f"RunOptions({name}=...): {name} must be {rule}, not {describe(value)}")


def _unknown(where: str, name: str) -> str:
    import difflib

    close = difflib.get_close_matches(name, sorted(_FIELDS), n=1)
    hint = (
        f"; did you mean {close[0]}=?"
        if close
        else f"; the options are {', '.join(sorted(_FIELDS))}"
    )
    return f"{where}() got an unexpected keyword argument {name!r}{hint}"


_SEED_LIMIT = 2**63
_NUMBERS = (int, float)
_FLOAT_MAX = sys.float_info.max  # finite: an int past it, or inf, is not
_FIELDS = frozenset(f.name for f in dataclasses.fields(RunOptions))
_DEFAULT = RunOptions()

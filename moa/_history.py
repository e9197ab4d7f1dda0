"""Immutable records of a run: one per call, one per step, and the totals.

Timing fields (``latency``, ``duration``, ``wall_time``) are excluded from ``==``, so two runs
with the same seed and the same client outputs compare equal whatever the clock said.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from ._cost import Cost, Prices, cost
from ._response import Confidence

__all__ = ("CallRecord", "History", "StepRecord")


class Asked(Protocol):
    """What a record reads of the request a call made (a :class:`~moa.steps.Request`)."""

    @property
    def model(self) -> str: ...
    @property
    def messages(self) -> tuple[Mapping[str, str], ...]: ...
    @property
    def temp(self) -> float: ...
    @property
    def max_tokens(self) -> int: ...
    @property
    def agent(self) -> str | None: ...
    @property
    def seed(self) -> int | None: ...


_SEED_CALL_NAMES = {"in_tokens": "input_tokens", "out_tokens": "output_tokens", "time": "latency"}

_REQUIRED = object()
_NUMBER = (int, float)


def _get(
    d: Any,
    key: str,
    kinds: type | tuple[type, ...],
    where: str,
    default: Any = _REQUIRED,
    optional: bool = False,
) -> Any:
    """``d[key]``, checked to be one of ``kinds`` (None allowed when ``optional``): a saved
    history from a file is input, and a malformed one is a ValueError naming the field."""
    if not isinstance(d, Mapping):
        raise ValueError(f"not a moa history: {where} must be an object, got {type(d).__name__}")
    if key not in d:
        if default is _REQUIRED:
            raise ValueError(f"not a moa history: {where} has no {key!r}")
        return default
    value = d[key]
    if value is None and optional:
        return None
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    # bool is an int to isinstance, but true/false is not a count or a number here
    if not isinstance(value, kinds) or (type(value) is bool and bool not in kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise ValueError(
            f"not a moa history: {where}.{key} must be {names}"
            f"{' or null' if optional else ''}, got {type(value).__name__}"
        )
    return value


def _conversation(d: Any) -> tuple[Mapping[str, str], ...]:
    turns = _get(d, "conversation", list, "history", [])
    out = []
    for i, m in enumerate(turns):
        where = f"history.conversation[{i}]"
        out.append({"role": _get(m, "role", str, where), "content": _get(m, "content", str, where)})
    return tuple(out)


def _confidence(d: Any, where: str) -> Confidence | None:
    if d is None:
        return None
    at = f"{where}.confidence"
    try:
        return Confidence(_get(d, "logprob_sum", _NUMBER, at), _get(d, "tokens", int, at))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not a moa history: {at}: {exc}") from None


def _strings(d: Any, key: str, where: str) -> tuple[str, ...]:
    items = _get(d, key, list, where)
    if not all(isinstance(x, str) for x in items):
        raise ValueError(f"not a moa history: {where}.{key} must be a list of str")
    return tuple(items)


_STEP_KEYS = (
    "step",
    "outputs",
    "llm_calls",
    "step_time",
    "calls",
    "notes",
    "path",
    "inputs",
    "kind",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class CallRecord:
    """One model call, after its retries. ``text`` is None and ``error`` says why when it failed.

    ``input_tokens``/``output_tokens`` are None when the provider did not report them.
    ``cancelled`` marks a call stopped because its step had its quorum (its spend is unknown to
    moa). ``hedges`` holds the duplicate attempts started when this call was slow to answer:
    the loser of each race, cancelled or failed, with whatever tokens it reported. ``cached``
    marks an answer served from a :class:`~moa.Cache`: its tokens are what the stored answer
    cost when it was made; this run spent nothing on it. ``agent`` is the label of the
    :class:`~moa.Agent` that made the call (None for a bare model name); ``seed`` the sampling
    seed the client was given (None when it takes none); ``confidence`` the model's
    :class:`~moa.Confidence` in the reply, its tokens' log-probabilities (None when the client
    gave none).
    """

    model: str
    messages: tuple[Mapping[str, str], ...]
    temp: float
    max_tokens: int
    text: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    attempts: int = 1
    error: str | None = None
    latency: float = field(default=0.0, compare=False)
    cancelled: bool = False
    hedges: tuple[CallRecord, ...] = ()
    cached: bool = False
    agent: str | None = None
    seed: int | None = None
    confidence: Confidence | None = None

    @property
    def ok(self) -> bool:
        """The call answered: not failed, not cancelled."""
        return self.error is None and not self.cancelled

    # mixture-llm's per-call dict keys, so ``call["in_tokens"]`` keeps working.
    def __getitem__(self, key: str) -> Any:
        if key in self:
            return getattr(self, _SEED_CALL_NAMES.get(key, key))
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        # As mixture-llm's dicts: "error" is there only when the call failed.
        if key == "error":
            return self.error is not None
        return isinstance(key, str) and (key in _SEED_CALL_NAMES or key in CallRecord.__slots__)

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default

    @classmethod
    def asked(cls, request: Asked, **fields: Any) -> CallRecord:
        """The record of a call that asked ``request`` (a :class:`~moa.steps.Request`): its
        model, messages, settings, agent and seed, and ``fields`` (text, tokens, attempts,
        error, latency...) by name."""
        return cls(
            model=request.model,
            messages=request.messages,
            temp=request.temp,
            max_tokens=request.max_tokens,
            agent=request.agent,
            seed=request.seed,
            **fields,
        )

    @classmethod
    def answered(
        cls,
        request: Asked,
        text: str,
        input_tokens: int | None,
        output_tokens: int | None,
        latency: float,
        hedges: tuple[CallRecord, ...],
        confidence: Confidence | None,
    ) -> CallRecord:
        """``CallRecord.asked(request, text=..., ...)`` for a call answered at its first
        attempt, and equal to it, built by setting its slots: this is every call's path, where
        a frozen dataclass's ``__init__`` costs a microsecond more."""
        r: CallRecord = _new_record(cls)
        _set_model(r, request.model)
        _set_messages(r, request.messages)
        _set_temp(r, request.temp)
        _set_max_tokens(r, request.max_tokens)
        _set_text(r, text)
        _set_input_tokens(r, input_tokens)
        _set_output_tokens(r, output_tokens)
        _set_attempts(r, 1)
        _set_error(r, None)
        _set_latency(r, latency)
        _set_cancelled(r, False)
        _set_hedges(r, hedges)
        _set_cached(r, False)
        _set_agent(r, request.agent)
        _set_seed(r, request.seed)
        _set_confidence(r, confidence)
        return r

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": [dict(m) for m in self.messages],
            "temp": self.temp,
            "max_tokens": self.max_tokens,
            "text": self.text,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "attempts": self.attempts,
            "error": self.error,
            "latency": self.latency,
            "cancelled": self.cancelled,
            "hedges": [h.to_dict() for h in self.hedges],
            "cached": self.cached,
            "agent": self.agent,
            "seed": self.seed,
            "confidence": None if self.confidence is None else self.confidence.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "call") -> CallRecord:
        """The record :meth:`to_dict` wrote; a malformed one raises ValueError naming the
        field."""
        msgs = []
        for i, m in enumerate(_get(d, "messages", list, where)):
            at = f"{where}.messages[{i}]"
            msgs.append(
                MappingProxyType(
                    {"role": _get(m, "role", str, at), "content": _get(m, "content", str, at)}
                )
            )
        return cls(
            model=_get(d, "model", str, where),
            messages=tuple(msgs),
            temp=_get(d, "temp", _NUMBER, where),
            max_tokens=_get(d, "max_tokens", int, where),
            text=_get(d, "text", str, where, optional=True),
            input_tokens=_get(d, "input_tokens", int, where, optional=True),
            output_tokens=_get(d, "output_tokens", int, where, optional=True),
            attempts=_get(d, "attempts", int, where),
            error=_get(d, "error", str, where, None, optional=True),
            latency=_get(d, "latency", _NUMBER, where, 0.0),
            cancelled=_get(d, "cancelled", bool, where, False),
            hedges=tuple(
                cls.from_dict(h, f"{where}.hedges[{i}]")
                for i, h in enumerate(_get(d, "hedges", list, where, []))
            ),
            cached=_get(d, "cached", bool, where, False),
            agent=_get(d, "agent", str, where, None, optional=True),
            seed=_get(d, "seed", int, where, None, optional=True),
            confidence=_confidence(_get(d, "confidence", dict, where, None, optional=True), where),
        )


def _setter(name: str) -> Callable[[CallRecord, Any], None]:
    """The slot's own setter: it writes past the frozen ``__setattr__``, so only
    :meth:`CallRecord.answered` uses it, on a record no one has seen yet."""
    setter: Callable[[CallRecord, Any], None] = getattr(CallRecord, name).__set__
    return setter


_new_record = object.__new__
_set_model = _setter("model")
_set_messages = _setter("messages")
_set_temp = _setter("temp")
_set_max_tokens = _setter("max_tokens")
_set_text = _setter("text")
_set_input_tokens = _setter("input_tokens")
_set_output_tokens = _setter("output_tokens")
_set_attempts = _setter("attempts")
_set_error = _setter("error")
_set_latency = _setter("latency")
_set_cancelled = _setter("cancelled")
_set_hedges = _setter("hedges")
_set_cached = _setter("cached")
_set_agent = _setter("agent")
_set_seed = _setter("seed")
_set_confidence = _setter("confidence")
# Every field is set by answered(): a field added without a setter fails here, at import.
assert len(CallRecord.__slots__) == 16, "CallRecord.answered must set every field"


@dataclass(frozen=True, slots=True, kw_only=True)
class StepRecord:
    """One step as it ran: the expression that built it, where it sits, what it produced.

    ``path`` locates the step in the pipeline tree: ``(2,)`` is the third top-level step,
    ``(2, 1, 0)`` the first step of the second branch of a parallel third step.
    ``notes`` records every decision the user should see (a judge reply that could not be
    parsed and the fallback taken, the step that emptied the responses). ``degraded`` says
    why the step went on with fewer replies than it asked for (its deadline came), None when
    it did not.
    """

    step: str
    path: tuple[int, ...]
    kind: str
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    calls: tuple[CallRecord, ...] = ()
    notes: tuple[str, ...] = ()
    duration: float = field(default=0.0, compare=False)
    degraded: str | None = None

    # Seed names.
    @property
    def llm_calls(self) -> tuple[CallRecord, ...]:
        return self.calls

    @property
    def step_time(self) -> float:
        return self.duration

    def __getitem__(self, key: str) -> Any:
        if key in self:
            return getattr(self, key)
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return key in _STEP_KEYS

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "path": list(self.path),
            "kind": self.kind,
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "calls": [c.to_dict() for c in self.calls],
            "notes": list(self.notes),
            "duration": self.duration,
            **({} if self.degraded is None else {"degraded": self.degraded}),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "step") -> StepRecord:
        """The record :meth:`to_dict` wrote; a malformed one raises ValueError naming the
        field."""
        path = _get(d, "path", list, where)
        if not all(type(p) is int for p in path):
            raise ValueError(f"not a moa history: {where}.path must be a list of int")
        return cls(
            step=_get(d, "step", str, where),
            path=tuple(path),
            kind=_get(d, "kind", str, where),
            inputs=_strings(d, "inputs", where),
            outputs=_strings(d, "outputs", where),
            calls=tuple(
                CallRecord.from_dict(c, f"{where}.calls[{i}]")
                for i, c in enumerate(_get(d, "calls", list, where))
            ),
            notes=_strings(d, "notes", where) if "notes" in d else (),
            duration=_get(d, "duration", _NUMBER, where, 0.0),
            degraded=_get(d, "degraded", str, where, None, optional=True),
        )


def _sum_known(values: Iterator[int | None]) -> int | None:
    total = 0
    for v in values:
        if v is None:
            return None
        total += v
    return total


def _spent(calls: Iterable[CallRecord]) -> Iterator[CallRecord]:
    # Every attempt that answered counts. One that failed or was cancelled reported no
    # usage: its spend is unknown to moa, not a reason to call the whole total unknown.
    # A cached answer cost nothing in this run.
    for c in calls:
        if c.ok and not c.cached:
            yield c
        for h in c.hedges:
            if h.ok:
                yield h


def spent_tokens(calls: Iterable[CallRecord]) -> tuple[int | None, int | None]:
    """Input and output tokens spent on ``calls``, as :attr:`History.input_tokens` counts
    them: answered calls and hedges, cached answers left out; None where any is unknown."""
    calls = tuple(calls)
    return (
        _sum_known(c.input_tokens for c in _spent(calls)),
        _sum_known(c.output_tokens for c in _spent(calls)),
    )


@dataclass(frozen=True, slots=True)
class History:
    """Everything a run did, in pipeline order (never in completion order).

    Iterating yields the step records, as mixture-llm's list of step dicts did. ``seed`` is the
    seed the run's RNG used (drawn at random when ``run`` was given none), so any run can be
    replayed.
    """

    prompt: str
    seed: int
    steps: tuple[StepRecord, ...]
    outputs: tuple[str, ...]
    wall_time: float = field(default=0.0, compare=False)
    #: The run's budget as it stood at the end: ``{"used": {...}, "left": {...}}`` by limit
    #: name (dollars, calls, tokens, seconds); None for a run without one.
    budget: Mapping[str, Mapping[str, float | None]] | None = field(default=None, compare=False)
    #: A conversation's turns before ``prompt`` (its last, the question); () for one turn.
    conversation: tuple[Mapping[str, str], ...] = ()

    def __iter__(self) -> Iterator[StepRecord]:
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, index: int) -> StepRecord:
        return self.steps[index]

    @property
    def calls(self) -> tuple[CallRecord, ...]:
        """Every call of the run, in pipeline order."""
        return tuple(c for s in self.steps for c in s.calls)

    @property
    def failed_calls(self) -> tuple[CallRecord, ...]:
        """Calls that failed after their retries (cancelled calls are not failures)."""
        return tuple(c for c in self.calls if c.error is not None)

    @property
    def cancelled_calls(self) -> tuple[CallRecord, ...]:
        """Calls stopped because their step reached its quorum."""
        return tuple(c for c in self.calls if c.cancelled)

    @property
    def cached_calls(self) -> tuple[CallRecord, ...]:
        """Calls answered from the cache: this run spent nothing on them."""
        return tuple(c for c in self.calls if c.cached)

    @property
    def degraded(self) -> tuple[StepRecord, ...]:
        """The steps that went on with fewer replies than they asked for (a deadline came):
        the answer was made from less than the pipeline meant."""
        return tuple(s for s in self.steps if s.degraded is not None)

    @property
    def total_calls(self) -> int:
        return sum(len(s.calls) for s in self.steps)

    @property
    def input_tokens(self) -> int | None:
        """Input tokens spent: over the calls and hedges that answered, cached answers left out;
        None when any of them did not report its count (failed and cancelled attempts report
        none and are left out)."""
        return _sum_known(c.input_tokens for c in _spent(self.calls))

    @property
    def output_tokens(self) -> int | None:
        """Output tokens spent, counted as :attr:`input_tokens` is."""
        return _sum_known(c.output_tokens for c in _spent(self.calls))

    def cost(self, prices: Prices | None = None) -> Cost:
        """What the run cost in US dollars under ``prices`` (default: ``moa.DEFAULT_PRICES``);
        models without a price are reported as unknown, never as free."""
        return cost(self, prices)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy."""
        return {
            "prompt": self.prompt,
            "seed": self.seed,
            "steps": [s.to_dict() for s in self.steps],
            "outputs": list(self.outputs),
            "wall_time": self.wall_time,
            "totals": {
                "calls": self.total_calls,
                "failed_calls": len(self.failed_calls),
                "cancelled_calls": len(self.cancelled_calls),
                "cached_calls": len(self.cached_calls),
                "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens,
            },
            **(
                {}
                if self.budget is None
                else {"budget": {k: dict(v) for k, v in self.budget.items()}}
            ),
            **({"conversation": [dict(m) for m in self.conversation]} if self.conversation else {}),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> History:
        """The history :meth:`to_dict` wrote (a saved run, e.g. ``moa run --json``'s file):
        ``History.from_dict(h.to_dict()) == h``. A malformed one (a field missing or of the
        wrong type) raises ValueError naming the field."""
        return cls(
            _get(d, "prompt", str, "history"),
            _get(d, "seed", int, "history"),
            tuple(
                StepRecord.from_dict(s, f"steps[{i}]")
                for i, s in enumerate(_get(d, "steps", list, "history"))
            ),
            _strings(d, "outputs", "history"),
            _get(d, "wall_time", _NUMBER, "history", 0.0),
            _get(d, "budget", dict, "history", None, optional=True),
            _conversation(d),
        )

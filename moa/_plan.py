"""``moa.plan``: what a pipeline can cost, read from the expression alone, before any call.

Each step is bounded from the responses that can reach it: how many calls it makes (a range),
how many of them run one after another (its depth), how many responses it hands on, and upper
bounds on its input and output tokens and dollars. An LLM step is bounded by running its own
``plan`` on stand-in responses and replies (no model is called): every request it would make is
counted, its messages measured (a token is at least one byte, so a text's UTF-8 bytes bound its
tokens; a reply read again is bounded by the ``max_tokens`` it was written under, plus
:data:`REREAD_SLACK`), every output at its ``max_tokens``. A step whose calls depend on what the replies say cannot be bounded that
way: a custom LLM step is "unbounded" unless its class says ``fixed_rounds = True``, and a
custom transform hands on an unbounded number of responses.

The bounds hold for a run that completes: a run that fails stops early (fewer calls). Retries
are not in ``calls`` (each try of a call is an attempt: at most ``calls.high * attempts``).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._bounds import aligned, check_number, check_type
from ._contract import LLMStep, OffLoop, Request
from ._cost import Prices, price_table
from ._pipeline import Parallel, Pipeline, Step, StepLike, as_step
from ._select import Majority, MostConfident, MostConsistent, WeightedMajority
from ._transforms import Dropout, Filter, Map, Sample, Shuffle, Take, Transform

__all__ = ("RunPlan", "Span", "StepPlan", "plan", "unbounded_steps")

#: Tokens a chat template adds around each message, at most (role markers, separators).
MESSAGE_OVERHEAD = 8
#: Tokens a reply may gain when it is read again inside another text (where its first and
#: last tokens merge with their neighbours), over the max_tokens it was written under.
REREAD_SLACK = 2
#: Rounds a simulated step may take before it is called unbounded.
MAX_ROUNDS = 10_000
_SELECTIONS = (Majority, WeightedMajority, MostConsistent, MostConfident)
_KNOWN_TRANSFORMS = (Shuffle, Dropout, Sample, Take, Filter, Map)


@dataclass(frozen=True, slots=True)
class Span:
    """A whole number between ``low`` and ``high`` (None: no upper bound)."""

    low: int
    high: int | None

    def __add__(self, other: Span) -> Span:
        high = None if self.high is None or other.high is None else self.high + other.high
        return Span(self.low + other.low, high)

    def most(self, other: Span) -> Span:
        """The larger of two spans, bound by bound (the longer of two parallel branches)."""
        high = None if self.high is None or other.high is None else max(self.high, other.high)
        return Span(max(self.low, other.low), high)

    def __str__(self) -> str:
        if self.high is None:
            return f">={self.low}"
        return str(self.low) if self.low == self.high else f"{self.low}-{self.high}"


@dataclass(frozen=True, slots=True, kw_only=True)
class StepPlan:
    """One step's bounds: ``calls``, ``depth`` (calls one after another), the ``responses`` it
    hands on, ``input_tokens`` and ``output_tokens`` at most (None: unbounded), the copies of
    the user's prompt its calls read (``prompt_copies``, counted apart when the prompt is not
    given), ``dollars`` at most (None: unbounded or unpriced), ``models`` it calls, and
    ``unbounded``: why a bound is missing ("" when none is)."""

    path: tuple[int, ...]
    step: str
    calls: Span
    depth: Span
    responses: Span
    input_tokens: int | None
    prompt_copies: int = 0
    output_tokens: int | None
    dollars: float | None
    models: tuple[str, ...] = ()
    unbounded: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class RunPlan:
    """What a pipeline can cost: each step's :class:`StepPlan` and the totals. Input tokens
    are ``input_tokens + prompt_copies * prompt_tokens``; ``prompt_tokens`` is the prompt's
    UTF-8 bytes when a prompt was given, else None (and the dollars are then None too).
    ``seconds`` is ``depth.high`` times the per-call latency given (None without one)."""

    pipeline: str
    steps: tuple[StepPlan, ...]
    calls: Span
    depth: Span
    input_tokens: int | None
    prompt_copies: int
    prompt_tokens: int | None
    output_tokens: int | None
    dollars: float | None
    seconds: float | None
    unpriced: tuple[str, ...] = field(default=())

    @property
    def bounded(self) -> bool:
        """Every step has every bound."""
        return not any(s.unbounded for s in self.steps)

    def total_input_tokens(self) -> int | None:
        """All input tokens at most, the prompt's included; None without a prompt."""
        if self.input_tokens is None or self.prompt_tokens is None:
            return None
        return self.input_tokens + self.prompt_copies * self.prompt_tokens

    def attempts(self, per_call: int) -> int | None:
        """Tries at most when each call may be tried ``per_call`` times (a Retry's attempts)."""
        return None if self.calls.high is None else self.calls.high * per_call

    def table(self) -> str:
        """The plan as text: a row per step, then the totals and what is unbounded."""
        rows = [("step", "calls", "depth", "responses", "input tok <=", "output tok <=", "$ <=")]
        for i, s in enumerate(self.steps, 1):
            rows.append(
                (
                    f"{i} {_short(s.step)}",
                    str(s.calls),
                    str(s.depth),
                    str(s.responses),
                    _tokens(s.input_tokens, s.prompt_copies, self.prompt_tokens),
                    "?" if s.output_tokens is None else f"{s.output_tokens:,}",
                    _dollars(s.dollars),
                )
            )
        rows.append(
            (
                "total",
                str(self.calls),
                str(self.depth),
                "",
                _tokens(self.input_tokens, self.prompt_copies, self.prompt_tokens),
                "?" if self.output_tokens is None else f"{self.output_tokens:,}",
                _dollars(self.dollars),
            )
        )
        lines = aligned(rows)
        lines.insert(1, "-" * len(lines[0]))
        lines.insert(len(lines) - 1, "-" * len(lines[0]))
        if self.seconds is not None:
            lines.append(f"time: about {self.seconds:.3g} s ({self.depth.high} calls in a row)")
        if self.prompt_tokens is None:
            lines.append("P: the prompt's tokens (give the prompt for totals and dollars)")
        for s in self.steps:
            if s.unbounded:
                lines.append(f"unbounded: {_short(s.step)}: {s.unbounded}")
        if self.unpriced:
            lines.append(f"no price for {', '.join(self.unpriced)}: dollars unknown")
        lines.append("calls count requests; each may be tried again (retries) up to its attempts")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def to_dict(self) -> dict[str, Any]:
        def span(s: Span) -> list[int | None]:
            return [s.low, s.high]

        return {
            "pipeline": self.pipeline,
            "calls": span(self.calls),
            "depth": span(self.depth),
            "input_tokens": self.input_tokens,
            "prompt_copies": self.prompt_copies,
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "dollars": self.dollars,
            "seconds": self.seconds,
            "unpriced": list(self.unpriced),
            "steps": [
                {
                    "path": list(s.path),
                    "step": s.step,
                    "calls": span(s.calls),
                    "depth": span(s.depth),
                    "responses": span(s.responses),
                    "input_tokens": s.input_tokens,
                    "prompt_copies": s.prompt_copies,
                    "output_tokens": s.output_tokens,
                    "dollars": s.dollars,
                    "models": list(s.models),
                    "unbounded": s.unbounded,
                }
                for s in self.steps
            ],
        }


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _tokens(fixed: int | None, copies: int, prompt: int | None) -> str:
    if fixed is None:
        return "?"
    if prompt is not None:
        return f"{fixed + copies * prompt:,}"
    return f"{fixed:,}" + (f" + {copies}P" if copies else "")


def _dollars(x: float | None) -> str:
    return "?" if x is None else f"${x:.4g}"


# -- the flow of responses -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Flow:
    """The responses between two steps: how many, and each one's token bound in the largest
    case (None: unbounded), largest first."""

    count: Span
    bounds: tuple[int | None, ...]

    def largest(self, n: int) -> tuple[int | None, ...]:
        return self.bounds[:n]


_NONE = _Flow(Span(0, 0), ())
_PROMPT = "\x00P\x00"


@dataclass(slots=True)
class _Walk:
    prompt: str | None
    prices: Prices
    steps: list[StepPlan] = field(default_factory=list)
    unpriced: set[str] = field(default_factory=set)


def _sorted(bounds: Sequence[int | None]) -> tuple[int | None, ...]:
    return tuple(sorted(bounds, key=lambda b: -1 if b is None else -b))


def _walk(step: Step, flow: _Flow, path: tuple[int, ...], w: _Walk) -> tuple[_Flow, Span]:
    """``step`` planned from ``flow``: the flow after it and its depth."""
    if isinstance(step, Pipeline):
        depth = Span(0, 0)
        for i, s in enumerate(step.steps):
            flow, d = _walk(s, flow, (*path, i), w)
            depth = depth + d
        return flow, depth
    if isinstance(step, Parallel):
        outs = [_walk(b, flow, (*path, i), w) for i, b in enumerate(step.branches)]
        count = Span(0, 0)
        depth = Span(0, 0)
        bounds: list[int | None] = []
        for out, d in outs:
            count = count + out.count
            depth = depth.most(d)
            bounds.extend(out.bounds)
        return _Flow(count, _sorted(bounds)), depth
    if isinstance(step, LLMStep) and not isinstance(step, _SELECTIONS):
        return _llm(step, flow, path, w)
    free = _free(step, flow)
    note = "" if free else "a custom transform: how many responses it hands on is unknown"
    out = free or _Flow(Span(0, None), (None,))
    w.steps.append(
        StepPlan(
            path=path,
            step=repr(step),
            calls=Span(0, 0),
            depth=Span(0, 0),
            responses=out.count,
            input_tokens=0,
            output_tokens=0,
            dollars=0.0,
            unbounded=note,
        )
    )
    return out, Span(0, 0)


def _free(step: Step, flow: _Flow) -> _Flow | None:
    """A step with no call: its flow out, None for a custom transform."""
    n = flow.count
    if isinstance(step, _SELECTIONS):
        return _Flow(Span(min(1, n.low), 1), flow.largest(1))
    if isinstance(step, (Shuffle, Map)):
        return flow if isinstance(step, Shuffle) else _Flow(n, (None,) * len(flow.bounds))
    if isinstance(step, Dropout):
        return _Flow(Span(min(1, n.low), n.high), flow.bounds)
    if isinstance(step, Filter):
        return _Flow(Span(0, n.high), flow.bounds)
    if isinstance(step, (Take, Sample)):
        high = step.n if n.high is None else min(step.n, n.high)
        return _Flow(Span(min(step.n, n.low), high), flow.largest(step.n))
    if isinstance(step, Transform):
        return None
    return None


# -- an LLM step, simulated ----------------------------------------------------------------------
@dataclass(slots=True)
class _Simulated:
    calls: int = 0
    rounds: int = 0
    input_tokens: int | None = 0
    prompt_copies: int = 0
    output_tokens: int = 0
    dollars: float | None = 0.0
    models: set[str] = field(default_factory=set)
    out: list[int | None] = field(default_factory=list)
    required: int = 0


def _llm(step: LLMStep, flow: _Flow, path: tuple[int, ...], w: _Walk) -> tuple[_Flow, Span]:
    at = repr(step)
    if not getattr(step, "fixed_rounds", False):
        w.steps.append(
            _unbounded(path, at, "a custom LLM step (set fixed_rounds = True to plan it)")
        )
        return _Flow(Span(0, None), (None,)), Span(0, None)
    if flow.count.high is None:
        w.steps.append(_unbounded(path, at, "how many responses reach it is unknown"))
        return _Flow(Span(0, None), (None,)), Span(0, None)
    if step.needs_responses and flow.count.high == 0:
        # No response ever reaches it: the run stops here (EmptyInputError), calling nothing.
        none = Span(0, 0)
        w.steps.append(
            StepPlan(
                path=path,
                step=at,
                calls=none,
                depth=none,
                responses=none,
                input_tokens=0,
                output_tokens=0,
                dollars=0.0,
            )
        )
        return _Flow(none, ()), none
    high = _simulate(step, flow.largest(flow.count.high), w)
    low_n = (
        flow.count.low if flow.count.low or not step.needs_responses else min(1, flow.count.high)
    )
    low = _simulate(step, flow.largest(low_n), w) if low_n != flow.count.high else high
    if isinstance(high, str) or isinstance(low, str):
        reason = high if isinstance(high, str) else str(low)
        w.steps.append(_unbounded(path, at, reason))
        return _Flow(Span(0, None), (None,)), Span(0, None)
    fewest = min(len(low.out), low.required) if _drops_failures(step) else len(low.out)
    responses = Span(fewest, len(high.out))
    w.steps.append(
        StepPlan(
            path=path,
            step=at,
            calls=Span(low.calls, high.calls),
            depth=Span(low.rounds, high.rounds),
            responses=responses,
            input_tokens=high.input_tokens,
            prompt_copies=high.prompt_copies,
            output_tokens=high.output_tokens,
            dollars=high.dollars,
            models=tuple(sorted(high.models)),
        )
    )
    return _Flow(responses, _sorted(high.out)), Span(low.rounds, high.rounds)


def _drops_failures(step: LLMStep) -> bool:
    # Propose, Synthesize and Refine go on without their failed calls' replies.
    return hasattr(step, "min_success") and hasattr(step, "agents")


def _unbounded(path: tuple[int, ...], at: str, why: str) -> StepPlan:
    return StepPlan(
        path=path,
        step=at,
        calls=Span(0, None),
        depth=Span(0, None),
        responses=Span(0, None),
        input_tokens=None,
        output_tokens=None,
        dollars=None,
        unbounded=why,
    )


def _simulate(step: LLMStep, bounds: Sequence[int | None], w: _Walk) -> _Simulated | str:
    """Run ``step.plan`` on stand-ins: each response a marker whose tokens are its bound, each
    reply a marker bounded by its request's max_tokens. A reason string where it cannot be."""
    known: dict[str, int | None] = {}
    stand_ins = []
    for i, b in enumerate(bounds):
        marker = f"\x00R{i}\x00"
        known[marker] = b
        stand_ins.append(marker)
    prompt = w.prompt if w.prompt is not None else _PROMPT
    sim = _Simulated()
    gen = step.plan(prompt, list(stand_ins), random.Random(0))
    sent: Any = None
    try:
        while True:
            item = gen.send(sent)
            if isinstance(item, OffLoop):
                return "it runs work off the event loop, whose result decides its calls"
            sim.rounds += 1
            if sim.rounds > MAX_ROUNDS:
                return f"more than {MAX_ROUNDS:,} rounds"
            sent = [_request(req, known, sim, w) for req in item]
            sim.required += step.required(len(item))
    except StopIteration as done:
        responses, _ = done.value
    if sim.calls == 0:
        sim.required = len(responses)
    sim.out = [_measure(r, known)[0] for r in responses]
    return sim


def _request(req: Request, known: dict[str, int | None], sim: _Simulated, w: _Walk) -> str:
    sim.calls += 1
    sim.models.add(req.model)
    tokens = 0
    copies = 0
    unbounded = False
    for m in req.messages:
        n, c = _measure(m["content"], known)
        copies += c
        if n is None:
            unbounded = True
        else:
            tokens += n + MESSAGE_OVERHEAD
    sim.prompt_copies += copies
    if unbounded or sim.input_tokens is None:
        sim.input_tokens = None
        sim.dollars = None
    else:
        sim.input_tokens += tokens
    sim.output_tokens += req.max_tokens
    if sim.dollars is not None:
        prompt = len(w.prompt.encode()) * copies if w.prompt is not None else None
        cost = (
            None
            if prompt is None
            else w.prices.call_cost(req.model, tokens + prompt, req.max_tokens)
        )
        if cost is None:
            if prompt is not None:
                w.unpriced.add(req.model)
            sim.dollars = None
        else:
            sim.dollars += cost
    marker = f"\x00Y{len(known)}\x00"
    known[marker] = req.max_tokens + REREAD_SLACK
    return marker


def _measure(text: str, known: dict[str, int | None]) -> tuple[int | None, int]:
    """A text's token bound (its bytes, a stand-in by its own bound) and the prompt copies in
    it (counted apart)."""
    copies = text.count(_PROMPT)
    rest = text.replace(_PROMPT, "")
    total = 0
    for marker, bound in known.items():
        if marker in rest:
            n = rest.count(marker)
            rest = rest.replace(marker, "")
            if bound is None:
                return None, copies
            total += n * bound
    return total + len(rest.encode()), copies


# -- the whole pipeline --------------------------------------------------------------------------
def plan(
    pipeline: StepLike,
    prompt: str | None = None,
    *,
    prices: Prices | Mapping[str, Any] | None = None,
    latency: float | None = None,
) -> RunPlan:
    """What ``pipeline`` can cost, without calling any model: calls (exact where the pipeline
    fixes them, else a range), calls one after another, upper bounds on tokens (from the
    ``prompt`` when given) and dollars (at ``prices``, default ``moa.DEFAULT_PRICES``), and a
    time estimate from ``latency`` (seconds per call) when given. See :class:`RunPlan`."""
    step = as_step(pipeline, where="moa.plan(pipeline)")
    if prompt is not None:
        check_type("moa.plan", "prompt", prompt, str, "a str or None")
    check_number("moa.plan", "latency", latency, none=True)
    table = price_table("moa.plan", prices)
    w = _Walk(prompt, table)
    _, depth = _walk(step, _NONE, () if isinstance(step, Pipeline) else (0,), w)
    steps = tuple(w.steps)
    bounded = all(not s.unbounded for s in steps)
    calls = Span(0, 0)
    for s in steps:
        calls = calls + s.calls
    inputs = _sum(s.input_tokens for s in steps)
    outputs = _sum(s.output_tokens for s in steps)
    dollars = _fsum(s.dollars for s in steps) if prompt is not None and not w.unpriced else None
    return RunPlan(
        pipeline=repr(step),
        steps=steps,
        calls=calls,
        depth=depth,
        input_tokens=inputs if bounded else None,
        prompt_copies=sum(s.prompt_copies for s in steps),
        prompt_tokens=None if prompt is None else len(prompt.encode()),
        output_tokens=outputs if bounded else None,
        dollars=dollars if bounded else None,
        seconds=None if latency is None or depth.high is None else depth.high * latency,
        unpriced=tuple(sorted(w.unpriced)),
    )


def _sum(values: Any) -> int | None:
    total = 0
    for v in values:
        if v is None:
            return None
        total += v
    return total


def _fsum(values: Any) -> float | None:
    total = 0.0
    for v in values:
        if v is None:
            return None
        total += v
    return total


def unbounded_steps(step: Step) -> list[Step]:
    """The steps of ``step`` whose calls a plan cannot bound: a custom LLM step that does not
    say ``fixed_rounds``, and a custom transform (how many responses it hands on is unknown:
    a ``Refine`` after it makes as many calls)."""
    found: list[Step] = []
    stack = [step]
    while stack:
        s = stack.pop()
        if isinstance(s, (Pipeline, Parallel)):
            stack.extend(s.steps if isinstance(s, Pipeline) else s.branches)
        elif isinstance(s, LLMStep):
            if not isinstance(s, _SELECTIONS) and not getattr(s, "fixed_rounds", False):
                found.append(s)
        elif isinstance(s, Transform) and not isinstance(s, _KNOWN_TRANSFORMS):
            found.append(s)
    return found

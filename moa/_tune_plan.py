"""How many calls a tune search may make, counted before any call: each pipeline's steps
bounded from the responses that reach them, the proposals the mixtures share counted once,
and a judge's two asks per reply it scores. Retries are not counted (a budget says so)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ._llm_steps import (
    Aggregate,
    AggregateSeq,
    Pick,
    Propose,
    Rank,
    Refine,
    Synthesize,
    Vote,
)
from ._pipeline import Parallel, Pipeline, Step, leaves
from ._select import Majority, MostConfident, MostConsistent, WeightedMajority
from ._transforms import Sample, Take, Transform

__all__ = ("first_layer", "most_calls", "plan_calls")

_SELECTIONS = (Majority, WeightedMajority, MostConsistent, MostConfident)


def most_calls(step: Step, responses: int = 0) -> tuple[int, int] | None:
    """``(calls, responses out)`` at most, for ``step`` given ``responses``; None for a step
    whose calls cannot be bounded (a custom LLM step)."""
    if isinstance(step, Pipeline):
        calls = 0
        for s in step.steps:
            found = most_calls(s, responses)
            if found is None:
                return None
            more, responses = found
            calls += more
        return calls, responses
    if isinstance(step, Parallel):
        branches = [most_calls(b, responses) for b in step.branches]
        if any(b is None for b in branches):
            return None
        return sum(b[0] for b in branches if b), sum(b[1] for b in branches if b)
    return _one(step, responses)


def _one(step: Step, n: int) -> tuple[int, int] | None:
    if isinstance(step, (Propose, Synthesize)):
        return len(step.agents), len(step.agents)
    if isinstance(step, Refine):
        return n, n
    if isinstance(step, (Aggregate, Vote)):
        return 1, 1
    if isinstance(step, Rank):
        return 1, min(step.n, n)
    if isinstance(step, Pick):
        return step.times, 1
    if isinstance(step, AggregateSeq):
        return max(1, n), 1  # each round folds in at least one new response
    if isinstance(step, _SELECTIONS):
        return 0, 1
    if isinstance(step, (Take, Sample)):
        return 0, min(step.n, n)
    if isinstance(step, Transform):
        return 0, n
    return None


def first_layer(step: Step) -> Propose | None:
    """The ``Propose`` a pipeline starts with at its top level, whose requests other
    pipelines starting the same way share through a cache (keyed by the step's place too:
    a ``Propose`` inside a ``Parallel`` shares nothing with one outside)."""
    found = leaves(step)
    if not found or found[0][0] != (0,):
        return None
    first = found[0][1]
    return first if isinstance(first, Propose) else None


def plan_calls(
    pipelines: Mapping[str, Step], singles: Iterable[Step] = (), judged: bool = False
) -> int | None:
    """Calls per task the pipelines (and ``singles``) make between them, at most, when a
    cache shares what the same place asks: the requests of a first ``Propose`` once per
    sample index across all of them, every later call per pipeline. With ``judged``, two
    judge asks per reply scored (the final one and each candidate, at most one per call). None when a
    step cannot be bounded."""
    shared: dict[Any, int] = {}
    later = 0
    for step in (*pipelines.values(), *singles):
        bound = most_calls(step)
        if bound is None:
            return None
        first = first_layer(step)
        if first is not None:
            seen: dict[Any, int] = {}
            for req in first.requests("", []):
                seen[req.identity] = seen.get(req.identity, 0) + 1
            for identity, n in seen.items():
                shared[identity] = max(shared.get(identity, 0), n)
            later += bound[0] - len(first.agents)
        else:
            later += bound[0]
        if judged:  # the reply and each candidate, at most one per call made
            later += 2 * (1 + bound[0])
    return sum(shared.values()) + later

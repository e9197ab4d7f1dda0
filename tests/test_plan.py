"""moa.plan: a pipeline's calls, depth, tokens and dollars bounded from the expression alone,
and a property over generated pipelines: a run's real calls, tokens and cost always fall
within its plan."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import ClassVar

import anyio
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import moa
from moa import (
    Aggregate,
    AggregateSeq,
    Dropout,
    Filter,
    LLMStep,
    Majority,
    Pick,
    Propose,
    Rank,
    Refine,
    Shuffle,
    Take,
    transform,
)
from moa._plan import Span, plan
from moa.recipes import self_moa, together_moa
from moa.steps import ask, messages
from moa.testing.strategies import llm_steps, pipelines, prompts, transforms


def test_a_fixed_pipeline_has_exact_calls_and_depth():
    p = plan(Propose(["m"] * 3, max_tokens=48) | Shuffle() | Aggregate("m", max_tokens=64))
    assert p.calls == Span(4, 4) and p.depth == Span(2, 2)
    assert p.output_tokens == 3 * 48 + 64
    assert [s.calls for s in p.steps] == [Span(3, 3), Span(0, 0), Span(1, 1)]
    assert p.prompt_copies == 4  # three proposers and the aggregator read the prompt
    assert p.dollars is None and p.prompt_tokens is None  # no prompt: tokens as "+ 4P"
    assert "+ 4P" in p.table()


def test_the_prompt_and_prices_give_totals_and_dollars():
    prompt = "What is the capital of France?"
    p = plan(self_moa("m"), prompt, prices={"m": (1.0, 2.0)}, latency=1.5)
    assert p.prompt_tokens == len(prompt.encode())
    total_in = p.total_input_tokens()
    assert total_in == p.input_tokens + p.prompt_copies * p.prompt_tokens
    assert p.dollars == pytest.approx((total_in * 1.0 + p.output_tokens * 2.0) / 1e6)
    assert p.seconds == 1.5 * 2


def test_ranges_where_the_pipeline_does_not_fix_the_count():
    p = plan(
        Propose(["a", "b", "c"], min_success=2, max_tokens=10)
        | Dropout(0.5)
        | Refine(["r"], max_tokens=20)
        | Rank("j", n=2, max_tokens=5)
        | Pick("j", times=3, max_tokens=4),
        "hi",
    )
    assert [s.calls for s in p.steps] == [
        Span(3, 3),
        Span(0, 0),
        Span(1, 3),
        Span(1, 1),
        Span(0, 3),
    ]
    assert p.steps[0].responses == Span(2, 3)
    assert p.steps[1].responses == Span(1, 3)  # Dropout never drops all
    assert p.calls == Span(5, 10)


def test_aggregate_seq_rounds_and_parallel_branches():
    seq = plan(Propose(["m"] * 7) | AggregateSeq("m", window=3, reserved=1))
    assert seq.steps[1].calls.high == 3 and seq.steps[1].depth.high == 3
    par = plan((Propose(["a"]) & Propose(["b", "c"])) | Majority())
    assert par.calls == Span(3, 3) and par.depth == Span(1, 1)
    assert par.steps[2].responses == Span(1, 1)


def test_together_moa_against_a_price_table():
    p = plan(together_moa(), "Explain MoA.", prices={m: (0.5, 1.0) for m in moa.recipes.PROPOSERS})
    assert p.calls == Span(19, 19) and p.depth == Span(4, 4)  # 6 + 6 + 6 + 1, four layers
    assert p.dollars is not None and p.dollars > 0


@dataclass(frozen=True, slots=True, repr=False)
class Loop(LLMStep):
    """Asks until a reply says DONE: its calls depend on what is said."""

    agent: str

    def plan(self, prompt, responses, rng):
        while True:
            replies = yield [ask(self.agent, messages(("user", prompt)), 0.0, 8)]
            if replies[0] == "DONE":
                return [replies[0]], []


@dataclass(frozen=True, slots=True, repr=False)
class Twice(LLMStep):
    """Two fixed rounds, whatever the replies say: it may be planned."""

    agent: str
    fixed_rounds: ClassVar[bool] = True
    needs_responses: ClassVar[bool] = False

    def plan(self, prompt, responses, rng):
        first = yield [ask(self.agent, messages(("user", prompt)), 0.0, 8)]
        second = yield [ask(self.agent, messages(("user", first[0] or "")), 0.0, 8)]
        return [second[0] or ""], []


def test_a_custom_step_is_unbounded_unless_it_says_its_rounds_are_fixed():
    p = plan(Loop("m") | Aggregate("m"))
    assert not p.bounded and p.calls.high is None and p.input_tokens is None
    assert "custom LLM step" in p.steps[0].unbounded and "unbounded:" in p.table()
    fixed = plan(Twice("m"), "hi")
    assert fixed.bounded and fixed.calls == Span(2, 2) and fixed.depth == Span(2, 2)
    assert fixed.steps[0].input_tokens == 2 + (8 + 2) + 2 * 8  # the prompt, then the reply


@transform
def dedupe(responses, rng):
    return list(dict.fromkeys(responses))


def test_a_custom_transform_makes_the_counts_after_it_unknown():
    p = plan(Propose(["m"] * 3) | dedupe | Refine(["m"]) | Majority())
    assert p.steps[1].responses == Span(0, None)
    assert p.steps[2].unbounded and p.calls.high is None
    assert plan(Propose(["m"] * 3) | dedupe | Aggregate("m")).steps[2].calls == Span(0, None)


def test_bad_arguments_are_refused_where_they_enter():
    with pytest.raises(TypeError, match="prompt must be a str"):
        plan(Propose(["m"]), 3)
    with pytest.raises(ValueError, match="latency"):
        plan(Propose(["m"]), latency=-1)
    with pytest.raises(TypeError, match="prices"):
        plan(Propose(["m"]), prices=[1])
    with pytest.raises(TypeError):
        plan("Propose(['m'])")


# -- the property: a run stays within its plan ----------------------------------------------------
def _word_client():
    """Tokens are words: a reply of at most max_tokens words; input tokens are the words read
    (never more than the bytes)."""
    calls: list[int] = []

    async def client(*, model, messages, temp, max_tokens, seed=None):
        read = sum(len(m["content"].split()) for m in messages)
        h = int(
            hashlib.sha256(repr((model, messages[-1]["content"], seed)).encode()).hexdigest(), 16
        )
        n = min(max_tokens, 1 + h % 6)
        calls.append(1)
        return " ".join(f"w{(h >> i) % 50}" for i in range(n)), read, n

    client.calls = calls
    return client


STEPS = st.one_of(
    llm_steps(options=True, kinds=[Propose, Aggregate, Refine, Rank, Pick, AggregateSeq, Majority]),
    transforms(kinds=[Shuffle, Dropout, Take, Filter]),
)
PRICES = {m: (3.0, 7.0) for m in ("a", "b", "c", "model-a", "model-b", "model-c")}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pipeline=pipelines(STEPS, max_leaves=5), prompt=prompts(), seed=st.integers(0, 2**16))
# A step no response can reach is planned as the run's end, not simulated on none.
@example(pipeline=Take(0) | AggregateSeq("alpha"), prompt="0", seed=0)
@example(pipeline=Take(0) | Pick("alpha"), prompt="0", seed=0)
def test_a_runs_calls_tokens_and_cost_fall_within_its_plan(pipeline, prompt, seed):
    pipeline = Propose(["a", "b"], max_tokens=16) | pipeline
    client = _word_client()
    bounds = plan(pipeline, prompt, prices=PRICES)

    async def main():
        try:
            return await moa.run(pipeline, prompt, client, seed=seed, retry=moa.Retry(attempts=1))
        except moa.MoaError as exc:
            return None, exc.history

    result, history = anyio.run(main)
    event("completed" if result is not None else "failed")
    event("bounded" if bounds.bounded else "unbounded")
    calls = history.calls if history is not None else ()
    assert bounds.calls.high is None or len(client.calls) <= bounds.calls.high
    if result is not None:
        assert len(history.calls) >= bounds.calls.low
    if bounds.bounded:
        assert sum(c.input_tokens or 0 for c in calls) <= bounds.total_input_tokens()
        assert sum(c.output_tokens or 0 for c in calls) <= bounds.output_tokens
        if history is not None and bounds.dollars is not None:
            assert history.cost(moa.DEFAULT_PRICES | PRICES).known <= bounds.dollars + 1e-12

"""Custom steps: ``@transform`` functions and factories, and an ``LLMStep`` subclass, as values
and in runs."""

import pickle
import random
from dataclasses import dataclass
from typing import ClassVar

import pytest
from conftest import FAST
from scripted import ScriptedClient

import moa
from moa import (
    EmptyInputError,
    LLMStep,
    Parallel,
    Pipeline,
    Propose,
    Shuffle,
    Take,
    Transform,
    transform,
)
from moa.steps import Request, messages, numbered


@transform
def dedupe(responses, rng):
    """Drop repeated responses, keeping the first of each."""
    return list(dict.fromkeys(responses))


@transform
def truncate(responses, rng, limit):
    return [r[:limit] for r in responses]


@transform
def tagged(responses, rng, tag, sep=": ", *, upper=False):
    return [f"{tag}{sep}{r.upper() if upper else r}" for r in responses]


@transform
def spread(responses, rng, *extra, **labels):
    return [*responses, *extra, *(f"{k}={v}" for k, v in labels.items())]


def at_least_one(n):
    if n < 1:
        raise ValueError(f"pick(n): n must be >= 1, got {n}")


@transform(check=at_least_one)
def pick(responses, rng, n):
    return rng.sample(responses, min(n, len(responses)))


def is_short(text):
    return len(text) < 5


@transform
def keep_if(responses, rng, predicate):
    return [r for r in responses if predicate(r)]


NAMESPACE = {
    **{name: getattr(moa, name) for name in moa.__all__},
    "dedupe": dedupe,
    "truncate": truncate,
    "tagged": tagged,
    "spread": spread,
    "pick": pick,
    "keep_if": keep_if,
    "is_short": is_short,
}


# -- transforms as values ------------------------------------------------------------------------
def test_a_function_of_responses_and_rng_is_a_step():
    assert isinstance(dedupe, Transform) and repr(dedupe) == "dedupe"
    assert dedupe.apply(["a", "b", "a"], random.Random(0)) == ["a", "b"]
    assert Propose(["m"]) | dedupe | Shuffle() == moa.pipeline(Propose(["m"]), dedupe, Shuffle())
    assert repr([Take(2)] | dedupe * 2 & Shuffle()) == "Take(2) | ((dedupe | dedupe) & Shuffle())"
    assert (dedupe & Take(1)) & dedupe == dedupe & (Take(1) & dedupe)
    assert isinstance(dedupe & Take(1), Parallel) and dedupe * 0 == Pipeline()


def test_a_function_with_parameters_is_a_factory_of_equal_hashable_steps():
    assert repr(truncate) == "<transform truncate(limit)>"
    assert truncate.__name__ == "truncate" and truncate.__doc__ is None
    assert truncate(3) == truncate(limit=3) and hash(truncate(3)) == hash(truncate(limit=3))
    assert truncate(3) != truncate(4) and len({truncate(3), truncate(limit=3), truncate(4)}) == 2
    assert truncate(3) != dedupe and truncate(3).apply(["abcdef"], None) == ["abc"]
    with pytest.raises(AttributeError):
        truncate(3).fn = dedupe


@pytest.mark.parametrize(
    "step, shown",
    [
        (truncate(200), "truncate(200)"),
        (tagged("x"), "tagged('x')"),
        (tagged("x", " - "), "tagged('x', sep=' - ')"),
        (tagged(tag="x", upper=True), "tagged('x', upper=True)"),
        (spread(), "spread()"),
        (spread("a", "b", z=1, y=2), "spread('a', 'b', y=2, z=1)"),
        (keep_if(is_short), "keep_if(is_short)"),
        (pick(2) | truncate(3), "pick(2) | truncate(3)"),
    ],
)
def test_the_repr_is_the_expression_that_builds_the_step(step, shown):
    assert repr(step) == shown
    assert eval(shown, dict(NAMESPACE)) == step


def test_keyword_order_does_not_matter():
    assert spread(a=1, b=2) == spread(b=2, a=1)
    assert tagged("x", upper=True, sep="") == tagged("x", "", upper=True)


def test_bad_arguments_fail_at_construction_naming_the_step():
    with pytest.raises(TypeError, match=r"truncate\(limit\): missing a required argument: 'limit'"):
        truncate()
    with pytest.raises(TypeError, match=r"truncate\(limit\): too many positional arguments"):
        truncate(1, 2)
    with pytest.raises(
        TypeError,
        match=r"tagged\(tag, sep=': ', \*, upper=False\): got an "
        r"unexpected keyword argument 'colour'",
    ):
        tagged("x", colour="red")
    with pytest.raises(ValueError, match=r"pick\(n\): n must be >= 1, got 0"):
        pick(0)
    with pytest.raises(TypeError, match=r"truncate\(\.\.\.\): every argument must be hashable"):
        truncate([1])


def test_transform_refuses_what_it_cannot_make_a_step_of():
    with pytest.raises(
        TypeError,
        match=r"@transform: one\(responses\) must take "
        r"\(responses, rng, \.\.\.\)",
    ):

        @transform
        def one(responses):
            return responses

    with pytest.raises(TypeError, match=r"@transform: later is async"):

        @transform
        async def later(responses, rng):
            return responses

    with pytest.raises(TypeError, match="@transform decorates a named function"):
        transform(Take(1))
    with pytest.raises(TypeError, match=r"@transform\(check=\.\.\.\): plain takes no parameters"):

        @transform(check=at_least_one)
        def plain(responses, rng):
            return responses


def test_steps_pickle_by_reference_to_their_module():
    for step in (dedupe, truncate(3), tagged("x", upper=True), dedupe | pick(2)):
        assert pickle.loads(pickle.dumps(step)) == step


# -- transforms in runs --------------------------------------------------------------------------
def test_a_custom_transform_runs_with_the_runs_generator_and_shows_in_history():
    client = ScriptedClient(lambda model, _: {"a": "one", "b": "two", "c": "one"}[model])
    p = Propose(["a", "b", "c"]) | dedupe | truncate(2) | pick(1)
    result, history = moa.run_sync(p, "Q?", client, seed=5)
    assert [s.step for s in history.steps] == [
        "Propose(['a', 'b', 'c'])",
        "dedupe",
        "truncate(2)",
        "pick(1)",
    ]
    assert history[1].outputs == ("one", "two") and history[2].outputs == ("on", "tw")
    assert [result] == pick(1).apply(["on", "tw"], random.Random(5))
    assert moa.run_sync(p, "Q?", client, seed=5)[1] == history


def test_a_transform_returning_the_wrong_type_fails_naming_it():
    @transform
    def broken(responses, rng):
        return tuple(responses)

    with pytest.raises(TypeError, match=r"broken.apply must return a list of str, returned "):
        moa.run_sync(Propose(["a"]) | broken, "Q?", ScriptedClient())


# -- an LLM step of one's own --------------------------------------------------------------------
@dataclass(frozen=True, slots=True, repr=False)
class Critic(LLMStep):
    """A critic lists each response's flaws; each critique is appended to its response."""

    agent: str
    max_tokens: int = 64
    _positional: ClassVar[int] = 1

    def requests(self, prompt, responses):
        return [
            Request(
                self.agent,
                messages(("system", "List the flaws."), ("user", f"{prompt}\n\n{numbered([r])}")),
                0.0,
                self.max_tokens,
            )
            for r in responses
        ]

    def required(self, n_requests):
        return min(1, n_requests)

    def combine(self, prompt, responses, replies):
        return (
            [r if c is None else f"{r}\n[critique] {c}" for r, c in zip(responses, replies)],
            [f"{replies.count(None)} critiques missing"] if None in replies else [],
        )


def test_an_llm_step_gets_concurrency_retries_and_history_from_the_executor():
    client = ScriptedClient(
        lambda model, msgs: f"{model}: too short", delay=0.01, transient={"critic": 2}
    )
    p = Propose(["a", "b", "c"]) | Critic("critic")
    assert (
        repr(p) == "Propose(['a', 'b', 'c']) | Critic('critic')"
        and eval(repr(p), {**NAMESPACE, "Critic": Critic}) == p
    )
    result, history = moa.run_sync(p, "Q?", client, seed=1, retry=FAST, max_concurrency=2)
    assert client.max_in_flight == 2
    record = history[1]
    assert sum(c.attempts - 1 for c in record.calls) == 2  # two transient failures, retried
    assert record.outputs == tuple(f"{x}\n[critique] critic: too short" for x in record.inputs)
    assert record.calls[0].messages[1]["content"] == f"Q?\n\nResponse 1:\n{record.inputs[0]}"
    assert result == record.outputs[0]


def test_an_llm_step_goes_on_with_what_its_required_calls_allow():
    client = ScriptedClient(permanent={"critic"})
    with pytest.raises(moa.StepFailedError, match=r"Critic\('critic'\) failed: 0 of 2 calls"):
        moa.run_sync(Propose(["a", "b"]) | Critic("critic"), "Q?", client, retry=FAST)
    with pytest.raises(EmptyInputError, match=r"Critic\('critic'\) received no responses"):
        moa.run_sync(Critic("critic"), "Q?", client)

"""The laws of the pipeline algebra, checked with Hypothesis.

Each law is a plain function named for what it promises, with its statement as its docstring;
the test beside it draws the inputs. Laws "in results" run both sides through ``moa.run`` after
the same responses and before the same random suffix, and compare what comes out. The
transforms' own laws are in ``tests/test_builtin_laws.py``, written with ``moa.testing``.
"""

import dataclasses
import random

from drawing import delay_randoms, llm_steps, pipelines, random_delays, transforms
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from scripted import ScriptedClient, default_reply

import moa
import moa.testing as mt
from moa import (
    Dropout,
    EmptyInputError,
    Parallel,
    Pipeline,
    Propose,
    Rank,
    Sample,
    Shuffle,
    Synthesize,
    Take,
    Vote,
)

PROMPT = "What is the answer?"
MOA_NAMESPACE = {name: getattr(moa, name) for name in moa.__all__}

#: Laws about values: cheap, so many examples.
VALUES = settings(max_examples=200, deadline=None)
#: Laws that run pipelines through the executor.
RUNS = settings(max_examples=75, deadline=None)


# -- strategies (moa.testing's, over this file's models) ---------------------------------------
responses = mt.responses()
seeds = mt.seeds()
backends = st.sampled_from(["asyncio", "trio"])
#: The transforms that take no function.
FUNCTION_FREE = (Shuffle, Dropout, Sample, Take)

#: Any step: transforms with drawn functions and LLM steps, nested.
steps = pipelines(transforms() | llm_steps())
#: Steps without user functions and with every constructor option drawn; their reprs evaluate.
plain_steps = pipelines(
    transforms(kinds=FUNCTION_FREE)
    | llm_steps(models=st.text(min_size=1, max_size=5), options=True),
    max_leaves=10,
)
#: Steps that are not themselves a Parallel (so ``a & b`` has exactly the branches a and b).
non_parallel_steps = steps.filter(lambda s: not isinstance(s, Parallel))
#: Steps without drawn functions, for runs whose responses Hypothesis cannot replay (an unseeded
#: run calls a drawn function on different texts each time, which Hypothesis rejects as flaky).
function_free_steps = pipelines(transforms(kinds=FUNCTION_FREE) | llm_steps())


# -- running ---------------------------------------------------------------------------------
def feed(xs):
    """A step whose outputs are ``xs``: one Propose agent per response (see ``client_for``)."""
    if not xs:
        return Propose(["r0"]) | Take(0)
    return Propose([f"r{i}" for i in range(len(xs))])


def client_for(xs, delay=0.0):
    """A scripted client where agent ``r{i}`` answers ``xs[i]`` and other models hash."""
    table = {f"r{i}": x for i, x in enumerate(xs)}
    return ScriptedClient(
        lambda model, msgs: table[model] if model in table else default_reply(model, msgs),
        delay=delay,
    )


def run_after(xs, step, seed, *, delay=0.0, backend="asyncio"):
    """``(result, history)`` of ``feed(xs) | step``, or the name of the error it raised."""
    try:
        return moa.run_sync(
            feed(xs) | step, PROMPT, client_for(xs, delay), seed=seed, backend=backend
        )
    except EmptyInputError:
        return "EmptyInputError"


# -- the algebra as values --------------------------------------------------------------------
def law_pipe_is_associative(a, b, c):
    """Joining is associative: (a | b) | c == a | (b | c)."""
    assert (a | b) | c == a | (b | c)
    assert hash((a | b) | c) == hash(a | (b | c))


def law_empty_pipeline_is_identity_of_pipe(a):
    """The empty pipeline is the identity of |: Pipeline() | a == a == a | Pipeline()."""
    assert Pipeline() | a == a == a | Pipeline()


def law_and_is_associative(a, b, c):
    """Running alongside is associative: (a & b) & c == a & (b & c)."""
    assert (a & b) & c == a & (b & c)
    assert hash((a & b) & c) == hash(a & (b & c))


def law_repeat_distributes_over_plus(s, m, n):
    """Repeating m + n times is repeating m times, then n times: s * (m + n) == s * m | s * n."""
    assert s * (m + n) == s * m | s * n


def law_named_forms_are_the_operators(a, b):
    """Each operator is its named form: a | b is pipeline(a, b), a & b is parallel(a, b)."""
    assert a | b == moa.pipeline(a, b) == a.then(b)
    assert a & b == moa.parallel(a, b) == a.alongside(b)


def law_repr_round_trips(p):
    """A step's repr is the expression that builds it: eval(repr(p)) == p."""
    rebuilt = eval(repr(p), dict(MOA_NAMESPACE))
    assert rebuilt == p
    assert hash(rebuilt) == hash(p)
    assert repr(rebuilt) == repr(p)


@VALUES
@given(steps, steps, steps)
def test_pipe_is_associative(a, b, c):
    law_pipe_is_associative(a, b, c)


@VALUES
@given(steps)
def test_empty_pipeline_is_identity_of_pipe(a):
    law_empty_pipeline_is_identity_of_pipe(a)


@VALUES
@given(steps, steps, steps)
def test_and_is_associative(a, b, c):
    law_and_is_associative(a, b, c)


@VALUES
@given(steps, st.integers(0, 4), st.integers(0, 4))
def test_repeat_distributes_over_plus(s, m, n):
    law_repeat_distributes_over_plus(s, m, n)


@VALUES
@given(steps, steps)
def test_named_forms_are_the_operators(a, b):
    law_named_forms_are_the_operators(a, b)


@VALUES
@given(plain_steps)
@example(Pipeline() & Take(1))
@example(Propose(["a"], temp=-0.0) * 2)
@example(Synthesize(["a"], temp=100.0, max_tokens=1) | Vote("b", temp=5e-324))
@example(Rank("it's", n=2, prompt='say "{n}"\n') & (Shuffle() | Dropout(0.5)))
def test_repr_round_trips(p):
    law_repr_round_trips(p)


# -- the algebra in results -------------------------------------------------------------------
def law_pipe_is_associative_in_results(a, b, c, xs, seed):
    """(a | b) | c and a | (b | c) run to the same result and history."""
    assert run_after(xs, (a | b) | c, seed) == run_after(xs, a | (b | c), seed)


def law_empty_pipeline_is_identity_in_results(a, xs, seed):
    """Pipeline() | a, a and a | Pipeline() run to the same result and history."""
    alone = run_after(xs, a, seed)
    assert run_after(xs, Pipeline() | a, seed) == alone == run_after(xs, a | Pipeline(), seed)


def law_and_is_associative_in_results(a, b, c, xs, seed):
    """(a & b) & c and a & (b & c) run to the same result and history."""
    assert run_after(xs, (a & b) & c, seed) == run_after(xs, a & (b & c), seed)


def plain(calls):
    """The calls without the confidence a run reading it asked for."""
    return tuple(dataclasses.replace(c, confidence=None) for c in calls)


def law_and_concatenates(a, b, xs, seed):
    """The outputs of a & b are a's outputs followed by b's, each branch run on a generator
    drawn from the run's in branch order; either branch failing fails the whole."""
    rng = random.Random(seed)
    seed_a, seed_b = rng.getrandbits(63), rng.getrandbits(63)
    both = run_after(xs, a & b, seed)
    alone_a, alone_b = run_after(xs, a, seed_a), run_after(xs, b, seed_b)
    if isinstance(alone_a, str) or isinstance(alone_b, str):
        assert both == "EmptyInputError"
        return
    result, history = both
    fed = len(run_after(xs, Pipeline(), seed)[1].calls)
    assert history.outputs == alone_a[1].outputs + alone_b[1].outputs
    assert result == (history.outputs[0] if history.outputs else "")
    # A branch that reads confidence has every call of its run ask for it: compare the rest.
    assert plain(history.calls) == plain(alone_a[1].calls + alone_b[1].calls[fed:])


def law_repeat_distributes_in_results(s, m, n, xs, seed):
    """s * (m + n) and s * m | s * n run to the same result and history."""
    assert run_after(xs, s * (m + n), seed) == run_after(xs, s * m | s * n, seed)


@RUNS
@given(steps, steps, steps, responses, seeds)
def test_pipe_is_associative_in_results(a, b, c, xs, seed):
    law_pipe_is_associative_in_results(a, b, c, xs, seed)


@RUNS
@given(steps, responses, seeds)
def test_empty_pipeline_is_identity_in_results(a, xs, seed):
    law_empty_pipeline_is_identity_in_results(a, xs, seed)


@RUNS
@given(steps, steps, steps, responses, seeds)
def test_and_is_associative_in_results(a, b, c, xs, seed):
    law_and_is_associative_in_results(a, b, c, xs, seed)


@RUNS
@given(non_parallel_steps, non_parallel_steps, responses, seeds)
@example(Shuffle(), Sample(2), ["x", "y", "z"], 0)
def test_and_concatenates(a, b, xs, seed):
    law_and_concatenates(a, b, xs, seed)


@RUNS
@given(steps, st.integers(0, 2), st.integers(0, 2), responses, seeds)
def test_repeat_distributes_in_results(s, m, n, xs, seed):
    law_repeat_distributes_in_results(s, m, n, xs, seed)


# -- determinism ------------------------------------------------------------------------------
def law_run_is_deterministic_under_a_seed(step, xs, seed, delays_1, delays_2, backends_):
    """The same seed, pipeline and client outputs give the same result and history, whatever
    order the calls finish in and whichever event loop runs them."""
    # Undelayed on asyncio first: drawn functions then meet their arguments in a fixed order.
    baseline = run_after(xs, step, seed)
    assert run_after(xs, step, seed, delay=delays_1, backend=backends_[0]) == baseline
    assert run_after(xs, step, seed, delay=delays_2, backend=backends_[1]) == baseline


def law_unseeded_run_replays_from_its_seed(step, xs):
    """A run given no seed records the one it drew, and that seed replays it."""
    first = run_after(xs, step, None)
    assume(not isinstance(first, str))
    assert first == run_after(xs, step, first[1].seed)


@RUNS
@given(steps, responses, seeds, delay_randoms, delay_randoms, st.tuples(backends, backends))
def test_run_is_deterministic_under_a_seed(step, xs, seed, rng_1, rng_2, backends_):
    law_run_is_deterministic_under_a_seed(
        step, xs, seed, random_delays(rng_1), random_delays(rng_2), backends_
    )


@RUNS
@given(function_free_steps, responses)
def test_unseeded_run_replays_from_its_seed(step, xs):
    law_unseeded_run_replays_from_its_seed(step, xs)

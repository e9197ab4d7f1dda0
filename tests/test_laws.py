"""The laws of the pipeline algebra and of the transforms, checked with Hypothesis.

Each law is a plain function named for what it promises, with its statement as its docstring;
the test beside it draws the inputs. Laws "in results" run both sides through ``moa.run`` after
the same responses and before the same random suffix, and compare what comes out.
"""

import operator
import random
from collections import Counter
from functools import reduce

import pytest
from hypothesis import assume, example, given, reject, settings
from hypothesis import strategies as st
from scripted import ScriptedClient, default_reply

import moa
from moa import (Aggregate, Dropout, EmptyInputError, Filter, Map, Parallel, Pipeline, Propose,
                 Rank, Refine, Sample, Shuffle, Synthesize, Take, Vote)

PROMPT = "What is the answer?"
MODELS = ("alpha", "beta", "gamma")
MOA_NAMESPACE = {name: getattr(moa, name) for name in moa.__all__}

#: Laws about values and single transforms: cheap, so many examples.
VALUES = settings(max_examples=200, deadline=None)
#: Laws that run pipelines through the executor.
RUNS = settings(max_examples=75, deadline=None)


# -- strategies -------------------------------------------------------------------------------
texts = st.text(max_size=6)
responses = st.lists(texts, max_size=6)
seeds = st.integers(0, 2**64 - 1)
counts = st.integers(0, 7)
rates = st.floats(0, 1)
text_functions = st.functions(like=lambda s: "", returns=st.text(max_size=6), pure=True)
predicates = st.functions(like=lambda s: True, returns=st.booleans(), pure=True)
backends = st.sampled_from(["asyncio", "trio"])


def transforms(*, functions=True):
    """Shuffle, Dropout, Sample, Take, and (with ``functions``) Filter and Map of drawn functions."""
    plain = [st.just(Shuffle()), rates.map(Dropout), counts.map(Sample), counts.map(Take)]
    if functions:
        plain += [predicates.map(Filter), text_functions.map(Map)]
    return st.one_of(plain)


@st.composite
def llm_steps(draw, models=st.sampled_from(MODELS), options=False):
    """One of the six LLM steps over ``models``; with ``options``, with drawn keyword arguments."""
    kind = draw(st.sampled_from([Propose, Synthesize, Refine, Aggregate, Rank, Vote]))
    kwargs = {}
    if options:
        if draw(st.booleans()):
            kwargs["temp"] = draw(st.floats(min_value=0))
        if draw(st.booleans()):
            kwargs["max_tokens"] = draw(st.integers(1, 4096))
        if kind is not Propose and draw(st.booleans()):
            kwargs["prompt"] = draw(st.text(min_size=1, max_size=20).filter(str.strip))
    if kind in (Propose, Synthesize, Refine):
        args = [draw(st.lists(models, min_size=1, max_size=3))]
        if options and draw(st.booleans()):
            kwargs["min_success"] = draw(st.integers(1, len(args[0])))
    else:
        args = [draw(models)]
        if kind is Rank and draw(st.booleans()):
            kwargs["n"] = draw(st.integers(1, 4))
    try:
        return kind(*args, **kwargs)
    except ValueError:
        reject()  # a temperature the constructor refuses (infinity)


def pipelines(leaves, max_leaves=6):
    """Trees of ``leaves`` joined with ``|``, ``&`` and ``*``."""
    def extend(kids):
        return st.one_of(
            st.lists(kids, max_size=3).map(lambda steps: reduce(operator.or_, steps, Pipeline())),
            st.lists(kids, min_size=1, max_size=3).map(lambda steps: reduce(operator.and_, steps)),
            st.tuples(kids, st.integers(0, 2)).map(lambda t: t[0] * t[1]),
        )
    return st.recursive(leaves, extend, max_leaves=max_leaves)


#: Any step: transforms with drawn functions and LLM steps, nested.
steps = pipelines(transforms() | llm_steps())
#: Steps without user functions and with every constructor option drawn; their reprs evaluate.
plain_steps = pipelines(
    transforms(functions=False)
    | llm_steps(models=st.text(min_size=1, max_size=5), options=True),
    max_leaves=10,
)
#: Steps that are not themselves a Parallel (so ``a & b`` has exactly the branches a and b).
non_parallel_steps = steps.filter(lambda s: not isinstance(s, Parallel))
#: Steps without drawn functions, for runs whose responses Hypothesis cannot replay (an unseeded
#: run calls a drawn function on different texts each time, which Hypothesis rejects as flaky).
function_free_steps = pipelines(transforms(functions=False) | llm_steps())
#: Generators for call delays. True randomness, so the number of calls (fewer when a failing
#: branch cancels its siblings) never changes what Hypothesis draws.
delay_randoms = st.randoms(use_true_random=True)


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


def random_delays(rng):
    """Per-call delays of up to 2 ms, so concurrent calls finish in a shuffled order."""
    return lambda model, msgs: rng.random() * 0.002


def run_after(xs, step, seed, *, delay=0.0, backend="asyncio"):
    """``(result, history)`` of ``feed(xs) | step``, or the name of the error it raised."""
    try:
        return moa.run_sync(feed(xs) | step, PROMPT, client_for(xs, delay), seed=seed,
                            backend=backend)
    except EmptyInputError:
        return "EmptyInputError"


def outcome(xs, step, seed):
    """What ``feed(xs) | step`` gives: its result, outputs and calls (or the error's name)."""
    ran = run_after(xs, step, seed)
    if isinstance(ran, str):
        return ran
    result, history = ran
    return result, history.outputs, history.calls


def apply_all(transforms_, xs, seed):
    """The transforms applied in turn, on one ``random.Random(seed)``, as the executor does."""
    rng = random.Random(seed)
    for t in transforms_:
        xs = t.apply(list(xs), rng)
    return xs


def is_subsequence(part, whole):
    """Whether ``part`` is ``whole`` with some items left out, the rest in order."""
    rest = iter(whole)
    return all(any(x == y for y in rest) for x in part)


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
@example(Synthesize(["a"], temp=1e308, max_tokens=1) | Vote("b", temp=5e-324))
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


def law_and_concatenates(a, b, xs, seed):
    """The outputs of a & b are a's outputs followed by b's, each branch run on a generator
    drawn from the run's in branch order; either branch failing fails the whole."""
    rng = random.Random(seed)
    seed_a, seed_b = rng.getrandbits(64), rng.getrandbits(64)
    both = run_after(xs, a & b, seed)
    alone_a, alone_b = run_after(xs, a, seed_a), run_after(xs, b, seed_b)
    if isinstance(alone_a, str) or isinstance(alone_b, str):
        assert both == "EmptyInputError"
        return
    result, history = both
    fed = len(run_after(xs, Pipeline(), seed)[1].calls)
    assert history.outputs == alone_a[1].outputs + alone_b[1].outputs
    assert result == (history.outputs[0] if history.outputs else "")
    assert history.calls == (alone_a[1].calls + alone_b[1].calls[fed:])


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


# -- transforms: equivalences, applied directly and in results --------------------------------
def law_take_of_take_is_take_of_min(n, m, xs, seed, after):
    """Taking n, then m, is taking min(n, m)."""
    assert apply_all([Take(n), Take(m)], xs, seed) == apply_all([Take(min(n, m))], xs, seed)
    assert outcome(xs, Take(n) | Take(m) | after, seed) == outcome(xs, Take(min(n, m)) | after, seed)


def law_filter_of_filter_is_filter_of_both(p, q, xs, seed, after):
    """Filtering by p, then by q, is filtering by "p and q"."""
    both = Filter(lambda s: p(s) and q(s))
    assert apply_all([Filter(p), Filter(q)], xs, seed) == apply_all([both], xs, seed)
    assert outcome(xs, Filter(p) | Filter(q) | after, seed) == outcome(xs, both | after, seed)


def law_map_of_map_is_map_of_composition(f, g, xs, seed, after):
    """Mapping f, then g, is mapping their composition."""
    composed = Map(lambda s: g(f(s)))
    assert apply_all([Map(f), Map(g)], xs, seed) == apply_all([composed], xs, seed)
    assert outcome(xs, Map(f) | Map(g) | after, seed) == outcome(xs, composed | after, seed)


def law_map_of_identity_is_identity(xs, seed, after):
    """Mapping the identity function changes nothing."""
    assert apply_all([Map(lambda s: s)], xs, seed) == xs
    assert outcome(xs, Map(lambda s: s) | after, seed) == outcome(xs, after, seed)


def law_dropout_of_zero_is_identity(xs, seed, after):
    """Dropout at rate 0 changes nothing, and draws nothing from the generator."""
    assert apply_all([Dropout(0)], xs, seed) == xs
    assert outcome(xs, Dropout(0) | after, seed) == outcome(xs, after, seed)


def law_map_commutes_with(step, f, xs, seed, after):
    """Mapping f before a step that only picks and orders responses is mapping f after it,
    under the same seed."""
    assert apply_all([Map(f), step], xs, seed) == apply_all([step, Map(f)], xs, seed)
    assert outcome(xs, Map(f) | step | after, seed) == outcome(xs, step | Map(f) | after, seed)


def law_filter_after_map_is_map_after_filter(f, p, xs, seed, after):
    """Filtering by p after mapping f is filtering by "p of f" before it."""
    before = Filter(lambda s: p(f(s)))
    assert apply_all([Map(f), Filter(p)], xs, seed) == apply_all([before, Map(f)], xs, seed)
    assert outcome(xs, Map(f) | Filter(p) | after, seed) == outcome(xs, before | Map(f) | after, seed)


@RUNS
@given(counts, counts, responses, seeds, steps)
def test_take_of_take_is_take_of_min(n, m, xs, seed, after):
    law_take_of_take_is_take_of_min(n, m, xs, seed, after)


@RUNS
@given(predicates, predicates, responses, seeds, steps)
def test_filter_of_filter_is_filter_of_both(p, q, xs, seed, after):
    law_filter_of_filter_is_filter_of_both(p, q, xs, seed, after)


@RUNS
@given(text_functions, text_functions, responses, seeds, steps)
def test_map_of_map_is_map_of_composition(f, g, xs, seed, after):
    law_map_of_map_is_map_of_composition(f, g, xs, seed, after)


@RUNS
@given(responses, seeds, steps)
def test_map_of_identity_is_identity(xs, seed, after):
    law_map_of_identity_is_identity(xs, seed, after)


@RUNS
@given(responses, seeds, steps)
def test_dropout_of_zero_is_identity(xs, seed, after):
    law_dropout_of_zero_is_identity(xs, seed, after)


@pytest.mark.parametrize("picking", [st.just(Shuffle()), counts.map(Take), counts.map(Sample),
                                     rates.map(Dropout)],
                         ids=["Shuffle", "Take", "Sample", "Dropout"])
@RUNS
@given(data=st.data(), f=text_functions, xs=responses, seed=seeds, after=steps)
def test_map_commutes_with(picking, data, f, xs, seed, after):
    law_map_commutes_with(data.draw(picking, label="step"), f, xs, seed, after)


@RUNS
@given(text_functions, predicates, responses, seeds, steps)
def test_filter_after_map_is_map_after_filter(f, p, xs, seed, after):
    law_filter_after_map_is_map_after_filter(f, p, xs, seed, after)


# -- transforms: what each one may do ---------------------------------------------------------
def law_shuffle_permutes(xs, seed):
    """Shuffling gives a permutation of the responses."""
    assert Counter(Shuffle().apply(list(xs), random.Random(seed))) == Counter(xs)


def law_sample_is_a_sub_multiset(n, xs, seed):
    """Sampling n gives min(n, len) of the responses, each used at most as often as given."""
    out = Sample(n).apply(list(xs), random.Random(seed))
    assert len(out) == min(n, len(xs))
    assert Counter(out) <= Counter(xs)


def law_dropout_keeps_an_ordered_non_empty_subset(rate, xs, seed):
    """Dropout keeps some responses in their order, and at least one of a non-empty list."""
    out = Dropout(rate).apply(list(xs), random.Random(seed))
    assert is_subsequence(out, xs)
    assert Counter(out) <= Counter(xs)
    assert bool(out) == bool(xs)


def law_full_dropout_keeps_exactly_one(xs, seed):
    """Dropout at rate 1 keeps exactly one response of a non-empty list."""
    out = Dropout(1).apply(list(xs), random.Random(seed))
    assert len(out) == min(1, len(xs))
    assert all(x in xs for x in out)


def law_transforms_leave_their_input_alone(step, xs, seed):
    """Applying a transform never changes the list it was given."""
    given_ = list(xs)
    step.apply(given_, random.Random(seed))
    assert given_ == xs


@VALUES
@given(responses, seeds)
def test_shuffle_permutes(xs, seed):
    law_shuffle_permutes(xs, seed)


@VALUES
@given(counts, responses, seeds)
def test_sample_is_a_sub_multiset(n, xs, seed):
    law_sample_is_a_sub_multiset(n, xs, seed)


@VALUES
@given(rates, responses, seeds)
@example(1.0, ["a", "b", "a"], 0)
@example(0.5, [], 0)
def test_dropout_keeps_an_ordered_non_empty_subset(rate, xs, seed):
    law_dropout_keeps_an_ordered_non_empty_subset(rate, xs, seed)


@VALUES
@given(responses, seeds)
def test_full_dropout_keeps_exactly_one(xs, seed):
    law_full_dropout_keeps_exactly_one(xs, seed)


@VALUES
@given(transforms(), responses, seeds)
def test_transforms_leave_their_input_alone(step, xs, seed):
    law_transforms_leave_their_input_alone(step, xs, seed)


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
    law_run_is_deterministic_under_a_seed(step, xs, seed, random_delays(rng_1),
                                          random_delays(rng_2), backends_)


@RUNS
@given(function_free_steps, responses)
def test_unseeded_run_replays_from_its_seed(step, xs):
    law_unseeded_run_replays_from_its_seed(step, xs)

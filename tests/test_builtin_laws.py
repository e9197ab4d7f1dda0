"""The built-in transforms' laws, checked with moa.testing, the checker users get.

Each ``check_laws`` line defines one test per law (``test_take_fuses``, ...), so
``pytest -k fuses`` runs every fusion law. The laws apply transforms directly, as the
executor does; the last tests show that this agrees with ``moa.run``.
"""

import random

from hypothesis import example, given, settings
from hypothesis import strategies as st

import moa
from moa import (
    Aggregate,
    Dropout,
    Filter,
    Majority,
    Map,
    MostConfident,
    MostConsistent,
    Pipeline,
    Rank,
    Refine,
    Sample,
    Shuffle,
    Take,
    WeightedMajority,
)
from moa.testing import (
    ScriptedClient,
    check_laws,
    commutes_with_map,
    deterministic_under_seed,
    equivalent_to,
    fuses,
    idempotent,
    identity_at,
    length_bound,
    never_empty,
    order_preserving,
    permutation,
    pipelines,
    predicates,
    responses,
    scripted_clients,
    seeds,
    sub_multiset,
    text_functions,
    transforms,
)
from moa.testing._case import _Fed, _feed, _interpret, _Probe

counts = st.integers(0, 7)
rates = st.floats(0, 1)
#: Laws of one transform applied directly: cheap, so many examples.
EXAMPLES = 100


def and_also(p, q):
    """The predicate "p and q", for Filter's fusion."""
    return lambda text: p(text) and q(text)


def then(f, g):
    """g after f, for Map's fusion."""
    return lambda text: g(f(text))


def identity(text):
    return text


def always(text):
    return True


def up_to(n, k):
    """At most k of n: what Take(k) and Sample(k) give."""
    return min(n, k)


check_laws(
    Shuffle(),
    [permutation, never_empty, deterministic_under_seed, commutes_with_map],
    max_examples=EXAMPLES,
)

check_laws(
    Dropout,
    [
        sub_multiset,
        order_preserving,
        never_empty,
        length_bound(at_least=lambda n, rate: min(n, 1)),
        deterministic_under_seed,
        commutes_with_map,
        identity_at(0),
    ],
    params=rates,
    max_examples=EXAMPLES,
)
# Rate 1 keeps exactly one response of a non-empty list.
check_laws(
    Dropout(1),
    [length_bound(lambda n: min(n, 1), at_least=lambda n: min(n, 1))],
    max_examples=EXAMPLES,
)

check_laws(
    Sample,
    [
        sub_multiset,
        length_bound(up_to, at_least=up_to),
        deterministic_under_seed,
        commutes_with_map,
    ],
    params=counts,
    max_examples=EXAMPLES,
)
check_laws(
    Sample,
    [never_empty],
    params=st.integers(1, 7),
    name="sample_of_one_or_more",
    max_examples=EXAMPLES,
)

check_laws(
    Take,
    [
        sub_multiset,
        order_preserving,
        length_bound(up_to, at_least=up_to),
        deterministic_under_seed,
        idempotent,
        commutes_with_map,
        fuses(min),
    ],
    params=counts,
    max_examples=EXAMPLES,
)
check_laws(
    Take, [never_empty], params=st.integers(1, 7), name="take_of_one_or_more", max_examples=EXAMPLES
)

check_laws(
    Filter,
    [
        sub_multiset,
        order_preserving,
        deterministic_under_seed,
        idempotent,
        identity_at(always),
        fuses(and_also),
    ],
    params=predicates(),
    max_examples=EXAMPLES,
)

check_laws(
    Map,
    [
        never_empty,
        length_bound(lambda n, f: n, at_least=lambda n, f: n),
        deterministic_under_seed,
        identity_at(identity),
        fuses(then),
    ],
    params=text_functions(),
    max_examples=EXAMPLES,
)


def map_then_filter(fp):
    f, p = fp
    return Map(f) | Filter(p)


def filter_then_map(fp):
    f, p = fp
    return Filter(lambda text: p(f(text))) | Map(f)


# Filtering by p after mapping f is filtering by "p of f" before it.
check_laws(
    map_then_filter,
    [equivalent_to(filter_then_map)],
    params=st.tuples(text_functions(), predicates()),
    max_examples=EXAMPLES,
)


# -- LLM steps, through the executor with drawn scripted clients ---------------------------------
#: Runs through the executor cost more than applying a transform.
LLM_EXAMPLES = 25

# A judge's reply may rank, name too few, or say nothing readable: Rank keeps responses verbatim.
check_laws(
    Rank("judge", n=2),
    [sub_multiset, never_empty, length_bound(lambda n: min(n, 2)), deterministic_under_seed],
    clients=scripted_clients(texts=["2, 1", "3", "no idea", "1 > 3 > 2"]),
    max_examples=LLM_EXAMPLES,
)
# One refined response per response, whatever transient failures the retries absorb.
check_laws(
    Refine(["a", "b"]),
    [length_bound(lambda n: n, at_least=lambda n: n), deterministic_under_seed],
    clients=scripted_clients(transient=st.integers(0, 2)),
    max_examples=LLM_EXAMPLES,
)
check_laws(
    Aggregate("a"), [never_empty, length_bound(lambda n: min(n, 1))], max_examples=LLM_EXAMPLES
)
# The selection steps keep one of their responses, verbatim, whatever the confidences drawn;
# keeping one from one is keeping it.
SELECTION_LAWS = [
    sub_multiset,
    never_empty,
    length_bound(lambda n: min(n, 1)),
    deterministic_under_seed,
    idempotent,
]
for selection in (
    Majority(),
    Majority(r"[ab]"),
    WeightedMajority(),
    WeightedMajority(drop=0.5),
    MostConsistent(),
    MostConfident(),
):
    check_laws(selection, SELECTION_LAWS, max_examples=LLM_EXAMPLES)


# -- what the laws cannot say ------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(transforms(), responses(), seeds())
def test_transforms_leave_their_input_alone(step, xs, seed):
    given_ = list(xs)
    step.apply(given_, random.Random(seed))
    assert given_ == xs


@settings(max_examples=100, deadline=None)
@given(rates, responses(), seeds())
@example(1.0, ["a", "b", "a"], 0)
@example(0.5, [], 0)
def test_dropout_of_a_non_empty_list_keeps_one_at_least(rate, xs, seed):
    out = Dropout(rate).apply(list(xs), random.Random(seed))
    assert bool(out) == bool(xs)


# -- the laws' direct application is the executor's ----------------------------------------------
@settings(max_examples=75, deadline=None)
@given(pipelines(transforms(), max_leaves=5), responses(), seeds())
@example(Shuffle() & (Sample(2) | Dropout(0.5)), ["x", "y", "z"], 3)
def test_applying_transforms_directly_is_running_them(step, xs, seed):
    """moa.testing applies a tree of transforms without the executor; both give the same
    outputs and leave the generator in the same state."""
    probed = step | _Probe()
    # Directly first: drawn functions then meet their arguments in a fixed order.
    direct = _interpret(probed, list(xs), random.Random(seed))
    _, history = moa.run_sync(_feed(xs) | probed, "Q?", _Fed(ScriptedClient(), xs), seed=seed)
    assert list(history.outputs) == direct
    assert _interpret(Pipeline(), list(xs), random.Random(seed)) == xs

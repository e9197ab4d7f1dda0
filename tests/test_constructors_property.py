"""Every public constructor, given arbitrary values, either builds a value whose repr, hash and
equality work, or raises ValueError, TypeError or one of moa's own errors with the rule it
broke: never an OverflowError, MemoryError, RecursionError or an error from deep inside."""

from __future__ import annotations

import math
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import moa
from moa import (
    Agent,
    Aggregate,
    AggregateSeq,
    Dropout,
    Filter,
    Limits,
    Majority,
    Map,
    ModelLimit,
    MostConfident,
    MostConsistent,
    Parallel,
    Pick,
    Pipeline,
    Price,
    Prices,
    Propose,
    Rank,
    Refine,
    Retry,
    RunOptions,
    Sample,
    Shuffle,
    Synthesize,
    Take,
    Vote,
    WeightedMajority,
)
from moa.errors import MoaError

ALLOWED = (ValueError, TypeError, MoaError)


class Hostile:
    """A value whose dunder methods fail, as a user's odd object might; armed only while the
    test body runs, so Hypothesis can still print a failing example."""

    armed = False

    def _fail(self, what):
        if Hostile.armed:
            raise RuntimeError(f"{what} failed")

    def __repr__(self):
        self._fail("repr")
        return "Hostile()"

    def __eq__(self, other):
        self._fail("eq")
        return self is other

    def __hash__(self):
        self._fail("hash")
        return id(self)

    def __len__(self):
        self._fail("len")
        return 0

    def __iter__(self):
        self._fail("iter")
        return iter(())


def _f(text):
    return text


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([0, -1, 1, 2, 2**63, 10**20, 10**300]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(st.characters(codec=None), max_size=8),
    st.sampled_from(["", " ", "m", "\ud800"]),
    st.binary(max_size=4),
    st.builds(Hostile),
    st.just(_f),
    st.just(math.inf),
    st.complex_numbers(allow_nan=True),
    st.just(object()),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=4), inner, max_size=3),
    ),
    max_leaves=8,
)

CONSTRUCTORS = [
    Agent,
    RunOptions,
    Majority,
    WeightedMajority,
    MostConsistent,
    MostConfident,
    Propose,
    Synthesize,
    Aggregate,
    Refine,
    Rank,
    Vote,
    Pick,
    AggregateSeq,
    Shuffle,
    Dropout,
    Sample,
    Take,
    Filter,
    Map,
    Retry,
    ModelLimit,
    Limits,
    Price,
    Prices,
    Pipeline,
    Parallel,
]
KEYWORDS = [
    "model",
    "system",
    "name",
    "temp",
    "max_tokens",
    "min_success",
    "quorum",
    "prompt",
    "n",
    "times",
    "window",
    "reserved",
    "extract",
    "drop",
    "attempts",
    "initial",
    "max_wait",
    "jitter",
    "retry_on",
    "max_retry_after",
    "seed",
    "max_concurrency",
    "timeout",
    "hedge_after",
    "concurrency",
    "rpm",
    "tpm",
    "default",
    "input",
    "output",
]


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    make=st.sampled_from(CONSTRUCTORS),
    args=st.lists(values, max_size=3),
    kwargs=st.dictionaries(st.sampled_from(KEYWORDS), values, max_size=3),
)
def test_a_constructor_builds_a_working_value_or_says_what_rule_was_broken(make, args, kwargs):
    Hostile.armed = True
    try:
        try:
            with warnings.catch_warnings():  # Vote(extract=...), the deprecated spelling
                warnings.simplefilter("ignore", DeprecationWarning)
                built = make(*args, **kwargs)
        except ALLOWED as exc:
            str(exc)  # the message itself can be shown
            return
        # Built: its repr, hash and equality work, whatever went in.
        repr(built)
        if getattr(type(built), "__hash__", None) is not None:
            try:
                hash(built)
            except TypeError:  # an unhashable field (a dict) is Python's own rule
                pass
        assert built == built or built != built
    finally:
        Hostile.armed = False


# Integers past Python's 4,300-digit str limit cannot be shown by Hypothesis either, so they
# are tried here in every argument of every constructor, without it.
HUGE = [10**5000, -(10**5000)]


@pytest.mark.parametrize("make", CONSTRUCTORS, ids=lambda c: c.__name__)
def test_a_huge_integer_anywhere_is_refused_or_shown(make):
    for huge in HUGE:
        for args, kwargs in [
            ((huge,), {}),
            (("m", huge), {}),
            ((["m"], huge), {}),
            *[(("m",), {k: huge}) for k in KEYWORDS],
            *[((["m"],), {k: huge}) for k in KEYWORDS],
            *[((), {k: huge}) for k in KEYWORDS],
        ]:
            try:
                with warnings.catch_warnings():  # Vote(extract=...), the deprecated spelling
                    warnings.simplefilter("ignore", DeprecationWarning)
                    built = make(*args, **kwargs)
            except ALLOWED as exc:
                str(exc)  # the message itself can be shown
                continue
            repr(built)


@pytest.mark.parametrize(
    ("make", "args", "kwargs", "rule"),
    [
        (Take, (10**5000,), {}, "n must be"),
        (Pick, ("m",), {"times": 1_000_000_000}, "times must be"),
        (Propose, (["m"] * 1001,), {}, "at most 1,000"),
        (Rank, ("m",), {"n": 10**30}, "n must be"),
    ],
    ids=["Take", "Pick", "Propose", "Rank"],
)
def test_huge_sizes_are_refused_at_construction(make, args, kwargs, rule):
    with pytest.raises(ValueError, match=rule):
        make(*args, **kwargs)


def test_every_public_step_is_covered():
    steps = {
        name
        for name in moa.__all__
        if isinstance(getattr(moa, name), type)
        and issubclass(getattr(moa, name), moa.Step)
        and getattr(moa, name) not in (moa.Step, moa.Transform, moa.LLMStep)
    }
    assert steps <= {c.__name__ for c in CONSTRUCTORS}

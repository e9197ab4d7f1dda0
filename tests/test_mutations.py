"""The checker catches broken steps: each mutant below breaks a law a built-in obeys, and the
law fails with a message naming the step and the law and showing a counterexample that, pasted
back, breaks the law again."""

import ast
import itertools
import random
import re
from collections import Counter

import pytest
from hypothesis import strategies as st

from moa import Map, transform
from moa.testing import (
    LawViolation,
    check_laws,
    deterministic_under_seed,
    fuses,
    length_bound,
    never_empty,
    order_preserving,
    permutation,
)


# -- the mutants -------------------------------------------------------------------------------
@transform
def lossy_shuffle(responses, rng):
    """Shuffle, but lose the last response of three or more."""
    out = rng.sample(responses, len(responses))
    return out[:-1] if len(out) >= 3 else out


@transform
def emptying_dropout(responses, rng, rate):
    """Dropout without its rule that one response always survives."""
    return [r for r in responses if rng.random() >= rate]


@transform
def global_shuffle(responses, rng):
    """Shuffle with the global random module instead of the run's generator."""
    out = list(responses)
    random.shuffle(out)
    return out


calls = itertools.count()
#: A map that is not pure: each call numbers its text.
impure_map = Map(lambda text: f"{text}#{next(calls)}")


@transform
def greedy_take(responses, rng, n):
    """Take, one too many."""
    return responses[: n + 1]


@transform
def sorting_filter(responses, rng):
    """Keep the non-empty responses, sorted."""
    return sorted(r for r in responses if r)


# -- reading a failure ---------------------------------------------------------------------------
def caught(law, subject, **options):
    """The message of the LawViolation that ``law`` raises for ``subject``."""
    with pytest.raises(LawViolation) as info:
        law(subject, **options)
    return str(info.value)


def shown(message, label):
    """The value shown beside ``label:`` in a failure message, read back as Python."""
    match = re.search(rf"^  {re.escape(label)}:\s+(.*)$", message, re.MULTILINE)
    assert match, f"no {label!r} in:\n{message}"
    return ast.literal_eval(match.group(1))


def test_a_shuffle_that_drops_an_item_breaks_permutation():
    message = caught(permutation, lossy_shuffle)
    assert message.startswith(
        "lossy_shuffle breaks the law permutation: the outputs are the inputs in some order."
    )
    xs, seed = shown(message, "inputs"), shown(message, "seed")
    assert len(xs) == 3  # the smallest list it loses from
    out = lossy_shuffle.apply(list(xs), random.Random(seed))
    assert shown(message, "outputs") == out and Counter(out) != Counter(xs)


def test_a_dropout_that_can_empty_the_list_breaks_never_empty():
    message = caught(never_empty, emptying_dropout, params=st.floats(0, 1))
    assert message.startswith("emptying_dropout breaks the law never_empty")
    xs, seed, rate = shown(message, "inputs"), shown(message, "seed"), shown(message, "param")
    assert xs and shown(message, "outputs") == []
    assert emptying_dropout(rate).apply(list(xs), random.Random(seed)) == []


def test_a_step_that_uses_the_global_random_breaks_determinism():
    state = random.getstate()
    message = caught(deterministic_under_seed, global_shuffle)
    assert message.startswith("global_shuffle breaks the law deterministic_under_seed")
    assert "changed the state of the global random module; draw from the rng argument" in message
    assert len(shown(message, "inputs")) >= 2  # shuffling fewer draws nothing
    assert random.getstate() == state  # the checker puts the global state back


def test_a_map_that_is_not_pure_breaks_determinism():
    message = caught(deterministic_under_seed, impure_map)
    assert message.startswith("Map(<lambda>) breaks the law deterministic_under_seed")
    xs = shown(message, "inputs")
    first, second = shown(message, "first run"), shown(message, "second run")
    assert xs and first != second


def test_a_take_of_one_too_many_breaks_its_length_bound_but_still_fuses():
    fuses(min)(greedy_take, params=st.integers(0, 7))  # (a+1) then (b+1) is min(a, b)+1
    message = caught(length_bound(lambda n, k: min(n, k)), greedy_take, params=st.integers(0, 7))
    assert message.startswith("greedy_take breaks the law length_bound")
    xs, k = shown(message, "inputs"), shown(message, "param")
    assert len(shown(message, "outputs")) == k + 1 <= len(xs)
    assert re.search(r"why: +\d+ outputs of \d+ inputs, and the bound is 0 to \d+", message)


def test_a_sorting_filter_breaks_order_preservation():
    message = caught(order_preserving, sorting_filter)
    xs, out = shown(message, "inputs"), shown(message, "outputs")
    assert out == sorted(x for x in xs if x) and out != [x for x in xs if x]


def test_check_laws_turns_each_failure_into_a_failing_test():
    tests = check_laws(lossy_shuffle, [deterministic_under_seed, permutation], namespace={})
    assert list(tests) == [
        "test_lossy_shuffle_deterministic_under_seed",
        "test_lossy_shuffle_permutation",
    ]
    tests["test_lossy_shuffle_deterministic_under_seed"]()
    with pytest.raises(LawViolation, match="lossy_shuffle breaks the law permutation"):
        tests["test_lossy_shuffle_permutation"]()

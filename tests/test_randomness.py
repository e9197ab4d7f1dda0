"""The random steps are random: over many fixed seeds every outcome the docs promise is reached,
each about as often as a fair draw reaches it.

The docs promise Shuffle's "random order", Sample's "a random subset", Dropout's per-response
rate and its fallback ("one chosen at random is kept"), Pick's random order and its rotations,
and ties broken at random by Pick and Majority(...). The laws (permutation, sub_multiset,
...) hold just as well for a Shuffle that returns its input, so these tests count outcomes.

How a test decides: the step runs on the seeds 0 .. SEEDS - 1, each with
``random.Random(seed)``, the generator a seeded run hands it (the last test checks that through
``moa.run_sync``), and outcomes are counted in cells: a response at a position, an order, a
winner. Under a correct step a cell's count is Binomial(SEEDS, p) for the p the test states;
:func:`acceptance` sums the binomial tails exactly to find the interval outside which each
tail holds at most ``FALSE_FAILURE / (2 * cells)``. By the union bound over a test's cells (no
independence needed) a correct step fails a test with probability at most FALSE_FAILURE, 1e-9.
The seeds are fixed, so no run flakes: the bound is the risk that another set of seeds, or a
change in Python's generator, trips a correct step. The mistakes the tests are for (a Shuffle
that returns its input, a Sample of the first n, a fallback or tie-break that always takes the
first) put some cell at 0 or at SEEDS, far outside every interval.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from fractions import Fraction
from functools import cache
from itertools import permutations
from math import comb, exp, lgamma, log, log1p

import pytest

import moa
from moa import (
    Confidence,
    Dropout,
    Majority,
    MostConfident,
    MostConsistent,
    Pick,
    Propose,
    Response,
    Sample,
    Shuffle,
    Transform,
    WeightedMajority,
)
from moa.steps import OffLoop
from moa.testing import ScriptedClient

#: Seeds per test: 0 .. SEEDS - 1.
SEEDS = 2000
#: The most probability with which a correct step may fail one test.
FALSE_FAILURE = 1e-9

XS = ("r0", "r1", "r2", "r3")


# -- the acceptance intervals -------------------------------------------------------------------
@cache
def acceptance(p: float, cells: int) -> tuple[int, int]:
    """The counts ``[lo, hi]`` a Binomial(SEEDS, p) count falls outside with probability at
    most ``FALSE_FAILURE / cells``: the narrowest interval whose two tails each hold at most
    half that."""
    alpha = FALSE_FAILURE / cells / 2
    pmf = [
        exp(
            lgamma(SEEDS + 1)
            - lgamma(k + 1)
            - lgamma(SEEDS - k + 1)
            + k * log(p)
            + (SEEDS - k) * log1p(-p)
        )
        for k in range(SEEDS + 1)
    ]
    lo, tail = 0, 0.0
    while tail + pmf[lo] <= alpha:
        tail += pmf[lo]
        lo += 1
    hi, tail = SEEDS, 0.0
    while tail + pmf[hi] <= alpha:
        tail += pmf[hi]
        hi -= 1
    return lo, hi


def assert_frequencies(counts: Counter, expected: dict, cells: int | None = None) -> None:
    """Each outcome's count lies in the acceptance interval of its probability in
    ``expected`` (outcome -> p), for a test of ``cells`` cells (default: the outcomes); an
    outcome not in ``expected`` never happens."""
    unexpected = {o: c for o, c in counts.items() if o not in expected}
    assert not unexpected, f"outcomes that must never happen did: {unexpected}"
    outside = {}
    for o, p in expected.items():
        lo, hi = acceptance(p, cells or len(expected))
        if not lo <= counts[o] <= hi:
            outside[o] = f"{counts[o]} not in [{lo}, {hi}]"
    assert not outside, f"counts of {SEEDS} seeds outside their intervals: {outside}"


def uniform(outcomes) -> dict:
    outcomes = list(outcomes)
    return {o: 1 / len(outcomes) for o in outcomes}


@pytest.mark.parametrize(
    "p, cells",
    [(Fraction(1, 4), 16), (Fraction(1, 24), 24), (Fraction(1, 20), 20), (Fraction(3, 10), 10)],
)
def test_each_interval_leaves_out_at_most_its_share_of_false_failures(p, cells):
    # The bound every test rests on, checked in exact integer arithmetic: each tail outside
    # [lo, hi] holds at most FALSE_FAILURE / (2 * cells), and the interval is the narrowest
    # such (one count further in, a tail would hold more).
    lo, hi = acceptance(float(p), cells)
    a, b = p.numerator, p.denominator
    weight = [comb(SEEDS, k) * a**k * (b - a) ** (SEEDS - k) for k in range(SEEDS + 1)]
    total = b**SEEDS  # == sum(weight)
    alpha = Fraction(FALSE_FAILURE) / cells / 2
    assert Fraction(sum(weight[:lo]), total) <= alpha < Fraction(sum(weight[: lo + 1]), total)
    assert Fraction(sum(weight[hi + 1 :]), total) <= alpha < Fraction(sum(weight[hi:]), total)


# -- running a step on a seed -------------------------------------------------------------------
def shown(messages) -> tuple[str, ...]:
    """The responses a request's messages show its model, in the order shown."""
    user = messages[-1]["content"].split("\n\nQuestion:")[0]
    return tuple(re.findall(r"Response \d+:\n(.*?)(?:\n\n|$)", user, re.S))


def judge_picks_first(request: moa.steps.Request) -> str:
    """A judge with a pure position bias: it picks whichever response it is shown first."""
    return "1"


def outcome(step, xs, seed):
    """``(outputs, notes, rounds of requests)`` of ``step`` on ``xs`` with
    ``random.Random(seed)``. A transform is applied; an LLM step's plan is driven as the
    executor drives it, :func:`judge_picks_first` answering every request."""
    rng = random.Random(seed)
    if isinstance(step, Transform):
        return step.apply(list(xs), rng), [], []
    plan = step.plan("Q?", list(xs), rng)
    rounds, replies = [], None
    while True:
        try:
            requests = plan.send(replies)
        except StopIteration as done:
            out, notes = done.value
            return out, notes, rounds
        if isinstance(requests, OffLoop):  # the executor does it off the loop; here, inline
            replies = requests.fn(*requests.args)
            continue
        rounds.append(requests)
        replies = [judge_picks_first(r) for r in requests]


def outputs_over_seeds(step, xs) -> Counter:
    """How often each output list (as a tuple) came out over the seeds."""
    return Counter(tuple(outcome(step, xs, seed)[0]) for seed in range(SEEDS))


def positions_over_seeds(orders) -> Counter:
    """How often each (response, position) pair occurs in the orders, one order a seed."""
    return Counter((x, i) for order in orders for i, x in enumerate(order))


# -- Shuffle ------------------------------------------------------------------------------------
def test_shuffle_puts_every_response_in_every_position_equally_often():
    # 16 cells (response, position), each p = 1/4: a count must lie in [377, 630].
    orders = [outcome(Shuffle(), XS, seed)[0] for seed in range(SEEDS)]
    assert_frequencies(
        positions_over_seeds(orders), {(x, i): 1 / 4 for x in XS for i in range(len(XS))}
    )


def test_shuffle_reaches_every_order_equally_often():
    # 24 cells, the orders of 4, each p = 1/24: a count must lie in [31, 148]. Fair positions
    # are not enough: a random rotation has them and reaches only 4 of the 24 orders.
    assert_frequencies(outputs_over_seeds(Shuffle(), XS), uniform(permutations(XS)))


# -- Sample -------------------------------------------------------------------------------------
def test_sample_reaches_every_ordered_subset_equally_often():
    # Sample(2) of 5: 20 cells, the ordered pairs, each p = 1/20: a count must lie in
    # [43, 170]. So every response is in the sample as often (2/5), in either place.
    xs = XS + ("r4",)
    assert_frequencies(outputs_over_seeds(Sample(2), xs), uniform(permutations(xs, 2)))


def test_sample_of_more_than_there_are_is_a_fair_shuffle():
    # Sample(7) of 3: 6 cells, the orders of 3, each p = 1/6: a count must lie in [232, 444].
    assert_frequencies(outputs_over_seeds(Sample(7), XS[:3]), uniform(permutations(XS[:3])))


# -- Dropout ------------------------------------------------------------------------------------
@pytest.mark.parametrize("rate", [0.3, 0.8])
def test_dropout_drops_each_response_at_its_rate_independently(rate):
    # 5 responses; 10 cells, so each tail outside an interval holds at most 5e-11:
    # - each response is missing with p = rate - rate**5 / 5 (dropped, less the times the
    #   fallback keeps it when all five were dropped): 0.29951 or 0.734464;
    # - the number kept is binomial, and 1 also when all five were dropped: a step that drops
    #   all or none together has the right rate per response and fails here.
    xs = XS + ("r4",)
    k = len(xs)
    missing, kept = Counter(), Counter()
    for seed in range(SEEDS):
        out = outcome(Dropout(rate), xs, seed)[0]
        missing.update(x for x in xs if x not in out)
        kept[len(out)] += 1
    assert_frequencies(missing, {x: rate - rate**k / k for x in xs}, cells=2 * k)
    law = {j: comb(k, j) * (1 - rate) ** j * rate ** (k - j) for j in range(1, k + 1)}
    law[1] += rate**k
    assert_frequencies(kept, law, cells=2 * k)


def test_dropout_that_drops_everything_keeps_each_response_equally_often():
    # Dropout(1) drops every response, so the fallback keeps one chosen at random: 4 cells,
    # each p = 1/4: a count must lie in [381, 626].
    assert_frequencies(outputs_over_seeds(Dropout(1), XS), uniform((x,) for x in XS))


# -- Pick ---------------------------------------------------------------------------------------
def test_pick_shows_every_response_in_every_position_equally_often_and_rotates_it():
    # The first ask's order over seeds: 16 cells (response, position), each p = 1/4: a count
    # must lie in [377, 630]. Within each seed, the 4 asks are rotations of the first, so
    # every response takes every position once (checked exactly, no chance involved).
    first_orders = []
    for seed in range(SEEDS):
        _, _, rounds = outcome(Pick("judge", times=4), XS, seed)
        orders = [shown(r.messages) for r in rounds[0]]
        first = orders[0]
        assert orders == [first[k:] + first[:k] for k in range(4)], (seed, orders)
        first_orders.append(first)
    assert_frequencies(
        positions_over_seeds(first_orders), {(x, i): 1 / 4 for x in XS for i in range(len(XS))}
    )


def test_pick_breaks_a_tie_uniformly_at_random():
    # A judge that always picks the first response it sees, asked over the 3 rotations of 3
    # responses, picks each once: a three-way tie. 3 cells, each p = 1/3: a count must lie in
    # [537, 801].
    wins = Counter()
    for seed in range(SEEDS):
        out, notes, _ = outcome(Pick("judge", times=3), XS[:3], seed)
        assert "a tie, broken at random" in notes[0]
        wins[tuple(out)] += 1
    assert_frequencies(wins, uniform((x,) for x in XS[:3]))


# -- Majority(...) ----------------------------------------------------------------------------
def test_vote_breaks_a_tie_uniformly_at_random_among_the_tied_answers_only():
    # Answers 1, 2, 2, 1, 3: "1" and "2" tie with two votes each; the winner is the first
    # response giving it. 2 cells, each p = 1/2: a count must lie in [861, 1139]; "3" never.
    xs = ("a: 1", "b: 2", "c: 2", "d: 1", "e: 3")
    assert_frequencies(
        outputs_over_seeds(Majority(r"\d"), xs), {("a: 1",): 1 / 2, ("b: 2",): 1 / 2}
    )


def sure(*texts: str, mean: float = -1.0) -> tuple[Response, ...]:
    """Responses each with the same confidence, so only chance can break a tie."""
    return tuple(Response(t, agent=t[0], confidence=Confidence(mean, 1)) for t in texts)


def test_weighted_majority_breaks_a_full_tie_uniformly_at_random_among_the_tied_answers():
    # Equal weights, equal best responses: "1" and "2" tie; "3" (one vote) never wins.
    xs = sure("a: 1", "b: 2", "c: 2", "d: 1", "e: 3")
    assert_frequencies(
        outputs_over_seeds(WeightedMajority(r"\d"), xs), {("a: 1",): 1 / 2, ("b: 2",): 1 / 2}
    )


def test_most_confident_breaks_a_tie_uniformly_at_random_among_the_surest():
    xs = (*sure("a", "b", "c", mean=-0.5), *sure("d", mean=-2.0))
    assert_frequencies(
        outputs_over_seeds(MostConfident(), xs), {("a",): 1 / 3, ("b",): 1 / 3, ("c",): 1 / 3}
    )


def test_most_consistent_breaks_a_tie_uniformly_among_equally_consistent_agents():
    # Agents a and b each agree with themselves on every response; c does not.
    xs = sure("a1 7", "a2 7", "b1 8", "b2 8", "c1 5", "c2 6")
    assert_frequencies(
        outputs_over_seeds(MostConsistent(r"\d$"), xs), {("a1 7",): 1 / 2, ("b1 8",): 1 / 2}
    )


# -- the counts above are what seeded runs do ------------------------------------------------------
@pytest.mark.parametrize(
    "step, xs",
    [
        (Shuffle(), XS),
        (Sample(2), XS),
        (Dropout(0.5), XS),
        (Dropout(1), XS),
        (Pick("judge", times=4), XS),
        (Pick("judge", times=3), XS[:3]),
        (Majority(r"\d"), ("a: 1", "b: 2", "c: 2", "d: 1", "e: 3")),
    ],
    ids=repr,
)
def test_a_seeded_run_hands_the_step_the_generator_counted_here(step, xs):
    # The tests above draw from random.Random(seed) directly; moa.run_sync(..., seed=seed)
    # must give the same outputs and show the judge the same orders, so the counts are the
    # runs' counts too.
    feed = {f"p{i}": x for i, x in enumerate(xs)}
    client = ScriptedClient(lambda model, messages: feed.get(model, "1"))
    for seed in range(20):
        out, _, rounds = outcome(step, xs, seed)
        run = client.fresh()
        _, history = moa.run_sync(Propose(list(feed)) | step, "Q?", run, seed=seed)
        assert list(history.outputs) == out
        asked = [c["messages"] for c in run.calls if c["model"] not in feed]
        assert Counter(map(shown, asked)) == Counter(
            shown(r.messages) for requests in rounds for r in requests
        )

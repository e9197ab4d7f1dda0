"""The statistics an eval reports (moa._stats): the Wilson interval against published values
and the quadratic it solves, the paired bootstrap against a reference implementation on the
same random draws, the oracle (beta = 1 - oracle) and the phi coefficient of two members'
errors against Pearson's r."""

from __future__ import annotations

import math
import random
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moa._stats import Z95, oracle, paired_bootstrap, phi, wilson


# -- wilson ------------------------------------------------------------------------------------
def wilson_roots(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson bounds as the roots of the quadratic they solve, (p_hat - p)^2 = z^2 p (1 -
    p) / n, that is (1 + z^2/n) p^2 - (2 p_hat + z^2/n) p + p_hat^2 = 0: another road to the
    same numbers than the centre-and-half-width form moa uses."""
    p_hat = k / n
    a = 1 + z * z / n
    b = -(2 * p_hat + z * z / n)
    c = p_hat * p_hat
    root = math.sqrt(b * b - 4 * a * c)
    return (-b - root) / (2 * a), (-b + root) / (2 * a)


@pytest.mark.parametrize(
    "k, n, low, high",
    [
        # 95 % Wilson intervals to four places, as published (81/263 is Newcombe's 1998
        # worked example); each was also checked against wilson_roots below.
        (0, 10, 0.0, 0.2775),
        (5, 10, 0.2366, 0.7634),
        (81, 263, 0.2553, 0.3662),
        (10, 10, 0.7225, 1.0),
    ],
)
def test_wilson_matches_published_values(k, n, low, high):
    lo, hi = wilson(k, n)
    assert lo == pytest.approx(low, abs=5e-5)
    assert hi == pytest.approx(high, abs=5e-5)


@pytest.mark.parametrize("k, n", [(0, 10), (5, 10), (81, 263), (1, 1), (3, 7), (99, 100)])
def test_wilson_solves_its_quadratic(k, n):
    assert wilson(k, n) == pytest.approx(wilson_roots(k, n), abs=1e-12)


@given(st.integers(1, 10_000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_holds_the_estimate_and_mirrors(kn):
    k, n = kn
    lo, hi = wilson(k, n)
    assert 0.0 <= lo <= hi <= 1.0
    # Within an ulp at the ends (see test_wilson_bounds_at_the_ends_are_exact).
    assert lo <= k / n + 1e-12 and k / n - 1e-12 <= hi
    mirror_lo, mirror_hi = wilson(n - k, n)
    assert (lo, hi) == pytest.approx((1 - mirror_hi, 1 - mirror_lo), abs=1e-12)


def test_wilson_narrows_with_more_trials_and_widens_with_z():
    assert wilson(50, 100)[1] - wilson(50, 100)[0] < wilson(5, 10)[1] - wilson(5, 10)[0]
    lo90, hi90 = wilson(5, 10, z=1.6448536269514722)
    lo95, hi95 = wilson(5, 10)
    assert lo95 < lo90 < 0.5 < hi90 < hi95


def test_wilson_of_no_trials_is_the_whole_range():
    assert wilson(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize("k, n", [(-1, 10), (11, 10), (1, 0)])
def test_wilson_refuses_successes_outside_the_trials(k, n):
    with pytest.raises(ValueError, match=r"successes must be between 0 and the"):
        wilson(k, n)


@pytest.mark.parametrize("n", [3, 10, 12, 13, 25])
def test_wilson_bounds_at_the_ends_are_exact(n):
    assert wilson(0, n)[0] == 0.0
    assert wilson(n, n)[1] == 1.0


# -- paired_bootstrap --------------------------------------------------------------------------
def reference_bootstrap(a, b, resamples, seed, level=0.95):
    """The paired percentile bootstrap written out another way, on the same draws: each
    resample picks question indices with ``random.Random(seed).choices`` (which draws the
    same positions from ``range(n)`` as from any list of length n), and the difference is
    taken of the two accuracies on those questions."""
    n = len(a)
    rng = random.Random(seed)
    means = []
    for _ in range(resamples):
        picked = rng.choices(range(n), k=n)
        acc_a = sum(1 for i in picked if a[i]) / n
        acc_b = sum(1 for i in picked if b[i]) / n
        means.append(acc_a - acc_b)
    means.sort()
    tail = (1 - level) / 2
    point = sum(a) / n - sum(b) / n
    return (
        point,
        means[math.floor(tail * (resamples - 1))],
        means[math.ceil((1 - tail) * (resamples - 1))],
    )


def test_identical_results_differ_by_nothing():
    a = [True, False, True, True, False]
    assert paired_bootstrap(a, list(a)) == (0.0, 0.0, 0.0)


def test_results_always_one_better_differ_by_one_in_every_resample():
    assert paired_bootstrap([True] * 7, [False] * 7) == (1.0, 1.0, 1.0)
    assert paired_bootstrap([False] * 7, [True] * 7) == (-1.0, -1.0, -1.0)


def test_the_bootstrap_matches_a_reference_on_the_same_draws():
    a = [True, True, False, True, False, True, True, False, True, True]
    b = [True, False, False, True, True, False, True, False, False, True]
    for seed in (0, 1, "eval-7"):
        for resamples in (9, 200, 2000):
            got = paired_bootstrap(a, b, resamples=resamples, seed=seed)
            want = reference_bootstrap(a, b, resamples, seed)
            assert got == pytest.approx(want, abs=1e-12), (seed, resamples)


def test_the_bootstrap_by_hand_on_a_tiny_case():
    # Two questions: a right on the first only, b on the second only; diffs (+1, -1). With
    # nine resamples and level 0.95 the interval is the 0th and 8th of the sorted means.
    a, b = [True, False], [False, True]
    rng = random.Random(3)
    means = sorted(sum(rng.choices([1, -1], k=2)) / 2 for _ in range(9))
    assert paired_bootstrap(a, b, resamples=9, seed=3) == (0.0, means[0], means[8])


def test_the_bootstrap_is_repeatable_by_seed():
    rng = random.Random(1)
    a = [rng.random() < 0.6 for _ in range(40)]
    b = [rng.random() < 0.5 for _ in range(40)]
    assert paired_bootstrap(a, b, seed=11) == paired_bootstrap(a, b, seed=11)
    draws = {paired_bootstrap(a, b, seed=s, resamples=50)[1:] for s in range(10)}
    assert len(draws) > 1  # the seed does pick the draws


def test_a_narrower_level_gives_a_narrower_interval():
    a = [i % 3 != 0 for i in range(30)]
    b = [i % 2 == 0 for i in range(30)]
    _, lo95, hi95 = paired_bootstrap(a, b, level=0.95)
    _, lo50, hi50 = paired_bootstrap(a, b, level=0.5)
    assert lo95 <= lo50 <= hi50 <= hi95


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=30),
    st.integers(0, 2**32),
)
def test_the_interval_holds_the_point_estimate(pairs, seed):
    a = [x for x, _ in pairs]
    b = [y for _, y in pairs]
    point, lo, hi = paired_bootstrap(a, b, resamples=400, seed=seed)
    assert point == pytest.approx((sum(a) - sum(b)) / len(a))
    assert -1.0 <= lo <= point <= hi <= 1.0


@pytest.mark.parametrize("a, b", [([], []), ([True], []), ([True, False], [True]), ([], [False])])
def test_the_bootstrap_refuses_unequal_or_empty_lists(a, b):
    with pytest.raises(ValueError, match=r"two equally long, non-empty lists"):
        paired_bootstrap(a, b)


@pytest.mark.parametrize("kwargs", [{"resamples": 0}, {"level": 1.5}, {"level": -0.5}])
def test_the_bootstrap_refuses_bad_resamples_and_levels(kwargs):
    with pytest.raises(ValueError):
        paired_bootstrap([True, False], [False, True], **kwargs)


# -- oracle ------------------------------------------------------------------------------------
# Four questions, three candidates each (in order):
CANDIDATES = [
    [True, False, False],  # the first right
    [False, False, True],  # only the third
    [False, False, False],  # none: counts in beta
    [False, True, True],  # the second and third
]


def test_oracle_is_the_share_some_candidate_got_right():
    assert oracle(CANDIDATES) == 3 / 4
    assert 1 - oracle(CANDIDATES) == 1 / 4  # beta, the all-wrong rate


def test_oracle_of_k_looks_at_the_first_k_candidates_only():
    assert oracle(CANDIDATES, 0) == 0.0
    assert oracle(CANDIDATES, 1) == 1 / 4
    assert oracle(CANDIDATES, 2) == 2 / 4
    assert oracle(CANDIDATES, 3) == 3 / 4
    assert oracle(CANDIDATES, 99) == oracle(CANDIDATES, None) == 3 / 4


@given(st.lists(st.lists(st.booleans(), min_size=1, max_size=6), min_size=1, max_size=20))
def test_oracle_grows_with_k_and_bounds_every_candidate(rows):
    width = max(map(len, rows))
    reaches = [oracle(rows, k) for k in range(width + 1)]
    assert reaches == sorted(reaches)
    for j in range(width):
        alone = sum(len(r) > j and r[j] for r in rows) / len(rows)
        assert alone <= oracle(rows)


def test_oracle_refuses_no_questions():
    with pytest.raises(ValueError, match=r"at least one question"):
        oracle([])


# -- phi ---------------------------------------------------------------------------------------
def test_identical_errors_correlate_fully():
    a = [True, False, False, True, False]
    assert phi(a, list(a)) == pytest.approx(1.0)


def test_complementary_errors_correlate_negatively():
    a = [True, False, False, True, False]
    assert phi(a, [not x for x in a]) == pytest.approx(-1.0)


@pytest.mark.parametrize(
    "a, b",
    [
        ([True] * 4, [True, False, True, False]),  # a never fails
        ([False] * 4, [True, False, True, False]),  # a always fails
        ([True, False, True, False], [False] * 4),
    ],
)
def test_phi_is_undefined_without_variance(a, b):
    assert phi(a, b) is None


def test_phi_of_a_known_two_by_two_table():
    # Errors: both fail on 10 questions, only a on 5, only b on 5, neither on 10. phi is
    # (n11 n00 - n10 n01) / sqrt(n1. n0. n.1 n.0) = (100 - 25) / sqrt(15^4) = 1/3.
    a = [False] * 10 + [False] * 5 + [True] * 5 + [True] * 10
    b = [False] * 10 + [True] * 5 + [False] * 5 + [True] * 10
    assert phi(a, b) == pytest.approx(1 / 3)


@given(
    st.lists(st.tuples(st.booleans(), st.booleans()), min_size=2, max_size=40),
)
def test_phi_is_pearsons_r_of_the_errors(pairs):
    a = [x for x, _ in pairs]
    b = [y for _, y in pairs]
    got = phi(a, b)
    if len(set(a)) < 2 or len(set(b)) < 2:
        assert got is None
    else:
        errors_a = [float(not x) for x in a]
        errors_b = [float(not y) for y in b]
        assert got == pytest.approx(statistics.correlation(errors_a, errors_b), abs=1e-9)
        assert phi(b, a) == pytest.approx(got)


@pytest.mark.parametrize("a, b", [([], []), ([True], [True, False])])
def test_phi_refuses_unequal_or_empty_lists(a, b):
    with pytest.raises(ValueError, match=r"two equally long, non-empty lists"):
        phi(a, b)


def test_mcnemar_is_the_exact_binomial_test_of_the_disagreements():
    from moa._stats import mcnemar

    assert mcnemar([True] * 4 + [False], [False] * 5) == (4, 0, 0.125)
    won, lost, p = mcnemar(
        [True] * 15 + [False] * 6 + [True] * 9, [False] * 15 + [True] * 6 + [True] * 9
    )
    assert (won, lost) == (15, 6) and p == pytest.approx(0.0784, abs=1e-4)
    assert mcnemar([True, False], [True, False]) == (0, 0, 1.0)
    assert mcnemar([True] * 10, [False] * 10)[2] == pytest.approx(2 / 1024)
    with pytest.raises(ValueError, match="equally long"):
        mcnemar([True], [True, False])

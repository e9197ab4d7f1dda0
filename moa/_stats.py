"""The statistics an evaluation reports, each small and tested against known values.

:func:`wilson` is the Wilson score interval of an accuracy; :func:`paired_bootstrap` the
difference of two accuracies on the same questions with a percentile interval (the questions
resampled, the same draw for both); :func:`oracle` the share of questions some candidate
got right (``1 - oracle`` is beta, the all-wrong rate: no method that returns one candidate's
answer can beat ``oracle``); :func:`mcnemar` the exact test of a paired difference, decided
by the questions where the two disagree (the bootstrap's percentile interval alone is too
ready to exclude 0 when they disagree on few); :func:`phi` the correlation of two members' errors (near 1: they
fail together, and mixing them adds little).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

__all__ = ("Z95", "mcnemar", "oracle", "paired_bootstrap", "phi", "wilson")

#: The standard normal's 97.5 % quantile: a 95 % two-sided interval.
Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval for ``k`` successes in ``n`` trials (95 % by default)."""
    if not 0 <= k <= n:
        raise ValueError(f"wilson: successes must be between 0 and the {n} trials, got {k}")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At k = 0 and k = n the bounds are 0 and 1 exactly; the formula leaves a rounding error.
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return low, high


def paired_bootstrap(
    a: Sequence[bool],
    b: Sequence[bool],
    *,
    resamples: int = 2000,
    seed: int | str = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """Accuracy of ``a`` minus accuracy of ``b`` on the same questions, and a percentile
    bootstrap interval at ``level``: the questions are resampled with replacement, the same
    draw for both (so what both get right or wrong cancels)."""
    if len(a) != len(b) or not a:
        raise ValueError("paired_bootstrap needs two equally long, non-empty lists of results")
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise ValueError(f"paired_bootstrap: resamples must be an int >= 1, not {resamples!r}")
    if not 0 < level < 1:
        raise ValueError(f"paired_bootstrap: level must be between 0 and 1, not {level!r}")
    n = len(a)
    diffs = [int(x) - int(y) for x, y in zip(a, b, strict=True)]
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(diffs, k=n)) / n for _ in range(resamples))
    tail = (1 - level) / 2
    lo = means[math.floor(tail * (resamples - 1))]
    hi = means[math.ceil((1 - tail) * (resamples - 1))]
    return sum(diffs) / n, lo, hi


def oracle(candidates: Sequence[Sequence[bool]], k: int | None = None) -> float:
    """The share of questions on which at least one of the first ``k`` candidates (all, when
    None) is right; ``candidates[q]`` holds question q's candidates' correctness, in order.
    ``1 - oracle(...)`` is beta, the all-wrong rate."""
    if not candidates:
        raise ValueError("oracle needs at least one question")
    return sum(any(c[:k] if k is not None else c) for c in candidates) / len(candidates)


def phi(a: Sequence[bool], b: Sequence[bool]) -> float | None:
    """The correlation of two members' errors over the same questions (the phi coefficient
    of two binary variables, Pearson's r): 1 when they fail on the same questions, 0 when
    independently, -1 when never together. None where one never or always fails (no
    variance: the correlation is undefined)."""
    if len(a) != len(b) or not a:
        raise ValueError("phi needs two equally long, non-empty lists")
    n = len(a)
    ea = [not x for x in a]
    eb = [not x for x in b]
    pa, pb = sum(ea) / n, sum(eb) / n
    if pa in (0.0, 1.0) or pb in (0.0, 1.0):
        return None
    both = sum(x and y for x, y in zip(ea, eb, strict=True)) / n
    return (both - pa * pb) / math.sqrt(pa * (1 - pa) * pb * (1 - pb))


def mcnemar(a: Sequence[bool], b: Sequence[bool]) -> tuple[int, int, float]:
    """``(won, lost, p)``: the questions ``a`` got right and ``b`` wrong, the reverse, and
    the exact two-sided McNemar p-value (a binomial test of ``won`` in ``won + lost`` at
    one half; 1.0 when they never disagree)."""
    if len(a) != len(b) or not a:
        raise ValueError("mcnemar needs two equally long, non-empty lists of results")
    won = sum(x and not y for x, y in zip(a, b, strict=True))
    lost = sum(y and not x for x, y in zip(a, b, strict=True))
    n = won + lost
    if n == 0:
        return 0, 0, 1.0
    tail = sum(math.comb(n, i) for i in range(min(won, lost) + 1)) / 2**n
    return won, lost, min(1.0, 2 * tail)

"""Laws for steps, each a named function with a one-line docstring.

Calling a law on a step searches for a counterexample with Hypothesis and raises
:class:`LawViolation` naming the law and showing the smallest one found::

    permutation(Shuffle())                              # a fixed step
    never_empty(Dropout, params=st.floats(0, 1))        # a factory and its parameter
    identity_at(0)(Dropout)                             # laws that take a value are called first

Every law takes the same keyword arguments: ``params`` (a value or a strategy of the factory's
parameter), ``responses``, ``seeds``, ``clients`` and ``prompts`` (values or strategies of the
inputs, the seed, the scripted client and the prompt), ``settings`` (a ``hypothesis.settings``)
and ``max_examples``. A transform runs as ``step.apply(inputs, random.Random(seed))``, as the
executor runs it; anything with a model call runs through ``moa.run_sync`` with a drawn
scripted client, the inputs put in place by a first step. How a law is checked is in
:mod:`moa.testing._case`.

``S ≡ T`` below means: the same outputs from the same inputs and seed, and the generator left
in the same state, so one can replace the other anywhere in a pipeline.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from hypothesis import assume
from hypothesis import settings as Settings

from .._pipeline import Pipeline, Step, as_step
from .._transforms import Map
from . import strategies as mst
from ._case import Case, LawViolation, Options, Outcome, law, search, show

__all__ = (
    "Case",
    "LawViolation",
    "Outcome",
    "assert_equivalent",
    "commutes_with_map",
    "deterministic_under_seed",
    "equivalent_to",
    "fuses",
    "idempotent",
    "identity_at",
    "law",
    "length_bound",
    "never_empty",
    "order_preserving",
    "permutation",
    "sub_multiset",
)


def _is_subsequence(part: list[str], whole: list[str]) -> bool:
    rest: Iterator[str] = iter(whole)
    return all(any(x == y for y in rest) for x in part)


# -- the laws ------------------------------------------------------------------------------------
@law
def permutation(case: Case) -> None:
    """The outputs are the inputs in some order."""
    out = case.outputs()
    case.expect(Counter(out) == Counter(case.inputs), outputs=out)


@law
def sub_multiset(case: Case) -> None:
    """Every output is one of the inputs, used no more often than it was given."""
    out = case.outputs()
    case.expect(Counter(out) <= Counter(case.inputs), outputs=out)


@law
def order_preserving(case: Case) -> None:
    """The outputs are the inputs with some left out, the rest in their order."""
    out = case.outputs()
    case.expect(_is_subsequence(out, case.inputs), outputs=out)


@law
def never_empty(case: Case) -> None:
    """Some inputs always give some outputs."""
    assume(case.inputs)
    out = case.outputs()
    case.expect(out, outputs=out)


def length_bound(
    at_most: Callable[..., int] | None = None,
    *,
    at_least: Callable[..., int] | None = None,
    name: str = "length_bound",
) -> Any:
    """The number of outputs of n inputs stays between ``at_least(n)`` and ``at_most(n)``
    (for a factory, ``at_most(n, param)``); with no bounds given, at most n."""
    if at_most is None and at_least is None:

        def at_most(n: int, *param: Any) -> int:
            return n

    def check(case: Case) -> None:
        out = case.outputs()
        n = len(case.inputs)
        low = case.with_param(at_least, n) if at_least else 0
        high = case.with_param(at_most, n) if at_most else float("inf")
        case.expect(
            low <= len(out) <= high,
            outputs=out,
            why=f"{len(out)} outputs of {n} inputs, and the bound is {low} to {high}",
        )

    return law(check, name=name, doc="The number of outputs stays within its bounds.")


@law
def deterministic_under_seed(case: Case) -> None:
    """The same inputs and seed give the same outputs; the global random module is not used."""
    state = random.getstate()
    try:
        first = case.outcome()
        if random.getstate() != state:
            case.fail(
                "it changed the state of the global random module; draw from the rng "
                "argument instead",
                outputs=first,
            )
        random.seed(f"moa.testing {case.seed}")
        again = case.outcome()
    finally:
        random.setstate(state)
    case.expect_same(("first run", first), ("second run", again))


@law
def idempotent(case: Case) -> None:
    """Running the step twice is running it once: S | S ≡ S."""
    case.expect_same(("S", case.outcome()), ("S | S", case.outcome(case.step | case.step)))


def identity_at(value: Any, *, name: str = "identity_at") -> Any:
    """At this parameter value the factory's step changes nothing and draws nothing from the
    generator: S(value) ≡ Pipeline()."""

    def check(case: Case) -> None:
        step = case.build(value)
        case.expect_same((repr(step), case.outcome(step)), ("Pipeline()", case.outcome(Pipeline())))

    shown = show(value, "value")
    return law(
        check,
        name=name,
        needs="factory",
        doc=f"At {shown} the step changes nothing: S({shown}) ≡ Pipeline().",
    )


@law
def commutes_with_map(case: Case) -> None:
    """Mapping a pure function before the step is mapping it after: Map(f) | S ≡ S | Map(f)."""
    f = case.draw(mst.text_functions(), "f")
    case.expect_same(
        ("Map(f) | S", case.outcome(Map(f) | case.step)),
        ("S | Map(f)", case.outcome(case.step | Map(f))),
    )


def fuses(combine: Callable[[Any, Any], Any], *, name: str = "fuses") -> Any:
    """Two of the factory's steps in a row are one: S(a) | S(b) ≡ S(combine(a, b))."""

    def check(case: Case) -> None:
        a, b = case.draw_param("a"), case.draw_param("b")
        two, one = case.build(a) | case.build(b), case.build(combine(a, b))
        case.expect_same((repr(two), case.outcome(two)), (repr(one), case.outcome(one)))

    shown = show(combine, "combine")
    return law(
        check,
        name=name,
        needs="params",
        doc=f"Two steps in a row are one: S(a) | S(b) ≡ S({shown}(a, b)).",
    )


def equivalent_to(
    other: Step | list[Step] | Callable[[Any], Step], *, name: str = "equivalent_to"
) -> Any:
    """The step gives what ``other`` gives: S ≡ other. For a factory, ``other`` may be a
    function of its parameter."""

    def check(case: Case) -> None:
        if isinstance(other, (Step, list, tuple)):
            target = as_step(other)
        else:
            target = as_step(other(case.param), where=f"{show(other, 'other')}(param)")
        case.expect_same(("S", case.outcome()), (repr(target), case.outcome(target)))

    shown = show(other, "other") if not isinstance(other, (list, tuple)) else repr(as_step(other))
    needs = "step" if isinstance(other, (Step, list, tuple)) else "params"
    return law(check, name=name, needs=needs, doc=f"The step gives what {shown} gives.")


def assert_equivalent(
    p: Step | list[Step],
    q: Step | list[Step],
    *,
    responses: Any = None,
    seeds: Any = None,
    clients: Any = None,
    prompts: Any = None,
    settings: Settings | None = None,
    max_examples: int | None = None,
) -> None:
    """Assert that two pipelines give the same results over drawn inputs and seeds (and
    leave the generator in the same state): p ≡ q."""
    p, q = as_step(p, where="assert_equivalent(p, q)"), as_step(q, where="assert_equivalent(p, q)")

    def check(case: Case) -> None:
        case.expect_same(("p", case.outcome(p)), ("q", case.outcome(q)))

    search(
        check,
        "assert_equivalent",
        "p ≡ q",
        p,
        Options(None, responses, seeds, clients, prompts, settings, max_examples),
        header=f"these pipelines differ:\n  p = {p!r}\n  q = {q!r}",
    )

"""The algebra as values: composition, flattening, equality, reprs, and bad input."""

import pytest

import moa
from moa import (
    Aggregate,
    Dropout,
    Filter,
    Map,
    Parallel,
    Pipeline,
    Propose,
    Rank,
    Refine,
    Sample,
    Shuffle,
    Synthesize,
    Take,
    Vote,
)

P = ["a", "b", "c"]


def test_public_surface_is_exactly_all():
    subpackages = {"errors", "recipes", "clients", "cli", "testing", "ray", "serve", "steps"}
    public = {n for n in dir(moa) if not n.startswith("_")} - subpackages
    # moa.eval is public but not in __all__: `from moa import *` keeps the builtin eval.
    assert public - {"eval"} == set(moa.__all__) and callable(moa.eval)
    assert isinstance(moa.__all__, tuple)


def test_pipe_builds_a_flat_pipeline():
    p = Propose(P) | Shuffle() | Aggregate("a")
    assert isinstance(p, Pipeline)
    assert p.steps == (Propose(P), Shuffle(), Aggregate("a"))
    assert (Propose(P) | Shuffle()) | Aggregate("a") == Propose(P) | (Shuffle() | Aggregate("a"))


def test_identity_and_one_step_pipeline():
    a = Take(2)
    assert Pipeline() | a == a
    assert a | Pipeline() == a
    assert Pipeline(a) is a
    assert Pipeline() | Pipeline() == Pipeline()
    assert repr(Pipeline()) == "Pipeline()"


def test_lists_are_accepted_on_either_side():
    assert [Propose(P), Shuffle()] | Aggregate("a") == Propose(P) | Shuffle() | Aggregate("a")
    assert Propose(P) | [Shuffle(), Aggregate("a")] == Propose(P) | Shuffle() | Aggregate("a")
    assert Pipeline([Propose(P), [Shuffle()]]) == Propose(P) | Shuffle()


def test_named_forms_of_the_operators():
    a, b = Propose(P), Aggregate("a")
    assert a.then(b) == a | b == moa.pipeline(a, b)
    assert a.alongside(b) == a & b == moa.parallel(a, b)
    assert a.repeat(3) == a * 3 == 3 * a == a | a | a


def test_parallel_flattens_and_nests_in_pipelines():
    a, b, c = Propose(["a"]), Propose(["b"]), Propose(["c"])
    assert (a & b) & c == a & (b & c) == Parallel(a, b, c)
    p = (a | Take(1)) & b | Aggregate("a")
    assert p.steps[0] == Parallel(a | Take(1), b)
    assert Parallel(a) is a
    with pytest.raises(ValueError, match="at least one branch"):
        Parallel()


def test_repeat_zero_is_identity_and_rejects_bad_counts():
    s = Synthesize(P)
    assert s * 0 == Pipeline()
    assert s * 1 == s
    with pytest.raises(ValueError, match="repeats 0 to 10,000 times"):
        s * -1
    with pytest.raises(TypeError, match="whole number"):
        s * 1.5


def test_steps_are_immutable_hashable_values():
    assert Propose(P) == Propose(list(P)) == Propose(tuple(P))
    assert hash(Propose(P)) == hash(Propose(tuple(P)))
    assert len({Propose(P), Propose(P), Shuffle(), Shuffle()}) == 2
    with pytest.raises(AttributeError):
        Propose(P).temp = 1.0  # type: ignore[misc]
    p = Propose(P) | Shuffle()
    with pytest.raises(AttributeError, match="immutable"):
        p.steps = ()  # type: ignore[misc]
    assert {p: 1}[Propose(P) | Shuffle()] == 1


@pytest.mark.parametrize(
    "expr",
    [
        "Propose(['a', 'b'])",
        "Propose(['a', 'b'], temp=0.2, max_tokens=100)",
        "Synthesize(['a'], prompt='Be {brief}.')",
        "Aggregate('a')",
        "Refine(['a', 'b'], min_success=2)",
        "Rank('j', n=2)",
        "Vote('j')",
        "Shuffle()",
        "Dropout(0.2)",
        "Sample(3)",
        "Take(1)",
        "Propose(['a']) | Shuffle() | Aggregate('a')",
        "(Propose(['a']) | Take(1)) & Propose(['b']) | Aggregate('a')",
        "Pipeline()",
    ],
)
def test_repr_is_the_building_expression(expr):
    ns = vars(moa)
    value = eval(expr, ns)
    assert eval(repr(value), ns) == value
    assert repr(eval(repr(value), ns)) == repr(value)


def test_repr_names_user_functions():
    def shout(s):
        return s.upper()

    assert repr(Map(shout)) == "Map(test_repr_names_user_functions.<locals>.shout)"
    assert repr(Filter(str.isupper)) == "Filter(str.isupper)"


def test_seed_positional_arguments():
    assert Synthesize(P, "Be brief.", 0.1, 9) == Synthesize(
        P, prompt="Be brief.", temp=0.1, max_tokens=9
    )
    assert Rank("j", 2, "Pick.", 0.0, 10).n == 2
    assert Propose(P, 0.9, 4096) == Propose(P, temp=0.9, max_tokens=4096)


@pytest.mark.parametrize(
    "operand",
    ["x", 3, None, {"a": 1}, print],
)
def test_foreign_operand_is_a_type_error_naming_it(operand):
    with pytest.raises(TypeError, match=r"must be a step, a pipeline or a list of steps, not"):
        Propose(P) | operand
    with pytest.raises(TypeError, match=r"not " + __import__("re").escape(repr(operand))):
        operand | Propose(P)
    with pytest.raises(TypeError, match="must be a step"):
        Propose(P) & operand
    with pytest.raises(TypeError, match="must be a step"):
        [Propose(P), operand] | Aggregate("a")


@pytest.mark.parametrize(
    "build, error, message",
    [
        (lambda: Propose([]), ValueError, r"at least one model, got \[\]"),
        (lambda: Propose("abc"), TypeError, r"did you mean Propose\(\['abc'\]\)"),
        (lambda: Synthesize("abc"), TypeError, r"did you mean Synthesize\(\['abc'\]\)"),
        (
            lambda: Propose(["a", 3]),
            TypeError,
            r"every agent must be a non-empty model name, not 3",
        ),
        (lambda: Propose(["a", ""]), TypeError, r"non-empty model name"),
        (lambda: Propose(None), TypeError, r"list of model names, not None"),
        (lambda: Aggregate(["a", "b"]), TypeError, r"one model name, not a list"),
        (lambda: Aggregate(""), TypeError, r"non-empty model name"),
        (lambda: Dropout(-0.1), ValueError, r"between 0 and 1, got -0.1"),
        (lambda: Dropout(1.5), ValueError, r"between 0 and 1, got 1.5"),
        (lambda: Dropout("x"), TypeError, r"rate must be a number"),
        (lambda: Take(-1), ValueError, r"Take\(n\): n must be >= 0, got -1"),
        (lambda: Sample(-1), ValueError, r"Sample\(n\): n must be >= 0, got -1"),
        (lambda: Take(1.5), TypeError, r"n must be an int"),
        (lambda: Rank("a", n=0), ValueError, r"n must be an int >= 1, got 0"),
        (lambda: Propose(["a"], temp=-0.1), ValueError, r"temp must be a finite number >= 0"),
        (lambda: Vote("a", temp=float("nan")), ValueError, r"temp must be a finite number >= 0"),
        (
            lambda: Propose(["a"], temp=float("inf")),
            ValueError,
            r"temp must be a finite number >= 0",
        ),
        (lambda: Propose(["a"], max_tokens=0), ValueError, r"max_tokens must be an int >= 1"),
        (lambda: Aggregate("a", max_tokens=1.5), TypeError, r"max_tokens must be an int >= 1"),
        (lambda: Aggregate("a", prompt=""), ValueError, r"prompt must be a non-empty str"),
        (lambda: Filter("x"), TypeError, r"Filter\(fn\): fn must be a callable"),
        (lambda: Map(None), TypeError, r"Map\(fn\): fn must be a callable"),
        (lambda: Propose(["a", "b"], min_success=3), ValueError, r"exceeds the 2 agents"),
        (lambda: Refine(["a"], min_success=0), ValueError, r"min_success must be an int >= 1"),
        (lambda: moa.Retry(attempts=0), ValueError, r"attempts must be an int >= 1"),
    ],
)
def test_bad_input_fails_at_construction(build, error, message):
    with pytest.raises(error, match=message):
        build()

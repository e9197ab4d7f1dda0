"""parse_pipeline: the shell's pipeline expressions, parsed against a whitelist, never eval'd."""

import os
import pickle
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import moa
import moa.testing as mt
from moa import (
    Aggregate,
    Dropout,
    MoaError,
    Pipeline,
    PipelineSyntaxError,
    Propose,
    Rank,
    Refine,
    Sample,
    Shuffle,
    Synthesize,
    Take,
    Vote,
    parse_pipeline,
)
from moa.recipes import moa_lite, robust_moa, self_moa, together_moa

# -- round trips --------------------------------------------------------------------------------
EXAMPLES = [
    Propose(["a", "b", "c"]) | Shuffle() | Aggregate("a"),
    Propose(["a"]),
    Pipeline(),
    Shuffle(),
    Propose(["a", "b"], temp=0.2, max_tokens=64, min_success=1, quorum=2) | Dropout(0.25),
    Propose(["a", "b", "c"], min_success=2, quorum=3) | Sample(2) | Take(1) | Vote("j"),
    Synthesize(["a", "b"], prompt="Combine {n} answers: {responses}", temp=0) | Aggregate("a"),
    Refine(["x"], prompt='say "hi"\n\ttab {x}') | Rank("judge", n=2, prompt="it's {n}"),
    (Propose(["a"]) & Propose(["b"])) | Aggregate("c"),
    (Propose(["a"]) | Take(1)) & (Propose(["b"]) | Shuffle()) & Propose(["c"]),
    Pipeline() & Take(1),
    Propose(["a"]) | (Synthesize(["a", "b"]) | Shuffle()) * 3 | Aggregate("a"),
    (Take(1) & Take(2)) * 2,
    Propose(["é", "模型", "a\\b"], temp=-0.0) | Aggregate("ü", max_tokens=1),
    Synthesize(["a"], temp=100.0, max_tokens=1) | Vote("b", temp=5e-324),
    Dropout(0) | Dropout(1) | Dropout(0.5),
    self_moa(),
    moa_lite(),
    together_moa(),
    robust_moa(),
]


@pytest.mark.parametrize("p", EXAMPLES, ids=repr)
def test_repr_round_trips(p):
    rebuilt = parse_pipeline(repr(p))
    assert rebuilt == p
    assert repr(rebuilt) == repr(p)


@settings(max_examples=150, deadline=None)
@given(
    mt.pipelines(
        mt.transforms(kinds=(Shuffle, Dropout, Sample, Take))
        | mt.llm_steps(models=st.text(min_size=1, max_size=5), options=True),
        max_leaves=10,
    )
)
def test_repr_round_trips_for_drawn_pipelines(p):
    assert parse_pipeline(repr(p)) == p


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "Propose(['a', 'b', 'c']) | Shuffle() | Aggregate('a')",
            Propose(["a", "b", "c"]) | Shuffle() | Aggregate("a"),
        ),
        ("Propose(agents=['a'])", Propose(["a"])),
        ("Propose(('a', 'b'))", Propose(["a", "b"])),
        ("Aggregate(agent='a', prompt=None)", Aggregate("a")),
        ("3 * Take(1)", Take(1) * 3),
        ("Take(1) * 0", Pipeline()),
        ("(((Take(1))))", Take(1)),
        ("Pipeline(Take(1), Shuffle())", Take(1) | Shuffle()),
        ("Pipeline([Take(1), Shuffle()])", Take(1) | Shuffle()),
        ("Parallel(Take(1), Shuffle())", Take(1) & Shuffle()),
        ("[Take(1), Take(2)] | Shuffle()", Take(1) | Take(2) | Shuffle()),
        ("  Take(1)\n | Shuffle()  # a comment with ( brackets", Take(1) | Shuffle()),
        (
            "Aggregate('a', prompt='((([[[{{{' '}}}]]])))')",
            Aggregate("a", prompt="((([[[{{{}}}]]])))"),
        ),
        (
            "Aggregate('a', prompt='''triple ' \" ( quoted''')",
            Aggregate("a", prompt="triple ' \" ( quoted"),
        ),
        ("Aggregate('a', prompt=r'raw \\' (')", Aggregate("a", prompt="raw \\' (")),
        ("Take(1) * 100", Take(1) * 100),
        ("(Take(1) | Shuffle()) * 100", (Take(1) | Shuffle()) * 100),
        (" | ".join(["Shuffle()"] * 200), Shuffle() * 200),
        ("Propose([" + ", ".join(["'m'"] * 1000) + "])", Propose(["m"] * 1000)),
        ("Propose(['m'] * 6) | Aggregate('m')", Propose(["m"] * 6) | Aggregate("m")),
        ("Propose(3 * ['a', 'b'])", Propose(["a", "b"] * 3)),
        ("Propose(['m'] * 1000)", Propose(["m"] * 1000)),
    ],
)
def test_parses(text, expected):
    assert parse_pipeline(text) == expected


def test_error_type_and_attributes():
    with pytest.raises(PipelineSyntaxError) as info:
        parse_pipeline("Propose(['a']) | Shufle()")
    e = info.value
    assert isinstance(e, MoaError) and isinstance(e, ValueError)
    assert e.offset == 17
    assert e.message == "unknown step 'Shufle': did you mean Shuffle?"
    assert str(e) == (
        "unknown step 'Shufle': did you mean Shuffle?\n"
        "Propose(['a']) | Shufle()\n"
        "                 ^^^^^^"
    )
    again = pickle.loads(pickle.dumps(e))
    assert str(again) == str(e) and again.offset == e.offset


def test_exported():
    assert moa.parse_pipeline is parse_pipeline
    assert "PipelineSyntaxError" in moa.__all__ and "parse_pipeline" in moa.__all__


def test_not_a_string():
    with pytest.raises(TypeError, match="takes a str"):
        parse_pipeline(b"Take(1)")  # type: ignore[arg-type]


# -- hostile and malformed input -----------------------------------------------------------------
def check(text, fragment, offset=None):
    with pytest.raises(PipelineSyntaxError) as info:
        parse_pipeline(text)
    assert fragment in str(info.value)
    if offset is not None:
        assert info.value.offset == offset, str(info.value)
    return info.value


def test_import_call_is_never_executed(tmp_path):
    target = tmp_path / "pwned"
    check(f"__import__('os').system('touch {target}')", "not allowed")
    check(f"Take(__import__('os').system('touch {target}'))", "not allowed")
    check(f"Take(1) | __import__('os').system('touch {target}')", "not allowed")
    check(f"Propose([__import__('os').system('touch {target}')])", "not allowed")
    assert not target.exists()
    assert not os.path.exists("/tmp/pwned")


@pytest.mark.parametrize(
    "text, fragment, offset",
    [
        ("os.system('ls')", "attribute access is not allowed", 0),
        ("moa.Propose(['a'])", "attribute access is not allowed", 0),
        ("Take(1).__class__.__bases__[0].__subclasses__()", "not allowed", None),
        ("Take(1).then(Shuffle())", "attribute access is not allowed", 0),
        ("Aggregate('a'.join([]))", "attribute access is not allowed", 10),
        ("__import__('os')", "name '__import__' is not allowed", 0),
        ("open('/etc/passwd')", "unknown step 'open'", 0),
        ("eval('1')", "unknown step 'eval'", 0),
        ("exec('x=1')", "unknown step 'exec'", 0),
        ("Take(len('ab'))", "unknown step 'len'", 5),
        ("Take(x)", "unknown name 'x'", 5),
        ("Take(__builtins__)", "name '__builtins__' is not allowed", 5),
        ("Shuffle", "Shuffle must be called", 0),
        ("Take(1) | Shuffle", "Shuffle must be called", 10),
        ("lambda: Take(1)", "lambdas are not allowed", 0),
        ("Take((lambda: 1)())", "only the step names can be called", 6),
        ("[Take(i) for i in range(3)]", "comprehensions are not allowed", 0),
        ("Propose([m for m in 'ab'])", "comprehensions are not allowed", 8),
        ("Propose(list(m for m in 'ab'))", "unknown step 'list'", 8),
        ("Propose({'a'})", "set literals are not allowed", 8),
        ("Aggregate('a', prompt={'a': 1})", "dict literals are not allowed", 22),
        ("Take([1][0])", "subscripts are not allowed", 5),
        ("[Take(1)][0]", "subscripts are not allowed", 0),
        ("Propose(['a'][:1])", "subscripts are not allowed", 8),
        ("Aggregate(f'{1}')", "f-strings are not allowed", 10),
        ("Aggregate(f'plain')", "f-strings are not allowed", 10),
        ("Take((n := 1))", "assignment expressions (:=) are not allowed", 6),
        ("Take(*[1])", "starred arguments (*args) are not allowed", 5),
        ("Propose(*[['a']])", "starred arguments (*args) are not allowed", 8),
        ("Take(**{'n': 1})", "keyword unpacking (**kwargs) is not allowed", 5),
        ("Take(1) == Take(1)", "comparisons are not allowed", 0),
        ("Take(1) or Shuffle()", "'and' / 'or' are not allowed", 0),
        ("Take(1) if 1 else Shuffle()", "conditional expressions are not allowed", 0),
        ("Aggregate(b'a')", "bytes literals are not allowed", 10),
        ("Take(1j)", "complex literals are not allowed", 5),
        ("Take(...)", "ellipsis literals are not allowed", 5),
        ("Take(not 1)", "only a minus sign before a number", 5),
        ("Take(~1)", "only a minus sign before a number", 5),
        ("Take(--1)", "only a minus sign before a number", 5),
        ("Take(-x)", "only a minus sign before a number", 5),
        ("Take(1) + Take(2)", "'+' joins two lists of model names or agents", 0),
        ("Propose(['m'] + 3)", "'+' joins two lists", 8),
        ("Propose(['m'] + [1])", "'+' joins two lists", 8),
        ("Propose(['m'] * 600 + ['n'] * 600)", "list is too long: 600 + 600 items", 8),
        ("Take(1) - Take(2)", "operator '-' is not allowed", 0),
        ("Take(1) ^ Take(2)", "operator '^' is not allowed", 0),
        ("Take(1) @ Take(2)", "operator '@' is not allowed", 0),
        ("Take(2 * 3)", "'*' repeats a step", 5),
        ("Take(1) * Take(2)", "'*' repeats a step", 0),
        ("Propose(['m'] * 1001)", "list is too long: 1 * 1001 items, at most 1000", 8),
        ("Propose(['m'] * 10**9)", "operator '**' is not allowed", 16),
        ("Propose(['m'] * -1)", "a list repeats n >= 0 times", 8),
        ("[Take(1)] * 3", "repeats a list of model names, not of steps", 0),
        ("Propose(['m'] * 'a')", "'*' repeats a step or a list", 8),
        ("Propose([[['m'] * 1000] * 1000] * 1000)", "not of other values", 9),
        ("Propose([[[['m'] * 1000] * 1000] * 1000] * 1000)", "not of other values", 10),
        ("Aggregate('m', temp=[1] * 1000)", "not of other values", 20),
        ("Take(1) * 2.0", "'*' repeats a step", 0),
        ("Take(1) * True", "'*' repeats a step", 0),
        ("Take(1) * 'a'", "'*' repeats a step", 0),
        ("Take(1) * -1", "a step repeats n >= 0 times, got -1", 10),
        ("Take(1) | 3", "the right operand of '|' must be a step, not 3 (int)", 10),
        ("'a' & Take(1)", "the left operand of '&' must be a step, not 'a' (str)", 0),
        ("'just a string'", "expected a pipeline, got 'just a string' (str)", 0),
        ("['a', 'b']", "expected a pipeline", 0),
        ("Pipeline('a')", "each argument of Pipeline(...) must be a step", 9),
        ("Pipeline(Take(1), steps=1)", "takes no keyword arguments", 18),
        ("Parallel()", "Parallel needs at least one branch", 0),
    ],
)
def test_rejected(text, fragment, offset):
    check(text, fragment, offset)


@pytest.mark.parametrize(
    "text, name",
    [
        ("Filter(len)", "Filter"),
        ("Map(str.upper)", "Map"),
        ("Take(1) | Filter(bool)", "Filter"),
        ("Map(lambda s: s)", "Map"),
    ],
)
def test_function_steps_are_refused(text, name):
    e = check(text, "functions cannot be given on the command line")
    assert e.message.startswith(name)
    assert e.offset == text.index(name)


@pytest.mark.parametrize(
    "text, suggestion",
    [
        ("Propose(['a']) | Shufle()", "did you mean Shuffle?"),
        ("Propse(['a'])", "did you mean Propose?"),
        ("Aggregat('a')", "did you mean Aggregate?"),
        ("shuffle()", "did you mean Shuffle?"),
        ("Take(1) & Smaple(2)", "did you mean Sample?"),
        ("Nothing()", "the steps are Aggregate, AggregateSeq, Dropout"),
    ],
)
def test_unknown_step_suggests(text, suggestion):
    check(text, suggestion)


# -- step constructors' own errors ---------------------------------------------------------------
@pytest.mark.parametrize(
    "text, fragment, offset",
    [
        ("Dropout(1.5)", "Dropout(rate): rate must be between 0 and 1, got 1.5", 0),
        ("Propose(['a']) | Dropout(-0.1)", "rate must be between 0 and 1, got -0.1", 17),
        ("Propose(['a']) | Shuffle() | Take(-1)", "Take(n): n must be >= 0, got -1", 29),
        ("Propose('a')", "did you mean Propose(['a'])?", 0),
        ("Propose([])", "agents must name at least one model", 0),
        ("Propose(['a'], temp=-1)", "temp must be a finite number >= 0", 0),
        ("Propose(['a'], min_success=2)", "min_success=2 exceeds the 1 agents", 0),
        ("Propose(['a', 'b'], quorum=3)", "quorum=3 exceeds the 2 agents", 0),
        ("Aggregate(['a', 'b'])", "takes one model name, not a list", 0),
        ("Take(1) | Rank('j', n=0)", "Rank(n=...): n must be an int >= 1, got 0", 10),
        ("Take(1) | Take(1, 2)", "takes", 10),
        (
            "Take(1) | Aggregate('a', temperature=1)",
            "Aggregate has no argument 'temperature'",
            25,
        ),
        ("Propose(['a'], max_token=5)", "no argument 'max_token': did you mean max_tokens=?", 15),
        ("Propose(['é']) | Aggregate('a', prompt='  ')", "prompt must be a non-empty str", 17),
    ],
)
def test_step_errors_point_at_the_call(text, fragment, offset):
    e = check(text, fragment, offset)
    end = text.index(")", offset) + 1 if text.count("(", offset) == 1 else None
    caret = str(e).splitlines()[-1]
    assert caret.startswith(" " * offset + "^")
    if end is not None:
        assert caret == " " * offset + "^" * (end - offset)


# -- syntax errors -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, offset",
    [
        ("Take(1) |", None),
        ("Take(1", 4),
        ("Propose(['a'] | Take(1)", 7),
        ("Take(1))", 7),
        ("Take(1) | (Shuffle()", 10),
        ("Take(1]", None),
        ("Aggregate('a)", None),
        ('Aggregate("""a)', None),
        ("Propose(['a') | Take(1)", None),
        ("Take(1) Shuffle()", None),
        ("Take(1); import os", None),
        ("import os", 0),
        ("x = Take(1)", None),
        ("Aggregate('unterminated)", None),
    ],
)
def test_syntax_errors(text, offset):
    e = check(text, "invalid syntax")
    if offset is not None:
        assert e.offset == offset
    assert 0 <= e.offset <= len(text)


@pytest.mark.parametrize("text", ["", "   ", "\n", "\t\n "])
def test_empty(text):
    check(text, "expression")


# -- size limits --------------------------------------------------------------------------------
def test_huge_repetition_is_refused_without_building_it():
    check("Propose(['a']) * 10**9", "operator '**' is not allowed", 17)
    check("Propose(['a']) * 1000000000", "too many repetitions: 1000000000, at most 100", 17)
    check("1000000000 * Propose(['a'])", "too many repetitions", 0)
    check("Take(1) * 101", "too many repetitions: 101", 10)


def test_nested_repetitions_are_bounded():
    check("Take(1) * 100 * 100", "too many steps: this part would make 10000", 0)
    check("(Take(1) * 100) * 100", "too many steps", 0)
    check("((Take(1) * 50) * 50) * 50", "too many steps", None)
    check("(Take(1) & Take(2)) * 100 * 2", "too many steps", None)


def test_too_many_steps():
    check(" | ".join(["Shuffle()"] * 201), "too many steps")
    check(" & ".join(["Take(1)"] * 201), "too many steps")
    check("Pipeline(" + ", ".join(["Shuffle()"] * 201) + ")", "too many steps")
    # Many step calls, even ones that vanish from the result, are bounded too.
    check(" | ".join(["Take(1) * 0"] * 300), "too many steps")


def test_a_long_chain_does_not_recurse():
    # 999 operators, just under the raw-text limit: a recursive walk would pass 1000 frames.
    text = "|".join(["Take(1)*0"] * 500)
    check(text, "too many steps")


def test_deep_brackets_are_refused_before_parsing():
    check("(" * 100000, "too long")
    check("(" * 5000 + "Take(1)" + ")" * 5000, "too long")
    check("(" * 1000 + "Take(1)" + ")" * 1000, "nested too deeply", 50)
    check("[" * 5000 + "]" * 5000, "nested too deeply", 50)
    check("Propose(" + "[" * 60 + "'a'" + "]" * 60 + ")", "nested too deeply")
    check("{" * 4000, "nested too deeply")


def test_moderate_nesting_reaches_the_steps():
    # Within the bracket limit, nested lists are literals and the step rejects them.
    check("Propose(" + "[" * 40 + "'a'" + "]" * 40 + ")", "every agent must be a non-empty")


def test_deep_unary_minus_is_refused():
    check("Dropout(" + "-" * 5000 + "1)", "too many operators: more than 1000", 1008)
    check("Dropout(" + "-" * 20 + "1)", "only a minus sign before a number")


def test_huge_literals(monkeypatch):
    check("Aggregate('" + "a" * 20_000 + "')", "too long")
    monkeypatch.setattr(moa._parse, "EXPR_MAX_STRING", 100)  # below the text limit, to reach it
    check("Aggregate('a', prompt='" + "x" * 101 + "')", "string is too long: 101 characters", 22)
    check("Propose([" + ",".join(["'m'"] * 1001) + "])", "list is too long: 1001 items")
    check("Propose([" + ",".join(["1"] * 4000) + "])", "list is too long")
    # Past Python's own digit limit (4300), which ast.parse reports without a position.
    e = check("Take(" + "9" * 5000 + ")", "number is too large", 5)
    assert e.length == 5000


def test_dropout_minus_reaches_the_step():
    check("Dropout(-0.1)", "Dropout(rate): rate must be between 0 and 1, got -0.1", 0)
    assert parse_pipeline("Dropout(-0)") == Dropout(0)


def test_multiline_error_points_at_the_right_line():
    e = check("Take(1)\n | Shufle()", "did you mean Shuffle?", 11)
    assert str(e).splitlines()[-2:] == [" | Shufle()", "   ^^^^^^"]


# -- foreign exceptions: everything the parser lets out is a PipelineSyntaxError -----------------
HUGE_HEX = "0x" + "f" * 9000  # no digit limit for hex, but str() of its value raises


@pytest.mark.parametrize(
    "text",
    [
        f"Take({HUGE_HEX})",
        f"Take(1) | {HUGE_HEX}",
        f"{HUGE_HEX} | Take(1)",
        f"Propose(['m'] * {HUGE_HEX})",
        f"Take(1) * {HUGE_HEX}",
        f"Rank('m', n={HUGE_HEX})",
        f"Take(-{HUGE_HEX})",
        "Propose([] * 1000000000000000000000)",  # was OverflowError
        "Take(1) * 1000000000000000000",
    ],
)
def test_huge_integers_are_too_large(text):
    e = check(text, "number is too large: an integer has at most 18 decimal digits")
    literal = HUGE_HEX if HUGE_HEX in text else text[text.rindex("* ") + 2 :].rstrip(")")
    assert e.offset == text.index(literal)


def test_the_largest_integer_reaches_the_step(monkeypatch):
    check("Take(1) * 999999999999999999", "too many repetitions: 999999999999999999", 10)
    check("Take(-999999999999999999)", "Take(", 0)  # the step's rule, not the parser's
    seen = []
    monkeypatch.setitem(moa._parse.STEPS, "Take", lambda n: seen.append(n) or Take(1))
    parse_pipeline("Take(999_999_999_999_999_999)")
    assert seen == [10**18 - 1]


@pytest.mark.parametrize(
    "text, fragment, offset",
    [
        (
            "Propose(['\ud800'])",
            "invalid character U+D800: a lone surrogate (not valid Unicode",
            10,
        ),
        ("Propose(['a\udcff'])", "a byte that is not UTF-8?", 11),  # surrogateescape's byte
        ("Take(1) \udcff", "invalid character U+DCFF", 8),
        ("Take(1) # \udcff", "invalid character U+DCFF", 10),
        ("Propose(['\\ud800'])", "string holds a lone surrogate U+D800", 9),
        ("Aggregate('a', prompt='x\\udfff')", "string holds a lone surrogate U+DFFF", 22),
        ("Take(1)\x00", "invalid character U+0000: a null byte", 7),
    ],
)
def test_characters_python_cannot_read(text, fragment, offset):
    e = check(text, fragment, offset)
    str(e).encode("utf-8")  # printable: the CLI prints it on a UTF-8 terminal
    e.message.encode("utf-8")


@pytest.mark.parametrize(
    "text, offset",
    [
        ("|".join(["a"] * 5000), 2001),
        ("Take(1)" + ".a" * 4000, 2007),
        ("Take(1)" + " * 1" * 2000, 4008),
        ("Dropout(" + "~" * 3000 + "1)", 1008),
    ],
)
def test_long_operator_chains_are_refused_before_parsing(text, offset):
    check(text, "expression has too many operators: more than 1000", offset)


def test_operators_in_strings_and_comments_do_not_count():
    prompt = "|" * 2000
    assert parse_pipeline(f"Aggregate('a', prompt='{prompt}')  # {'-' * 2000}") == Aggregate(
        "a", prompt=prompt
    )


def test_carriage_returns_end_lines_as_python_counts_them():
    e = check("Take(1)\r| Shufle()", "did you mean Shuffle?", 10)
    assert str(e).splitlines()[-2:] == ["| Shufle()", "  ^^^^^^"]
    check("Take(1) # a comment\r| " + "(" * 60 + "Take(1)" + ")" * 60, "more than 50 brackets")
    # A string continued on the next line (backslash, then \r\n) ends where Python ends it.
    continued = "Aggregate('a', prompt='x\\\r\ny') | "
    check(continued + "(" * 60 + "Take(1)" + ")" * 60, "more than 50 brackets", len(continued) + 50)


class _Unshowable:
    def __repr__(self):
        raise ValueError("Exceeds the limit (4300 digits) for integer string conversion")


def test_error_messages_never_render_a_value_that_cannot_be_shown(monkeypatch):
    monkeypatch.setitem(moa._parse.STEPS, "Take", lambda n: _Unshowable())
    check("Take(1)", "expected a pipeline, got a _Unshowable", 0)

    def unsayable(n):
        raise ValueError(10**5000)  # its str raises

    monkeypatch.setitem(moa._parse.STEPS, "Take", unsayable)
    check("Take(1)", "the step rejected its arguments (ValueError)", 0)


def test_every_rejection_by_a_step_points_at_it(monkeypatch):
    def refuse(*args, **kwargs):
        raise MoaError("refused")

    monkeypatch.setitem(moa._parse.STEPS, "Take", refuse)
    check("Shuffle() | Take(1)", "refused", 12)
    # A regex too large for re.compile: OverflowError from Vote's own check.
    check("Majority('a{4294967296}')", "Majority", 0)


@pytest.mark.parametrize(
    "op, text, offset",
    [
        ("__mul__", "Shuffle() | Take(1) * 2", 12),
        ("__or__", "Shuffle() | Take(1)", 0),
        ("__and__", "Shuffle() & Take(1)", 0),
    ],
)
def test_step_operators_rejections_point_at_the_expression(monkeypatch, op, text, offset):
    def refuse(*args):
        raise MoaError(f"{op} refused")

    monkeypatch.setattr(moa.Step, op, refuse)
    check(text, f"{op} refused", offset)


@pytest.mark.parametrize("action", ["ignore", "always", "error"])
def test_python_warnings_are_syntax_errors_whatever_the_filters(action, recwarn):
    # Python only warns of these; the parser refuses them the same way under any filters, and
    # nothing is printed on the side.
    with warnings.catch_warnings():
        warnings.simplefilter(action)
        check(r"Aggregate('a', prompt='C:\data')", r"invalid escape sequence '\d'", 22)
        check("Take(1if 1 else 2)", "invalid syntax: invalid decimal literal", 5)
    assert not recwarn.list


def test_plus_joins_lists_of_agents_as_in_python():
    from moa import Agent, Propose, parse_pipeline

    hot = Agent("m", temp=0.3)
    step = parse_pipeline("Propose(['m'] + [Agent('m', temp=0.3)] * 2, temp=0)")
    assert step == Propose(["m", hot, hot], temp=0)
    assert parse_pipeline("Propose(['a'] + ['b'] + ['c'])") == Propose(["a", "b", "c"])

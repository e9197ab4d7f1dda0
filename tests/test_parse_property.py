"""parse_pipeline's whole contract, under any input: it returns a step or raises
PipelineSyntaxError, nothing else, and quickly.

The parser is what the ``moa`` command line calls on its argument; any other exception there is
a traceback for the user. Hand-picked cases live in test_parse.py; these properties look for
the ones nobody picked: (a) arbitrary text, (b) text from the grammar's own tokens, which gets
deep into the parser, (c) deep nesting and long chains, (d) mutations of valid pipelines.
(``parse_pipeline(repr(p)) == p`` for drawn pipelines is test_parse.py's.)
"""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import moa.testing as mt
from moa import Dropout, PipelineSyntaxError, Sample, Shuffle, Step, Take, parse_pipeline
from moa._parse import EXPR_MAX_CHARS, FUNCTION_STEPS, STEPS

# Every example must finish fast; the parser's limits (EXPR_MAX_CHARS and the rest) bound its memory.
# A few hundred examples each: this file runs on every push, in well under 20 s on a slow machine.
FAST = settings(
    max_examples=300,
    deadline=2000,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


def outcome(text: str) -> Step | PipelineSyntaxError:
    """What parse_pipeline does with ``text``; fails the test on anything but the contract."""
    try:
        result = parse_pipeline(text)
    except PipelineSyntaxError as e:
        assert e.message and 0 <= e.offset <= len(e.text)
        assert "set_int_max_str_digits" not in e.message  # Python's advice, not the user's
        str(e).encode("utf-8")  # the CLI prints it: it must be printable, and render at all
        return e
    assert isinstance(result, Step), result
    shown = repr(result)
    if len(shown) <= EXPR_MAX_CHARS:  # what parses once parses again from its repr
        assert parse_pipeline(shown) == result
    return result


# -- (a) arbitrary text ------------------------------------------------------------------------
#: Any character, surrogates and the null byte included, and often one the parser cares about.
CHARS = st.characters(exclude_categories=()) | st.sampled_from(
    list("()[]{}|&*-.,='\"#\\:~ \n\r\t0") + ["\ud800", "\udcff", "\x00", "\u2028", "\ufeff"]
)


@FAST
@given(st.text(alphabet=CHARS, max_size=200))
def test_any_text_is_a_step_or_refused(text):
    outcome(text)


# -- (b) text from the grammar's tokens --------------------------------------------------------
NAMES = st.sampled_from(
    [
        *STEPS,
        *FUNCTION_STEPS,
        "shuffle",
        "Shufle",
        "x",
        "_",
        "__import__",
        "lambda",
        "not",
        "if",
        "else",
        "for",
        "in",
        "and",
        "or",
        "await",
        "yield",
        "None",
        "True",
        "False",
        "print",
        "eval",
    ]
)
KEYWORDS = st.sampled_from(
    [
        "agents",
        "agent",
        "n",
        "temp",
        "max_tokens",
        "prompt",
        "min_success",
        "quorum",
        "extract",
        "times",
        "window",
        "reserved",
        "rate",
        "steps",
        "x",
    ]
)

#: Numbers past every limit: str() of the first four raises (past 4300 decimal digits).
HUGE = [
    "9" * 4301,
    "0x" + "f" * 3600,
    "0o" + "7" * 4800,
    "0b" + "1" * 9000,
    "1" + "0" * 30,
    "1_000_000_000_000_000_000",
    "2 ** 64",
    "1e400",
    "1" * 400 + ".5",
    "1" * 40 + "j",
]


def _written(n: int, form: str) -> str:
    sign = "-" if n < 0 else ""
    n = abs(n)
    return sign + {"d": str(n), "x": hex(n), "o": oct(n), "b": bin(n), "_": f"{n:_}"}[form]


NUMBERS = st.one_of(
    st.builds(
        _written, st.integers(-(10**20), 10**20) | st.integers(-3, 300), st.sampled_from("dxob_")
    ),
    st.floats(allow_nan=False).map(repr),
    st.sampled_from(HUGE),
    st.sampled_from(
        ["0", "1", "2", "-1", "0.5", "-0.0", ".5", "1.", "1e-5", "1j", "00", "inf", "nan"]
    ),
)
#: Tokens Python's tokenizer refuses: for the token soup, not the grammar's expressions.
MALFORMED = st.sampled_from(
    [
        "0_1",
        "1__0",
        "0x",
        "1e",
        "09",
        "1_",
        "0b2",
        "'unterminated",
        '"\\',
        "'\\N{NOPE}'",
        "'\\u12'",
        "'''open",
        "(,)",
        "f'{'",
    ]
)


def _quoted(text: str, quote: str) -> str:
    body = text.replace("\\", "\\\\").replace(quote[0], "\\" + quote[0])
    return f"{quote}{body}{quote}"


STRINGS = st.one_of(
    st.sampled_from(["'a'", "'b'", "'judge'", '"m"', "''", "' '", "'{n}'"]),
    st.builds(
        _quoted, st.text(alphabet=CHARS, max_size=8), st.sampled_from(["'", '"', "'''", '"""'])
    ),
    st.sampled_from(
        [
            "'\\ud800'",
            "'\\udcff'",
            "'\\x00'",
            "'\\N{EM DASH}'",
            "'\\d'",
            "r'\\''",
            "b'a'",
            "f'{1}'",
            "rb'x'",
            "u'x'",
            "'a' 'b'",
            "'a{4294967296}'",
            "'(?P<a>)(?P<a>)'",
            "'" + "(" * 40 + ")" * 40 + "'",
            "'''a\nb'''",
            "'x' * 3",
        ]
    ),
)
PUNCTUATION = st.sampled_from(
    [
        "(",
        ")",
        "[",
        "]",
        "{",
        "}",
        " | ",
        "|",
        " & ",
        " * ",
        "*",
        "**",
        ", ",
        ",",
        "=",
        ":",
        ":=",
        ".",
        "-",
        "~",
        "+",
        "@",
        "/",
        " # ",
        "\\",
        "\n",
        "\r",
        "\r\n",
        " ",
        "\t",
        "...",
        ";",
        "'",
        '"',
    ]
)
TOKENS = st.one_of(NAMES, NUMBERS, STRINGS, MALFORMED, PUNCTUATION, KEYWORDS.map(lambda k: f"{k}="))


@FAST
@given(st.lists(TOKENS, max_size=30).map("".join))
def test_token_soup_is_a_step_or_refused(text):
    outcome(text)


LITERALS = st.recursive(
    st.one_of(NUMBERS, STRINGS, st.sampled_from(["None", "True", "False"])),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda xs: f"[{', '.join(xs)}]"),
        st.lists(inner, min_size=1, max_size=3).map(lambda xs: f"({', '.join(xs)},)"),
        st.tuples(st.lists(STRINGS, max_size=2), NUMBERS).map(
            lambda t: f"[{', '.join(t[0])}] * {t[1]}"
        ),
    ),
    max_leaves=6,
)

# What each step's parameters usually hold, so that most calls reach the constructor, and
# many build a step; a parameter is given any literal at all now and then.
MODELS = STRINGS.filter(lambda s: not s.startswith(("b", "f", "rb"))) | st.just("'m'")
SMALL = st.integers(-1, 8).map(str)
INTS = st.one_of(SMALL, NUMBERS, st.sampled_from(HUGE))  # huge ones often: they find bugs
MODEL_LISTS = st.one_of(
    st.lists(MODELS, min_size=1, max_size=3).map(lambda xs: f"[{', '.join(xs)}]"),
    st.tuples(MODELS, INTS | st.sampled_from(["3", "1000", "1001"])).map(
        lambda t: f"[{t[0]}] * {t[1]}"
    ),
)
PARAMETERS = {
    "agents": MODEL_LISTS,
    "agent": MODELS,
    "prompt": STRINGS,
    "extract": STRINGS,
    "temp": st.sampled_from(["0", "0.7", "1e-05", "-0.0", "2", "1e400"]) | NUMBERS,
    "rate": st.sampled_from(["0", "0.5", "1", "-0.1", "1.5"]) | NUMBERS,
}


def _fields(cls):
    """The parameters of a dataclass step: the required ones first, then the optional ones."""
    fields = [f for f in dataclasses.fields(cls) if f.init] if dataclasses.is_dataclass(cls) else []
    required = [f.name for f in fields if f.default is dataclasses.MISSING]
    return required, [f.name for f in fields if f.default is not dataclasses.MISSING]


@st.composite
def calls(draw, steps=None):
    """A step called on arguments of about the right kind: Pipeline and Parallel on ``steps``,
    the others on their own parameters (the required ones nearly always), positionally or by
    name. Now and then the name is not a step's, or an argument is any literal at all."""
    name = draw(st.sampled_from(sorted(STEPS)) if draw(st.integers(0, 9)) else NAMES)
    cls = STEPS.get(name)
    if cls is None or name in ("Pipeline", "Parallel"):
        args = draw(st.lists(steps if steps is not None else LITERALS, max_size=3))
        return f"{name}({', '.join(args)})"
    required, optional = _fields(cls)
    if not draw(st.integers(0, 9)):
        required = []
    chosen = required + draw(
        st.lists(st.sampled_from(optional), unique=True, max_size=3) if optional else st.just([])
    )
    parts, positional = [], draw(st.booleans())
    for field in chosen:
        value = draw(PARAMETERS.get(field, INTS) if draw(st.integers(0, 9)) else LITERALS)
        positional = positional and field in required
        parts.append(value if positional else f"{field}={value}")
    return f"{name}({', '.join(parts)})"


def _combined(inner):
    return st.one_of(
        st.tuples(inner, st.sampled_from([" | ", " & ", " | ", " & ", "|", " + "]), inner).map(
            "".join
        ),
        st.tuples(inner, INTS).map(lambda t: f"({t[0]}) * {t[1]}"),
        st.tuples(INTS, inner).map(lambda t: f"{t[0]} * ({t[1]})"),
        inner.map(lambda e: f"({e})"),
        st.lists(inner, min_size=1, max_size=3).map(lambda xs: f"[{', '.join(xs)}]"),
        calls(inner),
    )


EXPRESSIONS = st.recursive(calls(), _combined, max_leaves=10)


@FAST
@given(EXPRESSIONS)
def test_grammar_expressions_are_a_step_or_refused(text):
    outcome(text)


# -- (c) deep nesting and long chains -----------------------------------------------------------
OPENERS = st.sampled_from(["(", "[", "{", "Pipeline(", "Take(", "Propose(", "Parallel(", "f'{"])
CLOSERS = {"(": ")", "[": "]", "{": "}", "f'{": "}'"}


@FAST
@given(st.lists(OPENERS, max_size=120), st.sampled_from(["Take(1)", "'a'", "1", ""]), st.booleans())
def test_deep_brackets_are_a_step_or_refused(openers, core, closed):
    text = "".join(openers) + core
    if closed:
        text += "".join(CLOSERS.get(o, ")") for o in reversed(openers))
    outcome(text)


@FAST
@given(st.integers(0, 150), st.sampled_from(["|", "&"]), st.booleans())
def test_deep_parallel_of_pipelines_is_a_step_or_refused(depth, op, grouped):
    text = "Take(1)"
    for _ in range(depth):
        text = (
            f"({text} | Take(1)) & (Shuffle() | Take(2))" if grouped else f"Take(1) {op} ({text})"
        )
    result = outcome(text)
    if len(text) <= EXPR_MAX_CHARS and depth <= 10:
        assert isinstance(result, Step)


# Each of these nests Python's syntax tree one level per repetition, without brackets.
CHAINS = [
    "|a",
    "|Take(1)",
    "&Shuffle()",
    " * 1",
    "*1",
    "-",
    "~",
    "+",
    "not ",
    "await ",
    "lambda:",
    ".a",
    "()",
    "[0]",
    "**1",
    "1 if 1 else ",
    "yield ",
    "@a",
    " | Take(1) * 0",
]


@FAST
@given(
    st.sampled_from(CHAINS),
    st.integers(1, 6000),
    st.sampled_from(["Take(1)", "1", "a"]),
    st.booleans(),
)
def test_long_chains_are_a_step_or_refused(link, size, core, after):
    chain = link * (min(size, EXPR_MAX_CHARS + 10) // len(link) + 1)  # about size characters
    outcome(core + chain if after else chain + core)


def test_the_longest_chains_are_refused():
    for link in CHAINS:
        chain = link * (EXPR_MAX_CHARS // len(link))
        assert isinstance(outcome("Take(1)" + chain[: EXPR_MAX_CHARS - 7]), PipelineSyntaxError)
        assert isinstance(outcome(chain[: EXPR_MAX_CHARS - 7] + "Take(1)"), PipelineSyntaxError)


# -- (d) mutations of valid pipelines -----------------------------------------------------------
PIPELINES = mt.pipelines(
    mt.transforms(kinds=(Shuffle, Dropout, Sample, Take))
    | mt.llm_steps(models=st.text(min_size=1, max_size=5), options=True),
    max_leaves=8,
)


@st.composite
def mutated(draw):
    """The repr of a drawn pipeline, with a few pieces deleted, repeated, swapped or inserted."""
    text = repr(draw(PIPELINES))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 12)))
        how = draw(st.sampled_from(["delete", "insert", "repeat", "replace", "move"]))
        if how == "delete":
            text = text[:i] + text[j:]
        elif how == "insert":
            text = text[:i] + draw(TOKENS) + text[i:]
        elif how == "repeat":
            text = text[:j] + text[i:j] * draw(st.integers(2, 300)) + text[j:]
        elif how == "replace":
            text = text[:i] + draw(TOKENS) + text[j:]
        else:
            k = draw(st.integers(0, len(text) - (j - i)))
            rest = text[:i] + text[j:]
            text = rest[:k] + text[i:j] + rest[k:]
    return text


@FAST
@given(mutated())
def test_mutated_pipelines_are_a_step_or_refused(text):
    outcome(text)

"""Parse a one-line pipeline expression typed at a shell, without ``eval``.

``parse_pipeline("Propose(['a', 'b']) | Shuffle() | Aggregate('a')")`` returns the same value
as the Python expression, so ``parse_pipeline(repr(p)) == p`` for every pipeline without user
functions. The text is parsed with :mod:`ast` and walked against a whitelist: calls of the step
classes with literal arguments, ``|``, ``&``, ``step * n``, ``['model'] * n`` and parentheses.
Nothing else is evaluated; the only code that runs is the whitelisted steps' own constructors.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import operator
import re
import warnings
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from ._agent import Agent
from ._contract import LLMStep
from ._llm_steps import Aggregate, AggregateSeq, Pick, Propose, Rank, Refine, Synthesize, Vote
from ._pipeline import Parallel, Pipeline, Step
from ._select import Majority, MostConfident, MostConsistent, WeightedMajority
from ._syntax import (
    EXPR_MAX_BRACKETS,
    EXPR_MAX_CHARS,
    EXPR_MAX_DEPTH,
    EXPR_MAX_INT_DIGITS,
    EXPR_MAX_ITEMS,
    EXPR_MAX_MESSAGE,
    EXPR_MAX_OPERATORS,
    EXPR_MAX_REPEAT,
    EXPR_MAX_STEPS,
    EXPR_MAX_STRING,
    NEWLINE,
    SURROGATE,
    PipelineSyntaxError,
    check_characters,
    check_length,
    check_nesting,
)
from ._transforms import Dropout, Sample, Shuffle, Take
from .errors import MoaError

_T = TypeVar("_T")

__all__ = (
    "EXPR_MAX_BRACKETS",
    "EXPR_MAX_CHARS",
    "EXPR_MAX_DEPTH",
    "EXPR_MAX_INT_DIGITS",
    "EXPR_MAX_ITEMS",
    "EXPR_MAX_OPERATORS",
    "EXPR_MAX_REPEAT",
    "EXPR_MAX_STEPS",
    "EXPR_MAX_STRING",
    "PipelineSyntaxError",
    "parse_agent",
    "parse_pipeline",
    "parse_runnable",
    "starved_step",
)

#: The names an expression may call.
STEPS: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        Propose,
        Synthesize,
        Aggregate,
        AggregateSeq,
        Refine,
        Rank,
        Vote,
        Pick,
        Majority,
        WeightedMajority,
        MostConsistent,
        MostConfident,
        Shuffle,
        Dropout,
        Sample,
        Take,
        Pipeline,
        Parallel,
    )
}
#: The values an expression may build besides steps: an agent with its own settings.
VALUES: dict[str, type] = {"Agent": Agent}
#: Steps that exist but take a function, which the command line cannot give.
FUNCTION_STEPS = ("Filter", "Map")

_TOO_LARGE = f"number is too large: an integer has at most {EXPR_MAX_INT_DIGITS} decimal digits"

_OPERATORS = {
    ast.BitOr: "|",
    ast.BitAnd: "&",
    ast.Mult: "*",
    ast.Add: "+",
    ast.Sub: "-",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.Pow: "**",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitXor: "^",
    ast.MatMult: "@",
}

_WHAT = {
    ast.Attribute: "attribute access is",
    ast.Subscript: "subscripts are",
    ast.Lambda: "lambdas are",
    ast.ListComp: "comprehensions are",
    ast.SetComp: "comprehensions are",
    ast.DictComp: "comprehensions are",
    ast.GeneratorExp: "generator expressions are",
    ast.JoinedStr: "f-strings are",
    ast.FormattedValue: "f-strings are",
    ast.Starred: "starred arguments are",
    ast.NamedExpr: "assignment expressions (:=) are",
    ast.Compare: "comparisons are",
    ast.BoolOp: "'and' / 'or' are",
    ast.IfExp: "conditional expressions are",
    ast.Dict: "dict literals are",
    ast.Set: "set literals are",
    ast.Await: "await is",
    ast.Yield: "yield is",
    ast.YieldFrom: "yield is",
    ast.Slice: "slices are",
}


#: What a step's constructor or operator raises when it rejects its arguments. OverflowError
#: and RecursionError are there too: a huge or deeply nested literal (a regex for
#: ``Majority(...)``) can overflow a constructor's own parsing, and the user's argument is
#: still what is at fault.
_REJECTIONS = (TypeError, ValueError, MoaError, OverflowError, RecursionError)


def parse_pipeline(text: str) -> Step:
    """The pipeline that ``text``, a Python expression over the step classes, describes.

    Raises :class:`PipelineSyntaxError` (a ``ValueError``) for text that is not a well-formed
    expression, that uses anything outside the whitelist (attributes, other names and calls,
    lambdas, comprehensions, subscripts, f-strings, ``**``...), that is too large, or whose
    steps reject their arguments; the error points at the offending part of the text.
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_pipeline takes a str, not {type(text).__name__}")
    check_length(text)
    check_characters(text)
    check_nesting(text)
    return _Parser(text).parse(Step)


def parse_runnable(text: str) -> Step:
    """:func:`parse_pipeline` for a pipeline that runs from the start (``moa run
    --pipeline``): one whose first LLM step needs responses that no step before it makes
    (``Aggregate('m')`` alone) is refused here, pointing at that step, rather than failing
    when it runs. (A sub-pipeline meant to be nested may start anywhere: parse it with
    :func:`parse_pipeline`.)"""
    step = parse_pipeline(text)
    starved = starved_step(step)
    if starved is not None:
        name = type(starved).__name__
        raise PipelineSyntaxError(
            f"{name} has no responses to work on: a run starts with none, and no step before "
            f"it makes any; start the pipeline with Propose([...])",
            text,
            max(0, text.find(name)),
            len(name),
        )
    return step


def starved_step(step: Step) -> LLMStep | None:
    """The first LLM step that would get no responses when ``step`` runs from none (the
    start of a run): one that needs responses with no Propose-like step before it. None when
    every step gets some. (A transform can still empty them at run time; this is what the
    pipeline's shape alone says.)"""

    def walk(s: Step, have: bool) -> tuple[bool, LLMStep | None]:
        if isinstance(s, Pipeline):
            for sub in s.steps:
                have, found = walk(sub, have)
                if found is not None:
                    return have, found
            return have, None
        if isinstance(s, Parallel):
            out = False
            for branch in s.branches:
                got, found = walk(branch, have)
                if found is not None:
                    return have, found
                out = out or got
            return out, None
        if isinstance(s, LLMStep):
            if s.needs_responses and not have:
                return have, s
            return True, None
        return have, None  # a transform keeps what it was given, or none

    return walk(step, False)[1]


def parse_agent(text: str) -> Agent:
    """An ``Agent(...)`` expression, parsed as :func:`parse_pipeline` parses (the command
    line's ``--model "Agent('m', temp=0)"``)."""
    if not isinstance(text, str):
        raise TypeError(f"parse_agent(text): text must be a str, not {type(text).__name__}")
    check_length(text)
    check_characters(text)
    check_nesting(text)
    return _Parser(text).parse(Agent)


def _keywords(cls: type) -> frozenset[str] | None:
    """The keyword arguments a step or Agent takes (None: not known, let it say)."""
    if not dataclasses.is_dataclass(cls):
        return None
    names = {f.name for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")}
    if cls is Vote:
        names.add("extract")  # its old spelling of Majority(extract=...)
    return frozenset(names)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        # Lines as Python counts them: "\r" alone ends one too.
        breaks = list(NEWLINE.finditer(text))
        self.line_starts = [0] + [b.end() for b in breaks]
        ends = [b.start() for b in breaks] + [len(text)]
        self.lines = [text[a:b] for a, b in zip(self.line_starts, ends, strict=False)]
        self.calls = 0
        self.agents = 0

    # -- errors ---------------------------------------------------------------------------
    def _offset(self, lineno: int, col: int, *, in_bytes: bool = True) -> int:
        """The character offset in ``text`` of a position in the wrapped source (see
        :meth:`parse`): ``lineno`` 1-based, ``col`` in UTF-8 bytes (AST) or characters."""
        index = lineno - 2  # the wrapped source opens with a line of its own
        if index < 0:
            return 0
        if index >= len(self.lines):
            return len(self.text)
        line = self.lines[index]
        if in_bytes:
            col = len(line.encode("utf-8")[:col].decode("utf-8", errors="ignore"))
        return self.line_starts[index] + max(0, min(col, len(line)))

    def fail(self, message: str, node: ast.AST) -> NoReturn:
        if len(message) > EXPR_MAX_MESSAGE:  # a constructor's message may quote a huge argument
            message = message[: EXPR_MAX_MESSAGE - 20] + " ... (message cut)"
        start = self._offset(getattr(node, "lineno", 1), getattr(node, "col_offset", 0))
        end_line = getattr(node, "end_lineno", None)
        end_col = getattr(node, "end_col_offset", None)
        length = 1
        if end_line is not None and end_col is not None:
            length = self._offset(end_line, end_col) - start
        raise PipelineSyntaxError(message, self.text, start, length)

    # -- entry ----------------------------------------------------------------------------
    def parse(self, kind: type[_T]) -> _T:
        """The value the text builds, which must be a ``kind`` (a Step, or an Agent)."""
        what = "a pipeline" if kind is Step else "an agent"
        if not self.text.strip():
            example = (
                "Propose(['model']) | Aggregate('model')"
                if kind is Step
                else "Agent('model', temp=0)"
            )
            raise PipelineSyntaxError(
                f"empty expression: expected {what} such as {example}", self.text, 0
            )
        # Wrapped in parentheses on lines of their own, the expression may span lines and
        # start with spaces, as a shell argument may; columns are unchanged, lines move by one.
        try:
            # Python only warns of some slips (an invalid escape '\d', 1if); raised, they
            # become SyntaxErrors with a position, whatever the caller's warning filters, and
            # nothing is printed on the side with the wrapped source's line numbers.
            with warnings.catch_warnings():
                warnings.simplefilter("error", SyntaxWarning)
                warnings.simplefilter("error", DeprecationWarning)
                tree = ast.parse(f"(\n{self.text}\n)", mode="eval")
        except SyntaxError as e:
            self.syntax_error(e)
        except ValueError as e:  # Python's digit limit, raised as itself by some versions
            self.syntax_error(SyntaxError(str(e)))
        except (RecursionError, MemoryError):
            raise PipelineSyntaxError("expression is nested too deeply", self.text, 0) from None
        value = self.value(tree.body, 0)
        if not isinstance(value, kind):
            self.fail(f"expected {what}, got {_kind(value)}", tree.body)
        return value

    def syntax_error(self, e: SyntaxError) -> NoReturn:
        """Raise Python's syntax error ``e`` as a PipelineSyntaxError on the user's text."""
        msg = str(e.msg or "invalid syntax")
        if msg.startswith("Exceeds the limit"):  # a decimal literal past 4300 digits
            # Python gives no position: point at the longest run of digits, the culprit.
            runs = re.finditer(r"\d(?:_?\d)*", self.text)
            huge = max(runs, key=lambda m: len(m[0]), default=None)
            raise PipelineSyntaxError(
                _TOO_LARGE, self.text, huge.start() if huge else 0, len(huge[0]) if huge else 1
            ) from None
        lineno = e.lineno or 2
        start = self._offset(lineno, (e.offset or 1) - 1, in_bytes=False)
        length = 1
        if e.end_offset and e.end_lineno in (None, lineno) and e.end_offset > (e.offset or 0):
            length = e.end_offset - (e.offset or 1)
        # Python's message counts lines of the wrapped source; count the user's instead.
        msg = re.sub(r"\b(line) (\d+)", lambda m: f"{m[1]} {max(1, int(m[2]) - 1)}", msg)
        if not msg.startswith("invalid syntax"):
            msg = f"invalid syntax: {msg}"
        raise PipelineSyntaxError(msg, self.text, start, length) from None

    # -- evaluation -----------------------------------------------------------------------
    def value(self, node: ast.expr, depth: int) -> Any:
        if depth > EXPR_MAX_DEPTH:
            self.fail(f"expression is nested too deeply: more than {EXPR_MAX_DEPTH} levels", node)
        if isinstance(node, ast.Constant):
            return self.constant(node)
        if isinstance(node, (ast.List, ast.Tuple)):
            if len(node.elts) > EXPR_MAX_ITEMS:
                self.fail(
                    f"list is too long: {len(node.elts)} items, at most {EXPR_MAX_ITEMS}", node
                )
            items = [self.value(e, depth + 1) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.UnaryOp):
            operand = node.operand
            if (
                isinstance(node.op, ast.USub)
                and isinstance(operand, ast.Constant)
                and type(operand.value) in (int, float)
            ):
                return -self.constant(operand)
            self.fail("only a minus sign before a number is allowed here", node)
        if isinstance(node, ast.Call):
            return self.call(node, depth)
        if isinstance(node, ast.BinOp):
            return self.binop(node, depth)
        if isinstance(node, ast.Name):
            self.name(node.id, node, called=False)
        what = _WHAT.get(type(node), f"{type(node).__name__} expressions are")
        self.fail(f"{what} not allowed in a pipeline expression", node)

    def constant(self, node: ast.Constant) -> Any:
        value = node.value
        if type(value) is int and abs(value) >= 10**EXPR_MAX_INT_DIGITS:
            # Checked before anything formats it: str() of an int past 4300 digits raises.
            self.fail(_TOO_LARGE, node)
        if value is None or type(value) in (bool, int, float):
            return value
        if type(value) is str:
            if len(value) > EXPR_MAX_STRING:
                self.fail(
                    f"string is too long: {len(value)} characters, at most {EXPR_MAX_STRING}", node
                )
            surrogate = SURROGATE.search(value)  # written as an escape, '\\ud800'
            if surrogate:
                self.fail(
                    f"string holds a lone surrogate U+{ord(surrogate[0]):04X} (not valid Unicode)",
                    node,
                )
            return value
        self.fail(
            f"{type(value).__name__} literals are not allowed; use str, int, float, bool or None",
            node,
        )

    def name(self, name: str, node: ast.AST, *, called: bool) -> type:
        if name.startswith("_"):
            self.fail(f"name {name!r} is not allowed", node)
        if name in FUNCTION_STEPS:
            self.fail(
                f"{name} takes a function, and functions cannot be given on the command "
                f"line; build it in Python instead",
                node,
            )
        if name in STEPS or name in VALUES:
            if not called:
                self.fail(f"{name} must be called: write {name}(...)", node)
            return STEPS.get(name) or VALUES[name]
        known = [*STEPS, *VALUES]
        close = difflib.get_close_matches(name, known, n=1)
        if not close:  # case slips ('shuffle') are too short for the ratio sometimes
            lower = {k.lower(): k for k in known}
            close = [lower[name.lower()]] if name.lower() in lower else []
        hint = (
            f": did you mean {close[0]}?"
            if close
            else (f"; the steps are {', '.join(sorted(STEPS))}")
        )
        self.fail(f"unknown {'step' if called else 'name'} {name!r}{hint}", node)

    def call(self, node: ast.Call, depth: int) -> Any:
        func = node.func
        if not isinstance(func, ast.Name):
            if isinstance(func, ast.Attribute):
                self.fail("attribute access is not allowed in a pipeline expression", func)
            self.fail("only the step names can be called (and Agent)", func)
        cls = self.name(func.id, func, called=True)
        if cls is Agent:
            self.agents += 1
            if self.agents > EXPR_MAX_ITEMS:
                self.fail(f"too many agents: more than {EXPR_MAX_ITEMS}", node)
        else:
            self.calls += 1
            if self.calls > EXPR_MAX_STEPS:
                self.fail(f"too many steps: more than {EXPR_MAX_STEPS}", node)
        args = []
        for a in node.args:
            if isinstance(a, ast.Starred):
                self.fail("starred arguments (*args) are not allowed", a)
            args.append(self.value(a, depth + 1))
        kwargs = {}
        known = _keywords(cls)
        for k in node.keywords:
            if k.arg is None:
                self.fail("keyword unpacking (**kwargs) is not allowed", k)
            if k.arg in kwargs:  # the parser rejects this already; keep the guard
                self.fail(f"keyword argument {k.arg!r} repeated", k)
            if known is not None and k.arg not in known:
                close = difflib.get_close_matches(k.arg, sorted(known), n=1)
                hint = (
                    f": did you mean {close[0]}=?"
                    if close
                    else f"; it takes {', '.join(sorted(known))}"
                )
                self.fail(f"{cls.__name__} has no argument {k.arg!r}{hint}", k)
            kwargs[k.arg] = self.value(k.value, depth + 1)
        if cls in (Pipeline, Parallel):
            for a, v in zip(node.args, args, strict=False):
                if not isinstance(v, Step) and not (
                    isinstance(v, (list, tuple)) and all(isinstance(x, Step) for x in v)
                ):
                    self.fail(
                        f"each argument of {cls.__name__}(...) must be a step, not {_kind(v)}", a
                    )
            if kwargs:
                self.fail(f"{cls.__name__}(...) takes no keyword arguments", node.keywords[0])
            steps = sum(
                _count(x) for v in args for x in (v if isinstance(v, (list, tuple)) else [v])
            )
            self.check_size(steps, node)
        return self.build(node, cls, *args, **kwargs)

    def build(self, node: ast.AST, make: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``make(*args, **kwargs)``: a step's constructor or operator, whose rejection of its
        arguments becomes a PipelineSyntaxError pointing at ``node``."""
        try:
            return make(*args, **kwargs)
        except _REJECTIONS as e:
            self.fail(_reason(e), node)

    def binop(self, node: ast.BinOp, depth: int) -> Any:
        # A chain a | b | c nests to the left; walk it without recursion so a long chain is
        # neither a deep AST nor a deep Python stack.
        chain: list[ast.BinOp] = []
        left: ast.expr = node
        while isinstance(left, ast.BinOp):
            chain.append(left)
            left = left.left
        chain.reverse()
        for op_node in chain:
            op = _OPERATORS.get(type(op_node.op), type(op_node.op).__name__)
            if op not in ("|", "&", "*", "+"):
                self.fail(
                    f"operator {op!r} is not allowed; use | (then), & (alongside), * (repeat) "
                    "or + (join two lists of agents)",
                    op_node,
                )
        value = self.value(left, depth + 1)
        for op_node in chain:
            right = self.value(op_node.right, depth + 1)
            value = self.combine(op_node, value, right)
        return value

    def combine(self, node: ast.BinOp, left: Any, right: Any) -> Any:
        if isinstance(node.op, ast.Add):
            return self.join_lists(node, left, right)
        if isinstance(node.op, ast.Mult):
            if (isinstance(left, list) and _is_count(right)) or (
                _is_count(left) and isinstance(right, list)
            ):
                return self.repeat_list(node, left, right)
            if isinstance(left, Step) and _is_count(right):
                step, n, count_node = left, right, node.right
            elif _is_count(left) and isinstance(right, Step):
                step, n, count_node = right, left, node.left
            else:
                self.fail(
                    f"'*' repeats a step or a list a whole number of times (step * n, "
                    f"['model'] * n), not {_kind(left)} * {_kind(right)}",
                    node,
                )
            if n < 0:
                self.fail(f"a step repeats n >= 0 times, got {n}", count_node)
            if n > EXPR_MAX_REPEAT:
                self.fail(f"too many repetitions: {n}, at most {EXPR_MAX_REPEAT}", count_node)
            self.check_size(_count(step) * n, node)
            return self.build(node, operator.mul, step, n)
        op = "|" if isinstance(node.op, ast.BitOr) else "&"
        for side, v, sub in (("left", left, node.left), ("right", right, node.right)):
            if not isinstance(v, Step) and not (
                isinstance(v, (list, tuple)) and v and all(isinstance(x, Step) for x in v)
            ):
                self.fail(f"the {side} operand of '{op}' must be a step, not {_kind(v)}", sub)
        left_s = self.build(node.left, Pipeline, *_steps(left))
        right_s = self.build(node.right, Pipeline, *_steps(right))
        self.check_size(_count(left_s) + _count(right_s), node)
        return self.build(node, operator.or_ if op == "|" else operator.and_, left_s, right_s)

    def repeat_list(self, node: ast.BinOp, left: Any, right: Any) -> list[Any]:
        # ["model"] * 6, as Self-MoA is written in Python: a list of literals, repeated.
        items, n = (left, right) if isinstance(left, list) else (right, left)
        if any(isinstance(x, Step) for x in items):
            self.fail(
                "'*' repeats a list of model names, not of steps; repeat a step with step * n", node
            )
        if not all(isinstance(x, (str, Agent)) for x in items):
            # Only flat lists: a list of repeated lists would multiply past every size limit.
            self.fail(
                "'*' repeats a list of model names (str) or agents, not of other values", node
            )
        if n < 0:
            self.fail(f"a list repeats n >= 0 times, got {n}", node)
        if len(items) * n > EXPR_MAX_ITEMS:
            self.fail(f"list is too long: {len(items)} * {n} items, at most {EXPR_MAX_ITEMS}", node)
        return items * n if items else []  # [] * n overflows for an n past sys.maxsize

    def join_lists(self, node: ast.BinOp, left: Any, right: Any) -> list[Any]:
        # ['m'] + [Agent('m', temp=0.3)] * 5, as a pool of agents is written in Python.
        for value in (left, right):
            if not isinstance(value, list) or not all(isinstance(x, (str, Agent)) for x in value):
                self.fail(
                    f"'+' joins two lists of model names or agents, not {_kind(left)} + "
                    f"{_kind(right)}",
                    node,
                )
        if len(left) + len(right) > EXPR_MAX_ITEMS:
            self.fail(
                f"list is too long: {len(left)} + {len(right)} items, at most {EXPR_MAX_ITEMS}",
                node,
            )
        return [*left, *right]

    def check_size(self, steps: int, node: ast.AST) -> None:
        if steps > EXPR_MAX_STEPS:
            self.fail(
                f"too many steps: this part would make {steps}, at most {EXPR_MAX_STEPS}", node
            )


def _steps(value: Any) -> list[Step]:
    return [value] if isinstance(value, Step) else list(value)


def _is_count(value: Any) -> bool:
    return type(value) is int


def _count(step: Step) -> int:
    """How many leaf steps ``step`` holds, repetitions expanded."""
    if isinstance(step, Pipeline):
        return sum(_count(s) for s in step.steps)
    if isinstance(step, Parallel):
        return sum(_count(b) for b in step.branches)
    return 1


def _kind(value: Any) -> str:
    if isinstance(value, Step):
        return "a step"
    try:
        shown = repr(value)
    except Exception:  # an error message must not fail on the value it describes
        return f"a {type(value).__name__}"
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return f"{shown} ({type(value).__name__})"


def _reason(error: BaseException) -> str:
    """What ``error`` says; its type where it says nothing, or where saying it raises (as the
    str of an int past 4300 digits does)."""
    try:
        said = str(error)
    except Exception:
        said = ""
    return said or f"the step rejected its arguments ({type(error).__name__})"

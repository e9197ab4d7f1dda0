"""The sizes moa accepts and the one rule for bad arguments.

Sizes: each is checked where the value enters (a step's constructor, a client's reply, a
request a step builds), so an unbounded input is refused with an error that names the limit
instead of exhausting memory or the stack at run time. docs/reference/limits.md lists them
beside the parser's own (:mod:`moa._parse`).

The rule for bad arguments, everywhere: a value of the wrong type raises ``TypeError``, a value
of the right type that breaks a rule raises ``ValueError``; both name the argument as
``owner(name=...)`` and state the rule. The text helpers here (:func:`safe_repr`,
:func:`describe`, :func:`error_text`) are the only ways moa turns a value or an exception into
the text of a message.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

#: Levels of Pipeline/Parallel nesting (``a | (b & (c | ...))``); deeper would overflow the
#: stack in ``repr``, ``hash`` and ``run``, and no pipeline needs it.
MAX_NESTING = 32
#: Steps in one Pipeline, or branches in one Parallel, after flattening (``s * n`` included).
MAX_STEPS = 10_000
#: Calls one step may ask for in one round (agents of Propose/Synthesize/Refine's list,
#: Pick's ``times``).
MAX_CALLS = 1_000
#: A count argument (``Take(n)``, ``Sample(n)``, ``Rank(n=...)``).
MAX_COUNT = 1_000_000
#: A sampling temperature: providers take 0 to 2; above 100 is no temperature at all (and an
#: int that large would print as more digits than an expression may hold).
MAX_TEMP = 100
#: Characters in one reply from a client; a longer one fails that call (not retried).
MAX_REPLY_CHARS = 1_000_000
#: Characters in one request's messages (an aggregator reading every response); a larger
#: one fails its step before anything is sent.
MAX_REQUEST_CHARS = 4_000_000


# -- text ----------------------------------------------------------------------------------------
def aligned(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows of cells as the lines of a text table: two spaces apart, the first column to the
    left, the others to the right."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()
        for r in rows
    ]


def shown(n: int) -> str:
    """An int for an error message: a huge one (whose ``str`` Python refuses past 4,300
    digits, or that would flood the message) by its size."""
    return str(n) if -(10**20) < n < 10**20 else f"an integer of {n.bit_length():,} bits"


def safe_repr(value: object) -> str:
    """``repr(value)`` cut to 80 characters; a failing or huge repr is described instead."""
    try:
        text = shown(value) if type(value) is int else repr(value)
    except Exception:  # a user's object whose __repr__ fails must not replace the real error
        return f"a {type(value).__name__} (its repr fails)"
    return text if len(text) <= 80 else text[:77] + "..."


def describe(value: object) -> str:
    """A value and its type, for a message about a value of the wrong type: ``'3' (str)``."""
    return f"{safe_repr(value)} ({type(value).__name__})"


def error_text(exc: BaseException) -> str:
    """How an exception is written into history, a batch's output and a message: its type
    and its text (``TimeoutError`` alone when it has none). An exception whose ``__str__``
    raises is named by its type: reporting a failure must never fail."""
    try:
        text = str(exc)
    except Exception:
        text = "(its message cannot be shown: str() raised)"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- checks --------------------------------------------------------------------------------------
def check_type(
    owner: str, name: str, value: object, kinds: type | tuple[type, ...], rule: str
) -> None:
    """TypeError unless ``value`` is an instance of ``kinds`` (a bool is never a number)."""
    if isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
        raise TypeError(f"{owner}({name}=...): {name} must be {rule}, not {describe(value)}")
    if not isinstance(value, kinds):
        raise TypeError(f"{owner}({name}=...): {name} must be {rule}, not {describe(value)}")


def check_int(
    owner: str, name: str, value: object, low: int, high: int, none: bool = False
) -> None:
    """An int from ``low`` to ``high`` (or None, when ``none``): TypeError for another type,
    ValueError out of range, each naming the argument and stating the rule."""
    if value is None and none:
        return
    rule = f"an int >= {low}{' or None' if none else ''}"
    check_type(owner, name, value, int, rule)
    assert isinstance(value, int)
    if value < low:
        raise ValueError(f"{owner}({name}=...): {name} must be {rule}, got {shown(value)}")
    if value > high:
        raise ValueError(
            f"{owner}({name}=...): {name} must be an int <= {high:,}, got {shown(value)}"
        )


def check_number(
    owner: str, name: str, value: object, *, low: float = 0.0, above: bool = False,
    high: float | None = None, none: bool = False, unit: str = "a finite number",
) -> None:  # fmt: skip
    """A finite real number >= ``low`` (> ``low`` when ``above``) and <= ``high``, or None when
    ``none``: TypeError for another type, ValueError for NaN, an infinity or one out of range.
    An int too large to be a float is out of range too (its repr may be refused)."""
    if value is None and none:
        return
    bound = f"{'>' if above else '>='} {low:g}" + (f" and <= {high:g}" if high is not None else "")
    rule = f"{unit} {bound}" + (" or None" if none else "")
    check_type(owner, name, value, (int, float), rule)
    assert isinstance(value, (int, float))
    top = sys.float_info.max if high is None else high
    ok = (value > low if above else value >= low) and value <= top
    if not ok or (isinstance(value, float) and not math.isfinite(value)):
        raise ValueError(f"{owner}({name}=...): {name} must be {rule}, got {safe_repr(value)}")


#: The seeds moa takes: 64-bit signed integers (a run's drawn seed is 63 bits). Integer ids of
#: a batch are held to the same range (a Parquet or Ray column holds them in 64 bits).
SEED_RANGE = range(-(2**63), 2**63)


def check_seed(owner: str, name: str, value: object, none: bool = True) -> None:
    """An int in :data:`SEED_RANGE` (or None): TypeError for another type, ValueError out of
    range."""
    if value is None and none:
        return
    check_type(owner, name, value, int, "an int" + (" or None" if none else ""))
    assert isinstance(value, int)
    if value not in SEED_RANGE:
        raise ValueError(
            f"{owner}({name}=...): {name} must be a 64-bit integer (-2**63 to 2**63 - 1), "
            f"got {shown(value)}"
        )


def check_seconds(owner: str, name: str, value: object) -> None:
    """None or a finite number of seconds > 0 (TypeError for another type, ValueError out of
    range), in a message that names the argument and states the rule."""
    check_number(owner, name, value, above=True, none=True, unit="a finite number of seconds")


def unicode_error(text: str) -> str | None:
    """Why ``text`` cannot be sent to a model (it holds a lone surrogate, as text decoded
    from invalid UTF-8 with ``surrogateescape`` does), or None when it can."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (
            f"it holds a lone surrogate {text[exc.start]!r} at index {exc.start} "
            f"(invalid UTF-8 in the input?)"
        )
    return None

"""The sizes moa accepts, each checked where the value enters (a step's constructor, a
client's reply, a request a step builds), so an unbounded input is refused with an error that
names the limit instead of exhausting memory or the stack at run time. The README's limits
table lists them beside the parser's own.
"""

from __future__ import annotations

import math

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
#: Characters in one reply from a client; a longer one fails that call (not retried).
MAX_REPLY_CHARS = 1_000_000
#: Characters in one request's messages (an aggregator reading every response); a larger
#: one fails its step before anything is sent.
MAX_REQUEST_CHARS = 4_000_000


def shown(n: int) -> str:
    """An int for an error message: a huge one (whose ``str`` Python refuses past 4,300
    digits, or that would flood the message) by its size."""
    return str(n) if -(10**20) < n < 10**20 else f"an integer of {n.bit_length():,} bits"


def check_int(
    owner: str, name: str, value: object, low: int, high: int, none: bool = False
) -> None:
    """Raise ValueError unless ``value`` is an int (not a bool) from ``low`` to ``high`` (or
    None, when ``none``), in a message that names the argument and states the rule."""
    if value is None and none:
        return
    rule = f"an int >= {low}{' or None' if none else ''}"
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{owner}({name}=...): {name} must be {rule}, got {safe_repr(value)}")
    if value > high:
        raise ValueError(
            f"{owner}({name}=...): {name} must be an int <= {high:,}, got {shown(value)}"
        )


def check_seconds(owner: str, name: str, value: object) -> None:
    """Raise ValueError unless ``value`` is None or a finite number of seconds > 0 (not a
    bool), in a message that names the argument and states the rule."""
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf
    ):
        raise ValueError(
            f"{owner}({name}=...): {name} must be a number of seconds > 0 or None, "
            f"got {safe_repr(value)}"
        )


def safe_repr(value: object) -> str:
    """``repr(value)`` cut to 80 characters; a failing or huge repr is described instead."""
    try:
        text = shown(value) if type(value) is int else repr(value)
    except Exception:  # a user's object whose __repr__ fails must not replace the real error
        return f"a {type(value).__name__} (its repr fails)"
    return text if len(text) <= 80 else text[:77] + "..."

"""The sizes moa accepts, each checked where the value enters (a step's constructor, a
client's reply, a request a step builds), so an unbounded input is refused with an error that
names the limit instead of exhausting memory or the stack at run time. The README's limits
table lists them beside the parser's own.
"""

from __future__ import annotations

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
    return str(n) if -10**20 < n < 10**20 else f"an integer of {n.bit_length():,} bits"

"""Sampling seeds that reach the model: each call's seed comes from the run's seed, its step's
place in the pipeline, the request itself (model, messages, temperature, max_tokens) and its
sample index (its position among identical requests in that step), so Self-MoA's identical
requests still get different samples, different requests never share a seed, a run replays
exactly, and a request's seed does not move when other agents are added beside it.

A client receives a seed only if it takes one: a ``seed`` parameter that can be given by
keyword (``async def client(*, model, messages, temp, max_tokens, seed=None)``). A client of
mixture-llm's four-argument signature is never passed an argument it does not take.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._bounds import SEED_RANGE, check_seed, check_type, shown

if TYPE_CHECKING:
    from ._contract import Identity

__all__ = ("SEED_BITS", "accepts", "accepts_seed", "call_seed", "check_id", "row_seed")

#: Call seeds are below 2**31: every backend takes them (llama.cpp's are 32-bit unsigned,
#: some servers parse a signed 32-bit int).
SEED_BITS = 31


def check_id(owner: str, name: str, ident: object) -> None:
    """A prompt's id: a str, or an int in 64 bits (TypeError for another type, ValueError
    for an int out of range)."""
    if isinstance(ident, str):
        return
    check_type(owner, name, ident, int, "a str or an int")
    assert isinstance(ident, int)
    if ident not in SEED_RANGE:
        raise ValueError(
            f"{owner}({name}=...): an int id must fit in 64 bits (-2**63 to 2**63 - 1), "
            f"got {shown(ident)}; use a str id"
        )


_known: weakref.WeakKeyDictionary[Any, dict[str, bool]] = weakref.WeakKeyDictionary()


def call_seed(run_seed: int, path: tuple[int, ...], identity: Identity, sample: int) -> int:
    """The sampling seed of sample ``sample`` of the request whose identity
    (:attr:`~moa.steps.Request.identity`) is ``identity``, in the step at ``path``."""
    model, pairs, temp, max_tokens = identity
    h = hashlib.blake2b(digest_size=8)
    h.update(f"moa-call-seed/1/{run_seed}/{'.'.join(map(str, path))}/{sample}/".encode())
    h.update(json.dumps([model, pairs, repr(temp), max_tokens]).encode())
    return int.from_bytes(h.digest(), "big") >> (64 - SEED_BITS)


def _takes(fn: Callable[..., Any], keyword: str) -> bool:
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # no signature to read (a builtin): it takes none
        return False
    found = parameters.get(keyword)
    return found is not None and found.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )


def accepts(fn: Callable[..., Any], keyword: str) -> bool:
    """Whether ``fn`` (a client, or its ``stream`` method) takes ``keyword`` (``seed``,
    ``logprobs``) by keyword. Read from its signature once per client: runs ask it every
    time."""
    # A bound method's answer is its function's (a new method object is made at each lookup).
    key = getattr(fn, "__func__", None) or fn
    if type(key).__weakrefoffset__ == 0:
        # An instance that cannot be weakly referenced (a class with __slots__): its signature
        # is its class's __call__'s, so the class is asked once for all of them.
        key = type(key)
    try:
        known = _known[key]
    except KeyError:
        known = _known[key] = {}
    except TypeError:  # unhashable (an __eq__ without __hash__): asked again next time
        known = {}
    answer = known.get(keyword)
    if answer is None:
        answer = known[keyword] = _takes(fn, keyword)
    return answer


def accepts_seed(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` (a client, or its ``stream`` method) takes a ``seed`` keyword."""
    return accepts(fn, "seed")


def row_seed(seed: int, ident: str | int) -> int:
    """The run seed of the prompt with id ``ident`` in a batch seeded with ``seed``: from the
    id, not the prompt's position, so a batch gives each prompt the same seed however it is
    split (across Ray workers, or resumed). Both are checked: a 64-bit ``seed``; an id that
    is a str or a 64-bit int."""
    check_seed("row_seed", "seed", seed, none=False)
    check_id("row_seed", "ident", ident)
    text = f"moa-row-seed/1/{seed}/{json.dumps(ident)}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big") >> 1

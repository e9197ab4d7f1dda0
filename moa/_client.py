"""What a client is: the async function that calls a model, the optional ``stream`` method, the
reply it must return, and how moa checks that reply."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from ._bounds import MAX_REPLY_CHARS, safe_repr, unicode_error
from ._response import Confidence
from .errors import ClientOutputError, ProviderError

__all__ = (
    "Client",
    "Reply",
    "StreamingClient",
    "Usage",
    "check_output",
    "close_client",
    "unicode_error",
    "utf8_text",
)


class Reply(NamedTuple):
    """What a client returns: the text, then input and output tokens (None: not reported),
    and, from a client that can read them, the model's :class:`~moa.Confidence` in the text
    (its tokens' log-probabilities). A client may return a plain 3-tuple (a Reply without a
    confidence) or 4-tuple."""

    text: str
    input_tokens: int | None
    output_tokens: int | None
    confidence: Confidence | None = None


class Client(Protocol):
    """``async def client(model, messages, temp, max_tokens) -> (text, input_tokens,
    output_tokens)``, called with keyword arguments. A token count may be None (unknown)."""

    def __call__(
        self, *, model: str, messages: list[dict[str, str]], temp: float, max_tokens: int
    ) -> Awaitable[tuple[str, int | None, int | None]]: ...


@dataclass(frozen=True, slots=True)
class Usage:
    """The token counts a streamed reply ends with; either may be None (not reported). A
    stream asked for ``logprobs`` may end with the reply's :class:`~moa.Confidence` too."""

    input_tokens: int | None
    output_tokens: int | None
    confidence: Confidence | None = None


class StreamingClient(Client, Protocol):
    """A client that can also stream: ``client.stream(model=, messages=, temp=, max_tokens=)``
    is an async iterator of the reply's text chunks (``str``, in order) whose last item may be a
    :class:`Usage`. Without a Usage the counts are unknown. Optional: ``run_stream`` streams a
    client that has ``stream`` and waits for the whole reply from one that has not."""

    def stream(
        self, *, model: str, messages: list[dict[str, str]], temp: float, max_tokens: int
    ) -> AsyncIterator[str | Usage]: ...


def _count_ok(n: object) -> bool:
    return n is None or (type(n) is int and 0 <= n < _TOKENS)


def check_output(model: str, out: Any) -> Reply:
    """``out``, a client's return, as a :class:`Reply`; ClientOutputError (or ProviderError
    for a reply past the size limit) naming the model and the rule it broke. Every call's
    reply passes here: a well-formed tuple is accepted at the first test."""
    if type(out) is tuple and len(out) == 3:
        text, tin, tout = out
        if (
            type(text) is str
            and len(text) <= MAX_REPLY_CHARS
            # _count_ok, inlined: every call passes here
            and (tin is None or (type(tin) is int and 0 <= tin < _TOKENS))
            and (tout is None or (type(tout) is int and 0 <= tout < _TOKENS))
        ):
            return _new_tuple(Reply, (text, tin, tout, None))
    if type(out) is Reply:
        text, tin, tout, confidence = out
        if (
            type(text) is str
            and len(text) <= MAX_REPLY_CHARS
            and _count_ok(tin)
            and _count_ok(tout)
            and (confidence is None or type(confidence) is Confidence)
        ):
            return out
    # A tuple subclass (a namedtuple) or a list of three is the shape too; a fourth item is
    # the confidence (a plain tuple spelled as a Reply is).
    if not isinstance(out, (tuple, list)) or len(out) not in (3, 4):
        raise ClientOutputError(
            model,
            out,
            "expected a tuple of 3 items (or 4, the last a moa.Confidence or None)",
        )
    text, tin, tout, *rest = out
    confidence = rest[0] if rest else None
    if type(text) is not str:
        raise ClientOutputError(model, out, f"the text must be a str, got {type(text).__name__}")
    if len(text) > MAX_REPLY_CHARS:
        raise ProviderError(
            f"the reply is {len(text):,} characters, more than moa accepts "
            f"in one reply ({MAX_REPLY_CHARS:,})",
            model=model,
            retryable=False,
        )
    for name, n in (("input_tokens", tin), ("output_tokens", tout)):
        if not _count_ok(n):
            raise ClientOutputError(
                model, out, f"{name} must be an int >= 0 (in 64 bits) or None, got {safe_repr(n)}"
            )
    if confidence is not None and not isinstance(confidence, Confidence):
        raise ClientOutputError(
            model,
            out,
            f"the confidence must be a moa.Confidence or None, got {safe_repr(confidence)}",
        )
    return Reply(text, tin, tout, confidence)


_TOKENS = 2**63  # a count that fits a 64-bit column
_new_tuple = tuple.__new__


_SURROGATE = re.compile("[\ud800-\udfff]")


def utf8_text(text: str) -> str:
    """``text`` as UTF-8 can hold it: each lone surrogate (which no UTF-8 file or Arrow
    column can store) replaced by U+FFFD; any other text as it is."""
    return text if unicode_error(text) is None else _SURROGATE.sub("\ufffd", text)


async def close_client(client: object) -> None:
    """Close a client that holds connections (its ``aclose``, as the HTTP clients have), so
    none is left open when its event loop ends; a plain function needs nothing."""
    aclose = getattr(client, "aclose", None)
    if aclose is not None:
        await aclose()

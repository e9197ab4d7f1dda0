"""Server-sent events for the streaming clients (openai, anthropic): the body read and parsed
by us, every generator closed, and errors sent inside a begun stream given the HTTP status they
stand for, so they are sorted as the same failure sent before the stream would be.

Why not the SDKs' own streams, or httpx-sse (tried against tests/clients, openai 3.63 and
anthropic 2.17): each loses a tested behaviour.

- Closing, under trio. ``async with`` on an SDK stream, and its ``close()``, close the HTTP
  response but not the async generators that read it, which trio reports as a ResourceWarning
  ("garbage collected before it had been exhausted"). ``openai.AsyncStream.__stream__`` (what
  ``chat.completions.create(stream=True)`` returns and ``chat.completions.stream()`` wraps)
  breaks out at "[DONE]" and leaves ``_iter_events``, ``SSEDecoder.aiter_bytes`` and
  httpx2's ``Response.aiter_bytes`` suspended on every stream, even one read to its end.
  ``anthropic.AsyncStream`` (``messages.create(stream=True)``, ``messages.stream()``) and its
  ``raw_events`` leave theirs whenever the reader stops first: a break, an ``error`` event.
  httpx-sse's ``EventSource.aiter_sse`` closes its line reader but not the ``aiter_text`` under
  it: the same whenever the reader stops first.
- "[DONE]". ``openai.AsyncStream`` swallows it, so a body that stops cleanly mid-reply (a
  proxy cut it: retryable) cannot be told from a reply that ended with "[DONE]" but no
  finish_reason, nor a bare "[DONE]" (no chat completion stream: not retryable).
- Event names. ``anthropic.AsyncStream.__stream__`` yields each event's data typed by its
  ``type`` field: the SSE event name is dropped and an event without one is skipped, so another
  API's stream reads as an empty message, and a malformed event raises the SDK's TypeError or
  AttributeError (``messages.stream()``'s accumulator) instead of a ``ProviderError``. Its
  ``error`` event is an ``APIStatusError`` with the stream's status, 200.
- Malformed chunks. ``chat.completions.stream()`` skips a chunk whose delta is no object, and
  its ``get_final_completion()`` fails an assert on ``choices`` that is no list, where moa
  raises a ``ProviderError`` that names what is wrong.

The SDKs still open each stream: the request, its auth, and an error status sent before the
body, raised as their exceptions and sorted by ``provider_error``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from typing import Any

import anyio

from ..errors import ProviderError
from ._errors import redact

__all__ = ("DONE", "SSEParser", "StreamError", "check_ended", "close_shielded", "sse_events")

# The HTTP status an error sent inside a begun stream stands for, by the error's type or code,
# as OpenAI, OpenRouter and Anthropic name them. An unknown one is a server fault (500).
_STREAM_ERROR_STATUS = {
    "invalid_request_error": 400,
    "context_length_exceeded": 400,
    "authentication_error": 401,
    "invalid_api_key": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "model_not_found": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "insufficient_quota": 429,
    "server_error": 500,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


class StreamError(Exception):
    """An error a server sent inside a stream it had begun with HTTP 200, given the status its
    type stands for, so that ``provider_error`` sorts it as it sorts the same failure sent
    before the stream (an overloaded model is retryable, a context overflow is not)."""

    def __init__(self, error: object) -> None:
        fields = error if isinstance(error, Mapping) else {"message": str(error)}
        message = fields.get("message")
        super().__init__(message if isinstance(message, str) else "the stream failed")
        self.status_code = _stream_error_status(fields)
        self.body = {"error": dict(fields)}
        code = fields.get("code")
        self.code = code if isinstance(code, str) else None


def _stream_error_status(fields: Mapping[str, Any]) -> int:
    code = fields.get("code")
    if isinstance(code, str) and code.isdigit():
        code = int(code)
    if type(code) is int and 400 <= code <= 599:  # OpenRouter and vLLM send the status
        return code
    for key in ("type", "code"):
        name = fields.get(key)
        if isinstance(name, str) and name in _STREAM_ERROR_STATUS:
            return _STREAM_ERROR_STATUS[name]
    return 500


class _Done:
    """The data "[DONE]" that ends an OpenAI stream: a marker of its own, which no JSON value
    (the string "[DONE]" included) can be mistaken for."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "[DONE]"


DONE = _Done()

_LINE_END = re.compile(rb"\r\n|\r|\n")


class SSEParser:
    """Server-sent events from a body's pieces as they arrive: ``feed`` returns the
    ``(event, data)`` of each event the piece completes ("message" when the event has no name)."""

    __slots__ = ("_data", "_event", "_pending")

    def __init__(self) -> None:
        self._pending = b""
        self._event = ""
        self._data: list[str] = []

    def feed(self, piece: bytes) -> list[tuple[str, str]]:
        buffer = self._pending + piece
        # A final "\r" may be the first half of "\r\n": it waits for the next piece.
        cut = len(buffer) - 1 if buffer.endswith(b"\r") else len(buffer)
        *lines, rest = _LINE_END.split(buffer[:cut])
        self._pending = rest + buffer[cut:]
        events = []
        for raw in lines:
            line = raw.decode("utf-8", errors="replace")
            if not line:
                if self._data or self._event:
                    events.append((self._event or "message", "\n".join(self._data)))
                self._event, self._data = "", []
            elif not line.startswith(":"):  # a comment, as OpenRouter's keep-alives
                field, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if field == "event":
                    self._event = value
                elif field == "data":
                    self._data.append(value)
        return events


async def sse_events(
    response: Any,
    *,
    model: str,
    secrets: tuple[str, ...],
    sort: Callable[[Exception], ProviderError | None],
) -> AsyncGenerator[Any, None]:
    """The events of a streamed response body, as ``(event, data)`` with ``data`` parsed from
    JSON (or :data:`DONE` for "[DONE]"), until the body ends. A failed read raises the
    ``ProviderError`` that ``sort`` makes of it; data that is no JSON is a retryable one."""
    parser = SSEParser()
    async with aclosing(response.aiter_bytes()) as body:
        while (piece := await _read(body, sort)) is not None:
            for event, data in parser.feed(piece):
                yield event, _parsed(data, model, secrets)


def _parsed(data: str, model: str, secrets: tuple[str, ...]) -> Any:
    if data.startswith("[DONE]"):
        return DONE
    try:
        return json.loads(data)
    except ValueError:
        pass
    # A body cut short or garbled on the way: another try may well succeed.
    raise ProviderError(
        redact(f"the stream sent data that is not JSON: {data[:200]!r}", secrets),
        model=model,
        retryable=True,
    )


async def _read(body: Any, sort: Callable[[Exception], ProviderError | None]) -> bytes | None:
    # The body's next piece, None at its end.
    try:
        return await anext(body)
    except StopAsyncIteration:
        return None
    except Exception as exc:
        error = sort(exc)
        if error is None:
            raise
    # Outside the except block, so the HTTP layer's exception is neither cause nor context.
    raise error from None


async def close_shielded(stream: Any) -> None:
    """Close an SDK stream (its HTTP response) even inside a cancelled scope: a cancelled
    consumer must still give the connection back."""
    with anyio.CancelScope(shield=True):
        await stream.close()


def check_ended(
    model: str,
    *,
    ended: bool,
    any_text: bool,
    what: str,
    signals: str,
    reason_name: str,
    reason: object,
    log: logging.Logger,
) -> None:
    """After a stream's body: raise when the ``what`` (reply, message) did not end, none of
    its end ``signals`` seen (a proxy or a dropped upstream cut a clean-looking body, and
    taking what came as the whole answer would lose the rest without a word); log when it
    ended with no text, naming the server's stop reason."""
    if not ended:
        raise ProviderError(
            f"the stream ended before the {what} did (no {signals})", model=model, retryable=True
        )
    if not any_text:
        log.warning(
            '%s: the stream carried no text (%s=%r); returning ""', model, reason_name, reason
        )

"""Reading a provider's reply: the answer it carries, or a ``ProviderError`` when the body is not
a reply of the API's shape.

A body of the wrong shape (a proxy's HTML page, another API's format, a field of the wrong type)
is an error, never an empty answer: taken as "", it would hide a wrong ``base_url`` or a broken
proxy behind results that look plausible. It is not retried: the same server sends the same
shape again. A reply of the right shape that holds no text (a refusal, a tool call, a reasoning
model that spent its budget) is an answer, "", as the adapters log.

The SDKs build their reply objects without validating them (``choices`` may be a str), and
LiteLLM's are its own, so fields are read here by name from objects and dicts alike.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ..errors import ProviderError
from ._errors import redact

__all__ = (
    "CHAT_CHUNK",
    "CHAT_COMPLETION",
    "MESSAGE",
    "MESSAGE_EVENT",
    "chat_text",
    "field",
    "is_object",
    "malformed",
    "shown",
)

log = logging.getLogger("moa.clients")

# What a reply of each API is, as the error messages name it.
CHAT_COMPLETION = "a chat completion"
CHAT_CHUNK = "a chat completion stream"
MESSAGE = "a Messages API message"
MESSAGE_EVENT = "a Messages API stream"

# JSON values that are no object: a reply, a choice, a message or a block must be none of these.
_NOT_OBJECTS = (str, bytes, int, float, list, tuple, type(None))

# The fields beside which an OpenAI message may leave out ``content``: it answered with
# something other than text.
_NOT_TEXT = ("refusal", "tool_calls", "function_call")

_SHOWN = 80


def malformed(model: str, api: str, what: str, secrets: tuple[str, ...] = ()) -> ProviderError:
    """The error for a reply that is not ``api``'s (never retried), saying ``what`` is wrong."""
    return ProviderError(
        redact(f"the reply is not {api}: {what}", secrets), model=model, retryable=False
    )


def shown(value: Any) -> str:
    """``value`` for an error message: its repr, cut short, and its type ("null" for None)."""
    if value is None:
        return "null"
    text = repr(value)
    if len(text) > _SHOWN:
        text = text[:_SHOWN] + "..."
    name = type(value).__name__
    return f"{text} ({'an' if name[0] in 'aeiou' else 'a'} {name})"


def is_object(value: Any) -> bool:
    """Whether ``value`` stands for a JSON object (a dict or an SDK's model of one)."""
    return not isinstance(value, _NOT_OBJECTS)


def field(obj: Any, name: str) -> Any:
    """``obj``'s field ``name`` (a dict's key or an attribute), None when it has none."""
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _sent(obj: Any, name: str) -> bool:
    # Whether the body gave ``obj`` the field ``name`` (null included): an SDK's model answers
    # None alike for a field that was null and one that was left out.
    if isinstance(obj, Mapping):
        return name in obj
    fields_set = getattr(obj, "model_fields_set", None)
    if isinstance(fields_set, (set, frozenset)):
        return name in fields_set or name in (getattr(obj, "model_extra", None) or {})
    return hasattr(obj, name)


def chat_text(model: str, response: Any, secrets: tuple[str, ...]) -> str:
    """The text of a chat completion's first choice, whose ``choices`` is not empty (the caller
    has dealt with that). Null content is an answer, "" (logged), as the API sends for a refusal
    or a tool call; a body that is not a chat completion is a ``ProviderError``."""
    choice, message = _first_message(model, response, secrets)
    text = field(message, "content")
    if isinstance(text, str):
        return text
    if text is not None:
        raise malformed(
            model,
            CHAT_COMPLETION,
            f"choices[0].message.content is {shown(text)}, not a string or null",
            secrets,
        )
    if not _sent(message, "content") and not any(field(message, n) for n in _NOT_TEXT):
        raise malformed(
            model,
            CHAT_COMPLETION,
            "choices[0].message has no 'content' (nor a refusal or tool call)",
            secrets,
        )
    refusal = field(message, "refusal")
    log.warning(
        '%s: the response has no text (finish_reason=%r%s); returning ""',
        model,
        field(choice, "finish_reason"),
        f", refusal={refusal!r}" if refusal else "",
    )
    return ""


def _first_message(model: str, response: Any, secrets: tuple[str, ...]) -> tuple[Any, Any]:
    # The first choice of a chat completion and its message, both objects.
    def wrong(what: str) -> ProviderError:
        return malformed(model, CHAT_COMPLETION, what, secrets)

    if not is_object(response):
        raise wrong(f"the body is {shown(response)}, not a JSON object")
    choices = field(response, "choices")
    if not isinstance(choices, list):
        raise wrong(
            "it has no 'choices'"
            if choices is None
            else f"'choices' is {shown(choices)}, not a list"
        )
    choice = choices[0]
    if not is_object(choice):
        raise wrong(f"choices[0] is {shown(choice)}, not an object")
    message = field(choice, "message")
    if not is_object(message):
        raise wrong(
            "choices[0] has no 'message'"
            if message is None
            else f"choices[0].message is {shown(message)}, not an object"
        )
    return choice, message

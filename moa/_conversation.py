"""A prompt with earlier turns: a conversation (chat messages with system, user and assistant
roles) wherever a run takes a prompt; a str stays the one-turn case.

Its last message is the user's question, which every step reads as the prompt; the earlier
turns reach every call of the run: they go before the call's own user message, and a system
message of the conversation goes first in the call's system message (before an agent's persona
and the step's instruction). So proposers answer the last turn in context, an aggregator reads
the conversation and then the candidate answers to its last turn, and transforms are
unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

from ._bounds import describe, safe_repr, unicode_error
from ._contract import Message, Request, messages

__all__ = ("MAX_TURNS", "ROLES", "Prompt", "messages_of", "prompt_of", "with_turns")

#: What a run takes as its prompt: the question, or a conversation ending with it.
Prompt = str | Sequence[Mapping[str, str]]
#: The roles a conversation's messages may have.
ROLES = ("system", "user", "assistant")
#: The most messages a conversation may hold.
MAX_TURNS = 10_000


def prompt_of(where: str, value: object) -> tuple[str, tuple[Message, ...]]:
    """``(question, earlier turns)`` from a prompt as an entry point takes it: a str, or a
    list of ``{"role", "content"}`` messages whose last is the user's. Anything else is a
    TypeError, a bad message a ValueError, each naming the message."""
    if isinstance(value, str):
        return _text(where, "prompt", value), ()
    if isinstance(value, Mapping) or not isinstance(value, Sequence) or isinstance(value, bytes):
        raise TypeError(
            f"{where}(prompt): a prompt is a str or a conversation (a list of "
            f'{{"role": ..., "content": ...}} messages), not {describe(value)}'
        )
    turns = _turns(value, f"{where}(prompt)", lambda i: f"{where}(prompt[{i}])")
    return turns[-1]["content"], turns[:-1]


def messages_of(value: object) -> tuple[Message, ...]:
    """A row's ``messages`` field (a ``moa batch`` line, a Ray dataset row) as a checked
    conversation, whole: a list of messages as :func:`prompt_of` takes one (a str is not one
    here). TypeError or ValueError as ``prompt_of``'s, naming ``messages[i]``."""
    if not isinstance(value, (list, tuple)):
        raise TypeError(
            f'messages: a conversation is a list of {{"role": ..., "content": ...}} messages, '
            f"not {describe(value)}"
        )
    return _turns(value, "messages", lambda i: f"messages[{i}]")


def _turns(value: Sequence[object], whole: str, at: Callable[[int], str]) -> tuple[Message, ...]:
    """The messages of a conversation, checked: ``whole`` names it, ``at(i)`` its i-th message
    in an error."""
    if not value:
        raise ValueError(f"{whole}: a conversation needs at least one message")
    if len(value) > MAX_TURNS:
        raise ValueError(f"{whole}: {len(value):,} messages, more than {MAX_TURNS:,}")
    turns: list[Message] = []
    for i, m in enumerate(value):
        here = at(i)
        if not isinstance(m, Mapping):
            raise TypeError(
                f"{here}: a message is a mapping with role and content, not {describe(m)}"
            )
        extra = sorted(set(m) - {"role", "content"})
        if extra:
            raise ValueError(f"{here}: a message has role and content only, not {extra[0]!r}")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise ValueError(
                f"{here}: role must be one of {', '.join(ROLES)}, not {safe_repr(role)}"
            )
        if role == "system" and i != 0:
            raise ValueError(f"{here}: a system message comes first, or not at all")
        if not isinstance(content, str):
            raise TypeError(f"{here}: content must be a str, not {describe(content)}")
        turns.append(MappingProxyType({"role": role, "content": _text(here, "content", content)}))
    if turns[-1]["role"] != "user":
        raise ValueError(
            f"{whole}: the last message is the question a run answers, so it must be "
            f"the user's, not the {turns[-1]['role']}'s"
        )
    return tuple(turns)


def _text(where: str, name: str, text: str) -> str:
    if not text.strip():
        raise ValueError(f"{where}: {name} must be a non-empty str, got {safe_repr(text)}")
    bad = unicode_error(text)
    if bad is not None:
        raise ValueError(f"{where}: {name} must be valid Unicode text, but {bad}")
    return text


def with_turns(req: Request, earlier: tuple[Message, ...]) -> Request:
    """``req`` with the conversation's earlier turns: its system message (the conversation's
    first, then the request's own), the earlier user and assistant turns, then the rest of the
    request's messages."""
    system = [m["content"] for m in earlier[:1] if m["role"] == "system"]
    turns = earlier[len(system) :]
    own = list(req.messages)
    if own and own[0]["role"] == "system":
        system.append(own.pop(0)["content"])
    pairs = [("system", "\n\n".join(system))] if system else []
    pairs += [(m["role"], m["content"]) for m in turns]
    pairs += [(m["role"], m["content"]) for m in own]
    return dataclasses.replace(req, messages=messages(*pairs))

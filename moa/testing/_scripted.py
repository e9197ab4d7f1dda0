"""The scripted client: a test double for a model provider.

Its replies are a pure function of (model, messages) by default, so a run's result does not
depend on the order in which concurrent calls finish; delays and failures are scripted per
model.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import anyio

from .._client import Reply as MoaReply
from .._client import Usage
from .._response import Confidence
from ..errors import ProviderError

__all__ = ("Permanent", "ScriptedClient", "Transient", "default_reply")

Reply = Callable[[str, list[dict[str, str]]], str]


def _digest(model: str, messages: Sequence[Mapping[str, str]], salt: object = "") -> str:
    key = repr((salt, model, [(m["role"], m["content"]) for m in messages]))
    return hashlib.sha256(key.encode()).hexdigest()


def default_reply(model: str, messages: list[dict[str, str]]) -> str:
    """``"<model> says <8 hex digits>"``, the digits a hash of the messages."""
    return f"{model} says {_digest(model, messages)[:8]}"


class Transient(ProviderError):
    """The retryable failure a ScriptedClient raises (as a provider's 503)."""

    def __init__(self, model: str) -> None:
        super().__init__("scripted transient failure", model=model, retryable=True, status=503)


class Permanent(ProviderError):
    """The failure a ScriptedClient raises that is never retried (as a provider's 400)."""

    def __init__(self, model: str) -> None:
        super().__init__("scripted permanent failure", model=model, retryable=False, status=400)


class ScriptedClient:
    """A client whose every answer is scripted: ``reply(model, messages) -> str`` answers;
    ``delay`` (seconds, or a function of model and messages) is slept first; a model fails
    retryably on its first ``transient[model]`` calls (``transient`` an int: every model);
    models in ``permanent`` always fail; ``hang`` models never answer.

    Every call is appended to ``calls`` as it arrives. :meth:`fresh` is the same script with
    nothing counted yet, for a second run that must behave as the first.

    :meth:`stream` gives the same reply word by word (``chunk_delay`` seconds before each
    chunk after the first), then its :class:`moa.Usage`; a model in ``break_stream`` fails
    retryably after that many chunks, as a dropped connection would.

    Asked for ``logprobs`` (a run whose pipeline reads confidence asks), a reply carries a
    :class:`moa.Confidence`: ``confidence(model, messages, text)`` gives its mean token
    log-probability (None: the client gives none), by default one drawn from the model,
    messages and text, in [-3, 0).
    """

    def __init__(
        self,
        reply: Reply = default_reply,
        *,
        delay: float | Callable[[str, list[dict[str, str]]], float] = 0.0,
        transient: Mapping[str, int] | int | None = None,
        permanent: frozenset[str] | set[str] | Sequence[str] = frozenset(),
        hang: frozenset[str] | set[str] | Sequence[str] = frozenset(),
        chunk_delay: float = 0.0,
        break_stream: Mapping[str, int] | None = None,
        confidence: Callable[[str, list[dict[str, str]], str], float | None] | None = None,
    ) -> None:
        self.reply = reply
        self.confidence = confidence
        self.delay = delay
        self.transient = transient if isinstance(transient, int) else dict(transient or {})
        self.permanent = set(permanent)
        self.hang = set(hang)
        self.chunk_delay = chunk_delay
        self.break_stream = dict(break_stream or {})
        self.calls: list[dict[str, Any]] = []
        self.failures: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.finished = 0
        self.streams = 0

    def fresh(self) -> ScriptedClient:
        """The same script, with no calls, failures or counts recorded yet."""
        return ScriptedClient(
            self.reply,
            delay=self.delay,
            transient=self.transient,
            permanent=self.permanent,
            hang=self.hang,
            chunk_delay=self.chunk_delay,
            break_stream=self.break_stream,
            confidence=self.confidence,
        )

    def _transient(self, model: str) -> int:
        if isinstance(self.transient, int):
            return self.transient
        return self.transient.get(model, 0)

    def _confidence(
        self, model: str, messages: list[dict[str, str]], text: str
    ) -> Confidence | None:
        """The reply's confidence when asked: the ``confidence`` script's mean log-probability
        (None: the client gives none), else one drawn from the model, messages and text."""
        if self.confidence is not None:
            mean = self.confidence(model, messages, text)
        else:
            mean = -3 * int(_digest(model, messages, ("confidence", text))[:8], 16) / 2**32
        if mean is None:
            return None
        tokens = max(1, len(text.split()))
        return Confidence(mean * tokens, tokens)

    async def __call__(
        self,
        *,
        model: str,
        messages: list[dict[str, str]],
        temp: float,
        max_tokens: int,
        logprobs: bool = False,
    ) -> MoaReply | tuple[str, int, int]:
        call: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "temp": temp,
            "max_tokens": max_tokens,
        }
        if logprobs:
            call["logprobs"] = True
        self.calls.append(call)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            delay = self.delay(model, messages) if callable(self.delay) else self.delay
            if model in self.hang:
                await anyio.sleep_forever()
            if delay:
                await anyio.sleep(delay)
            if model in self.permanent:
                raise Permanent(model)
            if self.failures[model] < self._transient(model):
                self.failures[model] += 1
                raise Transient(model)
            text = self.reply(model, messages)
            tokens_in = sum(len(m["content"].split()) for m in messages)
            self.finished += 1
            confidence = self._confidence(model, messages, text) if logprobs else None
            if confidence is None:  # three items, as a client returns
                return text, tokens_in, len(text.split())
            return MoaReply(text, tokens_in, len(text.split()), confidence)
        finally:
            self.in_flight -= 1

    async def stream(
        self,
        *,
        model: str,
        messages: list[dict[str, str]],
        temp: float,
        max_tokens: int,
        logprobs: bool = False,
    ) -> AsyncIterator[str | Usage]:
        """The reply of :meth:`__call__` in word chunks, then its Usage."""
        reply = await self(
            model=model, messages=messages, temp=temp, max_tokens=max_tokens, logprobs=logprobs
        )
        text, tokens_in, tokens_out = reply[:3]
        confidence = reply.confidence if isinstance(reply, MoaReply) else None
        self.streams += 1
        words = text.split(" ")
        for i, word in enumerate(words):
            if i and self.chunk_delay:
                await anyio.sleep(self.chunk_delay)
            if i == self.break_stream.get(model, -1):
                raise Transient(model)
            yield word if i == len(words) - 1 else word + " "
        yield Usage(tokens_in, tokens_out, confidence)

    def __repr__(self) -> str:
        script = [f"reply={getattr(self.reply, '__name__', None) or self.reply!r}"]
        if self.delay:
            script.append(f"delay={getattr(self.delay, '__name__', None) or self.delay!r}")
        if self.transient:
            script.append(f"transient={self.transient!r}")
        for name in ("permanent", "hang"):
            if getattr(self, name):
                script.append(f"{name}={sorted(getattr(self, name))!r}")
        if self.calls:
            script.append(f"calls={len(self.calls)}")
        return f"<ScriptedClient {' '.join(script)}>"


class HashedReply:
    """A reply script for drawn clients: each call's text is one of ``texts``, picked by a
    hash of ``salt``, the model and the messages, so it is fixed per model and call."""

    __slots__ = ("salt", "texts")

    def __init__(self, texts: Sequence[str], salt: int) -> None:
        if not texts:
            raise ValueError("HashedReply(texts): texts must hold at least one reply")
        self.texts = tuple(texts)
        self.salt = salt

    def __call__(self, model: str, messages: list[dict[str, str]]) -> str:
        return self.texts[int(_digest(model, messages, self.salt), 16) % len(self.texts)]

    def __repr__(self) -> str:
        return f"HashedReply({list(self.texts)!r}, salt={self.salt})"


class HashedDelay:
    """A delay script for drawn clients: up to ``most`` seconds, fixed per model and call."""

    __slots__ = ("most", "salt")

    def __init__(self, most: float, salt: int) -> None:
        self.most = most
        self.salt = salt

    def __call__(self, model: str, messages: list[dict[str, str]]) -> float:
        return self.most * (int(_digest(model, messages, ("delay", self.salt))[:8], 16) / 2**32)

    def __repr__(self) -> str:
        return f"HashedDelay({self.most!r}, salt={self.salt})"

"""The scripted client: the only test double in moa's tests.

Its replies are a pure function of (model, messages) by default, so a run's result does not
depend on the order in which concurrent calls finish; delays and failures are scripted per
model.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Mapping

import anyio

from moa import ProviderError


def default_reply(model: str, messages: list[dict[str, str]]) -> str:
    digest = hashlib.sha256(repr([(m["role"], m["content"]) for m in messages]).encode())
    return f"{model} says {digest.hexdigest()[:8]}"


class Transient(ProviderError):
    def __init__(self, model: str) -> None:
        super().__init__("scripted transient failure", model=model, retryable=True, status=503)


class Permanent(ProviderError):
    def __init__(self, model: str) -> None:
        super().__init__("scripted permanent failure", model=model, retryable=False, status=400)


class ScriptedClient:
    """``reply(model, messages) -> str`` answers; ``delay`` (seconds, or a function of model
    and messages) is slept first; ``transient[model]`` calls to a model fail retryably before
    it answers; models in ``permanent`` always fail; ``hang`` models never answer.
    Every call is appended to ``calls`` as it arrives."""

    def __init__(
        self,
        reply: Callable[[str, list[dict[str, str]]], str] = default_reply,
        *,
        delay: float | Callable[[str, list[dict[str, str]]], float] = 0.0,
        transient: Mapping[str, int] | None = None,
        permanent: frozenset[str] | set[str] = frozenset(),
        hang: frozenset[str] | set[str] = frozenset(),
    ) -> None:
        self.reply = reply
        self.delay = delay
        self.transient = dict(transient or {})
        self.permanent = set(permanent)
        self.hang = set(hang)
        self.calls: list[dict] = []
        self.failures: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.finished = 0

    async def __call__(self, *, model, messages, temp, max_tokens):
        self.calls.append({"model": model, "messages": messages, "temp": temp, "max_tokens": max_tokens})
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
            if self.failures[model] < self.transient.get(model, 0):
                self.failures[model] += 1
                raise Transient(model)
            text = self.reply(model, messages)
            tokens_in = sum(len(m["content"].split()) for m in messages)
            self.finished += 1
            return text, tokens_in, len(text.split())
        finally:
            self.in_flight -= 1

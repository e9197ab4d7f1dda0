"""Routing: one client for a pipeline whose models live at several providers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from .._bounds import describe
from .._client import Usage, check_output
from .._seeds import accepts, accepts_seed
from ..errors import MoaError

__all__ = ("NoRouteError", "Router", "route")


class NoRouteError(MoaError, LookupError):
    """No client of a :func:`route` serves the model. Never retried: a retry would ask again."""

    retryable = False

    def __init__(self, model: str, prefixes: tuple[str, ...]) -> None:
        known = ", ".join(repr(p) for p in prefixes) or "none"
        super().__init__(
            f"route has no client for model {model!r}: it starts with none of the "
            f"prefixes {known}; add one, or give route(..., default=client)"
        )
        self.model = model
        self.prefixes = prefixes


class Router:
    """A ``moa.Client`` that hands each call to the client whose prefix is the longest match
    of the model name, or to ``default``; built by :func:`route`."""

    __slots__ = ("_by_length", "default", "routes")

    def __init__(self, routes: dict[str, Any], default: Any) -> None:
        self.routes = routes
        self.default = default
        self._by_length = sorted(routes.items(), key=lambda item: len(item[0]), reverse=True)

    def __repr__(self) -> str:
        inner = ", ".join(f"{p!r}: {c!r}" for p, c in self.routes.items())
        default = f", default={self.default!r}" if self.default is not None else ""
        return f"route({{{inner}}}{default})"

    def client_for(self, model: str) -> Any:
        """The client that serves ``model``; :class:`NoRouteError` when none does."""
        for prefix, client in self._by_length:
            if model.startswith(prefix):
                return client
        if self.default is not None:
            return self.default
        raise NoRouteError(model, tuple(self.routes))

    async def __call__(
        self,
        *,
        model: str,
        messages: list[dict[str, str]],
        temp: float,
        max_tokens: int,
        seed: int | None = None,
        logprobs: bool = False,
    ) -> tuple[str, int | None, int | None]:
        client = self.client_for(model)
        reply: tuple[str, int | None, int | None] = await client(
            model=model,
            messages=messages,
            temp=temp,
            max_tokens=max_tokens,
            **_extra_for(client, seed, logprobs),
        )
        return reply

    async def stream(
        self,
        *,
        model: str,
        messages: list[dict[str, str]],
        temp: float,
        max_tokens: int,
        seed: int | None = None,
        logprobs: bool = False,
    ) -> AsyncIterator[str | Usage]:
        """The routed client's ``stream``; a client without one gives its whole reply as one
        chunk, then its Usage."""
        client = self.client_for(model)
        stream = getattr(client, "stream", None)
        if stream is None:
            reply = check_output(
                model,
                await client(
                    model=model,
                    messages=messages,
                    temp=temp,
                    max_tokens=max_tokens,
                    **_extra_for(client, seed, logprobs),
                ),
            )
            yield reply.text
            yield Usage(reply.input_tokens, reply.output_tokens, reply.confidence)
            return
        items = stream(
            model=model,
            messages=messages,
            temp=temp,
            max_tokens=max_tokens,
            **_extra_for(stream, seed, logprobs),
        )
        try:
            async for item in items:
                yield item
        finally:
            aclose = getattr(items, "aclose", None)
            if aclose is not None:
                await aclose()


def _extra_for(fn: Any, seed: int | None, logprobs: bool) -> dict[str, Any]:
    # The seed and the ask for log-probabilities pass through to a routed client that takes
    # them, and only to such a client (one that cannot give confidence answers without it).
    extra: dict[str, Any] = {"seed": seed} if seed is not None and accepts_seed(fn) else {}
    if logprobs and accepts(fn, "logprobs"):
        extra["logprobs"] = True
    return extra


def route(clients: Mapping[str, Any], default: Any = None) -> Router:
    """A client that sends each call to ``clients[prefix]`` for the longest ``prefix`` that
    starts the model name (``{"claude": anthropic_client(), "gpt": openai_client()}``), else
    to ``default``. The model name is passed on unchanged."""
    if not isinstance(clients, Mapping):
        raise TypeError(
            f"route(clients): clients must be a dict of model-name prefix to client, "
            f"such as {{'gpt': openai_client()}}, not {describe(clients)}"
        )
    for prefix, client in clients.items():
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(
                f"route(clients): every prefix must be a non-empty str, got "
                f"{prefix!r}; use default= for the models no prefix matches"
            )
        if not callable(client):
            raise TypeError(
                f"route(clients): the client for {prefix!r} must be an async callable "
                f"client(model, messages, temp, max_tokens), not {describe(client)}"
            )
    if default is not None and not callable(default):
        raise TypeError(
            f"route(default=...): default must be an async callable client or None, "
            f"not {describe(default)}"
        )
    if not clients and default is None:
        raise ValueError("route(clients): give at least one prefix or a default client")
    return Router(dict(clients), default)

"""Routing: one client for a pipeline whose models live at several providers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from .._bounds import describe
from .._client import Usage
from .._seeds import accepts_seed
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
    ) -> tuple[str, int | None, int | None]:
        client = self.client_for(model)
        reply: tuple[str, int | None, int | None] = await client(
            model=model,
            messages=messages,
            temp=temp,
            max_tokens=max_tokens,
            **_seed_for(client, seed),
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
    ) -> AsyncIterator[str | Usage]:
        """The routed client's ``stream``; a client without one gives its whole reply as one
        chunk, then its Usage."""
        client = self.client_for(model)
        stream = getattr(client, "stream", None)
        if stream is None:
            text, input_tokens, output_tokens = await client(
                model=model,
                messages=messages,
                temp=temp,
                max_tokens=max_tokens,
                **_seed_for(client, seed),
            )
            yield text
            yield Usage(input_tokens, output_tokens)
            return
        items = stream(
            model=model,
            messages=messages,
            temp=temp,
            max_tokens=max_tokens,
            **_seed_for(stream, seed),
        )
        try:
            async for item in items:
                yield item
        finally:
            aclose = getattr(items, "aclose", None)
            if aclose is not None:
                await aclose()


def _seed_for(fn: Any, seed: int | None) -> dict[str, int]:
    # The seed passes through to a routed client that takes one, and only to such a client.
    return {"seed": seed} if seed is not None and accepts_seed(fn) else {}


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

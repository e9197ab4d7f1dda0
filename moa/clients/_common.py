"""Small helpers the provider adapters share."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable
from typing import Any

__all__ = ("PerLoop", "check_defaults", "token_count")


def token_count(value: Any) -> int | None:
    """A provider's token count when it is an int >= 0, else None (unknown, never 0)."""
    return value if type(value) is int and value >= 0 else None


def check_defaults(factory: str, defaults: dict[str, Any], reserved: frozenset[str]) -> None:
    """Refuse request defaults that would fight what each call sets from its step."""
    clash = sorted(reserved & defaults.keys())
    if clash:
        raise TypeError(
            f"{factory}({clash[0]}=...): {clash[0]} is set by each call (from the "
            f"step's model, messages, temp and max_tokens), not by the client"
        )


def _loop_token() -> object:
    # The running event loop: asyncio's loop object, or trio's token.
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        trio = sys.modules.get("trio")
        if trio is None:
            raise
        return trio.lowlevel.current_trio_token()


class PerLoop:
    """The SDK client for the running event loop. An HTTP connection pool belongs to the loop
    that opened it, so a moa client reused by a second ``run_sync`` (a new loop) must not touch
    the first loop's pool: it would fail with "Event loop is closed". The client built at
    construction serves the first loop that calls; a call from another loop replaces it with a
    new one from ``make``, and the old one is left to the garbage collector (its loop is
    normally gone). Only one is kept: a per-loop table would keep every loop alive, since an
    SDK client refers to its loop through its connections."""

    __slots__ = ("_lock", "_make", "_sdk", "_token")

    def __init__(self, make: Callable[[], Any], first: Any) -> None:
        self._make = make
        self._sdk = first
        self._token: object | None = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        """This event loop's client."""
        token = _loop_token()
        with self._lock:
            if self._token is not token:
                if self._token is not None or self._sdk is None:
                    self._sdk = self._make()
                self._token = token
            return self._sdk

    def pop(self) -> Any:
        """This event loop's client, forgotten (None when another loop's is held)."""
        token = _loop_token()
        with self._lock:
            if self._token is not token:
                return None
            sdk, self._sdk, self._token = self._sdk, None, None
            return sdk

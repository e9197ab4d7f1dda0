"""A scripted HTTP server for the SDKs' httpx2 clients (respx mocks httpx, which openai 3.x
and anthropic 2.x no longer use): every request is recorded with the time it arrived."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx2

Reply = httpx2.Response | Callable[[httpx2.Request], httpx2.Response]

SECRET = "sk-test-SECRET123456"


class MockServer:
    """Answers request i with ``replies[i]`` (the last one repeats); a callable reply is called
    with the request, and may raise (a timeout, a dropped connection)."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.requests: list[httpx2.Request] = []
        self.times: list[float] = []

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        self.times.append(time.monotonic())
        reply = self.replies[min(len(self.requests), len(self.replies)) - 1]
        return reply(request) if callable(reply) else reply

    def http_client(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(transport=httpx2.MockTransport(self.handler))

    def body(self, i: int = -1) -> dict[str, Any]:
        return json.loads(self.requests[i].content)

    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.times, self.times[1:])]


def error(
    status: int, message: str, *, headers: dict[str, str] | None = None, **fields: Any
) -> httpx2.Response:
    """An error response shaped as both OpenAI and Anthropic send them."""
    return httpx2.Response(
        status, headers=headers, json={"type": "error", "error": {"message": message, **fields}}
    )


def timeout(request: httpx2.Request) -> httpx2.Response:
    raise httpx2.ReadTimeout("read timed out", request=request)


def refused(request: httpx2.Request) -> httpx2.Response:
    raise httpx2.ConnectError("[Errno 111] Connection refused", request=request)

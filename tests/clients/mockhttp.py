"""A scripted HTTP server for the SDKs' httpx2 clients (respx mocks httpx, which openai 3.x
and anthropic 2.x no longer use): every request is recorded with the time it arrived."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import aclosing
from typing import Any

import anyio
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


# -- SSE bodies, as the streaming tests of every client serve them -----------------------------
CLAUDE = "claude-opus-4-6"  # not in the SDK's deprecated list, which warns (an error here)


class Sent:
    """An SSE body served a piece at a time, as a server writes it. ``then`` ends it: None (the
    body is complete), an exception (the connection breaks) or "hang" (the server stalls).
    ``closed`` says whether the client closed the response."""

    def __init__(self, *pieces, then=None):
        self.pieces = pieces
        self.then = then
        self.responses = []

    async def _body(self):
        for piece in self.pieces:
            yield piece.encode()
            await anyio.sleep(0)
        if self.then == "hang":
            await anyio.sleep_forever()
        elif self.then is not None:
            raise self.then

    def __call__(self, request):
        response = httpx2.Response(
            200, headers={"content-type": "text/event-stream"}, content=self._body()
        )
        self.responses.append(response)
        return response

    @property
    def closed(self):
        return bool(self.responses) and all(r.is_closed for r in self.responses)


async def collect(stream):
    async with aclosing(stream) as items:
        return [item async for item in items]


def chunk(content=None, *, finish=None, role=None):
    delta = {"role": role} if role else {}
    if content is not None:
        delta["content"] = content
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


USAGE_CHUNK = {
    "id": "c1",
    "object": "chat.completion.chunk",
    "created": 0,
    "model": "m",
    "choices": [],
    "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
}


def data(*events, done=True):
    lines = [f"data: {json.dumps(e)}\n\n" for e in events]
    return lines + (["data: [DONE]\n\n"] if done else [])


def openai_events(*texts, usage=True):
    events = [chunk(role="assistant", content="")]
    events += [chunk(t) for t in texts]
    events.append(chunk(finish="stop"))
    if usage:
        events.append(USAGE_CHUNK)
    return events


def events(*pairs):
    return [f"event: {kind}\ndata: {json.dumps(body)}\n\n" for kind, body in pairs]


def anthropic_events(*blocks, usage=None, final=None):
    """message_start, each block (a str is a text block, a dict a thinking block), message_delta
    with the final usage, message_stop."""
    start_usage = usage or {"input_tokens": 12, "output_tokens": 1}
    pairs = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "model": CLAUDE,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": start_usage,
                },
            },
        ),
        ("ping", {"type": "ping"}),
    ]
    for i, block in enumerate(blocks):
        if isinstance(block, dict):
            pairs += [
                (
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": i,
                        "content_block": {"type": "thinking", "thinking": "", "signature": ""},
                    },
                ),
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": i,
                        "delta": {"type": "thinking_delta", "thinking": block["thinking"]},
                    },
                ),
            ]
        else:
            pairs.append(
                (
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": i,
                        "content_block": {"type": "text", "text": ""},
                    },
                )
            )
            pairs += [
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": i,
                        "delta": {"type": "text_delta", "text": piece},
                    },
                )
                for piece in block.split("|")
            ]
        pairs.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    pairs += [
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": final or {"output_tokens": 5},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return events(*pairs)

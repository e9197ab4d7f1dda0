"""anthropic_client against a scripted HTTP server: the Messages API shape (system parameter,
temperature in the body), text blocks and usage, error sorting and retries, key redaction.
Runs on asyncio and trio."""

import json

import pytest

pytest.importorskip("anthropic")
httpx2 = pytest.importorskip("httpx2")

from mockhttp import MockServer, error, refused, timeout  # noqa: E402

import moa  # noqa: E402
from moa import Aggregate, MoaError, Propose, ProviderError, Retry, StepFailedError  # noqa: E402
from moa.clients import anthropic_client  # noqa: E402

pytestmark = pytest.mark.anyio

KEY = "sk-ant-api03-SECRET123456"
MODEL = "claude-opus-4-6"  # not in the SDK's deprecated list, which warns (an error here)
NO_WAIT = Retry(attempts=3, initial=0, jitter=0)
MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "system", "content": "Be kind."},
    {"role": "user", "content": "Hi?"},
]


def message(*blocks, usage=None):
    blocks = blocks or ({"type": "text", "text": "hello"},)
    return httpx2.Response(
        200,
        json={
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": MODEL,
            "content": list(blocks),
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": usage or {"input_tokens": 12, "output_tokens": 5},
        },
    )


def client_for(server, **kwargs):
    kwargs.setdefault("api_key", KEY)
    return anthropic_client(http_client=server.http_client(), **kwargs)


async def call(client, messages=MESSAGES, temp=0.4, max_tokens=64):
    return await client(model=MODEL, messages=messages, temp=temp, max_tokens=max_tokens)


async def test_request_shape_system_parameter_and_key_header():
    server = MockServer(message())
    assert await call(client_for(server)) == ("hello", 12, 5)
    request = server.requests[0]
    assert request.method == "POST"
    assert str(request.url) == "https://api.anthropic.com/v1/messages"
    # anthropic 2.x sends the key as a Bearer token; older SDKs used x-api-key.
    assert KEY in (request.headers.get("x-api-key"), request.headers.get("authorization", "")[7:])
    assert "anthropic-version" in request.headers
    assert server.body() == {
        "model": MODEL,
        "max_tokens": 64,
        "temperature": 0.4,
        "system": "Be brief.\n\nBe kind.",
        "messages": [{"role": "user", "content": "Hi?"}],
    }


async def test_no_system_message_sends_no_system_parameter():
    server = MockServer(message())
    await call(client_for(server), messages=[{"role": "user", "content": "Hi?"}])
    assert "system" not in server.body()


async def test_base_url_defaults_and_send_temperature():
    server = MockServer(message())
    await call(
        client_for(
            server, base_url="https://proxy.example/anthropic", top_k=40, send_temperature=False
        )
    )
    assert str(server.requests[0].url) == "https://proxy.example/anthropic/v1/messages"
    assert server.body()["top_k"] == 40 and "temperature" not in server.body()


@pytest.mark.parametrize("name", ["temperature", "max_tokens", "system", "messages"])
def test_a_default_may_not_set_what_each_call_sets(name):
    with pytest.raises(TypeError, match=rf"anthropic_client\({name}=\.\.\.\)"):
        anthropic_client(KEY, **{name: 1})


async def test_text_blocks_are_concatenated_and_cached_input_counted():
    server = MockServer(
        message(
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "text", "text": "Hello, "},
            {"type": "text", "text": "world"},
            usage={
                "input_tokens": 3,
                "cache_read_input_tokens": 10,
                "cache_creation_input_tokens": 5,
                "output_tokens": 4,
            },
        )
    )
    assert await call(client_for(server)) == ("Hello, world", 18, 4)


async def test_a_pipeline_runs_and_totals_tokens():
    server = MockServer(message())
    result, history = await moa.run(
        Propose([MODEL, MODEL]) | Aggregate(MODEL), "Q?", client_for(server)
    )
    assert result == "hello" and len(server.requests) == 3
    assert server.body(2)["system"].startswith("You are given several responses")
    assert [m["role"] for m in server.body(2)["messages"]] == ["user"]
    assert history.input_tokens == 36 and history.output_tokens == 15


def test_no_key_anywhere_is_a_clear_error(monkeypatch, tmp_path):
    for name in (
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "ANTHROPIC_PROFILE",
        "ANTHROPIC_IDENTITY_TOKEN",
        "ANTHROPIC_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ANTHROPIC_CONFIG_DIR", str(tmp_path))
    with pytest.raises(MoaError, match="anthropic_client needs an API key.*ANTHROPIC_API_KEY"):
        anthropic_client()


def test_repr_never_shows_the_key():
    client = anthropic_client(KEY, base_url="https://proxy.example", top_k=3)
    assert repr(client) == "anthropic_client(base_url='https://proxy.example', top_k=3)"


async def test_429_is_retried_after_retry_after():
    server = MockServer(
        error(
            429,
            "Number of request tokens has exceeded your rate limit",
            type="rate_limit_error",
            headers={"retry-after": "0.05"},
        ),
        message(),
    )
    result, history = await moa.run(Propose([MODEL]), "Q", client_for(server), retry=NO_WAIT)
    assert result == "hello" and history.calls[0].attempts == 2
    assert server.gaps()[0] >= 0.05


@pytest.mark.parametrize("status", [500, 503, 529])
async def test_server_errors_and_overload_are_retried(status):
    server = MockServer(error(status, "Overloaded", type="overloaded_error"), message())
    result, history = await moa.run(Propose([MODEL]), "Q", client_for(server), retry=NO_WAIT)
    assert result == "hello" and history.calls[0].attempts == 2


@pytest.mark.parametrize("reply", [timeout, refused])
async def test_timeouts_and_connection_errors_are_retried(reply):
    server = MockServer(reply, message())
    result, history = await moa.run(Propose([MODEL]), "Q", client_for(server), retry=NO_WAIT)
    assert result == "hello" and history.calls[0].attempts == 2


@pytest.mark.parametrize(
    "status, said, words",
    [
        (401, "invalid x-api-key", "authentication failed (HTTP 401)"),
        (400, "prompt is too long: 208000 tokens > 200000 maximum", "context overflow"),
        (404, "model: claude-opus-9", "not found"),
    ],
)
async def test_client_errors_are_not_retried(status, said, words):
    server = MockServer(error(status, said), message())
    with pytest.raises(StepFailedError) as info:
        await moa.run(Propose([MODEL]), "Q", client_for(server), retry=NO_WAIT)
    record = info.value.history.calls[0]
    assert record.attempts == 1 and len(server.requests) == 1
    assert record.error.startswith(f"ProviderError: {MODEL}: {words}")
    assert said in record.error


async def test_a_refused_temperature_points_at_send_temperature():
    server = MockServer(error(400, "`temperature` is deprecated for this model."))
    with pytest.raises(ProviderError, match=r"send_temperature=False") as info:
        await call(client_for(server))
    assert not info.value.retryable and info.value.status == 400


async def test_a_call_the_sdk_will_not_send_unstreamed_is_not_retried():
    server = MockServer(message())
    with pytest.raises(ProviderError, match="Streaming is required.*timeout=") as info:
        await call(client_for(server), max_tokens=100_000)
    assert not info.value.retryable and not server.requests


async def test_an_echoed_key_never_reaches_history():
    server = MockServer(error(401, f"invalid x-api-key {KEY}"))
    with pytest.raises(StepFailedError) as info:
        await moa.run(Propose([MODEL]), "Q", client_for(server), retry=NO_WAIT)
    dumped = json.dumps(info.value.history.to_dict())
    assert "SECRET123456" not in dumped and "SECRET123456" not in str(info.value)
    assert "[REDACTED]" in dumped

"""openai_client against a scripted HTTP server: request shapes, parameter mapping, usage,
error sorting and retries through moa.run, key redaction. Runs on asyncio and trio."""

import json
import logging
import re

import pytest

pytest.importorskip("openai")
httpx2 = pytest.importorskip("httpx2")

from mockhttp import SECRET, MockServer, error, refused, timeout  # noqa: E402

import moa  # noqa: E402
from moa import Aggregate, MoaError, Propose, ProviderError, Retry, StepFailedError  # noqa: E402
from moa.clients import openai_client  # noqa: E402

pytestmark = pytest.mark.anyio

NO_WAIT = Retry(attempts=3, initial=0, jitter=0)
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]


def completion(text="hello", *, usage=True, **extra):
    body = {
        "id": "c1",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
        ],
        **extra,
    }
    if usage:
        body["usage"] = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    return httpx2.Response(200, json=body)


def client_for(server, **kwargs):
    kwargs.setdefault("api_key", SECRET)
    return openai_client(http_client=server.http_client(), **kwargs)


async def call(client, model="gpt-4o", temp=0.3, max_tokens=64):
    return await client(model=model, messages=MESSAGES, temp=temp, max_tokens=max_tokens)


# Request shapes and parameter mapping


async def test_request_goes_to_chat_completions_with_the_key_as_bearer_token():
    server = MockServer(completion())
    client = client_for(server, base_url="https://openrouter.ai/api/v1")
    assert await call(client) == ("hello", 11, 7)
    request = server.requests[0]
    assert request.method == "POST"
    assert str(request.url) == "https://openrouter.ai/api/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert server.body() == {
        "model": "gpt-4o",
        "messages": MESSAGES,
        "max_tokens": 64,
        "temperature": 0.3,
    }


async def test_default_base_url_is_openai():
    server = MockServer(completion())
    await call(client_for(server))
    assert str(server.requests[0].url) == "https://api.openai.com/v1/chat/completions"


@pytest.mark.parametrize(
    "model", ["gpt-5-nano-2025-08-07", "gpt-5", "gpt-5-mini", "openai/gpt-5-nano"]
)
async def test_gpt5_gets_max_completion_tokens_minimal_effort_and_no_temperature(model):
    server = MockServer(completion())
    await call(client_for(server), model=model, max_tokens=99)
    assert server.body() == {
        "model": model,
        "messages": MESSAGES,
        "max_completion_tokens": 99,
        "reasoning_effort": "minimal",
    }


@pytest.mark.parametrize("model", ["o1", "o3-mini", "o4-mini", "gpt-5.1", "gpt-5-chat-latest"])
async def test_other_reasoning_models_get_no_effort_unless_given(model):
    server = MockServer(completion())
    await call(client_for(server), model=model, max_tokens=99)
    assert server.body() == {"model": model, "messages": MESSAGES, "max_completion_tokens": 99}
    await call(client_for(server, reasoning_effort="high"), model=model, max_tokens=99)
    assert server.body()["reasoning_effort"] == "high"
    assert "temperature" not in server.body()


async def test_given_effort_replaces_minimal_and_never_reaches_other_models():
    server = MockServer(completion())
    client = client_for(server, reasoning_effort="low")
    await call(client, model="gpt-5-nano")
    assert server.body()["reasoning_effort"] == "low"
    await call(client, model="gpt-4o-mini")
    assert server.body() == {
        "model": "gpt-4o-mini",
        "messages": MESSAGES,
        "max_tokens": 64,
        "temperature": 0.3,
    }


@pytest.mark.parametrize(
    "model", ["gpt-4o", "qwen/qwen-2.5-72b-instruct", "llama-3.3-70b", "omni-model"]
)
async def test_other_models_get_max_tokens_and_temperature(model):
    server = MockServer(completion())
    await call(client_for(server), model=model, temp=0.9, max_tokens=5)
    assert server.body() == {
        "model": model,
        "messages": MESSAGES,
        "max_tokens": 5,
        "temperature": 0.9,
    }


async def test_defaults_are_merged_into_every_request():
    server = MockServer(completion())
    client = client_for(server, top_p=0.5, seed=3, extra_headers={"HTTP-Referer": "https://x.y"})
    await call(client)
    await call(client, model="gpt-5-nano")
    assert server.body(0)["top_p"] == 0.5 and server.body(0)["seed"] == 3
    assert server.body(1)["top_p"] == 0.5 and "temperature" not in server.body(1)
    assert server.requests[0].headers["http-referer"] == "https://x.y"


@pytest.mark.parametrize("name", ["temperature", "max_tokens", "model", "messages", "stream"])
def test_a_default_may_not_set_what_each_call_sets(name):
    with pytest.raises(
        TypeError, match=rf"openai_client\({name}=\.\.\.\): {name} is set by each call"
    ):
        openai_client(api_key=SECRET, **{name: 1})


def test_bad_arguments_are_refused_at_construction():
    with pytest.raises(ValueError, match="timeout must be a finite number of seconds > 0"):
        openai_client(api_key=SECRET, timeout=0)
    with pytest.raises(TypeError, match="base_url must be a str or None"):
        openai_client(base_url=8080, api_key=SECRET)


async def test_pipeline_calls_carry_the_step_messages():
    server = MockServer(completion("a1"), completion("a2"), completion("final"))
    result, history = await moa.run(
        Propose(["gpt-4o", "gpt-4o-mini"]) | Aggregate("gpt-4o"), "Q?", client_for(server), seed=1
    )
    assert result == "final"
    # The proposals run concurrently and may reach the server in either order.
    proposals = sorted((server.body(0), server.body(1)), key=lambda body: body["model"])
    assert [body["model"] for body in proposals] == ["gpt-4o", "gpt-4o-mini"]
    assert all(body["messages"] == [{"role": "user", "content": "Q?"}] for body in proposals)
    assert server.body(2)["model"] == "gpt-4o"
    assert server.body(2)["messages"][0]["role"] == "system"
    assert history.input_tokens == 33 and history.output_tokens == 21


# Keys


async def test_key_falls_back_to_openai_api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env-0123456789")
    server = MockServer(completion())
    await call(openai_client(http_client=server.http_client()))
    assert server.requests[0].headers["authorization"] == "Bearer sk-from-env-0123456789"


def test_no_key_anywhere_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(MoaError, match="openai_client needs an API key.*OPENAI_API_KEY"):
        openai_client()


async def test_local_server_needs_no_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server = MockServer(completion())
    client = openai_client(base_url="http://localhost:8080/v1", http_client=server.http_client())
    assert await call(client, model="local") == ("hello", 11, 7)
    assert server.requests[0].headers["authorization"] == "Bearer not-needed"
    assert str(server.requests[0].url) == "http://localhost:8080/v1/chat/completions"


def test_repr_shows_base_url_and_options_but_never_the_key():
    client = openai_client(base_url="https://openrouter.ai/api/v1", api_key=SECRET)
    assert repr(client) == "openai_client(base_url='https://openrouter.ai/api/v1')"
    client = openai_client(
        api_key=SECRET,
        reasoning_effort="low",
        top_p=0.9,
        extra_headers={"Authorization": f"Bearer {SECRET}"},
    )
    assert "SECRET" not in repr(client)
    assert repr(client).startswith("openai_client(reasoning_effort='low', top_p=0.9")


# Replies


async def test_missing_usage_is_unknown_not_zero():
    server = MockServer(completion(usage=False))
    assert await call(client_for(server)) == ("hello", None, None)
    _, history = await moa.run(Propose(["gpt-4o"]), "Q", client_for(server))
    assert history.input_tokens is None and history.output_tokens is None


async def test_null_content_is_empty_text_and_logged(caplog):
    server = MockServer(completion(None))
    with caplog.at_level(logging.WARNING, logger="moa.clients"):
        assert await call(client_for(server), model="gpt-5-nano") == ("", 11, 7)
    assert "gpt-5-nano: the response has no text (finish_reason='stop')" in caplog.text


async def test_no_choices_is_a_retryable_provider_error():
    server = MockServer(
        httpx2.Response(
            200,
            json={
                "id": "c",
                "object": "chat.completion",
                "created": 0,
                "model": "m",
                "choices": [],
                "error": {"message": "upstream died"},
            },
        ),
        completion("second try"),
    )
    with pytest.raises(
        ProviderError, match="gpt-4o: the response has no choices: upstream died"
    ) as info:
        await call(client_for(server))
    assert info.value.retryable
    result, history = await moa.run(
        Propose(["gpt-4o"]),
        "Q",
        client_for(MockServer(server.replies[0], completion("second try"))),
        retry=NO_WAIT,
    )
    assert result == "second try" and history.calls[0].attempts == 2


# Errors and retries through moa.run


async def test_429_is_retried_after_retry_after_ms():
    server = MockServer(
        error(
            429,
            "Rate limit reached for gpt-4o",
            headers={"retry-after-ms": "50"},
            code="rate_limit_exceeded",
        ),
        completion("ok"),
    )
    result, history = await moa.run(Propose(["gpt-4o"]), "Q", client_for(server), retry=NO_WAIT)
    assert result == "ok"
    assert history.calls[0].attempts == 2 and history.calls[0].error is None
    assert server.gaps()[0] >= 0.05


async def test_429_is_retried_after_retry_after_seconds():
    server = MockServer(error(429, "slow down", headers={"retry-after": "0.06"}), completion("ok"))
    result, _ = await moa.run(Propose(["gpt-4o"]), "Q", client_for(server), retry=NO_WAIT)
    assert result == "ok" and server.gaps()[0] >= 0.06


async def test_429_error_carries_status_and_retry_after():
    server = MockServer(error(429, "Rate limit reached", headers={"retry-after": "2"}))
    with pytest.raises(ProviderError) as info:
        await call(client_for(server))
    err = info.value
    assert (err.status, err.retryable, err.retry_after, err.model) == (429, True, 2.0, "gpt-4o")
    assert str(err) == "gpt-4o: rate limited (HTTP 429): Rate limit reached; retry after 2 s"
    assert err.__cause__ is None and err.__context__ is None and err.__suppress_context__


@pytest.mark.parametrize("status", [408, 409, 500, 502, 503, 504])
async def test_server_errors_are_retried(status):
    server = MockServer(error(status, "try later"), completion("ok"))
    result, history = await moa.run(Propose(["gpt-4o"]), "Q", client_for(server), retry=NO_WAIT)
    assert result == "ok" and history.calls[0].attempts == 2


@pytest.mark.parametrize("reply, words", [(timeout, "timed out"), (refused, "connection failed")])
async def test_timeouts_and_connection_errors_are_retried(reply, words):
    server = MockServer(reply, completion("ok"))
    result, history = await moa.run(Propose(["gpt-4o"]), "Q", client_for(server), retry=NO_WAIT)
    assert result == "ok" and history.calls[0].attempts == 2
    server = MockServer(reply)
    with pytest.raises(StepFailedError) as info:
        await moa.run(Propose(["gpt-4o"]), "Q", client_for(server), retry=NO_WAIT)
    call_record = info.value.history.calls[0]
    assert call_record.attempts == 3 and len(server.requests) == 3
    assert call_record.error.startswith(f"ProviderError: gpt-4o: {words}")


@pytest.mark.parametrize(
    "status, message, words",
    [
        (401, "Incorrect API key provided", "authentication failed (HTTP 401)"),
        (403, "Project does not have access", "permission denied (HTTP 403)"),
        (400, "Invalid value for 'temperature'", "request rejected (HTTP 400)"),
        (404, "The model `gpt-9` does not exist", "not found (check the model name) (HTTP 404)"),
        (422, "Unprocessable", "request rejected (HTTP 422)"),
        (501, "Not implemented", "server error (HTTP 501)"),
    ],
)
async def test_client_errors_are_not_retried(status, message, words):
    server = MockServer(error(status, message), completion("never"))
    with pytest.raises(StepFailedError) as info:
        await moa.run(Propose(["gpt-9"]), "Q", client_for(server), retry=NO_WAIT)
    record = info.value.history.calls[0]
    assert record.attempts == 1 and len(server.requests) == 1
    assert record.error == f"ProviderError: gpt-9: {words}: {message}"


async def test_context_overflow_is_named_and_not_retried():
    server = MockServer(
        error(
            400,
            "This model's maximum context length is 128000 tokens. However, "
            "your messages resulted in 200000 tokens.",
            code="context_length_exceeded",
        )
    )
    with pytest.raises(StepFailedError) as info:
        await moa.run(Propose(["gpt-4o"]), "Q", client_for(server), retry=NO_WAIT)
    record = info.value.history.calls[0]
    assert record.attempts == 1
    assert "gpt-4o: context overflow" in record.error and "HTTP 400" in record.error


# Redaction


async def test_a_key_echoed_by_the_provider_never_reaches_history_or_messages():
    echo = (
        f"Incorrect API key provided: {SECRET}. Also sk-proj-ABCDEFGH12345678, "
        f"gsk_abcdefgh12345678 and Authorization: Bearer tok_0123456789abcdef"
    )
    server = MockServer(error(401, echo))
    client = client_for(server)
    with pytest.raises(StepFailedError) as info:
        await moa.run(Propose(["gpt-4o"]), "Q", client, retry=NO_WAIT)
    dumped = json.dumps(info.value.history.to_dict())
    texts = [dumped, str(info.value), repr(client)]
    with pytest.raises(ProviderError) as direct:
        await call(client)
    texts.append(str(direct.value))
    for text in texts:
        for secret in ("SECRET123456", "ABCDEFGH12345678", "abcdefgh12345678", "tok_0123456789"):
            assert secret not in text
    assert "Incorrect API key provided: [REDACTED]" in dumped
    assert re.search(r"Bearer \[REDACTED\]", dumped)


async def test_a_call_seed_is_sent_and_replaces_a_default_seed():
    server = MockServer(completion())
    client = client_for(server, seed=3)
    await client(
        model="gpt-4o",
        messages=[{"role": "user", "content": "q"}],
        temp=0.5,
        max_tokens=8,
        seed=1234,
    )
    await call(client)  # no call seed: the default stands
    assert server.body(0)["seed"] == 1234 and server.body(1)["seed"] == 3


async def test_a_run_seeds_every_openai_call():
    server = MockServer(completion())
    _, history = await moa.run(Propose(["gpt-4o", "gpt-4o"]), "q", client_for(server), seed=7)
    sent = [server.body(i)["seed"] for i in range(2)]
    assert sorted(sent) == sorted(c.seed for c in history.calls) and len(set(sent)) == 2

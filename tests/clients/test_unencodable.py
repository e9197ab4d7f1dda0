"""A request the SDK cannot encode (a prompt holding a lone surrogate) is a ProviderError that
says so and names the model, and is never retried: the same text fails the same way every time.
Runs on asyncio and trio."""

import pytest

pytest.importorskip("openai")
pytest.importorskip("anthropic")
httpx2 = pytest.importorskip("httpx2")

from mockhttp import (  # noqa: E402
    SECRET,
    MockServer,
    collect,
)

from moa import ProviderError, Retry  # noqa: E402
from moa.clients import anthropic_client, openai_client  # noqa: E402
from moa.clients._errors import provider_error  # noqa: E402

pytestmark = pytest.mark.anyio

NO_WAIT = Retry(attempts=3, initial=0, jitter=0)
CLAUDE = "claude-opus-4-6"
BAD = [{"role": "user", "content": "half an emoji: \ud83d!"}]
SAID = (
    "the request text is not valid Unicode: it holds a lone surrogate ('\\ud83d'), which no "
    "provider accepts; remove it or re-decode the text it came from"
)


def never(request):
    raise AssertionError("a request that cannot be encoded was sent")


def clients():
    server = MockServer(never)
    return [
        ("gpt-4o", openai_client(api_key=SECRET, http_client=server.http_client())),
        (CLAUDE, anthropic_client("sk-ant-api03-SECRET123456", http_client=server.http_client())),
    ]


@pytest.mark.parametrize("which", [0, 1], ids=["openai", "anthropic"])
async def test_a_lone_surrogate_in_a_call_is_an_error_not_retried(which):
    model, client = clients()[which]
    with pytest.raises(ProviderError) as info:
        await client(model=model, messages=BAD, temp=0.3, max_tokens=8)
    assert str(info.value) == f"{model}: {SAID}"
    assert not info.value.retryable and info.value.model == model
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize("which", [0, 1], ids=["openai", "anthropic"])
async def test_a_lone_surrogate_in_a_stream_is_the_same_error(which):
    model, client = clients()[which]
    with pytest.raises(ProviderError) as info:
        await collect(client.stream(model=model, messages=BAD, temp=0.3, max_tokens=8))
    assert str(info.value) == f"{model}: {SAID}" and not info.value.retryable


@pytest.mark.parametrize("which", [0, 1], ids=["openai", "anthropic"])
async def test_the_retry_policy_does_not_retry_it_and_its_message_can_be_saved(which):
    # run() refuses such a prompt itself; a step's messages may still carry one (a reply of a
    # model, a custom step's text), and the client is usable outside run.
    model, client = clients()[which]
    with pytest.raises(ProviderError) as info:
        await client(model=model, messages=BAD, temp=0.3, max_tokens=8)
    assert not NO_WAIT.should_retry(info.value)
    str(info.value).encode("utf-8")


def test_an_encoding_error_wrapped_by_another_is_found_in_its_chain():
    # LiteLLM re-raises what the SDK raised as a status error of its own (a 500).
    class InternalServerError(Exception):
        status_code = 500

    try:
        try:
            "\udc80".encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InternalServerError(f"OpenAIException - {exc}") from exc
    except InternalServerError as wrapped:
        err = provider_error(wrapped, model="m")
    assert str(err) == (
        "m: the request text is not valid Unicode: it holds a lone surrogate "
        "('\\udc80'), which no provider accepts; remove it or re-decode the text "
        "it came from"
    )
    assert not err.retryable


def test_an_encoding_error_the_call_was_made_under_is_not_its_cause():
    # A caller's ``except UnicodeEncodeError:`` block that calls the client again: a 429 then
    # carries that error as its context, but is a rate limit.
    class RateLimitError(Exception):
        status_code = 429

    try:
        try:
            "\udc80".encode("utf-8")
        except UnicodeEncodeError:
            raise RateLimitError("slow down")  # noqa: B904 (the context is the point)
    except RateLimitError as exc:
        assert isinstance(exc.__context__, UnicodeEncodeError)
        err = provider_error(exc, model="m")
    assert str(err) == "m: rate limited (HTTP 429): slow down" and err.retryable


def test_a_header_that_is_not_ascii_is_not_retried_and_not_shown():
    try:
        "Bearer clé-secrète".encode("ascii")
    except UnicodeEncodeError as exc:
        err = provider_error(exc, model="m")
    assert not err.retryable
    assert str(err) == (
        "m: the request cannot be encoded: ascii cannot encode a character "
        "(ordinal not in range(128)); HTTP headers and URLs must be ASCII"
    )

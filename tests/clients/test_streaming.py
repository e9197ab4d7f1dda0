"""The streaming side of openai_client and anthropic_client against real SSE bodies from a
scripted HTTP server: chunks in order that join to what ``__call__`` returns, the Usage that
ends them, the request shape, errors sorted as ``__call__`` sorts them (when the stream opens
and in its middle), keys redacted, and the HTTP response closed however the iteration ends.
Runs on asyncio and trio."""

import gc
import logging
import time
from contextlib import aclosing

import anyio
import pytest

pytest.importorskip("openai")
pytest.importorskip("anthropic")
httpx2 = pytest.importorskip("httpx2")

from mockhttp import (  # noqa: E402
    CLAUDE,
    SECRET,
    USAGE_CHUNK,
    MockServer,
    Sent,
    anthropic_events,
    chunk,
    collect,
    data,
    error,
    events,
    openai_events,
    refused,
)

from moa import ProviderError, Usage  # noqa: E402
from moa.clients import anthropic_client, openai_client  # noqa: E402

pytestmark = pytest.mark.anyio

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
ANTHROPIC_KEY = "sk-ant-api03-SECRET123456"


def split(items):
    """The text chunks and the Usage of a finished stream; the Usage must come last, alone."""
    *chunks, usage = items
    assert isinstance(usage, Usage)
    assert all(isinstance(c, str) and c for c in chunks)
    return chunks, usage


# OpenAI: SSE bodies


def openai_for(server, **kwargs):
    kwargs.setdefault("api_key", SECRET)
    return openai_client(http_client=server.http_client(), **kwargs)


def openai_stream(client, model="gpt-4o", temp=0.3, max_tokens=64):
    return client.stream(model=model, messages=MESSAGES, temp=temp, max_tokens=max_tokens)


async def test_openai_chunks_in_order_then_usage():
    sent = Sent(*data(*openai_events("Hel", "lo, ", "world")))
    chunks, usage = split(await collect(openai_stream(openai_for(MockServer(sent)))))
    assert chunks == ["Hel", "lo, ", "world"]
    assert usage == Usage(11, 7)
    assert sent.closed


async def test_openai_chunks_join_to_what_call_returns():
    texts = ["The ", "capital ", "is ", "Paris", "."]
    reply = httpx2.Response(
        200,
        json={
            "id": "c1",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "".join(texts)},
                }
            ],
            "usage": USAGE_CHUNK["usage"],
        },
    )
    client = openai_for(MockServer(reply, Sent(*data(*openai_events(*texts)))))
    text, tin, tout = await client(model="gpt-4o", messages=MESSAGES, temp=0.3, max_tokens=64)
    chunks, usage = split(await collect(openai_stream(client)))
    assert "".join(chunks) == text and usage == Usage(tin, tout)


async def test_openai_request_says_stream_and_asks_for_usage():
    server = MockServer(Sent(*data(*openai_events("hi"))))
    await collect(openai_stream(openai_for(server, base_url="https://openrouter.ai/api/v1")))
    request = server.requests[0]
    assert str(request.url) == "https://openrouter.ai/api/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert server.body() == {
        "model": "gpt-4o",
        "messages": MESSAGES,
        "max_tokens": 64,
        "temperature": 0.3,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def test_openai_stream_maps_parameters_as_call_does():
    server = MockServer(Sent(*data(*openai_events("hi"))))
    client = openai_for(server, top_p=0.9, extra_headers={"X-Title": "moa"})
    await collect(openai_stream(client, model="openai/gpt-5-nano", max_tokens=99))
    assert server.body() == {
        "model": "openai/gpt-5-nano",
        "messages": MESSAGES,
        "max_completion_tokens": 99,
        "reasoning_effort": "minimal",
        "top_p": 0.9,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert server.requests[0].headers["x-title"] == "moa"


async def test_openai_usage_that_never_arrives_is_unknown():
    sent = Sent(*data(*openai_events("a", "b", usage=False)))
    chunks, usage = split(await collect(openai_stream(openai_for(MockServer(sent)))))
    assert chunks == ["a", "b"] and usage == Usage(None, None)


async def test_openai_usage_on_the_last_choice_chunk_is_read_too():
    # Some servers put usage on the chunk that carries finish_reason instead of a chunk of its own.
    last = {
        **chunk(finish="stop"),
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }
    sent = Sent(*data(chunk("a"), chunk("b"), last))
    assert split(await collect(openai_stream(openai_for(MockServer(sent))))) == (
        ["a", "b"],
        Usage(3, 2),
    )


async def test_openai_server_that_refuses_stream_options_is_asked_again_without():
    server = MockServer(
        error(400, "Unrecognized request argument supplied: stream_options"),
        Sent(*data(*openai_events("ok", usage=False))),
    )
    items = await collect(openai_stream(openai_for(server)))
    assert items == ["ok", Usage(None, None)]
    assert "stream_options" in server.body(0) and "stream_options" not in server.body(1)
    assert server.body(1)["stream"] is True


async def test_openai_empty_stream_is_empty_text_and_logged(caplog):
    sent = Sent(*data(chunk(role="assistant", content=""), chunk(finish="length"), USAGE_CHUNK))
    with caplog.at_level(logging.WARNING, logger="moa.clients"):
        items = await collect(openai_stream(openai_for(MockServer(sent)), model="gpt-5-nano"))
    assert items == [Usage(11, 7)]
    assert "gpt-5-nano: the stream carried no text (finish_reason='length')" in caplog.text


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64])
async def test_openai_a_body_cut_anywhere_reads_the_same(size):
    # Pieces may split a line, a "\r\n" or a UTF-8 character; comments are keep-alives.
    body = "".join(
        [": OPENROUTER PROCESSING\r\n\r\n"]
        + [piece.replace("\n", "\r\n") for piece in data(*openai_events("Ça ", "va 🌊", "!"))]
    )
    raw = body.encode()
    pieces = [raw[i : i + size] for i in range(0, len(raw), size)]

    class Bytes(Sent):
        async def _body(self):
            for piece in pieces:
                yield piece

    items = await collect(openai_stream(openai_for(MockServer(Bytes()))))
    assert items == ["Ça ", "va 🌊", "!", Usage(11, 7)]


async def test_openai_a_server_that_stalls_after_done_is_not_waited_for():
    sent = Sent(*data(*openai_events("a")), then="hang")
    with anyio.fail_after(2):
        assert await collect(openai_stream(openai_for(MockServer(sent)))) == ["a", Usage(11, 7)]
    assert sent.closed


async def test_openai_a_connection_broken_after_done_spoils_nothing():
    sent = Sent(*data(*openai_events("a")), then=httpx2.RemoteProtocolError("peer closed"))
    assert await collect(openai_stream(openai_for(MockServer(sent)))) == ["a", Usage(11, 7)]
    assert sent.closed


# OpenAI: errors


async def test_openai_429_when_opening_is_retryable_with_retry_after():
    server = MockServer(error(429, "Rate limit reached", headers={"retry-after": "2"}))
    with pytest.raises(ProviderError) as info:
        await collect(openai_stream(openai_for(server)))
    err = info.value
    assert (err.status, err.retryable, err.retry_after, err.model) == (429, True, 2.0, "gpt-4o")
    assert str(err) == "gpt-4o: rate limited (HTTP 429): Rate limit reached; retry after 2 s"
    assert err.__cause__ is None and err.__context__ is None


@pytest.mark.parametrize(
    "status, words, retryable",
    [
        (400, "request rejected (HTTP 400)", False),
        (401, "authentication failed (HTTP 401)", False),
        (503, "server error (HTTP 503)", True),
    ],
)
async def test_openai_errors_when_opening_are_sorted_as_call_sorts_them(status, words, retryable):
    server = MockServer(error(status, "nope"))
    with pytest.raises(ProviderError) as streamed:
        await collect(openai_stream(openai_for(server)))
    with pytest.raises(ProviderError) as called:
        await openai_for(server)(model="gpt-4o", messages=MESSAGES, temp=0.3, max_tokens=64)
    assert str(streamed.value) == str(called.value) == f"gpt-4o: {words}: nope"
    assert streamed.value.retryable is called.value.retryable is retryable


@pytest.mark.parametrize(
    "fields, words, retryable",
    [
        (
            {"message": "The server had an error", "type": "server_error"},
            "server error (HTTP 500)",
            True,
        ),
        ({"message": "Provider returned error", "code": 502}, "server error (HTTP 502)", True),
        (
            {"message": "Rate limit exceeded", "code": "rate_limit_exceeded"},
            "rate limited (HTTP 429)",
            True,
        ),
        (
            {
                "message": "maximum context length is 8192 tokens",
                "code": "context_length_exceeded",
                "type": "invalid_request_error",
            },
            "context overflow",
            False,
        ),
        ({"message": "something odd"}, "server error (HTTP 500)", True),
    ],
)
async def test_openai_error_event_mid_stream(fields, words, retryable):
    sent = Sent(*data(chunk("partial "), {"error": fields}, done=False))
    items = []
    with pytest.raises(ProviderError) as info:
        async with aclosing(openai_stream(openai_for(MockServer(sent)))) as stream:
            async for item in stream:
                items.append(item)
    assert items == ["partial "]
    err = info.value
    assert str(err).startswith(f"gpt-4o: {words}") and fields["message"] in str(err)
    assert err.retryable is retryable
    assert err.__cause__ is None and err.__context__ is None
    assert sent.closed


async def test_openai_connection_broken_mid_stream_is_retryable():
    sent = Sent(
        *data(chunk("partial "), done=False)[:1],
        then=httpx2.RemoteProtocolError(
            "peer closed connection without sending complete message body"
        ),
    )
    items = []
    with pytest.raises(ProviderError, match="gpt-4o: connection failed") as info:
        async for item in openai_stream(openai_for(MockServer(sent))):
            items.append(item)
    assert items == ["partial "] and info.value.retryable
    assert sent.closed


async def test_openai_timeout_mid_stream_is_retryable():
    sent = Sent(*data(chunk("partial "), done=False), then=httpx2.ReadTimeout("read timed out"))
    with pytest.raises(ProviderError, match="gpt-4o: timed out") as info:
        await collect(openai_stream(openai_for(MockServer(sent))))
    assert info.value.retryable and sent.closed


async def test_openai_data_that_is_not_json_is_a_retryable_error():
    sent = Sent('data: {"choices": [\n\n')
    with pytest.raises(
        ProviderError, match="gpt-4o: the stream sent data that is not JSON"
    ) as info:
        await collect(openai_stream(openai_for(MockServer(sent))))
    assert info.value.retryable and sent.closed


async def test_openai_connection_refused_when_opening_is_retryable():
    with pytest.raises(ProviderError, match="gpt-4o: connection failed") as info:
        await collect(openai_stream(openai_for(MockServer(refused))))
    assert info.value.retryable


async def test_openai_key_never_reaches_an_error_message():
    echo = f"Incorrect API key provided: {SECRET}"
    with pytest.raises(ProviderError) as opening:
        await collect(openai_stream(openai_for(MockServer(error(401, echo)))))
    sent = Sent(*data({"error": {"message": echo, "type": "server_error"}}, done=False))
    with pytest.raises(ProviderError) as middle:
        await collect(openai_stream(openai_for(MockServer(sent))))
    for err in (opening.value, middle.value):
        assert "SECRET123456" not in str(err) and "SECRET123456" not in repr(err)
        assert "[REDACTED]" in str(err)
        assert err.__cause__ is None and err.__context__ is None


# OpenAI: closing


async def test_openai_leaving_early_closes_the_response():
    sent = Sent(*data(*openai_events("a", "b", "c")))
    async with aclosing(openai_stream(openai_for(MockServer(sent)))) as stream:
        async for item in stream:
            assert item == "a"
            break
    assert sent.closed


# trio reports any async generator dropped before it is exhausted (a ResourceWarning, an error
# here): under trio a consumer that leaves early must use aclosing, as the other tests do.
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_openai_a_dropped_stream_is_closed_by_the_event_loop():
    # Without aclosing: the garbage collector hands the generator to the loop, which closes it.
    sent = Sent(*data(*openai_events("a", "b", "c")))
    stream = openai_stream(openai_for(MockServer(sent)))
    async for _ in stream:
        break
    del stream
    gc.collect()
    for _ in range(10):
        await anyio.sleep(0)
    assert sent.closed


async def test_openai_cancelling_a_stalled_stream_closes_the_response():
    sent = Sent(*data(chunk("a"), done=False), then="hang")
    items = []
    with anyio.move_on_after(0.2) as scope:
        async for item in openai_stream(openai_for(MockServer(sent))):
            items.append(item)
    assert scope.cancelled_caught and items == ["a"]
    assert sent.closed


# Anthropic: SSE bodies


def anthropic_for(server, **kwargs):
    kwargs.setdefault("api_key", ANTHROPIC_KEY)
    return anthropic_client(http_client=server.http_client(), **kwargs)


def anthropic_stream(client, temp=0.4, max_tokens=64):
    return client.stream(model=CLAUDE, messages=MESSAGES, temp=temp, max_tokens=max_tokens)


async def test_anthropic_chunks_in_order_then_usage():
    sent = Sent(*anthropic_events("Hel|lo, |world"))
    chunks, usage = split(await collect(anthropic_stream(anthropic_for(MockServer(sent)))))
    assert chunks == ["Hel", "lo, ", "world"] and usage == Usage(12, 5)
    assert sent.closed


async def test_anthropic_request_says_stream_with_the_call_parameters():
    server = MockServer(Sent(*anthropic_events("hi")))
    await collect(anthropic_stream(anthropic_for(server, top_k=40)))
    assert str(server.requests[0].url) == "https://api.anthropic.com/v1/messages"
    assert server.body() == {
        "model": CLAUDE,
        "max_tokens": 64,
        "temperature": 0.4,
        "top_k": 40,
        "system": "Be brief.",
        "stream": True,
        "messages": [{"role": "user", "content": "Hi?"}],
    }


async def test_anthropic_chunks_join_to_what_call_returns_thinking_left_out():
    blocks = ({"thinking": "hmm"}, "Hello, |there", "world")
    usage = {
        "input_tokens": 3,
        "cache_read_input_tokens": 10,
        "cache_creation_input_tokens": 5,
        "output_tokens": 1,
    }
    reply = httpx2.Response(
        200,
        json={
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": CLAUDE,
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "text", "text": "Hello, there"},
                {"type": "text", "text": "world"},
            ],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {**usage, "output_tokens": 4},
        },
    )
    client = anthropic_for(
        MockServer(reply, Sent(*anthropic_events(*blocks, usage=usage, final={"output_tokens": 4})))
    )
    text, tin, tout = await client(model=CLAUDE, messages=MESSAGES, temp=0.4, max_tokens=64)
    chunks, streamed = split(await collect(anthropic_stream(client)))
    assert chunks == ["Hello, ", "there", "world"]
    assert "".join(chunks) == text == "Hello, thereworld"
    assert streamed == Usage(tin, tout) == Usage(18, 4)


async def test_anthropic_final_usage_in_message_delta_replaces_the_start():
    sent = Sent(
        *anthropic_events(
            "a",
            usage={"input_tokens": 0, "output_tokens": 0},
            final={"input_tokens": 9, "output_tokens": 6},
        )
    )
    assert split(await collect(anthropic_stream(anthropic_for(MockServer(sent))))) == (
        ["a"],
        Usage(9, 6),
    )


async def test_anthropic_usage_missing_is_unknown():
    sent = Sent(
        *events(
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": "x"},
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        )
    )
    assert await collect(anthropic_stream(anthropic_for(MockServer(sent)))) == [
        "x",
        Usage(None, None),
    ]


# Anthropic: errors


async def test_anthropic_429_when_opening_is_retryable_with_retry_after():
    server = MockServer(
        error(
            429,
            "Number of request tokens has exceeded your rate limit",
            type="rate_limit_error",
            headers={"retry-after": "3"},
        )
    )
    with pytest.raises(ProviderError) as info:
        await collect(anthropic_stream(anthropic_for(server)))
    err = info.value
    assert (err.status, err.retryable, err.retry_after) == (429, True, 3.0)
    assert err.__cause__ is None and err.__context__ is None


async def test_anthropic_400_when_opening_is_not_retryable_and_names_send_temperature():
    server = MockServer(error(400, "`temperature` is deprecated for this model."))
    with pytest.raises(ProviderError, match="send_temperature=False") as info:
        await collect(anthropic_stream(anthropic_for(server)))
    assert not info.value.retryable and info.value.status == 400


@pytest.mark.parametrize(
    "kind, words, retryable",
    [
        ("overloaded_error", "overloaded (HTTP 529)", True),
        ("api_error", "server error (HTTP 500)", True),
        ("rate_limit_error", "rate limited (HTTP 429)", True),
        ("invalid_request_error", "request rejected (HTTP 400)", False),
    ],
)
async def test_anthropic_error_event_mid_stream(kind, words, retryable):
    body = anthropic_events("partial ")[:4] + events(
        ("error", {"type": "error", "error": {"type": kind, "message": "Overloaded"}})
    )
    sent = Sent(*body)
    items = []
    with pytest.raises(ProviderError) as info:
        async for item in anthropic_stream(anthropic_for(MockServer(sent))):
            items.append(item)
    assert items == ["partial "]
    assert str(info.value) == f"{CLAUDE}: {words}: Overloaded"
    assert info.value.retryable is retryable
    assert info.value.__cause__ is None and info.value.__context__ is None
    assert sent.closed


async def test_anthropic_connection_broken_mid_stream_is_retryable():
    sent = Sent(
        *anthropic_events("partial ")[:4],
        then=httpx2.RemoteProtocolError(
            "peer closed connection without sending complete message body"
        ),
    )
    items = []
    with pytest.raises(ProviderError, match=f"{CLAUDE}: connection failed") as info:
        async for item in anthropic_stream(anthropic_for(MockServer(sent))):
            items.append(item)
    assert items == ["partial "] and info.value.retryable
    assert sent.closed


async def test_anthropic_key_never_reaches_an_error_message():
    echo = f"invalid x-api-key {ANTHROPIC_KEY}"
    with pytest.raises(ProviderError) as opening:
        await collect(anthropic_stream(anthropic_for(MockServer(error(401, echo)))))
    sent = Sent(
        *events(("error", {"type": "error", "error": {"type": "api_error", "message": echo}}))
    )
    with pytest.raises(ProviderError) as middle:
        await collect(anthropic_stream(anthropic_for(MockServer(sent))))
    for err in (opening.value, middle.value):
        assert "SECRET123456" not in str(err) and "SECRET123456" not in repr(err)
        assert "[REDACTED]" in str(err)


# Anthropic: closing


async def test_anthropic_leaving_early_closes_the_response():
    sent = Sent(*anthropic_events("a|b|c"))
    async with aclosing(anthropic_stream(anthropic_for(MockServer(sent)))) as stream:
        async for item in stream:
            assert item == "a"
            break
    assert sent.closed


async def test_anthropic_cancelling_a_stalled_stream_closes_the_response():
    sent = Sent(*anthropic_events("a")[:4], then="hang")
    items = []
    with anyio.move_on_after(0.2) as scope:
        async for item in anthropic_stream(anthropic_for(MockServer(sent))):
            items.append(item)
    assert scope.cancelled_caught and items == ["a"]
    assert sent.closed


# The local client's streaming machinery (a thread, a queue, the stop flag) on a stand-in for
# llama_cpp.Llama that behaves as llama does: the logits processors run once per sampled token,
# the end-of-sequence token ends the generation ("stop") and is not a completion token.


class Scores(list):
    """Logits as llama hands them to a processor (a numpy array there), without numpy: a
    scalar assigned to a slice fills it, as ``scores[:] = -inf`` does on an array."""

    def __setitem__(self, key, value):
        if isinstance(key, slice) and not isinstance(value, list):
            value = [value] * len(range(*key.indices(len(self))))
        super().__setitem__(key, value)


class FakeLlama:
    EOS = 0

    def __init__(self, words, *, prompt_tokens=9, pause=0.0, overflow=False):
        self.words = list(words or ())  # none: words without end, "w0 ", "w1 "...
        self.prompt_tokens = prompt_tokens
        self.pause = pause
        self.overflow = overflow
        self.n_tokens = 0
        self.produced = 0

    def token_eos(self):
        return self.EOS

    def create_chat_completion(
        self, *, messages, temperature, max_tokens, logits_processor, stream=False
    ):
        assert stream and messages and temperature >= 0
        return self._chunks(max_tokens, logits_processor)

    def _chunks(self, max_tokens, processors):
        if self.overflow:
            raise ValueError("Requested tokens (5000) exceed context window of 2048")
        self.n_tokens = self.prompt_tokens
        yield {"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]}
        finish, k = "length", 0
        while k < max_tokens:
            scores = Scores([0.0, 1.0, 0.0, 0.0])  # a word, unless a processor says otherwise
            for processor in processors:
                scores = processor(None, scores)
            if max(range(len(scores)), key=scores.__getitem__) == self.EOS or (
                self.words and k == len(self.words)
            ):
                finish = "stop"
                break
            time.sleep(self.pause)
            word = self.words[k] if self.words else f"w{k} "
            k += 1
            self.produced = k
            self.n_tokens += 1
            yield {"choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
        yield {"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}


@pytest.fixture
def fake_local(tmp_path, monkeypatch):
    from moa.clients import _local

    def make(llama):
        path = tmp_path / "fake.gguf"
        path.write_bytes(b"GGUF")
        client = _local.LocalClient(path, n_ctx=256, n_threads=1)
        engine = _local._Engine(llama)
        monkeypatch.setitem(_local._engines, client._key, engine)
        return client, engine

    return make


def local_stream(client, max_tokens=64):
    return client.stream(model="smollm2", messages=MESSAGES, temp=0.0, max_tokens=max_tokens)


async def test_local_chunks_then_usage_that_leaves_out_the_end_token(fake_local):
    client, _ = fake_local(FakeLlama(["Hel", "lo", " world"]))
    assert await collect(local_stream(client)) == ["Hel", "lo", " world", Usage(9, 3)]


async def test_local_a_reply_cut_at_max_tokens_counts_every_token(fake_local):
    client, _ = fake_local(FakeLlama(None))
    assert await collect(local_stream(client, max_tokens=4)) == [
        "w0 ",
        "w1 ",
        "w2 ",
        "w3 ",
        Usage(9, 4),
    ]


async def test_local_overflow_is_a_provider_error_not_retried(fake_local):
    client, engine = fake_local(FakeLlama(None, overflow=True))
    with pytest.raises(ProviderError, match="smollm2: context overflow: Requested tokens") as info:
        await collect(local_stream(client))
    assert not info.value.retryable
    assert engine.lock.acquire(timeout=1)
    engine.lock.release()


@pytest.mark.parametrize("leave", ["break", "cancel"])
async def test_local_leaving_early_stops_generation_and_frees_the_model(fake_local, leave):
    llama = FakeLlama(None, pause=0.01)
    client, engine = fake_local(llama)
    got = []
    with anyio.CancelScope() as scope:
        async with aclosing(local_stream(client, max_tokens=10_000)) as stream:
            async for item in stream:
                got.append(item)
                if len(got) == 3:
                    if leave == "break":
                        break
                    scope.cancel()
    assert got == ["w0 ", "w1 ", "w2 "]
    # The producer stops at its next token and lets go of the model.
    assert await anyio.to_thread.run_sync(engine.lock.acquire, True, 2)
    engine.lock.release()
    assert llama.produced <= 6


async def test_local_a_stream_left_before_the_model_is_free_never_runs(fake_local):
    llama = FakeLlama(None)
    client, engine = fake_local(llama)
    engine.lock.acquire()  # another call holds the model
    try:
        with anyio.move_on_after(0.1):
            await collect(local_stream(client))
    finally:
        engine.lock.release()
    await anyio.sleep(0.1)
    assert llama.produced == 0


async def test_openai_a_body_that_ends_before_the_reply_is_a_retryable_error():
    # No finish_reason and no [DONE]: a proxy closed the body cleanly mid-reply.
    sent = Sent(*data(chunk(role="assistant", content=""), chunk("The answer is 12"), done=False))
    with pytest.raises(ProviderError, match="the stream ended before the reply did") as info:
        await collect(openai_stream(openai_for(MockServer(sent))))
    assert info.value.retryable and sent.closed


async def test_openai_done_without_a_finish_reason_ends_the_reply():
    # Some servers send no finish_reason; their [DONE] alone says the reply is whole.
    sent = Sent(*data(chunk(role="assistant", content=""), chunk("a"), chunk("b")))
    assert await collect(openai_stream(openai_for(MockServer(sent)))) == [
        "a",
        "b",
        Usage(None, None),
    ]
    assert sent.closed


async def test_anthropic_a_body_that_ends_before_the_message_is_a_retryable_error():
    whole = anthropic_events("The answer is 12|3")
    cut = [
        e for e in whole if "message_delta" not in e and "message_stop" not in e and '"3"' not in e
    ]
    sent = Sent(*cut)
    with pytest.raises(ProviderError, match="the stream ended before the message did") as info:
        await collect(anthropic_stream(anthropic_for(MockServer(sent))))
    assert info.value.retryable and sent.closed


class SeedingLlama(FakeLlama):
    """FakeLlama that takes a seed and can be reset, as llama_cpp.Llama does."""

    def __init__(self, words):
        super().__init__(words)
        self.seeds, self.resets = [], 0

    def reset(self):
        self.resets += 1

    def create_chat_completion(
        self, *, messages, temperature, max_tokens, logits_processor, stream=False, seed=None
    ):
        self.seeds.append(seed)
        if stream:
            return self._chunks(max_tokens, logits_processor)
        text = "".join(self.words)
        return {
            "choices": [{"message": {"content": text}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": len(self.words)},
        }


async def test_local_seeds_each_call_and_forgets_the_last_prompt_first(fake_local):
    client, engine = fake_local(SeedingLlama(["a", "b"]))
    llama = engine.llama
    assert await client(model="m", messages=MESSAGES, temp=0.7, max_tokens=8, seed=5) == (
        "ab",
        3,
        2,
    )
    chunks = [
        c async for c in client.stream(model="m", messages=MESSAGES, temp=0.7, max_tokens=8, seed=6)
    ]
    assert "".join(c for c in chunks if isinstance(c, str)) == "ab"
    assert llama.seeds == [5, 6] and llama.resets == 2
    await client(model="m", messages=MESSAGES, temp=0.7, max_tokens=8)  # unseeded: as before
    assert llama.seeds == [5, 6, None] and llama.resets == 2

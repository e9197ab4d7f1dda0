"""Replies of the wrong shape, from a scripted HTTP server: a body or a stream that is not the
API's is a ProviderError that names the model and what is wrong, and is never retried, nor taken
as an empty answer; replies of the right shape that hold no text stay answers ("").
Runs on asyncio and trio."""

import logging

import pytest

pytest.importorskip("openai")
pytest.importorskip("anthropic")
httpx2 = pytest.importorskip("httpx2")

from mockhttp import (  # noqa: E402
    SECRET,
    MockServer,
    Sent,
    anthropic_events,
    chunk,
    collect,
    data,
    events,
    openai_events,
)

import moa  # noqa: E402
from moa import Propose, ProviderError, Retry, StepFailedError, Usage  # noqa: E402
from moa.clients import anthropic_client, openai_client  # noqa: E402

pytestmark = pytest.mark.anyio

NO_WAIT = Retry(attempts=3, initial=0, jitter=0)
MESSAGES = [{"role": "user", "content": "Hi?"}]
CLAUDE = "claude-opus-4-6"
ANTHROPIC_KEY = "sk-ant-api03-SECRET123456"
CHAT = "gpt-4o: the reply is not a chat completion: "
CHAT_STREAM = "gpt-4o: the reply is not a chat completion stream: "
MESSAGE = f"{CLAUDE}: the reply is not a Messages API message: "
MESSAGE_STREAM = f"{CLAUDE}: the reply is not a Messages API stream: "


def openai_for(server):
    return openai_client(api_key=SECRET, http_client=server.http_client())


def anthropic_for(server):
    return anthropic_client(ANTHROPIC_KEY, http_client=server.http_client())


def completion(message, **choice):
    return {
        "id": "c1",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop", "message": message, **choice}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }


def claude_message(content):
    body = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": CLAUDE,
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 5},
    }
    if content is not ...:
        body["content"] = content
    return body


async def openai_call(client):
    return await client(model="gpt-4o", messages=MESSAGES, temp=0.3, max_tokens=64)


async def anthropic_call(client):
    return await client(model=CLAUDE, messages=MESSAGES, temp=0.3, max_tokens=64)


async def fails_once(server, client, model, words):
    """The run's call failed with ``words`` on its first attempt, and was not tried again."""
    with pytest.raises(StepFailedError) as info:
        await moa.run(Propose([model]), "Q", client, retry=NO_WAIT)
    record = info.value.history.calls[0]
    assert record.attempts == 1 and len(server.requests) == 1
    assert record.error == f"ProviderError: {words}"


# OpenAI: whole replies

OPENAI_WRONG = [
    ({"choices": "nope"}, "'choices' is 'nope' (a str), not a list"),
    ({"id": "c1", "object": "chat.completion"}, "it has no 'choices'"),
    ({"choices": [1]}, "choices[0] is 1 (an int), not an object"),
    ({"choices": [{"index": 0, "finish_reason": "stop"}]}, "choices[0] has no 'message'"),
    ({"choices": [{"message": "hello"}]}, "choices[0].message is 'hello' (a str), not an object"),
    (
        completion({"role": "assistant", "content": 5}),
        "choices[0].message.content is 5 (an int), not a string or null",
    ),
    (
        completion({"role": "assistant", "content": [{"type": "text", "text": "hi"}]}),
        "choices[0].message.content is [{'type': 'text', 'text': 'hi'}] (a list), not a string or "
        "null",
    ),
    (
        completion({"role": "assistant"}),
        "choices[0].message has no 'content' (nor a refusal or tool call)",
    ),
    (["hello"], "the body is ['hello'] (a list), not a JSON object"),
]


@pytest.mark.parametrize("body, what", OPENAI_WRONG)
async def test_openai_a_body_that_is_no_chat_completion_is_an_error_not_retried(body, what):
    server = MockServer(httpx2.Response(200, json=body))
    with pytest.raises(ProviderError) as info:
        await openai_call(openai_for(server))
    assert str(info.value) == CHAT + what
    assert not info.value.retryable and info.value.model == "gpt-4o"
    server = MockServer(
        httpx2.Response(200, json=body),
        httpx2.Response(200, json=completion({"role": "assistant", "content": "never"})),
    )
    await fails_once(server, openai_for(server), "gpt-4o", CHAT + what)


async def test_openai_a_page_that_is_not_json_is_an_error():
    server = MockServer(
        httpx2.Response(
            200, text="<html>Welcome to nginx!</html>", headers={"content-type": "text/html"}
        )
    )
    with pytest.raises(ProviderError) as info:
        await openai_call(openai_for(server))
    assert str(info.value) == (
        CHAT + "the body is '<html>Welcome to nginx!</html>' (a str), not a JSON object"
    )
    assert not info.value.retryable


async def test_openai_an_error_object_without_choices_is_still_a_retryable_upstream_failure():
    # OpenRouter's 200 when the upstream provider failed; a body with neither is no reply.
    server = MockServer(
        httpx2.Response(200, json={"error": {"message": "upstream died", "code": 502}})
    )
    with pytest.raises(ProviderError) as info:
        await openai_call(openai_for(server))
    assert str(info.value) == "gpt-4o: the response has no choices: upstream died"
    assert info.value.retryable


async def test_openai_empty_text_is_an_answer_and_not_logged(caplog):
    server = MockServer(httpx2.Response(200, json=completion({"role": "assistant", "content": ""})))
    with caplog.at_level(logging.WARNING, logger="moa.clients"):
        assert await openai_call(openai_for(server)) == ("", 11, 7)
    assert not caplog.records


@pytest.mark.parametrize(
    "message, logged",
    [
        (
            {"role": "assistant", "content": None, "refusal": "I can't help with that."},
            "gpt-4o: the response has no text "
            "(finish_reason='stop', refusal=\"I can't help with that.\")",
        ),
        (
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            "gpt-4o: the response has no text (finish_reason='stop')",
        ),
        # Some servers leave content out beside a tool call rather than send null.
        (
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            "gpt-4o: the response has no text (finish_reason='stop')",
        ),
    ],
)
async def test_openai_a_refusal_or_a_tool_call_is_empty_text_and_logged(caplog, message, logged):
    server = MockServer(httpx2.Response(200, json=completion(message)))
    with caplog.at_level(logging.WARNING, logger="moa.clients"):
        assert await openai_call(openai_for(server)) == ("", 11, 7)
    assert logged in caplog.text


# Anthropic: whole replies

ANTHROPIC_WRONG = [
    (claude_message(...), "it has no 'content'"),
    (claude_message("hello"), "'content' is 'hello' (a str), not a list"),
    (claude_message([1]), "content[0] is 1 (an int), not a block with a 'type'"),
    (
        claude_message([{"type": "text", "text": "a"}, {"type": "text"}]),
        "content[1] is a text block whose text is null, not a string",
    ),
    (
        claude_message([{"type": "text", "text": 5}]),
        "content[0] is a text block whose text is 5 (an int), not a string",
    ),
    ({"choices": [{"message": {"role": "assistant", "content": "hi"}}]}, "it has no 'content'"),
    ([], "the body is [] (a list), not a JSON object"),
]


@pytest.mark.parametrize("body, what", ANTHROPIC_WRONG)
async def test_anthropic_a_body_that_is_no_message_is_an_error_not_retried(body, what):
    server = MockServer(httpx2.Response(200, json=body))
    with pytest.raises(ProviderError) as info:
        await anthropic_call(anthropic_for(server))
    assert str(info.value) == MESSAGE + what
    assert not info.value.retryable and info.value.model == CLAUDE
    server = MockServer(
        httpx2.Response(200, json=body),
        httpx2.Response(200, json=claude_message([{"type": "text", "text": "never"}])),
    )
    await fails_once(server, anthropic_for(server), CLAUDE, MESSAGE + what)


async def test_anthropic_a_block_without_a_type_is_an_error():
    # The SDK builds a TextBlock of {"text": ...} with no type; the API always sends one.
    server = MockServer(httpx2.Response(200, json=claude_message([{"text": "hi"}])))
    with pytest.raises(ProviderError, match="content\\[0\\] is .*not a block with a 'type'"):
        await anthropic_call(anthropic_for(server))


@pytest.mark.parametrize(
    "content",
    [
        [],
        [{"type": "thinking", "thinking": "hmm", "signature": "s"}],
        [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}],
    ],
)
async def test_anthropic_a_message_without_text_blocks_is_empty_text_and_logged(caplog, content):
    server = MockServer(httpx2.Response(200, json=claude_message(content)))
    with caplog.at_level(logging.WARNING, logger="moa.clients"):
        assert await anthropic_call(anthropic_for(server)) == ("", 12, 5)
    assert f"{CLAUDE}: the response has no text block (stop_reason='end_turn')" in caplog.text


# OpenAI: streams


def openai_stream(client):
    return client.stream(model="gpt-4o", messages=MESSAGES, temp=0.3, max_tokens=64)


def raw(*lines):
    return [f"data: {line}\n\n" for line in lines]


OPENAI_STREAM_WRONG = [
    (data({"choices": "nope"}), "a chunk's 'choices' is 'nope' (a str), not a list"),
    (data({"choices": [1]}), "a chunk's choices[0] is 1 (an int), not an object"),
    (
        data({"choices": [{"index": 0, "delta": "hi"}]}),
        "a chunk's delta is 'hi' (a str), not an object",
    ),
    (
        data(chunk(role="assistant", content=""), {"choices": [{"delta": {"content": 5}}]}),
        "a chunk's delta content is 5 (an int), not a string or null",
    ),
    (data([1, 2]), "a chunk is [1, 2] (a list), not a JSON object"),
    # A JSON string is no [DONE], even the string "[DONE]" with its quotes.
    (raw('"hello"', "[DONE]"), "a chunk is 'hello' (a str), not a JSON object"),
    (raw('"[DONE]"'), "a chunk is '[DONE]' (a str), not a JSON object"),
    (raw("[DONE]"), "no event of the stream had 'choices'"),
    (data({"id": "c1", "object": "something.else"}), "no event of the stream had 'choices'"),
    # An Anthropic stream sent to the OpenAI client (no [DONE], no finish_reason).
    (anthropic_events("hello"), "no event of the stream had 'choices'"),
]


@pytest.mark.parametrize("body, what", OPENAI_STREAM_WRONG)
async def test_openai_a_stream_that_is_no_chat_completion_stream_is_an_error(body, what):
    sent = Sent(*body)
    with pytest.raises(ProviderError) as info:
        await collect(openai_stream(openai_for(MockServer(sent))))
    assert str(info.value) == CHAT_STREAM + what
    assert not info.value.retryable and sent.closed


async def test_openai_an_empty_body_is_still_a_cut_stream_and_retried():
    # No event at all: the connection may have dropped, which another try may not meet.
    with pytest.raises(ProviderError, match="the stream ended before the reply did") as info:
        await collect(openai_stream(openai_for(MockServer(Sent()))))
    assert info.value.retryable


async def test_openai_chunks_without_a_choice_before_the_reply_are_fine():
    # Azure opens with a chunk of prompt_filter_results and empty choices.
    first = {
        "id": "",
        "object": "",
        "created": 0,
        "model": "",
        "choices": [],
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}],
    }
    sent = Sent(*data(first, *openai_events("a", "b")))
    assert await collect(openai_stream(openai_for(MockServer(sent)))) == ["a", "b", Usage(11, 7)]


# Anthropic: streams


def anthropic_stream(client):
    return client.stream(model=CLAUDE, messages=MESSAGES, temp=0.3, max_tokens=64)


def delta(body):
    return ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": body})


ANTHROPIC_STREAM_WRONG = [
    (events(delta("hi")), "a content_block_delta event's delta is 'hi' (a str), not an object"),
    (
        events(("content_block_delta", {"type": "content_block_delta", "index": 0})),
        "a content_block_delta event's delta is null, not an object",
    ),
    (
        events(delta({"type": "text_delta", "text": 5})),
        "a text_delta's text is 5 (an int), not a string",
    ),
    (
        events(("message_start", {"type": "message_start", "message": "hi"})),
        "a message_start event's message is 'hi' (a str), not an object",
    ),
    (
        events(("message_delta", {"type": "message_delta", "delta": [1]})),
        "a message_delta event's delta is [1] (a list), not an object",
    ),
    (
        ["event: message_stop\ndata: [1]\n\n"],
        "a message_stop event's data is [1] (a list), not a JSON object",
    ),
    # An OpenAI stream sent to the Anthropic client.
    (
        data(*openai_events("hello")),
        "no event of the stream was one of its events "
        "(message_start, content_block_delta, message_stop...)",
    ),
]


@pytest.mark.parametrize("body, what", ANTHROPIC_STREAM_WRONG)
async def test_anthropic_a_stream_that_is_no_messages_stream_is_an_error(body, what):
    sent = Sent(*body)
    with pytest.raises(ProviderError) as info:
        await collect(anthropic_stream(anthropic_for(MockServer(sent))))
    assert str(info.value) == MESSAGE_STREAM + what
    assert not info.value.retryable and sent.closed


async def test_anthropic_an_error_event_whose_data_is_text_is_sorted_as_a_server_error():
    sent = Sent(*anthropic_events("partial ")[:4], 'event: error\ndata: "Overloaded"\n\n')
    with pytest.raises(ProviderError) as info:
        await collect(anthropic_stream(anthropic_for(MockServer(sent))))
    assert str(info.value) == f"{CLAUDE}: server error (HTTP 500): Overloaded"
    assert info.value.retryable


async def test_anthropic_an_event_of_a_new_type_is_skipped():
    body = anthropic_events("hello")
    body.insert(2, 'event: brand_new_event\ndata: ["anything"]\n\n')
    sent = Sent(*body)
    assert await collect(anthropic_stream(anthropic_for(MockServer(sent)))) == [
        "hello",
        Usage(12, 5),
    ]


async def test_errors_of_shape_never_carry_a_key():
    body = {"choices": f"Incorrect API key provided: {SECRET}"}
    with pytest.raises(ProviderError) as info:
        await openai_call(openai_for(MockServer(httpx2.Response(200, json=body))))
    assert "SECRET123456" not in str(info.value) and "[REDACTED]" in str(info.value)

"""Streaming from the real model: SmolLM2-135M-Instruct on llama.cpp in-process (local_client),
and behind a real OpenAI-compatible llama_cpp.server read by openai_client.

Marked ``local``: a developer without the model skips them (``-m "not local"``, or they skip
themselves); under CI (``CI`` set) a missing model or llama-cpp-python is a failure, not a skip.
The ``model_path`` and ``llama_server`` fixtures are in conftest.py.
"""

from __future__ import annotations

import threading
import time
from contextlib import aclosing

import anyio
import pytest

from moa import Usage

pytestmark = pytest.mark.local

QUESTION = [
    {"role": "user", "content": "What is the capital of France? Answer in one short sentence."}
]
STORY = [{"role": "user", "content": "Write a long story about a dragon."}]


def _split(items):
    *chunks, usage = items
    assert isinstance(usage, Usage)
    assert all(isinstance(c, str) and c for c in chunks)
    return chunks, usage


async def _timed_story(client):
    """Every item of a 64-token streamed story, with the seconds to the first item and to the
    end."""
    start = time.monotonic()
    first = None
    items = []
    async with aclosing(
        client.stream(model="smollm2", messages=STORY, temp=0.0, max_tokens=64)
    ) as stream:
        async for item in stream:
            if first is None:
                first = time.monotonic() - start
            items.append(item)
    return items, first, time.monotonic() - start


def _stream_threads():
    return [t for t in threading.enumerate() if t.name.startswith("moa-local-stream-")]


@pytest.fixture(scope="module")
def client(model_path):
    from moa.clients import local_client

    client = local_client(model_path, n_ctx=2048)
    # Load the model now, so that no timing below counts the load.
    anyio.run(lambda: client(model="smollm2", messages=QUESTION, temp=0.0, max_tokens=1))
    return client


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_local_stream_arrives_a_token_at_a_time_with_real_counts(client, backend):
    items, first, total = anyio.run(_timed_story, client, backend=backend)
    chunks, usage = _split(items)
    print(
        f"\n[{backend}] time to first chunk {first:.3f} s of {total:.3f} s "
        f"({len(chunks)} chunks, {usage})"
    )
    assert len(chunks) > 10 and "".join(chunks).strip()
    assert first < 0.5 * total
    # A 64-token limit that the story reaches: every sampled token counts.
    assert usage.output_tokens == 64 and usage.input_tokens > 5


def test_local_stream_joins_to_what_call_returns(client):
    async def main():
        # A first run evaluates the prompt from scratch, later ones reuse its cached prefix, and
        # llama.cpp's numbers differ slightly between the two: warm up so both compare alike.
        await client(model="smollm2", messages=QUESTION, temp=0.0, max_tokens=48)
        called = await client(model="smollm2", messages=QUESTION, temp=0.0, max_tokens=48)
        streamed = [
            item
            async for item in client.stream(
                model="smollm2", messages=QUESTION, temp=0.0, max_tokens=48
            )
        ]
        return called, streamed

    (text, tin, tout), items = anyio.run(main)
    chunks, usage = _split(items)
    assert "".join(chunks) == text and text.strip()
    # Ends on the end-of-sequence token, which neither count includes.
    assert usage == Usage(tin, tout) and tout < 48


@pytest.mark.parametrize(
    "leave, backend",
    [("break", "asyncio"), ("break", "trio"), ("cancel", "asyncio"), ("cancel", "trio")],
)
def test_leaving_a_local_stream_early_frees_the_model_at_once(client, leave, backend):
    async def main():
        got, arrived = [], []
        with anyio.CancelScope() as scope:
            async with aclosing(
                client.stream(model="smollm2", messages=STORY, temp=0.7, max_tokens=1500)
            ) as stream:
                async for item in stream:
                    got.append(item)
                    arrived.append(time.monotonic())
                    if len(got) == 4:
                        if leave == "break":
                            break
                        scope.cancel()  # lands in the stream's next wait for a chunk
        left = time.monotonic()
        for producer in _stream_threads():
            await anyio.to_thread.run_sync(producer.join, 120)
        stopped = time.monotonic() - left
        start = time.monotonic()
        text, _, _ = await client(model="smollm2", messages=QUESTION, temp=0.0, max_tokens=8)
        return got, (arrived[3] - arrived[1]) / 2, stopped, text, time.monotonic() - start

    got, per_token, stopped, text, after = anyio.run(main, backend=backend)
    print(
        f"\n[{leave}, {backend}] {per_token:.3f} s a token; the generation stopped "
        f"{stopped:.3f} s after the consumer left; the next call took {after:.3f} s"
    )
    assert len(got) == 4 and all(isinstance(c, str) for c in got)
    # The generation ends at its next token, not 1500 tokens later: measured in the model's
    # own pace, since a loaded machine slows everything alike.
    assert stopped < max(1.0, 10 * per_token)
    assert not _stream_threads() and text.strip()


def test_openai_client_streams_from_a_real_llama_cpp_server(llama_server):
    from moa.clients import openai_client

    client = openai_client(base_url=llama_server)

    async def main():
        try:
            # The server loads the model on its first request: not part of the timing.
            await client(model="smollm2", messages=QUESTION, temp=0.0, max_tokens=1)
            return await _timed_story(client)
        finally:
            await client.aclose()

    items, first, total = anyio.run(main)
    chunks, usage = _split(items)
    print(
        f"\n[llama_cpp.server] time to first chunk {first:.3f} s of {total:.3f} s "
        f"({len(chunks)} chunks, {usage})"
    )
    assert len(chunks) > 10 and "".join(chunks).strip()
    assert first < 0.5 * total
    # llama_cpp.server ignores stream_options: usage may be unknown, never made up.
    for count in (usage.input_tokens, usage.output_tokens):
        assert count is None or count > 0

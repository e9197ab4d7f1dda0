"""A conversation wherever a run takes a prompt: every call reads the earlier turns (the
conversation's system message first in its own), the last user turn is the question, history
and the cache carry it, and a malformed conversation is refused naming the message."""

from __future__ import annotations

import pytest

import moa
from moa import Agent, Aggregate, History, Majority, Propose, Shuffle

pytestmark = pytest.mark.anyio

CONVERSATION = [
    {"role": "system", "content": "Answer in French."},
    {"role": "user", "content": "What is the capital of Italy?"},
    {"role": "assistant", "content": "Rome."},
    {"role": "user", "content": "And of France?"},
]


def recording():
    seen: list[list[tuple[str, str]]] = []

    async def client(*, model, messages, temp, max_tokens):
        seen.append([(m["role"], m["content"]) for m in messages])
        return f"{model}: Paris", 3, 2

    client.seen = seen
    return client


async def test_proposers_read_the_conversation_and_answer_its_last_turn():
    client = recording()
    result, history = await moa.run(
        Propose(["a", Agent("b", system="Be brief.")]), CONVERSATION, client
    )
    plain, persona = client.seen
    assert plain == [
        ("system", "Answer in French."),
        ("user", "What is the capital of Italy?"),
        ("assistant", "Rome."),
        ("user", "And of France?"),
    ]
    # the conversation's system message first, then the agent's persona
    assert persona[0] == ("system", "Answer in French.\n\nBe brief.")
    assert persona[1:] == plain[1:]
    assert history.prompt == "And of France?"
    assert [dict(m) for m in history.conversation] == CONVERSATION[:-1]
    assert result == "a: Paris"


async def test_an_aggregator_reads_the_conversation_then_the_candidates_to_its_last_turn():
    client = recording()
    await moa.run(Propose(["a", "b"]) | Shuffle() | Aggregate("c"), CONVERSATION, client, seed=1)
    aggregator = client.seen[-1]
    assert aggregator[0][0] == "system"
    assert aggregator[0][1].startswith("Answer in French.\n\n")  # then the step's instruction
    assert aggregator[1:3] == [("user", "What is the capital of Italy?"), ("assistant", "Rome.")]
    last = aggregator[3][1]
    assert aggregator[3][0] == "user" and "a: Paris" in last and last.endswith("And of France?")


async def test_a_conversation_without_a_system_message_adds_none():
    client = recording()
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    await moa.run(Propose(["a"]), [*turns, {"role": "user", "content": "Bye"}], client)
    assert client.seen[0] == [("user", "Hi"), ("assistant", "Hello"), ("user", "Bye")]


async def test_a_one_message_conversation_is_the_one_turn_prompt():
    one, two = recording(), recording()
    a = await moa.run(Propose(["a"]), "Hi", one, seed=3)
    b = await moa.run(Propose(["a"]), [{"role": "user", "content": "Hi"}], two, seed=3)
    assert one.seen == two.seen and a == b


async def test_history_keeps_the_conversation_and_the_cache_keys_on_it(tmp_path):
    client = recording()
    cache = moa.Cache(tmp_path / "c.sqlite")
    _, history = await moa.run(Propose(["a"]), CONVERSATION, client, cache=cache)
    assert History.from_dict(history.to_dict()) == history
    other = [
        CONVERSATION[0],
        CONVERSATION[1],
        {"role": "assistant", "content": "Milan."},
        CONVERSATION[3],
    ]
    await moa.run(Propose(["a"]), other, client, cache=cache)  # another earlier turn: asked
    await moa.run(Propose(["a"]), CONVERSATION, client, cache=cache)  # the same: from the cache
    assert len(client.seen) == 2
    cache.close()


async def test_run_many_and_run_stream_take_conversations():
    client = recording()
    results = await moa.run_many(Propose(["a"]) | Majority(), [CONVERSATION, "Hi"], client)
    assert [r.prompt for r in results] == ["And of France?", "Hi"]
    assert len(results[0].history.conversation) == 3 and results[1].history.conversation == ()
    async with moa.run_stream(Propose(["a"]), CONVERSATION, client) as events:
        finished = [e async for e in events if isinstance(e, moa.RunFinished)]
    assert finished[0].history.conversation == results[0].history.conversation
    with pytest.raises(TypeError, match=r"did you mean \[conversation\]"):
        await moa.run_many(Propose(["a"]), CONVERSATION, client)


@pytest.mark.parametrize(
    ("prompt", "error", "message"),
    [
        ([], ValueError, "at least one message"),
        ([{"role": "assistant", "content": "x"}], ValueError, "must be the user's"),
        (
            [
                {"role": "user", "content": "a"},
                {"role": "system", "content": "s"},
                {"role": "user", "content": "b"},
            ],
            ValueError,
            r"prompt\[1\]\): a system message comes first",
        ),
        ([{"role": "tool", "content": "x"}], ValueError, "role must be one of"),
        ([{"role": "user", "content": 3}], TypeError, "content must be a str"),
        ([{"role": "user", "content": "  "}], ValueError, "non-empty"),
        ([{"role": "user", "content": "x", "name": "n"}], ValueError, "role and content only"),
        (["hi"], TypeError, "a message is a mapping"),
        ({"role": "user", "content": "x"}, TypeError, "a prompt is a str or a conversation"),
        (b"hi", TypeError, "a prompt is a str or a conversation"),
    ],
)
async def test_a_malformed_conversation_is_refused_naming_the_message(prompt, error, message):
    client = recording()
    with pytest.raises(error, match=message):
        await moa.run(Propose(["a"]), prompt, client)
    assert client.seen == []


def test_run_sync_takes_a_conversation_as_run_does():
    client = recording()
    result, history = moa.run_sync(Propose(["a"]), CONVERSATION, client)
    assert result == "a: Paris" and len(history.conversation) == 3

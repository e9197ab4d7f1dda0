"""run_stream: events, the final answer's chunks as they arrive, retries only before the
first chunk, and how it ends."""

from __future__ import annotations

from time import monotonic

import anyio
import pytest
from conftest import FAST

import moa
from moa import (
    Aggregate,
    AggregateSeq,
    Cache,
    CallFinished,
    Propose,
    Rank,
    RunFinished,
    StepFailedError,
    StepStarted,
    Take,
    TextChunk,
    run,
    run_stream,
)
from moa.testing import ScriptedClient

pytestmark = pytest.mark.anyio

PIPE = Propose(["a", "b"]) | Aggregate("j")


def long_reply(model, messages):
    return f"{model} " + " ".join(f"w{i}" for i in range(10))


async def collect(pipe, client, **options):
    events, stamps = [], []
    async with run_stream(pipe, "q", client, **options) as stream:
        async for event in stream:
            events.append(event)
            stamps.append(monotonic())
    return events, stamps


def chunks(events):
    return [e.text for e in events if isinstance(e, TextChunk)]


async def test_events_end_with_the_result_and_chunks_join_to_it():
    client = ScriptedClient(long_reply)
    events, _ = await collect(PIPE, client, seed=3)
    expected, history = await run(PIPE, "q", ScriptedClient(long_reply), seed=3)
    assert isinstance(events[-1], RunFinished)
    assert events[-1].result == expected and events[-1].history == history
    assert "".join(chunks(events)) == expected and len(chunks(events)) == 11
    assert all(e.path == (1,) and e.index == 0 for e in events if isinstance(e, TextChunk))
    kinds = [type(e).__name__ for e in events]
    assert kinds[:1] == ["StepStarted"] and kinds.count("StepFinished") == 2
    # the aggregator's chunks come after its step started and before its call finished
    agg_start = next(
        i for i, e in enumerate(events) if isinstance(e, StepStarted) and e.path == (1,)
    )
    agg_done = next(
        i for i, e in enumerate(events) if isinstance(e, CallFinished) and e.path == (1,)
    )
    first = kinds.index("TextChunk")
    assert agg_start < first < agg_done
    assert client.streams == 1  # only the final answer is streamed


async def test_chunks_arrive_before_the_pipeline_ends():
    client = ScriptedClient(long_reply, chunk_delay=0.05)
    events, stamps = await collect(PIPE, client, seed=1)
    first = stamps[next(i for i, e in enumerate(events) if isinstance(e, TextChunk))]
    end = stamps[-1]
    assert end - first >= 0.4  # ten more chunks, 50 ms apart, were still to come


async def test_a_failure_before_the_first_chunk_is_retried():
    client = ScriptedClient(long_reply, transient={"j": 1})
    events, _ = await collect(PIPE, client, seed=1, retry=FAST)
    assert "".join(chunks(events)) == events[-1].result
    assert events[-1].history.calls[-1].attempts == 2
    assert any(isinstance(e, moa.CallRetrying) for e in events)


async def test_a_failure_after_the_first_chunk_is_reported_never_repeated():
    client = ScriptedClient(long_reply, break_stream={"j": 4})
    events = []
    with pytest.raises(StepFailedError) as info:
        async with run_stream(PIPE, "q", client, seed=1, retry=FAST) as stream:
            async for event in stream:
                events.append(event)
    assert chunks(events) == ["j ", "w0 ", "w1 ", "w2 "]  # delivered once, not again
    judge = [c for c in client.calls if c["model"] == "j"]
    assert len(judge) == 1  # not retried
    failed = [e.record for e in events if isinstance(e, CallFinished) and e.path == (1,)]
    assert failed[0].error.startswith(
        "StreamInterruptedError: j: the reply stream broke after 4 chunk(s)"
    )
    assert info.value.history.steps[-1].calls[0].error == failed[0].error
    assert not any(isinstance(e, RunFinished) for e in events)


async def test_a_client_without_stream_gives_its_reply_as_one_chunk():
    async def plain(*, model, messages, temp, max_tokens):
        return f"{model} said it all", 3, 4

    events, _ = await collect(PIPE, plain, seed=1)
    assert chunks(events) == ["j said it all"] and events[-1].result == "j said it all"


async def test_a_cached_final_answer_is_one_chunk(tmp_path):
    with Cache(tmp_path / "c.sqlite") as cache:
        await run(PIPE, "q", ScriptedClient(long_reply), seed=1, cache=cache)
        client = ScriptedClient(long_reply)
        events, _ = await collect(PIPE, client, seed=1, cache=cache)
    assert chunks(events) == [events[-1].result] and client.calls == []


@pytest.mark.parametrize(
    "pipe",
    [PIPE | Take(1), Propose(["a", "b"]) | Rank("j", n=1), Propose(["a", "b"])],
    ids=["transform last", "judge verdict", "proposals"],
)
async def test_nothing_streams_unless_the_last_step_writes_the_answer(pipe):
    client = ScriptedClient(lambda m, _: "1" if m == "j" else long_reply(m, _))
    events, _ = await collect(pipe, client, seed=1)
    assert chunks(events) == [] and client.streams == 0
    assert isinstance(events[-1], RunFinished)


async def test_only_the_last_round_of_self_moa_seq_streams():
    rounds = []

    def reply(model, messages):
        if model == "agg":
            rounds.append(1)
            return f"synthesis {len(rounds)}"
        return f"{model} sample"

    pipe = Propose([f"p{i}" for i in range(5)]) | AggregateSeq("agg", window=3)
    events, _ = await collect(pipe, ScriptedClient(reply), seed=1)
    assert "".join(chunks(events)) == "synthesis 2" == events[-1].result
    assert {e.index for e in events if isinstance(e, TextChunk)} == {1}


class AfterB(ScriptedClient):
    """A scripted client whose model ``a`` answers only once ``b``'s call is in flight."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.b_sent = anyio.Event()

    async def __call__(self, *, model, **request):
        if model == "a":
            await self.b_sent.wait()
        else:
            self.b_sent.set()  # b is counted in flight before it next yields to a
        return await super().__call__(model=model, **request)


async def test_leaving_early_cancels_the_run():
    # Leave when the quick proposer has answered and the slow one is still in flight.
    client = AfterB(long_reply, delay=lambda m, _: 10 if m == "b" else 0)
    async with run_stream(PIPE, "q", client, seed=1) as stream:
        async for event in stream:
            if isinstance(event, CallFinished):
                assert client.in_flight == 1
                break
    # b was cancelled, not waited for: only a answered, and the judge was never asked
    assert client.in_flight == 0 and client.finished == 1
    assert [c["model"] for c in client.calls] == ["b", "a"]


async def test_a_stream_of_the_wrong_shape_is_a_client_output_error_and_is_closed():
    class Odd(ScriptedClient):
        closed = False

        async def stream(self, **request):
            try:
                yield "fine "
                yield 42
                yield "never read"
            finally:
                Odd.closed = True

    with pytest.raises(moa.ClientOutputError, match="a stream yields str chunks"):
        async with run_stream(Propose(["a"]) | Aggregate("j"), "q", Odd(), seed=1) as stream:
            async for _ in stream:
                pass
    assert Odd.closed  # closed by moa when it stopped reading, not left to the collector


async def test_bad_arguments_are_refused_before_anything_runs():
    with pytest.raises(ValueError, match="prompt must be a non-empty str"):
        async with run_stream(PIPE, "", ScriptedClient()):
            pass
    with pytest.raises(TypeError, match="run_stream\\(pipeline\\) must be a step"):
        async with run_stream(3, "q", ScriptedClient()):
            pass


async def test_an_error_in_the_body_comes_out_as_itself():
    with pytest.raises(KeyError):
        async with run_stream(PIPE, "q", ScriptedClient(), seed=1) as stream:
            async for _ in stream:
                raise KeyError("mine")
    with pytest.raises(KeyError):
        async with moa.as_completed(PIPE, ["q", "r"], ScriptedClient(), seed=1) as results:
            async for _ in results:
                raise KeyError("mine")


class Tracked(ScriptedClient):
    """A streaming client that records whether each stream it opened was closed."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.opened = self.closed = 0
        self.sent = []

    async def stream(self, **request):
        self.opened += 1
        try:
            for word in ("one ", "two ", "three ", "four"):
                self.sent.append(word)
                yield word
                await anyio.sleep(self.chunk_delay)
            yield moa.Usage(1, 4)
        finally:
            self.closed += 1


async def test_leaving_early_closes_the_clients_stream_at_once():
    client = Tracked(chunk_delay=10)  # a stalled stream: only a close ends it
    async with run_stream(PIPE, "q", client, seed=1) as stream:
        async for event in stream:
            if isinstance(event, TextChunk):
                break
    # closed in its stall after the first chunk: not read on, nor waited for until its end
    assert client.sent == ["one "]
    assert client.opened == client.closed == 1


async def test_the_runs_error_keeps_its_own_cause():
    def broken(text):
        try:
            raise KeyError("inner")
        except KeyError as exc:
            raise ValueError("outer") from exc

    with pytest.raises(ValueError) as info:
        async with run_stream(
            Propose(["a"]) | moa.Map(broken), "q", ScriptedClient(), seed=1
        ) as stream:
            async for _ in stream:
                pass
    assert isinstance(info.value.__cause__, KeyError)
    with pytest.raises(ValueError) as info:
        async with moa.as_completed(PIPE, ["q"], ScriptedClient(), seed=1) as results:
            async for _ in results:
                broken("x")
    assert isinstance(info.value.__cause__, KeyError)


async def test_an_empty_pipeline_streams_nothing_and_ends():
    events, _ = await collect(moa.Pipeline(), ScriptedClient())
    assert [type(e) for e in events] == [RunFinished] and events[0].result == ""


async def test_step_started_once_per_round_and_for_a_step_without_calls():
    pipe = (
        Propose([f"p{i}" for i in range(5)]) | AggregateSeq("agg", window=3) | moa.Majority(r"\w+")
    )
    events, _ = await collect(pipe, ScriptedClient(), seed=1)
    started = [(e.path, e.calls, e.round) for e in events if isinstance(e, StepStarted)]
    assert started == [((0,), 5, 1), ((1,), 1, 1), ((1,), 1, 2), ((2,), 0, 1)]

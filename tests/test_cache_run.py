"""The cache through the executor: hits, misses, sample indices, replay, events, concurrency."""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap

import pytest
from conftest import FAST

from moa import (
    Aggregate,
    Cache,
    CacheError,
    CacheMissError,
    CallFinished,
    CallRetrying,
    Propose,
    Shuffle,
    StepFinished,
    StepStarted,
    run,
    run_many,
)
from moa._llm_steps import AGGREGATE_PROMPT
from moa.testing import ScriptedClient

pytestmark = pytest.mark.anyio


def counting_reply():
    """Every call gets a new text: six identical calls are six different samples."""
    n = itertools.count()
    return lambda model, messages: f"{model} sample {next(n)}"


@pytest.fixture
def cache(tmp_path):
    with Cache(tmp_path / "moa.sqlite") as c:
        yield c


async def test_a_rerun_is_served_from_the_cache(cache):
    pipe = Propose(["a", "b", "c"]) | Shuffle() | Aggregate("a")
    first = ScriptedClient(counting_reply())
    result, history = await run(pipe, "q", first, seed=1, cache=cache)
    assert len(first.calls) == 4 and not history.cached_calls
    again = ScriptedClient(counting_reply())
    result2, history2 = await run(pipe, "q", again, seed=1, cache=cache)
    assert again.calls == []
    assert (result2, history2.outputs) == (result, history.outputs)
    assert [c.text for c in history2.calls] == [c.text for c in history.calls]
    assert all(c.cached and c.ok and c.attempts == 0 for c in history2.calls)
    # Stored counts are kept on the record; the run spent nothing, so totals and cost are 0.
    assert [c.input_tokens for c in history2.calls] == [c.input_tokens for c in history.calls]
    assert (history2.input_tokens, history2.output_tokens) == (0, 0)
    assert "3 of 3 answers came from the cache" in history2.steps[0].notes


async def test_identical_calls_stay_different_samples(cache):
    pipe = Propose(["m"] * 6) | Aggregate("m")
    _, first = await run(pipe, "q", ScriptedClient(counting_reply()), seed=1, cache=cache)
    samples = first.steps[0].outputs
    assert len(set(samples)) == 6
    _, again = await run(pipe, "q", ScriptedClient(counting_reply()), seed=1, cache=cache)
    assert again.steps[0].outputs == samples  # each sample from its own entry, in order
    assert len(cache) == 7


async def test_only_the_missing_calls_are_made(cache):
    await run(Propose(["a", "b"]), "q", ScriptedClient(), seed=1, cache=cache)
    client = ScriptedClient()
    _, history = await run(Propose(["a", "b", "c"]), "q", client, seed=1, cache=cache)
    assert [c["model"] for c in client.calls] == ["c"]
    assert [c.cached for c in history.calls] == [True, True, False]


async def test_key_covers_prompt_temperature_and_max_tokens(cache):
    await run(Propose(["a"]), "q", ScriptedClient(), cache=cache)
    for pipe, prompt in (
        (Propose(["a"]), "other q"),
        (Propose(["a"], temp=0.1), "q"),
        (Propose(["a"], max_tokens=7), "q"),
    ):
        client = ScriptedClient()
        await run(pipe, prompt, client, cache=cache)
        assert len(client.calls) == 1, (pipe, prompt)


async def test_failures_are_not_cached(cache):
    client = ScriptedClient(permanent={"b"})
    await run(Propose(["a", "b"]), "q", client, retry=FAST, cache=cache)
    assert len(cache) == 1
    client = ScriptedClient()
    _, history = await run(Propose(["a", "b"]), "q", client, retry=FAST, cache=cache)
    assert [c["model"] for c in client.calls] == ["b"]


async def test_a_cached_quorum_sends_nothing(cache):
    pipe = Propose(["a", "b", "c"], quorum=2)
    await run(
        pipe, "q", ScriptedClient(delay=lambda m, _: {"a": 0, "b": 0, "c": 5}[m]), cache=cache
    )
    assert len(cache) == 2
    client = ScriptedClient()
    _, history = await run(pipe, "q", client, cache=cache)
    assert client.calls == []
    assert [(c.cached, c.cancelled) for c in history.calls] == [
        (True, False),
        (True, False),
        (False, True),
    ]


async def test_replay_serves_hits_and_refuses_misses(tmp_path):
    path = tmp_path / "rec.sqlite"
    pipe = Propose(["a", "b"]) | Aggregate("a")
    with Cache(path) as rec:
        recorded, _ = await run(pipe, "q", ScriptedClient(counting_reply()), seed=3, cache=rec)
    with Cache(path, mode="replay") as replay:
        client = ScriptedClient()
        result, _ = await run(pipe, "q", client, seed=3, cache=replay)
        assert result == recorded and client.calls == []
        with pytest.raises(CacheMissError, match=r"no answer for call 0 of Propose.*model 'a'"):
            await run(pipe, "another question", client, seed=3, cache=replay)
        assert client.calls == []


async def test_record_mode_always_calls_and_overwrites(tmp_path):
    path = tmp_path / "rec.sqlite"
    with Cache(path) as c:
        await run(Propose(["a"]), "q", ScriptedClient(lambda m, _: "old"), cache=c)
    with Cache(path, mode="record") as c:
        client = ScriptedClient(lambda m, _: "new")
        result, _ = await run(Propose(["a"]), "q", client, cache=c)
        assert result == "new" and len(client.calls) == 1
    with Cache(path) as c:
        result, history = await run(Propose(["a"]), "q", ScriptedClient(), cache=c)
        assert result == "new" and history.calls[0].cached


async def test_hits_and_misses_under_concurrency(cache):
    prompts = [f"question {i % 10}" for i in range(40)]  # each question four times
    pipe = Propose(["a", "b", "b"]) | Aggregate("a")
    client = ScriptedClient(counting_reply(), delay=0.001)  # every call a different answer
    first = await run_many(pipe, prompts, client, seed=5, max_concurrency=8, cache=cache)
    assert all(r.ok for r in first)
    # Which runs overlap is the scheduler's choice, and concurrent runs of one question may
    # both miss, both call and both store (the last write wins). What holds for any overlap:
    # every call is answered once, by the cache or by the client...
    answered = [c for r in first for c in r.history.calls]
    assert len(answered) == 40 * 4
    assert len(client.calls) == sum(not c.cached for c in answered)
    # ...never more calls than without a cache, never fewer than the distinct requests...
    assert 10 * 4 <= len(client.calls) <= 40 * 4
    # ...and the file holds one entry per key: the 10 x 3 proposals (a question, a model and
    # a sample index, whoever wrote last) and one Aggregate per set of proposals it read.
    read = {(r.prompt, r.history.steps[0].outputs) for r in first}
    assert len(cache) == 10 * 3 + len(read)

    # A second batch finds every proposal stored: no Propose call is made, and the four runs
    # of a question read the same proposals. Their Aggregate may still miss where the stored
    # proposals mix the writes of two runs that overlapped in the first batch.
    second_client = ScriptedClient(counting_reply())
    second = await run_many(pipe, prompts, second_client, seed=5, max_concurrency=8, cache=cache)
    assert all(r.ok for r in second)
    assert all(c.cached for r in second for c in r.history.steps[0].calls)
    assert all(
        c["model"] == "a" and c["messages"][0]["content"] == AGGREGATE_PROMPT
        for c in second_client.calls
    )
    for i in range(10):
        assert len({r.history.steps[0].outputs for r in second[i::10]}) == 1

    # Now every call of the batch is stored: a third batch calls nothing, the runs of a
    # question agree, and a fourth reads exactly what the third did.
    third_client = ScriptedClient(counting_reply())
    third = await run_many(pipe, prompts, third_client, seed=5, max_concurrency=8, cache=cache)
    assert third_client.calls == [] and all(c.cached for r in third for c in r.history.calls)
    for i in range(10):
        assert len({(r.history.outputs, r.history.steps[0].outputs) for r in third[i::10]}) == 1
    fourth = await run_many(pipe, prompts, ScriptedClient(), seed=5, max_concurrency=8, cache=cache)
    assert [r.history for r in fourth] == [r.history for r in third]


def test_two_processes_share_one_cache_file(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        import moa
        from moa.testing import ScriptedClient
        pipe = moa.Propose(["a", "b"]) | moa.Aggregate("a")
        prompts = [f"q{{i}}" for i in range(60)]
        client = ScriptedClient()
        with moa.Cache({str(tmp_path / "shared.sqlite")!r}) as cache:
            results = moa.run_sync(moa.Propose(["a", "b"]), "warm", client, cache=cache)
            out = __import__("anyio").run(lambda: moa.run_many(pipe, prompts, client,
                                                                seed=1, cache=cache))
        assert all(r.ok for r in out), [r.error for r in out if not r.ok]
        print(len(client.calls))
    """)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    with Cache(tmp_path / "shared.sqlite") as cache:
        assert len(cache) == 2 + 60 * 3


async def test_a_broken_cache_is_raised_not_recorded_as_a_call(tmp_path):
    class Broken(Cache):
        def store(self, *args, **kwargs):
            raise CacheError("disk is gone")

    with Broken(tmp_path / "c.sqlite") as cache:
        with pytest.raises(CacheError, match="disk is gone"):
            await run(Propose(["a", "b"]), "q", ScriptedClient(), cache=cache)


async def test_bad_cache_argument_is_refused():
    with pytest.raises(TypeError, match=r"cache must be a moa.Cache"):
        await run(Propose(["a"]), "q", ScriptedClient(), cache="file.sqlite")
    with pytest.raises(TypeError, match=r"on_event must be a callable"):
        await run(Propose(["a"]), "q", ScriptedClient(), on_event=3)


async def test_events_report_steps_calls_and_retries(cache):
    events = []
    pipe = Propose(["a", "b"]) | Shuffle() | Aggregate("a")
    client = ScriptedClient(transient={"b": 1})
    _, history = await run(pipe, "q", client, seed=2, retry=FAST, on_event=events.append)
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "StepStarted" and events[0] == StepStarted((0,), "Propose(['a', 'b'])", 2)
    retries = [e for e in events if isinstance(e, CallRetrying)]
    assert [(e.path, e.index, e.model, e.attempt) for e in retries] == [((0,), 1, "b", 1)]
    assert "Transient" in retries[0].error
    finished = [e for e in events if isinstance(e, CallFinished)]
    assert sorted((e.path, e.index) for e in finished) == [((0,), 0), ((0,), 1), ((2,), 0)]
    assert [e.record for e in sorted(finished, key=lambda e: (e.path, e.index))] == list(
        history.calls
    )
    steps = [e.record for e in events if isinstance(e, StepFinished)]
    assert steps == list(history.steps)
    # Each step's events come between its start and its finish.
    assert kinds.index("StepFinished") > max(
        i for i, e in enumerate(events) if isinstance(e, CallFinished) and e.path == (0,)
    )


async def test_cached_calls_are_reported_as_finished(cache):
    await run(Propose(["a", "b"]), "q", ScriptedClient(), cache=cache)
    events = []
    await run(Propose(["a", "b"]), "q", ScriptedClient(), cache=cache, on_event=events.append)
    assert [e.record.cached for e in events if isinstance(e, CallFinished)] == [True, True]


async def test_on_event_sees_a_failing_step(cache):
    events = []
    with pytest.raises(Exception):
        await run(
            Propose(["a"]) | Aggregate("x"),
            "q",
            ScriptedClient(permanent={"x"}),
            retry=FAST,
            on_event=events.append,
        )
    last = events[-1]
    assert isinstance(last, StepFinished) and last.record.step == "Aggregate('x')"
    assert last.record.calls[0].error is not None


async def test_a_saved_history_loads_back_equal(cache):
    from moa import History

    await run(Propose(["a"]), "q", ScriptedClient(), cache=cache)
    _, history = await run(
        Propose(["a", "b", "c"], quorum=2) | Aggregate("x"),
        "q",
        ScriptedClient(transient={"b": 1}),
        retry=FAST,
        cache=cache,
        hedge_after=0.5,
        seed=4,
    )
    loaded = History.from_dict(history.to_dict())
    assert loaded == history and loaded.to_dict() == history.to_dict()
    assert loaded.cached_calls == history.cached_calls != ()


@pytest.mark.parametrize(
    "pipe",
    [
        (Propose(["m"]) & Propose(["m"])) | Aggregate("m"),
        Propose(["m", "m"]) | Propose(["m", "m"]),
    ],
    ids=["parallel branches", "repeated step"],
)
async def test_identical_requests_in_two_places_are_different_samples(cache, pipe):
    """The sample index includes the step's path: a request repeated by another step or
    branch is its own sample, so a cached run is the run that was recorded."""
    first, recorded = await run(pipe, "q", ScriptedClient(counting_reply()), seed=1, cache=cache)
    # A fresh run with a cache computes what it would without one: every call its own sample.
    texts = [c.text for c in recorded.calls if "sample" in c.text and c.model == "m"]
    assert len(texts) == len(set(texts)) == len(recorded.calls)
    assert len(cache) == len(recorded.calls)
    client = ScriptedClient()
    again, replayed = await run(pipe, "q", client, seed=1, cache=cache)
    assert client.calls == [] and again == first
    assert [s.outputs for s in replayed.steps] == [s.outputs for s in recorded.steps]


async def test_a_namespace_keeps_clients_apart(tmp_path):
    with Cache(tmp_path / "c.sqlite", namespace="provider=local") as local:
        await run(Propose(["gpt-4o"]), "q", ScriptedClient(lambda m, _: "small model"), cache=local)
    with Cache(tmp_path / "c.sqlite", namespace="provider=openai") as hosted:
        client = ScriptedClient(lambda m, _: "hosted model")
        result, _ = await run(Propose(["gpt-4o"]), "q", client, cache=hosted)
    assert result == "hosted model" and len(client.calls) == 1
    assert repr(hosted).endswith("namespace='provider=openai')")


async def test_a_cache_error_keeps_the_history_and_the_answers(tmp_path):
    class Broken(Cache):
        def store(self, *args, **kwargs):
            raise CacheError("disk is gone")

    with Broken(tmp_path / "c.sqlite") as cache:
        with pytest.raises(CacheError) as info:
            await run(
                Propose(["a"]) | Propose(["b", "c"]),
                "q",
                ScriptedClient(lambda m, _: f"{m}'s paid answer"),
                cache=cache,
            )
    steps = info.value.history.steps
    assert [s.step for s in steps] == ["Propose(['a'])"]  # the first store already failed
    assert [c.text for c in steps[0].calls] == ["a's paid answer"]


async def test_a_replay_miss_keeps_the_history(tmp_path):
    with Cache(tmp_path / "c.sqlite") as rec:
        await run(Propose(["a"]), "q", ScriptedClient(), cache=rec)
    with Cache(tmp_path / "c.sqlite", mode="replay") as replay:
        with pytest.raises(CacheMissError) as info:
            await run(Propose(["a"]) | Aggregate("j"), "q", ScriptedClient(), cache=replay)
    assert [s.step for s in info.value.history.steps] == ["Propose(['a'])", "Aggregate('j')"]


async def test_quorum_stopped_and_unsent_calls_are_reported_and_noted(cache):
    events = []
    slow = ScriptedClient(delay=lambda m, _: {"a": 0, "b": 0, "slow": 5}[m])
    _, history = await run(
        Propose(["a", "b", "slow"], quorum=2), "q", slow, cache=cache, on_event=events.append
    )
    finished = [e.index for e in events if isinstance(e, CallFinished)]
    assert sorted(finished) == [0, 1, 2]
    assert "quorum of 2 reached: 1 call(s) still running were cancelled" in history.steps[0].notes
    events.clear()
    _, history = await run(
        Propose(["a", "b", "slow"], quorum=2),
        "q",
        ScriptedClient(),
        cache=cache,
        on_event=events.append,
    )
    assert sorted(e.index for e in events if isinstance(e, CallFinished)) == [0, 1, 2]
    assert "quorum of 2 met from the cache: 1 call(s) not sent" in history.steps[0].notes
    assert history.calls[2].attempts == 0 and history.calls[2].cancelled

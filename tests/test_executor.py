"""The executor: concurrency, limits, timeouts, retries, failures, cancellation, both backends."""

import gc
import random

import anyio
import pytest
from conftest import FAST, on_a_virtual_clock
from scripted import ScriptedClient

import moa
from moa import (
    Aggregate,
    ClientOutputError,
    EmptyInputError,
    Filter,
    Propose,
    Rank,
    Retry,
    StepFailedError,
    Synthesize,
    Take,
    Vote,
    run,
)

pytestmark = pytest.mark.anyio


async def test_calls_of_a_step_run_concurrently():
    # Each call waits, in flight, until all six are: the run can end only if the six run at
    # once. Run one after another, the first would wait forever; fail_after makes that a
    # failure, and a correct run is nowhere near it (nothing in it sleeps).
    sent = []
    all_in_flight = anyio.Event()

    async def client(*, model, messages, temp, max_tokens):
        sent.append(model)
        if len(sent) == 6:
            all_in_flight.set()
        await all_in_flight.wait()
        return "x", 1, 1

    with anyio.fail_after(10):
        _, history = await run(Propose(["a"] * 6), "Q", client)
    assert len(sent) == 6 and all(c.ok for c in history.calls)


async def test_max_concurrency_caps_calls_in_flight():
    client = ScriptedClient(delay=0.01)
    await run(Propose(["a"] * 8) | Synthesize(["b"] * 8), "Q", client, max_concurrency=3)
    assert client.max_in_flight == 3
    assert len(client.calls) == 16


async def test_transient_failures_are_retried():
    client = ScriptedClient(transient={"a": 2})
    result, history = await run(Propose(["a", "b"]), "Q", client, retry=FAST)
    call = history[0].calls[0]
    assert call.ok and call.attempts == 3
    assert history[0].calls[1].attempts == 1
    assert len(client.calls) == 4


async def test_retries_wait_with_backoff():
    client = ScriptedClient(transient={"a": 2})
    start = anyio.current_time()
    await run(Propose(["a"]), "Q", client, retry=Retry(attempts=3, initial=0.05, jitter=0))
    assert anyio.current_time() - start >= 0.05 + 0.1


async def test_retry_after_is_the_least_wait():
    attempts = []

    async def client(*, model, messages, temp, max_tokens):
        attempts.append(anyio.current_time())
        if len(attempts) == 1:
            raise moa.ProviderError(
                "rate limited", model=model, retryable=True, retry_after=0.2, status=429
            )
        return "ok", 1, 1

    await run(Propose(["a"]), "Q", client, retry=FAST)
    assert attempts[1] - attempts[0] >= 0.2


async def test_permanent_failure_is_not_retried_and_is_recorded():
    client = ScriptedClient(permanent={"bad"})
    result, history = await run(Propose(["good", "bad", "good"]), "Q", client, retry=FAST)
    failed = history[0].calls[1]
    assert not failed.ok and failed.attempts == 1 and failed.text is None
    assert failed.error == "Permanent: bad: scripted permanent failure"
    assert history.outputs == (history[0].calls[0].text, history[0].calls[2].text)
    assert "1 of 3 calls failed" in history[0].notes[0]
    assert history.failed_calls == (failed,)


async def test_exhausted_retries_are_recorded_with_attempt_count():
    client = ScriptedClient(transient={"flaky": 10})
    _, history = await run(Propose(["flaky", "ok"]), "Q", client, retry=FAST)
    assert history[0].calls[0].attempts == 3 and "Transient" in history[0].calls[0].error


async def test_step_fails_below_min_success_with_partial_history():
    client = ScriptedClient(permanent={"b", "c"})
    with pytest.raises(StepFailedError, match=r"1 of 3 calls succeeded and it needs 2") as info:
        await run(
            Propose(["a"]) | Synthesize(["a", "b", "c"], min_success=2) | Aggregate("a"),
            "Q",
            client,
            retry=FAST,
        )
    history = info.value.history
    assert [r.step for r in history] == [
        "Propose(['a'])",
        "Synthesize(['a', 'b', 'c'], min_success=2)",
    ]
    assert [c.ok for c in history[1].calls] == [True, False, False]
    assert history.outputs == ()


@pytest.mark.parametrize("final", [Aggregate("judge"), Vote("judge"), Rank("judge", n=1)])
async def test_a_failing_judge_raises_never_returns_an_earlier_answer(final):
    client = ScriptedClient(permanent={"judge"})
    with pytest.raises(StepFailedError, match=r"0 of 1 calls succeeded") as info:
        await run(Propose(["a", "b"]) | final, "Q", client, retry=FAST)
    assert info.value.history[-1].calls[0].error.startswith("Permanent")


async def test_everything_failing_raises_not_empty_string():
    client = ScriptedClient(permanent={"a", "b"})
    with pytest.raises(StepFailedError, match="Propose"):
        await run(Propose(["a", "b"]), "Q", client, retry=FAST)


@on_a_virtual_clock  # trio alone: the time the run took is the point, and exact only there
async def test_hung_call_times_out_and_is_retried_then_recorded():
    client = ScriptedClient(hang={"slow"})
    start = anyio.current_time()
    _, history = await run(Propose(["slow", "fast"]), "Q", client, timeout=0.05, retry=FAST)
    # three tries of the hung call, each cut at its 0.05 s, none waited for between (FAST)
    assert anyio.current_time() - start == pytest.approx(3 * 0.05)
    slow = history[0].calls[0]
    assert slow.error == "TimeoutError" and slow.attempts == 3
    assert history.outputs == (history[0].calls[1].text,)


async def test_wrong_shape_from_client_is_a_clear_error_naming_the_model():
    async def client(*, model, messages, temp, max_tokens):
        return "just text"

    with pytest.raises(
        ClientOutputError, match=r"client returned 'just text' for model 'm1'.*tuple of 3"
    ):
        await run(Propose(["m1"]), "Q", client)

    async def bad_tokens(*, model, messages, temp, max_tokens):
        return "text", "12", 3

    with pytest.raises(
        ClientOutputError,
        match=r"input_tokens must be an int >= 0 \(in 64 bits\) or None, got '12'",
    ):
        await run(Propose(["m1", "m2"]), "Q", bad_tokens)


async def test_llm_step_after_an_emptying_transform_names_the_cause():
    with pytest.raises(
        EmptyInputError,
        match=r"Aggregate\('a'\) received no responses: Filter\(.*\) at path \(1,\) left none",
    ) as info:
        await run(Propose(["a"]) | Filter(lambda s: False) | Aggregate("a"), "Q", ScriptedClient())
    assert info.value.history[1].notes == (
        "Filter(test_llm_step_after_an_emptying_transform_names_the_cause.<locals>.<lambda>) left no responses",
    )


async def test_pipeline_without_propose_is_told_to_start_with_one():
    with pytest.raises(EmptyInputError, match="start the pipeline with Propose"):
        await run(Synthesize(["a"]), "Q", ScriptedClient())


async def test_transform_emptying_the_end_returns_empty_result_and_says_where():
    result, history = await run(Propose(["a", "b"]) | Take(0), "Q", ScriptedClient())
    assert result == "" and history.outputs == ()
    assert history[-1].notes == ("Take(0) left no responses",)


async def test_cancelling_run_cancels_every_call_and_leaves_nothing_running():
    client = ScriptedClient(delay=10)
    with anyio.move_on_after(0.1) as scope:
        await run(Propose(["a"] * 5) | Aggregate("a"), "Q", client, max_concurrency=2)
    assert scope.cancelled_caught
    assert client.in_flight == 0 and client.finished == 0
    await anyio.sleep(0.05)
    assert client.finished == 0


async def test_cancelling_a_parallel_run_cancels_all_branches():
    client = ScriptedClient(delay=10)
    with anyio.move_on_after(0.1):
        await run(Propose(["a", "b"]) & Propose(["c"]), "Q", client)
    assert client.in_flight == 0 and client.finished == 0


async def test_a_failing_branch_cancels_its_siblings_and_raises():
    events = []
    slow_sent = anyio.Event()

    async def client(*, model, messages, temp, max_tokens):
        events.append(f"{model} sent")
        try:
            if model == "bad":
                await slow_sent.wait()  # fail only once the sibling's call is in flight
                raise moa.ProviderError("refused", model=model, retryable=False, status=400)
            slow_sent.set()
            await anyio.sleep(10)  # were it waited for, it would answer
            events.append("slow answered")
            return "late", 1, 1
        finally:
            events.append(f"{model} done")

    with pytest.raises(StepFailedError, match="Propose"):
        await run(Propose(["bad"]) & Propose(["slow"]), "Q", client, retry=FAST)
    # the sibling was in flight when the branch failed, was cancelled, and never answered
    assert sorted(events) == ["bad done", "bad sent", "slow done", "slow sent"]


async def test_results_do_not_depend_on_completion_order():
    p = (
        Propose(["a", "b", "c", "d"])
        | moa.Shuffle()
        | moa.Dropout(0.3)
        | Synthesize(["a", "b"])
        | Aggregate("c")
    )
    outcomes = []
    for i in range(5):
        rnd = random.Random(i)
        client = ScriptedClient(delay=lambda m, _: rnd.random() / 100)
        outcomes.append(await run(p, "Q", client, seed=42))
    assert all(o == outcomes[0] for o in outcomes)


async def test_unseeded_runs_record_their_seed_for_replay():
    p = Propose(["a", "b", "c", "d"]) | moa.Shuffle()
    _, h1 = await run(p, "Q", ScriptedClient())
    _, h2 = await run(p, "Q", ScriptedClient(), seed=h1.seed)
    assert h1 == h2


async def test_global_random_is_never_touched():
    state = random.getstate()
    await run(
        Propose(["a", "b", "c"]) | moa.Shuffle() | moa.Sample(2) | moa.Dropout(0.5),
        "Q",
        ScriptedClient(transient={"a": 1}),
        retry=Retry(initial=0.001),
    )
    assert random.getstate() == state


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"prompt": ""}, ValueError, "prompt must be a non-empty str"),
        ({"prompt": "  "}, ValueError, "prompt must be a non-empty str"),
        ({"client": "openai"}, TypeError, "client must be an async callable"),
        ({"seed": "1"}, TypeError, "seed must be an int or None"),
        ({"max_concurrency": 0}, ValueError, "max_concurrency must be an int >= 1"),
        ({"timeout": 0}, ValueError, "timeout must be a finite number of seconds > 0"),
        ({"retry": 3}, TypeError, "retry must be a moa.Retry policy"),
        ({"pipeline": "Propose"}, TypeError, r"run\(pipeline\) must be a step"),
    ],
)
async def test_bad_run_arguments(kwargs, error, message):
    args = {"pipeline": Propose(["a"]), "prompt": "Q", "client": ScriptedClient(), **kwargs}
    with pytest.raises(error, match=message):
        await run(args.pop("pipeline"), args.pop("prompt"), args.pop("client"), **args)


async def test_seed_style_list_pipeline_runs():
    result, history = await run([Propose(["a", "b"]), Aggregate("a")], "Q", ScriptedClient())
    assert result.startswith("a says") and len(history) == 2


def test_run_sync_on_both_backends():
    for backend in ("asyncio", "trio"):
        result, _ = moa.run_sync(Propose(["a"]), "Q", ScriptedClient(), backend=backend, seed=1)
        assert result.startswith("a says")
    gc.collect()


async def test_wrong_shape_raises_even_when_min_success_is_met():
    async def client(*, model, messages, temp, max_tokens):
        return ("ok", 1, 1) if model != "broken" else "text only"

    with pytest.raises(ClientOutputError, match="'broken'"):
        await run(Propose(["a", "broken", "c"]), "Q", client)


async def test_a_timeout_lets_the_clients_shielded_cleanup_finish():
    finished = []

    async def client(*, model, messages, temp, max_tokens):
        with anyio.CancelScope(shield=True):
            await anyio.sleep(0.1)
            finished.append(model)
        await anyio.sleep(10)

    with pytest.raises(StepFailedError):
        await run(Propose(["a", "b"]), "Q", client, timeout=0.02, retry=Retry(attempts=1))
    assert sorted(finished) == ["a", "b"]


async def test_equal_steps_are_recorded_as_written():
    _, h1 = await run(Propose(["a"]) | moa.Dropout(1), "Q", ScriptedClient(), seed=1)
    _, h2 = await run(Propose(["a"]) | moa.Dropout(1.0), "Q", ScriptedClient(), seed=1)
    assert h1[1].step == "Dropout(1)" and h2[1].step == "Dropout(1.0)"


async def test_a_custom_llm_step_returning_non_str_is_an_error_naming_it():
    from dataclasses import dataclass

    @dataclass(frozen=True, slots=True, repr=False)
    class Leaky(moa.LLMStep):
        needs_responses = False

        def requests(self, prompt, responses):
            return [moa.steps.Request("a", moa.steps.messages(("user", prompt)), 0.0, 10)]

        def combine(self, prompt, responses, replies):
            return [None], []

    with pytest.raises(TypeError, match=r"Leaky\(\)\.combine must return a list of str"):
        await run(Leaky(), "Q", ScriptedClient())

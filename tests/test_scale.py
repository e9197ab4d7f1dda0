"""Batches, per-model limits, quorum and hedged calls."""

import random

import anyio
import pytest
from conftest import FAST, on_a_virtual_clock
from scripted import ScriptedClient

import moa
from moa import Aggregate, Limits, ModelLimit, Propose, ProviderError, Retry, run, run_many

pytestmark = pytest.mark.anyio


async def test_run_many_returns_input_order_and_shares_one_cap():
    client = ScriptedClient(delay=lambda m, msgs: random.random() / 200)
    prompts = [f"question {i}" for i in range(60)]
    seen = []
    results = await run_many(
        Propose(["a", "b"]) | Aggregate("a"),
        prompts,
        client,
        max_concurrency=7,
        progress=lambda d, t, r: seen.append((d, t)),
    )
    assert [r.prompt for r in results] == prompts and [r.index for r in results] == list(range(60))
    assert all(r.ok and r.result.startswith("a says") for r in results)
    assert client.max_in_flight == 7
    assert seen == [(i, 60) for i in range(1, 61)]


async def test_run_many_reports_failures_per_prompt_and_goes_on():
    def reply(model, messages):
        if "bad" in messages[-1]["content"]:
            raise ProviderError("refused", model=model, retryable=False, status=400)
        return "fine"

    results = await run_many(
        Propose(["a"]) | Aggregate("a"),
        ["ok 1", "bad 2", "ok 3"],
        ScriptedClient(reply),
        retry=FAST,
    )
    assert [r.ok for r in results] == [True, False, True]
    failed = results[1]
    assert isinstance(failed.error, moa.StepFailedError) and failed.result is None
    assert failed.history is not None and failed.history[0].calls[0].error.startswith(
        "ProviderError"
    )


async def test_run_many_with_a_seed_replays():
    p = Propose(["a", "b", "c", "d"]) | moa.Shuffle() | moa.Take(2)
    first = await run_many(p, ["x", "y", "z"], ScriptedClient(), seed=11)
    again = await run_many(p, ["x", "y", "z"], ScriptedClient(delay=0.001), seed=11)
    assert first == again
    assert len({r.history.seed for r in first}) == 3


async def test_a_2000_prompt_batch_with_30_percent_transient_failures_loses_nothing():
    rng = random.Random(0)
    calls = 0

    async def flaky(*, model, messages, temp, max_tokens):
        nonlocal calls
        calls += 1
        await anyio.sleep(0)
        if rng.random() < 0.3:
            raise ProviderError("overloaded", model=model, retryable=True, status=503)
        return f"{model}: {messages[-1]['content'][-12:]}", 1, 1

    prompts = [f"prompt {i}" for i in range(2000)]
    results = await run_many(
        Propose(["a", "b", "c"]) | Aggregate("a"),
        prompts,
        flaky,
        max_concurrency=256,
        retry=Retry(attempts=25, initial=0, jitter=0),
    )
    assert all(r.ok for r in results)
    assert [r.prompt for r in results] == prompts
    retried = sum(c.attempts > 1 for r in results for c in r.history.calls)
    assert retried > 1000 and calls > 8000


async def test_as_completed_yields_in_completion_order_and_early_exit_cancels():
    client = ScriptedClient(
        lambda m, msgs: msgs[-1]["content"],
        delay=lambda m, msgs: {"slow": 0.2, "mid": 0.05, "fast": 0}[msgs[-1]["content"]],
    )
    async with moa.as_completed(Propose(["a"]), ["slow", "mid", "fast"], client) as results:
        order = [r.result async for r in results]
    assert order == ["fast", "mid", "slow"]

    client = ScriptedClient(delay=lambda m, msgs: 0 if msgs[-1]["content"] == "now" else 10)
    async with moa.as_completed(Propose(["a"]), ["later", "now", "later"], client) as results:
        async for r in results:
            assert r.prompt == "now"
            break
    assert client.in_flight == 0


async def test_per_model_concurrency_limit_leaves_other_models_alone():
    in_flight = {"a": 0, "b": 0}
    peak = {"a": 0, "b": 0}

    async def client(*, model, messages, temp, max_tokens):
        in_flight[model] += 1
        peak[model] = max(peak[model], in_flight[model])
        await anyio.sleep(0.01)
        in_flight[model] -= 1
        return "x", 1, 1

    limits = Limits({"a": ModelLimit(max_concurrency=2)})
    await run_many(Propose(["a", "b"]), [f"q{i}" for i in range(20)], client, limits=limits)
    assert peak == {"a": 2, "b": 20}


@on_a_virtual_clock  # trio alone: when each request was sent is the point, exact only there
async def test_requests_per_minute_are_spread_out():
    sent = []

    async def client(*, model, messages, temp, max_tokens):
        sent.append(anyio.current_time() - start)
        return "x", 1, 1

    # 8 a second, a minute's burst up front. Waits of 1/8 s add up exactly in binary floating
    # point; 0.1 s ones leave the bucket a rounding error short of a whole request, and the
    # wait for that (1e-17 s) is too small to move a clock at 0.6, so on the virtual clock the
    # bucket would retry forever (a real clock moves on by itself).
    limits = Limits(default=ModelLimit(rpm=480))
    start = anyio.current_time()
    await run_many(Propose(["a"]), [f"q{i}" for i in range(486)], client, limits=limits)
    # the burst of 480 goes at once; the 6 past it follow, 1/8 s apart
    assert sent == pytest.approx([0.0] * 480 + [k / 8 for k in range(1, 7)])


async def test_tokens_per_minute_settle_on_reported_usage():
    async def client(*, model, messages, temp, max_tokens):
        return "x", 1000, 1000  # far more than the estimate from the short prompt

    limits = Limits({"a": ModelLimit(tpm=60_000)})  # 1000 tokens a second
    start = anyio.current_time()
    for _ in range(32):
        await run(Propose(["a"]), "q", client, limits=limits)
    # the minute's budget (60k) covers 30 calls of 2000; the next ones wait for the debt
    assert anyio.current_time() - start >= 1.5


async def test_retry_after_pauses_that_model_only():
    times = {"a": [], "b": []}

    async def client(*, model, messages, temp, max_tokens):
        times[model].append(anyio.current_time())
        if model == "a" and len(times["a"]) == 1:
            raise ProviderError("slow down", model="a", retryable=True, retry_after=0.3, status=429)
        return model, 1, 1

    limits = Limits(default=ModelLimit(max_concurrency=100))
    start = anyio.current_time()
    results = await run_many(
        Propose(["a"]) | Propose(["b"]), ["q1"], client, limits=limits, retry=FAST
    )
    assert results[0].ok
    assert times["a"][1] - start >= 0.3
    more = await run_many(Propose(["b"]), ["q2", "q3"], client, limits=limits)
    assert all(r.ok for r in more)


async def test_quorum_cancels_the_stragglers_and_records_them():
    delays = {"a": 0, "b": 0.01, "c": 0.02, "d": 0.03, "e": 10, "f": 10}
    client = ScriptedClient(lambda m, _: m, delay=lambda m, _: delays[m])
    result, history = await run(Propose(list("abcdef"), quorum=4), "Q", client)
    assert client.finished == 4  # e and f were not waited for: they never answered
    assert history.outputs == ("a", "b", "c", "d")
    step = history[0]
    assert [c.cancelled for c in step.calls] == [False] * 4 + [True] * 2
    assert history.cancelled_calls == step.calls[4:] and history.failed_calls == ()
    assert "quorum of 4 reached: 2 call(s)" in step.notes[0]
    assert history.output_tokens == 4 and client.in_flight == 0


@pytest.mark.parametrize(
    "bad, message", [(0, "quorum must be an int >= 1"), (7, "exceeds the 6 agents")]
)
def test_quorum_is_checked_at_construction(bad, message):
    with pytest.raises(ValueError, match=message):
        Propose(list("abcdef"), quorum=bad)
    with pytest.raises(ValueError, match="below min_success"):
        Propose(list("abc"), quorum=1, min_success=2)


async def test_a_hedged_call_wins_with_the_duplicate_and_records_both():
    started, answered = [], []

    async def client(*, model, messages, temp, max_tokens):
        started.append(model)
        me = len(started)
        await anyio.sleep(10 if me == 1 else 0.01)
        answered.append(me)
        return "answer", 5, 7

    result, history = await run(Propose(["a"]), "Q", client, hedge_after=0.05)
    # the duplicate answered and the run took its answer; the first try, stalled, was
    # cancelled, not waited for
    assert len(started) == 2 and answered == [2]
    call = history[0].calls[0]
    assert call.ok and call.text == "answer" and len(call.hedges) == 1
    loser = call.hedges[0]
    assert loser.cancelled and loser.text is None
    assert history.input_tokens == 5 and history.output_tokens == 7


async def test_a_fast_call_is_never_hedged():
    client = ScriptedClient()
    _, history = await run(Propose(["a", "b"]), "Q", client, hedge_after=1)
    assert len(client.calls) == 2 and all(c.hedges == () for c in history.calls)


async def test_hedged_calls_still_retry_when_both_fail():
    client = ScriptedClient(transient={"a": 2}, delay=0.02)
    _, history = await run(Propose(["a"]), "Q", client, hedge_after=0.01, retry=FAST)
    call = history[0].calls[0]
    assert call.ok and call.attempts == 2
    # attempt 1: both racers fail; attempt 2: the first answers, its duplicate is cancelled
    assert [h.error and h.error.split(":")[0] for h in call.hedges] == ["Transient", None]
    assert call.hedges[1].cancelled


async def test_failed_calls_leave_the_token_totals_known():
    client = ScriptedClient(permanent={"bad"})
    _, history = await run(Propose(["a", "bad"]) | Aggregate("a"), "Q", client, retry=FAST)
    assert len(history.failed_calls) == 1
    assert history.input_tokens == sum(c.input_tokens for c in history.calls if c.ok)


async def test_a_pause_holds_calls_already_queued_for_the_model():
    sent = []

    async def client(*, model, messages, temp, max_tokens):
        sent.append(anyio.current_time())
        await anyio.sleep(0.05)
        if len(sent) == 1:
            raise ProviderError(
                "slow down", model=model, retryable=False, retry_after=0.4, status=429
            )
        return "x", 1, 1

    limits = Limits(default=ModelLimit(max_concurrency=1))
    start = anyio.current_time()
    _, history = await run(Propose(["m"] * 4), "Q", client, limits=limits, retry=FAST)
    # Exactly the four calls: the refused one is not retried (not retryable), the other three
    # are sent, so the check on their send times below can never pass on fewer.
    assert len(sent) == 4
    assert sorted(c.ok for c in history.calls) == [False, True, True, True]
    assert all(t - start >= 0.4 for t in sent[1:])


async def test_a_prompt_larger_than_the_minute_budget_is_charged_in_full():
    async def client(*, model, messages, temp, max_tokens):
        return "x", 200_000, 0  # the provider's count: far past the minute's 60k

    limits = Limits(default=ModelLimit(tpm=60_000))  # 1000 a second
    await run(Propose(["m"]), "word " * 400_000, client, limits=limits)  # estimate > 60k too
    with anyio.move_on_after(0.5) as scope:
        await run(Propose(["m"]), "Q", client, limits=limits)
    assert scope.cancelled_caught  # 140k of debt: the next call waits about 140 s


async def test_rpm_below_one_a_minute_is_kept():
    from moa._limits import _Bucket

    bucket = _Bucket(0.5)
    assert await bucket.take(1) == 1
    with anyio.move_on_after(0.2) as scope:
        await bucket.take(1)
    assert scope.cancelled_caught  # the next request waits about 120 s


async def test_hedge_clock_starts_when_the_call_is_sent_not_while_it_queues():
    client = ScriptedClient(delay=0.1)
    _, history = await run(
        Propose(["a", "b", "c"]), "Q", client, max_concurrency=1, hedge_after=0.15
    )
    assert all(c.hedges == () for c in history.calls)
    assert len(client.calls) == 3

"""Each layer of a call, alone against a fake inner call, and ``compose``'s combinations: the
promise docs/architecture.md makes ("each layer is tested alone")."""

from __future__ import annotations

import itertools

import anyio
import pytest

from moa import Cache, CallFinished, CallRetrying, Limits, ModelLimit, Retry, RunOptions
from moa._attempts import (
    Tap,
    client_attempt,
    stream_attempt,
    with_cap,
    with_hedge,
    with_limits,
    with_timeout,
)
from moa._calls import (
    Outcome,
    Site,
    caching,
    compose,
    reporting,
    retried,
    streaming,
    unrepeatable,
)
from moa._client import Reply, Usage
from moa._history import CallRecord
from moa.errors import ClientOutputError, ProviderError, StreamInterruptedError
from moa.steps import Request, messages

REQ = Request("m", messages(("user", "q")), 0.5, 10)
SITE = Site((0,), 0, 0)
FAST = Retry(attempts=3, initial=0, max_wait=0, jitter=0)
pytestmark = pytest.mark.anyio


def reply(text="ok"):
    async def attempt(req, tap):
        return Reply(text, 1, 2)

    return attempt


def failing(*errors):
    """An attempt that raises each of ``errors`` in turn, then answers."""
    left = list(errors)

    async def attempt(req, tap):
        if left:
            raise left.pop(0)
        return Reply("late", 1, 1)

    return attempt


# -- attempts ------------------------------------------------------------------------------------
async def test_the_client_gets_its_own_messages_and_a_seed_only_when_the_request_has_one():
    seen = []

    async def client(*, model, messages, temp, max_tokens, seed=None):
        messages[0]["content"] = "edited by the client"
        seen.append(seed)
        return "hi", 3, 4

    attempt = client_attempt(client)
    assert await attempt(REQ, None) == ("hi", 3, 4)  # as the client gave it: checked later
    assert REQ.messages[0]["content"] == "q"  # history's copy is untouched
    await attempt(REQ.with_seed(7), None)
    assert seen == [None, 7]


async def test_a_client_of_the_wrong_shape_is_a_client_output_error_for_its_step():
    async def client(*, model, messages, temp, max_tokens):
        return "just text"

    out = await retried(client_attempt(client), FAST, print, None)(REQ, SITE)
    assert isinstance(out.fatal, ClientOutputError) and out.record.attempts == 1
    assert "expected a tuple of 3 items" in str(out.fatal)


async def test_a_stream_gives_its_chunks_to_the_tap_and_its_usage_at_the_end():
    class Streaming:
        async def __call__(self, **kw):
            raise AssertionError("the stream is used")

        async def stream(self, *, model, messages, temp, max_tokens):
            yield "a"
            yield "b"
            yield Usage(5, 2)

    got = []
    out = await stream_attempt(Streaming())(REQ, Tap(chunk=got.append))
    assert got == ["a", "b"] and out == Reply("ab", 5, 2)


async def test_the_timeout_layer_ends_a_try_that_never_answers():
    async def never(req, tap):
        await anyio.sleep_forever()

    with pytest.raises(TimeoutError):
        await with_timeout(0.01)(never)(REQ, None)
    assert await with_timeout(10)(reply())(REQ, None) == Reply("ok", 1, 2)


async def test_the_cap_layer_holds_tries_to_its_limit():
    in_flight = most = 0

    async def slow(req, tap):
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await anyio.sleep(0.01)
        in_flight -= 1
        return Reply("ok", 1, 1)

    capped = with_cap(anyio.CapacityLimiter(2))(slow)
    async with anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(capped, REQ, None)
    assert most == 2


async def test_the_limits_layer_holds_each_model_to_its_own_limit():
    in_flight: dict[str, int] = {}
    most: dict[str, int] = {}

    async def slow(req, tap):
        in_flight[req.model] = in_flight.get(req.model, 0) + 1
        most[req.model] = max(most.get(req.model, 0), in_flight[req.model])
        await anyio.sleep(0.01)
        in_flight[req.model] -= 1
        return Reply("ok", 1, 1)

    limited = with_limits(Limits({"m": ModelLimit(max_concurrency=1)}), FAST)(slow)
    other = Request("n", REQ.messages, 0.5, 10)
    async with anyio.create_task_group() as tg:
        for req in (REQ, REQ, REQ, other, other, other):
            tg.start_soon(limited, req, None)
    assert most == {"m": 1, "n": 3}


async def test_the_hedge_layer_races_a_slow_try_and_keeps_the_loser_in_the_tap():
    tries = 0

    async def first_slow(req, tap):
        nonlocal tries
        tries += 1
        if tap is not None and tap.sent is not None:
            tap.sent()
        if tries == 1:
            await anyio.sleep_forever()
        return Reply("fast", 1, 1)

    tap = Tap()
    out = await with_hedge(0.01)(first_slow)(REQ, tap)
    assert out == Reply("fast", 1, 1)
    assert [h.cancelled for h in tap.hedges] == [True]


# -- calls ---------------------------------------------------------------------------------------
async def test_the_retry_layer_tries_again_and_records_the_attempts():
    events = []
    call = retried(
        failing(ProviderError("busy", model="m", retryable=True)), FAST, print, events.append
    )
    out = await call(REQ, SITE)
    assert out.record.text == "late" and out.record.attempts == 2 and out.fatal is None
    assert [type(e) for e in events] == [CallRetrying]


async def test_the_retry_layer_records_a_failure_it_may_not_retry_and_goes_on():
    call = retried(failing(ProviderError("bad key", model="m", retryable=False)), FAST, print, None)
    out = await call(REQ, SITE)
    assert out.record.attempts == 1 and "bad key" in out.record.error and out.fatal is None


async def test_the_retry_layer_hands_a_wrong_client_to_the_step_to_raise():
    wrong = ClientOutputError("m", "x", "expected a tuple of 3 items")
    out = await retried(failing(wrong), FAST, print, None)(REQ, SITE)
    assert out.fatal is wrong and out.record.error.startswith("ClientOutputError")


async def test_the_retry_layer_hands_an_interrupt_to_the_run_instead_of_raising_it():
    stopped = []
    out = await retried(failing(KeyboardInterrupt()), FAST, stopped.append, None)(REQ, SITE)
    assert [type(e) for e in stopped] == [
        KeyboardInterrupt
    ] and out.record.error == "KeyboardInterrupt"


async def test_a_stream_that_breaks_after_a_chunk_is_not_retried():
    async def breaks(req, tap):
        tap.chunk("partial")
        raise ProviderError("reset", model="m", retryable=True)

    def tap_for(req, site):
        tap = Tap()

        def chunk(text):
            tap.chunks += 1

        tap.chunk = chunk
        return tap

    out = await retried(unrepeatable(breaks), FAST, print, None, tap_for)(REQ, SITE)
    assert out.record.attempts == 1 and "StreamInterruptedError" in out.record.error
    with pytest.raises(StreamInterruptedError):
        await unrepeatable(breaks)(REQ, tap_for(REQ, SITE))


async def test_the_stream_router_sends_only_the_final_reply_at_its_path_to_the_stream():
    went = []

    def to(name):
        async def call(req, site):
            went.append((name, req.seed))
            return Outcome(CallRecord.asked(req, text=name))

        return call

    router = streaming(to("stream"), to("other"), (2,), seeded=False)
    final = Request("m", REQ.messages, 0.5, 10, final=True).with_seed(9)
    await router(final, Site((2,), 0))
    await router(final, Site((1,), 0))
    await router(REQ, Site((2,), 0))
    assert went == [("stream", None), ("other", 9), ("other", None)]  # a stream without seed


async def test_the_cache_layer_serves_what_it_holds_and_stores_what_it_gets(tmp_path):
    with Cache(tmp_path / "c.sqlite") as cache:
        call, try_now = caching(retried(reply("fresh"), FAST, print, None), cache)
        assert try_now(REQ, SITE, "step") is None
        assert (await call(REQ, SITE)).record.text == "fresh"
        hit = try_now(REQ, SITE, "step")
        assert hit.record.cached and hit.record.text == "fresh" and hit.record.attempts == 0
        assert try_now(REQ, Site((0,), 0, 1), "step") is None  # another sample, another entry
    with Cache(tmp_path / "c.sqlite", mode="replay") as replay:
        _, now = caching(retried(reply(), FAST, print, None), replay)
        miss = now(REQ, Site((0,), 0, 5), "step")
        assert miss.fatal is not None and "holds no answer" in str(miss.fatal)


async def test_the_events_layer_reports_each_call_as_it_ends():
    events = []
    await reporting(retried(reply(), FAST, print, None), events.append)(REQ, SITE)
    assert [(type(e), e.path, e.index) for e in events] == [(CallFinished, (0,), 0)]


# -- compose -------------------------------------------------------------------------------------
OPTIONS = {  # made for each test: a Limits belongs to one event loop
    "timeout": lambda: 30.0,
    "max_concurrency": lambda: 4,
    "limits": lambda: Limits(default=ModelLimit(max_concurrency=2)),
    "hedge_after": lambda: 30.0,
    "on_event": lambda: lambda event: None,
}


@pytest.mark.parametrize(
    "names", [c for n in range(len(OPTIONS) + 1) for c in itertools.combinations(OPTIONS, n)]
)
async def test_every_combination_of_options_composes_a_stack_that_answers(names, tmp_path):
    async def client(*, model, messages, temp, max_tokens):
        return f"{model} says hi", 2, 3

    with Cache(tmp_path / "c.sqlite") as cache:
        for with_cache in (False, True):
            options = RunOptions(
                **{n: OPTIONS[n]() for n in names}, cache=cache if with_cache else None
            )
            calls = compose(client, options, print)
            assert (calls.try_now is not None) == with_cache == calls.wants_sample
            assert (calls.finished is not None) == ("on_event" in names)
            out = await calls.call(REQ, SITE)
            assert out.record.text == "m says hi" and out.fatal is None
            if "hedge_after" in names:  # a hedge that never fired leaves no racer behind
                assert out.record.hedges == ()


def test_the_record_of_a_first_try_answer_equals_the_record_asked_for_it():
    # CallRecord.answered sets slots past the frozen dataclass's __init__, for speed: it must
    # give the same value, stay frozen, and set every field.
    from dataclasses import FrozenInstanceError, fields

    from moa import Confidence
    from moa._contract import ask, messages

    req = ask("m", messages(("user", "q")), 0.5, 9).with_seed(7)
    sure = Confidence(-1.5, 3)
    fast = CallRecord.answered(req, "x", 1, 2, 0.25, (), sure)
    slow = CallRecord.asked(
        req, text="x", input_tokens=1, output_tokens=2, latency=0.25, confidence=sure
    )
    assert fast == slow and repr(fast) == repr(slow) and fast.to_dict() == slow.to_dict()
    assert all(getattr(fast, f.name) == getattr(slow, f.name) for f in fields(CallRecord))
    with pytest.raises(FrozenInstanceError):
        fast.text = "y"

"""Values and options refuse what they cannot show or run, where it enters, by one rule (a wrong
type is a TypeError, a bad value a ValueError, each naming the argument); equal values act
alike. Each test reproduces a defect a review or a hostile-input pass found, and failed before
its fix."""

from __future__ import annotations

import resource
import sys

import anyio
import pytest
from scripted import ScriptedClient

import moa
from moa import (
    Agent,
    BatchStoppedError,
    Cache,
    Limits,
    ModelLimit,
    Propose,
    Rank,
    RunOptions,
    Take,
    parse_pipeline,
    run,
    run_many,
    run_sync,
)
from moa.ray import split_limits
from moa.recipes import persona_vote, self_moa, self_moa_seq


# -- one rule ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, kind",
    [
        (lambda: Take("3"), TypeError),
        (lambda: Rank("j", n="3"), TypeError),
        (lambda: Rank("j", n=0), ValueError),
        (lambda: Propose(["m"], temp="hot"), TypeError),
        (lambda: Propose(["m"], max_tokens=1.5), TypeError),
        (lambda: moa.Retry(initial="1"), TypeError),
        (lambda: moa.Retry(initial=-1), ValueError),
        (lambda: ModelLimit(rpm="5"), TypeError),
        (lambda: ModelLimit(rpm=0), ValueError),
        (lambda: RunOptions(timeout="5"), TypeError),
        (lambda: RunOptions(timeout=0), ValueError),
        (lambda: RunOptions(max_concurrency=2.0), TypeError),
        (lambda: Agent("m", temp="0"), TypeError),
        (lambda: Agent(""), ValueError),
    ],
)
def test_a_wrong_type_is_a_type_error_and_a_bad_value_a_value_error(make, kind):
    with pytest.raises(kind):
        make()


def test_a_mistyped_option_gets_a_did_you_mean():
    client = ScriptedClient()
    with pytest.raises(
        TypeError,
        match=r"unexpected keyword argument 'max_concurency'; did you mean max_concurrency=",
    ):
        run_sync(Propose(["m"]), "q", client, max_concurency=2)


# -- seeds ---------------------------------------------------------------------------------------
def test_a_negative_seed_is_its_own_seed_not_its_absolute_value():
    pipe = Propose(["a", "b", "c", "d", "e", "f"]) | moa.Shuffle()
    runs = {s: run_sync(pipe, "q", ScriptedClient(), seed=s)[1].outputs for s in (7, -7)}
    assert runs[7] != runs[-7]


def test_a_seed_past_64_bits_is_refused_naming_the_seed():
    with pytest.raises(
        ValueError, match=r"run\(seed=...\): seed must be a 64-bit integer.*an integer of"
    ):
        run_sync(Propose(["m"]), "q", ScriptedClient(), seed=10**5000)
    with pytest.raises(ValueError, match=r"an int id must fit in 64 bits"):
        moa.row_seed(1, 10**5000)


def test_zero_and_minus_zero_temperatures_are_one_request():
    a, b = Agent("m", temp=0.0), Agent("m", temp=-0.0)
    assert a == b
    ask = moa.steps.ask
    msgs = moa.steps.messages(("user", "q"))
    assert ask(a, msgs, 0.7, 10).identity == ask(b, msgs, 0.7, 10).identity
    seeds = [
        run_sync(Propose([agent]), "q", ScriptedClient(), seed=3)[1].calls[0].seed
        for agent in (a, b)
    ]
    assert seeds[0] == seeds[1]


# -- values show what they hold ------------------------------------------------------------------
def test_an_agent_keeps_plain_strings_whose_repr_cannot_lie():
    class Liar(str):
        def __repr__(self):
            return "'something else'"

    agent = Agent(Liar("m"), system=Liar("be brief"))
    assert type(agent.model) is str and type(agent.system) is str
    assert repr(agent) == "Agent('m', system='be brief')"
    assert parse_pipeline(repr(Propose([agent]))) == Propose([agent])
    assert type(Propose([Liar("m")]).agents[0]) is str


def test_a_temperature_too_large_to_read_back_is_refused():
    with pytest.raises(ValueError, match=r"temp must be a finite number >= 0 and <= 100"):
        Agent("m", temp=10**19)
    assert parse_pipeline(repr(Propose([Agent("m", temp=100)]))) == Propose([Agent("m", temp=100)])


def test_limits_show_themselves_outside_an_event_loop():
    limits = Limits({"m": ModelLimit(rpm=60)})
    run_sync(Propose(["m"]), "q", ScriptedClient(), limits=limits)
    assert repr(limits) == "<Limits models=['m'] default=None paused=[]>"


def test_a_limits_used_by_a_second_event_loop_says_so():
    limits = Limits({"m": ModelLimit(rpm=60)})
    run_sync(Propose(["m"]), "q", ScriptedClient(), limits=limits)
    with pytest.raises(RuntimeError, match="first used in another event loop"):
        run_sync(Propose(["m"]), "q", ScriptedClient(), limits=limits)


def test_split_limits_among_no_workers_is_refused():
    with pytest.raises(
        ValueError, match=r"split_limits\(workers=...\): workers must be an int >= 1"
    ):
        split_limits(Limits(default=ModelLimit(rpm=60)), 0)


# -- sizes checked before anything is built ------------------------------------------------------
@pytest.mark.parametrize(
    "make",
    [
        lambda: self_moa("m", n=10**9),
        lambda: self_moa_seq("m", n=10**9),
        lambda: persona_vote("m", samples=10**9),
    ],
)
def test_a_recipe_refuses_a_huge_count_before_building_a_list_of_it(make):
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (2 * 1024**3, hard))  # [m] * 10**9 would take 8 GB
    try:
        with pytest.raises(ValueError, match=r"must be an int <= 1,000"):
            make()
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


# -- failures reported where the user sees them ---------------------------------------------------
class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("str() of this error fails")


@pytest.mark.anyio
async def test_a_client_error_whose_message_cannot_be_shown_is_still_retried_and_recorded():
    tries = 0

    async def client(*, model, messages, temp, max_tokens):
        nonlocal tries
        tries += 1
        if tries == 1:
            raise Unprintable()
        return "ok", 1, 1

    fast = moa.Retry(initial=0, max_wait=0, jitter=0)
    result, history = await run(Propose(["m"]), "q", client, retry=fast)
    assert result == "ok" and history.calls[0].attempts == 2

    async def always(*, model, messages, temp, max_tokens):
        raise Unprintable()

    with pytest.raises(moa.StepFailedError, match=r"Unprintable: \(its message cannot be shown"):
        await run(Propose(["m"]), "q", always, retry=fast)


@pytest.mark.anyio
async def test_a_progress_callback_that_raises_stops_the_batch_keeping_its_results():
    def progress(done, total, result):
        if done == 3:
            raise ValueError("my progress bar broke")

    prompts = [f"q{i}" for i in range(10)]
    with pytest.raises(BatchStoppedError, match="my progress bar broke") as info:
        await run_many(Propose(["m"]), prompts, ScriptedClient(), max_runs=1, progress=progress)
    assert isinstance(info.value.__cause__, ValueError)
    assert [r.index for r in info.value.results] == [0, 1, 2]  # in input order, none lost
    assert all(r.ok for r in info.value.results)


@pytest.mark.anyio
async def test_a_bad_prompt_in_an_iterator_stops_the_batch_after_the_runs_in_flight():
    def prompts():
        yield "first"
        yield "second"
        yield ""

    got = []
    with pytest.raises(BatchStoppedError) as info:
        async with moa.as_completed(Propose(["m"]), prompts(), ScriptedClient(), max_runs=2) as rs:
            async for r in rs:
                got.append(r.prompt)
    assert sorted(got) == ["first", "second"]
    assert "prompt must be a non-empty str" in str(info.value.__cause__)


def test_a_cache_of_an_event_loop_free_thread_is_fine(tmp_path):
    # The cache is plain SQLite: opened, used by a run and closed in a script.
    with Cache(tmp_path / "c.sqlite") as cache:
        run_sync(Propose(["m"]), "q", ScriptedClient(), cache=cache, seed=1)
        assert len(cache) == 1
    assert anyio is not None and sys is not None


@pytest.mark.anyio
async def test_a_rate_bucket_a_rounding_error_short_of_a_request_lets_it_through(monkeypatch):
    from moa import _limits

    async def no_sleep(seconds):
        raise AssertionError(f"slept {seconds} s: a sleep that short cannot move the clock")

    bucket = _limits._Bucket(600)
    bucket.level = 1.0 - 1e-16  # what many 0.1 s refills at 10 a second can leave
    bucket.stamp = anyio.current_time()
    monkeypatch.setattr(_limits.anyio, "sleep", no_sleep)
    assert await bucket.take(1.0) == 1.0

"""moa.Budget: limits a run or a batch never passes, under retries, hedges, a cache and any
number of calls in flight; a batch that meets it stops and resumes; bad limits are refused
where they are made."""

from __future__ import annotations

import hashlib
import math

import anyio
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import moa
from moa import Aggregate, Budget, BudgetExceededError, Propose, Refine, Retry
from moa.testing.strategies import llm_steps, pipelines

pytestmark = pytest.mark.anyio


def _client(fail_first: int = 0, delay: float = 0.0):
    """Replies within max_tokens, reporting words as tokens (never more than the bytes);
    the first ``fail_first`` tries of each request fail retryably."""
    tries: dict[str, int] = {}
    calls: list[int] = []

    async def client(*, model, messages, temp, max_tokens, seed=None):
        key = repr((model, messages[-1]["content"], seed))
        tries[key] = tries.get(key, 0) + 1
        calls.append(1)
        if delay:
            await anyio.sleep(delay)
        if tries[key] <= fail_first:
            raise moa.ProviderError("busy", model=model, retryable=True)
        h = int(hashlib.sha256(key.encode()).hexdigest(), 16)
        n = min(max_tokens, 1 + h % 5)
        read = sum(len(m["content"].split()) for m in messages)
        return " ".join(["w"] * n), read, n

    client.calls = calls
    return client


PRICES = {"m": (2.0, 4.0), "model-a": (1.0, 1.0), "model-b": (3.0, 5.0), "model-c": (0.5, 9.0)}
FAST = Retry(attempts=3, initial=0, max_wait=0, jitter=0)


def _within(budget: Budget) -> None:
    used = budget.used()
    for name, limit in budget.limits.items():
        if limit is not None and name != "seconds":
            assert used[name] <= limit * (1 + 1e-9), (name, used[name], limit)


# -- a single run ---------------------------------------------------------------------------------
async def test_a_run_that_would_pass_the_budget_ends_with_its_history_and_partial_answer():
    budget = Budget(calls=3)
    with pytest.raises(BudgetExceededError, match="calls would pass 3") as caught:
        await moa.run(
            Propose(["m"] * 3, max_tokens=4) | Aggregate("m"), "q", _client(), budget=budget
        )
    exc = caught.value
    assert exc.limit == "calls" and exc.history is not None
    assert exc.partial is not None and exc.partial.startswith("w")  # a proposal: the best it had
    assert exc.used["calls"] == 3 and exc.left["calls"] == 0
    assert exc.history.budget["used"]["calls"] == 3


async def test_a_run_within_its_budget_records_what_it_used_and_what_is_left():
    budget = Budget(usd=1.0, prices=PRICES)
    _, history = await moa.run(Propose(["m"] * 2, max_tokens=4), "q", _client(), budget=budget)
    used, left = history.budget["used"], history.budget["left"]
    assert used["calls"] == 2 and used["usd"] > 0
    assert left["usd"] == pytest.approx(1.0 - used["usd"]) and left["calls"] is None
    assert moa.History.from_dict(history.to_dict()).budget == history.budget


async def test_retries_and_hedges_are_calls_too():
    budget = Budget(calls=4)
    with pytest.raises(BudgetExceededError):
        await moa.run(
            Propose(["m"] * 2, max_tokens=4), "q", _client(fail_first=2), budget=budget, retry=FAST
        )
    assert budget.used()["calls"] == 4  # two requests, two tries each, then no third


async def test_cached_answers_are_free(tmp_path):
    cache = moa.Cache(tmp_path / "c.sqlite")
    pipeline = Propose(["m"] * 2, max_tokens=4)
    await moa.run(pipeline, "q", _client(), cache=cache)
    budget = Budget(calls=1)
    await moa.run(pipeline, "q", _client(), cache=cache, budget=budget)
    assert budget.used()["calls"] == 0
    cache.close()


async def test_a_dollar_budget_needs_a_price_for_every_model():
    with pytest.raises(BudgetExceededError, match="no price for model 'unknown'"):
        await moa.run(Propose(["unknown"]), "q", _client(), budget=Budget(usd=1.0))


async def test_the_time_limit_stops_calls_in_flight():
    budget = Budget(seconds=0.2)
    with pytest.raises(BudgetExceededError, match="ran out while the call") as caught:
        await moa.run(Propose(["m"] * 2, max_tokens=4), "q", _client(delay=5), budget=budget)
    assert caught.value.limit == "seconds"


# -- the property: never passed, whatever runs at once ----------------------------------------
LIMITS = {
    "usd": st.floats(1e-6, 1e-2),
    "calls": st.integers(1, 60),
    "input_tokens": st.integers(1, 5000),
    "output_tokens": st.integers(1, 50_000),
}
STEPS = llm_steps(options=True, kinds=[Propose, Aggregate, Refine], models=list(PRICES))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pipeline=pipelines(STEPS, max_leaves=4),
    prompts=st.integers(1, 40),
    in_flight=st.sampled_from([1, 512]),
    limits=st.lists(st.sampled_from(sorted(LIMITS)), min_size=1, unique=True).flatmap(
        lambda names: st.fixed_dictionaries({n: LIMITS[n] for n in names})
    ),
    fail_first=st.integers(0, 1),
    backend=st.sampled_from(["asyncio", "trio"]),
)
def test_a_budget_is_never_passed(pipeline, prompts, in_flight, limits, fail_first, backend):
    pipeline = Propose(["model-a", "model-b"], max_tokens=8) | pipeline
    budget = Budget(**limits, prices=PRICES)
    client = _client(fail_first=fail_first)

    async def main():
        try:
            results = await moa.run_many(
                pipeline,
                [f"q{i}" for i in range(prompts)],
                client,
                budget=budget,
                max_concurrency=in_flight,
                max_runs=in_flight,
                retry=FAST,
                hedge_after=0.0001 if fail_first else None,
            )
        except moa.BatchStoppedError as exc:
            results = exc.results
        return results

    results = anyio.run(main, backend=backend)
    event("met" if any(isinstance(r.error, BudgetExceededError) for r in results) else "within")
    _within(budget)
    assert budget.used()["calls"] == len(client.calls)  # every try was charged
    spent = [c for r in results if r.history for c in r.history.calls for c in (c, *c.hedges)]
    if "input_tokens" in limits:
        assert sum(c.input_tokens or 0 for c in spent) <= limits["input_tokens"]
    if "usd" in limits:
        dollars = sum(
            r.history.cost(moa.DEFAULT_PRICES | PRICES).known for r in results if r.history
        )
        assert dollars <= limits["usd"] + 1e-12


# -- a batch stops, and resumes with a new budget --------------------------------------------------
async def test_a_batch_of_2000_stops_at_its_budget_and_resumes_to_completion():
    pipeline = Propose(["m"] * 2, max_tokens=4) | Aggregate("m", max_tokens=4)
    prompts = [f"question {i}" for i in range(2000)]
    done: dict[int, str] = {}
    ran: list[int] = []
    first = Budget(calls=3000)
    with pytest.raises(moa.BatchStoppedError, match="calls would pass 3000") as caught:
        await moa.run_many(
            pipeline, prompts, _client(), budget=first, max_runs=64, ids=list(range(2000))
        )
    for r in caught.value.results:
        ran.append(r.id)
        if r.ok:
            done[r.id] = r.result
    _within(first)
    assert 0 < len(done) < 2000
    todo = [i for i in range(2000) if i not in done]
    second = Budget(calls=3 * len(todo))
    results = await moa.run_many(
        pipeline, [prompts[i] for i in todo], _client(), budget=second, max_runs=64, ids=todo
    )
    assert all(r.ok for r in results)
    for r in results:
        assert r.id not in done  # nothing run twice
        done[r.id] = r.result
    assert sorted(done) == list(range(2000))  # nothing lost
    _within(second)


async def test_on_budget_cancel_leaves_the_runs_in_flight_out():
    budget = Budget(calls=20)
    with pytest.raises(moa.BatchStoppedError) as caught:
        await moa.run_many(
            Propose(["m"] * 2, max_tokens=4) | Aggregate("m"),
            [f"q{i}" for i in range(100)],
            _client(delay=0.01),
            budget=budget,
            max_runs=8,
            on_budget="cancel",
        )
    results = caught.value.results
    # The runs that met the budget at once are reported; those still waiting are left out.
    assert any(isinstance(r.error, BudgetExceededError) for r in results)
    assert all(r.ok or isinstance(r.error, BudgetExceededError) for r in results)
    assert len(results) < 20 and budget.used()["calls"] <= 20
    with pytest.raises(ValueError, match="on_budget"):
        await moa.run_many(Propose(["m"]), ["q"], _client(), on_budget="stop")


# -- bad limits ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({}, ValueError, "at least one limit"),
        ({"usd": 0}, ValueError, "above 0"),
        ({"calls": -1}, ValueError, "above 0"),
        ({"usd": math.nan}, ValueError, "above 0 and finite"),
        ({"seconds": math.inf}, ValueError, "finite"),
        ({"calls": 2.5}, TypeError, "a whole number"),
        ({"calls": True}, TypeError, "a whole number"),
        ({"usd": "1"}, TypeError, "a number"),
        ({"usd": 1, "prices": [1]}, TypeError, "prices"),
    ],
)
def test_a_bad_budget_is_refused_where_it_is_made(kwargs, error, message):
    with pytest.raises(error, match=message):
        Budget(**kwargs)


def test_a_budget_is_refused_by_run_options_unless_it_is_one():
    with pytest.raises(TypeError, match="budget must be a moa.Budget"):
        moa.RunOptions(budget={"usd": 1})


def test_split_shares_a_budget_among_workers():
    parts = Budget(usd=1.0, calls=10, seconds=5).split(3)
    assert [p.limits["calls"] for p in parts] == [3, 3, 3]
    assert parts[0].limits["usd"] == pytest.approx(1 / 3) and parts[0].limits["seconds"] == 5
    assert repr(parts[0]).startswith("Budget(usd=")


async def test_a_budget_on_a_step_without_bounds_must_count_calls_or_seconds():
    from dataclasses import dataclass

    from moa import LLMStep
    from moa.steps import ask, messages

    @dataclass(frozen=True, slots=True, repr=False)
    class UntilYes(LLMStep):
        agent: str
        needs_responses = False

        def plan(self, prompt, responses, rng):
            while True:
                [reply] = yield [ask(self.agent, messages(("user", prompt)), 0.0, 4)]
                if reply == "yes":
                    return [reply], []

    with pytest.raises(ValueError, match=r"has no bound on its calls .* calls= or seconds="):
        await moa.run(UntilYes("m"), "q", _client(), budget=Budget(usd=1.0, prices=PRICES))
    with pytest.raises(ValueError, match="calls= or seconds="):
        await moa.run_many(UntilYes("m"), ["q"], _client(), budget=Budget(output_tokens=10))
    with pytest.raises(BudgetExceededError, match="calls would pass 5"):
        await moa.run(UntilYes("m"), "q", _client(), budget=Budget(calls=5))

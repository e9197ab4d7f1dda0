"""moa.tune: the space it searches, the calls it plans and the budget it checks before any
call, the choice on dev tasks, and the one held-out evaluation that is its result."""

from __future__ import annotations

import json
import random

import pytest

import moa
from moa import Agent, Majority, Propose, Space, WeightedMajority, parse_pipeline
from moa._tune_plan import plan_calls

pytestmark = pytest.mark.anyio

TASKS = [{"id": i, "prompt": f"question {i}: say {i % 7}", "answer": str(i % 7)} for i in range(40)]


def good_at(share_greedy: float, share_sampled: float):
    """A client right with a given chance per (model, messages, temp, seed), counting calls;
    a right answer is surer than a wrong one."""
    calls: list[dict] = []

    async def client(*, model, messages, temp, max_tokens, seed=None, logprobs=False):
        calls.append({"model": model, "temp": temp, "messages": messages, "seed": seed})
        asked = messages[-1]["content"]
        answer = asked.rsplit(" ", 1)[-1]
        rng = random.Random(f"{asked}|{messages[0]['content']}|{temp}|{seed}")
        right = rng.random() < (share_greedy if temp == 0 else share_sampled)
        text = answer if right else str(rng.randint(7, 20))
        sure = moa.Confidence(-(rng.random() + (0 if right else 1.5)) * 4, 4)
        return (text, 20, 4, sure) if logprobs else (text, 20, 4)

    client.calls = calls
    return client


# -- the space --------------------------------------------------------------------------------
def test_the_default_space_shares_one_pool_and_fits_selections_to_proposals():
    space = Space(("m",))
    mixtures = space.mixtures()
    # every mixture starts with a Propose over the pool and ends with one selection
    for name, step in mixtures.items():
        first, last = step.steps
        assert isinstance(first, Propose)
        if name.endswith("| consistent"):
            # only where every agent is sampled more than once
            counts = {a: first.agents.count(a) for a in first.agents}
            assert len(counts) > 1 and min(counts.values()) > 1
        if name.endswith("| aggregate"):
            assert len(first.agents) <= 5
    names = set(mixtures)
    assert "greedy | weighted" in names and "3x t=0.3 | majority" in names
    assert "personas 3x t=0.3 | consistent" in names
    assert "greedy + personas 3x t=0.3 | consistent" not in names  # greedy agents: one sample
    # the pool: 4 greedy personas, 5 samples at each of 2 temperatures, 3 personas' 3 more
    # samples at 0.3 (the plain model's are the pool's own), and one call per aggregator
    aggregators = sum(n.endswith("| aggregate") for n in names)
    assert plan_calls(mixtures) == 4 + 5 + 5 + 3 * 3 + aggregators


def test_a_winner_expression_parses_back_to_the_same_pipeline():
    for step in Space(("m",), personas=(None, "Be terse.")).mixtures().values():
        assert parse_pipeline(repr(step)) == step


def test_a_bad_space_is_refused_with_the_rule():
    with pytest.raises(ValueError, match="not one of majority"):
        Space(("m",), selections=("majority", "best"))
    with pytest.raises(ValueError, match="from 2 to 64"):
        Space(("m",), samples=(1,))
    with pytest.raises(TypeError, match="a non-empty list"):
        Space(("m",), temps=())
    with pytest.raises(ValueError, match="has no 'temperature'"):
        Space.of({"temperature": [0.3]}, ("m",))


def test_plan_calls_counts_shared_samples_once():
    three = Propose(["m"] * 3, temp=0.5) | Majority()
    five = Propose(["m"] * 5, temp=0.5) | WeightedMajority()
    other = Propose([Agent("m", system="Be terse.")] * 2, temp=0.5) | Majority()
    assert plan_calls({"a": three, "b": five}) == 5
    assert plan_calls({"a": three, "b": five, "c": other}) == 7


# -- budget -----------------------------------------------------------------------------------
async def test_a_search_larger_than_the_budget_is_refused_before_any_call():
    client = good_at(0.6, 0.5)
    with pytest.raises(ValueError, match=r"needs up to [\d,]+ calls .* budget_calls is 100"):
        await moa.tune(TASKS, client, model="m", budget_calls=100)
    with pytest.raises(ValueError, match=r"may cost up to \$.* budget_usd is \$0.001"):
        await moa.tune(TASKS, client, model="m", budget_usd=0.001, prices={"m": (100.0, 100.0)})
    with pytest.raises(ValueError, match="has no price"):
        await moa.tune(TASKS, client, model="m", budget_usd=1.0)
    assert client.calls == []


async def test_held_out_tasks_must_be_unseen():
    client = good_at(0.6, 0.5)
    with pytest.raises(ValueError, match="held-out prompts are among the dev tasks"):
        await moa.tune(TASKS[:20], client, model="m", holdout_tasks=TASKS[15:])
    assert client.calls == []


async def test_a_step_needing_confidence_on_a_client_without_is_refused_first():
    async def plain(*, model, messages, temp, max_tokens):
        raise AssertionError("no call may be made")

    with pytest.raises(moa.ConfidenceUnavailableError):
        await moa.tune(TASKS, plain, model="m")


# -- the search and its result ----------------------------------------------------------------
async def test_tune_chooses_on_dev_and_reports_the_held_out_figure_once():
    client = good_at(0.55, 0.5)
    space = Space(("m",), personas=(None, "Be terse."), samples=(3,), temps=(0.5,))
    report = await moa.tune(TASKS, client, space=space, holdout=0.5, seed=3, budget_calls=10_000)
    assert len(report.search.tasks) == 20 and len(report.holdout.tasks) == 20
    dev_ids = {t.id for t in report.search.tasks}
    assert dev_ids.isdisjoint(t.id for t in report.holdout.tasks)
    # the winner is the best mixture on dev (ties: fewer calls), the single the best single
    mixtures = [c for c in report.search if not c.single]
    top = max(c.accuracy for c in mixtures)
    assert report.search[report.winner].accuracy == top
    assert report.single == report.search.best_single.name
    # the held-out eval holds the two and nothing else; delta is theirs
    assert report.holdout.names == [report.single, report.winner]
    assert report.delta == report.holdout.versus(report.winner, report.single)
    assert parse_pipeline(report.expression) == space.mixtures()[report.winner]
    text = str(report)
    assert text.startswith("Held-out result (20 tasks")
    assert "these figures are optimistic" in text
    assert report.expression in text
    assert ("WARNING" in text) == (not report.beats_single)
    assert report.delta.won + report.delta.lost <= 20
    # every call was planned for
    assert len(client.calls) <= report.planned_calls
    doc = json.loads(json.dumps(report.to_dict()))
    assert doc["winner"] == report.winner and doc["holdout"]["contenders"]


async def test_a_penalty_per_call_prefers_a_cheaper_mixture():
    client = good_at(0.55, 0.5)
    space = Space(("m",), personas=(None, "Be terse."), samples=(3, 5), temps=(0.5,))
    free = await moa.tune(TASKS, client, space=space, seed=1)
    costly = await moa.tune(TASKS, client, space=space, seed=1, penalty=1.0)
    calls = {c.name: c.calls for c in free.search}
    assert calls[costly.winner] == min(calls[c.name] for c in free.search if not c.single)


async def test_a_list_of_pipelines_is_a_space_too():
    client = good_at(0.6, 0.5)
    space = {
        "vote": Propose(["m"] * 3, temp=0.5) | Majority(),
        "weighted": Propose(["m"] * 3, temp=0.5) | WeightedMajority(),
    }
    report = await moa.tune(TASKS, client, space=space, seed=0)
    assert report.winner in space
    with pytest.raises(ValueError, match="holds no mixture"):
        await moa.tune(TASKS, client, space=[Propose(["m"])])


async def test_tune_repeats_exactly_with_its_seed():
    space = Space(("m",), personas=(None,), samples=(3,), temps=(0.5,))

    async def once():
        report = await moa.tune(TASKS, good_at(0.55, 0.5), space=space, seed=5)
        doc = report.to_dict()
        for part in ("search", "holdout"):
            for c in doc[part]["contenders"]:
                c.pop("wall")
        return doc

    assert await once() == await once()

"""What keeps an eval honest: every model a mixture uses runs alone, a difference needs the
exact test too, a seed's samples are its own, held-out answers cannot come from the search,
the planned calls bound the real ones, and a reply that cannot be scored is wrong and says
why, never stopping the eval."""

from __future__ import annotations

import hashlib
import re

import pytest

import moa
from moa import Aggregate, Judge, Majority, Propose, Refine, Synthesize, TaskError
from moa._eval import contenders_of

pytestmark = pytest.mark.anyio

ACCURACY = {"good": 0.8, "bad": 0.4, "big": 0.95}


def _h(*parts: object) -> float:
    return int(hashlib.sha256(repr(parts).encode()).hexdigest(), 16) % 1000 / 1000


def client_for(accuracy=ACCURACY, judge_says: str | None = None):
    """Each model right with its own chance per (prompt, seed); a sample depends on its seed.
    Every call is counted in ``client.calls``."""
    calls: list[tuple] = []

    async def client(*, model, messages, temp, max_tokens, seed=None, logprobs=False):
        calls.append((model, temp, seed))
        user = messages[-1]["content"]
        if judge_says is not None and "Reference answer" in user:
            return judge_says, 5, 1
        m = re.search(r"ANS(\d+)", user)
        right = m[1] if m else "0"
        r = _h(model, user, seed if temp > 0 else None, temp)
        wrong = int(right) + 1 + int(_h(seed, model) * 3)
        text = f"The answer is {right if r < accuracy.get(model, 0.5) else wrong}"
        return (text, 10, 5, moa.Confidence(-1.0 - r, 5)) if logprobs else (text, 10, 5)

    client.calls = calls
    return client


def tasks(n: int, start: int = 0) -> list[dict]:
    return [
        {"id": f"t{i}", "prompt": f"Q{i} ANS{i * 7}", "answer": str(i * 7)}
        for i in range(start, start + n)
    ]


# -- every model alone ------------------------------------------------------------------------
def test_every_model_of_a_mixture_runs_alone_not_only_its_proposers():
    names = {c.name: c for c in contenders_of({"m": Propose(["bad", "bad"]) | Aggregate("big")})}
    assert "big t=0" in names and names["big t=0"].baseline
    refine = {c.name for c in contenders_of({"r": Propose(["bad"]) | Refine(["big"])})}
    assert {"bad t=0.7", "bad t=0", "big t=0"} <= refine


async def test_the_best_single_is_the_strong_aggregator_not_the_weak_proposer():
    report = await moa.eval(
        {"mix": Propose(["bad", "bad"], max_tokens=16) | Aggregate("big", max_tokens=16)},
        tasks(30),
        client_for(),
    )
    assert report.best_single.name == "big t=0"


def test_a_pipeline_that_ends_with_several_responses_is_refused():
    with pytest.raises(ValueError, match="ends with up to 2 responses"):
        contenders_of([Propose(["good", "bad"])])
    contenders_of([Propose(["good", "bad"]) | Majority()])  # one chosen: fine


# -- the exact test ---------------------------------------------------------------------------
async def test_a_difference_on_few_disagreements_is_not_called_significant():
    # Four tasks where only the mixture is right, none the other way: the bootstrap interval
    # excludes 0, the exact test does not (p = 0.125).
    report = await moa.eval(
        {"mix": Propose(["good", "bad"], temp=0, max_tokens=8) | Majority()},
        tasks(40),
        client_for(),
    )
    for c in report:
        d = report.versus(c.name, "bad t=0") if c.name != "bad t=0" else None
        if d is not None and d.won + d.lost <= 4:
            assert not d.significant


# -- seeds and the cache ----------------------------------------------------------------------
async def test_a_rerun_with_another_seed_on_the_same_cache_draws_new_samples(tmp_path):
    pipeline = {"vote": Propose(["good"] * 3, temp=0.7, max_tokens=8) | Majority()}
    cache = moa.Cache(tmp_path / "c.sqlite")
    client = client_for()
    await moa.eval(pipeline, tasks(5), client, cache=cache, seed=0)
    first = len(client.calls)
    await moa.eval(pipeline, tasks(5), client, cache=cache, seed=0)
    assert len(client.calls) == first  # the same seed: every answer from the cache
    await moa.eval(pipeline, tasks(5), client, cache=cache, seed=1)
    assert len(client.calls) > first  # another seed: its own samples
    cache.close()


def test_a_question_asked_twice_is_refused():
    with pytest.raises(TaskError, match="task 1: the prompt of task 0 again"):
        moa.load_tasks([{"prompt": "Q ANS1", "answer": "1"}, {"prompt": "Q  ANS1", "answer": "1"}])


# -- tune ---------------------------------------------------------------------------------------
async def test_tune_keeps_the_users_own_single_models_and_checks_against_greedy():
    space = {
        "good": Propose(["good"], temp=0, max_tokens=8),
        "vote": Propose(["bad"] * 3, temp=0.7, max_tokens=8) | Majority(),
    }
    report = await moa.tune(tasks(40), client_for(), space=space)
    assert report.winner == "vote"
    assert report.single == "good"  # the user's single, not a member of the mixture
    assert report.greedy in report.holdout.names
    assert not report.beats_single and "WARNING" in str(report)


async def test_the_scorer_must_fit_the_held_out_tasks_before_the_search():
    client = client_for()
    held = [{"prompt": "Capital of France?", "answer": "Paris"}]
    with pytest.raises(TaskError, match="holds none"):
        await moa.tune(tasks(10), client, model="good", holdout_tasks=held, scorer="number")
    assert client.calls == []


async def test_tune_progress_names_its_phase():
    seen: list[str] = []
    space = {"vote": Propose(["good"] * 2, temp=0.7, max_tokens=8) | Majority()}
    await moa.tune(tasks(10), client_for(), space=space, progress=lambda d, t, n: seen.append(n))
    assert seen[0].startswith("search: ") and seen[-1].startswith("held-out: ")


@pytest.mark.parametrize(
    ("space", "judged"),
    [
        (
            [Propose(["good", "bad"], max_tokens=8) | Refine(["big"], max_tokens=8) | Majority()],
            False,
        ),
        (
            [
                Propose(["good", "bad"], max_tokens=8)
                | Synthesize(["big", "good", "bad"], max_tokens=8)
                | Aggregate("big", max_tokens=8)
            ],
            False,
        ),
        (
            [
                (Propose(["good", "bad"], max_tokens=8) & Propose(["big", "bad"], max_tokens=8))
                | Majority()
            ],
            False,
        ),
        ([Propose(["good", "bad"], max_tokens=8) | Majority()], True),
    ],
)
async def test_the_planned_calls_bound_the_calls_made(space, judged):
    client = client_for(judge_says="YES")
    scorer = Judge("big") if judged else "auto"
    report = await moa.tune(tasks(10), client, space=space, scorer=scorer)
    assert len(client.calls) <= report.planned_calls


# -- a reply that cannot be scored ------------------------------------------------------------
async def test_a_scorer_past_its_time_bound_scores_wrong_and_says_so(monkeypatch):
    import time

    monkeypatch.setattr(moa._contract, "OFF_LOOP_SECONDS", 0.2)

    def slow(reply, task):
        time.sleep(1)
        return True

    report = await moa.eval(
        {"g": Propose(["good"], temp=0, max_tokens=8)}, tasks(2), client_for(), scorer=slow
    )
    result = report["g"].results[0]
    assert not result.correct and "longer than 0.2 s" in result.note
    assert "could not be scored" in str(report)


async def test_a_judge_that_fails_scores_wrong_and_the_eval_goes_on():
    good = client_for()

    async def client(*, model, messages, temp, max_tokens, seed=None, logprobs=False):
        if model == "judge":
            raise moa.ProviderError("the judge is down", model=model, retryable=False)
        return await good(
            model=model, messages=messages, temp=temp, max_tokens=max_tokens, seed=seed
        )

    report = await moa.eval(
        {"g": Propose(["good"], temp=0, max_tokens=8)}, tasks(2), client, scorer=Judge("judge")
    )
    assert all(not r.correct and "the judge failed" in r.note for r in report["g"].results)


def test_a_judge_reads_the_aliases_and_its_max_tokens_are_checked():
    task = moa.Task("t", "Capital of Italy?", "Rome", ("Roma",))
    plan = Judge("j").step(task, "Roma").plan("", [], None)
    asks = next(plan)
    assert "also right: Roma" in asks[0].messages[-1]["content"]
    with pytest.raises(ValueError, match="max_tokens"):
        Judge("j", max_tokens=0)
    with pytest.raises(TypeError, match="max_tokens"):
        Judge("j", max_tokens="4")


async def test_a_held_out_set_evaluated_before_is_said_to_be_so(tmp_path):
    cache = moa.Cache(tmp_path / "c.sqlite")
    space = {"vote": Propose(["good", "bad", "good"], temp=0, max_tokens=8) | Majority()}
    first = await moa.tune(tasks(20), client_for(), space=space, cache=cache)
    assert first.reused == 0 and "evaluated before" not in str(first)  # sharing within is not
    again = await moa.tune(tasks(20), client_for(), space=space, cache=cache)
    assert again.reused == 10 and "held-out set was evaluated before" in str(again)
    cache.close()

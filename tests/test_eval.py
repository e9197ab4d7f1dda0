"""moa.eval end to end on small deterministic clients written here: the baselines it adds for a
mixture's agents, the shared cache that serves them, the scores and statistics of the report
against figures worked out by hand, costs, confidence, the Judge, and the report's outputs.

Six tasks and three fake models whose replies are fixed per task:

    task  answer  fake-a  fake-b  fake-c   majority of the three
    t0    4       4  +    4  +    5  -     4      +
    t1    6       6  +    7  -    6  +     6      +
    t2    Rome    Paris - Rome +  Rome +   Rome   +
    t3    10      11 -    10 +    11 -     11     -
    t4    8       8  +    8  +    9  -     8      +
    t5    18      17 -    17 -    16 -     17     -
    right         3       4       2        4

so fake-b is the best single agent, the mixture's proposal layer reaches 5 of 6 (beta 1/6),
and its first candidate alone 3 of 6, the first two 5 of 6.
"""

from __future__ import annotations

import csv
import json
import re
import xml.etree.ElementTree as ET
from itertools import combinations

import pytest

import moa
from moa import (
    Agent,
    Cache,
    Confidence,
    ConfidenceUnavailableError,
    Judge,
    Majority,
    Propose,
    Task,
    TaskError,
    WeightedMajority,
)
from moa._eval import contenders_of, member_baselines, single_agent
from moa._stats import mcnemar, paired_bootstrap, phi, wilson
from moa.errors import ProviderError

pytestmark = pytest.mark.anyio

TASKS = [
    Task("t0", "2+2?", "4"),
    Task("t1", "3+3?", "6"),
    Task("t2", "Capital of Italy?", "Rome"),
    Task("t3", "5+5?", "10"),
    Task("t4", "7+1?", "8"),
    Task("t5", "9+9?", "18"),
]
PROMPTS = [t.prompt for t in TASKS]
REPLIES = {
    "fake-a": ["4", "6", "Paris", "11", "8", "17"],
    "fake-b": ["4", "7", "Rome", "10", "8", "17"],
    "fake-c": ["5", "6", "Rome", "11", "9", "16"],
}
RIGHT = {
    "fake-a": [True, True, False, False, True, False],
    "fake-b": [True, False, True, True, True, False],
    "fake-c": [False, True, True, False, False, False],
}
MAJORITY_RIGHT = [True, True, True, False, True, False]
MIX = Propose(["fake-a", "fake-b", "fake-c"]) | Majority()  # at the default temp, 0.7
BASELINES = [
    "fake-a t=0.7",
    "fake-a t=0",
    "fake-b t=0.7",
    "fake-b t=0",
    "fake-c t=0.7",
    "fake-c t=0",
]
#: Every fake call reads 10 tokens and writes 2.
TOKENS = (10, 2)
#: $1 in and $2 out per million tokens: a call costs $14e-6.
PRICES = {"fake-a": (1.0, 2.0), "fake-b": (1.0, 2.0), "fake-c": (1.0, 2.0)}
CALL = 14e-6


def task_index(messages: list[dict[str, str]]) -> int:
    """Which task a request is about: the one whose prompt its messages hold (the last such
    message, so an aggregator's request is about its question too)."""
    text = "\n".join(m["content"] for m in messages)
    found = [i for i, p in enumerate(PROMPTS) if p in text]
    assert len(found) == 1, text
    return found[0]


def fake_client(replies=REPLIES, *, sure: dict[str, float] | None = None):
    """A client of fixed replies that takes ``seed`` and ``logprobs``; with ``logprobs``, each
    reply's confidence is ``sure[model]`` per token (two tokens). ``client.calls`` logs every
    call."""
    calls: list[dict] = []

    async def client(*, model, messages, temp, max_tokens, seed=None, logprobs=False):
        i = task_index(messages)
        calls.append({"model": model, "task": i, "temp": temp, "seed": seed, "logprobs": logprobs})
        if isinstance(replies[model], Exception):
            raise replies[model]
        text = replies[model][i]
        if isinstance(text, Exception):
            raise text
        if logprobs and sure is not None:
            return text, *TOKENS, Confidence(2 * sure[model], 2)
        return text, *TOKENS

    client.calls = calls
    return client


def plain_client():
    """A client without ``seed`` or ``logprobs``: it can give no confidence."""
    calls: list[str] = []

    async def client(*, model, messages, temp, max_tokens):
        calls.append(model)
        return REPLIES[model][task_index(messages)], *TOKENS

    client.calls = calls
    return client


def hot_client():
    """Greedy calls answer from the table; sampled ones (temp > 0) with their seed."""
    calls: list[dict] = []

    async def client(*, model, messages, temp, max_tokens, seed=None):
        calls.append({"model": model, "temp": temp, "seed": seed})
        if temp > 0:
            return f"sample {seed}", *TOKENS
        return REPLIES[model][task_index(messages)], *TOKENS

    client.calls = calls
    return client


# -- which contenders ----------------------------------------------------------------------------
def test_a_mixtures_agents_are_added_alone_as_asked_and_greedy():
    built = contenders_of([MIX])
    assert [c.name for c in built] == [*BASELINES, repr(MIX)]
    for c in built[:-1]:
        assert c.single and c.baseline
    assert not built[-1].single and not built[-1].baseline
    assert built[0].pipeline == Propose(["fake-a"])  # as the mixture asks it: temp 0.7
    assert built[1].pipeline == Propose(["fake-a"], temp=0)  # greedy


def test_a_greedy_mixture_adds_one_baseline_per_agent():
    greedy = Propose(["fake-a", "fake-b"], temp=0) | Majority()
    assert [c.name for c in contenders_of([greedy])] == ["fake-a t=0", "fake-b t=0", repr(greedy)]


def test_an_agents_own_temperature_is_its_baseline_and_greedy_is_added():
    mix = Propose([Agent("fake-a", temp=1.2), "fake-b"], temp=0) | Majority()
    assert member_baselines(mix) == [
        Propose([Agent("fake-a", temp=1.2)], temp=0),
        Propose(["fake-a"], temp=0),
        Propose(["fake-b"], temp=0),
    ]
    assert [c.name for c in contenders_of([mix])][:3] == [
        "fake-a t=1.2",
        "fake-a t=0",
        "fake-b t=0",
    ]


def test_a_user_contender_that_asks_the_same_is_not_repeated():
    built = contenders_of({"solo": Propose(["fake-a"]), "mix": MIX})
    names = [c.name for c in built]
    assert names == ["solo", *[n for n in BASELINES if n != "fake-a t=0.7"], "mix"]
    assert not built[0].baseline and built[0].single


def test_mixtures_that_share_an_agent_share_its_baselines():
    left = Propose(["fake-a", "fake-b"]) | Majority()
    right = Propose(["fake-b", "fake-c"]) | Majority()
    names = [c.name for c in contenders_of({"left": left, "right": right})]
    assert names == [*BASELINES, "left", "right"]


def test_a_baseline_label_never_takes_a_users_name():
    built = contenders_of({"fake-a t=0.7": Propose(["fake-c"], temp=0.3), "mix": MIX})
    names = [c.name for c in built]
    assert names[:2] == ["fake-a t=0.7", "fake-a t=0.7'"]
    assert built[1].pipeline == Propose(["fake-a"])
    assert len(set(names)) == len(names)


def test_named_agents_and_personas_label_their_baselines():
    mix = (
        Propose(
            [
                Agent("fake-a", name="alice"),
                Agent("fake-b", system="Be brief."),
                Agent("fake-b", system="Be careful."),
            ],
            temp=0,
        )
        | Majority()
    )
    names = [c.name for c in contenders_of([mix])]
    assert names[:3] == ["alice t=0", "fake-b persona 1 t=0", "fake-b persona 2 t=0"]


def test_no_baselines_without_a_mixture_or_when_turned_off():
    assert [c.name for c in contenders_of(Propose(["fake-a"]))] == ["Propose(['fake-a'])"]
    assert [c.name for c in contenders_of([MIX], baselines=False)] == [repr(MIX)]


def test_single_agent_sees_through_a_pipeline_of_one_step():
    assert single_agent(Propose(["m"])) == "m"
    assert single_agent(moa.pipeline(Propose(["m"]))) == "m"
    assert single_agent(Propose(["m", "n"])) is None
    assert single_agent(Propose(["m"]) | Majority()) is None


@pytest.mark.parametrize(
    "contenders",
    [
        [Propose(["fake-a"]), Propose(["fake-a"])],
        ["self_moa", "self_moa"],
        ["Propose(['fake-a'])", "Propose(['fake-a'])"],
    ],
)
async def test_two_contenders_of_one_name_are_refused_before_any_call(contenders):
    client = fake_client()
    with pytest.raises(ValueError, match=r"two contenders are named .*; names are unique"):
        await moa.eval(contenders, TASKS, client, model="fake-a")
    assert client.calls == []


async def test_no_contenders_are_refused():
    with pytest.raises(ValueError, match=r"name at least one pipeline"):
        await moa.eval([], TASKS, fake_client())


# -- the scores --------------------------------------------------------------------------------
async def test_the_scores_match_the_hand_worked_table():
    report = await moa.eval({"mix": MIX}, TASKS, fake_client())
    assert report.names == [*BASELINES, "mix"]
    for name in BASELINES:
        model = name.split()[0]
        c = report[name]
        assert c.correct == RIGHT[model], name
        assert c.right == sum(RIGHT[model])
        assert c.accuracy == sum(RIGHT[model]) / 6
        assert c.interval == wilson(sum(RIGHT[model]), 6)
        assert [r.reply for r in c.results] == REPLIES[model]
        assert [r.id for r in c.results] == [t.id for t in TASKS]
        assert c.errors == 0
    mix = report["mix"]
    assert mix.correct == MAJORITY_RIGHT
    assert [r.reply for r in mix.results] == ["4", "6", "Rome", "11", "8", "17"]
    assert report.scorer == "auto" and report.seed == 0
    assert report.tasks == tuple(TASKS)


async def test_the_best_single_agent_and_the_paired_differences():
    report = await moa.eval({"mix": MIX}, TASKS, fake_client())
    best = report.best_single
    assert best is not None and best.name == "fake-b t=0.7"  # the first of the two fake-b
    assert report.versus("mix")[:3] == paired_bootstrap(
        MAJORITY_RIGHT, RIGHT["fake-b"], resamples=2000, seed=0
    )
    assert report.versus("mix")[3:] == mcnemar(MAJORITY_RIGHT, RIGHT["fake-b"])
    assert report.versus("mix", "fake-c t=0")[:3] == paired_bootstrap(
        MAJORITY_RIGHT, RIGHT["fake-c"], resamples=2000, seed=0
    )
    assert report.versus("fake-b t=0.7") == (0.0, 0.0, 0.0, 0, 0, 1.0)
    assert not report.versus("fake-b t=0.7").significant
    rows = {row["name"]: row for row in report.rows()}
    assert rows["fake-b t=0.7"]["delta"] is None
    assert rows["mix"]["delta"] == report.versus("mix")._asdict()


async def test_the_proposal_layer_gives_oracle_and_beta():
    report = await moa.eval({"mix": MIX}, TASKS, fake_client())
    mix = report["mix"]
    candidates = [tuple(RIGHT[m][i] for m in ("fake-a", "fake-b", "fake-c")) for i in range(6)]
    assert [r.candidates for r in mix.results] == candidates
    assert mix.k == 3
    assert mix.oracle() == pytest.approx(5 / 6)
    assert mix.beta == pytest.approx(1 / 6)
    assert mix.oracle(1) == pytest.approx(3 / 6)
    assert mix.oracle(2) == pytest.approx(5 / 6)
    columns = list(RIGHT.values())
    pairs = [phi(a, b) for a, b in combinations(columns, 2)]
    assert mix.candidate_phi == pytest.approx(sum(pairs) / len(pairs))
    single = report["fake-a t=0.7"]
    assert (single.k, single.oracle(), single.beta, single.candidate_phi) == (0, None, None, None)
    assert report.pooled_oracle == pytest.approx(5 / 6)


async def test_the_error_correlation_of_the_single_agents():
    report = await moa.eval({"mix": MIX}, TASKS, fake_client())
    pairs = report.error_correlation()
    assert set(pairs) == set(combinations(BASELINES, 2))
    assert pairs[("fake-a t=0.7", "fake-a t=0")] == pytest.approx(1.0)
    assert pairs[("fake-a t=0.7", "fake-b t=0.7")] == pytest.approx(
        phi(RIGHT["fake-a"], RIGHT["fake-b"])
    )


# -- the cache ---------------------------------------------------------------------------------
async def test_the_mixture_is_served_its_agents_answers_from_the_cache():
    client = fake_client()
    report = await moa.eval({"mix": MIX}, TASKS, client)
    mix = report["mix"]
    assert mix.calls == 18 and mix.cached_calls == 18  # 6 tasks x 3 agents, none asked again
    for name in BASELINES:
        assert report[name].calls == 6 and report[name].cached_calls == 0
    assert len(client.calls) == 6 * 6  # each baseline once per task; the mixture nothing
    assert mix.input_tokens == 18 * 10 and mix.output_tokens == 18 * 2  # as if it ran alone


async def test_a_cache_file_resumes_an_eval_without_a_call(tmp_path):
    with Cache(tmp_path / "eval.sqlite") as cache:
        first = await moa.eval({"mix": MIX}, TASKS, fake_client(), cache=cache)
        again = fake_client()
        second = await moa.eval({"mix": MIX}, TASKS, again, cache=cache)
    assert again.calls == []
    assert all(c.cached_calls == c.calls for c in second)
    assert [c.correct for c in second] == [c.correct for c in first]


# -- failures ----------------------------------------------------------------------------------
async def test_a_failing_run_is_counted_wrong_with_its_error():
    boom = ProviderError("boom", model="fake-bad", retryable=False)
    replies = {**REPLIES, "fake-bad": ["4", boom, "Rome", "10", "8", "18"]}
    report = await moa.eval({"bad": Propose(["fake-bad"])}, TASKS, fake_client(replies))
    bad = report["bad"]
    assert bad.correct == [True, False, True, True, True, True]
    failed = bad.results[1]
    assert failed.reply is None and not failed.correct
    assert "boom" in failed.error and "fake-bad" in failed.error
    assert [r.error for i, r in enumerate(bad.results) if i != 1] == [None] * 5
    assert bad.errors == 1
    assert "bad (1 failed)" in str(report)
    assert report.to_dict()["contenders"][0]["results"][1]["error"] == failed.error


async def test_a_mixture_survives_a_failing_member_and_scores_it_wrong():
    boom = ProviderError("boom", model="fake-c", retryable=False)
    replies = {**REPLIES, "fake-c": boom}
    report = await moa.eval({"mix": MIX}, TASKS, fake_client(replies), baselines=False)
    mix = report["mix"]
    assert mix.errors == 0
    assert [r.candidates[2] for r in mix.results] == [False] * 6  # no reply: wrong


# -- seeds -------------------------------------------------------------------------------------
def without_wall(report) -> dict:
    out = report.to_dict()
    for c in out["contenders"]:
        del c["wall"]
    return out


async def test_an_eval_is_repeatable_by_its_seed():
    first = await moa.eval({"mix": MIX}, TASKS, hot_client(), seed=5)
    second = await moa.eval({"mix": MIX}, TASKS, hot_client(), seed=5)
    assert without_wall(first) == without_wall(second)
    assert first == second  # wall time is not compared
    assert first.seed == 5


async def test_another_seed_samples_other_answers():
    one = await moa.eval({"mix": MIX}, TASKS, hot_client(), seed=1)
    two = await moa.eval({"mix": MIX}, TASKS, hot_client(), seed=2)
    sampled = [[r.reply for r in report["fake-a t=0.7"].results] for report in (one, two)]
    assert sampled[0] != sampled[1]
    assert all(reply.startswith("sample ") for reply in sampled[0])
    greedy = [[r.reply for r in report["fake-a t=0"].results] for report in (one, two)]
    assert greedy[0] == greedy[1] == REPLIES["fake-a"]


async def test_every_contender_asks_a_task_with_the_same_seed():
    client = hot_client()
    report = await moa.eval({"mix": MIX}, TASKS, client, seed=3)
    # The mixture's sampled answers are the baselines' (one cache, one seed per task).
    mix_candidates = [r.reply for r in report["fake-a t=0.7"].results]
    seeds = {c["seed"] for c in client.calls if c["model"] == "fake-a" and c["temp"] > 0}
    assert len(seeds) == 6 and {f"sample {s}" for s in seeds} == set(mix_candidates)


# -- how contenders are given ------------------------------------------------------------------
async def test_expressions_and_recipe_names_are_contenders():
    expression = "Propose(['fake-a', 'fake-b', 'fake-c']) | Majority()"
    report = await moa.eval([expression, "self_moa"], TASKS, fake_client(), model="fake-a")
    assert report.names == [*BASELINES, expression, "self_moa"]
    assert report[expression].correct == MAJORITY_RIGHT
    self_moa = report["self_moa"]
    assert self_moa.k == 6  # six samples of fake-a
    assert self_moa.correct == RIGHT["fake-a"]  # its aggregator is fake-a too
    assert self_moa.expression == repr(moa.recipes.self_moa("fake-a"))


async def test_a_mapping_names_the_contenders():
    report = await moa.eval({"one": Propose(["fake-b"]), "mix": MIX}, TASKS, fake_client())
    assert report.names == ["one", *[n for n in BASELINES if n != "fake-b t=0.7"], "mix"]
    assert report["one"].correct == RIGHT["fake-b"]
    assert report.best_single.name == "one"
    with pytest.raises(KeyError, match=r"no contender is named 'two'"):
        report["two"]


def test_eval_sync_from_a_script_on_either_event_loop():
    on_asyncio = moa.eval_sync({"mix": MIX}, TASKS, fake_client(), backend="asyncio")
    on_trio = moa.eval_sync({"mix": MIX}, TASKS, fake_client(), backend="trio")
    assert on_asyncio["mix"].correct == MAJORITY_RIGHT
    assert on_asyncio == on_trio


async def test_tasks_may_be_a_file_or_dicts(tmp_path):
    path = tmp_path / "tasks.jsonl"
    path.write_text(
        "\n".join(json.dumps({"id": t.id, "prompt": t.prompt, "answer": t.answer}) for t in TASKS),
        encoding="utf-8",
    )
    from_file = await moa.eval({"mix": MIX}, path, fake_client())
    from_dicts = await moa.eval(
        {"mix": MIX},
        [{"id": t.id, "question": t.prompt, "answer": t.answer} for t in TASKS],
        fake_client(),
    )
    assert from_file["mix"].correct == from_dicts["mix"].correct == MAJORITY_RIGHT


# -- checked before any call -------------------------------------------------------------------
async def test_a_scorer_that_cannot_fit_is_refused_before_any_call():
    client = fake_client()
    with pytest.raises(TaskError, match=r"task 't2': the number scorer"):
        await moa.eval({"mix": MIX}, TASKS, client, scorer="number")
    assert client.calls == []


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"tasks": 3}, TypeError, r"tasks must be a JSON Lines or Parquet path"),
        ({"progress": "yes"}, TypeError, r"progress must be a callable or None"),
        ({"baselines": 1}, TypeError, r"baselines=\.\.\.\): a bool"),
        ({"max_runs": 0}, ValueError, r"max_runs"),
        ({"prices": 3}, TypeError, r"prices=\.\.\.\)"),
        ({"client": "not a client"}, TypeError, r"client must be an async callable"),
    ],
)
async def test_bad_arguments_are_refused_before_any_call(kwargs, error, message):
    client = fake_client()
    args = {"contenders": {"mix": MIX}, "tasks": TASKS, "client": client, **kwargs}
    with pytest.raises(error, match=message):
        await moa.eval(**args)
    assert client.calls == []


# -- cost --------------------------------------------------------------------------------------
@pytest.mark.parametrize("prices", [PRICES, moa.Prices(PRICES)])
async def test_prices_give_the_cost_and_the_cost_per_right_answer(prices):
    report = await moa.eval({"mix": MIX}, TASKS, fake_client(), prices=prices)
    best = report["fake-b t=0.7"]
    assert best.cost == pytest.approx(6 * CALL)
    assert best.cost_per_correct == pytest.approx(6 * CALL / 4)
    assert report["fake-c t=0"].cost_per_correct == pytest.approx(6 * CALL / 2)
    mix = report["mix"]
    assert mix.cost == pytest.approx(18 * CALL)  # as if it ran alone: its cached calls too
    assert mix.cost_per_correct == pytest.approx(18 * CALL / 4)
    assert all(c.unpriced == () for c in report)
    assert report.cost_axis == "cost"
    assert report.per_task(mix) == pytest.approx(3 * CALL)
    # Every single agent costs a call a task; the two fake-b are the most accurate of them,
    # and the mixture, three times dearer, is no more accurate.
    assert report.frontier() == ["fake-b t=0"]


async def test_an_unpriced_model_leaves_the_cost_unknown_and_is_named():
    prices = {"fake-a": (1.0, 2.0), "fake-b": (1.0, 2.0)}
    report = await moa.eval({"mix": MIX}, TASKS, fake_client(), prices=prices)
    assert report["fake-a t=0"].cost == pytest.approx(6 * CALL)
    for name in ("fake-c t=0.7", "fake-c t=0", "mix"):
        assert report[name].cost is None and report[name].cost_per_correct is None
        assert report[name].unpriced == ("fake-c",)
    assert report.cost_axis == "calls"
    assert report.per_task(report["mix"]) == 3.0
    lines = [line for line in str(report).splitlines() if "price" in line.lower()]
    assert lines and all("fake-c" in line for line in lines)
    assert not any("fake-a" in line for line in lines)


async def test_the_frontier_by_calls_where_costs_are_unknown():
    report = await moa.eval({"mix": MIX}, TASKS, fake_client())
    assert all(c.cost is None for c in report)
    assert report.cost_axis == "calls"
    assert report.frontier() == ["fake-b t=0"]


# -- confidence --------------------------------------------------------------------------------
async def test_a_mixture_that_reads_confidence_runs_first_and_serves_the_baselines():
    # fake-b is sure of every answer, the others are not: the weighted vote follows fake-b
    # where a bare count would not (t1: 6 by count, 7 by weight; t3: 11 by count, 10).
    client = fake_client(sure={"fake-a": -5.0, "fake-b": -0.01, "fake-c": -5.0})
    weighted = Propose(["fake-a", "fake-b", "fake-c"]) | WeightedMajority()
    report = await moa.eval({"weighted": weighted}, TASKS, client)
    assert report["weighted"].correct == RIGHT["fake-b"]
    assert [r.reply for r in report["weighted"].results][1] == "7"
    assert report["weighted"].cached_calls == 0
    for name in ("fake-a t=0.7", "fake-b t=0.7", "fake-c t=0.7"):
        assert report[name].cached_calls == 6  # the mixture's answers, with confidence
    for name in ("fake-a t=0", "fake-b t=0", "fake-c t=0"):
        assert report[name].cached_calls == 0
    assert all(c["logprobs"] for c in client.calls if c["temp"] > 0)


async def test_a_contender_needing_confidence_on_a_client_without_it_is_refused_before_any_call():
    client = plain_client()
    weighted = Propose(["fake-a", "fake-b"]) | WeightedMajority()
    with pytest.raises(ConfidenceUnavailableError, match=r"WeightedMajority reads each response"):
        await moa.eval({"mix": MIX, "weighted": weighted}, TASKS, client)
    assert client.calls == []


async def test_a_client_without_seed_or_logprobs_serves_a_plain_eval():
    report = await moa.eval({"mix": MIX}, TASKS, plain_client())
    assert report["mix"].correct == MAJORITY_RIGHT


# -- the Judge ---------------------------------------------------------------------------------
def judge_client(rule):
    """fake-a as before, and a judge: ``rule(reference, candidate, reference_first)`` says
    YES or not. ``client.asked`` logs (reference, candidate, reference_first)."""
    plain = fake_client()
    asked: list[tuple[str, str, bool]] = []

    async def client(*, model, messages, temp, max_tokens, seed=None):
        if model != "judge":
            return await plain(
                model=model, messages=messages, temp=temp, max_tokens=max_tokens, seed=seed
            )
        assert messages[0]["role"] == "system" and "YES or NO" in messages[0]["content"]
        text = messages[-1]["content"]
        reference = re.search(r"Reference answer:\n(.*?)(?:\n\n|$)", text, re.S).group(1)
        candidate = re.search(r"Candidate answer:\n(.*?)(?:\n\n|$)", text, re.S).group(1)
        first = text.index("Reference answer:") < text.index("Candidate answer:")
        asked.append((reference, candidate, first))
        return ("YES" if rule(reference, candidate, first) else "NO"), 10, 1

    client.asked = asked
    return client


async def test_the_judge_is_asked_in_both_orders_and_scores_the_replies():
    client = judge_client(lambda ref, cand, first: ref.lower() == cand.lower())
    report = await moa.eval(
        {"a": Propose(["fake-a"], temp=0)},
        TASKS,
        client,
        scorer=Judge("judge"),
        prices={"judge": (1.0, 2.0)},
    )
    assert report["a"].correct == RIGHT["fake-a"]
    expected = {(t.answer, reply) for t, reply in zip(TASKS, REPLIES["fake-a"], strict=True)}
    assert {(r, c) for r, c, _ in client.asked} == expected
    for ref, cand in expected:  # each reply judged once in each order
        assert sorted(f for r, c, f in client.asked if (r, c) == (ref, cand)) == [False, True]
    assert report.judge_calls == 12
    assert report.judge_cost == pytest.approx(12 * (10 * 1.0 + 1 * 2.0) / 1e6)
    assert report.scorer.startswith("judge")
    assert "The judge made 12 calls" in str(report)


async def test_the_judge_scores_a_mixtures_candidates_too():
    client = judge_client(lambda ref, cand, first: ref.lower() == cand.lower())
    report = await moa.eval({"mix": MIX}, TASKS, client, scorer=Judge("judge"), baselines=False)
    mix = report["mix"]
    assert mix.correct == MAJORITY_RIGHT
    candidates = [tuple(RIGHT[m][i] for m in ("fake-a", "fake-b", "fake-c")) for i in range(6)]
    assert [r.candidates for r in mix.results] == candidates
    # The reply and three candidates, each in both orders; a text judged before is cached
    # (the reply is one of the candidates) but still counted.
    assert report.judge_calls == 6 * 4 * 2
    assert len(client.asked) < report.judge_calls


async def test_a_judge_that_favours_a_position_decides_nothing():
    client = judge_client(lambda ref, cand, first: first)  # YES whenever the reference leads
    report = await moa.eval(
        {"a": Propose(["fake-a"], temp=0)}, TASKS, client, scorer=Judge("judge")
    )
    assert report["a"].correct == [False] * 6
    assert report.judge_cost is None  # the judge has no price


# -- scorers and progress ----------------------------------------------------------------------
async def test_a_scorer_function_that_returns_no_bool_fails_the_eval_with_a_type_error():
    with pytest.raises(TypeError, match=r"a scorer function returns a bool, returned 1 \(int\)"):
        await moa.eval({"a": Propose(["fake-a"])}, TASKS, fake_client(), scorer=lambda r, t: 1)


async def test_a_scorer_function_decides():
    def same_length(reply: str, task: Task) -> bool:
        return len(reply) == len(task.answer)

    report = await moa.eval(
        {"a": Propose(["fake-a"], temp=0)}, TASKS, fake_client(), scorer=same_length
    )
    want = [len(r) == len(t.answer) for r, t in zip(REPLIES["fake-a"], TASKS, strict=True)]
    assert report["a"].correct == want
    assert "same_length" in report.scorer


async def test_named_scorers_are_reported_by_name():
    report = await moa.eval(
        {"a": Propose(["fake-a"], temp=0)}, TASKS, fake_client(), scorer="contains"
    )
    assert report.scorer == "contains"
    # "contains" on numbers: "4" is a word of "4", and so on; Paris is not Rome.
    assert report["a"].correct == RIGHT["fake-a"]


async def test_progress_is_called_once_per_run_with_the_total():
    seen: list[tuple[int, int, str]] = []
    report = await moa.eval(
        {"mix": MIX}, TASKS, fake_client(), progress=lambda *a: seen.append(a), max_runs=1
    )
    total = len(report.names) * len(TASKS)
    assert total == 42
    assert [done for done, _, _ in seen] == list(range(1, total + 1))
    assert {t for _, t, _ in seen} == {total}
    assert sorted(name for _, _, name in seen) == sorted(report.names * len(TASKS))


# -- the report --------------------------------------------------------------------------------
async def test_the_table_names_every_contender_and_the_best_single_agent():
    report = await moa.eval({"mix": MIX}, TASKS, fake_client())
    text = str(report)
    assert text == report.table()
    for name in report.names:
        assert name in text
    assert "Best single agent: fake-b t=0.7 (66.7 %), chosen on these tasks." in text
    assert "6 tasks, scorer auto, seed 0." in text
    assert "Pooled oracle (some reply or candidate right): 83.3 %." in text
    mix_line = next(line for line in text.splitlines() if line.startswith("mix"))
    assert "66.7" in mix_line and "83.3 @3" in mix_line and "16.7" in mix_line


async def test_a_report_without_a_single_agent():
    report = await moa.eval({"mix": MIX}, TASKS, fake_client(), baselines=False)
    assert report.best_single is None
    with pytest.raises(ValueError, match=r"no single agent to compare with"):
        report.versus("mix")
    assert "Best single agent" not in str(report)
    assert report.rows()[0]["delta"] is None


async def test_save_json_csv_and_svg(tmp_path):
    report = await moa.eval({"mix <&> 'quoted'": MIX}, TASKS, fake_client(), prices=PRICES)

    report.save(tmp_path / "r.json")
    saved = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert saved == report.to_dict()
    assert saved["best_single"] == "fake-b t=0.7"
    assert [c["name"] for c in saved["contenders"]] == report.names
    assert [r["correct"] for r in saved["contenders"][-1]["results"]] == MAJORITY_RIGHT

    report.save(tmp_path / "r.csv")
    with open(tmp_path / "r.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == report.names
    assert [int(r["right"]) for r in rows] == [c.right for c in report]
    assert [float(r["low"]) for r in rows] == [c.interval[0] for c in report]
    assert rows[2]["delta_difference"] == ""  # the best single agent itself
    delta = report.versus("mix <&> 'quoted'")
    assert float(rows[-1]["delta_difference"]) == pytest.approx(delta.difference)
    assert int(rows[-1]["delta_won"]) == delta.won and int(rows[-1]["delta_lost"]) == delta.lost

    report.save(str(tmp_path / "r.svg"))
    root = ET.parse(tmp_path / "r.svg").getroot()
    ns = "{http://www.w3.org/2000/svg}"
    assert root.tag == f"{ns}svg"
    assert len(root.findall(f"{ns}circle")) == len(report.names)
    texts = [t.text or "" for t in root.iter(f"{ns}text")]
    assert any("mix <&> 'quoted'" in t for t in texts)
    assert any("$ per task" in t for t in texts)


async def test_save_refuses_an_unknown_suffix(tmp_path):
    report = await moa.eval({"a": Propose(["fake-a"])}, TASKS, fake_client())
    with pytest.raises(ValueError, match=r"must be \.json, \.csv, \.svg or \.png"):
        report.save(tmp_path / "r.txt")
    assert not (tmp_path / "r.txt").exists()


async def test_save_png_needs_matplotlib(tmp_path):
    report = await moa.eval({"a": Propose(["fake-a"])}, TASKS, fake_client())
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"matplotlib"):
            report.save(tmp_path / "r.png")
    else:
        report.save(tmp_path / "r.png")
        assert (tmp_path / "r.png").read_bytes().startswith(b"\x89PNG")


async def test_a_conversation_task_is_asked_whole_of_every_contender_and_the_judge():
    chat = [
        {"role": "user", "content": "Which planet is the largest?"},
        {"role": "assistant", "content": "Jupiter."},
        {"role": "user", "content": "How many moons does it have?"},
    ]
    seen: list[tuple[str, list[dict]]] = []

    async def client(*, model, messages, temp, max_tokens):
        seen.append((model, messages))
        return ("YES" if model == "judge" else "95"), 5, 1

    task = Task("moons", "How many moons does it have?", "95", earlier=(
        ("user", "Which planet is the largest?"), ("assistant", "Jupiter."),
    ))  # fmt: skip
    assert task.asked == chat
    mix = Propose(["a", "b"]) | moa.Aggregate("a")
    report = await moa.eval({"mix": mix}, [task], client, scorer=moa.Judge("judge"))
    assert report["mix"].correct == [True]
    assert "judge" in {model for model, _ in seen}
    # Every call, the judge's too, reads the earlier turns in order before its own messages.
    for _, messages in seen:
        turns = [(m["role"], m["content"]) for m in messages]
        at = turns.index(("assistant", "Jupiter."))
        assert turns[at - 1] == ("user", "Which planet is the largest?")
    assert report.to_dict()["tasks"][0]["earlier"] == [list(t) for t in task.earlier]

"""The selection steps with a scripted client: the model-free Majority, the position-robust Pick,
and Self-MoA-Seq (AggregateSeq), including their rounds in history."""

from __future__ import annotations

import re

import pytest
from conftest import FAST

from moa import (
    AggregateSeq,
    Cache,
    Majority,
    Pick,
    Propose,
    StepFailedError,
    Vote,
    parse_pipeline,
    run,
)
from moa.testing import ScriptedClient

pytestmark = pytest.mark.anyio


def fixed(*texts):
    """Proposals: the i-th proposer model 'p{i}' answers texts[i]."""
    return {f"p{i}": t for i, t in enumerate(texts)}


def client_for(answers, judge=None, **kw):
    def reply(model, messages):
        if model in answers:
            return answers[model]
        return judge(messages)

    return ScriptedClient(reply, **kw)


def shown(messages):
    """The candidates a judge was shown, in order."""
    user = messages[-1]["content"]
    return re.findall(r"Response \d+:\n(.*?)(?:\n\n|$)", user.split("\n\nQuestion:")[0], re.S)


# -- Majority(...) ---------------------------------------------------------------------------
async def test_vote_extract_keeps_the_most_common_answer_verbatim_without_a_call():
    answers = fixed("It is 42.", "I think 41", "The answer: 42, surely", "no idea")
    client = client_for(answers)
    pipe = Propose(list(answers)) | Majority(r"-?\d+")
    result, history = await run(pipe, "q", client, seed=1)
    assert result == "It is 42."  # the first response that gave the winning answer
    assert len(client.calls) == 4 and history.steps[1].calls == ()
    assert history.steps[1].notes == ("Majority: '42' from 2 of 4 responses; 1 had no answer",)


async def test_vote_extract_uses_the_last_match_or_the_first_group():
    answers = fixed("3 + 4 = 7", "so 7", "Answer: (8)")
    for extract, want in ((r"\d+", "3 + 4 = 7"), (r"Answer: \((\d)\)", "Answer: (8)")):
        result, _ = await run(
            Propose(list(answers)) | Majority(extract), "q", client_for(answers), seed=1
        )
        assert result == want


async def test_vote_extract_function_and_ties_broken_by_the_seeded_rng():
    answers = fixed("Paris", "paris.", "Lyon", "LYON")
    pipe = Propose(list(answers)) | Majority(lambda t: t.strip(".").lower())
    winners = set()
    for seed in range(30):
        result, history = await run(pipe, "q", client_for(answers), seed=seed)
        again, _ = await run(pipe, "q", client_for(answers), seed=seed)
        assert result == again  # the tie-break replays from the seed
        assert "a tie with" in history.steps[1].notes[0]
        winners.add(result)
    assert winners == {"Paris", "Lyon"}


async def test_vote_extract_with_no_answer_anywhere_keeps_the_first_and_says_so():
    answers = fixed("none", "nothing")
    result, history = await run(
        Propose(list(answers)) | Majority(r"\d+"), "q", client_for(answers), seed=1
    )
    assert result == "none"
    assert "no answer could be extracted" in history.steps[1].notes[0]


async def test_vote_extract_function_returning_a_non_str_is_an_error():
    with pytest.raises(TypeError, match=r"extract must return a str or None, returned 3"):
        await run(Propose(["a"]) | Majority(lambda t: 3), "q", ScriptedClient(), seed=1)


@pytest.mark.parametrize(
    "make, error",
    [
        (lambda: Vote(), r"missing 1 required positional argument: 'agent'"),
        (lambda: Vote("j", extract=r"\d"), r"takes no judge.*for a judge use Vote\('judge'\)"),
        (lambda: Vote(extract=r"\d", prompt="p"), "takes no judge and no prompt"),
        (lambda: Majority("(unclosed"), r"'\(unclosed' is not a valid regex"),
        (lambda: Majority(3), "extract must be a regex str, a function"),
        (lambda: Pick("j", times=0), r"times must be an int >= 1, got 0"),
        (lambda: Pick(["j"]), "takes one model name, not a list"),
        (lambda: Pick("j", times=2, min_success=3), "min_success"),
        (lambda: AggregateSeq("m", window=1), r"window must be an int >= 2, got 1"),
        (lambda: AggregateSeq("m", reserved=0), r"reserved must be an int >= 1"),
        (lambda: AggregateSeq("m", window=3, reserved=3), "reserved must be below window"),
    ],
)
def test_bad_arguments_fail_at_construction(make, error):
    with pytest.raises((TypeError, ValueError), match=error):
        make()


def test_vote_extract_is_the_old_spelling_of_majority_and_warns():
    with pytest.warns(DeprecationWarning, match=r"Vote\(extract=...\) is now Majority"):
        old = Vote(extract=r"\d+")
    assert old == Majority(r"\d+") and repr(old) == "Majority('\\\\d+')"
    with pytest.warns(DeprecationWarning):
        assert parse_pipeline("Vote(extract='x')") == Majority("x")


def test_reprs_build_the_same_steps():
    for step in (
        Vote("j"),
        Majority(r"\d+"),
        Pick("j"),
        Pick("j", times=5, temp=0.0),
        AggregateSeq("m", window=3, reserved=2),
    ):
        assert parse_pipeline(repr(step)) == step
    assert repr(Majority(r"\d+")) == "Majority('\\\\d+')"


# -- Pick ----------------------------------------------------------------------------------------
def first_position_judge(right):
    """A judge with a position bias: picks the right answer when it is shown first or second,
    otherwise the first response it sees."""

    def judge(messages):
        cands = shown(messages)
        return str(cands.index(right) + 1) if right in cands[:2] else "1"

    return judge


async def test_pick_shows_every_response_in_every_position_and_keeps_the_winner_verbatim():
    answers = fixed("wrong A", "right", "wrong B")
    seen_orders = []

    def judge(messages):
        seen_orders.append(shown(messages))
        return first_position_judge("right")(messages)

    client = client_for(answers, judge)
    result, history = await run(
        Propose(list(answers)) | Pick("judge", times=3), "q", client, seed=3
    )
    assert result == "right"
    assert len(history.steps[1].calls) == 3
    for position in range(3):  # rotations: each response once in each position
        assert sorted(order[position] for order in seen_orders) == sorted(answers.values())
    assert re.fullmatch(
        r"Pick: picks \d, \d, \d \(response numbers in the current order\) over "
        r"3 orders; kept response 2 with 2 of 3",
        history.steps[1].notes[0],
    )


async def test_one_biased_ask_fails_where_rotated_asks_recover():  # the point of Pick
    answers = fixed("wrong A", "wrong B", "right")
    judge = first_position_judge("right")
    wins = 0
    for seed in range(20):
        result, _ = await run(
            Propose(list(answers)) | Pick("judge", times=3),
            "q",
            client_for(answers, judge),
            seed=seed,
        )
        wins += result == "right"
    assert wins == 20
    # Asked once, the same judge is right only when "right" lands in its first two positions.
    once = [
        await run(
            Propose(list(answers)) | Pick("judge", times=1), "q", client_for(answers, judge), seed=s
        )
        for s in range(20)
    ]
    assert 0 < sum(r == "right" for r, _ in once) < 20


async def test_pick_ties_are_broken_by_the_seed_and_replay():
    answers = fixed("a", "b", "c")
    always_first = lambda messages: "1"  # noqa: E731 - pure position bias: a 3-way tie
    results = set()
    for seed in range(20):
        r1, h1 = await run(
            Propose(list(answers)) | Pick("j"), "q", client_for(answers, always_first), seed=seed
        )
        r2, h2 = await run(
            Propose(list(answers)) | Pick("j"), "q", client_for(answers, always_first), seed=seed
        )
        assert (r1, h1) == (r2, h2)
        assert "a tie, broken at random" in h1.steps[1].notes[0]
        results.add(r1)
    assert results == {"a", "b", "c"}


async def test_pick_with_unreadable_replies_keeps_the_first_and_says_so():
    answers = fixed("a", "b")
    result, history = await run(
        Propose(list(answers)) | Pick("j", times=2),
        "q",
        client_for(answers, lambda m: "the best one"),
        seed=1,
    )
    assert result == "a" and "no response number could be read" in history.steps[1].notes[0]


async def test_pick_goes_on_with_some_judge_calls_failed_and_fails_below_min_success():
    answers = fixed("a", "b")
    client = client_for(answers, lambda m: "2", permanent={"bad"})
    pipe = Propose(list(answers)) | Pick("j", times=2, min_success=2)
    result, _ = await run(pipe, "q", client, seed=1, retry=FAST)
    assert result in answers.values()
    with pytest.raises(StepFailedError, match=r"Pick\('bad', times=2, min_success=2\) failed"):
        await run(
            Propose(list(answers)) | Pick("bad", times=2, min_success=2),
            "q",
            client,
            seed=1,
            retry=FAST,
        )


async def test_pick_of_one_response_makes_no_call():
    client = ScriptedClient()
    result, history = await run(Propose(["a"]) | Pick("j"), "q", client, seed=1)
    assert len(client.calls) == 1 and history.steps[1].notes == (
        "Pick: one response, nothing to pick from",
    )


# -- AggregateSeq (Self-MoA-Seq) -----------------------------------------------------------------
async def test_aggregate_seq_reads_every_response_in_windowed_rounds():
    samples = [f"sample {i}" for i in range(7)]
    answers = fixed(*samples)
    rounds = []

    def aggregator(messages):
        rounds.append(shown(messages))
        return f"synthesis {len(rounds)}"

    result, history = await run(
        Propose(list(answers)) | AggregateSeq("agg", window=3),
        "q",
        client_for(answers, aggregator),
        seed=1,
    )
    assert rounds == [samples[0:3], ["synthesis 1", *samples[3:5]], ["synthesis 2", *samples[5:7]]]
    assert result == "synthesis 3"
    step = history.steps[1]
    assert [c.text for c in step.calls] == ["synthesis 1", "synthesis 2", "synthesis 3"]
    assert step.notes == (
        "round 1: responses 1-3",
        "round 2: 1 synthesis(es) + responses 4-5",
        "round 3: 1 synthesis(es) + responses 6-7",
    )


async def test_aggregate_seq_reserved_slots_keep_the_last_syntheses():
    answers = fixed(*[f"s{i}" for i in range(6)])
    rounds = []

    def aggregator(messages):
        rounds.append(shown(messages))
        return f"syn{len(rounds)}"

    await run(
        Propose(list(answers)) | AggregateSeq("agg", window=4, reserved=2),
        "q",
        client_for(answers, aggregator),
        seed=1,
    )
    assert rounds == [["s0", "s1", "s2", "s3"], ["syn1", "s4", "s5"]]  # one synthesis so far
    rounds.clear()
    answers = fixed(*[f"s{i}" for i in range(8)])
    await run(
        Propose(list(answers)) | AggregateSeq("agg", window=4, reserved=2),
        "q",
        client_for(answers, aggregator),
        seed=1,
    )
    assert rounds == [["s0", "s1", "s2", "s3"], ["syn1", "s4", "s5", "s6"], ["syn1", "syn2", "s7"]]


async def test_aggregate_seq_within_one_window_is_one_round():
    answers = fixed("a", "b")
    result, history = await run(
        Propose(list(answers)) | AggregateSeq("agg", window=3),
        "q",
        client_for(answers, lambda m: "one"),
        seed=1,
    )
    assert result == "one" and len(history.steps[1].calls) == 1


async def test_aggregate_seq_failing_in_a_later_round_raises_with_the_rounds_so_far():
    answers = fixed("a", "b", "c", "d")
    n = 0

    def aggregator(messages):
        nonlocal n
        n += 1
        if n > 1:
            raise RuntimeError("context overflow")
        return "syn"

    with pytest.raises(StepFailedError, match="failed in round 2") as info:
        await run(
            Propose(list(answers)) | AggregateSeq("agg", window=3),
            "q",
            client_for(answers, aggregator),
            seed=1,
            retry=FAST,
        )
    calls = info.value.history.steps[-1].calls
    assert [c.text for c in calls] == ["syn", None] and "context overflow" in calls[1].error


async def test_aggregate_seq_rounds_replay_from_the_cache(tmp_path):
    answers = fixed(*[f"s{i}" for i in range(5)])
    pipe = Propose(list(answers)) | AggregateSeq("agg", window=3)
    with Cache(tmp_path / "c.sqlite") as cache:
        first, _ = await run(
            pipe, "q", client_for(answers, lambda m: "syn " + shown(m)[0]), seed=1, cache=cache
        )
        client = ScriptedClient()
        again, history = await run(pipe, "q", client, seed=1, cache=cache)
    assert again == first and client.calls == [] and len(history.steps[1].calls) == 2


@pytest.mark.parametrize(
    "reply, pick",
    [
        ("2", 1),
        ("2.", 1),
        ("(2)", 1),
        ("#2", 1),
        ("Response 2", 1),
        ("  3 ", 2),
        ("Response 3 is the best.", 2),
        ("[3]", 2),
        ("I pick #1, then 2", 0),
        ("1 + 6 = 7", None),
        ("The answer is 2.", None),
        ("Response 5", None),
        ("", None),
        ("Paris", None),
    ],
)
def test_parse_pick_reads_only_an_explicit_pick(reply, pick):
    from moa.steps import parse_pick

    assert parse_pick(reply, 3) == pick


async def test_pick_asks_for_the_number_after_the_question():
    answers = fixed("a", "b")
    client = client_for(answers, lambda m: "1")
    await run(Propose(list(answers)) | Pick("j", times=1), "What is 2+2?", client, seed=1)
    user = client.calls[-1]["messages"][-1]["content"]
    assert user.endswith(
        "Question:\nWhat is 2+2?\n\nWhich response answers the question best? "
        "Reply with its number (1-2) only."
    )


async def test_a_judge_doing_arithmetic_is_not_read_as_a_pick():
    answers = fixed("7", "8")
    _, history = await run(
        Propose(list(answers)) | Pick("j", times=2),
        "q",
        client_for(answers, lambda m: "1 + 6 = 7"),
        seed=1,
    )
    assert "no response number could be read" in history.steps[1].notes[0]


async def test_vote_extract_ignores_empty_matches_and_reads_any_group():
    answers = fixed("41", "answer: 42", "so 42", "nothing")
    for extract, want in (
        (r"\d*", "answer: 42"),
        (r"answer: (\d+)|(\d+)$", "answer: 42"),
        (lambda t: "" if t == "nothing" else t[-2:], "answer: 42"),
    ):
        result, history = await run(
            Propose(list(answers)) | Majority(extract), "q", client_for(answers), seed=1
        )
        assert result == want, extract
        assert "'42' from 2 of 4" in history.steps[1].notes[0]
    # a group that did not take part in the last match does not hide an earlier answer
    _, history = await run(
        Propose(["p0"]) | Majority(r"x|(\d+)"), "q", client_for({"p0": "7 then x"}), seed=1
    )
    assert history.steps[1].notes == ("Majority: '7' from 1 of 1 responses",)

"""Confidence from the model to the steps that use it: each reply's log-probabilities in its
record, history and cache; responses that carry their agent and confidence through the
transforms between; the selection steps that weigh votes by confidence (WeightedMajority),
keep the most self-consistent agent (MostConsistent) or the surest response (MostConfident);
and a run refused at its start where a step needs confidence the client cannot give."""

from __future__ import annotations

import math

import pytest
from scripted import ScriptedClient

import moa
from moa import (
    Agent,
    Cache,
    Confidence,
    ConfidenceUnavailableError,
    History,
    Majority,
    MostConfident,
    MostConsistent,
    Propose,
    Response,
    Shuffle,
    WeightedMajority,
    parse_pipeline,
    run,
)
from moa.clients import route

pytestmark = pytest.mark.anyio


def scripted(answers: dict[str, str], sure: dict[str, float] | None = None, **kw) -> ScriptedClient:
    """Each model's fixed answer, with the mean log-probability ``sure[model]`` (a model not
    in ``sure`` gives no confidence)."""
    sure = sure or {}
    return ScriptedClient(
        lambda model, msgs: answers[model],
        confidence=lambda model, msgs, text: sure.get(model),
        **kw,
    )


# -- confidence travels ----------------------------------------------------------------------
async def test_a_run_that_reads_confidence_asks_for_it_and_history_keeps_it():
    client = scripted({"a": "4", "b": "5"}, {"a": -0.1, "b": -2.0})
    result, history = await run(Propose(["a", "b"]) | WeightedMajority(), "2+2?", client, seed=1)
    assert result == "4"
    assert all(call.get("logprobs") for call in client.calls)
    confidences = [c.confidence for c in history.steps[0].calls]
    assert confidences == [Confidence(-0.1, 1), Confidence(-2.0, 1)]
    assert History.from_dict(history.to_dict()) == history  # kept through to_dict / from_dict


async def test_a_run_that_reads_no_confidence_never_asks():
    client = scripted({"a": "4"}, {"a": -0.1})
    _, history = await run(Propose(["a"]) | Majority(), "2+2?", client, seed=1)
    assert not any(call.get("logprobs") for call in client.calls)
    assert history.calls[0].confidence is None


async def test_responses_carry_their_agent_and_confidence_through_a_transform():
    seen = []

    @moa.transform
    def look(responses, rng):
        seen.extend((r, r.agent, r.confidence) for r in responses)
        return responses

    client = scripted({"a": "x", "b": "y"}, {"a": -0.5})
    persona = Agent("b", system="Be brief.", name="brief")
    await run(Propose(["a", persona]) | Shuffle() | look | MostConsistent(), "q", client, seed=3)
    assert sorted(seen, key=lambda s: s[0]) == [
        ("x", "a", Confidence(-0.5, 1)),
        ("y", "brief", None),
    ]


async def test_the_cache_stores_confidence_and_asks_again_for_an_answer_stored_without(tmp_path):
    with Cache(tmp_path / "c.sqlite") as cache:
        client = scripted({"a": "4"}, {"a": -0.3})
        await run(Propose(["a"]) | Majority(), "q", client, seed=1, cache=cache)  # no confidence
        await run(Propose(["a"]) | WeightedMajority(), "q", client, seed=1, cache=cache)
        assert len(client.calls) == 2  # the stored answer had no confidence: asked again
        _, history = await run(
            Propose(["a"]) | WeightedMajority(), "q", client, seed=1, cache=cache
        )
        assert len(client.calls) == 2 and history.calls[0].cached
        assert history.calls[0].confidence == Confidence(-0.3, 1)


async def test_a_step_that_needs_confidence_is_refused_at_run_start_on_a_client_without_it():
    async def plain(*, model, messages, temp, max_tokens):
        return "4", 1, 1

    for step in (WeightedMajority(), MostConfident()):
        with pytest.raises(ConfidenceUnavailableError, match=r"takes no `logprobs` keyword"):
            await run(Propose(["a"]) | step, "q", plain)
    result, _ = await run(Propose(["a"]) | MostConsistent(), "q", plain, seed=1)
    assert result == "4"  # reads agents; uses confidence only where there is some


async def test_route_asks_only_the_clients_that_can_give_confidence():
    sure = scripted({"a": "4"}, {"a": -0.2})

    async def plain(*, model, messages, temp, max_tokens):
        return "4", 1, 1

    client = route({"a": sure}, default=plain)
    _, history = await run(Propose(["a", "b"]) | WeightedMajority(), "q", client, seed=1)
    assert [c.confidence for c in history.calls] == [Confidence(-0.2, 1), None]
    assert "1 of 2 responses had no confidence" in history.steps[-1].notes


# -- WeightedMajority ------------------------------------------------------------------------
async def test_weighted_majority_follows_confidence_over_a_bare_count():
    answers = {"a": "It is 4.", "b": "5", "c": "five, so 5"}
    client = scripted(answers, {"a": -0.05, "b": -3.0, "c": -3.0})
    result, history = await run(Propose(list(answers)) | WeightedMajority(), "2+2?", client, seed=1)
    assert result == "It is 4."  # one sure vote outweighs two unsure ones
    majority, _ = await run(Propose(list(answers)) | Majority(), "2+2?", client, seed=1)
    assert majority == "5"
    assert history.steps[-1].notes[0].startswith("WeightedMajority: '4' with weight 0.951")


async def test_weighted_majority_drops_the_least_confident_share_first():
    answers = {"a": "4", "b": "5", "c": "5", "d": "4"}
    client = scripted(answers, {"a": -0.1, "b": -0.5, "c": -0.6, "d": -5.0})
    # All four: 5 weighs e^-0.5 + e^-0.6 = 1.16, 4 weighs e^-0.1 + e^-5 = 0.91.
    result, _ = await run(Propose(list(answers)) | WeightedMajority(), "q", client, seed=1)
    assert result == "5"
    # Without the two least sure (d, c): 4 weighs 0.90, 5 weighs 0.61.
    pipe = Propose(list(answers)) | WeightedMajority(drop=0.5)
    result, history = await run(pipe, "q", client, seed=1)
    assert result == "4"
    assert "dropped the 2 least confident" in history.steps[-1].notes


async def test_weighted_majority_breaks_an_equal_weight_by_the_surest_response():
    # 4: two responses of weight e^-1; 5: one response of weight 2 e^-1, surer than either.
    answers = {"a": "4", "b": "4", "c": "5"}
    client = scripted(answers, {"a": -1.0, "b": -1.0, "c": math.log(2 * math.exp(-1.0))})
    for seed in range(5):
        result, history = await run(
            Propose(list(answers)) | WeightedMajority(), "q", client, seed=seed
        )
        assert result == "5" and "at random" not in history.steps[-1].notes[0]


async def test_weighted_majority_breaks_a_full_tie_with_the_run_s_seed():
    client = scripted({"a": "4", "b": "5"}, {"a": -1.0, "b": -1.0})
    winners = {
        (await run(Propose(["a", "b"]) | WeightedMajority(), "q", client, seed=s))[0]
        for s in range(20)
    }
    assert winners == {"4", "5"}


# -- MostConsistent --------------------------------------------------------------------------
async def test_most_consistent_keeps_the_agent_whose_samples_agree_most():
    # Agent "steady" says 7 three times of three; "split" says 6, 6, 8 (two of three agree),
    # so the plain majority over all six is 6 and 7 tied, and the steady agent wins.
    replies = iter(["6", "6", "8"])

    def reply(model, msgs):
        return "7" if model == "steady" else next(replies)

    client = ScriptedClient(reply)
    pipe = Propose(["steady"] * 3 + ["split"] * 3, temp=0.8) | MostConsistent()
    result, history = await run(pipe, "q", client, seed=1)
    assert result == "7"
    assert history.steps[-1].notes[0].startswith("MostConsistent: '7' from agent steady (100%")


# -- MostConfident ---------------------------------------------------------------------------
async def test_most_confident_keeps_the_surest_response_whatever_it_says():
    answers = {"a": "A long, unsure essay.", "b": "A short, sure one.", "c": "Another essay."}
    client = scripted(answers, {"a": -1.2, "b": -0.2, "c": -0.9})
    result, history = await run(Propose(list(answers)) | MostConfident(), "q", client, seed=1)
    assert result == "A short, sure one."
    assert history.steps[-1].notes == (
        "MostConfident: response 2 of 3 (mean log-probability -0.200)",
    )


# -- as values -------------------------------------------------------------------------------
def test_the_selection_steps_are_values_the_parser_reads():
    for step in (
        WeightedMajority(),
        WeightedMajority(r"\d+", drop=0.25),
        MostConsistent(r"\w+"),
        MostConfident(),
    ):
        assert parse_pipeline(repr(step)) == step
    assert repr(WeightedMajority(drop=0.25)) == "WeightedMajority(drop=0.25)"
    assert repr(moa.Majority()) == "Majority()" and repr(MostConfident()) == "MostConfident()"


@pytest.mark.parametrize(
    "make, kind, rule",
    [
        (
            lambda: WeightedMajority(drop=1.0),
            ValueError,
            r"drop must be a finite number >= 0 and <= 0.99",
        ),
        (lambda: WeightedMajority(drop="half"), TypeError, "drop must be"),
        (lambda: MostConsistent(3), TypeError, "extract must be a regex str"),
        (lambda: Confidence(0.5, 1), ValueError, "finite number <= 0"),
        (lambda: Confidence(-1.0, 0), ValueError, "tokens must be an int >= 1"),
    ],
)
def test_bad_arguments_fail_at_construction(make, kind, rule):
    with pytest.raises(kind, match=rule):
        make()


def test_a_response_is_its_text_and_immutable():
    r = Response("4", agent="a", model="m", confidence=Confidence(-1.0, 2))
    assert r == "4" and hash(r) == hash("4") and r.confidence.mean == -0.5
    with pytest.raises(AttributeError, match="immutable"):
        r.agent = "b"
    import pickle

    assert pickle.loads(pickle.dumps(r)).confidence == Confidence(-1.0, 2)

"""moa.recipes: each recipe equals mixture-llm's pipeline by ==, round-trips through its repr,
checks its arguments, and runs with the scripted client."""

import doctest

import pytest
from scripted import ScriptedClient

import moa
import moa.recipes
from moa import (
    Aggregate,
    Dropout,
    Majority,
    Pipeline,
    Propose,
    Refine,
    Shuffle,
    Synthesize,
    run_sync,
)
from moa.recipes import PROPOSERS, moa_lite, robust_moa, self_moa, together_moa

# mixture-llm's README pipelines, written out by hand.
SEED_PROPOSERS = [
    "wizardlm-2-8x22b",
    "qwen1.5-110b-chat",
    "qwen1.5-72b-chat",
    "llama-3-70b-instruct",
    "mixtral-8x22b-instruct",
    "dbrx-instruct",
]
SEED_TOGETHER_MOA = [
    Propose(SEED_PROPOSERS, temp=0.7, max_tokens=512),
    Synthesize(SEED_PROPOSERS, temp=0.7, max_tokens=512),
    Synthesize(SEED_PROPOSERS, temp=0.7, max_tokens=512),
    Aggregate("qwen1.5-110b-chat"),
]
SEED_MOA_LITE = [
    Propose(SEED_PROPOSERS, temp=0.7, max_tokens=512),
    Synthesize(SEED_PROPOSERS, temp=0.7, max_tokens=512),
    Aggregate("qwen1.5-72b-chat"),
]
SEED_SELF_MOA = [
    Propose(["gpt-5-nano-2025-08-07"] * 6, temp=0.7),
    Aggregate("gpt-5-nano-2025-08-07"),
]
SEED_ROBUST_MOA = [
    Propose(["gpt-5-nano-2025-08-07", "claude-sonnet-4-5", "llama-70b", "gemini-2.5-flash"]),
    Shuffle(),
    Dropout(0.2),
    Aggregate("gpt-5-nano-2025-08-07"),
]

RECIPES = [
    pytest.param(together_moa, SEED_TOGETHER_MOA, 19, id="together_moa"),
    pytest.param(moa_lite, SEED_MOA_LITE, 13, id="moa_lite"),
    pytest.param(self_moa, SEED_SELF_MOA, 7, id="self_moa"),
    pytest.param(robust_moa, SEED_ROBUST_MOA, 5, id="robust_moa"),
]


def test_proposers_are_the_seeds_six_models():
    assert list(PROPOSERS) == SEED_PROPOSERS


def test_together_moa_written_with_pipes():
    assert together_moa() == (
        Propose(PROPOSERS, temp=0.7, max_tokens=512)
        | Synthesize(PROPOSERS, temp=0.7, max_tokens=512)
        | Synthesize(PROPOSERS, temp=0.7, max_tokens=512)
        | Aggregate("qwen1.5-110b-chat")
    )


@pytest.mark.parametrize(("recipe", "seed", "calls"), RECIPES)
def test_defaults_equal_the_seed_pipeline(recipe, seed, calls):
    p = recipe()
    assert isinstance(p, Pipeline)
    assert p == Pipeline(seed)
    assert p == recipe()  # a fresh, equal value every call
    assert hash(p) == hash(Pipeline(seed))


@pytest.mark.parametrize(("recipe", "seed", "calls"), RECIPES)
def test_repr_round_trips(recipe, seed, calls):
    p = recipe()
    assert eval(repr(p), vars(moa)) == p


@pytest.mark.parametrize(("recipe", "seed", "calls"), RECIPES)
def test_runs_with_the_scripted_client(recipe, seed, calls):
    client = ScriptedClient()
    result, history = run_sync(recipe(), "What is 2 + 2?", client, seed=7)
    assert result
    assert history.outputs == (result,)
    assert len(history) == len(seed)
    assert history.total_calls == calls == len(client.calls)
    assert not history.failed_calls


def test_arguments_reach_the_steps():
    p, agg = ["a", "b"], "c"
    assert together_moa(p, agg, temp=0.2, max_tokens=64) == (
        Propose(p, temp=0.2, max_tokens=64)
        | Synthesize(p, temp=0.2, max_tokens=64)
        | Synthesize(p, temp=0.2, max_tokens=64)
        | Aggregate(agg)
    )
    assert moa_lite(p, agg, temp=0.2, max_tokens=64) == (
        Propose(p, temp=0.2, max_tokens=64)
        | Synthesize(p, temp=0.2, max_tokens=64)
        | Aggregate(agg)
    )
    assert self_moa("m", n=3, temp=1.0, max_tokens=99) == (
        Propose(["m", "m", "m"], temp=1.0, max_tokens=99) | Aggregate("m")
    )
    assert robust_moa(p, agg, dropout=0.5) == Propose(p) | Shuffle() | Dropout(0.5) | Aggregate(agg)
    assert robust_moa(p, agg, 0) == Propose(p) | Shuffle() | Dropout(0) | Aggregate(agg)
    assert together_moa(tuple(p)) == together_moa(p)


def test_proposer_settings_reach_the_client_and_the_aggregator_keeps_its_defaults():
    client = ScriptedClient()
    run_sync(moa_lite(["a", "b"], "c"), "q", client)
    assert [(c["model"], c["temp"], c["max_tokens"]) for c in client.calls] == [
        ("a", 0.7, 512),
        ("b", 0.7, 512),
        ("a", 0.7, 512),
        ("b", 0.7, 512),
        ("c", 0.7, 2048),
    ]


def test_self_moa_n_is_checked():
    assert self_moa(n=1) == Propose(["gpt-5-nano-2025-08-07"], temp=0.7) | Aggregate(
        "gpt-5-nano-2025-08-07"
    )
    with pytest.raises(ValueError, match=r"self_moa\(n=\.\.\.\): n must be an int >= 1, got 0"):
        self_moa(n=0)
    with pytest.raises(ValueError, match="got -2"):
        self_moa(n=-2)
    for bad in (True, 2.0, "6", None):
        with pytest.raises(TypeError, match=r"self_moa\(n=\.\.\.\): n must be an int"):
            self_moa(n=bad)


@pytest.mark.parametrize("recipe", [together_moa, moa_lite, robust_moa])
def test_proposers_are_checked(recipe):
    name = recipe.__name__
    with pytest.raises(TypeError, match=rf"{name}\(proposers=\.\.\.\).*bare string.*\['gpt'\]"):
        recipe("gpt")
    with pytest.raises(ValueError, match=rf"{name}\(proposers=\.\.\.\).*at least one model"):
        recipe([])
    with pytest.raises(TypeError, match=rf"{name}\(proposers=\.\.\.\).*non-empty name"):
        recipe(["a", ""])
    with pytest.raises(TypeError, match=rf"{name}\(proposers=\.\.\.\).*list of model names"):
        recipe(None)


@pytest.mark.parametrize("recipe", [together_moa, moa_lite, robust_moa])
def test_aggregator_is_checked(recipe):
    name = recipe.__name__
    with pytest.raises(TypeError, match=rf"{name}\(aggregator=\.\.\.\).*not a list"):
        recipe(aggregator=["a", "b"])
    with pytest.raises(TypeError, match=rf"{name}\(aggregator=\.\.\.\).*non-empty model name"):
        recipe(aggregator="")


def test_self_moa_model_is_checked():
    with pytest.raises(TypeError, match=r"self_moa\(model=\.\.\.\).*not a list"):
        self_moa(["a", "b"])
    with pytest.raises(TypeError, match=r"self_moa\(model=\.\.\.\).*non-empty model name"):
        self_moa(None)


def test_step_errors_name_the_recipe():
    with pytest.raises(ValueError, match=r"^together_moa: Propose\(temp=\.\.\.\)"):
        together_moa(temp=-1)
    with pytest.raises(ValueError, match=r"^moa_lite: Propose\(max_tokens=\.\.\.\)"):
        moa_lite(max_tokens=0)
    with pytest.raises(ValueError, match=r"^self_moa: Propose\(temp=\.\.\.\)"):
        self_moa(temp=-0.5)
    with pytest.raises(ValueError, match=r"^robust_moa: Dropout\(rate\).*between 0 and 1"):
        robust_moa(dropout=1.5)
    with pytest.raises(TypeError, match=r"^robust_moa: Dropout\(rate\)"):
        robust_moa(dropout="0.2")


def test_recipes_compose_like_any_pipeline():
    p = self_moa("m", n=2) | Refine(["m"])
    assert p == Propose(["m", "m"]) | Aggregate("m") | Refine(["m"])


def test_module_doctest():
    result = doctest.testmod(moa.recipes)
    assert result.attempted > 0
    assert result.failed == 0


def test_self_moa_seq_is_samples_then_windowed_aggregation():
    from moa import AggregateSeq
    from moa.recipes import self_moa_seq

    assert self_moa_seq("m", n=8, window=4, reserved=2, max_tokens=50) == (
        Propose(["m"] * 8, temp=0.7, max_tokens=50) | AggregateSeq("m", window=4, reserved=2)
    )
    with pytest.raises(ValueError, match=r"self_moa_seq: AggregateSeq\(window=3, reserved=3\)"):
        self_moa_seq(window=3, reserved=3)
    with pytest.raises(ValueError, match=r"self_moa_seq\(n=...\): n must be an int >= 1"):
        self_moa_seq(n=0)


def test_persona_vote_is_greedy_personas_and_samples_then_a_vote():
    from moa import Agent
    from moa.recipes import VOTE_PERSONAS, persona_vote

    pipe = persona_vote("m", r"\d+", samples=2)
    propose, vote = pipe.steps
    assert vote == Majority(r"\d+")
    agents = propose.agents
    assert len(agents) == len(VOTE_PERSONAS) + 2
    assert agents[0] == Agent("m", temp=0)
    assert [a.system for a in agents[: len(VOTE_PERSONAS)]] == list(VOTE_PERSONAS)
    assert agents[-1] == Agent("m", temp=0.3)
    assert eval(repr(pipe), vars(moa)) == pipe
    named = persona_vote(Agent("m", name="tiny"), personas=[None, "Be brief."], samples=0)
    assert [a.name for a in named.steps[0].agents] == ["tiny", "tiny"]
    with pytest.raises(ValueError, match="samples must be an int >= 0"):
        persona_vote("m", samples=-1)
    with pytest.raises(TypeError, match="personas must be a list of system prompts"):
        persona_vote("m", personas="Be brief.")

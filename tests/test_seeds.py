"""Sampling seeds reach the model: each call's seed comes from the run's seed, the step's path
and the call's sample index; a client gets one only if it takes one; history records it."""

from __future__ import annotations

import functools
import inspect

import pytest
from scripted import ScriptedClient

import moa
from moa import Agent, Aggregate, AggregateSeq, Pick, Propose, Synthesize
from moa._seeds import SEED_BITS, accepts_seed, call_seed

pytestmark = pytest.mark.anyio


class SeededClient(ScriptedClient):
    """A scripted client that takes a seed: its reply names the seed, as a sampler's would
    depend on it."""

    def __init__(self):
        super().__init__(lambda model, messages: model)
        self.seeds = []

    async def __call__(self, *, model, messages, temp, max_tokens, seed=None):
        self.seeds.append(seed)
        text, tin, tout = await super().__call__(
            model=model, messages=messages, temp=temp, max_tokens=max_tokens
        )
        return f"{text} seed={seed}", tin, tout


REQ = moa.steps.Request("m", moa.steps.messages(("user", "q")), 0.7, 10)


def test_call_seeds_are_a_function_of_run_seed_path_request_and_sample():
    seed = call_seed(7, (0,), REQ.identity, 0)
    assert seed == call_seed(
        7, (0,), moa.steps.Request("m", moa.steps.messages(("user", "q")), 0.7, 10).identity, 0
    )
    assert 0 <= seed < 2**SEED_BITS
    others = {
        call_seed(8, (0,), REQ.identity, 0),
        call_seed(7, (1,), REQ.identity, 0),
        call_seed(7, (0,), REQ.identity, 1),
        call_seed(7, (0, 0), REQ.identity, 0),
        call_seed(
            7, (0,), moa.steps.Request("m", moa.steps.messages(("user", "r")), 0.7, 10).identity, 0
        ),
        call_seed(
            7, (0,), moa.steps.Request("m", moa.steps.messages(("user", "q")), 0.0, 10).identity, 0
        ),
    }
    assert seed not in others and len(others) == 6


def test_who_takes_a_seed():
    async def plain(*, model, messages, temp, max_tokens): ...

    async def seeded(*, model, messages, temp, max_tokens, seed=None): ...

    async def kwargs(*, model, messages, temp, max_tokens, **rest): ...

    async def positional_only(model, messages, temp, max_tokens, seed, /): ...

    class Object:
        async def __call__(self, *, model, messages, temp, max_tokens, seed=None): ...

        async def stream(self, *, model, messages, temp, max_tokens): ...

    assert accepts_seed(seeded) and accepts_seed(Object()) and accepts_seed(SeededClient())
    assert not accepts_seed(plain) and not accepts_seed(Object().stream)
    # **kwargs may forward to something that does not take it; a seed by position is no
    # keyword: neither is given one.
    assert not accepts_seed(kwargs) and not accepts_seed(positional_only)
    assert accepts_seed(functools.partial(seeded)) and not accepts_seed(functools.partial(plain))
    assert not accepts_seed(ScriptedClient())


def test_a_slotted_client_is_read_once_for_its_class(monkeypatch):
    # An instance that cannot be weakly referenced is asked through its class: once, not on
    # every run.
    class Slotted:
        __slots__ = ()

        async def __call__(self, *, model, messages, temp, max_tokens, seed=None): ...

    class Plain:
        __slots__ = ()

        async def __call__(self, *, model, messages, temp, max_tokens): ...

    read = []
    signature = inspect.signature
    monkeypatch.setattr(inspect, "signature", lambda fn: read.append(fn) or signature(fn))
    assert accepts_seed(Slotted()) and accepts_seed(Slotted())
    assert not accepts_seed(Plain()) and not accepts_seed(Plain())
    assert len(read) == 2

    class Unhashable:
        __eq__ = object.__eq__
        __hash__ = None  # type: ignore[assignment]

        async def __call__(self, *, model, messages, temp, max_tokens, seed=None): ...

    assert accepts_seed(Unhashable()) and accepts_seed(Unhashable())


async def test_a_client_that_takes_a_seed_gets_one_per_call_and_history_records_it():
    client = SeededClient()
    result, history = await moa.run(Propose(["a", "a", "b"]) | Aggregate("j"), "q", client, seed=5)
    seeds = [c.seed for c in history.calls]
    assert sorted(seeds) == sorted(client.seeds) and None not in seeds
    # Self-MoA's identical requests are different samples: different seeds.
    assert len(set(seeds)) == 4
    asked = [moa.steps.Request(c.model, c.messages, c.temp, c.max_tokens) for c in history.calls]
    assert seeds == [
        call_seed(5, (0,), asked[0].identity, 0),
        call_seed(5, (0,), asked[1].identity, 1),
        call_seed(5, (0,), asked[2].identity, 0),
        call_seed(5, (1,), asked[3].identity, 0),
    ]
    again = await moa.run(Propose(["a", "a", "b"]) | Aggregate("j"), "q", SeededClient(), seed=5)
    assert again == (result, history)


async def test_a_client_that_takes_no_seed_is_never_given_one():
    client = ScriptedClient()  # its __call__ has no seed parameter: a seed would be a TypeError
    result, history = await moa.run(Propose(["a", "a"]) | Aggregate("j"), "q", client, seed=5)
    assert all(c.seed is None for c in history.calls)


@pytest.mark.parametrize(
    "options", [{}, {"timeout": 5}, {"max_concurrency": 1}, {"hedge_after": 5}, {"limits": "rpm"}]
)
async def test_every_call_path_passes_the_seed(options):
    if options.get("limits"):
        options = {"limits": moa.Limits(default=moa.ModelLimit(rpm=1000))}
    client = SeededClient()
    _, history = await moa.run(Propose(["a", "b"]), "q", client, seed=1, **options)
    assert sorted(c.seed for c in history.calls) == sorted(client.seeds)  # any call order
    assert all(f"seed={c.seed}" in c.text for c in history.calls)


async def test_a_seed_stays_with_its_request_when_other_agents_join():
    _, alone = await moa.run(Propose(["a"]), "q", SeededClient(), seed=3)
    _, joined = await moa.run(Propose(["b", "a", "c"]), "q", SeededClient(), seed=3)
    assert alone.calls[0].seed == joined.calls[1].seed


async def test_rounds_and_judges_are_seeded_too():
    client = SeededClient()
    pipe = (
        Propose(["a"] * 4)
        | Pick("j", times=2)
        | Propose(["a"] * 3)
        | AggregateSeq("j", window=2, reserved=1)
    )
    _, history = await moa.run(pipe, "q", client, seed=9)
    assert all(c.seed is not None for c in history.calls)
    assert len({c.seed for c in history.calls}) == len(history.calls)


async def test_agents_settings_and_persona_reach_the_call_and_history():
    client = SeededClient()
    pipe = (
        Propose(
            [
                Agent("m", temp=0),
                Agent("m", temp=0.9, max_tokens=20, system="Be terse.", name="terse"),
            ]
        )
        | Synthesize([Agent("s", system="You check arithmetic.")])
        | Aggregate(Agent("j", temp=0.1))
    )
    _, history = await moa.run(pipe, "q", client, seed=2)
    greedy, terse, synth, judge = history.calls
    assert (greedy.temp, greedy.max_tokens, greedy.agent) == (0, 2048, "Agent('m', temp=0)")
    assert (terse.temp, terse.max_tokens, terse.agent) == (0.9, 20, "terse")
    assert [dict(m) for m in terse.messages] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "q"},
    ]
    assert synth.messages[0]["content"].startswith("You check arithmetic.\n\nYou are given")
    assert judge.temp == 0.1 and judge.agent == "Agent('j', temp=0.1)"
    assert greedy.seed != terse.seed  # different requests never share a seed
    restored = moa.History.from_dict(history.to_dict())
    assert restored == history and restored.calls[1].agent == "terse"


async def test_the_cache_tells_agents_apart_by_their_settings(tmp_path):
    pipe = Propose([Agent("m", temp=0), Agent("m", temp=0.9)])
    with moa.Cache(tmp_path / "c.sqlite") as cache:
        await moa.run(pipe, "q", SeededClient(), seed=1, cache=cache)
        assert len(cache) == 2
        _, again = await moa.run(pipe, "q", SeededClient(), seed=1, cache=cache)
    assert all(c.cached for c in again.calls)
    assert [c.agent for c in again.calls] == ["Agent('m', temp=0)", "Agent('m', temp=0.9)"]


async def test_route_passes_the_seed_only_to_clients_that_take_one():
    from moa.clients import route

    seeded, plain = SeededClient(), ScriptedClient()
    client = route({"s": seeded, "p": plain})
    _, history = await moa.run(Propose(["s", "p"]), "q", client, seed=4)
    assert seeded.seeds == [history.calls[0].seed] and len(plain.calls) == 1
    assert accepts_seed(client) and accepts_seed(client.stream)


async def test_a_batch_with_ids_seeds_each_prompt_from_its_id_not_its_place():
    from moa import row_seed

    prompts, ids = ["a?", "b?", "c?"], ["x", 7, "z"]
    whole = await moa.run_many(Propose(["m", "m"]), prompts, SeededClient(), seed=3, ids=ids)
    part = await moa.run_many(
        Propose(["m", "m"]), prompts[::-1], SeededClient(), seed=3, ids=ids[::-1]
    )
    assert [r.history.seed for r in whole] == [row_seed(3, i) for i in ids]
    assert [r.id for r in whole] == ids
    assert [(r.result, r.history) for r in whole] == [(r.result, r.history) for r in part[::-1]]
    with pytest.raises(ValueError, match="given twice"):
        await moa.run_many(Propose(["m"]), ["a?", "b?"], SeededClient(), ids=[1, 1])
    with pytest.raises(ValueError, match="2 ids for 3 prompts"):
        await moa.run_many(Propose(["m"]), prompts, SeededClient(), ids=[1, 2])

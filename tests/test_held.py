"""moa._held: a finished run held as atoms while run_many goes on, built back equal."""

from __future__ import annotations

import gc

import pytest
from test_conversation import CONVERSATION as CHAT

import moa
from moa import Agent, Aggregate, Budget, Propose, Shuffle
from moa._held import Forms, packed, unpacked, unpacked_all
from tests.scripted import ScriptedClient

pytestmark = pytest.mark.anyio


def same(a, b) -> bool:
    """Equal, the fields equality leaves out too (timings, the budget's figures)."""
    if a != b or a.history != b.history:
        return False
    ha, hb = a.history, b.history
    return (
        (ha.wall_time, ha.budget, ha.conversation) == (hb.wall_time, hb.budget, hb.conversation)
        and [s.duration for s in ha.steps] == [s.duration for s in hb.steps]
        and [c.latency for c in ha.calls] == [c.latency for c in hb.calls]
    )


async def test_a_result_is_held_as_untracked_atoms_and_built_back_equal():
    delays = {"a": 0, "b": 0, "c": 5}
    client = ScriptedClient(lambda m, _: m, delay=lambda m, _: delays.get(m, 0), transient={"b": 1})
    pipe = Propose([Agent("a", system="S"), "b", "c"], quorum=2) | Shuffle() | Aggregate("j")
    results = await moa.run_many(
        pipe, ["q", "r", CHAT], client, seed=1, budget=Budget(calls=100), retry=moa.Retry(initial=0)
    )
    forms = Forms()
    for _ in range(2):  # walked the first time, the second by the code compiled for it
        for r in results:
            held = packed(r, forms)
            assert type(held) is tuple and len(held) == 2
            gc.collect()
            gc.collect()
            assert not gc.is_tracked(held)  # the collector no longer scans it
            assert same(unpacked(held, forms), r)
    assert len(forms.shapes) == 2  # the two one-turn runs share one shape
    assert all(code is not None for code in forms.codes)


async def test_a_failed_run_and_a_foreign_object_are_held_as_they_are():
    client = ScriptedClient(permanent={"a"})
    (failed,) = await moa.run_many(Propose(["a"]), ["q"], client)
    forms = Forms()
    assert not failed.ok and packed(failed, forms) is failed and unpacked(failed, forms) is failed

    class Odd:
        pass

    (ok,) = await moa.run_many(Propose(["b"]), ["q"], ScriptedClient())
    odd = moa.RunResult(ok.index, ok.prompt, ok.result, ok.history, None, Odd(), ok.seed)
    assert packed(odd, Forms()) is odd


async def test_run_many_returns_the_results_it_would_hold_as_objects():
    prompts = [f"q{i}" for i in range(50)]
    got = await moa.run_many(
        Propose(["a", "b"]) | Aggregate("j"), prompts, ScriptedClient(), seed=3
    )
    for i, r in enumerate(got):
        want, history = await moa.run(
            Propose(["a", "b"]) | Aggregate("j"), prompts[i], ScriptedClient(), seed=r.seed
        )
        assert r.index == i and r.result == want and r.history == history


async def test_a_compiled_form_refuses_a_result_of_another_shape_which_is_walked():
    pipe = Propose(["a", "b"]) | Aggregate("j")
    two = await moa.run_many(pipe, ["q", "r"], ScriptedClient(), seed=1)
    (three,) = await moa.run_many(
        Propose(["a", "b", "c"]) | Aggregate("j"), ["q"], ScriptedClient()
    )
    forms = Forms()
    held = [packed(r, forms) for r in (*two, three, *two)]  # the first shape compiled at "r"
    assert forms.codes[0] is not None and forms.codes[1] is None  # the other, seen once
    for h, r in zip(held, (*two, three, *two), strict=True):
        assert same(unpacked(h, forms), r)


async def test_only_so_many_shapes_are_compiled(monkeypatch):
    monkeypatch.setattr("moa._held.COMPILED", 1)
    results = [
        (await moa.run_many(Propose(["a"] * n), ["q", "r"], ScriptedClient(), seed=1))
        for n in (1, 2)
    ]
    forms = Forms()
    held = [packed(r, forms) for rs in results for r in rs]
    assert [c is not None for c in forms.codes] == [True, False]
    assert [unpacked(h, forms) for h in held] == [r for rs in results for r in rs]


async def test_building_them_all_back_pauses_the_collector_and_leaves_it_as_it_was():
    results = await moa.run_many(Propose(["a", "b"]), ["q", "r", "s"], ScriptedClient(), seed=1)
    for enabled in (True, False):
        forms = Forms()
        held = [packed(r, forms) for r in results]
        states: list[bool] = []

        class Spy(list):  # notes whether the collector runs while each result is stored
            def __setitem__(self, i, value):
                states.append(gc.isenabled())
                super().__setitem__(i, value)

        spied = Spy(held)
        (gc.enable if enabled else gc.disable)()
        try:
            unpacked_all(spied, forms)
            assert gc.isenabled() is enabled
        finally:
            gc.enable()
        assert states == [False] * 3 and list(spied) == results

"""Deadlines: a step that can go on without some of its calls (Propose, Synthesize, Refine)
goes on at its deadline with the replies it has, cancels the rest, and says it is degraded in
history, in its StepFinished event and in the saved history; with fewer than min_success it
fails. Times are exact: the tests run on a virtual clock."""

from __future__ import annotations

import anyio
import pytest
from conftest import on_a_virtual_clock

import moa
from moa import Aggregate, History, Propose, Refine, StepFailedError, StepFinished, Synthesize

pytestmark = pytest.mark.anyio

DELAY = {"fast": 1.0, "slow": 60.0}


async def client(*, model, messages, temp, max_tokens):
    await anyio.sleep(DELAY.get(model, 1.0))
    return f"{model} says so", 5, 3


@on_a_virtual_clock
async def test_a_step_goes_on_at_its_deadline_with_the_replies_it_has():
    events: list = []
    start = anyio.current_time()
    result, history = await moa.run(
        Propose(["fast", "slow", "fast"], deadline=8) | Aggregate("fast"),
        "q",
        client,
        on_event=events.append,
    )
    assert anyio.current_time() - start == pytest.approx(8 + 1)  # the deadline, then the aggregator
    step = history.steps[0]
    assert step.outputs == ("fast says so", "fast says so")
    assert [c.cancelled for c in step.calls] == [False, True, False]
    assert (
        step.degraded
        == "deadline of 8 s: 2 of 3 calls answered in time, 1 still running were cancelled"
    )
    assert history.degraded == (step,)
    assert next(e.record.degraded for e in events if isinstance(e, StepFinished)) == step.degraded
    # the aggregator read the two answers, nothing of the call that did not answer
    shown = history.steps[1].calls[0].messages[-1]["content"]
    assert shown.count("fast says so") == 2 and "slow" not in shown and "Response 3" not in shown
    assert History.from_dict(history.to_dict()).steps[0].degraded == step.degraded
    assert result == "fast says so"


@on_a_virtual_clock
async def test_with_fewer_than_min_success_by_the_deadline_the_step_fails():
    with pytest.raises(StepFailedError, match="0 of 2 calls succeeded by its deadline of 5 s"):
        await moa.run(Propose(["slow", "slow"], deadline=5) | Aggregate("fast"), "q", client)
    with pytest.raises(StepFailedError, match="1 of 3 calls succeeded by its deadline"):
        await moa.run(Propose(["fast", "slow", "slow"], deadline=5, min_success=2), "q", client)


@on_a_virtual_clock
async def test_a_run_deadline_is_the_default_of_the_steps_that_take_one():
    start = anyio.current_time()
    _, history = await moa.run(
        Propose(["fast", "slow"]) | Synthesize(["fast", "slow"]) | Aggregate("slow"),
        "q",
        client,
        deadline=10,
    )
    # Propose and Synthesize cut at 10 s each; the aggregator's one call is not cut short
    assert anyio.current_time() - start == pytest.approx(10 + 10 + 60)
    assert [s.degraded is not None for s in history.steps] == [True, True, False]


@on_a_virtual_clock
async def test_a_steps_own_deadline_wins_over_the_runs():
    _, history = await moa.run(
        Propose(["fast", "slow"], deadline=2) | Refine(["fast"]), "q", client, deadline=100
    )
    assert history.steps[0].degraded.startswith("deadline of 2 s")
    assert history.steps[1].degraded is None


@on_a_virtual_clock
async def test_no_degradation_when_every_call_answers_in_time():
    _, history = await moa.run(Propose(["fast", "fast"], deadline=5), "q", client)
    assert history.degraded == () and history.steps[0].degraded is None
    assert "degraded" not in history.to_dict()["steps"][0]


def test_a_bad_deadline_is_refused_where_it_is_made():
    with pytest.raises(ValueError, match="deadline"):
        Propose(["m"], deadline=0)
    with pytest.raises(TypeError, match="deadline"):
        Propose(["m"], deadline="8")
    with pytest.raises(ValueError, match="deadline"):
        moa.RunOptions(deadline=-1)
    assert repr(Propose(["m"], deadline=8)) == "Propose(['m'], deadline=8)"
    assert moa.parse_pipeline("Propose(['m'], deadline=8)") == Propose(["m"], deadline=8)

"""A batch's reused tasks (moa._pool): a function always runs, in a waiting task when one
waits; a group awaits its functions and cancels them as a task group does; and a batch that
reuses tasks behaves as one that does not: the same histories, deadlines and quorums cut the
same calls, a Ctrl-C ends it cleanly."""

from __future__ import annotations

import contextvars
import os
import subprocess
import sys

import anyio
import pytest
from scripted import ScriptedClient

import moa
from moa import Aggregate, Propose
from moa._pool import Slots, Workers

pytestmark = pytest.mark.anyio


RUNS: contextvars.ContextVar[int] = contextvars.ContextVar("runs", default=0)


async def note_runs(seen: list[int]) -> None:
    """Notes how many functions ran in this task's context before, and counts itself."""
    seen.append(RUNS.get())
    RUNS.set(RUNS.get() + 1)


async def test_a_finished_task_takes_the_next_function_and_close_ends_the_waiting_ones():
    seen: list[int] = []

    async with anyio.create_task_group() as tg:
        workers = Workers(tg)
        workers.start_soon(note_runs, seen)
        await anyio.sleep(0.01)  # it ran, and its task waits
        workers.start_soon(note_runs, seen)
        await anyio.sleep(0.01)
        workers.close()
    assert seen == [0, 1]  # the second ran in the first one's task (and its context)


async def test_without_reuse_every_function_gets_a_task_of_its_own():
    seen: list[int] = []

    async with anyio.create_task_group() as tg:
        workers = Workers(tg, reuse=False)
        workers.start_soon(note_runs, seen)
        await anyio.sleep(0.01)
        workers.start_soon(note_runs, seen)
        workers.close()
    assert seen == [0, 0]


async def test_close_waits_for_the_functions_still_running_and_theirs():
    done: list[str] = []

    async def inner() -> None:
        await anyio.sleep(0.02)
        done.append("inner")

    async def outer(workers: Workers) -> None:
        await anyio.sleep(0.01)
        async with workers.group() as group:  # started after close: it still runs
            group.start_soon(inner)
        done.append("outer")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            workers = Workers(tg)
            workers.start_soon(outer, workers)
            workers.close()
    assert done == ["inner", "outer"]


async def test_a_function_that_raises_cancels_the_others_and_the_block_as_a_task_group_does():
    events: list[str] = []

    async def slow(i: int) -> None:
        try:
            await anyio.sleep(10)
        finally:
            events.append(f"cancelled {i}")

    async def bad() -> None:
        await anyio.sleep(0.01)
        raise ValueError("boom")

    async with anyio.create_task_group() as tg:
        workers = Workers(tg)
        with pytest.raises(ExceptionGroup) as caught:
            async with workers.group() as group:
                group.start_soon(slow, 1)
                group.start_soon(bad)
                group.start_soon(slow, 2)
                await anyio.sleep(10)  # the block is cancelled too
                events.append("not reached")
        workers.close()
    assert [type(e) for e in caught.value.exceptions] == [ValueError]
    assert sorted(events) == ["cancelled 1", "cancelled 2"]


async def test_a_group_whose_functions_all_end_leaves_quietly():
    done: list[int] = []

    async def ok(i: int) -> None:
        await anyio.sleep(0.01 * i)
        done.append(i)

    async with anyio.create_task_group() as tg:
        workers = Workers(tg)
        async with workers.group() as group:
            group.start_soon(ok, 2)
            group.start_soon(ok, 1)
        assert sorted(done) == [1, 2]
        workers.close()


async def test_a_reused_task_starts_in_the_pools_context_not_its_starters():
    var: contextvars.ContextVar[str] = contextvars.ContextVar("where", default="unset")
    seen: list[str] = []

    async def note() -> None:
        seen.append(var.get())

    async def starter(workers: Workers) -> None:
        var.set("starter's")
        workers.start_soon(note)  # a new task: a copy of the pool's context, not this one's

    var.set("pool's")
    async with anyio.create_task_group() as tg:
        workers = Workers(tg)
        var.set("changed after")
        workers.start_soon(starter, workers)
        await anyio.sleep(0.01)
        workers.close()
    assert seen == ["pool's"]


async def test_a_cancelled_group_cancels_its_functions_and_awaits_their_cleanup():
    events: list[str] = []

    async def slow(i: int) -> None:
        try:
            await anyio.sleep(10)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.sleep(0.01)  # cleanup that takes a moment
            events.append(f"cleaned {i}")

    async with anyio.create_task_group() as tg:
        workers = Workers(tg)
        with anyio.move_on_after(0.05) as scope:
            async with workers.group() as group:
                group.start_soon(slow, 1)
                group.start_soon(slow, 2)
            events.append("not reached")
        events.append("left")
        workers.close()
    assert scope.cancelled_caught
    assert events == ["cleaned 1", "cleaned 2", "left"] or events == [
        "cleaned 2",
        "cleaned 1",
        "left",
    ]


async def test_a_function_not_started_when_its_group_is_cancelled_never_starts():
    started: list[int] = []

    async def note(i: int) -> None:
        started.append(i)

    async with anyio.create_task_group() as tg:
        workers = Workers(tg)
        async with workers.group() as group:
            group.start_soon(note, 1)
            group.cancel()  # before any of them ran
        workers.close()
    assert started == []


async def test_a_function_handed_to_a_task_as_it_is_cancelled_still_runs():
    ran: list[str] = []

    async def quick() -> None:
        pass

    async def handed() -> None:
        try:
            ran.append("started")
            await anyio.sleep(10)
        finally:
            ran.append("ended")

    async with anyio.create_task_group() as tg:
        workers = Workers(tg)
        workers.start_soon(quick)
        await anyio.sleep(0.01)  # its task now waits for a function
        tg.cancel_scope.cancel()
        workers.start_soon(handed)
    assert ran == ["started", "ended"]


# -- a batch that reuses its tasks -----------------------------------------------------------------
PIPE = Propose(["a", "b", "c"]) | Aggregate("agg")


async def test_a_batch_gives_every_prompt_the_history_a_run_of_its_own_gives():
    prompts = [f"q{i}" for i in range(40)]
    results = await moa.run_many(PIPE, prompts, ScriptedClient(delay=0.001), seed=3, ids=prompts)
    for r in results:
        _, alone = await moa.run(PIPE, r.prompt, ScriptedClient(delay=0.001), seed=r.seed)
        assert r.history.steps == alone.steps  # type: ignore[union-attr]


async def test_a_deadline_in_a_batch_cuts_the_same_calls_as_in_a_run():
    def client() -> ScriptedClient:
        return ScriptedClient(delay=lambda m, _: 10.0 if m == "c" else 0.01)

    pipe = Propose(["a", "b", "c"], deadline=0.2) | Aggregate("agg")
    with anyio.fail_after(5):
        results = await moa.run_many(pipe, ["q1", "q2", "q3"], client(), seed=1)
    _, alone = await moa.run(pipe, "q1", client(), seed=results[0].seed)
    for r in results:
        step = r.history.steps[0]  # type: ignore[union-attr]
        assert [c.cancelled for c in step.calls] == [False, False, True]
        assert step.degraded == alone.steps[0].degraded


async def test_a_quorum_in_a_batch_cancels_the_stragglers_as_in_a_run():
    pipe = Propose(["a", "b", "c"], quorum=2) | Aggregate("agg")
    client = ScriptedClient(delay=lambda m, _: 10.0 if m == "c" else 0.01)
    with anyio.fail_after(5):
        results = await moa.run_many(pipe, ["q1", "q2"], client, seed=1)
    for r in results:
        calls = r.history.steps[0].calls  # type: ignore[union-attr]
        assert [c.cancelled for c in calls] == [False, False, True]
    assert client.in_flight == 0


INTERRUPT = """
import sys, anyio, moa
from moa import Propose, Aggregate

async def client(*, model, messages, temp, max_tokens):
    if messages[-1]["content"].endswith("q7") and model == sys.argv[2]:
        raise KeyboardInterrupt
    await anyio.sleep(0.05)
    return "ok", 1, 1

async def main():
    await moa.run_many(Propose(["a", "b", "c"]) | Aggregate("agg"),
                       [f"q{i}" for i in range(20)], client, max_concurrency=4)

try:
    anyio.run(main, backend=sys.argv[1])
except KeyboardInterrupt:
    print("KeyboardInterrupt")
"""


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("model", ["b", "agg"])  # in a round of calls; in a one-call round
def test_a_client_raising_keyboardinterrupt_ends_a_batch_cleanly(backend, model, tmp_path):
    script = tmp_path / "interrupt.py"
    script.write_text(INTERRUPT)
    proc = subprocess.run(
        [sys.executable, "-W", "error", str(script), backend, model],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert proc.stdout == "KeyboardInterrupt\n", proc.stderr
    assert proc.stderr == ""


# -- slots -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2])
async def test_slots_serve_waiters_in_the_order_they_came_and_never_more_than_n(n):
    slots = Slots(n)
    order: list[int] = []
    held = 0

    async def take(i: int) -> None:
        nonlocal held
        await slots.acquire()
        held += 1
        assert held <= n
        order.append(i)
        await anyio.sleep(0.01)
        held -= 1
        slots.release()

    for _ in range(n):
        await slots.acquire()
    async with anyio.create_task_group() as tg:
        for i in range(6):
            tg.start_soon(take, i)
            while slots.waiting < i + 1:  # it queued: the next one comes after it
                await anyio.sleep(0)
        for _ in range(n):
            slots.release()
    # One slot: strictly in turn. Two: the pair handed slots together may run in either order.
    assert [sorted(order[k : k + n]) for k in range(0, 6, n)] == [
        list(range(k, k + n)) for k in range(0, 6, n)
    ]
    assert repr(slots) == f"<Slots 0/{n} held, 0 waiting>"


async def test_a_waiter_cancelled_before_its_turn_leaves_the_queue():
    slots = Slots(1)
    await slots.acquire()
    with anyio.move_on_after(0.01):
        await slots.acquire()
    assert slots.waiting == 0
    slots.release()  # the slot is free again, not handed to the one that left
    await slots.acquire()
    slots.release()
    assert repr(slots) == "<Slots 0/1 held, 0 waiting>"


async def test_a_waiter_cancelled_as_it_is_handed_a_slot_passes_it_on():
    slots = Slots(1)
    await slots.acquire()
    got: list[str] = []

    async def first(scope_box: list[anyio.CancelScope]) -> None:
        with anyio.CancelScope() as scope:
            scope_box.append(scope)
            await slots.acquire()
            got.append("first")  # not reached: cancelled as the slot came
            slots.release()

    async def second() -> None:
        await slots.acquire()
        got.append("second")
        slots.release()

    box: list[anyio.CancelScope] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(first, box)
        await anyio.sleep(0.01)
        tg.start_soon(second)
        await anyio.sleep(0.01)
        box[0].cancel()  # first is cancelled, and before it runs ...
        slots.release()  # ... handed the slot: it passes it on to second
    assert got == ["second"]
    assert repr(slots) == "<Slots 0/1 held, 0 waiting>"


def test_releasing_a_slot_never_taken_is_an_error():
    with pytest.raises(RuntimeError, match="released more slots than were taken"):
        Slots(1).release()


# -- admission under a cap ---------------------------------------------------------------------
async def test_under_a_cap_a_run_starts_only_while_few_calls_queue():
    in_step = most = 0

    def on_event(event: object) -> None:
        nonlocal in_step, most
        if isinstance(event, moa.StepStarted):
            in_step += 1
            most = max(most, in_step)
        elif isinstance(event, moa.StepFinished):
            in_step -= 1

    async def client(*, model, messages, temp, max_tokens):
        await anyio.sleep(0.01)
        return "ok", 1, 1

    pipe = Propose([f"m{i}" for i in range(8)])
    results = await moa.run_many(
        pipe,
        [f"q{i}" for i in range(30)],
        client,
        max_concurrency=8,
        max_runs=30,
        on_event=on_event,
    )
    assert all(r.ok for r in results)
    # A run's 8 calls fill the cap and the next run's 8 queue: no other starts while they do.
    # A run or two more may start before the last one's calls reach the queue, or as the
    # first is finishing; max_runs alone would let all 30 start.
    assert most <= 4


async def test_without_a_cap_every_run_starts_at_once():
    started: set[str] = set()

    async def client(*, model, messages, temp, max_tokens):
        started.add(messages[-1]["content"])
        await anyio.sleep(0.01)
        return "ok", 1, 1

    results = await moa.run_many(Propose(["a", "b"]), [f"q{i}" for i in range(30)], client)
    assert all(r.ok for r in results) and len(started) == 30


async def test_closing_ends_the_waiting_tasks_but_a_few_while_functions_still_run():
    async def quick() -> None:
        await anyio.sleep(0)

    async def slow() -> None:
        await anyio.sleep(0.05)

    async with anyio.create_task_group() as tg:
        workers = Workers(tg)
        for _ in range(40):
            workers.start_soon(quick)
        await anyio.sleep(0.01)
        assert workers.idle == 40
        workers.start_soon(slow)  # takes one of them
        workers.close()
        await anyio.sleep(0.01)
        assert workers.idle == 16  # kept for what the last functions may start
    assert workers.idle == 0

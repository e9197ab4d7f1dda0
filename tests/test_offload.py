"""Work a step hands off the event loop: a user's regex runs in a worker process, killed past
its time bound, so a pattern that backtracks without end fails its step instead of freezing
every run on the loop; an extractor function runs in a thread. Each test reproduces a defect
found by a hostile-input pass (``Majority(r"(a+)+$")`` on a 33-character reply hung the loop:
no timeout fired, no Ctrl-C came through) and failed before its fix."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import anyio
import pytest
from scripted import ScriptedClient

import moa
from moa import Majority, Propose, StepFailedError, run
from moa._offload import _POOL
from moa.recipes import persona_vote

pytestmark = pytest.mark.anyio

BACKTRACKS = r"(a+)+$"
EVIL = "a" * 32 + "b"  # 2**32 ways to fail: hours of backtracking


class Ticker:
    """A task on the loop that ticks every 10 ms and keeps the longest gap between ticks."""

    def __init__(self) -> None:
        self.ticks = 0
        self.longest = 0.0

    async def run(self) -> None:
        last = time.monotonic()
        while True:
            await anyio.sleep(0.01)
            now = time.monotonic()
            self.longest = max(self.longest, now - last)
            self.ticks += 1
            last = now


async def test_a_regex_that_backtracks_without_end_fails_its_step_and_the_loop_goes_on(
    monkeypatch,
):
    monkeypatch.setattr(moa._contract, "OFF_LOOP_SECONDS", 1.0)
    ticker = Ticker()
    client = ScriptedClient(lambda model, msgs: EVIL)
    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker.run)
        with pytest.raises(StepFailedError, match=r"ran past 1 s and was stopped") as info:
            await run(Propose(["m"]) | Majority(BACKTRACKS), "q", client, seed=1)
        with anyio.fail_after(5):  # a timeout on the loop fires while the regex ran
            await anyio.sleep(0)
        tg.cancel_scope.cancel()
    assert ticker.ticks >= 20 and ticker.longest < 0.9  # the loop was never held for the second
    assert [s.step for s in info.value.history.steps] == ["Propose(['m'])", "Majority('(a+)+$')"]


async def test_after_a_worker_is_killed_the_next_extraction_gets_a_fresh_one(monkeypatch):
    monkeypatch.setattr(moa._contract, "OFF_LOOP_SECONDS", 0.5)
    with pytest.raises(StepFailedError):
        await run(Propose(["m"]) | Majority(BACKTRACKS), "q", ScriptedClient(lambda m, _: EVIL))
    result, _ = await run(
        Propose(["a", "b", "c"]) | Majority(r"\d+"),
        "q",
        ScriptedClient(lambda model, msgs: {"a": "1", "b": "2", "c": "2"}[model]),
        seed=1,
    )
    assert result == "2"
    assert all(w.alive for w in _POOL.idle)


async def test_a_cancelled_run_kills_the_extraction_it_was_waiting_on(monkeypatch):
    client = ScriptedClient(lambda m, _: EVIL)
    with anyio.move_on_after(0.5):
        await run(Propose(["m"]) | Majority(BACKTRACKS), "q", client)
    # The worker that was matching is gone; none left behind is still busy on it.
    assert all(w.alive for w in _POOL.idle)


async def test_persona_vote_over_replies_at_the_size_cap_does_not_freeze_the_loop():
    long = ("12 " * 333_333)[:1_000_000]  # a reply at the cap, numbers all the way
    ticker = Ticker()
    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker.run)
        await run(persona_vote("m"), "q", ScriptedClient(lambda model, msgs: long), seed=1)
        tg.cancel_scope.cancel()
    assert ticker.longest < 1.0  # on the loop it froze it for 6.3 s


async def test_an_extractor_function_runs_in_a_thread_and_the_loop_goes_on():
    def slow(text):
        end = time.monotonic() + 0.5  # pure Python: gives up the GIL every few ms
        while time.monotonic() < end:
            pass
        return text[-1]

    ticker = Ticker()
    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker.run)
        result, _ = await run(
            Propose(["m"]) | Majority(slow), "q", ScriptedClient(lambda m, _: "x1"), seed=1
        )
        tg.cancel_scope.cancel()
    assert result == "x1" and ticker.ticks >= 10


async def test_an_error_in_the_extractor_is_raised_with_the_step_named():
    def broken(text):
        raise KeyError("oops")

    with pytest.raises(KeyError) as info:
        await run(Propose(["m"]) | Majority(broken), "q", ScriptedClient(), seed=1)
    assert any(n.startswith("in step Majority(") for n in info.value.__notes__)


def test_a_forked_child_leaves_its_parents_workers_cleanly():
    # A child forked after the pool started a worker (mutmut forks per mutant) uses its own
    # worker and closes its copies of the parent's pipes: no ResourceWarning at collection.
    script = """
import gc, os, re, sys
import anyio
from moa._contract import OffLoop
from moa._offload import run_off_loop

async def main():
    return await run_off_loop(OffLoop(re.findall, (r"\\d", "a1b2"), process=True))

print("parent", anyio.run(main))
sys.stdout.flush()
pid = os.fork()
if pid == 0:
    print("child", anyio.run(main))
    gc.collect()
    sys.stdout.flush()
    os._exit(0)
os.waitpid(pid, 0)
"""
    proc = subprocess.run(
        [sys.executable, "-X", "dev", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert proc.stdout.splitlines() == ["parent ['1', '2']", "child ['1', '2']"], proc.stderr
    assert "ResourceWarning" not in proc.stderr, proc.stderr

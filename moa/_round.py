"""One round of an LLM step's calls: where each call sits (its site and sample index, and
its sampling seed when the client takes one), the answers served at once (a cache's), then
the rest made concurrently through the run's composed call stack, all of them or until a
quorum. Records come back in request order, never in the order calls finish."""

from __future__ import annotations

from collections.abc import Sequence
from time import monotonic

import anyio

from ._calls import Calls, Outcome, Site
from ._contract import Identity, LLMStep, Request
from ._history import CallRecord
from ._seeds import call_seed

__all__ = ("call_round",)

_new_tuple = tuple.__new__  # a NamedTuple without its __new__'s frame


def _sites(
    calls: Calls,
    path: tuple[int, ...],
    requests: list[Request],
    offset: int,
    seen: dict[Identity, int],
    seed: int | None,
) -> tuple[list[Request], list[Site]]:
    """Where each call sits and, with ``seed`` (the run's, given when the client takes a
    seed), the requests with their sampling seeds. The n-th of several identical requests in
    a step is sample n: six identical Self-MoA calls are six samples, not one answer six
    times; ``seen`` carries the count across a step's rounds."""
    if seed is None and not calls.wants_sample:  # every plain run's rounds: made cheaply
        return requests, [_new_tuple(Site, (path, offset + i, None)) for i in range(len(requests))]
    seeded: list[Request] = []
    sites: list[Site] = []
    for i, req in enumerate(requests):
        identity = req.identity
        sample = seen.get(identity, 0)
        seen[identity] = sample + 1
        if seed is not None:
            req = req.with_seed(call_seed(seed, path, identity, sample))
        seeded.append(req)
        sites.append(Site(path, offset + i, sample))
    return seeded, sites


async def call_round(
    calls: Calls,
    step: LLMStep,
    path: tuple[int, ...],
    requests: list[Request],
    offset: int,
    seen: dict[Identity, int],
    seed: int | None,
) -> tuple[list[CallRecord], BaseException | None, float | None]:
    """One round of ``step``'s calls: the records in request order, the first error the step
    must raise (None when it goes on), and the deadline that cut the round short (None when
    every call ended by itself): the calls still running then are recorded as cancelled."""
    n = len(requests)
    requests, sites = _sites(calls, path, requests, offset, seen, seed)
    results: list[Outcome | None] = [None] * n
    if calls.try_now is not None:
        for i in range(n):
            results[i] = out = calls.try_now(requests[i], sites[i], step)
            if out is not None and out.fatal is not None:  # it cannot be made at all: none is
                return [], out.fatal, None
    todo = range(n) if calls.try_now is None else [i for i in range(n) if results[i] is None]
    # The run's default deadline is for the steps that take one (they can go on without
    # some replies); an aggregator's one call is bounded by timeout, not cut short.
    deadline: float | None = None
    if hasattr(step, "deadline"):
        deadline = step.deadline if step.deadline is not None else calls.deadline
    starts = [0.0] * n
    cut = None
    if deadline is None and step.enough(n) is None:  # every plain round, without a frame more
        await _every(calls, requests, sites, todo, results, starts)
    elif deadline is None:
        await _calls(calls, step, requests, sites, todo, results, starts)
    else:
        with anyio.CancelScope(deadline=anyio.current_time() + deadline) as scope:
            await _calls(calls, step, requests, sites, todo, results, starts)
        if scope.cancelled_caught:
            cut = deadline
            _cancelled(calls, requests, sites, todo, results, starts, sent=True)
    done = [r for r in results if r is not None]  # all of them: every call was awaited
    return [r.record for r in done], next((r.fatal for r in done if r.fatal is not None), None), cut


async def _calls(
    calls: Calls,
    step: LLMStep,
    requests: list[Request],
    sites: list[Site],
    todo: Sequence[int],
    results: list[Outcome | None],
    starts: list[float],
) -> None:
    enough = step.enough(len(requests))
    if enough is None:
        await _every(calls, requests, sites, todo, results, starts)
    else:  # answers served at once count towards the quorum
        met = enough - (len(requests) - len(todo))
        await _quorum(calls, requests, sites, todo, results, met, starts)


async def _every(
    calls: Calls,
    requests: list[Request],
    sites: list[Site],
    todo: Sequence[int],
    results: list[Outcome | None],
    starts: list[float],
) -> None:
    """Every call of ``todo``, concurrently: the first in this task, the others each in a task
    of their own (one task fewer a round, and a one-call round, an aggregator's, makes none):
    a batch's reused tasks where it has them."""
    if not todo:
        return
    call = calls.call
    now = monotonic()
    for i in todo:
        starts[i] = now
    if len(todo) > 1:

        async def one(i: int) -> None:
            results[i] = await call(requests[i], sites[i])

        group = anyio.create_task_group() if calls.workers is None else calls.workers.group()
        async with group as tg:
            for i in todo[1:]:
                tg.start_soon(one, i)
            results[todo[0]] = await call(requests[todo[0]], sites[todo[0]])
    else:
        results[todo[0]] = await call(requests[todo[0]], sites[todo[0]])


async def _quorum(
    calls: Calls,
    requests: list[Request],
    sites: list[Site],
    todo: Sequence[int],
    results: list[Outcome | None],
    enough: int,
    starts: list[float],
) -> None:
    """Runs the calls ``todo`` until ``enough`` of them have answered; the rest are cancelled
    and recorded as cancelled (as never sent, ``attempts=0``, when answers served at once had
    met the quorum already)."""
    answered = 0

    async def one(i: int, scope: anyio.CancelScope) -> None:
        nonlocal answered
        starts[i] = monotonic()
        results[i] = out = await calls.call(requests[i], sites[i])
        if out.record.ok:
            answered += 1
            if answered >= enough:
                scope.cancel()

    if enough > 0:
        async with anyio.create_task_group() as tg:
            for i in todo:
                tg.start_soon(one, i, tg.cancel_scope)
    _cancelled(calls, requests, sites, todo, results, starts, sent=enough > 0)


def _cancelled(
    calls: Calls,
    requests: list[Request],
    sites: list[Site],
    todo: Sequence[int],
    results: list[Outcome | None],
    starts: list[float],
    sent: bool,
) -> None:
    """The calls of ``todo`` with no outcome, recorded as cancelled (``sent``: they reached
    the call stack, one attempt each; else none)."""
    now = monotonic()
    for i in todo:
        if results[i] is None:
            rec = CallRecord.asked(
                requests[i],
                attempts=1 if sent else 0,
                latency=now - starts[i] if starts[i] else 0.0,
                cancelled=True,
            )
            results[i] = Outcome(rec)
            if calls.finished is not None:
                calls.finished(sites[i], rec)

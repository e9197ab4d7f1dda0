"""The walk: how a run goes through a pipeline and writes its history.

Pipelines run their steps in order, Parallels their branches concurrently (each on its own
generator seeded from the run's), transforms apply at once, and an LLM step runs in rounds:
it asks for requests, the walk has the run's composed call stack (:mod:`moa._calls`) make
them concurrently, checks them against the step's ``required``/``enough``, and hands the
replies back. History is assembled in pipeline order, so it never depends on which call
finished first. What wraps each call (retries, limits, cache, events...) is the stack's
business; the walk only asks for calls.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from time import monotonic
from typing import Any

import anyio

from ._bounds import MAX_CALLS, MAX_REQUEST_CHARS
from ._calls import Calls, Outcome, Site, record
from ._events import EventHandler, StepFinished, StepStarted
from ._history import CallRecord, History, StepRecord
from ._llm_steps import LLMStep, Request
from ._pipeline import Parallel, Pipeline, Step, _describe, step_text
from ._seeds import call_seed
from ._transforms import Transform
from .errors import EmptyInputError, MoaError, StepFailedError

__all__ = ("Walk", "walk")


class Walk:
    """One run as the walk sees it: the prompt, the composed calls, the step events' handler,
    whether calls carry seeds, and the KeyboardInterrupt a client raised."""

    __slots__ = ("calls", "interrupt", "on_event", "prompt", "scope", "seed", "seeded")

    def __init__(self, prompt: str, on_event: EventHandler | None, seeded: bool) -> None:
        self.prompt = prompt
        self.on_event = on_event
        self.seeded = seeded
        self.seed = 0
        self.calls: Calls  # set by whoever composes the stack, with self.stop as its interrupt
        self.scope: anyio.CancelScope | None = None
        self.interrupt: BaseException | None = None

    def stop(self, exc: BaseException) -> None:
        """A client raised KeyboardInterrupt or SystemExit: cancel the whole run, so every call
        stops, and raise it when the run has unwound."""
        if self.interrupt is None:
            self.interrupt = exc
        if self.scope is not None:
            self.scope.cancel()


@dataclass(slots=True)
class _Branch:
    """One line of execution: its RNG, its records, and which step (if any) emptied its
    responses."""

    rng: random.Random
    records: list[StepRecord]
    emptied_by: str | None = None


async def walk(step: Step, prompt: str, run: Walk, seed: int) -> tuple[str, History]:
    """Run ``step`` on ``prompt``: the result and the history. A MoaError leaves with the
    history so far; a client's KeyboardInterrupt leaves as itself once every call stopped."""
    run.seed = seed
    root = _Branch(random.Random(seed), [])
    start = monotonic()
    path = () if isinstance(step, Pipeline) else (0,)
    outputs: list[str] = []
    try:
        with anyio.CancelScope() as run.scope:
            outputs = await _exec(run, step, [], root, path)
    except MoaError as exc:  # a failed step, a broken cache: the user keeps what ran
        if run.interrupt is not None:
            raise run.interrupt from None
        exc.history = History(prompt, seed, tuple(root.records), (), monotonic() - start)
        raise
    except BaseExceptionGroup as group:
        interrupt = interrupt_of(group)
        if interrupt is None:
            raise
        raise interrupt from None
    if run.interrupt is not None:
        raise run.interrupt
    history = History(prompt, seed, tuple(root.records), tuple(outputs), monotonic() - start)
    return (outputs[0] if outputs else ""), history


def interrupt_of(group: BaseExceptionGroup) -> BaseException | None:
    """A group holding nothing but KeyboardInterrupts (trio delivers a Ctrl-C into whichever
    task runs, and a task group then wraps it) as the one KeyboardInterrupt, so the caller's
    ``except KeyboardInterrupt`` works; None for any other group."""
    matched, rest = group.split(KeyboardInterrupt)
    if matched is None or rest is not None:
        return None
    first: BaseException = matched
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first


async def _exec(
    run: Walk, step: Step, responses: list[str], br: _Branch, path: tuple[int, ...]
) -> list[str]:
    if isinstance(step, Pipeline):
        for i, sub in enumerate(step.steps):
            responses = await _exec(run, sub, responses, br, (*path, i))
        return responses
    if isinstance(step, LLMStep):
        return await _StepRun(run, step, responses, br, path).run()
    if isinstance(step, Transform):
        return _exec_transform(run, step, responses, br, path)
    if isinstance(step, Parallel):
        return await _exec_parallel(run, step, responses, br, path)
    raise TypeError(
        f"moa cannot run {_describe(step)}: a step must derive from Transform, "
        f"LLMStep, Pipeline or Parallel"
    )


def _exec_transform(
    run: Walk, step: Transform, responses: list[str], br: _Branch, path: tuple[int, ...]
) -> list[str]:
    start = monotonic()
    try:
        out = step.apply(list(responses), br.rng)
    except Exception as exc:
        exc.add_note(f"in step {step!r} at path {path}")
        raise
    if type(out) is not list or not all(type(r) is str for r in out):
        raise TypeError(f"{step!r}.apply must return a list of str, returned {_describe(out)}")
    notes: tuple[str, ...] = ()
    if responses and not out:
        br.emptied_by = f"{step!r} at path {path}"
        notes = (f"{step!r} left no responses",)
    _record(
        run,
        br,
        StepRecord(
            step_text(step),
            path,
            "transform",
            tuple(responses),
            tuple(out),
            (),
            notes,
            monotonic() - start,
        ),
    )
    return out


async def _exec_parallel(
    run: Walk, step: Parallel, responses: list[str], br: _Branch, path: tuple[int, ...]
) -> list[str]:
    start = monotonic()
    # Each branch gets its own generator, seeded from the parent in branch order, so the
    # draws do not depend on how the branches interleave.
    subs = [
        _Branch(random.Random(br.rng.getrandbits(64)), [], br.emptied_by) for _ in step.branches
    ]
    outs: list[list[str]] = [[] for _ in subs]
    failures: list[BaseException | None] = [None] * len(subs)

    async def branch(i: int, tg: anyio.abc.TaskGroup) -> None:
        try:
            outs[i] = await _exec(run, step.branches[i], responses, subs[i], (*path, i))
        except Exception as exc:
            failures[i] = exc
            tg.cancel_scope.cancel()

    try:
        async with anyio.create_task_group() as tg:
            for i in range(len(subs)):
                tg.start_soon(branch, i, tg)
    finally:
        for sub in subs:
            br.records.extend(sub.records)
    for exc in failures:
        if exc is not None:
            raise exc
    out = [r for o in outs for r in o]
    if responses and not out:
        br.emptied_by = f"{step!r} at path {path}"
    _record(
        run,
        br,
        StepRecord(
            step_text(step),
            path,
            "parallel",
            tuple(responses),
            tuple(out),
            (),
            (),
            monotonic() - start,
        ),
    )
    return out


def _record(run: Walk, br: _Branch, rec: StepRecord) -> None:
    br.records.append(rec)
    if run.on_event is not None:
        run.on_event(StepFinished(rec))


# -- an LLM step ---------------------------------------------------------------------------------
_DEFAULT_PLAN = LLMStep.plan


class _StepRun:
    """One LLM step as it runs: its plan's rounds, the calls so far, and their tallies."""

    __slots__ = (
        "br",
        "calls",
        "cancelled",
        "failed",
        "notes",
        "path",
        "plan",
        "responses",
        "rounds",
        "seen",
        "start",
        "step",
        "walk",
    )

    def __init__(
        self, run: Walk, step: LLMStep, responses: list[str], br: _Branch, path: tuple[int, ...]
    ) -> None:
        self.walk, self.step, self.responses, self.br, self.path = run, step, responses, br, path
        self.start = monotonic()
        self.plan: Any = None
        self.calls: list[CallRecord] = []
        self.seen: dict[tuple[Any, ...], int] = {}
        self.failed = self.cancelled = self.rounds = 0
        self.notes: list[str] = []

    async def run(self) -> list[str]:
        step, on_event = self.step, self.walk.on_event
        if step.needs_responses and not self.responses:
            self.empty()
        requests, returned = self.first_round()
        if requests is None and on_event is not None:  # a step that makes no call
            on_event(StepStarted(self.path, step_text(step), 0))
        while requests is not None:
            self.rounds += 1
            if on_event is not None:
                on_event(StepStarted(self.path, step_text(step), len(requests), self.rounds))
            replies = await self.round(requests)
            if self.plan is not None:
                requests, returned = _advance(step, self.path, self.plan, replies)
                continue
            try:
                returned = step.combine(self.walk.prompt, list(self.responses), replies)
            except Exception as exc:
                exc.add_note(f"in step {step!r} at path {self.path}")
                raise
            requests = None
        return self.finish(returned)

    def empty(self) -> None:
        step, br = self.step, self.br
        cause = (
            f"{br.emptied_by} left none"
            if br.emptied_by
            else "no step before it produced any; start the pipeline with Propose"
        )
        _record(
            self.walk,
            br,
            StepRecord(repr(step), self.path, "llm", (), (), (), ("received no responses",), 0.0),
        )
        raise EmptyInputError(f"{step!r} received no responses: {cause}", step=repr(step))

    def first_round(self) -> tuple[list[Request] | None, Any]:
        # A step with the default plan (one round: requests, then combine) is driven without
        # a generator: most steps are, and it is on every run's path.
        step = self.step
        try:
            if type(step).plan is _DEFAULT_PLAN:
                requests = step.requests(self.walk.prompt, list(self.responses))
            else:
                self.plan = step.plan(self.walk.prompt, list(self.responses), self.br.rng)
        except Exception as exc:
            exc.add_note(f"in step {step!r} at path {self.path}")
            raise
        if self.plan is not None:
            return _advance(step, self.path, self.plan, None)
        _check_requests(step, requests)
        return requests, None

    async def round(self, requests: list[Request]) -> list[str | None]:
        """One round's calls, tallied; the replies, or StepFailedError when too few answered."""
        records, fatal = (
            await _round(self.walk, self.step, self.path, requests, len(self.calls), self.seen)
            if requests
            else ([], None)
        )
        self.calls.extend(records)
        if fatal is not None:
            # A call the step cannot go on from (a client of the wrong shape, an answer not
            # recorded for a replay, a cache that could not store): what ran is recorded first.
            self.give_up()
            raise fatal
        ok = self.tally(records, len(requests))
        need = self.step.required(len(requests))
        if ok < need:
            self.give_up()
            where = f" in round {self.rounds}" if self.rounds > 1 else ""
            raise StepFailedError(
                f"{self.step!r} failed{where}: {ok} of {len(records)} calls succeeded and it "
                f"needs {need} ({_grouped_errors(records)})",
                step=repr(self.step),
            )
        return [c.text for c in records]

    def tally(self, records: list[CallRecord], n: int) -> int:
        """Counts a round's failed and cancelled calls, notes what a quorum stopped; the
        number that answered."""
        ok = stopped = unsent = 0
        for c in records:
            if c.error is not None:
                self.failed += 1
            elif not c.cancelled:
                ok += 1
            elif c.attempts:
                stopped += 1
            else:
                unsent += 1
        self.cancelled += stopped + unsent
        if stopped:
            self.notes.append(
                f"quorum of {self.step.enough(n)} reached: {stopped} call(s) "
                f"still running were cancelled"
            )
        if unsent:
            self.notes.append(
                f"quorum of {self.step.enough(n)} met from the cache: {unsent} call(s) not sent"
            )
        return ok

    def give_up(self) -> None:
        # The step ends here: its plan is closed and what it did goes to history first.
        if self.plan is not None:
            self.plan.close()
        _record(
            self.walk,
            self.br,
            StepRecord(
                step_text(self.step),
                self.path,
                "llm",
                tuple(self.responses),
                (),
                tuple(self.calls),
                (),
                monotonic() - self.start,
            ),
        )

    def finish(self, returned: Any) -> list[str]:
        step, calls = self.step, self.calls
        if type(returned) is not tuple or len(returned) != 2:
            raise TypeError(
                f"{step!r} must return (responses, notes) when its calls are done, "
                f"returned {_describe(returned)}"
            )
        out, notes = returned
        if type(out) is not list or not all(type(r) is str for r in out):
            raise TypeError(
                f"{step!r}.combine must return a list of str as its responses, "
                f"returned {_describe(out)}"
            )
        notes = list(notes)
        if self.failed:
            notes.append(
                f"{self.failed} of {len(calls)} calls failed; the step went on with "
                f"{len(calls) - self.failed - self.cancelled}"
            )
        notes.extend(self.notes)
        hits = sum(c.cached for c in calls)
        if hits:
            notes.append(f"{hits} of {len(calls)} answers came from the cache")
        if self.responses and not out:
            self.br.emptied_by = f"{step!r} at path {self.path}"
        _record(
            self.walk,
            self.br,
            StepRecord(
                step_text(step),
                self.path,
                "llm",
                tuple(self.responses),
                tuple(out),
                tuple(calls),
                tuple(notes),
                monotonic() - self.start,
            ),
        )
        return out


def _check_requests(step: LLMStep, requests: object) -> None:
    if type(requests) is not list or not all(type(r) is Request for r in requests):
        raise TypeError(
            f"{step!r} must ask for a list of moa.Request in each round, "
            f"asked for {_describe(requests)}"
        )
    if len(requests) > MAX_CALLS:
        raise StepFailedError(
            f"{step!r} asks for {len(requests):,} calls in one round, more "
            f"than moa makes for one step ({MAX_CALLS:,})",
            step=repr(step),
        )
    for req in requests:
        size = sum(len(m["content"]) for m in req.messages)
        if size > MAX_REQUEST_CHARS:
            raise StepFailedError(
                f"{step!r} would send {size:,} characters to {req.model} in one call, more than "
                f"moa sends in one request ({MAX_REQUEST_CHARS:,}); cut the responses down "
                f"first (Take, Sample, Map) or aggregate them in rounds (AggregateSeq)",
                step=repr(step),
            )


def _advance(
    step: LLMStep, path: tuple[int, ...], plan: Any, replies: list[str | None] | None
) -> tuple[list[Request] | None, Any]:
    """The plan's next round of requests, or (None, what it returned) when it is done."""
    try:
        requests = plan.send(replies)
    except StopIteration as stop:
        return None, stop.value
    except Exception as exc:
        exc.add_note(f"in step {step!r} at path {path}")
        raise
    try:
        _check_requests(step, requests)
    except (TypeError, StepFailedError):
        plan.close()
        raise
    return requests, None


def _grouped_errors(records: list[CallRecord]) -> str:
    """The failed calls' errors, each distinct (model, error) once with how many calls had it:
    six calls to an unreachable server are one line, not the same error six times."""
    counts: dict[tuple[str, str], int] = {}
    for c in records:
        if c.error:
            counts[c.model, c.error] = counts.get((c.model, c.error), 0) + 1
    return "; ".join(
        f"{n} of {len(records)} calls to {model}: {error}" if n > 1 else f"{model}: {error}"
        for (model, error), n in counts.items()
    )


# -- one round of calls --------------------------------------------------------------------------
def _sample_indices(requests: list[Request], seen: dict[tuple[Any, ...], int]) -> list[int]:
    # The n-th of several identical requests in a step is sample n: six identical Self-MoA
    # calls are six samples, not one answer six times. ``seen`` carries the count across a
    # step's rounds.
    out = []
    for req in requests:
        key = (req.model, tuple(tuple(m.items()) for m in req.messages), req.temp, req.max_tokens)
        out.append(seen.get(key, 0))
        seen[key] = out[-1] + 1
    return out


def _sites(
    run: Walk,
    path: tuple[int, ...],
    requests: list[Request],
    offset: int,
    seen: dict[tuple[Any, ...], int],
) -> tuple[list[Request], list[Site]]:
    """Where each call sits, with its sample index, and the requests with their seeds when
    the client takes one."""
    samples = _sample_indices(requests, seen)
    if run.seeded:
        requests = [
            dataclasses.replace(r, seed=call_seed(run.seed, path, r, n))
            for r, n in zip(requests, samples, strict=False)
        ]
    return requests, [(path, offset + i, n) for i, n in enumerate(samples)]


async def _round(
    run: Walk,
    step: LLMStep,
    path: tuple[int, ...],
    requests: list[Request],
    offset: int,
    seen: dict[tuple[Any, ...], int],
) -> tuple[list[CallRecord], BaseException | None]:
    """One round of a step's calls: those answered at once first (a cache's), then the rest
    concurrently (until the quorum, if the step has one). Records come back in request
    order, with the first error the step must raise."""
    calls = run.calls
    n = len(requests)
    enough = step.enough(n)
    if not (run.seeded or calls.wants_sample):
        if calls.try_now is None and enough is None:  # every plain run's round: the short way
            return await _plain_round(calls, path, requests, offset)
        sites: list[Site] = [(path, offset + i, None) for i in range(n)]
    else:
        requests, sites = _sites(run, path, requests, offset, seen)
    results: list[Outcome | None] = [None] * n
    if calls.try_now is not None:
        for i in range(n):
            results[i] = out = calls.try_now(requests[i], sites[i], step)
            if out is not None and out[1] is not None:  # it cannot be made at all: none is
                return [], out[1]
    todo = [i for i in range(n) if results[i] is None]
    if enough is not None:
        enough -= n - len(todo)  # answers served at once count towards the quorum
    if len(todo) == 1 and (enough is None or enough > 0):
        results[todo[0]] = await calls.call(requests[todo[0]], sites[todo[0]])
    elif todo and enough is None:

        async def one(i: int) -> None:
            results[i] = await calls.call(requests[i], sites[i])

        async with anyio.create_task_group() as tg:
            for i in todo:
                tg.start_soon(one, i)
    elif todo:
        assert enough is not None
        await _quorum(calls, requests, sites, todo, results, enough)
    done = [r for r in results if r is not None]
    return [r for r, _ in done], next((e for _, e in done if e is not None), None)


async def _plain_round(
    calls: Calls, path: tuple[int, ...], requests: list[Request], offset: int
) -> tuple[list[CallRecord], BaseException | None]:
    call = calls.call
    results: list[Outcome | None] = [None] * len(requests)
    if len(requests) > 1:

        async def one(i: int) -> None:
            results[i] = await call(requests[i], (path, offset + i, None))

        # The first call is made in this task, the others each in a task of their own: one
        # task fewer a round, and a one-call round (an aggregator) makes none.
        async with anyio.create_task_group() as tg:
            for i in range(1, len(requests)):
                tg.start_soon(one, i)
            results[0] = await call(requests[0], (path, offset, None))
    else:
        results[0] = await call(requests[0], (path, offset, None))
    done = [r for r in results if r is not None]  # all of them: every call was awaited
    return [r for r, _ in done], next((e for _, e in done if e is not None), None)


async def _quorum(
    calls: Calls,
    requests: list[Request],
    sites: list[Site],
    todo: list[int],
    results: list[Outcome | None],
    enough: int,
) -> None:
    """Runs the calls ``todo`` until ``enough`` of them have answered; the rest are cancelled
    and recorded as cancelled (as never sent, ``attempts=0``, when answers served at once had
    met the quorum already)."""
    starts = [0.0] * len(requests)
    answered = 0

    async def one(i: int, scope: anyio.CancelScope) -> None:
        nonlocal answered
        starts[i] = monotonic()
        results[i] = out = await calls.call(requests[i], sites[i])
        if out[0].ok:
            answered += 1
            if answered >= enough:
                scope.cancel()

    if enough > 0:
        async with anyio.create_task_group() as tg:
            for i in todo:
                tg.start_soon(one, i, tg.cancel_scope)
    now = monotonic()
    for i in todo:
        if results[i] is None:
            rec = record(
                requests[i],
                None,
                None,
                None,
                1 if enough > 0 else 0,
                None,
                now - starts[i] if starts[i] else 0.0,
                True,
            )
            results[i] = (rec, None)
            if calls.finished is not None:
                calls.finished(sites[i], rec)

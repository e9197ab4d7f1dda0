"""The walk: how a run goes through a pipeline and writes its history.

Pipelines run their steps in order, Parallels their branches concurrently (each on its own
generator seeded from the run's), transforms apply at once, and an LLM step runs in rounds:
it asks for requests, the walk has the run's composed call stack (:mod:`moa._calls`) make
them (:mod:`moa._round`), checks them against the step's ``required``/``enough``, and hands
the replies back. Work a step yields as :class:`~moa.steps.OffLoop` runs off the event loop.
History is assembled in pipeline order, so it never depends on which call finished first.
What wraps each call (retries, limits, cache, events...) is the stack's business; the walk
only asks for calls.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable
from dataclasses import dataclass
from time import monotonic
from typing import Any

import anyio

from ._bounds import MAX_CALLS, MAX_REQUEST_CHARS, describe
from ._calls import Calls
from ._contract import Identity, LLMStep, Message, OffLoop, Request
from ._conversation import with_turns
from ._events import EventHandler, StepFinished, StepStarted
from ._history import CallRecord, History, StepRecord
from ._offload import run_off_loop, seconds_for
from ._pipeline import Parallel, Pipeline, Step, step_text
from ._response import Response
from ._round import call_round
from ._trace import Spans
from ._transforms import Transform
from .errors import EmptyInputError, MoaError, StepFailedError

__all__ = ("Stop", "Walk", "rng_for", "walk")


class Stop:
    """A run's (or a batch's) answer to a KeyboardInterrupt or SystemExit a client raised:
    ``scope`` (the run's or the batch's) is cancelled, so every call stops, and the entry point
    raises the interrupt once they have."""

    __slots__ = ("interrupt", "scope")

    def __init__(self) -> None:
        self.interrupt: BaseException | None = None
        self.scope: anyio.CancelScope | None = None

    def __call__(self, exc: BaseException) -> None:
        if self.interrupt is None:
            self.interrupt = exc
        if self.scope is not None:
            self.scope.cancel()


class Walk:
    """One run as the walk sees it: the prompt and the run's seed, the composed calls and the
    Stop they report interrupts to, the step events' handler, whether calls carry sampling
    seeds (the client takes one), and whether replies go on as Responses
    (:class:`~moa.Response`: a step of the pipeline reads their origin)."""

    __slots__ = ("calls", "earlier", "on_event", "origin", "prompt", "seed", "seeded", "stop")

    def __init__(
        self,
        prompt: str,
        seed: int,
        calls: Calls,
        stop: Stop,
        on_event: EventHandler | None = None,
        seeded: bool = False,
        origin: bool = False,
        earlier: tuple[Message, ...] = (),
    ) -> None:
        self.prompt = prompt
        self.earlier = earlier  # a conversation's turns before the question
        self.seed = seed
        self.calls = calls
        self.stop = stop
        self.on_event = on_event
        self.seeded = seeded
        self.origin = origin


def rng_for(seed: int) -> random.Random:
    """The run's generator. ``random.Random`` seeds from ``abs(seed)``, so a negative seed is
    told apart by seeding from its text: ``seed=-7`` and ``seed=7`` draw differently."""
    return random.Random(seed if seed >= 0 else f"moa-negative-seed/{seed}")


@dataclass(slots=True)
class _Branch:
    """One line of execution: its RNG, its records, and which step (if any) emptied its
    responses."""

    rng: random.Random
    records: list[StepRecord]
    emptied_by: str | None = None


def walk(step: Step, run: Walk) -> Awaitable[tuple[str, History]]:
    """Run ``step`` on the run's prompt: the result and the history. A MoaError leaves with
    the history so far; a client's KeyboardInterrupt leaves as itself once every call stopped
    (the caller's cancel scope, ``run.stop.scope``, ends the rest). Untraced: no frame of its
    own, which would live as long as the run and be passed through each time the run resumes."""
    spans = run.calls.spans
    if spans is None:
        return _walk(step, run)
    return _traced_walk(step, run, spans)


async def _traced_walk(step: Step, run: Walk, spans: Spans) -> tuple[str, History]:
    with spans.run(step, run.prompt, run.earlier, run.seed) as span:
        try:
            result, history = await _walk(step, run)
        except MoaError as exc:
            spans.ran(span, exc.history, None)
            raise
        spans.ran(span, history, result)
        return result, history


async def _walk(step: Step, run: Walk) -> tuple[str, History]:
    root = _Branch(rng_for(run.seed), [])
    start = monotonic()
    path = () if isinstance(step, Pipeline) else (0,)
    try:
        outputs = await _exec(run, step, [], root, path)
    except MoaError as exc:  # a failed step, a broken cache: the user keeps what ran
        if run.stop.interrupt is not None:
            raise run.stop.interrupt from None
        exc.history = History(
            run.prompt,
            run.seed,
            tuple(root.records),
            (),
            monotonic() - start,
            conversation=run.earlier,
        )
        raise
    except BaseExceptionGroup as group:
        interrupt = interrupt_of(group)
        if interrupt is None:
            raise
        raise interrupt from None
    if run.stop.interrupt is not None:
        raise run.stop.interrupt
    history = History(
        run.prompt,
        run.seed,
        tuple(root.records),
        tuple(outputs),
        monotonic() - start,
        conversation=run.earlier,
    )
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


def _exec(
    run: Walk, step: Step, responses: list[str], br: _Branch, path: tuple[int, ...]
) -> Awaitable[list[str]]:
    # Untraced, the step's own coroutine, with no frame between it and its caller's.
    spans = run.calls.spans
    if spans is None or not path:  # the whole pipeline's span is the run's
        return _exec_step(run, step, responses, br, path)
    return _traced_step(run, step, responses, br, path, spans)


async def _traced_step(
    run: Walk, step: Step, responses: list[str], br: _Branch, path: tuple[int, ...], spans: Spans
) -> list[str]:
    with spans.step(step, path) as span:
        try:
            return await _exec_step(run, step, responses, br, path)
        finally:
            rec = br.records[-1] if br.records else None
            if rec is not None and rec.path == path:  # a sub-pipeline has no record
                spans.stepped(span, rec)


async def _exec_step(
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
        f"moa cannot run {describe(step)}: a step must derive from Transform, "
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
    if type(out) is not list or not all(isinstance(r, str) for r in out):
        raise TypeError(f"{step!r}.apply must return a list of str, returned {describe(out)}")
    notes: tuple[str, ...] = ()
    if responses and not out:
        br.emptied_by = f"{step!r} at path {path}"
        notes = (f"{step!r} left no responses",)
    _record(
        run,
        br,
        StepRecord(
            step=step_text(step),
            path=path,
            kind="transform",
            inputs=tuple(responses),
            outputs=tuple(out),
            notes=notes,
            duration=monotonic() - start,
        ),
    )
    return out


async def _exec_parallel(
    run: Walk, step: Parallel, responses: list[str], br: _Branch, path: tuple[int, ...]
) -> list[str]:
    start = monotonic()
    # Each branch gets its own generator, seeded from the parent in branch order, so the
    # draws do not depend on how the branches interleave; 63 bits, as a run's seed is, so a
    # branch run alone with its seed draws the same.
    subs = [
        _Branch(random.Random(br.rng.getrandbits(63)), [], br.emptied_by) for _ in step.branches
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
            step=step_text(step),
            path=path,
            kind="parallel",
            inputs=tuple(responses),
            outputs=tuple(out),
            duration=monotonic() - start,
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
        "degraded",
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
        self.seen: dict[Identity, int] = {}
        self.failed = self.cancelled = self.rounds = 0
        self.notes: list[str] = []
        self.degraded: str | None = None

    async def run(self) -> list[str]:
        step, on_event = self.step, self.walk.on_event
        if step.needs_responses and not self.responses:
            self.empty()
        requests, returned = await self.first_round()
        if requests is None and on_event is not None:  # a step that makes no call
            on_event(StepStarted(self.path, step_text(step), 0))
        while requests is not None:
            self.rounds += 1
            if on_event is not None:
                on_event(StepStarted(self.path, step_text(step), len(requests), self.rounds))
            replies = await self.round(requests)
            if self.plan is not None:
                requests, returned = await self.advance(replies)
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
            StepRecord(
                step=repr(step), path=self.path, kind="llm", notes=("received no responses",)
            ),
        )
        raise EmptyInputError(f"{step!r} received no responses: {cause}", step=repr(step))

    async def first_round(self) -> tuple[list[Request] | None, Any]:
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
            return await self.advance(None)
        _check_requests(step, requests)
        return requests, None

    async def advance(self, sent: Any) -> tuple[list[Request] | None, Any]:
        """The plan's next round of requests, or (None, what it returned) when it is done;
        work it hands over off the loop is done on the way."""
        while True:
            try:
                item = self.plan.send(sent)
            except StopIteration as stop:
                return None, stop.value
            except Exception as exc:
                exc.add_note(f"in step {self.step!r} at path {self.path}")
                raise
            if not isinstance(item, OffLoop):
                break
            sent = await self.off_loop(item)
        try:
            _check_requests(self.step, item)
        except (TypeError, StepFailedError):
            self.plan.close()
            raise
        return item, None

    async def off_loop(self, work: OffLoop) -> Any:
        try:
            return await run_off_loop(work)
        except TimeoutError:
            self.give_up()
            raise StepFailedError(
                f"{self.step!r}: its work off the event loop ran past {seconds_for(work):g} s "
                "and was stopped (a regex that backtracks without end?)",
                step=repr(self.step),
            ) from None
        except Exception as exc:
            self.plan.close()
            exc.add_note(f"in step {self.step!r} at path {self.path}")
            raise

    async def round(self, requests: list[Request]) -> list[str | None]:
        """One round's calls, tallied; the replies, or StepFailedError when too few answered."""
        run = self.walk
        if run.earlier:  # a conversation: every call reads its earlier turns
            requests = [with_turns(r, run.earlier) for r in requests]
        records, fatal, cut = (
            await call_round(
                run.calls,
                self.step,
                self.path,
                requests,
                len(self.calls),
                self.seen,
                run.seed if run.seeded else None,
            )
            if requests
            else ([], None, None)
        )
        self.calls.extend(records)
        if fatal is not None:
            # A call the step cannot go on from (a client of the wrong shape, an answer not
            # recorded for a replay, a cache that could not store): what ran is recorded first.
            self.give_up()
            raise fatal
        ok = self.tally(records, len(requests), cut)
        need = self.step.required(len(requests))
        if ok < need:
            self.give_up()
            where = f" in round {self.rounds}" if self.rounds > 1 else ""
            late = f" by its deadline of {cut:g} s" if cut is not None else ""
            raise StepFailedError(
                f"{self.step!r} failed{where}: {ok} of {len(records)} calls succeeded{late} "
                f"and it needs {need} ({_grouped_errors(records)})",
                step=repr(self.step),
            )
        if run.origin:  # a later step reads where each reply came from
            return [_response(c) for c in records]
        return [c.text for c in records]

    def tally(self, records: list[CallRecord], n: int, cut: float | None = None) -> int:
        """Counts a round's failed and cancelled calls, notes what a quorum or a deadline
        (``cut``) stopped; the number that answered."""
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
        if cut is not None and stopped:
            self.degraded = (
                f"deadline of {cut:g} s: {ok} of {n} calls answered in time, {stopped} still "
                "running were cancelled"
            )
            self.notes.append(self.degraded)
        elif stopped:
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
                step=step_text(self.step),
                path=self.path,
                kind="llm",
                inputs=tuple(self.responses),
                calls=tuple(self.calls),
                duration=monotonic() - self.start,
            ),
        )

    def finish(self, returned: Any) -> list[str]:
        step, calls = self.step, self.calls
        if type(returned) is not tuple or len(returned) != 2:
            raise TypeError(
                f"{step!r} must return (responses, notes) when its calls are done, "
                f"returned {describe(returned)}"
            )
        out, notes = returned
        if type(out) is not list or not all(isinstance(r, str) for r in out):
            raise TypeError(
                f"{step!r}.combine must return a list of str as its responses, "
                f"returned {describe(out)}"
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
                step=step_text(step),
                path=self.path,
                kind="llm",
                inputs=tuple(self.responses),
                outputs=tuple(out),
                calls=tuple(calls),
                notes=tuple(notes),
                duration=monotonic() - self.start,
                degraded=self.degraded,
            ),
        )
        return out


def _response(call: CallRecord) -> Response | None:
    if call.text is None:
        return None
    return Response(
        call.text, agent=call.agent or call.model, model=call.model, confidence=call.confidence
    )


def _check_requests(step: LLMStep, requests: object) -> None:
    if type(requests) is not list or not all(type(r) is Request for r in requests):
        raise TypeError(
            f"{step!r} must ask for a list of moa.steps.Request in each round, "
            f"asked for {describe(requests)}"
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

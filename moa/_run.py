"""The ways to run a pipeline on one prompt: ``run``, ``run_stream`` and ``run_sync``. Each
takes the run's options as one :class:`~moa.RunOptions` (or as keywords), composes the run's
call stack (:mod:`moa._calls`) and has the walk (:mod:`moa._executor`) go through the
pipeline."""

from __future__ import annotations

import dataclasses
import functools
import math
import secrets
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Generic, TypeVar, Unpack

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from ._bounds import describe, safe_repr
from ._budget import Budget
from ._calls import compose
from ._client import Client, unicode_error
from ._contract import LLMStep, Message, Reads, reads
from ._conversation import Prompt, prompt_of
from ._events import Event, RunFinished, both
from ._executor import Stop, Walk, walk
from ._history import History
from ._options import RunKwargs, RunOptions
from ._pipeline import Pipeline, Step, StepLike, as_step
from ._plan import unbounded_steps
from ._seeds import accepts, accepts_seed
from .errors import BudgetExceededError, ConfidenceUnavailableError

__all__ = (
    "ErrorAfter",
    "check_client",
    "check_prompt",
    "confidence_needs",
    "draw_seed",
    "run",
    "run_stream",
    "run_sync",
    "unwrapped",
    "walk_stopped",
)

T = TypeVar("T")


def draw_seed(seed: int | None) -> int:
    """The run's seed: ``seed``, or one drawn when None, and recorded in history: any run can
    be replayed."""
    return secrets.randbits(63) if seed is None else seed


def check_prompt(where: str, prompt: object) -> tuple[str, tuple[Message, ...]]:
    """A prompt as an entry point takes it: a str that is not blank and is valid Unicode, or a
    conversation whose last message is the user's (TypeError or ValueError otherwise); the
    question and the earlier turns (:func:`moa._conversation.prompt_of`)."""
    if isinstance(prompt, str):  # the common case, checked here in full
        if not prompt.strip():
            raise ValueError(
                f"{where}(prompt): prompt must be a non-empty str, got {safe_repr(prompt)}"
            )
        where_bad = unicode_error(prompt)
        if where_bad is not None:
            raise ValueError(f"{where}(prompt): prompt must be valid Unicode text, but {where_bad}")
        return prompt, ()
    return prompt_of(where, prompt)


def check_client(where: str, client: object) -> None:
    if not callable(client):
        raise TypeError(
            f"{where}(client): client must be an async callable "
            f"client(model, messages, temp, max_tokens), not {describe(client)}"
        )


def confidence_needs(where: str, step: Step, client: object) -> Reads:
    """What ``step``'s steps read of their responses; ConfidenceUnavailableError, before any
    call, when one needs confidence and ``client`` cannot give log-probabilities (it takes no
    ``logprobs`` keyword)."""
    wants = reads(step)
    if wants.confidence and not (callable(client) and accepts(client, "logprobs")):
        names = ", ".join(sorted({type(s).__name__ for s in wants.confidence}))
        raise ConfidenceUnavailableError(
            f"{where}: {names} reads each response's confidence (its tokens' "
            f"log-probabilities), and this client gives none: it takes no `logprobs` keyword "
            f"({safe_repr(client)}); use Majority, or a client that reads log-probabilities "
            "(local_client, or openai_client on a server that returns them)"
        )
    return wants


async def walk_stopped(
    step: Step, state: Walk, budget: Budget | None = None
) -> tuple[str, History]:
    """``walk`` inside the cancel scope its Stop cancels when a client raises
    KeyboardInterrupt or SystemExit; that interrupt is raised once every call has stopped.
    With a ``budget``, the history says where it stands, and so does a BudgetExceededError."""
    with anyio.CancelScope() as state.stop.scope:
        try:
            result, history = await walk(step, state)
        except BudgetExceededError as exc:
            budget_noted(exc, budget)
            raise
        return result, budget_figures(history, budget)
    assert state.stop.interrupt is not None  # only a Stop cancels this scope
    raise state.stop.interrupt


def budget_figures(history: History, budget: Budget | None) -> History:
    """``history`` with the budget's used and left figures (unchanged without a budget)."""
    if budget is None:
        return history
    used = budget.used()
    return dataclasses.replace(history, budget={"used": used, "left": budget.left(used)})


def budget_noted(exc: BudgetExceededError, budget: Budget | None) -> None:
    """Fill in what a BudgetExceededError that ends a run carries: the best partial answer
    (the first output of the last step that finished), the figures, the history's too."""
    history = exc.history
    if history is not None:
        done = [s for s in history.steps if s.outputs]
        exc.partial = done[-1].outputs[0] if done else None
        exc.history = budget_figures(history, budget)
    if budget is not None:
        exc.used = budget.used()
        exc.left = budget.left(exc.used)


def _prepared(
    where: str,
    pipeline: StepLike,
    prompt: Prompt,
    client: Client,
    options: RunOptions | None,
    kwargs: dict[str, Any],
) -> tuple[Step, RunOptions, str, tuple[Message, ...]]:
    step = as_step(pipeline, where=f"{where}(pipeline)")
    opts = RunOptions.of(where, options, kwargs)
    question, earlier = check_prompt(where, prompt)
    check_client(where, client)
    check_budget(where, step, opts.budget)
    return step, opts, question, earlier


def check_budget(where: str, step: Step, budget: Budget | None) -> None:
    """A budget that can stop ``step``: where a step's calls have no bound (a custom LLM step,
    or what follows a custom transform), dollars or tokens alone could let it loop on a free
    model, so the budget must count calls or seconds."""
    if budget is None or budget.limits["calls"] or budget.limits["seconds"]:
        return
    loose = unbounded_steps(step)
    if loose:
        raise ValueError(
            f"{where}(budget=...): {safe_repr(loose[0])} has no bound on its calls (a plan "
            "calls it unbounded), so a budget must set calls= or seconds= to be sure to stop it"
        )


async def run(
    pipeline: StepLike,
    prompt: Prompt,
    client: Client,
    options: RunOptions | None = None,
    **kwargs: Unpack[RunKwargs],
) -> tuple[str, History]:
    """Run ``pipeline`` on ``prompt``; return the final response and the run's history.

    ``prompt`` is the question, or a conversation: a list of ``{"role", "content"}`` messages
    (system first if any, then user and assistant turns) ending with the user's question.
    Every call reads the earlier turns before its own user message, the conversation's system
    message first in its own: proposers answer the last turn in context, an aggregator reads
    the conversation and then the candidates' answers to its last turn; history keeps them
    (``history.conversation``) and the cache keys on them.

    The final response is the first of the last step's outputs (all of them are in
    ``history.outputs``), or ``""`` when a transform left none. The options are a
    :class:`~moa.RunOptions` (``options=``), keywords of the same names (``seed=7,
    timeout=30``), or both, the keywords replacing those fields; :class:`~moa.RunOptions`
    says what each does. An ``on_event`` that raises ends the run (inside an
    ``ExceptionGroup`` when it came from one of several concurrent calls). A step that fails
    raises a :class:`~moa.errors.StepFailedError` carrying the history so far.
    """
    step, opts, question, earlier = _prepared(
        "run", pipeline, prompt, client, options, dict(kwargs)
    )
    wants = confidence_needs("run", step, client)
    stop = Stop()
    state = Walk(
        question,
        draw_seed(opts.seed),
        compose(client, opts, stop, confidence=wants.origin),
        stop,
        opts.on_event,
        accepts_seed(client),
        wants.origin,
        earlier,
    )
    return await walk_stopped(step, state, opts.budget)


def _stream_path(step: Step) -> tuple[int, ...] | None:
    """Where the pipeline's last step sits, when it is an LLM step: its final replies stream."""
    if isinstance(step, Pipeline):
        if not step.steps:
            return None
        last, path = step.steps[-1], (len(step.steps) - 1,)
    else:
        last, path = step, (0,)
    return path if isinstance(last, LLMStep) else None


class ErrorAfter(Generic[T]):
    """A memory stream read to its end, then the error that ended what fed it (if any):
    ``run_stream``'s events and ``as_completed``'s results. The feeder's task leaves the
    error here rather than raising it: a KeyboardInterrupt leaving a task on asyncio stops
    the loop under the reader ("Task exception was never retrieved")."""

    __slots__ = ("_receive", "error")

    def __init__(self, receive: MemoryObjectReceiveStream[T]) -> None:
        self._receive = receive
        self.error: BaseException | None = None

    def __aiter__(self) -> ErrorAfter[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self._receive.receive()
        except anyio.EndOfStream:
            pass
        # Raised outside the except block: the error comes out as itself, its own cause kept
        # and no EndOfStream attached.
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        raise StopAsyncIteration

    @asynccontextmanager
    async def fed_by(self, feed: Callable[[], Coroutine[Any, Any, None]]) -> AsyncIterator[None]:
        """``feed`` runs in a task beside the block that reads this stream; leaving the block
        (early or not) cancels it, and an error from either comes out as itself."""
        with unwrapped():
            async with self._receive, anyio.create_task_group() as tg:
                tg.start_soon(feed)
                try:
                    yield
                finally:
                    tg.cancel_scope.cancel()


@asynccontextmanager
async def run_stream(
    pipeline: StepLike,
    prompt: Prompt,
    client: Client,
    options: RunOptions | None = None,
    **kwargs: Unpack[RunKwargs],
) -> AsyncIterator[AsyncIterator[Event]]:
    """``run`` as a stream of events, for showing an answer while it is written::

        async with moa.run_stream(pipeline, prompt, client) as events:
            async for event in events:
                if isinstance(event, moa.TextChunk):
                    print(event.text, end="", flush=True)
                elif isinstance(event, moa.RunFinished):
                    result, history = event.result, event.history

    Events: :class:`~moa.StepStarted`, :class:`~moa.CallRetrying`, :class:`~moa.CallFinished`,
    :class:`~moa.StepFinished`, the :class:`~moa.TextChunk` pieces of the final answer as
    they arrive, and last :class:`~moa.RunFinished` with the result and the full history
    (an ``on_event`` option gets each of them too, as it happens). Chunks come from the
    pipeline's last step when it is an LLM step whose reply is its output (Aggregate, Vote,
    the last round of AggregateSeq), through the client's ``stream`` when it has one. Such a
    call is retried only before its first chunk; a failure after it is recorded as a
    :class:`~moa.errors.StreamInterruptedError`, never retried into duplicated text;
    ``hedge_after`` does not apply to that call (two racing streams would both write the
    answer), only to the others. When the run fails, iterating raises its error after the
    events so far. Options are ``run``'s; leaving the block early cancels the run.
    """
    step, opts, question, earlier = _prepared(
        "run_stream", pipeline, prompt, client, options, dict(kwargs)
    )
    wants = confidence_needs("run_stream", step, client)
    send, receive = anyio.create_memory_object_stream[Event](math.inf)
    events = ErrorAfter(receive)
    handler = send.send_nowait if opts.on_event is None else both(opts.on_event, send.send_nowait)
    opts = opts.replace(on_event=handler)
    stop = Stop()
    calls = compose(client, opts, stop, stream_path=_stream_path(step), confidence=wants.origin)
    state = Walk(
        question,
        draw_seed(opts.seed),
        calls,
        stop,
        handler,
        accepts_seed(client),
        wants.origin,
        earlier,
    )

    async def drive() -> None:
        with send:
            try:
                result, history = await walk_stopped(step, state, opts.budget)
            except Exception as exc:
                events.error = exc
            else:
                send.send_nowait(RunFinished(result, history))

    async with events.fed_by(drive):
        yield events


@contextmanager
def unwrapped() -> Iterator[None]:
    """An error raised in the body of a context manager built on a task group comes out as
    itself, not inside the ``ExceptionGroup`` anyio wraps it in: the caller's ``except``
    clauses keep working."""
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1 and not isinstance(group.exceptions[0], BaseExceptionGroup):
            error = group.exceptions[0]
            raise error from error.__cause__  # its own cause kept; the group left out
        raise


def run_sync(
    pipeline: StepLike,
    prompt: Prompt,
    client: Client,
    options: RunOptions | None = None,
    *,
    backend: str = "asyncio",
    **kwargs: Unpack[RunKwargs],
) -> tuple[str, History]:
    """``run`` for scripts: starts an event loop (``backend`` "asyncio" or "trio") and runs."""
    return anyio.run(
        functools.partial(run, pipeline, prompt, client, options, **kwargs), backend=backend
    )

"""The ways to run a pipeline: ``run``, ``run_stream`` and ``run_sync``. Each checks its
options, composes the run's call stack (:mod:`moa._calls`) and has the walk
(:mod:`moa._executor`) go through the pipeline."""

from __future__ import annotations

import functools
import math
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from ._bounds import check_seconds, safe_repr
from ._cache import Cache
from ._calls import compose
from ._client import Client, unicode_error
from ._events import Event, EventHandler, RunFinished
from ._executor import Walk, walk
from ._history import History
from ._limits import Limits
from ._llm_steps import LLMStep
from ._pipeline import Pipeline, Step, StepLike, _describe, as_step
from ._retry import DEFAULT_RETRY, Retry
from ._seeds import accepts_seed

__all__ = ("check_options", "run", "run_stream", "run_sync", "start", "unwrapped")


def start(
    client: Client,
    prompt: str,
    policy: Retry,
    *,
    limiter: anyio.CapacityLimiter | None = None,
    timeout: float | None = None,
    limits: Limits | None = None,
    hedge_after: float | None = None,
    cache: Cache | None = None,
    on_event: EventHandler | None = None,
    stream_path: tuple[int, ...] | None = None,
) -> Walk:
    """A run of ``prompt`` ready to walk: its call stack composed from these options."""
    state = Walk(prompt, on_event, accepts_seed(client))
    state.calls = compose(
        client,
        policy,
        state.stop,
        limiter=limiter,
        timeout=timeout,
        limits=limits,
        hedge_after=hedge_after,
        cache=cache,
        on_event=on_event,
        stream_path=stream_path,
    )
    return state


def _seed(seed: int | None) -> int:
    # Without a seed one is drawn, and recorded in history: any run can be replayed.
    return secrets.randbits(63) if seed is None else seed


def _check_run_args(
    prompt: object,
    client: object,
    seed: object,
    max_concurrency: object,
    timeout: object,
    retry: object,
    limits: object = None,
    hedge_after: object = None,
    cache: object = None,
    on_event: object = None,
) -> None:
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"run(prompt): prompt must be a non-empty str, got {safe_repr(prompt)}")
    where = unicode_error(prompt)
    if where is not None:
        raise ValueError(f"run(prompt): prompt must be valid Unicode text, but {where}")
    check_options(
        client, seed, max_concurrency, timeout, retry, limits, hedge_after, cache, on_event
    )


def check_options(
    client: object,
    seed: object,
    max_concurrency: object,
    timeout: object,
    retry: object,
    limits: object,
    hedge_after: object,
    cache: object = None,
    on_event: object = None,
) -> None:
    if not callable(client):
        raise TypeError(
            "run(client): client must be an async callable "
            f"client(model, messages, temp, max_tokens), not {_describe(client)}"
        )
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"run(seed=...): seed must be an int or None, not {_describe(seed)}")
    if max_concurrency is not None and (
        isinstance(max_concurrency, bool)
        or not isinstance(max_concurrency, int)
        or max_concurrency < 1
    ):
        raise ValueError(
            "run(max_concurrency=...): max_concurrency must be an int >= 1 or None, "
            f"got {safe_repr(max_concurrency)}"
        )
    check_seconds("run", "timeout", timeout)
    check_seconds("run", "hedge_after", hedge_after)
    if retry is not None and not isinstance(retry, Retry):
        raise TypeError(
            f"run(retry=...): retry must be a moa.Retry policy or None, not {_describe(retry)}"
        )
    if limits is not None and not isinstance(limits, Limits):
        raise TypeError(
            f"run(limits=...): limits must be a moa.Limits or None, not {_describe(limits)}"
        )
    if cache is not None and not isinstance(cache, Cache):
        raise TypeError(
            f"run(cache=...): cache must be a moa.Cache or None, not {_describe(cache)}"
        )
    if on_event is not None and not callable(on_event):
        raise TypeError(
            f"run(on_event=...): on_event must be a callable on_event(event) or None, "
            f"not {_describe(on_event)}"
        )


async def run(
    pipeline: StepLike,
    prompt: str,
    client: Client,
    *,
    seed: int | None = None,
    max_concurrency: int | None = None,
    timeout: float | None = None,
    retry: Retry | None = None,
    limits: Limits | None = None,
    hedge_after: float | None = None,
    cache: Cache | None = None,
    on_event: EventHandler | None = None,
) -> tuple[str, History]:
    """Run ``pipeline`` on ``prompt``; return the final response and the run's history.

    The final response is the first of the last step's outputs (all of them are in
    ``history.outputs``), or ``""`` when a transform left none. ``seed`` seeds every random
    step (drawn and recorded in history when None); ``max_concurrency`` caps calls in flight;
    ``timeout`` bounds each call attempt in seconds; ``retry`` is the policy for failed calls;
    ``limits`` holds per-model limits (shared by every run given the same object);
    ``hedge_after`` starts a duplicate of a call unanswered after that many seconds, and the
    first answer wins. ``cache`` (a :class:`~moa.Cache`) serves answers it holds and stores new
    ones; ``on_event(event)`` is called as steps start and calls finish or retry
    (:class:`~moa.StepStarted`, :class:`~moa.CallRetrying`, :class:`~moa.CallFinished`,
    :class:`~moa.StepFinished`), for progress displays; it must be quick and must not raise
    (an exception from it ends the run, inside an ``ExceptionGroup`` when it came from one of
    several concurrent calls). A step that fails raises a
    :class:`~moa.errors.StepFailedError` carrying the history so far.
    """
    step = as_step(pipeline, where="run(pipeline)")
    _check_run_args(
        prompt, client, seed, max_concurrency, timeout, retry, limits, hedge_after, cache, on_event
    )
    limiter = anyio.CapacityLimiter(max_concurrency) if max_concurrency else None
    state = start(
        client,
        prompt,
        retry or DEFAULT_RETRY,
        limiter=limiter,
        timeout=timeout,
        limits=limits,
        hedge_after=hedge_after,
        cache=cache,
        on_event=on_event,
    )
    return await walk(step, prompt, state, _seed(seed))


def _stream_path(step: Step) -> tuple[int, ...] | None:
    """Where the pipeline's last step sits, when it is an LLM step: its final replies stream."""
    if isinstance(step, Pipeline):
        if not step.steps:
            return None
        last, path = step.steps[-1], (len(step.steps) - 1,)
    else:
        last, path = step, (0,)
    return path if isinstance(last, LLMStep) else None


class _Events:
    """The event stream ``run_stream`` yields: ends when the run ends, raising its error."""

    __slots__ = ("_receive", "error")

    def __init__(self, receive: MemoryObjectReceiveStream[Event]) -> None:
        self._receive = receive
        self.error: BaseException | None = None

    def __aiter__(self) -> _Events:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self._receive.receive()
        except anyio.EndOfStream:
            pass
        # Raised outside the except block: the run's error comes out as itself, its own cause
        # kept and no EndOfStream attached.
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        raise StopAsyncIteration


@asynccontextmanager
async def run_stream(
    pipeline: StepLike,
    prompt: str,
    client: Client,
    *,
    seed: int | None = None,
    max_concurrency: int | None = None,
    timeout: float | None = None,
    retry: Retry | None = None,
    limits: Limits | None = None,
    hedge_after: float | None = None,
    cache: Cache | None = None,
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
    they arrive, and last :class:`~moa.RunFinished` with the result and the full history.
    Chunks come from the pipeline's last step when it is an LLM step whose reply is its output
    (Aggregate, Vote with a judge, the last round of AggregateSeq), through the client's
    ``stream`` when it has one. Such a call is retried only before its first chunk; a failure
    after it is recorded as a :class:`~moa.errors.StreamInterruptedError`, never retried into
    duplicated text; ``hedge_after`` does not apply to that call (two racing streams would
    both write the answer), only to the others. When the run fails, iterating raises its error
    after the events so far. Options are ``run``'s; leaving the block early cancels the run.
    """
    step = as_step(pipeline, where="run_stream(pipeline)")
    _check_run_args(
        prompt, client, seed, max_concurrency, timeout, retry, limits, hedge_after, cache
    )
    send, receive = anyio.create_memory_object_stream[Event](math.inf)
    events = _Events(receive)
    limiter = anyio.CapacityLimiter(max_concurrency) if max_concurrency else None
    state = start(
        client,
        prompt,
        retry or DEFAULT_RETRY,
        limiter=limiter,
        timeout=timeout,
        limits=limits,
        hedge_after=hedge_after,
        cache=cache,
        on_event=send.send_nowait,
        stream_path=_stream_path(step),
    )

    async def drive() -> None:
        with send:
            try:
                result, history = await walk(step, prompt, state, _seed(seed))
            except Exception as exc:
                events.error = exc
            else:
                send.send_nowait(RunFinished(result, history))

    with unwrapped():
        async with receive, anyio.create_task_group() as tg:
            tg.start_soon(drive)
            try:
                yield events
            finally:
                tg.cancel_scope.cancel()


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
    prompt: str,
    client: Client,
    *,
    backend: str = "asyncio",
    **options: Any,
) -> tuple[str, History]:
    """``run`` for scripts: starts an event loop (``backend`` "asyncio" or "trio") and runs."""
    return anyio.run(functools.partial(run, pipeline, prompt, client, **options), backend=backend)

"""Many prompts through one pipeline: ``run_many`` (results in input order) and
``as_completed`` (results as they finish), sharing one cap on calls in flight and one set of
per-model limits. A run that fails is reported in its own result; the batch goes on."""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from ._bounds import safe_repr
from ._cache import Cache
from ._calls import compose
from ._client import Client
from ._executor import Walk, walk
from ._history import History
from ._limits import Limits
from ._pipeline import Step, StepLike, _describe, as_step
from ._retry import DEFAULT_RETRY, Retry
from ._run import _seed, check_options, unwrapped
from ._seeds import accepts_seed, row_seed
from .errors import MoaError

__all__ = ("RunResult", "as_completed", "run_many")


@dataclass(frozen=True, slots=True)
class RunResult:
    """One prompt's outcome in a batch: its ``result`` and ``history``, or the ``error`` that
    ended it (``history`` then holds what ran before, when the error carried it)."""

    index: int
    prompt: str
    result: str | None
    history: History | None
    error: BaseException | None = field(default=None, compare=False)
    id: str | int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


Progress = Callable[[int, int, RunResult], Any]


def _seeds(seed: int | None, ids: list[str | int] | None, n: int) -> list[int | None]:
    """Each prompt's run seed: with ids, from the batch seed and the prompt's id (the same
    however the batch is split); without, drawn from the batch seed in input order."""
    if seed is None:
        return [None] * n
    if ids is not None:
        return [row_seed(seed, ident) for ident in ids]
    draw = random.Random(seed)
    return [draw.getrandbits(63) for _ in range(n)]


def _ids(ids: Iterable[str | int] | None, n: int) -> list[str | int] | None:
    if ids is None:
        return None
    if isinstance(ids, (str, bytes)):
        raise TypeError("run_many(ids=...): ids must be a list of ids, one per prompt, not a str")
    out = list(ids)
    if len(out) != n:
        raise ValueError(f"run_many(ids=...): {len(out)} ids for {n} prompts: one id a prompt")
    seen: set[str | int] = set()
    for i, ident in enumerate(out):
        if isinstance(ident, bool) or not isinstance(ident, (str, int)):
            raise TypeError(
                f"run_many(ids=...): id {i} must be a str or an int, got {safe_repr(ident)}"
            )
        if ident in seen:
            raise ValueError(
                f"run_many(ids=...): id {safe_repr(ident)} is given twice; ids "
                f"name prompts, one each"
            )
        seen.add(ident)
    return out


def _prompts(prompts: Iterable[str]) -> list[str]:
    if isinstance(prompts, str):
        raise TypeError(
            "run_many(prompts): prompts must be a list of prompts, not a bare str; "
            "did you mean [prompt]?"
        )
    items = list(prompts)
    for i, p in enumerate(items):
        if not isinstance(p, str) or not p.strip():
            raise ValueError(
                f"run_many(prompts): prompt {i} must be a non-empty str, got {safe_repr(p)}"
            )
    return items


async def _drive(
    step: Step,
    prompts: list[str],
    client: Client,
    send: MemoryObjectSendStream[RunResult],
    seed: int | None,
    ids: list[str | int] | None,
    progress: Progress | None,
    options: dict[str, Any],
) -> None:
    """Every prompt's run, each result sent as it finishes; ``options`` are ``run``'s. The
    runs share one call stack, composed once: one cap, one ``Limits``, one cache."""
    cap = options.pop("max_concurrency")
    policy = options.pop("retry") or DEFAULT_RETRY
    stop = _Stop()
    calls = compose(
        client, policy, stop, limiter=anyio.CapacityLimiter(cap) if cap else None, **options
    )
    seeded = accepts_seed(client)
    seeds = _seeds(seed, ids, len(prompts))
    done = 0
    idents: Sequence[str | int | None] = ids if ids is not None else [None] * len(prompts)

    async def one(i: int) -> None:
        nonlocal done
        state = Walk(prompts[i], None, seeded)
        state.calls = calls
        try:
            result, history = await walk(step, prompts[i], state, _seed(seeds[i]))
            outcome = RunResult(i, prompts[i], result, history, None, idents[i])
        except Exception as exc:
            partial = exc.history if isinstance(exc, MoaError) else None
            outcome = RunResult(i, prompts[i], None, partial, exc, idents[i])
        done += 1
        if progress is not None:
            progress(done, len(prompts), outcome)
        await send.send(outcome)

    # With a cap on calls, runs start as earlier ones finish, at most `cap` at a time: every
    # running run keeps at least one call busy, so the cap stays full while memory stays flat
    # (starting 10,000 runs at once kept 30,000 calls queued on the limiter).
    # A semaphore, not a CapacityLimiter: the launcher takes the slot, the run gives it back.
    runs = anyio.Semaphore(cap) if cap else None

    async def slot(i: int) -> None:
        try:
            await one(i)
        finally:
            assert runs is not None
            runs.release()

    async with send, anyio.create_task_group() as tg:
        stop.scope = tg.cancel_scope
        for i in range(len(prompts)):
            if runs is None:
                tg.start_soon(one, i)
            else:
                await runs.acquire()
                tg.start_soon(slot, i)
    if stop.interrupt is not None:
        raise stop.interrupt


class _Stop:
    """A batch's answer to a KeyboardInterrupt or SystemExit a client raised: every run is
    cancelled, and the batch raises it once they have all stopped."""

    __slots__ = ("interrupt", "scope")

    def __init__(self) -> None:
        self.interrupt: BaseException | None = None
        self.scope: anyio.CancelScope | None = None

    def __call__(self, exc: BaseException) -> None:
        if self.interrupt is None:
            self.interrupt = exc
        if self.scope is not None:
            self.scope.cancel()


async def run_many(
    pipeline: StepLike,
    prompts: Iterable[str],
    client: Client,
    *,
    seed: int | None = None,
    max_concurrency: int | None = None,
    timeout: float | None = None,
    retry: Retry | None = None,
    limits: Limits | None = None,
    hedge_after: float | None = None,
    progress: Progress | None = None,
    cache: Cache | None = None,
    ids: Iterable[str | int] | None = None,
) -> list[RunResult]:
    """Run ``pipeline`` on every prompt concurrently; the results come back in input order.

    ``max_concurrency`` caps the calls in flight across the whole batch; ``limits`` are
    shared by every run. A run that fails does not stop the batch: its ``RunResult`` carries
    the error. ``progress(done, total, result)`` is called as each run finishes. With ``seed``
    each prompt gets its own seed drawn from it, so the batch replays. ``ids`` (one str or int
    per prompt, unique) name the prompts in their results; with ``seed``, each prompt's seed
    then comes from its id (:func:`moa.row_seed`), not its position, so any split of the batch
    (resumed, or across Ray workers) gives every prompt the same seed. ``cache`` is shared by
    every run, as in :func:`moa.run`.
    """
    results: dict[int, RunResult] = {}
    async with as_completed(
        pipeline,
        prompts,
        client,
        seed=seed,
        max_concurrency=max_concurrency,
        timeout=timeout,
        retry=retry,
        limits=limits,
        hedge_after=hedge_after,
        progress=progress,
        cache=cache,
        ids=ids,
    ) as stream:
        async for r in stream:
            results[r.index] = r
    return [results[i] for i in range(len(results))]


@asynccontextmanager
async def as_completed(
    pipeline: StepLike,
    prompts: Iterable[str],
    client: Client,
    *,
    seed: int | None = None,
    max_concurrency: int | None = None,
    timeout: float | None = None,
    retry: Retry | None = None,
    limits: Limits | None = None,
    hedge_after: float | None = None,
    progress: Progress | None = None,
    cache: Cache | None = None,
    ids: Iterable[str | int] | None = None,
) -> AsyncIterator[AsyncIterator[RunResult]]:
    """``run_many`` as a stream in completion order::

        async with moa.as_completed(pipeline, prompts, client) as results:
            async for r in results:
                ...

    Leaving the block early cancels the runs still going.
    """
    step = as_step(pipeline, where="run_many(pipeline)")
    items = _prompts(prompts)
    names = _ids(ids, len(items))
    _check_batch(
        client, seed, max_concurrency, timeout, retry, limits, hedge_after, progress, cache
    )
    send, receive = anyio.create_memory_object_stream[RunResult](math.inf)
    with unwrapped():
        async with receive, anyio.create_task_group() as tg:
            options = {
                "max_concurrency": max_concurrency,
                "retry": retry,
                "timeout": timeout,
                "limits": limits,
                "hedge_after": hedge_after,
                "cache": cache,
            }
            tg.start_soon(_drive, step, items, client, send, seed, names, progress, options)
            try:
                yield receive
            finally:
                tg.cancel_scope.cancel()


def _check_batch(
    client: object,
    seed: object,
    max_concurrency: object,
    timeout: object,
    retry: object,
    limits: object,
    hedge_after: object,
    progress: object,
    cache: object = None,
) -> None:
    check_options(client, seed, max_concurrency, timeout, retry, limits, hedge_after, cache)
    if progress is not None and not callable(progress):
        raise TypeError(
            f"run_many(progress=...): progress must be a callable "
            f"progress(done, total, result) or None, not {_describe(progress)}"
        )

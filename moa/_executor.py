"""The executor: ``run`` walks a pipeline, makes every model call and writes history.

LLM steps run their calls concurrently in an anyio task group under an optional
CapacityLimiter; each call has an optional ``fail_after`` timeout and tenacity retries.
Outputs and history are assembled in pipeline order, so they never depend on which call
finished first.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import random
import secrets
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from time import monotonic
from typing import Any, Protocol

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

from ._bounds import MAX_CALLS, MAX_REPLY_CHARS, MAX_REQUEST_CHARS, check_int, safe_repr
from ._cache import Cache
from ._events import (CallFinished, CallRetrying, Event, EventHandler, RunFinished, StepFinished,
                      StepStarted, TextChunk)
from ._history import CallRecord, History, StepRecord
from ._limits import Limits
from ._llm_steps import LLMStep, Message, Request
from ._pipeline import Parallel, Pipeline, Step, StepLike, _describe, as_step
from ._seeds import accepts_seed, call_seed
from ._transforms import Transform
from .errors import (CacheMissError, ClientOutputError, EmptyInputError, MoaError,
                     ProviderError, RetryAfterTooLongError, StepFailedError,
                     StreamInterruptedError)

__all__ = ("Client", "StreamingClient", "Usage", "Retry", "run", "run_stream", "run_sync")


class Client(Protocol):
    """``async def client(model, messages, temp, max_tokens) -> (text, input_tokens,
    output_tokens)``, called with keyword arguments. A token count may be None (unknown)."""

    def __call__(
        self, *, model: str, messages: list[dict[str, str]], temp: float, max_tokens: int
    ) -> Awaitable[tuple[str, int | None, int | None]]: ...


@dataclass(frozen=True, slots=True)
class Usage:
    """The token counts a streamed reply ends with; either may be None (not reported)."""

    input_tokens: int | None
    output_tokens: int | None


class StreamingClient(Client, Protocol):
    """A client that can also stream: ``client.stream(model=, messages=, temp=, max_tokens=)``
    is an async iterator of the reply's text chunks (``str``, in order) whose last item may be a
    :class:`Usage`. Without a Usage the counts are unknown. Optional: ``run_stream`` streams a
    client that has ``stream`` and waits for the whole reply from one that has not."""

    def stream(
        self, *, model: str, messages: list[dict[str, str]], temp: float, max_tokens: int
    ) -> AsyncIterator[str | Usage]: ...


# Jitter only moves when a retry happens, never what a run returns; it has its own generator
# so the global ``random`` module is never touched.
_jitter = random.Random()


@dataclass(frozen=True, slots=True)
class Retry:
    """How a failed call is retried: up to ``attempts`` tries in all, waiting
    ``initial * 2**k`` seconds (at most ``max_wait``) plus up to ``jitter`` times that, at
    random, between tries. An exception is retried when it is an instance of ``retry_on``
    and does not say ``retryable = False``; a ``retry_after`` attribute (seconds, as a
    provider's 429 sends it) is the least wait, up to ``max_retry_after`` seconds: a provider
    asking for longer fails the call at once with :class:`~moa.errors.RetryAfterTooLongError`
    (it is not slept through, and a model's ``Limits`` are not paused for it).

    ``Retry(attempts=1)`` never retries. The default is 3 attempts starting near 0.5 s.
    """

    attempts: int = 3
    initial: float = 0.5
    max_wait: float = 8.0
    jitter: float = 0.5
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    max_retry_after: float = 120.0

    def __post_init__(self) -> None:
        check_int("Retry", "attempts", self.attempts, 1, MAX_CALLS)
        for name in ("initial", "max_wait", "jitter", "max_retry_after"):
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not 0 <= value <= sys.float_info.max):
                raise ValueError(f"Retry({name}=...): {name} must be a finite number >= 0, "
                                 f"got {safe_repr(value)}")
        if isinstance(self.retry_on, type):
            object.__setattr__(self, "retry_on", (self.retry_on,))
        if not all(isinstance(t, type) and issubclass(t, BaseException) for t in self.retry_on):
            raise TypeError(f"Retry(retry_on=...): retry_on must be exception types, got {safe_repr(self.retry_on)}")

    def should_retry(self, exc: BaseException) -> bool:
        """Whether ``exc`` may be retried under this policy (attempts left aside)."""
        return (isinstance(exc, self.retry_on) and getattr(exc, "retryable", True) is not False
                and self.too_long(exc) is None)

    def too_long(self, exc: BaseException) -> RetryAfterTooLongError | None:
        """The error to fail with when ``exc`` asks to wait longer than ``max_retry_after``."""
        after = retry_after(exc)
        if after is None or after <= self.max_retry_after:
            return None
        too_long = RetryAfterTooLongError(getattr(exc, "model", "?"), after,
                                          self.max_retry_after, exc)
        too_long.__cause__ = exc
        return too_long

    def wait(self, attempt: int, exc: BaseException | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        base = min(self.max_wait, self.initial * 2 ** (attempt - 1))
        delay = base + self.jitter * base * _jitter.random()
        after = retry_after(exc)
        if after is not None and after > delay:
            delay = min(after, self.max_retry_after)
        return delay

    def _tenacity_wait(self, state: Any) -> float:
        return self.wait(state.attempt_number, state.outcome.exception() if state.outcome else None)

    def retrying(self, before_sleep: Callable[[Any], Any] | None = None) -> AsyncRetrying:
        """A tenacity ``AsyncRetrying`` that carries out this policy on anyio's clock;
        ``before_sleep(retry_state)`` is called before each wait."""
        return AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=self._tenacity_wait,
            retry=retry_if_exception(self.should_retry),
            sleep=anyio.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )


DEFAULT_RETRY = Retry()


def retry_after(exc: BaseException | None) -> float | None:
    """The seconds ``exc`` asks to wait before a retry (its ``retry_after``), or None when it
    asks nothing usable (missing, not a number, NaN, or not above 0)."""
    after = getattr(exc, "retry_after", None)
    if isinstance(after, bool) or not isinstance(after, (int, float)) or not after > 0:
        return None
    return float(after)


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _check_output(model: str, out: Any) -> tuple[str, int | None, int | None]:
    # A tuple subclass (a namedtuple) or a list of three is the shape too.
    if not isinstance(out, (tuple, list)) or len(out) != 3:
        raise ClientOutputError(model, out, "expected a tuple of 3 items")
    text, tin, tout = out
    if type(text) is not str:
        raise ClientOutputError(model, out, f"the text must be a str, got {type(text).__name__}")
    if len(text) > MAX_REPLY_CHARS:
        raise ProviderError(f"the reply is {len(text):,} characters, more than moa accepts "
                            f"in one reply ({MAX_REPLY_CHARS:,})", model=model, retryable=False)
    for name, n in (("input_tokens", tin), ("output_tokens", tout)):
        if n is not None and (type(n) is not int or n < 0):
            raise ClientOutputError(model, out, f"{name} must be an int >= 0 or None, got {safe_repr(n)}")
    return text, tin, tout


def _rec(req: Request, text: str | None, tin: int | None, tout: int | None, attempts: int,
         error: str | None = None, latency: float = 0.0, cancelled: bool = False,
         hedges: tuple[CallRecord, ...] = (), cached: bool = False) -> CallRecord:
    """The history record of a call that asked ``req``."""
    return CallRecord(req.model, req.messages, req.temp, req.max_tokens, text, tin, tout,
                      attempts, error, latency, cancelled, hedges, cached, req.agent, req.seed)


def _estimate_tokens(messages: tuple[Message, ...]) -> int:
    # About four characters a token: only a tokens-per-minute budget's first guess; the usage
    # the provider reports settles the account afterwards.
    return sum(len(m["content"]) for m in messages) // 4 + 1


class _Run:
    """One run's state: the client, its limits and policy, and the prompt."""

    __slots__ = ("client", "prompt", "limiter", "timeout", "retry", "limits", "hedge_after",
                 "plain", "cache", "on_event", "stream_path", "scope", "interrupt", "seeded",
                 "run_seed")

    def __init__(self, client: Client, prompt: str, limiter: anyio.CapacityLimiter | None,
                 timeout: float | None, retry: Retry, limits: Limits | None = None,
                 hedge_after: float | None = None, cache: Cache | None = None,
                 on_event: EventHandler | None = None) -> None:
        self.client = client
        self.prompt = prompt
        self.limiter = limiter
        self.timeout = timeout
        self.retry = retry
        self.limits = limits
        self.hedge_after = hedge_after
        self.cache = cache
        self.on_event = on_event
        # The path of the step whose final-reply calls are streamed (run_stream only).
        self.stream_path: tuple[int, ...] | None = None
        self.plain = (limiter is None and timeout is None and limits is None
                      and hedge_after is None)
        # The run's scope, and the KeyboardInterrupt/SystemExit a client raised: the run is
        # cancelled as a whole and raises it once every call has stopped.
        self.scope: anyio.CancelScope | None = None
        self.interrupt: BaseException | None = None
        # Whether the client takes a sampling seed, and the run's seed the calls' come from.
        self.seeded = accepts_seed(client)
        self.run_seed = 0

    def interrupted(self, req: Request, exc: BaseException, start: float
                    ) -> tuple[CallRecord, BaseException | None]:
        """A client raised KeyboardInterrupt or SystemExit (a Ctrl-C inside blocking code):
        cancel the whole run, so every call stops, and have ``run`` raise it at the end. On
        asyncio a task must not raise it itself: it would escape the event loop and leave
        the other calls running."""
        if self.interrupt is None:
            self.interrupt = exc
        if self.scope is not None:
            self.scope.cancel()
        return _rec(req, None, None, None,
                          1, _error_text(exc), monotonic() - start), None

    async def _attempt(self, req: Request, sent: anyio.Event | None = None,
                       chunk: Callable[[str], None] | None = None
                       ) -> tuple[str, int | None, int | None]:
        gate = self.limits.gate(req.model) if self.limits is not None else None
        if gate is not None:
            return await self._gated(gate, req, sent, chunk)
        limiter = self.limiter
        if limiter is None:
            return await self._send(req, sent, chunk)
        # A free slot is taken without a trip through the event loop; acquire_nowait refuses
        # while others queue, so waiting callers keep their turn.
        try:
            limiter.acquire_nowait()
        except anyio.WouldBlock:
            await limiter.acquire()
        try:
            return await self._send(req, sent, chunk)
        finally:
            limiter.release()

    async def _gated(self, gate: Any, req: Request, sent: anyio.Event | None,
                     chunk: Callable[[str], None] | None = None
                     ) -> tuple[str, int | None, int | None]:
        estimate = await gate.enter(_estimate_tokens(req.messages))
        used: int | None = None
        try:
            if self.limiter is None:
                out = await self._send(req, sent, chunk)
            else:
                async with self.limiter:
                    out = await self._send(req, sent, chunk)
            used = out[1] + out[2] if out[1] is not None and out[2] is not None else None
            return out
        except Exception as exc:
            after = retry_after(exc)
            if after is not None and self.retry.too_long(exc) is None:
                gate.pause(after)  # this model only; the others keep going
            raise
        finally:
            gate.leave(estimate, used)

    async def _send(self, req: Request, sent: anyio.Event | None = None,
                    chunk: Callable[[str], None] | None = None
                    ) -> tuple[str, int | None, int | None]:
        # The client gets its own copies: a client that edits its messages cannot edit history.
        msgs = [m.copy() for m in req.messages]
        if sent is not None:
            sent.set()
        ask = self.client if chunk is None else functools.partial(self._streamed, chunk)
        # Only a client that takes a seed is given one (its requests alone carry one).
        extra = {} if req.seed is None else {"seed": req.seed}
        if self.timeout is None:
            out = await ask(model=req.model, messages=msgs, temp=req.temp,
                            max_tokens=req.max_tokens, **extra)
        else:
            # fail_after's behaviour with a bare cancel scope: two context-manager layers fewer.
            with anyio.CancelScope(deadline=anyio.current_time() + self.timeout) as scope:
                out = await ask(model=req.model, messages=msgs, temp=req.temp,
                                max_tokens=req.max_tokens, **extra)
            if scope.cancelled_caught:
                raise TimeoutError
        return _check_output(req.model, out)

    async def _streamed(self, chunk: Callable[[str], None], *, model: str,
                        messages: list[dict[str, str]], temp: float, max_tokens: int,
                        **extra: int) -> tuple[str, int | None, int | None]:
        """One call through the client's ``stream``, each piece of text passed to ``chunk``
        as it comes; a client without ``stream`` is called as usual and its reply is one
        chunk."""
        stream = getattr(self.client, "stream", None)
        if stream is None:
            out = _check_output(model, await self.client(model=model, messages=messages,
                                                         temp=temp, max_tokens=max_tokens,
                                                         **extra))
            if out[0]:
                chunk(out[0])
            return out
        parts: list[str] = []
        usage = Usage(None, None)
        items = stream(model=model, messages=messages, temp=temp, max_tokens=max_tokens, **extra)
        try:
            async for item in items:
                if type(item) is str:
                    if item:
                        parts.append(item)
                        chunk(item)
                elif isinstance(item, Usage):
                    usage = item
                else:
                    raise ClientOutputError(model, item, "a stream yields str chunks and a "
                                                         "final moa.Usage")
        finally:
            # Close the client's stream now, not whenever it is garbage collected: its
            # connection is released even when the run is cancelled mid-reply.
            aclose = getattr(items, "aclose", None)
            if aclose is not None:
                with anyio.move_on_after(5, shield=True):
                    await aclose()
        return "".join(parts), usage.input_tokens, usage.output_tokens

    async def _call_streamed(self, req: Request, path: tuple[int, ...], index: int
                             ) -> tuple[CallRecord, BaseException | None]:
        """A final-reply call of the streamed step: retried only until its first chunk has
        gone out; after that a failure is final, so no text is ever delivered twice."""
        assert self.on_event is not None
        on_event = self.on_event
        start = monotonic()
        stream = getattr(self.client, "stream", None)
        if req.seed is not None and stream is not None and not accepts_seed(stream):
            req = dataclasses.replace(req, seed=None)  # history says no seed was sent
        sent = 0

        def chunk(text: str) -> None:
            nonlocal sent
            sent += 1
            on_event(TextChunk(path, index, text))

        attempts = 1
        before_sleep = (lambda state: on_event(CallRetrying(
            path, index, req.model, state.attempt_number,
            _error_text(state.outcome.exception()), state.next_action.sleep)))
        try:
            async for attempt in self.retry.retrying(before_sleep):
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    try:
                        text, tin, tout = await self._attempt(req, None, chunk)
                    except Exception as exc:
                        if not sent or isinstance(exc, ClientOutputError):
                            raise
                        raise StreamInterruptedError(
                            f"{req.model}: the reply stream broke after {sent} chunk(s) "
                            f"({_error_text(exc)}); not retried, so no text is delivered "
                            f"twice") from exc
            return _rec(req, text, tin, tout,
                              attempts, None, monotonic() - start), None
        except (KeyboardInterrupt, SystemExit) as exc:
            return self.interrupted(req, exc, start)
        except Exception as exc:
            exc = self.retry.too_long(exc) or exc
            return _rec(req, None, None, None,
                              attempts, _error_text(exc), monotonic() - start), exc

    async def _hedged(self, req: Request, hedges: list[CallRecord]
                      ) -> tuple[str, int | None, int | None]:
        """One attempt that, unanswered after ``hedge_after`` seconds, races a duplicate: the
        first answer wins and the other is cancelled and recorded in ``hedges``. When both
        fail, the first one's error is raised."""
        outcomes: list[tuple[Any, BaseException | None, float] | None] = [None, None]
        starts = [0.0, 0.0]
        first_done = anyio.Event()
        # The hedge clock starts when the first attempt reaches the client, not while it
        # queues for a slot: a duplicate of a queued call would only queue too.
        first_sent = anyio.Event()

        async def race(i: int, scope: anyio.CancelScope) -> None:
            starts[i] = monotonic()
            try:
                outcome = await self._attempt(req, first_sent if i == 0 else None)
                outcomes[i] = (outcome, None, monotonic())
                scope.cancel()
            except Exception as exc:
                outcomes[i] = (None, exc, monotonic())
            finally:
                if i == 0:
                    first_sent.set()
                    first_done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(race, 0, tg.cancel_scope)
            await first_sent.wait()
            with anyio.move_on_after(self.hedge_after):
                await first_done.wait()
            if outcomes[0] is None:  # still running: a primary that failed is the retry's job
                tg.start_soon(race, 1, tg.cancel_scope)
        winner = next((i for i in (0, 1) if outcomes[i] and outcomes[i][1] is None), None)
        if starts[1]:
            loser = 1 if winner == 0 else 0 if winner == 1 else 1
            out = outcomes[loser]
            if out is None:
                hedges.append(_rec(req, None,
                                         None, None, 1, None, monotonic() - starts[loser], True))
            else:
                text, tin, tout = out[0] if out[1] is None else (None, None, None)
                hedges.append(_rec(req, text,
                                         tin, tout, 1, _error_text(out[1]) if out[1] else None,
                                         out[2] - starts[loser]))
        if winner is None:
            raise outcomes[0][1]  # type: ignore[index,misc]
        return outcomes[winner][0]  # type: ignore[index]

    async def call(self, req: Request, path: tuple[int, ...] = (), index: int = 0
                   ) -> tuple[CallRecord, BaseException | None]:
        """One call with its retries (and hedges), as a record; never raises but for
        cancellation. ``path`` and ``index`` say which call it is, for events."""
        if self.stream_path is not None and req.final and path == self.stream_path:
            return await self._call_streamed(req, path, index)
        start = monotonic()
        hedges: list[CallRecord] | None = None if self.hedge_after is None else []
        try:
            if self.plain:  # nothing to apply around the client: two coroutine frames fewer
                msgs = [m.copy() for m in req.messages]
                text, tin, tout = _check_output(req.model, await (
                    self.client(model=req.model, messages=msgs, temp=req.temp,
                                max_tokens=req.max_tokens) if req.seed is None else
                    self.client(model=req.model, messages=msgs, temp=req.temp,
                                max_tokens=req.max_tokens, seed=req.seed)))
            elif hedges is None:
                text, tin, tout = await self._attempt(req)
            else:
                text, tin, tout = await self._hedged(req, hedges)
            return _rec(req, text, tin, tout,
                              1, None, monotonic() - start, False,
                              tuple(hedges) if hedges else ()), None
        except (KeyboardInterrupt, SystemExit) as exc:
            return self.interrupted(req, exc, start)
        except Exception as exc:
            first = exc
        # The failure path: only here is tenacity's machinery built.
        attempts = 1
        on_event = self.on_event
        before_sleep = None if on_event is None else (lambda state: on_event(CallRetrying(
            path, index, req.model, state.attempt_number,
            _error_text(state.outcome.exception()), state.next_action.sleep)))
        try:
            async for attempt in self.retry.retrying(before_sleep):
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    if first is not None:
                        exc, first = first, None
                        raise exc
                    if hedges is None:
                        text, tin, tout = await self._attempt(req)
                    else:
                        text, tin, tout = await self._hedged(req, hedges)
            return _rec(req, text, tin, tout,
                              attempts, None, monotonic() - start, False,
                              tuple(hedges) if hedges else ()), None
        except (KeyboardInterrupt, SystemExit) as exc:
            return self.interrupted(req, exc, start)
        except Exception as exc:
            exc = self.retry.too_long(exc) or exc
            return _rec(req, None, None, None,
                              attempts, _error_text(exc), monotonic() - start, False,
                              tuple(hedges) if hedges else ()), exc


@dataclass(slots=True)
class _Branch:
    """The evolving state of one line of execution: its RNG, its records, and which step
    (if any) emptied its responses."""

    rng: random.Random
    records: list[StepRecord]
    emptied_by: str | None = None


async def _exec(run: _Run, step: Step, responses: list[str], br: _Branch,
                path: tuple[int, ...]) -> list[str]:
    if isinstance(step, Pipeline):
        for i, sub in enumerate(step.steps):
            responses = await _exec(run, sub, responses, br, path + (i,))
        return responses
    if isinstance(step, LLMStep):
        return await _exec_llm(run, step, responses, br, path)
    if isinstance(step, Transform):
        return _exec_transform(run, step, responses, br, path)
    if isinstance(step, Parallel):
        return await _exec_parallel(run, step, responses, br, path)
    raise TypeError(f"moa cannot run {_describe(step)}: a step must derive from Transform, "
                    f"LLMStep, Pipeline or Parallel")


def _exec_transform(run: _Run, step: Transform, responses: list[str], br: _Branch,
                    path: tuple[int, ...]) -> list[str]:
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
    _record(run, br, StepRecord(repr(step), path, "transform", tuple(responses), tuple(out),
                                (), notes, monotonic() - start))
    return out


def _record(run: _Run, br: _Branch, record: StepRecord) -> None:
    br.records.append(record)
    if run.on_event is not None:
        run.on_event(StepFinished(record))


def _sample_indices(requests: list[Request], seen: dict[tuple[Any, ...], int]) -> list[int]:
    # The n-th of several identical requests in a step is sample n: six identical Self-MoA
    # calls are six cache entries, not one answer six times. ``seen`` carries the count
    # across a step's rounds.
    out = []
    for req in requests:
        key = (req.model, tuple(tuple(m.items()) for m in req.messages), req.temp, req.max_tokens)
        out.append(seen.get(key, 0))
        seen[key] = out[-1] + 1
    return out


def _lookup(run: _Run, step: LLMStep, path: tuple[int, ...], requests: list[Request],
            indices: list[int], offset: int) -> list[CallRecord | None]:
    """The cached answer of each request, or None; in replay mode a miss is an error."""
    cache = run.cache
    assert cache is not None
    hits: list[CallRecord | None] = []
    for i, (req, n) in enumerate(zip(requests, indices), offset):
        hit = cache.get(req.model, req.messages, req.temp, req.max_tokens, path + (n,))
        if hit is None and cache.mode == "replay":
            raise CacheMissError(
                f"replay: {cache!r} holds no answer for call {i} of {step!r} at path {path} "
                f"(model {req.model!r}, sample {n}); record it first with mode='rw' or 'record'")
        hits.append(None if hit is None else _rec(
            req, hit[0], hit[1], hit[2], 0,
            cached=True))
    return hits


_DEFAULT_PLAN = LLMStep.plan


def _check_requests(step: LLMStep, requests: object) -> None:
    if type(requests) is not list or not all(type(r) is Request for r in requests):
        raise TypeError(f"{step!r} must ask for a list of moa.Request in each round, "
                        f"asked for {_describe(requests)}")
    if len(requests) > MAX_CALLS:
        raise StepFailedError(f"{step!r} asks for {len(requests):,} calls in one round, more "
                              f"than moa makes for one step ({MAX_CALLS:,})", step=repr(step))
    for req in requests:
        size = sum(len(m["content"]) for m in req.messages)
        if size > MAX_REQUEST_CHARS:
            raise StepFailedError(
                f"{step!r} would send {size:,} characters to {req.model} in one call, more than "
                f"moa sends in one request ({MAX_REQUEST_CHARS:,}); cut the responses down "
                f"first (Take, Sample, Map) or aggregate them in rounds (AggregateSeq)",
                step=repr(step))


def _advance(step: LLMStep, path: tuple[int, ...], plan: Any, replies: list[str | None] | None
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


async def _round(run: _Run, step: LLMStep, path: tuple[int, ...], requests: list[Request],
                 offset: int, seen: dict[tuple[Any, ...], int]
                 ) -> tuple[list[CallRecord], BaseException | None]:
    """One round of a step's calls: cached answers first, then the rest concurrently (until
    the quorum, if the step has one). Records come back in request order, with the error of
    a cache that failed to store an answer (the answers are kept: they were paid for)."""
    on_event = run.on_event
    indices: list[int] = []
    if run.seeded or run.cache is not None:
        indices = _sample_indices(requests, seen)
        if run.seeded:
            requests = [dataclasses.replace(r, seed=call_seed(run.run_seed, path, r, n))
                        for r, n in zip(requests, indices)]
    if run.cache is None and on_event is None and step.enough(len(requests)) is None:
        # The plain round, on every run's path: no cache, no events, no quorum.
        if len(requests) == 1:
            plain = [await run.call(requests[0], path, offset)]
        else:
            plain = [None] * len(requests)  # type: ignore[list-item]

            async def call(i: int) -> None:
                plain[i] = await run.call(requests[i], path, offset + i)

            async with anyio.create_task_group() as tg:
                for i in range(len(requests)):
                    tg.start_soon(call, i)
        for _, exc in plain:
            if isinstance(exc, ClientOutputError):
                raise exc
        return [r for r, _ in plain], None
    enough = step.enough(len(requests))
    results: list[tuple[CallRecord, BaseException | None] | None] = [None] * len(requests)
    if run.cache is not None:
        for i, hit in enumerate(_lookup(run, step, path, requests, indices, offset)):
            if hit is not None:
                results[i] = (hit, None)
                if on_event is not None:
                    if requests[i].final and path == run.stream_path and hit.text:
                        on_event(TextChunk(path, offset + i, hit.text))
                    on_event(CallFinished(path, offset + i, hit))
    todo = [i for i, r in enumerate(results) if r is None]
    if enough is not None:
        enough -= len(requests) - len(todo)  # cached answers count towards the quorum
    stored: list[BaseException] = []

    async def one(i: int) -> None:
        results[i] = record = await run.call(requests[i], path, offset + i)
        if run.cache is not None and record[0].ok:
            req, c = requests[i], record[0]
            try:
                run.cache.put(req.model, req.messages, req.temp, req.max_tokens,
                              path + (indices[i],), c.text, c.input_tokens,
                              c.output_tokens)  # type: ignore[arg-type]
            except Exception as exc:  # a broken cache file is the user's to see, not a call's
                stored.append(exc)
        if on_event is not None:
            on_event(CallFinished(path, offset + i, record[0]))

    if not todo:
        pass
    elif enough is not None and enough <= 0:
        for i in todo:  # the quorum is met from the cache: never sent (attempts=0)
            req = requests[i]
            results[i] = (_rec(req, None,
                                     None, None, 0, None, 0.0, True), None)
    elif enough is None:
        async with anyio.create_task_group() as tg:
            for i in todo:
                tg.start_soon(one, i)
    else:
        await _quorum(one, requests, todo, results, enough)
    if on_event is not None and enough is not None:
        for i in todo:  # the calls the quorum stopped (or never sent) are over too
            if results[i][0].cancelled:  # type: ignore[index]
                on_event(CallFinished(path, offset + i, results[i][0]))  # type: ignore[index]
    # A client of the wrong shape is a bug to fix, not a failure for min_success to absorb.
    broken = next((e for _, e in results if isinstance(e, ClientOutputError)), None)  # type: ignore[misc]
    if broken is not None:
        raise broken
    return [r[0] for r in results], (stored[0] if stored else None)  # type: ignore[index]


async def _exec_llm(run: _Run, step: LLMStep, responses: list[str], br: _Branch,
                    path: tuple[int, ...]) -> list[str]:
    start = monotonic()
    if step.needs_responses and not responses:
        cause = (f"{br.emptied_by} left none" if br.emptied_by else
                 "no step before it produced any; start the pipeline with Propose")
        _record(run, br, StepRecord(repr(step), path, "llm", (), (), (),
                                    ("received no responses",), 0.0))
        raise EmptyInputError(f"{step!r} received no responses: {cause}", step=repr(step))
    # A step with the default plan (one round: requests, then combine) is driven without a
    # generator: most steps are, and it is on every run's path.
    plan: Any = None
    try:
        if type(step).plan is _DEFAULT_PLAN:
            requests: list[Request] | None = step.requests(run.prompt, list(responses))
        else:
            plan = step.plan(run.prompt, list(responses), br.rng)
    except Exception as exc:
        exc.add_note(f"in step {step!r} at path {path}")
        raise
    returned: Any = None
    if plan is None:
        _check_requests(step, requests)
    else:
        requests, returned = _advance(step, path, plan, None)
    calls: list[CallRecord] = []
    seen: dict[tuple[Any, ...], int] = {}
    failed = cancelled = rounds = 0
    quorum_notes: list[str] = []
    on_event = run.on_event

    def give_up() -> None:
        # The step ends here: its plan is closed and what it did goes to history first.
        if plan is not None:
            plan.close()
        _record(run, br, StepRecord(repr(step), path, "llm", tuple(responses), (),
                                    tuple(calls), (), monotonic() - start))

    if requests is None and on_event is not None:  # a step that makes no call
        on_event(StepStarted(path, repr(step), 0))
    while requests is not None:
        rounds += 1
        if on_event is not None:
            on_event(StepStarted(path, repr(step), len(requests), rounds))
        try:
            records, cache_error = (await _round(run, step, path, requests, len(calls), seen)
                                    if requests else ([], None))
        except (ClientOutputError, CacheMissError):
            give_up()
            raise
        calls.extend(records)
        if cache_error is not None:
            give_up()
            raise cache_error
        ok = stopped = unsent = 0
        for c in records:
            if c.error is not None:
                failed += 1
            elif not c.cancelled:
                ok += 1
            elif c.attempts:
                stopped += 1
            else:
                unsent += 1
        cancelled += stopped + unsent
        if stopped:
            quorum_notes.append(f"quorum of {step.enough(len(requests))} reached: {stopped} "
                                f"call(s) still running were cancelled")
        if unsent:
            quorum_notes.append(f"quorum of {step.enough(len(requests))} met from the cache: "
                                f"{unsent} call(s) not sent")
        need = step.required(len(requests))
        if ok < need:
            give_up()
            errors = _grouped_errors(records)
            where = f" in round {rounds}" if rounds > 1 else ""
            raise StepFailedError(
                f"{step!r} failed{where}: {ok} of {len(records)} calls succeeded and it needs "
                f"{need} ({errors})", step=repr(step))
        replies = [c.text for c in records]
        if plan is not None:
            requests, returned = _advance(step, path, plan, replies)
            continue
        try:
            returned = step.combine(run.prompt, list(responses), replies)
        except Exception as exc:
            exc.add_note(f"in step {step!r} at path {path}")
            raise
        requests = None
    if type(returned) is not tuple or len(returned) != 2:
        raise TypeError(f"{step!r} must return (responses, notes) when its calls are done, "
                        f"returned {_describe(returned)}")
    out, notes = returned
    if type(out) is not list or not all(type(r) is str for r in out):
        raise TypeError(f"{step!r}.combine must return a list of str as its responses, "
                        f"returned {_describe(out)}")
    notes = list(notes)
    if failed:
        notes.append(f"{failed} of {len(calls)} calls failed; the step went on with "
                     f"{len(calls) - failed - cancelled}")
    notes.extend(quorum_notes)
    hits = sum(c.cached for c in calls)
    if hits:
        notes.append(f"{hits} of {len(calls)} answers came from the cache")
    if responses and not out:
        br.emptied_by = f"{step!r} at path {path}"
    _record(run, br, StepRecord(repr(step), path, "llm", tuple(responses), tuple(out),
                                tuple(calls), tuple(notes), monotonic() - start))
    return out


def _grouped_errors(records: list[CallRecord]) -> str:
    """The failed calls' errors, each distinct (model, error) once with how many calls had it:
    six calls to an unreachable server are one line, not the same error six times."""
    counts: dict[tuple[str, str], int] = {}
    for c in records:
        if c.error:
            counts[c.model, c.error] = counts.get((c.model, c.error), 0) + 1
    return "; ".join(f"{n} of {len(records)} calls to {model}: {error}" if n > 1
                     else f"{model}: {error}" for (model, error), n in counts.items())


async def _quorum(one: Callable[[int], Awaitable[None]], requests: list[Request], todo: list[int],
                  results: list[tuple[CallRecord, BaseException | None] | None], enough: int
                  ) -> None:
    """Runs the calls ``todo`` of a step until ``enough`` of them have answered; the rest are
    cancelled and recorded as cancelled."""
    starts = [0.0] * len(requests)
    answered = 0

    async def quorum_one(i: int, scope: anyio.CancelScope) -> None:
        nonlocal answered
        starts[i] = monotonic()
        await one(i)
        if results[i][0].ok:  # type: ignore[index]
            answered += 1
            if answered >= enough:
                scope.cancel()

    async with anyio.create_task_group() as tg:
        for i in todo:
            tg.start_soon(quorum_one, i, tg.cancel_scope)
    now = monotonic()
    for i in todo:
        if results[i] is None:
            q = requests[i]
            results[i] = (_rec(q, None, None, None,
                                     1, None, now - starts[i], True), None)


async def _exec_parallel(run: _Run, step: Parallel, responses: list[str], br: _Branch,
                         path: tuple[int, ...]) -> list[str]:
    start = monotonic()
    # Each branch gets its own generator, seeded from the parent in branch order, so the
    # draws do not depend on how the branches interleave.
    subs = [_Branch(random.Random(br.rng.getrandbits(64)), [], br.emptied_by)
            for _ in step.branches]
    outs: list[list[str] | None] = [None] * len(subs)
    failures: list[BaseException | None] = [None] * len(subs)

    async def branch(i: int, tg: anyio.abc.TaskGroup) -> None:
        try:
            outs[i] = await _exec(run, step.branches[i], responses, subs[i], path + (i,))
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
    out = [r for o in outs for r in o]  # type: ignore[union-attr]
    if responses and not out:
        br.emptied_by = f"{step!r} at path {path}"
    _record(run, br, StepRecord(repr(step), path, "parallel", tuple(responses), tuple(out), (),
                                (), monotonic() - start))
    return out


def _check_run_args(prompt: object, client: object, seed: object, max_concurrency: object,
                    timeout: object, retry: object, limits: object = None,
                    hedge_after: object = None, cache: object = None,
                    on_event: object = None) -> None:
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"run(prompt): prompt must be a non-empty str, got {safe_repr(prompt)}")
    where = unicode_error(prompt)
    if where is not None:
        raise ValueError(f"run(prompt): prompt must be valid Unicode text, but {where}")
    _check_options(client, seed, max_concurrency, timeout, retry, limits, hedge_after, cache,
                   on_event)


def unicode_error(text: str) -> str | None:
    """Why ``text`` cannot be sent to a model (it holds a lone surrogate, as text decoded
    from invalid UTF-8 with ``surrogateescape`` does), or None when it can."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (f"it holds a lone surrogate {text[exc.start]!r} at index {exc.start} "
                f"(invalid UTF-8 in the input?)")
    return None


def _check_options(client: object, seed: object, max_concurrency: object, timeout: object,
                   retry: object, limits: object, hedge_after: object, cache: object = None,
                   on_event: object = None) -> None:
    if not callable(client):
        raise TypeError("run(client): client must be an async callable "
                        f"client(model, messages, temp, max_tokens), not {_describe(client)}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"run(seed=...): seed must be an int or None, not {_describe(seed)}")
    if max_concurrency is not None and (isinstance(max_concurrency, bool) or
                                        not isinstance(max_concurrency, int) or max_concurrency < 1):
        raise ValueError("run(max_concurrency=...): max_concurrency must be an int >= 1 or None, "
                         f"got {safe_repr(max_concurrency)}")
    for name, value in (("timeout", timeout), ("hedge_after", hedge_after)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not 0 < value < math.inf):
            raise ValueError(f"run({name}=...): {name} must be a number of seconds > 0 or "
                             f"None, got {safe_repr(value)}")
    if retry is not None and not isinstance(retry, Retry):
        raise TypeError(f"run(retry=...): retry must be a moa.Retry policy or None, "
                        f"not {_describe(retry)}")
    if limits is not None and not isinstance(limits, Limits):
        raise TypeError(f"run(limits=...): limits must be a moa.Limits or None, "
                        f"not {_describe(limits)}")
    if cache is not None and not isinstance(cache, Cache):
        raise TypeError(f"run(cache=...): cache must be a moa.Cache or None, not {_describe(cache)}")
    if on_event is not None and not callable(on_event):
        raise TypeError(f"run(on_event=...): on_event must be a callable on_event(event) or None, "
                        f"not {_describe(on_event)}")


async def _run(step: Step, prompt: str, state: _Run, seed: int | None) -> tuple[str, History]:
    if seed is None:
        seed = secrets.randbits(63)
    state.run_seed = seed
    root = _Branch(random.Random(seed), [])
    start = monotonic()
    path = () if isinstance(step, Pipeline) else (0,)
    outputs: list[str] = []
    try:
        with anyio.CancelScope() as state.scope:
            outputs = await _exec(state, step, [], root, path)
    except MoaError as exc:  # a failed step, a broken cache: the user keeps what ran
        if state.interrupt is not None:
            raise state.interrupt from None
        exc.history = History(prompt, seed, tuple(root.records), (), monotonic() - start)
        raise
    except BaseExceptionGroup as group:
        interrupt = _interrupt_of(group)
        if interrupt is None:
            raise
        raise interrupt from None
    if state.interrupt is not None:
        raise state.interrupt
    history = History(prompt, seed, tuple(root.records), tuple(outputs), monotonic() - start)
    return (outputs[0] if outputs else ""), history


def _interrupt_of(group: BaseExceptionGroup) -> BaseException | None:
    """A group holding nothing but KeyboardInterrupts (trio delivers a Ctrl-C into whichever
    task runs, and a task group then wraps it) as the one KeyboardInterrupt, so the caller's
    ``except KeyboardInterrupt`` works; None for any other group."""
    matched, rest = group.split(KeyboardInterrupt)
    if matched is None or rest is not None:
        return None
    first = matched
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first


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
    _check_run_args(prompt, client, seed, max_concurrency, timeout, retry, limits, hedge_after,
                    cache, on_event)
    limiter = anyio.CapacityLimiter(max_concurrency) if max_concurrency else None
    state = _Run(client, prompt, limiter, timeout, retry or DEFAULT_RETRY, limits, hedge_after,
                 cache, on_event)
    return await _run(step, prompt, state, seed)


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
    _check_run_args(prompt, client, seed, max_concurrency, timeout, retry, limits, hedge_after,
                    cache)
    send, receive = anyio.create_memory_object_stream[Event](math.inf)
    events = _Events(receive)
    limiter = anyio.CapacityLimiter(max_concurrency) if max_concurrency else None
    state = _Run(client, prompt, limiter, timeout, retry or DEFAULT_RETRY, limits, hedge_after,
                 cache, send.send_nowait)
    state.stream_path = _stream_path(step)

    async def drive() -> None:
        with send:
            try:
                result, history = await _run(step, prompt, state, seed)
            except Exception as exc:
                events.error = exc
            else:
                send.send_nowait(RunFinished(result, history))

    with _unwrapped():
        async with receive, anyio.create_task_group() as tg:
            tg.start_soon(drive)
            try:
                yield events
            finally:
                tg.cancel_scope.cancel()


@contextmanager
def _unwrapped() -> Iterator[None]:
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

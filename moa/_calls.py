"""One model call as a stack of small layers, composed once per run.

This is the middleware pattern of tower's layers, Finagle's filters and httpx's transports:
each concern that wraps a call is one function from the call it wraps to a new call, and
:func:`compose` stacks only the layers a run's options ask for, once, before the first call.
A run with no options gets the client's own call with the retry policy around it and nothing
else. The walk over the pipeline (:mod:`moa._executor`) only ever asks a composed
:class:`Calls` to make a call; it never knows which layers are there.

Two kinds of function are stacked. An *attempt* is one try: ``attempt(req, tap) -> Reply``,
raising on failure. Inside out:

  client      the client itself, given copies of the messages (and the seed, if it takes one);
              its reply's shape is checked
  timeout     ``timeout`` seconds per try (``TimeoutError``)
  cap         a slot of the run's ``max_concurrency`` limiter for the try
  limits      the model's gate in ``Limits``: calls in flight, requests and tokens per minute,
              and a pause when the provider sends Retry-After
  hedge       after ``hedge_after`` seconds, a duplicate try races the first

A *call* makes tries into a record: ``call(req, site) -> Outcome``, never raising but for
cancellation. Inside out:

  retry       tries until one answers or the policy gives up, into a CallRecord
  stream      (run_stream) the final reply's tries through ``client.stream``, retried only
              until its first chunk went out; other calls pass by
  cache       answers the cache holds are served without a call (``try_now``); new ones stored
  events      CallFinished for every call, CallRetrying before every wait

``tap`` carries what a call learns while it runs (the hedges it raced, when the try reached
the client, the chunks of a streamed reply); ``site`` says where the call is: the step's path,
the call's index in the step, and its sample index among identical requests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from time import monotonic
from typing import Any, cast

import anyio

from ._cache import Cache
from ._client import Client, Reply, Usage, check_output, error_text
from ._events import CallFinished, CallRetrying, EventHandler, TextChunk
from ._history import CallRecord
from ._limits import Limits
from ._llm_steps import Message, Request
from ._retry import Retry, retry_after
from ._seeds import accepts_seed
from .errors import CacheError, CacheMissError, ClientOutputError, StreamInterruptedError

__all__ = ("Calls", "Outcome", "Site", "compose", "record")

#: Where a call is: its step's path, its index among the step's calls, and its sample index
#: among the identical requests of that step (None when no layer needs it).
Site = tuple[tuple[int, ...], int, "int | None"]
#: A call's record, and an error that its step must raise (a client of the wrong shape, a
#: replay miss, a cache that failed to store the answer); None when the step goes on.
Outcome = tuple[CallRecord, "BaseException | None"]
Attempt = Callable[[Request, "Tap | None"], Awaitable[Reply]]
Call = Callable[[Request, Site], Awaitable[Outcome]]
#: Answers a call at once when it can (a cached answer), or None; ``step`` is the asking step.
TryNow = Callable[[Request, Site, object], "Outcome | None"]
Interrupt = Callable[[BaseException], None]


@dataclass(slots=True)
class Tap:
    """What one call's tries report as they go: the racers a hedge lost, a signal when a try
    reaches the client, and a sink for a streamed reply's chunks."""

    hedges: list[CallRecord] = field(default_factory=list)
    sent: Callable[[], None] | None = None
    chunk: Callable[[str], None] | None = None


def record(
    req: Request,
    text: str | None,
    tin: int | None,
    tout: int | None,
    attempts: int,
    error: str | None = None,
    latency: float = 0.0,
    cancelled: bool = False,
    hedges: tuple[CallRecord, ...] = (),
    cached: bool = False,
) -> CallRecord:
    """The history record of a call that asked ``req``."""
    return CallRecord(
        req.model,
        req.messages,
        req.temp,
        req.max_tokens,
        text,
        tin,
        tout,
        attempts,
        error,
        latency,
        cancelled,
        hedges,
        cached,
        req.agent,
        req.seed,
    )


def copies(messages: tuple[Message, ...]) -> list[dict[str, str]]:
    """The messages as the client gets them: its own dicts, so a client that edits them cannot
    edit history. Steps build read-only mappings (MappingProxyType), which copy in C."""
    try:
        return [cast(Any, m).copy() for m in messages]
    except AttributeError:  # a Mapping without copy(), from a custom step
        return [dict(m) for m in messages]


def _send(client: Client, req: Request, msgs: list[dict[str, str]]) -> Awaitable[Any]:
    """The client's call for ``req``, not yet awaited (so no frame of ours stays on the stack):
    the seed is passed only when the request has one, which it has only for a client that
    takes a ``seed`` keyword (``accepts_seed``)."""
    if req.seed is None:
        return client(model=req.model, messages=msgs, temp=req.temp, max_tokens=req.max_tokens)
    return client(
        model=req.model,
        messages=msgs,  # type: ignore[call-arg]  # it takes a seed: accepts_seed
        temp=req.temp,
        max_tokens=req.max_tokens,
        seed=req.seed,
    )


def _fatal(exc: BaseException) -> BaseException | None:
    # A client of the wrong shape is a bug to fix, not a failure for min_success to absorb.
    return exc if isinstance(exc, ClientOutputError) else None


# -- attempts ------------------------------------------------------------------------------------
def client_attempt(client: Client) -> Attempt:
    """The innermost try: the client itself, on its own copies of the messages (a client that
    edits them cannot edit history), given the seed only if it takes one."""

    async def attempt(req: Request, tap: Tap | None) -> Reply:
        msgs = copies(req.messages)
        if tap is not None and tap.sent is not None:
            tap.sent()
        return check_output(req.model, await _send(client, req, msgs))

    return attempt


def stream_attempt(client: Client) -> Attempt:
    """The innermost try of a streamed reply: ``client.stream`` with each piece of text given
    to ``tap.chunk`` as it comes; a client without ``stream`` answers whole, as one chunk."""
    stream = getattr(client, "stream", None)
    seeded = stream is not None and accepts_seed(stream)
    plain = client_attempt(client)

    async def attempt(req: Request, tap: Tap | None) -> Reply:
        assert tap is not None and tap.chunk is not None
        if stream is None:
            out = await plain(req, None)
            if out[0]:
                tap.chunk(out[0])
            return out
        extra = {"seed": req.seed} if seeded and req.seed is not None else {}
        items = stream(
            model=req.model,
            messages=copies(req.messages),
            temp=req.temp,
            max_tokens=req.max_tokens,
            **extra,
        )
        return await _read_stream(req.model, items, tap.chunk)

    return attempt


async def _read_stream(model: str, items: Any, chunk: Callable[[str], None]) -> Reply:
    parts: list[str] = []
    usage = Usage(None, None)
    try:
        async for item in items:
            if type(item) is str:
                if item:
                    parts.append(item)
                    chunk(item)
            elif isinstance(item, Usage):
                usage = item
            else:
                raise ClientOutputError(
                    model, item, "a stream yields str chunks and a final moa.Usage"
                )
    finally:
        # Closed now, not whenever it is garbage collected: its connection is released even
        # when the run is cancelled mid-reply.
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            with anyio.move_on_after(5, shield=True):
                await aclose()
    return "".join(parts), usage.input_tokens, usage.output_tokens


def with_timeout(seconds: float) -> Callable[[Attempt], Attempt]:
    """Each try ends after ``seconds`` with ``TimeoutError`` (retried by the policy)."""

    def layer(inner: Attempt) -> Attempt:
        async def attempt(req: Request, tap: Tap | None) -> Reply:
            # fail_after's behaviour with a bare cancel scope: two context-manager layers fewer.
            with anyio.CancelScope(deadline=anyio.current_time() + seconds) as scope:
                out = await inner(req, tap)
            if scope.cancelled_caught:
                raise TimeoutError
            return out

        return attempt

    return layer


def with_cap(limiter: anyio.CapacityLimiter) -> Callable[[Attempt], Attempt]:
    """Each try holds a slot of ``limiter`` (the run's ``max_concurrency``)."""

    def layer(inner: Attempt) -> Attempt:
        async def attempt(req: Request, tap: Tap | None) -> Reply:
            # A free slot is taken without a trip through the event loop; acquire_nowait
            # refuses while others queue, so waiting callers keep their turn.
            try:
                limiter.acquire_nowait()
            except anyio.WouldBlock:
                await limiter.acquire()
            try:
                return await inner(req, tap)
            finally:
                limiter.release()

        return attempt

    return layer


def _estimate_tokens(messages: tuple[Message, ...]) -> int:
    # About four characters a token: only a tokens-per-minute budget's first guess; the usage
    # the provider reports settles the account afterwards.
    return sum(len(m["content"]) for m in messages) // 4 + 1


def with_limits(limits: Limits, policy: Retry) -> Callable[[Attempt], Attempt]:
    """Each try passes its model's gate: calls in flight, requests and tokens per minute. A
    Retry-After the policy will wait for pauses that model only; the others keep going."""

    def layer(inner: Attempt) -> Attempt:
        async def attempt(req: Request, tap: Tap | None) -> Reply:
            gate = limits.gate(req.model)
            if gate is None:
                return await inner(req, tap)
            estimate = await gate.enter(_estimate_tokens(req.messages))
            used: int | None = None
            try:
                out = await inner(req, tap)
                used = out[1] + out[2] if out[1] is not None and out[2] is not None else None
                return out
            except Exception as exc:
                after = retry_after(exc)
                if after is not None and policy.too_long(exc) is None:
                    gate.pause(after)
                raise
            finally:
                gate.leave(estimate, used)

        return attempt

    return layer


def with_hedge(after: float) -> Callable[[Attempt], Attempt]:
    """A try unanswered ``after`` seconds after it reached the client races a duplicate: the
    first answer wins, the other is cancelled and recorded in ``tap.hedges``. When both fail,
    the first one's error is raised."""

    def layer(inner: Attempt) -> Attempt:
        async def attempt(req: Request, tap: Tap | None) -> Reply:
            assert tap is not None
            return await _race(inner, req, tap, after)

        return attempt

    return layer


async def _race(inner: Attempt, req: Request, tap: Tap, after: float) -> Reply:
    outcomes: list[tuple[Reply | None, BaseException | None, float] | None] = [None, None]
    starts = [0.0, 0.0]
    first_done = anyio.Event()
    # The hedge clock starts when the first try reaches the client, not while it queues for
    # a slot: a duplicate of a queued call would only queue too.
    first_sent = anyio.Event()

    async def racer(i: int, scope: anyio.CancelScope) -> None:
        starts[i] = monotonic()
        try:
            out = await inner(req, Tap(sent=first_sent.set) if i == 0 else None)
            outcomes[i] = (out, None, monotonic())
            scope.cancel()
        except Exception as exc:
            outcomes[i] = (None, exc, monotonic())
        finally:
            if i == 0:
                first_sent.set()
                first_done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(racer, 0, tg.cancel_scope)
        await first_sent.wait()
        with anyio.move_on_after(after):
            await first_done.wait()
        if outcomes[0] is None:  # still running: a first try that failed is the retry's job
            tg.start_soon(racer, 1, tg.cancel_scope)
    winner = next((i for i in (0, 1) if (o := outcomes[i]) is not None and o[1] is None), None)
    if starts[1]:
        loser = 1 if winner == 0 else 0 if winner == 1 else 1
        tap.hedges.append(
            _hedge_record(req, outcomes[loser], monotonic() - starts[loser], starts[loser])
        )
    if winner is None:
        failed = outcomes[0]
        assert failed is not None and failed[1] is not None
        raise failed[1]
    won = outcomes[winner]
    assert won is not None and won[0] is not None
    return won[0]


def _hedge_record(
    req: Request,
    out: tuple[Reply | None, BaseException | None, float] | None,
    running: float,
    start: float,
) -> CallRecord:
    if out is None:  # cancelled while running
        return record(req, None, None, None, 1, None, running, True)
    reply, exc, end = out
    text, tin, tout = reply if reply is not None else (None, None, None)
    return record(req, text, tin, tout, 1, error_text(exc) if exc else None, end - start)


# -- calls ---------------------------------------------------------------------------------------
def retrying(
    attempt: Attempt,
    policy: Retry,
    interrupt: Interrupt,
    on_event: EventHandler | None,
    hedged: bool,
) -> Call:
    """Tries until one answers or ``policy`` gives up; the call as a record. The first try
    runs without tenacity's machinery, which is built only after a failure."""

    async def call(req: Request, site: Site) -> Outcome:
        start = monotonic()
        tap = Tap() if hedged else None
        try:
            text, tin, tout = await attempt(req, tap)
            return record(
                req,
                text,
                tin,
                tout,
                1,
                None,
                monotonic() - start,
                False,
                tuple(tap.hedges) if tap else (),
            ), None
        except (KeyboardInterrupt, SystemExit) as exc:
            return _interrupted(interrupt, req, exc, start)
        except Exception as exc:
            first = exc
        return await _retry(attempt, policy, interrupt, on_event, req, site, tap, start, first)

    return call


def retrying_client(
    client: Client, policy: Retry, interrupt: Interrupt, on_event: EventHandler | None
) -> Call:
    """:func:`retrying` around the bare client, its first try inlined: a run with no options
    calls the client with no frame between it and the walk."""
    attempt = client_attempt(client)

    async def call(req: Request, site: Site) -> Outcome:
        start = monotonic()
        msgs = copies(req.messages)
        try:
            text, tin, tout = check_output(req.model, await _send(client, req, msgs))
            return record(req, text, tin, tout, 1, None, monotonic() - start), None
        except (KeyboardInterrupt, SystemExit) as exc:
            return _interrupted(interrupt, req, exc, start)
        except Exception as exc:
            first = exc
        return await _retry(attempt, policy, interrupt, on_event, req, site, None, start, first)

    return call


def _interrupted(interrupt: Interrupt, req: Request, exc: BaseException, start: float) -> Outcome:
    # A KeyboardInterrupt or SystemExit from a client (a Ctrl-C inside blocking code) is the
    # run's to raise, once every call has stopped: on asyncio a task must not raise it itself.
    interrupt(exc)
    return record(req, None, None, None, 1, error_text(exc), monotonic() - start), None


async def _retry(
    attempt: Attempt,
    policy: Retry,
    interrupt: Interrupt,
    on_event: EventHandler | None,
    req: Request,
    site: Site,
    tap: Tap | None,
    start: float,
    first: BaseException | None,
) -> Outcome:
    """The failure path, where tenacity's machinery is built: the tries after ``first``."""
    path, index, _ = site
    attempts = 1
    before_sleep = (
        None
        if on_event is None
        else (
            lambda state: on_event(
                CallRetrying(
                    path,
                    index,
                    req.model,
                    state.attempt_number,
                    error_text(state.outcome.exception()),
                    state.next_action.sleep,
                )
            )
        )
    )
    try:
        async for trying in policy.retrying(before_sleep):
            with trying:
                attempts = trying.retry_state.attempt_number
                if first is not None:
                    exc, first = first, None
                    raise exc
                text, tin, tout = await attempt(req, tap)
        return record(
            req, text, tin, tout, attempts, None, monotonic() - start, False, _hedges(tap)
        ), None
    except (KeyboardInterrupt, SystemExit) as exc:
        return _interrupted(interrupt, req, exc, start)
    except Exception as exc:
        exc = policy.too_long(exc) or exc
        return record(
            req,
            None,
            None,
            None,
            attempts,
            error_text(exc),
            monotonic() - start,
            False,
            _hedges(tap),
        ), _fatal(exc)


def _hedges(tap: Tap | None) -> tuple[CallRecord, ...]:
    return tuple(tap.hedges) if tap is not None else ()


def streaming(
    attempt: Attempt,
    policy: Retry,
    interrupt: Interrupt,
    on_event: EventHandler,
    path: tuple[int, ...],
    other: Call,
    seeded: bool,
) -> Call:
    """The final reply of the step at ``path`` through ``attempt`` (a stream), its chunks sent
    as TextChunk events; retried only until its first chunk has gone out, so no text is ever
    delivered twice. Every other call is ``other``'s. ``seeded``: the stream takes the seed
    (when not, history says none was sent)."""

    async def call(req: Request, site: Site) -> Outcome:
        if not req.final or site[0] != path:
            return await other(req, site)
        if req.seed is not None and not seeded:
            req = dataclasses.replace(req, seed=None)
        index = site[1]
        start = monotonic()
        sent = 0

        def chunk(text: str) -> None:
            nonlocal sent
            sent += 1
            on_event(TextChunk(path, index, text))

        async def once(req: Request, tap: Tap | None) -> Reply:
            try:
                return await attempt(req, tap)
            except Exception as exc:
                if not sent or isinstance(exc, ClientOutputError):
                    raise
                raise StreamInterruptedError(
                    f"{req.model}: the reply stream broke after {sent} chunk(s) "
                    f"({error_text(exc)}); not retried, so no text is delivered twice"
                ) from exc

        tap = Tap(chunk=chunk)
        try:
            text, tin, tout = await once(req, tap)
            return record(req, text, tin, tout, 1, None, monotonic() - start), None
        except (KeyboardInterrupt, SystemExit) as exc:
            return _interrupted(interrupt, req, exc, start)
        except Exception as exc:
            first = exc
        return await _retry(once, policy, interrupt, on_event, req, site, tap, start, first)

    return call


def caching(inner: Call, cache: Cache) -> tuple[Call, TryNow]:
    """Answers ``cache`` holds come without a call: ``try_now`` serves them (or, replaying,
    fails a miss) before the round's calls start; the call stores each new answer. A store
    that fails is the step's error, raised once its answers are recorded (they were paid for)."""

    def try_now(req: Request, site: Site, step: object) -> Outcome | None:
        path, index, sample = site
        assert sample is not None  # the stack asks for sample indices (wants_sample)
        key = (*path, sample)
        hit = cache.get(req.model, req.messages, req.temp, req.max_tokens, key)
        if hit is not None:
            return record(req, hit[0], hit[1], hit[2], 0, cached=True), None
        if cache.mode == "replay":
            return record(req, None, None, None, 0, "not recorded"), CacheMissError(
                f"replay: {cache!r} holds no answer for call {index} of {step!r} at path "
                f"{path} (model {req.model!r}, sample {sample}); record it first with "
                f"mode='rw' or 'record'"
            )
        return None

    async def call(req: Request, site: Site) -> Outcome:
        rec, fatal = await inner(req, site)
        if rec.ok and fatal is None:
            path, _, sample = site
            assert sample is not None and rec.text is not None
            try:
                cache.put(
                    req.model,
                    req.messages,
                    req.temp,
                    req.max_tokens,
                    (*path, sample),
                    rec.text,
                    rec.input_tokens,
                    rec.output_tokens,
                )
            except (CacheError, OSError, ValueError) as exc:  # the user's to see, not a call's
                return rec, exc
        return rec, fatal

    return call, try_now


def reporting(inner: Call, on_event: EventHandler) -> Call:
    """A CallFinished event as each call ends."""

    async def call(req: Request, site: Site) -> Outcome:
        out = await inner(req, site)
        on_event(CallFinished(site[0], site[1], out[0]))
        return out

    return call


# -- composition ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Calls:
    """A run's composed call stack, as the walk uses it: ``call`` makes a call;
    ``try_now``, when not None, answers a call of ``step`` at once if it can (a cached
    answer) or returns None; ``finished``, when not None, is told of calls the walk ended itself (stopped by a
    quorum); ``wants_sample``: the sites must carry sample indices."""

    call: Call
    try_now: TryNow | None = None
    finished: Callable[[Site, CallRecord], None] | None = None
    wants_sample: bool = False


def compose(
    client: Client,
    policy: Retry,
    interrupt: Interrupt,
    *,
    limiter: anyio.CapacityLimiter | None = None,
    timeout: float | None = None,
    limits: Limits | None = None,
    hedge_after: float | None = None,
    cache: Cache | None = None,
    on_event: EventHandler | None = None,
    stream_path: tuple[int, ...] | None = None,
) -> Calls:
    """The call stack for one run: only the layers its options ask for, innermost first."""
    attempt_layers: list[Callable[[Attempt], Attempt]] = []
    if timeout is not None:
        attempt_layers.append(with_timeout(timeout))
    if limiter is not None:
        attempt_layers.append(with_cap(limiter))
    if limits is not None:
        attempt_layers.append(with_limits(limits, policy))
    if attempt_layers or hedge_after is not None:
        attempt = client_attempt(client)
        for layer in attempt_layers:
            attempt = layer(attempt)
        if hedge_after is not None:
            attempt = with_hedge(hedge_after)(attempt)
        call = retrying(attempt, policy, interrupt, on_event, hedge_after is not None)
    else:
        call = retrying_client(client, policy, interrupt, on_event)
    if stream_path is not None:
        assert on_event is not None
        streamed = stream_attempt(client)
        for layer in attempt_layers:  # no hedge: two racing streams would both write
            streamed = layer(streamed)
        stream = getattr(client, "stream", None)
        call = streaming(
            streamed,
            policy,
            interrupt,
            on_event,
            stream_path,
            call,
            stream is None or accepts_seed(stream),
        )
    try_now = None
    if cache is not None:
        call, try_now = caching(call, cache)
    finished = None
    if on_event is not None:
        call = reporting(call, on_event)
        handler = on_event

        def finished(site: Site, rec: CallRecord) -> None:
            handler(CallFinished(site[0], site[1], rec))

        if try_now is not None:
            try_now = _reported_now(try_now, on_event, stream_path)
    return Calls(call, try_now, finished, cache is not None)


def _reported_now(
    try_now: TryNow, on_event: EventHandler, stream_path: tuple[int, ...] | None
) -> TryNow:
    # A cached answer is an answer too: the events a call sends, and the streamed final
    # reply's text as one chunk.
    def now(req: Request, site: Site, step: object) -> Outcome | None:
        out = try_now(req, site, step)
        if out is not None and out[1] is None:
            rec = out[0]
            if req.final and site[0] == stream_path and rec.text:
                on_event(TextChunk(site[0], site[1], rec.text))
            on_event(CallFinished(site[0], site[1], rec))
        return out

    return now

"""One model call as a stack of small layers, composed once per run.

This is the middleware pattern of tower's layers, Finagle's filters and httpx's transports:
each concern that wraps a call is one function from the call it wraps to a new call, and
:func:`compose` stacks only the layers a run's options ask for, once, before the first call.
The walk over the pipeline (:mod:`moa._executor`) only ever asks a composed :class:`Calls` to
make a call; it never knows which layers are there.

Two kinds of function are stacked. An *attempt* is one try (:mod:`moa._attempts`: the client,
timeout, cap, limits, hedge). A *call* makes tries into a record: ``call(req, site) ->
Outcome``, never raising but for cancellation. Inside out:

  retry       tries until one answers or the policy gives up, into a CallRecord: the one
              retry path of every call, streamed or not
  stream      (run_stream) the final reply's call through ``client.stream``, retried only until
              its first chunk went out; other calls pass by
  cache       answers the cache holds are served without a call (``try_now``); new ones stored
  spans       (tracing) a ``chat {model}`` OpenTelemetry span around each call, cached or not
  events      CallFinished for every call, CallRetrying before every wait

``site`` says where the call is: the step's path, the call's index in the step, and its sample
index among identical requests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from time import monotonic
from typing import Any, NamedTuple

from ._attempts import (
    Attempt,
    Tap,
    client_attempt,
    stream_attempt,
    with_cap,
    with_hedge,
    with_limits,
    with_timeout,
)
from ._bounds import error_text
from ._budget import with_budget
from ._cache import Cache
from ._client import Client, Reply, check_output
from ._contract import Request
from ._events import CallFinished, CallRetrying, EventHandler, TextChunk, both
from ._history import CallRecord
from ._options import RunOptions
from ._pool import Slots, Workers
from ._retry import Retry
from ._seeds import accepts, accepts_seed
from ._trace import Spans, spans_for
from .errors import (
    BudgetExceededError,
    CacheError,
    CacheMissError,
    ClientOutputError,
    StreamInterruptedError,
)

__all__ = ("Call", "Calls", "Interrupt", "Outcome", "Site", "compose")


class Site(NamedTuple):
    """Where a call is: its step's path, its index among the step's calls, and its sample
    index among the identical requests of that step (None when no layer needs it)."""

    path: tuple[int, ...]
    call_index: int
    sample: int | None = None


class Outcome(NamedTuple):
    """A call's record, and an error its step must raise (a client of the wrong shape, a
    replay miss, a cache that failed to store the answer); None when the step goes on."""

    record: CallRecord
    fatal: BaseException | None = None


Call = Callable[[Request, Site], Awaitable[Outcome]]
_new_tuple = tuple.__new__  # a NamedTuple without its __new__'s frame, on every call's path
#: Answers a call at once when it can (a cached answer), or None; ``step`` is the asking step.
TryNow = Callable[[Request, Site, object], "Outcome | None"]
#: Told of a KeyboardInterrupt or SystemExit a client raised: the run's (or batch's) to raise.
Interrupt = Callable[[BaseException], None]
#: The tap a call's tries report to (None: they report nothing).
TapFor = Callable[[Request, Site], "Tap | None"]


def _fatal(exc: BaseException) -> BaseException | None:
    # A client of the wrong shape is a bug to fix, and a spent budget ends the run: neither
    # is a failure for min_success to absorb.
    return exc if isinstance(exc, (ClientOutputError, BudgetExceededError)) else None


def _answer(req: Request, reply: Reply, attempts: int, start: float, tap: Tap | None) -> Outcome:
    return Outcome(
        CallRecord.asked(
            req,
            text=reply.text,
            input_tokens=reply.input_tokens,
            output_tokens=reply.output_tokens,
            attempts=attempts,
            latency=monotonic() - start,
            hedges=() if tap is None else tuple(tap.hedges),
            confidence=reply.confidence,
        )
    )


# -- calls ---------------------------------------------------------------------------------------
def retried(
    attempt: Attempt,
    policy: Retry,
    interrupt: Interrupt,
    on_event: EventHandler | None,
    tap_for: TapFor | None = None,
) -> Call:
    """Tries until one answers or ``policy`` gives up; the call as a record. The first try
    runs without tenacity's machinery, which is built only after a failure."""

    async def call(req: Request, site: Site) -> Outcome:
        start = monotonic()
        tap = None if tap_for is None else tap_for(req, site)
        try:
            text, tin, tout, confidence = check_output(req.model, await attempt(req, tap))
        except (KeyboardInterrupt, SystemExit) as exc:
            return _interrupted(interrupt, req, exc, start)
        except Exception as exc:
            return await _retry(attempt, policy, interrupt, on_event, req, site, tap, start, exc)
        hedges = () if tap is None else tuple(tap.hedges)
        record = CallRecord.answered(req, text, tin, tout, monotonic() - start, hedges, confidence)
        return _new_tuple(Outcome, (record, None))

    return call


def _interrupted(interrupt: Interrupt, req: Request, exc: BaseException, start: float) -> Outcome:
    # A KeyboardInterrupt or SystemExit from a client (a Ctrl-C inside blocking code) is the
    # run's to raise, once every call has stopped: on asyncio a task must not raise it itself.
    interrupt(exc)
    return Outcome(CallRecord.asked(req, error=error_text(exc), latency=monotonic() - start))


async def _retry(
    attempt: Attempt,
    policy: Retry,
    interrupt: Interrupt,
    on_event: EventHandler | None,
    req: Request,
    site: Site,
    tap: Tap | None,
    start: float,
    first: BaseException,
) -> Outcome:
    """The failure path, where tenacity's machinery is built: the tries after ``first``."""
    attempts = 1
    pending: BaseException | None = first
    try:
        async for trying in policy.retrying(_before_sleep(on_event, req, site)):
            with trying:
                attempts = trying.retry_state.attempt_number
                if pending is not None:
                    exc, pending = pending, None
                    raise exc
                reply = check_output(req.model, await attempt(req, tap))
        return _answer(req, reply, attempts, start, tap)
    except (KeyboardInterrupt, SystemExit) as exc:
        return _interrupted(interrupt, req, exc, start)
    except Exception as exc:
        exc = policy.too_long(exc) or exc
        return Outcome(
            CallRecord.asked(
                req,
                attempts=attempts,
                error=error_text(exc),
                latency=monotonic() - start,
                hedges=() if tap is None else tuple(tap.hedges),
            ),
            _fatal(exc),
        )


def _before_sleep(
    on_event: EventHandler | None, req: Request, site: Site
) -> Callable[[Any], None] | None:
    if on_event is None:
        return None

    def before_sleep(state: Any) -> None:
        on_event(
            CallRetrying(
                site.path,
                site.call_index,
                req.model,
                state.attempt_number,
                error_text(state.outcome.exception()),
                state.next_action.sleep,
            )
        )

    return before_sleep


def unrepeatable(inner: Attempt) -> Attempt:
    """A streamed try that failed after its first chunk went out is a
    :class:`~moa.StreamInterruptedError`, never retried: a retry would deliver text twice."""

    async def attempt(req: Request, tap: Tap | None) -> Any:
        try:
            return await inner(req, tap)
        except Exception as exc:
            if tap is None or not tap.chunks or isinstance(exc, ClientOutputError):
                raise
            raise StreamInterruptedError(
                f"{req.model}: the reply stream broke after {tap.chunks} chunk(s) "
                f"({error_text(exc)}); not retried, so no text is delivered twice"
            ) from exc

    return attempt


def _chunk_tap(on_event: EventHandler) -> TapFor:
    """A tap per streamed call whose chunks go out as TextChunk events, counted."""

    def tap_for(req: Request, site: Site) -> Tap:
        tap = Tap()

        def chunk(text: str) -> None:
            tap.chunks += 1
            on_event(TextChunk(site.path, site.call_index, text))

        tap.chunk = chunk
        return tap

    return tap_for


def streaming(final: Call, other: Call, path: tuple[int, ...], seeded: bool) -> Call:
    """The final reply of the step at ``path`` through ``final`` (a streamed call), every other
    call through ``other``. ``seeded``: the stream takes a seed (when not, history says none
    was sent)."""

    async def call(req: Request, site: Site) -> Outcome:
        if not req.final or site.path != path:
            return await other(req, site)
        if req.seed is not None and not seeded:
            req = dataclasses.replace(req, seed=None)
        return await final(req, site)

    return call


def caching(inner: Call, cache: Cache, confidence: bool = False) -> tuple[Call, TryNow]:
    """Answers ``cache`` holds come without a call: ``try_now`` serves them (or, replaying,
    fails a miss) before the round's calls start; the call stores each new answer. A store
    that fails is the step's error, raised once its answers are recorded (they were paid for).
    ``confidence``: the run reads confidence, and an answer stored without one is asked
    again (and stored with it), as a miss."""

    def try_now(req: Request, site: Site, step: object) -> Outcome | None:
        assert site.sample is not None  # the stack asks for sample indices (wants_sample)
        hit = cache.lookup(req.identity, (*site.path, site.sample))
        if hit is not None and confidence and hit.confidence is None:
            hit = None  # stored by a run that did not ask for log-probabilities
        if hit is not None:
            return Outcome(
                CallRecord.asked(
                    req,
                    text=hit.text,
                    input_tokens=hit.input_tokens,
                    output_tokens=hit.output_tokens,
                    attempts=0,
                    cached=True,
                    confidence=hit.confidence,
                )
            )
        if cache.mode == "replay":
            return Outcome(
                CallRecord.asked(req, attempts=0, error="not recorded"),
                CacheMissError(
                    f"replay: {cache!r} holds no answer for call {site.call_index} of {step!r} at "
                    f"path {site.path} (model {req.model!r}, sample {site.sample}); record it "
                    "first with mode='rw' or 'record'"
                ),
            )
        return None

    async def call(req: Request, site: Site) -> Outcome:
        out = await inner(req, site)
        rec = out.record
        if rec.ok and out.fatal is None:
            assert site.sample is not None and rec.text is not None
            try:
                cache.store(
                    req.identity,
                    (*site.path, site.sample),
                    Reply(rec.text, rec.input_tokens, rec.output_tokens, rec.confidence),
                )
            except (CacheError, OSError, ValueError) as exc:  # the user's to see, not a call's
                return Outcome(rec, exc)
        return out

    return call, try_now


def reporting(inner: Call, on_event: EventHandler) -> Call:
    """A CallFinished event as each call ends."""

    async def call(req: Request, site: Site) -> Outcome:
        out = await inner(req, site)
        on_event(CallFinished(site.path, site.call_index, out.record))
        return out

    return call


# -- composition ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Calls:
    """A run's composed call stack, as the walk uses it: ``call`` makes a call; ``try_now``,
    when not None, answers a call of ``step`` at once if it can (a cached answer) or returns
    None; ``finished``, when not None, is told of calls the walk ended itself (stopped by a
    quorum); ``wants_sample``: the sites must carry sample indices; ``workers``, when not None,
    the tasks a round's concurrent calls run in (a batch's, reused)."""

    call: Call
    try_now: TryNow | None = None
    finished: Callable[[Site, CallRecord], None] | None = None
    wants_sample: bool = False
    deadline: float | None = None  # the run's default for a step's rounds
    spans: Spans | None = None  # the run's OpenTelemetry spans (None: tracing off)
    workers: Workers | None = None  # a batch's tasks, reused for a round's calls
    cap: Slots | None = None  # the slots of max_concurrency, every try takes one


def _attempt_layers(options: RunOptions, cap: Slots | None) -> list[Callable[[Attempt], Attempt]]:
    """The layers around each try, innermost first (no hedge: it wraps them all)."""
    layers: list[Callable[[Attempt], Attempt]] = []
    if options.timeout is not None:
        layers.append(with_timeout(options.timeout))
    if cap is not None:
        layers.append(with_cap(cap))
    if options.limits is not None:
        options.limits.claim()  # a Limits of another event loop is refused before any call
        layers.append(with_limits(options.limits, options.retry))
    if options.budget is not None:  # outermost: a try is charged before it waits for a slot
        layers.append(with_budget(options.budget))
    return layers


def _stacked(attempt: Attempt, layers: list[Callable[[Attempt], Attempt]]) -> Attempt:
    for layer in layers:
        attempt = layer(attempt)
    return attempt


def compose(
    client: Client,
    options: RunOptions,
    interrupt: Interrupt,
    stream_path: tuple[int, ...] | None = None,
    confidence: bool = False,
) -> Calls:
    """The call stack for one run (or one batch): only the layers its options ask for,
    innermost first. ``stream_path``: the step whose final reply streams (run_stream).
    ``confidence``: the pipeline reads confidence; a client that takes ``logprobs`` is asked
    for them."""
    policy, on_event = options.retry, options.on_event
    logprobs = confidence and accepts(client, "logprobs")
    cap = None if options.max_concurrency is None else Slots(options.max_concurrency)
    layers = _attempt_layers(options, cap)  # one cap for every call of the run
    attempt = _stacked(client_attempt(client, logprobs), layers)
    tap_for: TapFor | None = None
    if options.hedge_after is not None:
        attempt = with_hedge(options.hedge_after)(attempt)
        tap_for = _hedge_tap
    budget = options.budget
    spans = spans_for(options.tracing, client, None if budget is None else budget.prices)
    retries = on_event  # who hears of a try that will be tried again
    if spans is not None and spans.calls:
        retries = spans.retrying if on_event is None else both(on_event, spans.retrying)
    call = retried(attempt, policy, interrupt, retries, tap_for)
    if stream_path is not None:
        assert on_event is not None and retries is not None
        # No hedge on the streamed call: two racing streams would both write the answer.
        streamed = unrepeatable(_stacked(stream_attempt(client, logprobs), layers))
        final = retried(streamed, policy, interrupt, retries, _chunk_tap(on_event))
        stream = getattr(client, "stream", None)
        call = streaming(final, call, stream_path, stream is None or accepts_seed(stream))
    try_now = None
    if options.cache is not None:
        call, try_now = caching(call, options.cache, confidence)
    if spans is not None and spans.calls:
        call = spans.traced(call)
        if try_now is not None:
            try_now = spans.traced_now(try_now)
    finished = None
    if on_event is not None:
        call = reporting(call, on_event)
        handler = on_event

        def finished(site: Site, rec: CallRecord) -> None:
            handler(CallFinished(site.path, site.call_index, rec))

        if try_now is not None:
            try_now = _reported_now(try_now, on_event, stream_path)
    return Calls(
        call, try_now, finished, options.cache is not None, options.deadline, spans, cap=cap
    )


def _hedge_tap(req: Request, site: Site) -> Tap:
    return Tap()


def _reported_now(
    try_now: TryNow, on_event: EventHandler, stream_path: tuple[int, ...] | None
) -> TryNow:
    # A cached answer is an answer too: the events a call sends, and the streamed final
    # reply's text as one chunk.
    def now(req: Request, site: Site, step: object) -> Outcome | None:
        out = try_now(req, site, step)
        if out is not None and out.fatal is None:
            rec = out.record
            if req.final and site.path == stream_path and rec.text:
                on_event(TextChunk(site.path, site.call_index, rec.text))
            on_event(CallFinished(site.path, site.call_index, rec))
        return out

    return now

"""The attempt layers of a call: one try, ``attempt(req, tap)``, an awaitable of the client's
reply (its shape checked by the retry layer around them all), raising on failure.
:func:`moa._calls.compose` stacks the ones a run's options ask for, inside out:

  client      the client itself, given copies of the messages (and the seed, if it takes one)
  timeout     ``timeout`` seconds per try (``TimeoutError``)
  cap         a slot of the run's ``max_concurrency`` limiter for the try
  limits      the model's gate in ``Limits``: calls in flight, requests and tokens per minute,
              and a pause when the provider sends Retry-After
  hedge       after ``hedge_after`` seconds, a duplicate try races the first

``tap`` carries what a try learns while it runs: the hedges it raced, when it reached the
client, the chunks of a streamed reply.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from time import monotonic
from typing import Any, cast

import anyio

from ._bounds import error_text
from ._client import Client, Reply, Usage, check_output
from ._contract import Message, Request
from ._history import CallRecord
from ._limits import Limits
from ._pool import Slots
from ._retry import Retry, retry_after
from ._seeds import accepts, accepts_seed
from .errors import ClientOutputError

__all__ = (
    "Attempt",
    "Tap",
    "client_attempt",
    "copies",
    "stream_attempt",
    "with_cap",
    "with_hedge",
    "with_limits",
    "with_timeout",
)


@dataclass(slots=True)
class Tap:
    """What one call's tries report as they go: the racers a hedge lost, a signal when a try
    reaches the client, and a sink for a streamed reply's chunks (with how many went out)."""

    hedges: list[CallRecord] = field(default_factory=list)
    sent: Callable[[], None] | None = None
    chunk: Callable[[str], None] | None = None
    chunks: int = 0


#: One try: an awaitable of the reply as the client gave it (checked by the retry layer).
Attempt = Callable[[Request, "Tap | None"], Awaitable[Any]]


def copies(messages: tuple[Message, ...]) -> list[dict[str, str]]:
    """The messages as the client gets them: its own dicts, so a client that edits them cannot
    edit history. Steps build read-only mappings (MappingProxyType), which copy in C."""
    try:
        return [cast(Any, m).copy() for m in messages]
    except AttributeError:  # a Mapping without copy(), from a custom step
        return [dict(m) for m in messages]


def client_attempt(client: Client, logprobs: bool = False) -> Attempt:
    """The innermost try: the client itself, on its own copies of the messages (a client that
    edits them cannot edit history), given the seed only if the request has one, which it has
    only for a client that takes a ``seed`` keyword (``accepts_seed``), and ``logprobs=True``
    when the run asks for confidence (only of a client that takes the keyword). It returns the
    client's awaitable as it is, with no frame of its own: this is every call's path."""
    extra = {"logprobs": True} if logprobs else {}
    call: Callable[..., Awaitable[Any]] = client

    def attempt(req: Request, tap: Tap | None) -> Awaitable[Any]:
        msgs = copies(req.messages)
        if tap is not None and tap.sent is not None:
            tap.sent()
        if req.seed is None:
            return call(
                model=req.model, messages=msgs, temp=req.temp, max_tokens=req.max_tokens, **extra
            )
        return call(
            model=req.model,
            messages=msgs,
            temp=req.temp,
            max_tokens=req.max_tokens,
            seed=req.seed,
            **extra,
        )

    return attempt


def stream_attempt(client: Client, logprobs: bool = False) -> Attempt:
    """The innermost try of a streamed reply: ``client.stream`` with each piece of text given
    to ``tap.chunk`` as it comes; a client without ``stream`` answers whole, as one chunk.
    ``logprobs``: ask for confidence (a stream that takes the keyword ends with it in its
    :class:`~moa.Usage`)."""
    stream = getattr(client, "stream", None)
    seeded = stream is not None and accepts_seed(stream)
    confident = logprobs and stream is not None and accepts(stream, "logprobs")
    plain = client_attempt(client, logprobs)

    async def attempt(req: Request, tap: Tap | None) -> Any:
        assert tap is not None and tap.chunk is not None
        if stream is None:
            out = check_output(req.model, await plain(req, None))
            if out.text:
                tap.chunk(out.text)
            return out
        extra: dict[str, Any] = {"seed": req.seed} if seeded and req.seed is not None else {}
        if confident:
            extra["logprobs"] = True
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
    return check_output(
        model, Reply("".join(parts), usage.input_tokens, usage.output_tokens, usage.confidence)
    )


def with_timeout(seconds: float) -> Callable[[Attempt], Attempt]:
    """Each try ends after ``seconds`` with ``TimeoutError`` (retried by the policy)."""

    def layer(inner: Attempt) -> Attempt:
        async def attempt(req: Request, tap: Tap | None) -> Any:
            # fail_after's behaviour with a bare cancel scope: two context-manager layers fewer.
            with anyio.CancelScope(deadline=anyio.current_time() + seconds) as scope:
                out = await inner(req, tap)
            if scope.cancelled_caught:
                raise TimeoutError
            return out

        return attempt

    return layer


def with_cap(slots: Slots) -> Callable[[Attempt], Attempt]:
    """Each try holds one of ``slots`` (the run's ``max_concurrency``)."""

    def layer(inner: Attempt) -> Attempt:
        async def attempt(req: Request, tap: Tap | None) -> Any:
            await slots.acquire()
            try:
                return await inner(req, tap)
            finally:
                slots.release()

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
        async def attempt(req: Request, tap: Tap | None) -> Any:
            gate = limits.gate(req.model)
            if gate is None:
                return await inner(req, tap)
            estimate = await gate.enter(_estimate_tokens(req.messages))
            used: int | None = None
            try:
                out = await inner(req, tap)
                used = _tokens_used(out)
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


def _tokens_used(reply: Any) -> int | None:
    """Input plus output tokens of a reply not yet checked (None where either is unknown or
    not a count: the retry layer refuses such a reply)."""
    if isinstance(reply, (tuple, list)) and len(reply) == 3:
        _, tin, tout = reply
        if type(tin) is int and type(tout) is int:
            return tin + tout
    return None


def with_hedge(after: float) -> Callable[[Attempt], Attempt]:
    """A try unanswered ``after`` seconds after it reached the client races a duplicate: the
    first answer wins, the other is cancelled and recorded in ``tap.hedges``. When both fail,
    the first one's error is raised."""

    def layer(inner: Attempt) -> Attempt:
        async def attempt(req: Request, tap: Tap | None) -> Any:
            assert tap is not None
            return await _race(inner, req, tap, after)

        return attempt

    return layer


@dataclass(slots=True)
class _Racer:
    """One try of a hedged race: when it started, and how it ended (None: still running)."""

    start: float = 0.0
    end: float = 0.0
    reply: Any = None
    error: BaseException | None = None
    done: bool = False


async def _race(inner: Attempt, req: Request, tap: Tap, after: float) -> Any:
    racers = (_Racer(), _Racer())
    first_done = anyio.Event()
    # The hedge clock starts when the first try reaches the client, not while it queues for
    # a slot: a duplicate of a queued call would only queue too.
    first_sent = anyio.Event()

    async def race(i: int, scope: anyio.CancelScope) -> None:
        me = racers[i]
        me.start = monotonic()
        try:
            me.reply = await inner(req, Tap(sent=first_sent.set) if i == 0 else None)
            scope.cancel()
        except Exception as exc:
            me.error = exc
        else:
            me.done = True
        finally:
            me.end = monotonic()
            me.done = me.done or me.error is not None
            if i == 0:
                first_sent.set()
                first_done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(race, 0, tg.cancel_scope)
        await first_sent.wait()
        with anyio.move_on_after(after):
            await first_done.wait()
        if not racers[0].done:  # still running: a first try that failed is the retry's job
            tg.start_soon(race, 1, tg.cancel_scope)
    winner = next((r for r in racers if r.reply is not None), None)
    if racers[1].start:
        loser = racers[0] if winner is racers[1] else racers[1]
        tap.hedges.append(_hedge_record(req, loser))
    if winner is None:
        assert racers[0].error is not None
        raise racers[0].error
    assert winner.reply is not None
    return winner.reply


def _hedge_record(req: Request, racer: _Racer) -> CallRecord:
    if not racer.done:  # cancelled while running
        return CallRecord.asked(
            req, text=None, attempts=1, latency=monotonic() - racer.start, cancelled=True
        )
    reply, error = racer.reply, racer.error
    return CallRecord.asked(
        req,
        text=None if reply is None else reply.text,
        input_tokens=None if reply is None else reply.input_tokens,
        output_tokens=None if reply is None else reply.output_tokens,
        attempts=1,
        error=None if error is None else error_text(error),
        latency=racer.end - racer.start,
    )

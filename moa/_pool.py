"""A batch's tasks, kept for reuse: what starts a run or a call hands it to a task that
finished its last one and waits, and starts a new task only when none waits.

anyio starts a task with a handle, a cancel scope, an event, a wrapper coroutine and a
done-callback: about 35 µs and a dozen objects the collector tracks, measured on the
2-core machine of ``benchmarks/README.md``. A batch starts one task per run and one per
concurrent call after a round's first, tens of thousands a second under a cap of 512.
Handing the function to a waiting task costs one event (about 8 µs). Nothing waits for a
free task: one is started whenever none waits, so a run or a call starts as soon as it
would in a task of its own, and the cap, the per-model limits and their queues are the
call stack's, as everywhere else.

A task of the pool starts in a copy of the context the pool was made in (the batch's start),
not in a copy of its starter's, and keeps it from one function to the next: a context
variable one run sets may be seen by a later run in the same task. The batch reuses tasks
only when it is not traced, as its OpenTelemetry spans find their parents in the context.
"""

from __future__ import annotations

import contextvars
from collections import deque
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any

import anyio
import anyio.abc

__all__ = ("Group", "Slots", "Workers")

Fn = Callable[..., Coroutine[Any, Any, Any]]
#: Tasks kept waiting once a pool closes, for the functions its last runs still start.
_KEEP_CLOSING = 16


class _Waiting:
    """A task waiting for its next function (``fn`` None when told to end)."""

    __slots__ = ("args", "event", "fn")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.fn: Fn | None = None
        self.args: tuple[Any, ...] = ()


class Workers:
    """The tasks of ``tg``, kept: :meth:`start_soon` is ``tg.start_soon`` but runs the
    function in a task of this pool that waits for one, if any. After :meth:`close` (nothing
    new will be started from outside) the tasks end once no function runs.
    ``reuse=False``: every function gets a new task, as with ``tg.start_soon``."""

    __slots__ = ("_busy", "_closing", "_context", "_tg", "_waiting", "reuse")

    def __init__(self, tg: anyio.abc.TaskGroup, reuse: bool = True) -> None:
        self._tg = tg
        self.reuse = reuse
        self._waiting: list[_Waiting] = []
        self._busy = 0  # functions running (or handed over and about to)
        self._closing = False
        self._context = contextvars.copy_context()  # each new task starts in a copy of it

    def start_soon(self, fn: Fn, *args: Any) -> None:
        if not self.reuse:
            self._tg.start_soon(fn, *args)
            return
        if self._waiting:
            task = self._waiting.pop()
            task.fn, task.args = fn, args
            task.event.set()
        else:
            self._context.run(self._tg.start_soon, self._work, fn, args)
        self._busy += 1  # counted once handed over: a task group that refused it raised

    @property
    def idle(self) -> int:
        """The tasks waiting for a function."""
        return len(self._waiting)

    def group(self) -> Group:
        """Functions started together in this pool's tasks and awaited together
        (``async with``), as in a task group."""
        return Group(self)

    def close(self) -> None:
        """Nothing new is started from outside: the tasks end once no function runs. The
        waiting tasks but a few end now, while the functions still running finish: ending
        hundreds at once as the last one finishes would hold the loop up (~20 µs each)."""
        self._closing = True
        self._end_waiting(0 if not self._busy else _KEEP_CLOSING)

    def _end_waiting(self, keep: int = 0) -> None:
        n = len(self._waiting) - keep
        if n > 0:  # the longest waiting end (fn None); the last to wait are the next taken
            ending, self._waiting[:n] = self._waiting[:n], []
            for task in ending:
                task.event.set()

    async def _work(self, fn: Fn | None, args: tuple[Any, ...]) -> None:
        while fn is not None:
            try:
                await fn(*args)
            finally:
                self._busy -= 1
            fn, args = None, ()  # the finished function's objects are freed before the wait
            if self._closing and (not self._busy or len(self._waiting) >= _KEEP_CLOSING):
                if not self._busy:
                    self._end_waiting()
                return
            fn, args = await self._next()

    async def _next(self) -> tuple[Fn | None, tuple[Any, ...]]:
        me = _Waiting()
        self._waiting.append(me)
        try:
            await me.event.wait()
        except BaseException as exc:
            if me.fn is None:  # no function will come here
                if me in self._waiting:
                    self._waiting.remove(me)
                raise
            if not isinstance(exc, anyio.get_cancelled_exc_class()):
                # A KeyboardInterrupt (trio delivers one into whichever task runs) goes on
                # up; the function handed over runs in a task of its own.
                self._context.run(self._tg.start_soon, self._work, me.fn, me.args)
                raise
            # Handed a function as the wait was cancelled: it runs, and meets the
            # cancellation at its first await (a function given to the pool always runs).
        return me.fn, me.args


class Group:
    """Functions started in a :class:`Workers` pool and awaited together, as in an anyio
    task group: leaving the block waits for them all; each runs in a cancel scope of its
    own; when the block (or the wait) is cancelled or raises, they are cancelled and awaited,
    shielded, before it leaves; the first function to raise an Exception cancels the others
    and the block, which raises them in an ExceptionGroup. One not yet started when the group
    is cancelled never starts."""

    __slots__ = ("_cancelled", "_done", "_errors", "_host", "_left", "_scopes", "_workers")

    def __init__(self, workers: Workers) -> None:
        self._workers = workers
        self._left = 0
        self._done: anyio.Event | None = None
        self._scopes: list[anyio.CancelScope] = []
        self._cancelled = False
        self._errors: list[Exception] = []
        self._host = anyio.CancelScope()  # the block's, which a function's error cancels

    async def __aenter__(self) -> Group:
        self._host.__enter__()
        return self

    def start_soon(self, fn: Fn, *args: Any) -> None:
        self._workers.start_soon(self._job, fn, args)
        self._left += 1

    def cancel(self) -> None:
        self._cancelled = True
        for scope in self._scopes:
            scope.cancel()

    async def _job(self, fn: Fn, args: tuple[Any, ...]) -> None:
        try:
            if not self._cancelled:
                with anyio.CancelScope() as scope:
                    self._scopes.append(scope)
                    await fn(*args)
        except Exception as exc:
            self._errors.append(exc)
            self.cancel()
            self._host.cancel()
        finally:
            self._left -= 1
            if not self._left and self._done is not None:
                self._done.set()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if kind is not None:
            self.cancel()
        waited: BaseException | None = None
        try:
            await self._all_done()
        except BaseException as raised:  # cancelled while it waited (or a KeyboardInterrupt)
            waited = raised
            kind, exc, tb = type(raised), raised, raised.__traceback__
        swallowed = bool(self._host.__exit__(kind, exc, tb))  # its own cancellation
        if self._errors:
            errors, self._errors = self._errors, []
            if isinstance(exc, Exception) and not swallowed:  # the block's own error too
                errors.insert(0, exc)
            raise ExceptionGroup("unhandled errors in a moa task group", errors)
        if waited is not None and not swallowed:
            raise waited
        return swallowed

    async def _all_done(self) -> None:
        if self._left:
            self._done = anyio.Event()
            try:
                await self._done.wait()
            except BaseException:
                self.cancel()
                with anyio.CancelScope(shield=True):
                    await self._done.wait()
                raise


class Slots:
    """At most ``n`` holders at once, the others served in the order they came: anyio's
    CapacityLimiter without its borrower bookkeeping. A free slot is taken without a pass of
    the event loop (none waits then, so nobody's turn is taken); a released slot goes
    straight to the first waiter; a waiter cancelled as it was handed one passes it on. A
    call's cap and a model's ``max_concurrency`` each take one a try: per try this saves
    anyio's six ``current_task()`` lookups, and each waiting try holds an event instead of
    a refused acquire's exception, traceback and frames."""

    __slots__ = ("_free", "_gone", "_thin", "_waiting", "n")

    def __init__(self, n: int) -> None:
        self.n = n
        self._free = n
        self._waiting: deque[anyio.Event] = deque()
        self._gone: set[anyio.Event] = set()  # waiters cancelled before their turn
        self._thin: tuple[int, anyio.Event] | None = None  # who waits for fewer waiters

    def __repr__(self) -> str:
        return f"<Slots {self.n - self._free}/{self.n} held, {self.waiting} waiting>"

    @property
    def waiting(self) -> int:
        return len(self._waiting) - len(self._gone)

    async def acquire(self) -> None:
        if self._free and not self._waiting:
            self._free -= 1
            return
        turn = anyio.Event()
        self._waiting.append(turn)
        try:
            await turn.wait()
        except BaseException:
            if turn.is_set():  # handed a slot as it was cancelled: the next one takes it
                self.release()
            else:
                self._gone.add(turn)
                self._thinned()
            raise

    async def fewer_waiting(self, k: int) -> None:
        """Returns once fewer than ``k`` wait for a slot (at once if they do). One caller at
        a time: a batch's driver, which starts a run only when its calls would not just
        queue."""
        if self.waiting < k:
            return
        event = anyio.Event()
        self._thin = (k, event)
        try:
            await event.wait()
        finally:
            self._thin = None

    def _thinned(self) -> None:
        if self._thin is not None and self.waiting < self._thin[0]:
            self._thin[1].set()

    def release(self) -> None:
        while self._waiting:
            turn = self._waiting.popleft()
            if turn in self._gone:
                self._gone.discard(turn)
                continue
            turn.set()  # the slot passes to it, still taken
            if self._thin is not None:
                self._thinned()
            return
        if self._free >= self.n:
            raise RuntimeError("Slots.release: released more slots than were taken")
        self._free += 1

"""Work that must not run on the event loop: a step's CPU-heavy combining, above all a user's
regular expression, which can backtrack for hours on a 33-character reply.

CPython's ``re`` holds the GIL for a whole match, so a thread does not keep the loop free: a
regex runs in a worker process, killed when it passes its time bound. The workers are kept
for the life of the process (one is started the first time it is needed, about 0.2 s) and
shared by every event loop and thread; a worker that is killed is replaced on next use.
Plain Python functions run in a thread, which gives the loop the GIL every few milliseconds.
"""

from __future__ import annotations

import atexit
import os
import pickle
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import IO, Any

import anyio
import anyio.to_thread

from . import _contract
from ._contract import OffLoop

__all__ = ("run_off_loop", "seconds_for")


def seconds_for(work: OffLoop) -> float:
    """How long ``work`` may take: its own bound, else :data:`OFF_LOOP_SECONDS` (read now)."""
    return _contract.OFF_LOOP_SECONDS if work.seconds is None else work.seconds


async def run_off_loop(work: OffLoop) -> Any:
    """``work.fn(*work.args)`` off the loop; TimeoutError past its bound (:func:`seconds_for`)."""
    seconds = seconds_for(work)
    if not work.process:
        with anyio.fail_after(seconds):
            return await anyio.to_thread.run_sync(
                lambda: work.fn(*work.args), abandon_on_cancel=True
            )
    worker = _POOL.take()
    try:
        with anyio.fail_after(seconds):
            ok, value = await anyio.to_thread.run_sync(
                worker.ask, work.fn, work.args, abandon_on_cancel=True
            )
    except BaseException:
        worker.kill()  # cancelled or past its time: the worker may still be matching
        raise
    _POOL.give_back(worker)
    if not ok:
        raise value
    return value


class _Worker:
    """One worker process (``python -c``, so the user's main module is never run again, as
    multiprocessing's spawn would) and the pipes to it: pickles, each after its length."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from moa._offload import serve; serve()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
        )

    def ask(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[bool, Any]:
        """Send ``fn(*args)``; wait for (True, result) or (False, error). A worker killed
        meanwhile reads as EOFError."""
        assert self.process.stdin is not None and self.process.stdout is not None
        _send(self.process.stdin, (fn, args))
        answer: tuple[bool, Any] = _receive(self.process.stdout)
        return answer

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()

    def disown(self) -> None:
        """In a forked child: close this process's copies of the parent's worker's pipes
        (the worker goes on serving the parent), so they are not left to the collector."""
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()
        self.process.returncode = 0  # not this process's child to wait for

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        # A thread reading the reply gets EOF now that the process is gone; the pipes' own
        # locks make it finish before they close.
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:  # a write cut off by the kill
                    pass


class _Pool:
    """Idle workers, shared by every thread and event loop of the process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.idle: list[_Worker] = []
        self.pid = os.getpid()

    def take(self) -> _Worker:
        with self.lock:
            if self.pid != os.getpid():  # a forked child does not own its parent's workers
                for worker in self.idle:
                    worker.disown()
                self.idle, self.pid = [], os.getpid()
            while self.idle:
                worker = self.idle.pop()
                if worker.alive:
                    return worker
        return _Worker()

    def give_back(self, worker: _Worker) -> None:
        with self.lock:
            self.idle.append(worker)

    def close(self) -> None:
        """End the idle workers (at exit): their stdin closed, they return."""
        with self.lock:
            idle, self.idle = self.idle, []
        for worker in idle:
            worker.close()


_POOL = _Pool()
atexit.register(_POOL.close)
_LENGTH = struct.Struct("!Q")


def _send(pipe: IO[bytes], value: Any) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    pipe.write(_LENGTH.pack(len(data)) + data)
    pipe.flush()


def _receive(pipe: IO[bytes]) -> Any:
    head = pipe.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        raise EOFError("the worker process ended")
    (size,) = _LENGTH.unpack(head)
    return pickle.loads(pipe.read(size))


def serve() -> None:
    """A worker's loop: run each (fn, args) read from stdin, write (True, result) or
    (False, error) to stdout; end at EOF."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a print in fn must not corrupt the replies
    while True:
        try:
            fn, args = _receive(stdin)
        except EOFError:
            return
        try:
            result: tuple[bool, Any] = (True, fn(*args))
        except Exception as exc:
            result = (False, exc)
        try:
            _send(stdout, result)
        except Exception as exc:  # a result or an error that does not pickle
            _send(stdout, (False, RuntimeError(f"off-loop work: its result cannot be sent: {exc}")))

"""What a run reports while it goes: the events ``run(..., on_event=...)`` receives.

Events arrive in the order things happen (completion order), on the event loop's thread, from
inside the run; a callback must be quick and must not block. History, not events, is the
record: events exist to show progress.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ._history import CallRecord, History, StepRecord

__all__ = (
    "CallFinished",
    "CallRetrying",
    "Event",
    "EventHandler",
    "RunFinished",
    "StepFinished",
    "StepStarted",
    "TextChunk",
)


@dataclass(frozen=True, slots=True)
class StepStarted:
    """An LLM step is starting round ``round`` of its calls, ``calls`` of them (a transform or
    a Parallel sends none). Most steps have one round; a step that makes no call (such as
    ``Majority(...)``) reports ``calls=0`` once; a multi-round step (``AggregateSeq``)
    reports each round, numbered from 1."""

    path: tuple[int, ...]
    step: str
    calls: int
    round: int = 1


@dataclass(frozen=True, slots=True)
class CallRetrying:
    """Call ``index`` of the step at ``path`` failed attempt ``attempt`` with ``error`` and will
    be tried again after ``wait`` seconds."""

    path: tuple[int, ...]
    index: int
    model: str
    attempt: int
    error: str
    wait: float


@dataclass(frozen=True, slots=True)
class CallFinished:
    """Call ``index`` of the step at ``path`` is over: answered, failed, cancelled or cached."""

    path: tuple[int, ...]
    index: int
    record: CallRecord


@dataclass(frozen=True, slots=True)
class StepFinished:
    """A step (of any kind) is over; ``record`` is its entry in history."""

    record: StepRecord


@dataclass(frozen=True, slots=True)
class TextChunk:
    """A piece of the final answer as it is generated (``moa.run_stream`` only): call
    ``index`` of the pipeline's last step, at ``path``. Joined in order, a call's chunks are its
    reply. A client without ``stream`` gives its whole reply as one chunk."""

    path: tuple[int, ...]
    index: int
    text: str


@dataclass(frozen=True, slots=True)
class RunFinished:
    """The run is over (``moa.run_stream``'s last event): what ``moa.run`` returns."""

    result: str
    history: History


#: Any of the events a run reports (``on_event=``, ``moa.run_stream``), in the order they happen.
Event = StepStarted | CallRetrying | CallFinished | StepFinished | TextChunk | RunFinished
EventHandler = Callable[[Event], None]


def both(first: EventHandler, second: EventHandler) -> EventHandler:
    """A handler that tells ``first``, then ``second``."""

    def handler(event: Event) -> None:
        first(event)
        second(event)

    return handler

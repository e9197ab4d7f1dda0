"""Progress while a run goes, on stderr: a live rich table with a row per LLM step on a
terminal, plain lines otherwise, nothing with ``--quiet``. ``rich`` is optional
(``pip install 'moa-dsl[cli]'``)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from .._events import CallFinished, CallRetrying, StepFinished, StepStarted
from .._history import CallRecord, StepRecord, spent_tokens
from .._pipeline import Step, leaves
from .common import short, tokens

__all__ = ("NoProgress", "fancy", "load_rich", "progress_for")


def load_rich() -> ModuleType | None:
    """The ``rich`` package, or None where it is not installed (the plain renderers are used).
    Tests replace this to force the plain output."""
    try:
        import rich
    except ImportError:
        return None
    return rich


def fancy() -> bool:
    """Live progress with rich: installed, and stderr is a terminal a person watches."""
    isatty = getattr(sys.stderr, "isatty", None)
    return load_rich() is not None and isatty is not None and bool(isatty())


class NoProgress:
    """No progress at all (``--quiet``)."""

    handler: Callable[[Any], None] | None = None

    def __enter__(self) -> NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class _StepLines(NoProgress):
    """Progress as plain lines on stderr: one line as each LLM step finishes."""

    def __init__(self, step: Step) -> None:
        self.numbers = {path: i for i, (path, _) in enumerate(leaves(step), 1)}
        self.total = len(self.numbers)
        self.handler = self.on_event

    def on_event(self, event: Any) -> None:
        if isinstance(event, StepFinished) and event.record.kind == "llm":
            print(self.line(event.record), file=sys.stderr, flush=True)

    def line(self, record: StepRecord) -> str:
        calls = record.calls
        ok = sum(c.ok for c in calls)
        failed = sum(c.error is not None for c in calls)
        retried = sum(max(c.attempts - 1, 0) for c in calls)
        cached = sum(c.cached for c in calls)
        tin, tout = spent_tokens(calls)
        n = self.numbers.get(record.path, "?")
        extra = f", {cached} cached" if cached else ""
        return (
            f"step {n}/{self.total} {short(record.step, 60)}: {ok}/{len(calls)} calls, "
            f"{failed} failed, {retried} retried{extra}, {tokens(tin)} in / {tokens(tout)} "
            f"out tokens, {record.duration:.1f} s"
        )


@dataclass
class _Row:
    """One LLM step's live counts."""

    label: str
    calls: int
    start: float
    done: int = 0
    failed: int = 0
    retried: int = 0
    cached: int = 0
    tokens_in: int | None = 0
    tokens_out: int | None = 0
    duration: float | None = None

    def add(self, record: CallRecord) -> None:
        self.done += 1
        self.failed += record.error is not None
        self.cached += record.cached
        tin, tout = spent_tokens([record])
        self.tokens_in = None if self.tokens_in is None or tin is None else self.tokens_in + tin
        self.tokens_out = (
            None if self.tokens_out is None or tout is None else self.tokens_out + tout
        )


class _StepTable(NoProgress):
    """Live progress with rich on stderr: a table with a row per LLM step, updated from the
    run's events. Events arrive on the event loop's thread and only bump counters; rich's
    refresh thread renders the table from them."""

    def __init__(self, step: Step) -> None:
        from rich.console import Console
        from rich.live import Live

        self.numbers = {path: i for i, (path, _) in enumerate(leaves(step), 1)}
        self.total = len(self.numbers)
        self.rows: dict[tuple[int, ...], _Row] = {}
        self.live = Live(self, console=Console(stderr=True), refresh_per_second=8)
        self.handler = self.on_event

    def __enter__(self) -> _StepTable:
        self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.stop()
        if not self.live.console.is_terminal:  # rich ends its last frame with no newline there
            self.live.console.line()

    def on_event(self, event: Any) -> None:
        if isinstance(event, StepStarted):
            row = self.rows.get(event.path)
            if event.round > 1 and row is not None:
                row.calls += event.calls  # a later round of the same step (AggregateSeq)
            else:
                n = self.numbers.get(event.path, "?")
                self.rows[event.path] = _Row(
                    f"{n}/{self.total} {short(event.step, 80)}", event.calls, time.monotonic()
                )
        elif isinstance(event, StepFinished):
            row = self.rows.get(event.record.path)
            if row is not None:
                row.duration = event.record.duration
        elif isinstance(event, CallRetrying):
            row = self.rows.get(event.path)
            if row is not None:
                row.retried += 1
        elif isinstance(event, CallFinished):
            row = self.rows.get(event.path)
            if row is not None:
                row.add(event.record)

    def __rich_console__(self, console: Any, options: Any) -> Iterator[Any]:
        from rich.table import Table
        from rich.text import Text

        numbers = ("calls", "failed", "retried", "cached", "tokens in/out", "time")
        # The counts keep their width; the step's expression gets what is left of the line.
        rest = sum(max(len(n), 6) + 2 for n in numbers)
        table = Table(box=None, header_style="bold", pad_edge=False)
        table.add_column(
            "step",
            no_wrap=True,
            overflow="ellipsis",
            max_width=max(16, min(48, options.max_width - rest)),
        )
        for name in numbers:
            table.add_column(name, justify="right", no_wrap=True, min_width=max(len(name), 6))
        now = time.monotonic()
        for row in list(self.rows.values()):
            running = row.duration is None
            mark = Text(
                "… " if running else ("✗ " if row.failed else "✓ "),
                style="yellow" if running else ("red" if row.failed else "green"),
            )
            table.add_row(
                # Text, not markup: a step's repr is shown as it is
                mark + Text(row.label),
                f"{row.done}/{row.calls}",
                Text(str(row.failed), style="red" if row.failed else ""),
                str(row.retried),
                str(row.cached),
                f"{tokens(row.tokens_in)}/{tokens(row.tokens_out)}",
                f"{(now - row.start) if running else row.duration:.1f} s",
            )
        yield table


def progress_for(args: argparse.Namespace, step: Step) -> NoProgress:
    if args.quiet:
        return NoProgress()
    # A live table redraws the terminal: streamed text beside it would be drawn over.
    streaming = getattr(args, "stream", False)
    return _StepTable(step) if fancy() and not streaming else _StepLines(step)

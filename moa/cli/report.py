"""What ``moa batch`` shows and writes for each finished prompt, whichever way it ran (in
this process or on Ray): the record in OUT, the progress bar, the summary line."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from .._budget import Budget
from .._cost import Cost, Prices, cost
from .._history import History
from .._pipeline import Step
from . import progress
from .batchfile import Item
from .batchout import Output, result_record
from .common import tokens
from .options import budget_line, prices_for

__all__ = ("Report",)


class Report:
    """Each finished prompt: its record written to OUT, the running totals and the progress
    moved on; on leaving, the summary line."""

    def __init__(
        self,
        args: argparse.Namespace,
        pipeline: Step,
        out: Output,
        total: int | None,
        skipped: int,
    ) -> None:
        self.args, self.out, self.skipped = args, out, skipped
        self.prices = prices_for(args, pipeline)
        self.spent = _Spent()
        self.bar = _BatchBar(total, args.quiet)
        self.start = time.monotonic()
        self.budget: Budget | None = None  # shown in the summary, where the batch has one

    def __call__(
        self,
        item: Item,
        result: str | None,
        history: History | None,
        error: str | None,
        seed: int | None = None,
    ) -> None:
        self.out.write(result_record(item, result, history, error, self.prices, seed))
        if history is not None:
            self.spent.add(history, self.prices)
        self.bar.finished(error is None)

    def __enter__(self) -> Report:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)
        if self.budget is not None and not self.args.quiet:
            print(budget_line(self.budget), file=sys.stderr)
        if exc[0] is None and not self.args.quiet:
            spent, bar = self.spent, self.bar
            print(
                f"batch: {bar.done - bar.failed} done, {bar.failed} failed, {self.skipped} "
                f"skipped (already in {self.args.output})   tokens: {tokens(spent.input)} in, "
                f"{tokens(spent.output)} out   cost: {spent.cost}   wall time: "
                f"{time.monotonic() - self.start:.2f} s",
                file=sys.stderr,
            )


class _Spent:
    """The batch's running totals (its histories are written out, not kept)."""

    __slots__ = ("cost", "input", "output")

    def __init__(self) -> None:
        self.input: int | None = 0
        self.output: int | None = 0
        self.cost = Cost.ZERO

    def add(self, history: History, prices: Prices) -> None:
        tin, tout = history.input_tokens, history.output_tokens
        self.input = None if self.input is None or tin is None else self.input + tin
        self.output = None if self.output is None or tout is None else self.output + tout
        self.cost = self.cost + cost(history, prices)


class _BatchBar:
    """Prompts done / total on stderr: a rich bar on a terminal, else a line every few seconds."""

    def __init__(self, total: int | None, quiet: bool) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self.quiet = quiet
        self.start = self.last = time.monotonic()
        self.progress: Any = None
        if not quiet and progress.fancy():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self.progress = Progress(
                TextColumn("prompts"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[failed]}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            )
            self.task = self.progress.add_task("prompts", total=total, failed="0 failed")

    def __enter__(self) -> _BatchBar:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def finished(self, ok: bool) -> None:
        self.done += 1
        self.failed += not ok
        if self.progress is not None:
            failed = f"[red]{self.failed} failed[/red]" if self.failed else "0 failed"
            self.progress.update(self.task, completed=self.done, failed=failed)
            return
        now = time.monotonic()
        if not self.quiet and now - self.last >= 2.0 and self.done != self.total:
            self.last = now
            print(
                f"batch: {self.done}/{self.total or '?'} prompts, {self.failed} failed, "
                f"{now - self.start:.1f} s",
                file=sys.stderr,
                flush=True,
            )

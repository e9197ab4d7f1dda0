"""``moa batch``: a JSON Lines file of prompts through a pipeline, each result appended to OUT
as it finishes, resumable: a rerun skips the ids OUT holds a success for.

The file format: each input line is a JSON string (the prompt) or ``{"prompt": ..., "id":
...}``; each output line is a JSON object with the id, the prompt, the result or error, the
seed, calls, tokens, cost, the prices it was costed at and the whole history."""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import anyio

from .._cache import Cache
from .._client import unicode_error
from .._cost import Cost, Prices, cost
from .._history import History, _sum_known
from .._pipeline import Step
from .._run import run
from ..errors import MoaError
from . import progress, providers
from .common import (
    UsageError,
    check_writable,
    close_client,
    dumps,
    jsonl_lines,
    loads,
    short,
    tokens,
)
from .options import (
    build_pipeline,
    cache_namespace,
    load_prices,
    open_cache,
    parse_expression,
    prices_for,
    saved_prices,
)
from .providers import as_agent, model_option

__all__ = ("batch_command",)


@dataclass
class _Item:
    """One prompt of a batch: its id as written to OUT, where it came from, its seed."""

    id: Any
    prompt: str
    line: int
    seed: int | None = None


def _read_batch_input(path: str) -> list[_Item]:
    try:
        if path == "-":
            lines = jsonl_lines(sys.stdin.read())
        else:
            lines = jsonl_lines(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: {exc}") from None
    items: list[_Item] = []
    seen: dict[str, int] = {}
    for lineno, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        where = f"{path} line {lineno}"
        try:
            value = loads(raw)
        except ValueError as exc:
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else short(str(exc), 80)
            raise UsageError(
                f"{where}: not JSON ({reason}); each line must be "
                '{"prompt": "...", "id": ...} or a JSON string'
            ) from None
        if isinstance(value, str):
            prompt, ident = value, len(items)
        elif isinstance(value, dict) and "prompt" in value:
            prompt = value["prompt"]
            ident = value.get("id", len(items))
        else:
            raise UsageError(
                f'{where}: each line must be {{"prompt": "...", "id": ...}} or a '
                f"JSON string, got {short(raw, 60)}"
            )
        if not isinstance(prompt, str) or not prompt.strip():
            raise UsageError(
                f"{where}: the prompt must be a non-empty string, got {short(repr(prompt), 60)}"
            )
        bad = unicode_error(prompt)
        if bad is not None:
            raise UsageError(f"{where}: the prompt is not valid Unicode: {bad}")
        if isinstance(ident, bool) or not isinstance(ident, (str, int)):
            raise UsageError(
                f"{where}: the id must be a string or an integer, got {short(repr(ident), 60)}"
            )
        if isinstance(ident, str) and unicode_error(ident) is not None:
            raise UsageError(f"{where}: the id is not valid Unicode: {unicode_error(ident)}")
        key = json.dumps(ident)
        if key in seen:
            raise UsageError(
                f"{where}: id {ident!r} is already used on line {seen[key]}; ids "
                "must be unique, as a resumed batch skips the ids already done"
            )
        seen[key] = lineno
        items.append(_Item(ident, prompt, lineno))
    if not items:
        raise UsageError(f"{path}: no prompts")
    return items


def _read_batch_output(path: Path) -> tuple[dict[str, str], int]:
    """The ids OUT already holds a success for (with their prompts), and how many failures it
    held; OUT is rewritten without its failed lines (they run again), without a truncated last
    line, and ending in a newline, so the next result starts a line of its own."""
    if not path.exists():
        return {}, 0
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"-o {path}: {exc}") from None
    lines = jsonl_lines(text)
    keep: list[str] = []
    done: dict[str, str] = {}
    failed = 0
    truncated = False
    for lineno, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            entry = loads(raw)
            if not isinstance(entry, dict) or "id" not in entry:
                raise ValueError("not a result object")
        except ValueError as exc:
            if lineno == len(lines):  # cut off by a kill mid-write
                truncated = True
                continue
            raise UsageError(
                f"-o {path} line {lineno} is not a moa batch result ({exc}); fix "
                "or remove that line, or write to another file"
            ) from None
        if entry.get("error") is None:
            done[json.dumps(entry["id"])] = str(entry.get("prompt"))
            keep.append(raw)
        else:
            failed += 1
    if truncated:
        print(
            f"moa: {path}: dropped a truncated last line (a run interrupted mid-write); "
            "that prompt runs again",
            file=sys.stderr,
        )
    if truncated or failed or (text and not text.endswith("\n")):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in keep), encoding="utf-8")
        os.replace(tmp, path)
    return done, failed


class _BatchBar:
    """Prompts done / total on stderr: a rich bar on a terminal, else a line every few seconds."""

    def __init__(self, total: int, quiet: bool) -> None:
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
        if not self.quiet and now - self.last >= 2.0 and self.done < self.total:
            self.last = now
            print(
                f"batch: {self.done}/{self.total} prompts, {self.failed} failed, "
                f"{now - self.start:.1f} s",
                file=sys.stderr,
                flush=True,
            )


def _outcome_line(
    item: _Item,
    result: str | None,
    history: History | None,
    error: BaseException | None,
    prices: Prices,
) -> dict[str, Any]:
    c = cost(history, prices) if history is not None else None
    return {
        "id": item.id,
        "prompt": item.prompt,
        "result": result,
        "error": None if error is None else (str(error) or type(error).__name__),
        "seed": history.seed if history is not None else item.seed,
        "calls": history.total_calls if history is not None else 0,
        "input_tokens": history.input_tokens if history is not None else None,
        "output_tokens": history.output_tokens if history is not None else None,
        "cost": None if c is None else c.total,
        "prices": None if history is None else saved_prices(prices, history),
        "history": None if history is None else history.to_dict(),
    }


async def _drive_batch(
    pipeline: Step,
    items: list[_Item],
    client: Any,
    concurrency: int,
    run_options: dict[str, Any],
    report: Callable[[_Item, str | None, History | None, BaseException | None], None],
) -> None:
    """Run every item, at most ``concurrency`` at a time, reporting each as it finishes."""
    slots = anyio.Semaphore(concurrency)

    async def one(item: _Item) -> None:
        try:
            try:
                result, history = await run(
                    pipeline, item.prompt, client, seed=item.seed, **run_options
                )
            except Exception as exc:  # the batch goes on; the error is that prompt's result
                hist = exc.history if isinstance(exc, MoaError) else None
                report(item, None, hist, exc)
            else:
                report(item, result, history, None)
        finally:
            slots.release()

    try:
        async with anyio.create_task_group() as tg:
            for item in items:
                await slots.acquire()
                tg.start_soon(one, item)
    finally:
        await close_client(client)


def batch_command(args: argparse.Namespace) -> int:
    parsed = parse_expression(args.pipeline) if args.pipeline is not None else None
    agent = model_option(args)
    items = _read_batch_input(args.input)
    load_prices(args.prices)  # a bad price file is a usage error before anything runs
    if args.seed is not None:
        # The seeds moa.run_many(prompts, seed=S) gives: drawn from S in input order, so a
        # prompt keeps its seed when a resumed batch skips the ones before it.
        draw = random.Random(args.seed)
        for item in items:
            item.seed = draw.getrandbits(63)
    check_writable("-o", args.output)
    out = Path(args.output)
    todo = _resume(out, items, args.quiet)
    if not todo:
        if not args.quiet:
            print(
                f"batch: nothing to run, all {len(items)} prompts are done in {out}",
                file=sys.stderr,
            )
        return 0
    try:
        sink = out.open("a", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"-o {out}: {exc}") from None
    cache = None
    try:
        cache = open_cache(args.cache, cache_namespace(args))
        client, model = providers.make_client(args.provider, args.base_url, args.model)
    except BaseException:
        sink.close()
        if cache is not None:
            cache.close()
        raise
    pipeline = build_pipeline(args, parsed, as_agent(agent, model))
    try:
        with sink:
            failed = _run_batch(
                args, pipeline, client, cache, todo, sink, skipped=len(items) - len(todo)
            )
    finally:
        if cache is not None:
            cache.close()
    return 1 if failed else 0


def _resume(out: Path, items: list[_Item], quiet: bool) -> list[_Item]:
    """The items OUT does not hold a success for; an id whose prompt changed is refused."""
    done_ids, failed_before = _read_batch_output(out)
    for item in items:
        key = json.dumps(item.id)
        if key in done_ids and done_ids[key] != item.prompt:
            raise UsageError(
                f"-o {out} holds id {item.id!r} for another prompt "
                f"({short(str(done_ids[key]), 40)!r}, not "
                f"{short(item.prompt, 40)!r}); an id must keep its prompt across "
                "resumed runs: write to another file, or give each prompt its id"
            )
    todo = [item for item in items if json.dumps(item.id) not in done_ids]
    skipped = len(items) - len(todo)
    if not quiet and (skipped or failed_before):
        print(
            f"moa: resuming {out}: {skipped} of {len(items)} prompts already done"
            + (f", {failed_before} failed before and run again" if failed_before else ""),
            file=sys.stderr,
        )
    return todo


def _run_batch(
    args: argparse.Namespace,
    pipeline: Step,
    client: Any,
    cache: Cache | None,
    todo: list[_Item],
    sink: TextIO,
    skipped: int,
) -> int:
    """Runs ``todo``, each result a line of ``sink`` as it finishes; how many failed."""
    prices = prices_for(args, pipeline)
    run_options = {"max_concurrency": args.max_concurrency, "timeout": args.timeout, "cache": cache}
    histories: list[History] = []
    bar = _BatchBar(len(todo), args.quiet)
    start = time.monotonic()

    def report(
        item: _Item, result: str | None, history: History | None, error: BaseException | None
    ) -> None:
        # One write per line, flushed: an interruption loses only the prompts in flight.
        sink.write(dumps(_outcome_line(item, result, history, error, prices)) + "\n")
        sink.flush()
        if history is not None:
            histories.append(history)
        bar.finished(error is None)

    with bar:
        anyio.run(_drive_batch, pipeline, todo, client, args.concurrency, run_options, report)
    if not args.quiet:
        tin = _sum_known(h.input_tokens for h in histories)
        tout = _sum_known(h.output_tokens for h in histories)
        total = sum((cost(h, prices) for h in histories), Cost.ZERO)
        print(
            f"batch: {bar.done - bar.failed} done, {bar.failed} failed, {skipped} skipped "
            f"(already in {args.output})   tokens: {tokens(tin)} in, {tokens(tout)} out   "
            f"cost: {total}   wall time: {time.monotonic() - start:.2f} s",
            file=sys.stderr,
        )
    return bar.failed

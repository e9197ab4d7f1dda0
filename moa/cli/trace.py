"""``moa trace``: a saved run (``moa run --json``, or a line of a ``moa batch`` output) drawn
as a tree of steps and calls, with tokens, cost, errors and the judges' replies in full."""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._cost import DEFAULT_PRICES, Cost, Prices, cost
from .._history import CallRecord, History
from . import progress
from .common import UsageError, jsonl_lines, loads, short, tokens
from .options import load_prices

__all__ = ("trace_command",)

#: Steps whose one call is a judge's reply: ``moa trace`` shows it in full.
JUDGES = ("Aggregate", "Vote", "Rank")


@dataclass
class _Node:
    """A line of the trace tree: (text, rich style) parts and the lines under it."""

    parts: list[tuple[str, str]]
    children: list[_Node] = field(default_factory=list)

    def add(self, *parts: tuple[str, str] | str) -> _Node:
        node = _Node(
            [(visible(p[0]), p[1]) if isinstance(p, tuple) else (visible(p), "") for p in parts]
        )
        self.children.append(node)
        return node


#: Control characters a terminal would act on (an escape sequence in a model's reply could
#: move the cursor, recolour or retitle the terminal): all of C0 but tab and newline, DEL, C1.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def visible(text: str) -> str:
    """``text`` with each control character shown as its escape (``\\x1b``), never sent to
    the terminal to act on."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _load_trace(path: str, line: int | None) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: {exc}") from None
    if line is not None:
        lines = jsonl_lines(text)
        if not 1 <= line <= len(lines):
            raise UsageError(
                f"--line {line}: {path} has {len(lines)} lines (the first is --line 1)"
            )
        text = lines[line - 1]
    try:
        doc = loads(text)
    except ValueError as exc:
        where = f"{path} line {line}" if line is not None else path
        hint = "; for a batch output (JSONL) give --line N" if line is None else ""
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else short(str(exc), 200)
        raise UsageError(f"{where}: not JSON ({reason}){hint}") from None
    if isinstance(doc, dict) and "steps" not in doc and "history" in doc:
        # a batch line: the run is under "history", its outcome beside it
        if not isinstance(doc["history"], dict):
            raise UsageError(
                f"{path} line {line}: no history (prompt {doc.get('id')!r} failed "
                f"before any step ran: {doc.get('error')})"
            )
        doc = {
            **doc["history"],
            "result": doc.get("result"),
            "error": doc.get("error"),
            "prices": doc.get("prices"),
        }
    if not isinstance(doc, dict) or "steps" not in doc:
        raise UsageError(
            f"{path}: not a run record: expected what `moa run --json` writes "
            "(or a `moa batch` output line, with --line N)"
        )
    return doc


def _money(dollars: float) -> str:
    return str(Cost(known=dollars, unknown=(), by_model={}))


def _call_node(
    parent: _Node,
    i: int,
    call: CallRecord,
    prices: Prices,
    judge: bool,
    full: bool,
    label: str = "call",
) -> None:
    parts: list[tuple[str, str] | str] = [(f"{label} {i}", "bold"), " ", (call.model, "cyan")]
    if call.agent is not None:
        parts.append((f" ({short(call.agent, 60)})", "magenta"))
    parts.append(f"  {call.latency:.2f} s")
    if call.ok or call.cached:
        parts.append(f"  {tokens(call.input_tokens)} in / {tokens(call.output_tokens)} out")
    if call.cached:
        parts.append(("  cached, $0", "green"))
    elif call.ok:
        dollars = prices.call_cost(call.model, call.input_tokens, call.output_tokens)
        parts.append("  cost unknown" if dollars is None else f"  {_money(dollars)}")
    if call.attempts > 1:
        parts.append((f"  {call.attempts} attempts", "yellow"))
    if call.cancelled:
        parts.append(("  cancelled", "yellow"))
    if call.error is not None:
        parts.append((f"  error: {call.error}", "red"))
    node = parent.add(*parts)
    if call.text is not None:
        node.add(
            (call.text if judge or full else short(call.text, 100), "dim" if not judge else "")
        )
    for j, hedge in enumerate(call.hedges, 1):
        _call_node(node, j, hedge, prices, judge, full, label="hedge")


def _trace_tree(doc: dict[str, Any], prices: Prices, full: bool) -> _Node:
    try:
        history = History.from_dict(doc)
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"not a run record: {type(exc).__name__} {exc}") from None
    c = cost(history, prices)
    root = _Node(
        [
            (visible(short(history.prompt, 60)), "bold"),
            (
                f"  seed {history.seed}  {history.total_calls} calls "
                f"({len(history.failed_calls)} failed)  tokens "
                f"{tokens(history.input_tokens)} in / {tokens(history.output_tokens)} out"
                f"  cost {c}  {history.wall_time:.2f} s",
                "",
            ),
        ]
    )
    if doc.get("pipeline"):
        root.add(("pipeline: ", "bold"), doc["pipeline"])
    for record in history.steps:
        where = ".".join(str(p + 1) for p in record.path)
        node = root.add(
            (f"{where} ", "dim"),
            (record.step, "bold"),
            f"  {record.kind}, {record.duration:.2f} s, {len(record.outputs)} "
            f"output{'' if len(record.outputs) == 1 else 's'}",
        )
        for note in record.notes:
            node.add(("note: ", "yellow"), note)
        judge = record.step.startswith(JUDGES)
        for i, call in enumerate(record.calls, 1):
            _call_node(node, i, call, prices, judge, full)
    if doc.get("error"):
        root.add(("failed: ", "bold red"), (str(doc["error"]), "red"))
    elif isinstance(doc.get("result"), str):
        result = doc["result"]
        root.add(("result: ", "bold"), result if full else short(result, 200))
    return root


def _plain_tree(node: _Node, indent: str = "", out: list[str] | None = None) -> list[str]:
    out = [] if out is None else out
    text = "".join(t for t, _ in node.parts)
    first, *rest = text.split("\n") or [""]
    out.append(indent + first)
    out.extend(indent + "  " + line for line in rest)
    for child in node.children:
        _plain_tree(child, indent + "  ", out)
    return out


def _rich_tree(node: _Node, tree: Any = None) -> Any:
    from rich.text import Text
    from rich.tree import Tree

    # Text objects, never markup: model output is shown as it is.
    label = Text.assemble(*node.parts)
    branch = Tree(label) if tree is None else tree.add(label)
    for child in node.children:
        _rich_tree(child, branch)
    return branch


def trace_command(args: argparse.Namespace) -> int:
    doc = _load_trace(args.file, args.line)
    saved = doc.get("prices")  # the table the run was costed at; --prices overrides it
    prices = DEFAULT_PRICES
    if isinstance(saved, dict):
        try:
            prices = prices | Prices({m: tuple(p) for m, p in saved.items()})
        except (TypeError, ValueError) as exc:
            raise UsageError(f"{args.file}: bad saved prices: {exc}") from None
    prices = load_prices(args.prices, prices)
    root = _trace_tree(doc, prices, args.full)
    if progress.load_rich() is None:
        print("\n".join(_plain_tree(root)))
    else:
        from rich.console import Console

        # Into a file or a pipe, lines are not wrapped at 80 columns (as the plain text is not).
        wide = None if sys.stdout.isatty() else 10_000
        Console(file=sys.stdout, width=wide).print(_rich_tree(root))
    return 0

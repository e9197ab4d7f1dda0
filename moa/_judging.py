"""How a judge's reply is read: which response it picks (:func:`parse_pick`) and how it ranks
them (:func:`parse_ranking`). Both are forgiving readers of small models' prose and never
raise: a reply that names no response reads as None or an empty list."""

from __future__ import annotations

import re

__all__ = ("parse_pick", "parse_ranking")

# A number counts only standing alone: not inside a name such as "llama-3.3-70b" or "gpt4".
_ALONE = r"(?<![\w.\-])\d+(?![\w\-]|\.\d)"
_REFERENCE = re.compile(r"(?:\bresponses?\s*#?\s*|#|\[)\s*(\d+)(?![\w\-]|\.\d)", re.IGNORECASE)
_NUMBER_RUN = re.compile(
    rf"{_ALONE}(?:\s*(?:[,;>/]|\band\b|\bthen\b|\s)\s*{_ALONE})*", re.IGNORECASE
)


_BARE_NUMBER = re.compile(r"\W*(?:response\s*)?#?\s*\(?(\d+)\)?\W*", re.IGNORECASE)


def parse_pick(text: str, count: int) -> int | None:
    """The 0-based index of the response a judge's reply picks among ``count``, or None.

    Only an explicit pick counts: a reply that is just a number ("2", "2.", "(2)", "#2",
    "Response 2"), or the first explicit reference in a longer reply ("Response 3 is best",
    "[3]"). A bare number inside prose is not a pick: "1 + 6 = 7" names no response.
    """
    bare = _BARE_NUMBER.fullmatch(text.strip())
    found = [bare.group(1)] if bare else _REFERENCE.findall(text)
    valid = _valid(found, count)
    return valid[0] if valid else None


def parse_ranking(text: str, count: int) -> list[int]:
    """The 0-based indices, best first, that a judge's reply ranks among ``count`` responses.

    Two readings compete: the explicit references ("Response 3", "#3", "[3]") in order, and
    the longest run of numbers joined by commas, ``>``, "and" or spaces; the one naming more
    responses wins, the references on a tie. So "I compared 5 responses: 3, 1" reads as 3
    then 1, and "2 > 1 > 3. Response 2 wins" as 2, 1, 3. Numbers outside 1..count and
    repeats are ignored. An empty list means nothing could be read.
    """
    refs = _valid(_REFERENCE.findall(text), count)
    runs = [_valid(re.findall(_ALONE, m.group()), count) for m in _NUMBER_RUN.finditer(text)]
    longest = max(runs, key=len, default=[])
    return refs if len(refs) >= len(longest) else longest


def _valid(digits: list[str], count: int) -> list[int]:
    """1-based numbers to 0-based indices, dropping those out of range and repeats."""
    seen: list[int] = []
    for d in digits:
        # int() of a huge digit string is slow or refused; no index is that long anyway.
        i = int(d) if len(d) <= 9 else 0
        if 1 <= i <= count and i - 1 not in seen:
            seen.append(i - 1)
    return seen

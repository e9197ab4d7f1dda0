"""How a short answer is read from a reply: the numbers in it, its words without punctuation
or articles, and the key two replies must share to give the same answer. The selection steps
group replies by :func:`answer_key`; :mod:`moa.eval`'s scorers compare by the same readings,
so what counts as "the same answer" and as "the right answer" never disagree.
"""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal, InvalidOperation

__all__ = (
    "answer_key",
    "first_clause",
    "is_number",
    "last_number",
    "normalise",
    "numbers",
    "option_letter",
    "same_number",
    "short_answer",
)

_ARTICLES = frozenset({"a", "an", "the"})
# A number standing alone: not inside a word ("h2o", "gpt4"), thousands grouped by commas or
# not, an optional decimal part (or only one: ".5"). A minus counts as a sign only when no word
# or number is right before it, so "9-3" is 9 and 3 while "= -2" is -2.
_NUMBER = re.compile(r"(?<![\w.])-?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?!\d|,\d{3})")


def normalise(text: str) -> str:
    """Lowercase, punctuation as spaces, no articles (a, an, the), single spaces; a text that
    is nothing but an article keeps it ("A", an option's letter, is "a")."""
    text = unicodedata.normalize("NFKC", text).lower()
    words = re.sub(r"[\W_]+", " ", text).split()
    return " ".join(w for w in words if w not in _ARTICLES) or " ".join(words)


def _plain(text: str) -> str:
    return unicodedata.normalize("NFKC", text).replace("\u2212", "-")


def numbers(text: str) -> list[str]:
    """Every standalone number in the text, in order, as written (commas kept)."""
    return _NUMBER.findall(_plain(text))


def is_number(text: str) -> bool:
    """Whether the text is one number and nothing else but symbols ("-3", "\u22123", "1,500",
    ".5", "$1,500", "40%"): what the number scorer can compare."""
    plain = _plain(text)
    return len(_NUMBER.findall(plain)) == 1 and not re.search(r"\w", _NUMBER.sub("", plain))


def _decimal(number: str) -> Decimal:
    value = Decimal(number.replace(",", ""))
    return Decimal(0) if value == 0 else value  # -0 is 0


def last_number(text: str) -> str | None:
    """The last number in the text in a canonical form ("1,500.50" -> "1500.5"), or None."""
    found = numbers(text)
    if not found:
        return None
    try:
        return format(_decimal(found[-1]).normalize(), "f")
    except InvalidOperation:  # pragma: no cover - the pattern only finds valid numbers
        return None


def same_number(a: str, b: str) -> bool:
    """Whether two numbers as written are one value ("1,500" and "1500.0")."""
    try:
        return _decimal(a) == _decimal(b)
    except InvalidOperation:
        return False


# Words that carry no answer in a short reply ("The answer is blue", "It is typically blue").
_FILLER = frozenset(
    """
a an the is are was were be been being it its this that these those i my me you your we our
they their he she his her of to in on at for and or but with by from as so do does did can
could would should will there here what which who whom whose when where why how answer answers
word words one only reply please sure okay ok correct right final called known typically
usually generally simply actually definitely probably certainly very most also just either
neither option choice yes no well think guess believe
s m re ve ll d t don doesn isn aren wasn won not
""".split()
)  # the last line: what is left of contractions ("that's" is "that s")

# A question that lists options "(A) ... (B) ..." or "A. ... B. ...": its answers are letters.
_OPTIONS = re.compile(r"(?:^|\s)\(?A[).:]\s.*(?:^|\s)\(?B[).:]\s", re.S)
_LETTER = re.compile(r"(?<![\w'])\(?([A-H])(?:\)|[.:](?!\w)|(?![\w']))")


def option_letter(reply: str, question: str) -> str | None:
    """The option a reply chooses ("(C)", "C.", "The answer is C"), lowercase, when the
    question lists lettered options; else None."""
    if not _OPTIONS.search(question):
        return None
    m = _LETTER.search(reply)
    return m[1].lower() if m else None


_CLAUSE = re.compile(r"[.!?;:,()\"]+")


def _asked(question: str) -> set[str]:
    first = question.split("?")[0] if "?" in question else question
    return set(normalise(first).split())


def first_clause(reply: str, question: str = "") -> str | None:
    """The reply's first clause that says something: one with a word that is neither the
    question's nor filler ("Lyon, not Paris." gives "Lyon"); None when none does."""
    asked = _asked(question)
    for line in reply.splitlines():
        for clause in _CLAUSE.split(line):
            if any(w not in asked and w not in _FILLER for w in normalise(clause).split()):
                return clause
    return None


def short_answer(reply: str, question: str = "") -> str | None:
    """The first content word of a short reply, with the capitalised words right after it
    (a name: "New York", "United Kingdom"), normalised, or None: the words of the question
    itself ("the capital of Italy is ...") and filler words ("the answer is ...") are
    skipped, clause by clause, so "The capital of Italy is Rome." and "Rome, of course" both
    give "rome"."""
    asked = _asked(question)
    for line in reply.splitlines():
        for clause in _CLAUSE.split(line):
            raw = clause.split()
            for i, token in enumerate(raw):
                word = normalise(token)
                if not word or word in asked or word in _FILLER or " " in word:
                    continue
                name = [word]
                if token[:1].isupper():
                    for more in raw[i + 1 :]:
                        if not more[:1].isupper() or not normalise(more):
                            break
                        name.append(normalise(more))
                return " ".join(name)
    return None


def answer_key(reply: str, question: str = "") -> str | None:
    """What two replies to ``question`` must share to give the same answer: the option letter
    where the question lists lettered options, else the last number in the reply (canonical:
    "1,500.0" is "1500"), else its first content word or name (:func:`short_answer`), else
    None (no answer)."""
    return option_letter(reply, question) or last_number(reply) or short_answer(reply, question)

"""What a response carries besides its text: how sure the model was of it, and who wrote it.

:class:`Confidence` is the model's own signal: the log-probabilities of the tokens it sampled,
summed, and how many there were (a client that can read them returns one in its
:class:`~moa.Reply`; the history records it, the cache stores it). :class:`Response` is a
``str`` that also says which agent and model wrote it and with what confidence: the executor
hands responses on as Responses when a step of the pipeline reads them (the selection steps),
so a transform between them (``Shuffle``, ``Dropout``) passes the facts along unchanged, and a
step that writes new text (``Map``) writes plain strings.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from ._bounds import check_int, check_type, describe

__all__ = ("Confidence", "Response")


@dataclass(frozen=True, slots=True)
class Confidence:
    """The log-probabilities of a reply's sampled tokens: their sum (<= 0) and how many
    there were (>= 1). :attr:`mean` is the mean token log-probability; :attr:`weight`,
    ``exp(mean)``, the geometric mean of the tokens' probabilities, in (0, 1]."""

    logprob_sum: float
    tokens: int

    def __post_init__(self) -> None:
        check_type("Confidence", "logprob_sum", self.logprob_sum, (int, float), "a number <= 0")
        if not -math.inf < self.logprob_sum <= 0:
            raise ValueError(
                f"Confidence(logprob_sum=...): a sum of log-probabilities is a finite number "
                f"<= 0, got {self.logprob_sum!r}"
            )
        check_int("Confidence", "tokens", self.tokens, 1, 2**31)
        object.__setattr__(self, "logprob_sum", float(self.logprob_sum) + 0.0)

    @property
    def mean(self) -> float:
        """The mean log-probability of the tokens."""
        return self.logprob_sum / self.tokens

    @property
    def weight(self) -> float:
        """``exp(mean)``: the geometric mean of the tokens' probabilities, in (0, 1]."""
        return math.exp(self.mean)

    @classmethod
    def of(cls, logprobs: Iterable[float]) -> Confidence | None:
        """The confidence of a reply whose tokens had these log-probabilities (None for no
        tokens). A value that is not a finite number <= 0 is refused with ValueError."""
        total, n = 0.0, 0
        for value in logprobs:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(
                    f"Confidence.of: a log-probability is a number, not {describe(value)}"
                )
            if not -math.inf < value <= 0:
                raise ValueError(
                    f"Confidence.of: a log-probability is finite and <= 0, got {value!r}"
                )
            total += value
            n += 1
        return cls(total, n) if n else None

    def to_dict(self) -> dict[str, float | int]:
        return {"logprob_sum": self.logprob_sum, "tokens": self.tokens}


class Response(str):
    """A response's text (it is a ``str``, equal to its text) and where it came from: the
    ``agent`` that wrote it (the Agent's label, else the model), the ``model``, and the
    model's ``confidence`` in it (None when the client gave none). Immutable."""

    agent: str | None
    model: str | None
    confidence: Confidence | None

    def __new__(
        cls,
        text: str,
        *,
        agent: str | None = None,
        model: str | None = None,
        confidence: Confidence | None = None,
    ) -> Response:
        self = super().__new__(cls, text)
        object.__setattr__(self, "agent", agent)
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "confidence", confidence)
        return self

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"a Response is immutable; make a new one to change {name!r}")

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (str(self), self.agent, self.model, self.confidence))


def _rebuild(
    text: str, agent: str | None, model: str | None, confidence: Confidence | None
) -> Response:
    return Response(text, agent=agent, model=model, confidence=confidence)

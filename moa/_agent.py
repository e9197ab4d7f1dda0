"""Agent: a model with its own settings, accepted wherever a step takes a model name.

``Agent("m", temp=0)`` beside ``Agent("m", temp=0.9, system="Be terse.")`` makes a mixture
heterogeneous even with one model: with Self-MoA or the embedded model, settings and personas
are the only source of diversity there is. A bare string is the shorthand for ``Agent(string)``.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass

from ._bounds import MAX_COUNT, MAX_TEMP, check_int, check_number, describe, safe_repr

__all__ = ("Agent", "AgentLike", "agent_of", "plain_text")


def plain_text(text: str) -> str:
    """``text`` as a plain str: a str subclass (whose ``__repr__`` may say anything) stored in
    a value would make that value's repr lie about what it holds."""
    return text if type(text) is str else str.__str__(text)


@dataclass(frozen=True, slots=True)
class Agent:
    """One agent of a step: ``model`` and, where not None, its own sampling settings.

    ``temp`` and ``max_tokens`` replace the step's for this agent's calls; None takes the
    step's. ``system`` is the agent's persona: it is prepended to the step's instruction in the
    system message (the step's task still stands: "Be terse." then "Combine the responses...";
    for ``Propose``, which has no instruction, it is the whole system message). ``name`` labels
    the agent in history and traces; it changes nothing that is sent.

    ``Agent("m")`` with nothing else is the model name ``"m"``: steps store it as the string,
    so ``Propose([Agent("m")]) == Propose(["m"])`` and both print as ``Propose(['m'])``.
    """

    model: str
    _: KW_ONLY
    temp: float | None = None
    max_tokens: int | None = None
    system: str | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, str):
            raise TypeError(
                f"Agent(model): model must be a model name (str), not {describe(self.model)}"
            )
        if not self.model:
            raise ValueError("Agent(model): model must be a non-empty model name, got ''")
        check_number("Agent", "temp", self.temp, high=MAX_TEMP, none=True)
        check_int("Agent", "max_tokens", self.max_tokens, 1, MAX_COUNT, none=True)
        object.__setattr__(self, "model", plain_text(self.model))
        for field in ("system", "name"):
            value = getattr(self, field)
            if value is None:
                continue
            if not isinstance(value, str):
                raise TypeError(
                    f"Agent({field}=...): {field} must be a str or None, not {describe(value)}"
                )
            if not value.strip():
                raise ValueError(
                    f"Agent({field}=...): {field} must be a non-empty str or None, got {safe_repr(value)}"
                )
            object.__setattr__(self, field, plain_text(value))

    def __repr__(self) -> str:
        shown = [repr(self.model)]
        for field in ("temp", "max_tokens", "system", "name"):
            value = getattr(self, field)
            if value is not None:
                shown.append(f"{field}={value!r}")
        return f"Agent({', '.join(shown)})"

    @property
    def plain(self) -> bool:
        """Nothing but a model name: the step stores it as the string."""
        return (
            self.temp is None
            and self.max_tokens is None
            and self.system is None
            and self.name is None
        )

    @property
    def label(self) -> str:
        """How history and traces name this agent: its ``name``, else its expression."""
        return self.name if self.name is not None else repr(self)


#: What a step takes for one agent: a model name, or an Agent.
AgentLike = str | Agent


def agent_of(step: str, value: object, where: str) -> AgentLike:
    """``value`` as a step stores an agent: a non-empty model name, or an Agent (a plain
    ``Agent("m")`` becomes ``"m"``). Anything else is a TypeError naming ``step`` and ``where``."""
    if isinstance(value, Agent):
        return value.model if value.plain else value
    if isinstance(value, str) and value:
        return plain_text(value)
    raise TypeError(
        f"{step}({where}): every agent must be a non-empty model name, not "
        f"{safe_repr(value)} ({type(value).__name__}): give a str or a "
        f"moa.Agent(model, ...)"
    )

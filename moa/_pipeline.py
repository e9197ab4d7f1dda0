"""Step, Pipeline and Parallel: immutable values joined by ``|``, ``&`` and ``*``.

Each operator is a one-line alias of a named method (``a | b`` is ``a.then(b)``, ``a & b`` is
``a.alongside(b)``, ``s * n`` is ``s.repeat(n)``). Construction flattens, so the laws of the
algebra hold as ``==``: ``(a | b) | c == a | (b | c)``, ``Pipeline() | a == a``,
``(a & b) & c == a & (b & c)``, ``s * (m + n) == s * m | s * n``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any, ClassVar, Union

from ._bounds import MAX_NESTING, MAX_STEPS, describe, shown

__all__ = (
    "Parallel",
    "Pipeline",
    "Step",
    "as_step",
    "leaves",
    "parallel",
    "pipeline",
    "source",
    "step_text",
)

#: What ``|`` and ``run`` accept where a step is expected: a step, or a list of them (as mixture-llm takes them).
StepLike = Union["Step", list[Any], tuple[Any, ...]]


def source(value: Any) -> str:
    """One constructor argument as the building expression writes it: a function by its name,
    anything else by its repr."""
    if callable(value) and not isinstance(value, Step):
        name = getattr(value, "__qualname__", None) or getattr(value, "__name__", None)
        return name if isinstance(name, str) else repr(value)
    return repr(value)


def as_step(value: Any, *, where: str = "a pipeline") -> Step:
    """``value`` as a Step: a Step is itself, a list or tuple of steps is their Pipeline."""
    if isinstance(value, Step):
        return value
    if isinstance(value, (list, tuple)):
        return Pipeline(*value)
    raise TypeError(f"{where} must be a step, a pipeline or a list of steps, not {describe(value)}")


class Step:
    """A pipeline stage: an immutable value, hashable and equal by value.

    Subclasses are frozen dataclasses; the repr prints the first ``_positional`` fields as
    positional arguments and every other field that differs from its default as a keyword,
    so ``eval(repr(step)) == step`` for a step without user functions.
    """

    # The repr, kept once made: a step is immutable, and runs record it for every step.
    __slots__ = ("_shown",)
    _shown: str
    _positional: ClassVar[int] = 0

    # -- the algebra ----------------------------------------------------------------------
    def then(self, other: StepLike) -> Step:
        """Run ``self``, then ``other`` on its outputs (``self | other``)."""
        return Pipeline(self, as_step(other, where=f"the right operand of {self!r} | ..."))

    def alongside(self, other: StepLike) -> Step:
        """Run ``self`` and ``other`` concurrently on the same input and concatenate their
        outputs, ``self``'s first (``self & other``)."""
        return Parallel(self, as_step(other, where=f"the right operand of {self!r} & ..."))

    def repeat(self, n: int) -> Step:
        """``self`` run ``n`` times in sequence (``self * n``); ``n == 0`` is the identity."""
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"a step repeats a whole number of times, not {describe(n)}")
        if not 0 <= n <= MAX_STEPS:
            raise ValueError(f"a step repeats 0 to {MAX_STEPS:,} times, got {shown(n)}")
        return Pipeline(*([self] * n))

    def __or__(self, other: StepLike) -> Step:
        return self.then(other)

    def __ror__(self, other: StepLike) -> Step:
        return as_step(other, where=f"the left operand of ... | {self!r}").then(self)

    def __and__(self, other: StepLike) -> Step:
        return self.alongside(other)

    def __rand__(self, other: StepLike) -> Step:
        return as_step(other, where=f"the left operand of ... & {self!r}").alongside(self)

    def __mul__(self, n: int) -> Step:
        return self.repeat(n)

    def __rmul__(self, n: int) -> Step:
        return self.repeat(n)

    # -- value behaviour for dataclass steps --------------------------------------------------
    def __repr__(self) -> str:
        fields = dataclasses.fields(self)  # type: ignore[arg-type]  # subclasses are dataclasses
        # A tuple field (a step's agents) was given, and is shown, as a list.
        shown = [
            source(list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields
        ]
        # Positional arguments up to the last one not at its default: Majority(), not
        # Majority(None).
        given = [
            f.default is dataclasses.MISSING or getattr(self, f.name) != f.default
            for f in fields[: self._positional]
        ]
        args = shown[: max((i + 1 for i, g in enumerate(given) if g), default=0)]
        for f, text in zip(fields[self._positional :], shown[self._positional :], strict=True):
            if f.default is dataclasses.MISSING or getattr(self, f.name) != f.default:
                args.append(f"{f.name}={text}")
        return f"{type(self).__name__}({', '.join(args)})"


def _nested(kind: str, parts: list[Step]) -> int:
    """The nesting depth of a Pipeline or Parallel of ``parts`` (a plain step is depth 0),
    checked against the limits."""
    if len(parts) > MAX_STEPS:
        raise ValueError(
            f"a {kind} holds at most {MAX_STEPS:,} "
            f"{'steps' if kind == 'Pipeline' else 'branches'}, got {len(parts):,}"
        )
    depth = 1 + max((getattr(p, "_depth", 0) for p in parts), default=0)
    if depth > MAX_NESTING:
        raise ValueError(
            f"pipelines nest at most {MAX_NESTING} levels deep (a | (b & (c | ...))), "
            f"this one {depth}: name the inner parts and join them flatter"
        )
    return depth


class Pipeline(Step):
    """Steps run in sequence, each on the previous one's outputs.

    ``Pipeline()`` is the identity; ``Pipeline(a)`` is ``a`` itself; nested pipelines and
    lists are flattened, so equal compositions compare equal.
    """

    __slots__ = ("_depth", "steps")
    steps: tuple[Step, ...]
    _depth: int

    def __new__(cls, *steps: StepLike) -> Step:  # type: ignore[misc]  # flattens: maybe not a Pipeline
        flat: list[Step] = []
        for s in steps:
            s = as_step(s, where="each argument of Pipeline(...)")
            flat.extend(s.steps if isinstance(s, Pipeline) else (s,))
        if len(flat) == 1:
            return flat[0]
        self = object.__new__(cls)
        object.__setattr__(self, "steps", tuple(flat))
        object.__setattr__(self, "_depth", _nested("Pipeline", flat))
        return self

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        return type(other) is Pipeline and other.steps == self.steps

    def __hash__(self) -> int:
        return hash((Pipeline, self.steps))

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    def __repr__(self) -> str:
        if not self.steps:
            return "Pipeline()"
        return " | ".join(f"({s!r})" if isinstance(s, Parallel) else repr(s) for s in self.steps)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Pipeline, self.steps)


class Parallel(Step):
    """Branches run concurrently on the same input; their outputs are concatenated in branch
    order. Nested Parallels are flattened; one branch is that branch itself."""

    __slots__ = ("_depth", "branches")
    branches: tuple[Step, ...]
    _depth: int

    def __new__(cls, *branches: StepLike) -> Step:  # type: ignore[misc]  # flattens: maybe not a Parallel
        flat: list[Step] = []
        for b in branches:
            b = as_step(b, where="each argument of Parallel(...)")
            flat.extend(b.branches if isinstance(b, Parallel) else (b,))
        if not flat:
            raise ValueError("Parallel needs at least one branch")
        if len(flat) == 1:
            return flat[0]
        self = object.__new__(cls)
        object.__setattr__(self, "branches", tuple(flat))
        object.__setattr__(self, "_depth", _nested("Parallel", flat))
        return self

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        return type(other) is Parallel and other.branches == self.branches

    def __hash__(self) -> int:
        return hash((Parallel, self.branches))

    def __repr__(self) -> str:
        return " & ".join(
            f"({b!r})" if isinstance(b, Pipeline) and b.steps else repr(b) for b in self.branches
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (Parallel, self.branches)


def step_text(step: Step) -> str:
    """``repr(step)``, made once per step object: history records it for every step of
    every run."""
    try:
        return step._shown
    except AttributeError:
        text = repr(step)
        try:
            object.__setattr__(step, "_shown", text)
        except AttributeError:  # a step class that declares slots without it
            pass
        return text


def pipeline(*steps: StepLike) -> Step:
    """The named form of ``|``: ``pipeline(a, b, c) == a | b | c``."""
    return Pipeline(*steps)


def parallel(*branches: StepLike) -> Step:
    """The named form of ``&``: ``parallel(a, b) == a & b``."""
    return Parallel(*branches)


def leaves(step: Step) -> list[tuple[tuple[int, ...], Step]]:
    """Every step that is not a Pipeline or Parallel, in pipeline order, with its path as the
    executor numbers it (history's ``StepRecord.path``)."""
    out: list[tuple[tuple[int, ...], Step]] = []

    def walk(s: Step, path: tuple[int, ...]) -> None:
        if isinstance(s, Pipeline):
            for i, sub in enumerate(s.steps):
                walk(sub, (*path, i))
        elif isinstance(s, Parallel):
            for i, sub in enumerate(s.branches):
                walk(sub, (*path, i))
        else:
            out.append((path, s))

    walk(step, () if isinstance(step, Pipeline) else (0,))
    return out

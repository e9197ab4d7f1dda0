"""Custom transforms from plain functions: ``@transform``.

``fn(responses, rng)`` decorated is a step; ``fn(responses, rng, limit)`` decorated is a factory
whose calls (``truncate(200)``) are steps. Either way the step is a frozen, slotted
:class:`~moa.Transform`, so it composes with ``|``, ``&`` and ``*``, is equal and hashable by its
function and arguments, and prints as the expression that builds it.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, overload

from ._bounds import describe
from ._pipeline import Step, source
from ._transforms import Transform

__all__ = ("FunctionTransform", "TransformFactory", "transform")

TransformFunction = Callable[..., list[str]]
_EMPTY = inspect.Parameter.empty
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


@dataclass(frozen=True, slots=True, repr=False)
class FunctionTransform(Transform):
    """A transform made by ``@transform``: ``fn(responses, rng, *args, **kwargs)``.

    ``args`` and ``kwargs`` are the bound arguments in canonical form (defaults filled in), so
    ``truncate(200) == truncate(limit=200)``; ``kwargs`` is a tuple of ``(name, value)`` pairs.
    """

    fn: TransformFunction
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()

    def apply(self, responses: list[str], rng: random.Random) -> list[str]:
        return self.fn(responses, rng, *self.args, **dict(self.kwargs))

    def __repr__(self) -> str:
        name = self.fn.__name__
        params = list(inspect.signature(self.fn).parameters.values())[2:]
        if not params:
            return name
        shown: list[str] = []
        args = iter(self.args)
        kwargs = dict(self.kwargs)
        # Values for *args force every positional parameter before them to be written out.
        spread = len(self.args) > sum(p.kind in _POSITIONAL for p in params)
        for p in params:
            if p.kind in _POSITIONAL:
                value = next(args)
                # A defaulted argument at its default is left out, as a dataclass step's is.
                if p.default is _EMPTY or spread:
                    shown.append(source(value))
                elif value != p.default:
                    shown.append(f"{p.name}={source(value)}")
            elif p.kind is inspect.Parameter.VAR_POSITIONAL:
                shown.extend(source(v) for v in args)
            elif p.kind is inspect.Parameter.KEYWORD_ONLY:
                value = kwargs.pop(p.name)
                if p.default is _EMPTY or value != p.default:
                    shown.append(f"{p.name}={source(value)}")
        shown.extend(f"{k}={source(v)}" for k, v in kwargs.items())
        return f"{name}({', '.join(shown)})"

    def __reduce__(self) -> tuple[Any, ...]:
        # The module attribute is the decorated step or factory, not ``fn``: rebuild through it.
        return (_rebuild, (self.fn.__module__, self.fn.__qualname__, self.args, self.kwargs))


def _rebuild(
    module: str, qualname: str, args: tuple[Any, ...], kwargs: tuple[tuple[str, Any], ...]
) -> Step:
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj if isinstance(obj, Step) else obj._build(args, kwargs)


class TransformFactory:
    """What ``@transform`` makes of a function with parameters beyond ``(responses, rng)``:
    calling it binds those parameters and returns the step. Not a step itself."""

    def __init__(self, fn: TransformFunction, check: Callable[..., object] | None) -> None:
        functools.update_wrapper(self, fn)
        self._fn = fn
        self._check = check
        signature = inspect.signature(fn)
        self._signature = signature.replace(parameters=list(signature.parameters.values())[2:])
        self.__signature__ = self._signature

    def __call__(self, *args: Any, **kwargs: Any) -> FunctionTransform:
        name = self._fn.__name__
        try:
            bound = self._signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{name}{self._signature}: {exc}") from None
        bound.apply_defaults()
        if self._check is not None:
            self._check(*bound.args, **bound.kwargs)
        # Keyword arguments sorted by name: the order they were written in does not matter.
        return self._build(bound.args, tuple(sorted(bound.kwargs.items())))

    def _build(
        self, args: tuple[Any, ...], kwargs: tuple[tuple[str, Any], ...]
    ) -> FunctionTransform:
        step = FunctionTransform(self._fn, tuple(args), tuple(kwargs))
        try:
            hash(step)
        except TypeError:
            raise TypeError(
                f"{self._fn.__name__}(...): every argument must be hashable, since steps are "
                f"values; pass a tuple for a list and a frozenset for a set"
            ) from None
        return step

    def __repr__(self) -> str:
        return f"<transform {self._fn.__name__}{self._signature}>"


def _check_function(fn: object) -> inspect.Signature:
    if (
        not callable(fn)
        or isinstance(fn, (Step, type))
        or not isinstance(getattr(fn, "__name__", None), str)
    ):
        raise TypeError(
            f"@transform decorates a named function fn(responses, rng, ...), not {describe(fn)}"
        )
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        raise TypeError(
            f"@transform: {getattr(fn, '__name__', fn)} is async; a transform is a plain function "
            f"(model calls belong in an LLMStep)"
        )
    signature = inspect.signature(fn)
    params = list(signature.parameters.values())
    if len(params) < 2 or any(p.kind not in _POSITIONAL for p in params[:2]):
        raise TypeError(
            f"@transform: {getattr(fn, '__name__', fn)}{signature} must take (responses, rng, ...): "
            f"the current responses and the run's random.Random"
        )
    return signature


@overload
def transform(fn: TransformFunction, /) -> Step | TransformFactory: ...
@overload
def transform(
    *, check: Callable[..., object] | None = None
) -> Callable[[TransformFunction], Step | TransformFactory]: ...


def transform(
    fn: TransformFunction | None = None, /, *, check: Callable[..., object] | None = None
) -> Any:
    """Make a transform step from ``fn(responses, rng, ...) -> list[str]``.

    With only ``(responses, rng)`` the decorated name is the step itself (``dedupe``). With more
    parameters it is a factory: ``truncate(200)`` binds them at once (bad arguments raise
    TypeError naming the step) and returns the step, whose repr is ``truncate(200)``.
    ``check``, called with the same parameters, may raise to refuse values at construction.
    ``fn`` must draw randomness only from ``rng``, never from the global ``random``.
    """
    if fn is None:
        return functools.partial(transform, check=check)
    signature = _check_function(fn)
    if len(signature.parameters) == 2:
        if check is not None:
            raise TypeError(f"@transform(check=...): {fn.__name__} takes no parameters to check")
        return FunctionTransform(fn)
    return TransformFactory(fn, check)

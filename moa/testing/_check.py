"""check_laws: one pytest test per law, named ``test_<step>_<law>``."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from hypothesis import settings as Settings
from hypothesis.strategies import SearchStrategy

from .._pipeline import Step
from ._case import describe_subject

__all__ = ("check_laws",)


def _slug(text: str) -> str:
    """``PairwiseJudge('j')`` as ``pairwise_judge_j``: snake case, one ``_`` between words."""
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", text)
    return re.sub(r"[^0-9a-zA-Z]+", "_", text).strip("_").lower()


def _name(subject: object) -> str:
    if isinstance(subject, SearchStrategy):
        raise TypeError(
            "check_laws(strategy, ...): name the tests with name=..., since a "
            "strategy of steps has no name of its own"
        )
    label = describe_subject(subject)
    if not isinstance(subject, Step) and "<" in label:
        raise TypeError(
            f"check_laws({label}, ...): name the tests with name=..., since "
            f"{label} has no name of its own"
        )
    return _slug(label)


def _test(
    law: Callable[..., None], subject: Any, options: dict[str, Any], name: str, module: str | None
) -> Callable[[], None]:
    def test() -> None:
        law(subject, **options)

    test.__name__ = test.__qualname__ = name
    test.__doc__ = law.__doc__
    if module:
        test.__module__ = module
    return test


def check_laws(
    subject: Step | Callable[..., Step] | SearchStrategy[Step],
    laws: Sequence[Callable[..., None]],
    *,
    name: str | None = None,
    namespace: dict[str, Any] | None = None,
    params: Any = None,
    responses: Any = None,
    seeds: Any = None,
    clients: Any = None,
    prompts: Any = None,
    settings: Settings | None = None,
    max_examples: int | None = None,
) -> dict[str, Callable[[], None]]:
    """Define one pytest test per law, ``test_<name>_<law>``, in ``namespace`` (default: the
    calling module's globals), so ``pytest -k <law>`` selects them; return them by name.

    ``subject`` is a step, a factory (``Take``, a ``@transform`` with parameters) with
    ``params``, or a strategy of steps. ``name`` defaults to the step's repr or the factory's
    name in snake case. The other keywords go to every law (see :mod:`moa.testing.laws`).
    """
    target = namespace if namespace is not None else sys._getframe(1).f_globals
    base = name if name is not None else _name(subject)
    if not base.isidentifier():
        raise ValueError(f"check_laws(name=...): {base!r} must make a Python name")
    options = {
        "params": params,
        "responses": responses,
        "seeds": seeds,
        "clients": clients,
        "prompts": prompts,
        "settings": settings,
        "max_examples": max_examples,
    }
    if callable(laws):
        laws = [laws]
    tests: dict[str, Callable[[], None]] = {}
    for law in laws:
        if not getattr(law, "is_law", False):
            hint = (
                f"; {law.__name__} takes its parameter first, as in {law.__name__}(...)"
                if callable(law) and getattr(law, "__module__", "") == "moa.testing.laws"
                else "; make one with @moa.testing.law"
            )
            raise TypeError(f"check_laws: {law!r} is not a law{hint}")
        test_name = f"test_{base}_{law.__name__}"
        if test_name in tests or test_name in target:
            raise ValueError(
                f"check_laws: {test_name} is defined already; give this "
                f"check_laws(...) another name=..., or the law another name=..."
            )
        tests[test_name] = _test(law, subject, options, test_name, target.get("__name__"))
    target.update(tests)
    return tests

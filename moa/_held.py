"""A finished run as ``run_many`` holds it until the batch ends: two flat tuples of atoms.

The garbage collector's full collections scan every object it tracks, and a batch's finished
results are most of them: a RunResult is 16 tracked objects (its History, StepRecords,
CallRecords, messages and their tuples), scanned again at every full collection while the
batch goes on. A tuple holding only str, int, float, bool and None is one the collector stops
tracking, so :func:`packed` turns a result into two (its shape and its leaves) and
:func:`unpacked` builds an equal result back, once, when the batch hands its results over. Measured with
``benchmarks/load.py``: at 100,000 runs the rescans cost ~470 µs of CPU a held result.

A result holding anything else (an exception, a :class:`~moa.Response`, a custom step's
own objects) is held as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from types import MappingProxyType
from typing import Any, TypeVar

from ._history import CallRecord, History, StepRecord
from ._response import Confidence

__all__ = ("holds", "packed", "unpacked")

T = TypeVar("T")
_CLASSES: list[type] = []
_TAGS: dict[type, int] = {}
_FIELDS: list[tuple[str, ...]] = []
# The slot setters of each class's fields, which write past a frozen __setattr__.
_SETTERS: list[tuple[Callable[[Any, Any], None], ...]] = []
_ATOMS = (str, int, float, bool, type(None))


def holds(cls: type[T]) -> type[T]:
    """Registers a frozen, slotted dataclass whose instances :func:`packed` holds as atoms
    (a class decorator: a batch's RunResult registers itself where it is defined)."""
    _TAGS[cls] = len(_CLASSES)
    _CLASSES.append(cls)
    _FIELDS.append(tuple(f.name for f in fields(cls)))  # type: ignore[arg-type]
    _SETTERS.append(tuple(getattr(cls, f).__set__ for f in _FIELDS[-1]))
    return cls


for _cls in (History, StepRecord, CallRecord, Confidence):
    holds(_cls)


class _Unheld(Exception):
    """A value :func:`packed` cannot hold as atoms."""


def packed(result: Any, shapes: dict[tuple[int, ...], tuple[int, ...]]) -> Any:
    """``result`` as a pair of flat tuples of atoms (its shape, its leaves), or ``result``
    itself where it holds anything else. Flat: the collector untracks a tuple of atoms at its
    first look, where nested tuples would take it a collection a level. ``shapes`` holds the
    shapes seen so far, one tuple each: a batch's runs mostly share one."""
    if getattr(result, "error", None) is not None:  # an exception is held as it is
        return result
    shape: list[int] = []
    leaves: list[Any] = []
    try:
        _pack(result, shape, leaves)
    except _Unheld:
        return result
    form = tuple(shape)
    return (shapes.setdefault(form, form), tuple(leaves))


def unpacked(held: Any) -> Any:
    """The result :func:`packed` held, equal to the one it was given (``compare=False``
    fields too)."""
    if type(held) is not tuple:
        return held
    shape, leaves = held
    value, _, _ = _unpack(shape, leaves, 0, 0)
    return value


# The shape's codes: a leaf, or a container followed by its length, or a class's tag + 1
# followed by its fields.
_LEAF, _TUPLE, _PROXY, _DICT, _LIST = 0, -1, -2, -3, -4


def _pack(value: Any, shape: list[int], leaves: list[Any]) -> None:
    kind = type(value)
    if kind in _ATOMS:
        shape.append(_LEAF)
        leaves.append(value)
        return
    tag = _TAGS.get(kind)
    if tag is not None:
        shape.append(tag + 1)
        for name in _FIELDS[tag]:
            _pack(getattr(value, name), shape, leaves)
        return
    if kind is tuple or kind is list:
        shape += (_TUPLE if kind is tuple else _LIST, len(value))
        for v in value:
            _pack(v, shape, leaves)
        return
    if kind is MappingProxyType or kind is dict:
        shape += (_PROXY if kind is MappingProxyType else _DICT, len(value))
        for k, v in value.items():
            _pack(k, shape, leaves)
            _pack(v, shape, leaves)
        return
    raise _Unheld(kind)


def _unpack(shape: tuple[int, ...], leaves: tuple[Any, ...], at: int, leaf: int) -> Any:
    """The value whose shape starts at ``shape[at]`` and leaves at ``leaves[leaf]``, and
    where the next value's start."""
    code = shape[at]
    if code == _LEAF:
        return leaves[leaf], at + 1, leaf + 1
    if code > 0:
        made: Any = object.__new__(_CLASSES[code - 1])
        at += 1
        for setter in _SETTERS[code - 1]:
            v, at, leaf = _unpack(shape, leaves, at, leaf)
            setter(made, v)
        return made, at, leaf
    n, at = shape[at + 1], at + 2
    items = []
    for _ in range(n * (2 if code in (_PROXY, _DICT) else 1)):
        v, at, leaf = _unpack(shape, leaves, at, leaf)
        items.append(v)
    if code == _TUPLE:
        return tuple(items), at, leaf
    if code == _LIST:
        return items, at, leaf
    pairs = dict(zip(items[::2], items[1::2], strict=True))
    return (MappingProxyType(pairs) if code == _PROXY else pairs), at, leaf

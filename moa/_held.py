"""A finished run as ``run_many`` holds it until the batch ends: a pair of atoms.

The garbage collector's full collections scan every object it tracks, and a batch's finished
results are most of them: a RunResult is 16 tracked objects (its History, StepRecords,
CallRecords, messages and their tuples), scanned again at every full collection while the
batch goes on. A tuple holding only str, int, float, bool and None is one the collector stops
tracking, so :func:`packed` turns a result into a pair (the number of its shape in the
batch's :class:`Forms`, a flat tuple of its leaves) and :func:`unpacked_all` builds equal
results back, once, when the batch hands them over. Measured with ``benchmarks/load.py``: at
100,000 runs the rescans cost ~470 µs of CPU a held result.

A result holding anything else (an exception, a :class:`~moa.Response`, a custom step's
own objects) is held as it is.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import fields
from types import MappingProxyType
from typing import Any, TypeVar

from ._history import CallRecord, History, StepRecord
from ._response import Confidence

__all__ = ("Forms", "holds", "packed", "unpacked", "unpacked_all")

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


class Forms:
    """The shapes a batch's results were held in, each an int a held result names (an atom:
    the pair stays untracked). A shape met twice gets code of its own, compiled once, that
    takes a result of that shape apart and builds one back in straight lines: ~5x faster
    than walking the shape, and most of a batch's results share one or two shapes. At most
    :data:`COMPILED` shapes are compiled; any others are walked."""

    __slots__ = ("_compiled", "_last", "_seen", "codes", "shapes")

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []
        self.codes: list[_Code | None] = []
        self._seen: dict[tuple[int, ...], int] = {}
        self._last: int | None = None  # the form the last result had: the next one's guess
        self._compiled = 0  # shapes tried, compiled or not

    def number(self, shape: tuple[int, ...]) -> int:
        k = self._seen.get(shape)
        if k is None:
            k = self._seen[shape] = len(self.shapes)
            self.shapes.append(shape)
            self.codes.append(None)
        elif self.codes[k] is None and self._compiled < COMPILED:
            self._compiled += 1
            try:
                self.codes[k] = _compiled(shape)
            except (RecursionError, SyntaxError, MemoryError):  # too deep to compile: walked
                pass
        self._last = k
        return k


COMPILED = 32


def packed(result: Any, forms: Forms) -> Any:
    """``result`` as a pair of atoms (its form's number in ``forms``, a flat tuple of its
    leaves), or ``result`` itself where it holds anything else. Flat: the collector untracks
    a tuple of atoms at its first look, where nested tuples would take it a collection a
    level."""
    if getattr(result, "error", None) is not None:  # an exception is held as it is
        return result
    last = forms._last
    code = None if last is None else forms.codes[last]
    if code is not None:
        try:
            return (last, code.leaves(result))
        except _Unheld:
            pass  # another shape: walked below
    shape: list[int] = []
    leaves: list[Any] = []
    try:
        _pack(result, shape, leaves)
    except _Unheld:
        return result
    return (forms.number(tuple(shape)), tuple(leaves))


def unpacked(held: Any, forms: Forms) -> Any:
    """The result :func:`packed` held, equal to the one it was given (``compare=False``
    fields too)."""
    if type(held) is not tuple:
        return held
    k, leaves = held
    code = forms.codes[k]
    if code is not None:
        return code.build(leaves)
    value, _, _ = _unpack(forms.shapes[k], leaves, 0, 0)
    return value


def unpacked_all(held: list[Any], forms: Forms) -> None:
    """Every result of ``held`` built back, in place (each held form freed as its result is
    made). The collector is paused meanwhile, as :mod:`timeit` pauses it: every object made
    here lives on, so a collection finds nothing to free, yet the 16 objects of each new
    result would be scanned by the young collections and move up through them (measured at
    10,000 results: 0.40 s with the collector, 0.11 s without). A loop with no await and no
    user code, so nothing else in this thread runs while it is paused; it resumes after."""
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        for i, r in enumerate(held):
            held[i] = unpacked(r, forms)
    finally:
        if paused:
            gc.enable()


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


# -- compiled forms ------------------------------------------------------------------------------
class _Code:
    """One shape's two functions: ``leaves(value)`` (raises _Unheld for a value of another
    shape) and ``build(leaves)``."""

    __slots__ = ("build", "leaves")

    def __init__(self, leaves: Callable[[Any], tuple[Any, ...]], build: Callable[..., Any]):
        self.leaves = leaves
        self.build = build


_KINDS = {_TUPLE: tuple, _LIST: list, _PROXY: MappingProxyType, _DICT: dict}


def _compiled(shape: tuple[int, ...]) -> _Code:
    """The shape's functions, written out as source and compiled: dataclasses writes its
    ``__init__`` the same way."""
    w = _Writer(shape)
    end, top = w.value(0, "v0")
    assert end == len(shape)
    source = (
        "def leaves(v0):\n"
        + "".join(f"    {line}\n" for line in w.take)
        + "    return ("
        + "".join(f"{v}, " for v in w.out)
        + ")\n"
        + "def build(L):\n"
        + "".join(f"    {line}\n" for line in w.make)
        + f"    return {top}\n"
    )
    exec(compile(source, f"<moa._held form of {len(w.out)} leaves>", "exec"), w.names)
    return _Code(w.names["leaves"], w.names["build"])


class _Writer:
    """Writes a shape's two functions, one value at a time: the lines of ``leaves(v0)``
    (``take``: each value checked, then its parts named), the lines of ``build(L)``
    (``make``), the leaves' names in order (``out``), and the names the code uses."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape
        self.take: list[str] = []
        self.make: list[str] = []
        self.out: list[str] = []
        self.names: dict[str, Any] = {"A": frozenset(_ATOMS), "M": _Unheld, "new": object.__new__}
        self.names["MP"] = MappingProxyType
        self._n = 0

    def fresh(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n}"

    def value(self, at: int, var: str) -> tuple[int, str]:
        """Writes the code for the value at ``shape[at]``, held in ``var`` when taken apart;
        returns where the next value starts and the expression that builds this one."""
        code = self.shape[at]
        if code == _LEAF:
            self.take.append(f"if type({var}) not in A: raise M")
            self.out.append(var)
            return at + 1, f"L[{len(self.out) - 1}]"
        if code > 0:
            return self.instance(code - 1, at + 1, var)
        n, at = self.shape[at + 1], at + 2
        kind = _KINDS[code]
        self.names[kind.__name__] = kind
        self.take.append(f"if type({var}) is not {kind.__name__} or len({var}) != {n}: raise M")
        if code in (_PROXY, _DICT):
            return self.mapping(code, n, at, var)
        exprs = []
        for i in range(n):
            sub = self.fresh("v")
            self.take.append(f"{sub} = {var}[{i}]")
            at, expr = self.value(at, sub)
            exprs.append(expr)
        if code == _TUPLE:
            return at, "(" + "".join(e + ", " for e in exprs) + ")"
        return at, "[" + ", ".join(exprs) + "]"

    def instance(self, tag: int, at: int, var: str) -> tuple[int, str]:
        self.names[f"C{tag}"] = _CLASSES[tag]
        self.take.append(f"if type({var}) is not C{tag}: raise M")
        made = self.fresh("o")
        sets = []
        for i, name in enumerate(_FIELDS[tag]):
            sub = self.fresh("v")
            self.take.append(f"{sub} = {var}.{name}")
            at, expr = self.value(at, sub)
            self.names[f"S{tag}_{i}"] = _SETTERS[tag][i]
            sets.append(f"S{tag}_{i}({made}, {expr})")
        self.make.append(f"{made} = new(C{tag})")  # after its fields' objects are made
        self.make.extend(sets)
        return at, made

    def mapping(self, code: int, n: int, at: int, var: str) -> tuple[int, str]:
        items = self.fresh("v")
        self.take.append(f"{items} = tuple({var}.items())")
        pairs = []
        for i in range(n):
            key, val = self.fresh("v"), self.fresh("v")
            self.take.append(f"{key}, {val} = {items}[{i}]")
            at, k_expr = self.value(at, key)
            at, v_expr = self.value(at, val)
            pairs.append(f"{k_expr}: {v_expr}")
        made = "{" + ", ".join(pairs) + "}"
        return at, (f"MP({made})" if code == _PROXY else made)

"""The quality-per-cost chart of an eval: accuracy (with its Wilson interval) against what a
task cost, each contender a point, the frontier drawn through the ones nothing beats. SVG is
written by hand (no dependency); PNG needs matplotlib."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import NamedTuple
from xml.sax.saxutils import escape

__all__ = ("Point", "frontier_png", "frontier_svg")


class Point(NamedTuple):
    """One contender on the chart: its accuracy and Wilson interval at its cost per task."""

    name: str
    x: float
    accuracy: float
    low: float
    high: float
    on_frontier: bool


_W, _H = 900, 480
_LEFT, _RIGHT, _TOP, _BOTTOM = 70, 370, 40, 60


def _axis_label(axis: str) -> str:
    return "$ per task" if axis == "cost" else "calls per task"


def frontier_svg(points: Sequence[Point], axis: str, tasks: int, note: str = "") -> str:
    """The chart as an SVG document: ``axis`` is ``"cost"`` or ``"calls"``; ``note`` is added
    to the title. The legend names every contender; the page grows to hold it."""
    xmax = max(p[1] for p in points) or 1.0
    pw, ph = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM

    def sx(x: float) -> float:
        return _LEFT + pw * x / (xmax * 1.05)

    def sy(y: float) -> float:
        return _TOP + ph * (1 - y)

    height = max(_H, _TOP + 16 * len(points) + 24)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{_W}" height="{height}" fill="white"/>',
        f'<text x="{_LEFT}" y="22" font-size="14">Accuracy against {_axis_label(axis)} '
        f"({tasks} tasks, 95 % Wilson intervals){escape(note)}</text>",
        f'<line x1="{_LEFT}" y1="{sy(0)}" x2="{_LEFT + pw}" y2="{sy(0)}" stroke="black"/>',
        f'<line x1="{_LEFT}" y1="{sy(0)}" x2="{_LEFT}" y2="{sy(1)}" stroke="black"/>',
    ]
    for tick in range(0, 101, 20):
        y = sy(tick / 100)
        out.append(f'<line x1="{_LEFT - 4}" y1="{y}" x2="{_LEFT + pw}" y2="{y}" stroke="#ddd"/>')
        out.append(f'<text x="{_LEFT - 8}" y="{y + 4}" text-anchor="end">{tick} %</text>')
    for i in range(5):
        x = xmax * 1.05 * i / 4
        unit = "$" if axis == "cost" else ""
        out.append(f'<text x="{sx(x)}" y="{sy(0) + 18}" text-anchor="middle">{unit}{x:.2g}</text>')
    out.append(
        f'<text x="{_LEFT + pw / 2}" y="{_H - 16}" text-anchor="middle">{_axis_label(axis)}</text>'
    )
    front = sorted((p for p in points if p[5]), key=lambda p: p[1])
    if len(front) > 1:
        path = " ".join(f"{sx(p[1]):.1f},{sy(p[2]):.1f}" for p in front)
        out.append(f'<polyline points="{path}" fill="none" stroke="#1f77b4" stroke-width="2"/>')
    for i, (name, x, y, lo, hi, on_front) in enumerate(points, 1):
        colour = "#1f77b4" if on_front else "#888"
        out.append(
            f'<line x1="{sx(x):.1f}" y1="{sy(lo):.1f}" x2="{sx(x):.1f}" y2="{sy(hi):.1f}" '
            f'stroke="{colour}"/>'
        )
        out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="4" fill="{colour}"/>')
        out.append(f'<text x="{sx(x) + 6:.1f}" y="{sy(y) - 6:.1f}" fill="{colour}">{i}</text>')
        out.append(
            f'<text x="{_W - _RIGHT + 12}" y="{_TOP + 16 * i}" fill="{colour}">'
            f"{i}. {escape(name[:56])} ({100 * y:.1f} %)</text>"
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def frontier_png(points: Sequence[Point], axis: str, tasks: int, path: str) -> None:
    """The chart as a PNG at ``path``; ImportError naming the extra without matplotlib."""
    try:
        importlib.import_module("matplotlib")
        importlib.import_module("matplotlib").use("Agg")
        plt = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        raise ImportError(
            "a PNG chart needs matplotlib (pip install matplotlib); or save it as .svg"
        ) from None
    fig, ax = plt.subplots(figsize=(8, 5))
    front = sorted((p for p in points if p[5]), key=lambda p: p[1])
    ax.plot([p[1] for p in front], [100 * p[2] for p in front], "-", color="#1f77b4")
    for name, x, y, lo, hi, on_front in points:
        colour = "#1f77b4" if on_front else "#888888"
        ax.errorbar(
            [x], [100 * y], yerr=[[100 * (y - lo)], [100 * (hi - y)]], fmt="o", color=colour
        )
        ax.annotate(name[:30], (x, 100 * y), textcoords="offset points", xytext=(5, 5))
    ax.set_xlabel(_axis_label(axis))
    ax.set_ylabel("accuracy %")
    ax.set_ylim(0, 100)
    ax.set_title(f"Accuracy against {_axis_label(axis)} ({tasks} tasks)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

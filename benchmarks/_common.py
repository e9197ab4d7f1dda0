"""What every benchmark prints above its figures: the command, Python, the machine, the date,
the moa commit (with uncommitted changes under moa/), and the versions that matter.

Kept apart from the scripts so each one prints the same header. Also the pipeline that
``overhead.py`` and ``critical_path.py`` both time, and mixture-llm (the seed) running it.
"""

from __future__ import annotations

import datetime
import importlib
import io
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Run from a checkout without installing: the repository root holds the moa package.
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def pkg_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def moa_revision() -> str:
    """The checkout's commit, and whether moa/ differs from it: the figures belong to it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "moa"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.rstrip("\n")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    if not dirty:
        return commit
    paths = [line[3:] for line in dirty.splitlines()]
    shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
    return f"{commit} + uncommitted changes: {shown}"


def print_header(
    *extra: str, packages: tuple[str, ...] = ("anyio", "tenacity", "mixture-llm")
) -> None:
    import moa

    print(f"command : {' '.join([os.path.basename(sys.executable)] + sys.argv)}")
    print(f"python  : {platform.python_implementation()} {platform.python_version()}")
    print(f"machine : {platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs")
    print(f"date    : {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"moa     : {moa.__version__} at {moa_revision()}")
    print("versions: " + ", ".join(f"{p} {pkg_version(p) or 'not installed'}" for p in packages))
    for line in extra:
        print(line)
    print(flush=True)


#: The pipeline overhead.py and critical_path.py time, as
#: ``Propose(MODELS) | Synthesize(MODELS) | Synthesize(MODELS) | Aggregate(AGGREGATOR)``.
MODELS = [f"model-{i}" for i in range(6)]
AGGREGATOR = "model-agg"
PROMPT = "What is the capital of France? Answer in one word."


def seed_contender() -> tuple[str, Callable[[Any], Awaitable[str]]] | None:
    """mixture-llm running that pipeline on a client, named; None when it is not installed."""
    try:
        import mixture_llm
    except ImportError:
        return None
    original = [
        mixture_llm.Propose(MODELS),
        mixture_llm.Synthesize(MODELS),
        mixture_llm.Synthesize(MODELS),
        mixture_llm.Aggregate(AGGREGATOR),
    ]

    async def original_run(client: Any) -> str:
        text, _ = await mixture_llm.run(original, PROMPT, client)
        return str(text)

    return "mixture-llm", original_run


SEED_MISSING = (
    "seed: mixture_llm is not installed; its column is skipped. Install it with "
    "`pip install mixture-llm` (on Python 3.11 pip picks 0.1.3, whose core matches "
    "0.1.5)"
)


def quantile(xs: list[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation between order statistics."""
    s = sorted(xs)
    if len(s) == 1:
        return s[0]
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def moa_at(revision: str) -> tuple[Any, str]:
    """moa as it was at git ``revision``, imported beside this checkout's under a name of its
    own (``moa_at_<commit>``), so both run in one process and one event loop: a before/after
    comparison on the same machine at the same moment. Returns the module and its short
    commit. The package's own imports are relative, so a renamed copy runs as itself."""
    short = subprocess.run(
        ["git", "rev-parse", "--short", revision],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "archive", revision, "moa"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    folder = tempfile.mkdtemp(prefix="moa-at-")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    name = f"moa_at_{short}"
    os.rename(os.path.join(folder, "moa"), os.path.join(folder, name))
    sys.path.insert(0, folder)
    return importlib.import_module(name), short

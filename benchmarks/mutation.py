"""Mutation score: how many small, deliberate bugs in moa's code the tests catch, by mutmut.

mutmut (pinned: ``pip install mutmut==3.8.1``) makes the mutants, picks for each one the tests
that reach its function, runs them under a time limit and keeps the verdicts. Its settings are
``[tool.mutmut]`` in pyproject.toml; this script runs it on a fresh copy of the checkout (the
working tree and its ``mutants/`` are never touched), with ``--files`` and ``--tests`` in place of
``only_mutate`` and ``pytest_add_cli_args_test_selection`` where given, and prints the header
every benchmark prints, the counts, the score and the survivors. A survivor is a gap in the
tests or a change no test can see; ``--diff`` prints each one's diff for a person to judge.
Mutant names are mutmut's (``moa._select.xǁMajorityǁplan__mutmut_3``); ``--mutants`` globs of
them run only those. mutmut mutates inside functions only, and calls a mutant that stops the
tests from being collected (a module-level ``Majority(...)`` that raises) a timeout: caught.

    python benchmarks/mutation.py
    python benchmarks/mutation.py --files moa/_transforms.py --tests tests/test_builtin_laws.py \\
        tests/test_laws.py tests/test_steps.py tests/test_randomness.py --diff
    python benchmarks/mutation.py --files moa/_select.py --mutants 'moa._select.xǁMajorityǁ*'
    python benchmarks/mutation.py --keep /tmp/mut    # then: cd /tmp/mut && mutmut browse
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: What the copy holds: enough for any test in tests/ that does not need the network.
COPIED = ("moa", "tests", "pyproject.toml", "README.md", "docs", "examples")
SECTION = re.compile(r"^\[tool\.mutmut\]\n.*?(?=^\[|\Z)", re.M | re.S)


def configured(pyproject: str, files: list[str] | None, tests: list[str] | None) -> str:
    """pyproject.toml's text with its [tool.mutmut] section at the end, overridden."""
    config = tomllib.loads(pyproject).get("tool", {}).get("mutmut")
    if config is None:
        raise SystemExit("pyproject.toml has no [tool.mutmut] section: see benchmarks/README.md")
    if files:
        config["only_mutate"] = files
    if tests:
        config["pytest_add_cli_args_test_selection"] = tests
    lines = [f"{key} = {json.dumps(value, ensure_ascii=False)}" for key, value in config.items()]
    return SECTION.sub("", pyproject).rstrip() + "\n\n[tool.mutmut]\n" + "\n".join(lines) + "\n"


def mutmut(work: str, *args: str, log: str | None = None) -> subprocess.CompletedProcess[str]:
    # `mutmut`, not `python -m mutmut`: mutmut warns that -m runs its module twice.
    exe = os.path.join(os.path.dirname(sys.executable), "mutmut")
    command = [exe if os.path.exists(exe) else "mutmut", *args]
    if log is None:
        return subprocess.run(command, cwd=work, capture_output=True, text=True, check=True)
    with open(log, "w") as out:  # its progress line, redrawn per mutant
        return subprocess.run(command, cwd=work, stdout=out, stderr=subprocess.STDOUT, text=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", nargs="+", metavar="FILE", help="the files to mutate")
    ap.add_argument("--tests", nargs="+", metavar="TEST", help="the pytest paths to run")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="mutants at once")
    ap.add_argument("--keep", metavar="DIR", help="work in DIR (new) and keep it for mutmut")
    ap.add_argument("--mutants", nargs="+", default=[], metavar="GLOB", help="only these")
    ap.add_argument("--diff", action="store_true", help="print each survivor's diff")
    args = ap.parse_args(argv)
    if importlib.util.find_spec("mutmut") is None:
        raise SystemExit("mutmut is not installed: pip install mutmut==3.8.1")

    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        pyproject = configured(f.read(), args.files, args.tests)
    work = args.keep or tempfile.mkdtemp(prefix="moa-mutation-")
    os.makedirs(work, exist_ok=True)
    if os.listdir(work):
        raise SystemExit(f"{work} is not empty: mutmut would reuse the verdicts kept there")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", ".pytest_cache")
    for name in COPIED:
        src = os.path.join(ROOT, name)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(work, name), ignore=ignore)
        elif os.path.exists(src):
            shutil.copy2(src, work)
    with open(os.path.join(work, "pyproject.toml"), "w") as f:
        f.write(pyproject)

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _common import print_header

    section = pyproject[pyproject.index("[tool.mutmut]") :].strip().splitlines()[1:]
    print_header(*("mutmut  : " + s for s in section), packages=("mutmut", "pytest", "hypothesis"))
    log = os.path.join(work, "mutmut-run.log")
    start = time.monotonic()
    run = mutmut(work, "run", "--max-children", str(args.jobs), *args.mutants, log=log)
    seconds = time.monotonic() - start
    if run.returncode:
        with open(log, errors="replace") as f:
            print(f.read().replace("\r", "\n")[-4000:], file=sys.stderr)
        print(f"mutmut run failed ({run.returncode}); its log: {log}", file=sys.stderr)
        return run.returncode

    status = {}  # `mutmut results` lists "    NAME: STATUS"; a fresh copy holds only this run's
    for line in mutmut(work, "results", "--all", "true").stdout.splitlines():
        name, _, verdict = line.strip().rpartition(": ")
        if name and verdict != "not checked":
            status[name] = verdict
    count = {v: sum(s == v for s in status.values()) for v in sorted(set(status.values()))}
    caught = count.get("killed", 0) + count.get("timeout", 0) + count.get("caught by type check", 0)
    tested = len(status) - count.get("skipped", 0)
    print(
        f"summary : {len(status)} mutants in {seconds:.0f} s, {args.jobs} at a time: "
        + ", ".join(f"{n} {v}" for v, n in count.items())
    )
    score = 100 * caught / max(tested, 1)
    print(f"score   : {score:.1f}% caught (killed or timed out, of those tested)")
    caught_or_skipped = ("killed", "timeout", "skipped", "caught by type check")
    survivors = sorted(n for n, v in status.items() if v not in caught_or_skipped)
    for name in survivors:
        print(f"  {status[name]}: {name}")
        if args.diff:
            print(mutmut(work, "show", name).stdout)
    if args.keep:
        print(f"kept    : cd {work} && mutmut show NAME (or mutmut browse)")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

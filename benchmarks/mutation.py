"""Mutation score: how many small, deliberate bugs in moa's code the tests catch.

Each mutant changes one spot of one source file: a comparison operator swapped (``<`` for
``<=``, ``==`` for ``!=``, ``in`` for ``not in``), ``and`` for ``or``, a ``not`` dropped, an
integer constant moved by one, ``+`` for ``-``, ``rng.sample(x, k)`` made ``x[:k]`` and
``rng.choice(x)`` made ``x[0]``, a returned call replaced by its first argument, or a statement
removed (made ``pass``). The mutant is written into a temporary copy of the repository (the
working tree is never touched) and the chosen tests run there, stopping at the first failure
(``pytest -x``), under a time limit per mutant. A mutant is *killed* when the tests fail,
*survives* when they pass, and *times out* when they run past the limit (counted as caught:
the bug made the tests hang). A survivor is either a gap in the tests or an equivalent mutant
(a change no test could see, ``>=`` for ``>`` on a float drawn from a continuum); its line,
its change and a command to show its diff are printed for a person to judge.

    python benchmarks/mutation.py                                  # the default files and tests
    python benchmarks/mutation.py --files moa/_transforms.py --tests tests/test_randomness.py \\
        tests/test_builtin_laws.py --max-mutants 40 --seed 0
    python benchmarks/mutation.py --files 'moa/_llm_steps.py:Pick,Vote.plan' --list
    python benchmarks/mutation.py --files moa/_transforms.py --only 7 --diff

A file may be limited to some classes and functions, ``FILE:QUALNAME,...`` (a qualname names a
class, a function or a method, ``Vote.plan``, and covers what is inside it). Mutants are
numbered in source order per run of ``--files``; ``--max-mutants`` samples that many with
``--seed``, so a run is reproducible, and Hypothesis runs with ``--hypothesis-seed`` set to the
same seed. Only the standard library and the project's own test dependencies are used.
"""

from __future__ import annotations

import argparse
import ast
import copy
import difflib
import importlib.util
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: The files mutated by default: the transforms, the pipeline algebra, the expression parser,
#: and the selection logic of the LLM steps (the rest of that file builds messages).
DEFAULT_FILES = (
    "moa/_transforms.py",
    "moa/_pipeline.py",
    "moa/_parse.py",
    "moa/_llm_steps.py:Vote.plan,Vote._answer,Pick.plan,Rank.combine,parse_pick,"
    "parse_ranking,_valid",
)
#: A fast subset that covers those files: property laws, each step's behaviour, the parser.
DEFAULT_TESTS = (
    "tests/test_randomness.py",
    "tests/test_builtin_laws.py",
    "tests/test_steps.py",
    "tests/test_selection.py",
    "tests/test_pipeline.py",
    "tests/test_parse.py",
    "tests/test_laws.py",
)
#: What the copy holds: enough for any test in tests/ that does not need the network.
COPIED = ("moa", "tests", "pyproject.toml", "README.md", "docs", "examples")


# -- mutants ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Mutant:
    """One change to one file: the bytes ``start:end`` of ``path`` replaced by ``new``."""

    path: str
    line: int
    start: int
    end: int
    old: str
    new: str
    kind: str

    def apply(self, source: bytes) -> bytes:
        return source[: self.start] + self.new.encode() + source[self.end :]

    def describe(self, width: int = 70) -> str:
        return f"{self.kind}: {_short(self.old, width // 2)} -> {_short(self.new, width // 2)}"


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


_COMPARE_SWAPS: dict[type, type] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
}
_BOOL_SWAPS: dict[type, type] = {ast.And: ast.Or, ast.Or: ast.And}
_ARITH_SWAPS: dict[type, type] = {ast.Add: ast.Sub, ast.Sub: ast.Add}
#: Statements worth removing; a def, a class, ``pass`` or a docstring is not.
_REMOVABLE = (
    ast.Expr,
    ast.Assign,
    ast.AugAssign,
    ast.AnnAssign,
    ast.Return,
    ast.Raise,
    ast.If,
    ast.For,
    ast.While,
    ast.With,
    ast.Try,
    ast.Assert,
    ast.Delete,
)


def _expression_changes(node: ast.AST) -> Iterator[tuple[str, ast.AST]]:
    """``(kind, new node)`` for each mutation of one expression node."""
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            if type(op) in _COMPARE_SWAPS:
                new = copy.deepcopy(node)
                new.ops[i] = _COMPARE_SWAPS[type(op)]()
                yield "compare", new
    elif isinstance(node, ast.BoolOp) and type(node.op) in _BOOL_SWAPS:
        yield "boolean", ast.BoolOp(op=_BOOL_SWAPS[type(node.op)](), values=node.values)
    elif isinstance(node, ast.BinOp) and type(node.op) in _ARITH_SWAPS:
        yield (
            "arithmetic",
            ast.BinOp(left=node.left, op=_ARITH_SWAPS[type(node.op)](), right=node.right),
        )
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        yield "drop not", node.operand
    elif isinstance(node, ast.Constant) and type(node.value) is int:
        for delta in (1, -1):
            yield "constant", ast.Constant(node.value + delta)
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and not node.keywords:
        # The random draws: a sample that is the first k, a choice that is the first.
        if node.func.attr == "sample" and len(node.args) == 2:
            yield "no randomness", ast.Subscript(node.args[0], ast.Slice(upper=node.args[1]))
        elif node.func.attr == "choice" and len(node.args) == 1:
            yield "no randomness", ast.Subscript(node.args[0], ast.Constant(0))


class _Sites(ast.NodeVisitor):
    """Every mutation of a module, optionally only inside some qualnames. Statements are
    removed only inside functions; annotations, docstrings, f-strings (messages, not logic),
    decorators and ``__all__`` are left alone."""

    def __init__(self, path: str, source: bytes, scopes: tuple[str, ...]) -> None:
        self.path = path
        self.source = source
        self.scopes = scopes
        self.stack: list[ast.AST] = []
        starts = [0]
        for line in source.splitlines(keepends=True):
            starts.append(starts[-1] + len(line))
        self.starts = starts
        self.found: list[Mutant] = []

    def _in_scope(self) -> bool:
        if not self.scopes:
            return True
        here = ".".join(n.name for n in self.stack)  # type: ignore[attr-defined]
        return any(here == s or here.startswith(s + ".") for s in self.scopes)

    def _in_function(self) -> bool:
        return bool(self.stack) and not isinstance(self.stack[-1], ast.ClassDef)

    def _add(self, node: ast.AST, kind: str, new: str) -> None:
        start = self.starts[node.lineno - 1] + node.col_offset  # type: ignore[attr-defined]
        end = self.starts[node.end_lineno - 1] + node.end_col_offset  # type: ignore[attr-defined]
        old = self.source[start:end].decode()
        self.found.append(Mutant(self.path, node.lineno, start, end, old, new, kind))  # type: ignore[attr-defined]

    def visit(self, node: ast.AST) -> None:
        if isinstance(node, ast.expr) and self._in_scope():
            for kind, new in _expression_changes(node):
                self._add(node, kind, f"({ast.unparse(new)})")
        super().visit(node)

    def generic_visit(self, node: ast.AST) -> None:
        for _, value in ast.iter_fields(node):
            if isinstance(value, list) and value and all(isinstance(v, ast.stmt) for v in value):
                self._block(value)
                continue
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, ast.AST):
                    self.visit(item)

    def _block(self, body: list[ast.stmt]) -> None:
        if (
            body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            body = body[1:]  # a docstring
        for stmt in body:
            if isinstance(stmt, _REMOVABLE) and self._in_function() and self._in_scope():
                self._add(stmt, "remove statement", "pass")
            self.visit(stmt)

    def _definition(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        if isinstance(node, ast.ClassDef):
            for base in node.bases:
                self.visit(base)
        else:
            for default in [*node.args.defaults, *(d for d in node.args.kw_defaults if d)]:
                self.visit(default)
        self.stack.append(node)
        self._block(node.body)
        self.stack.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _definition

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        pass

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)

    def visit_Assign(self, node: ast.Assign) -> None:
        if not any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            self.generic_visit(node)

    def visit_Return(self, node: ast.Return) -> None:
        if (
            isinstance(node.value, ast.Call)
            and node.value.args
            and self._in_scope()
            and not isinstance(node.value.args[0], ast.Starred)
        ):
            self._add(node, "return first argument", "return " + ast.unparse(node.value.args[0]))
        self.generic_visit(node)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def parse_target(target: str) -> tuple[str, tuple[str, ...]]:
    """``FILE`` or ``FILE:QUALNAME,...`` as the path and the qualnames (none: all of it)."""
    path, _, scopes = target.partition(":")
    return path, tuple(s for s in scopes.split(",") if s)


def qualnames(path: str) -> set[str]:
    """The dotted names of the classes and functions defined in a file."""
    found: set[str] = set()

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                found.add(prefix + child.name)
                walk(child, prefix + child.name + ".")
            else:
                walk(child, prefix)

    walk(ast.parse(_read(os.path.join(ROOT, path)), path), "")
    return found


def mutants_of(target: str) -> list[Mutant]:
    """Every valid mutant of the target, in source order. A mutant that does not compile or
    changes nothing is left out; a qualname the file does not define is an error."""
    path, scopes = parse_target(target)
    missing = sorted(set(scopes) - qualnames(path))
    if missing:
        raise SystemExit(f"{path} defines no class or function named {', '.join(missing)}")
    source = _read(os.path.join(ROOT, path))
    sites = _Sites(path, source, scopes)
    sites.visit(ast.parse(source, path))
    out, seen = [], set()
    for m in sorted(sites.found, key=lambda m: (m.start, m.end, m.kind, m.new)):
        mutated = m.apply(source)
        if mutated == source or mutated in seen:
            continue
        try:
            compile(mutated, path, "exec")
        except SyntaxError:
            continue
        seen.add(mutated)
        out.append(m)
    return out


# -- running ------------------------------------------------------------------------------------
@dataclass
class Outcome:
    mutant: Mutant
    number: int
    result: str  # "killed", "survived", "timed out"
    seconds: float
    failed: str = ""


def copy_repository(into: str) -> None:
    """The parts of the checkout the tests need, without caches or bytecode."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", ".pytest_cache")
    for name in COPIED:
        src = os.path.join(ROOT, name)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(into, name), ignore=ignore)
        elif os.path.exists(src):
            shutil.copy2(src, into)


def pytest_command(tests: list[str], seed: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pytest",
        "-x",
        "-q",
        "-p",
        "no:cacheprovider",
        "-m",
        "not local",
        f"--hypothesis-seed={seed}",
        *tests,
    ]


def run_tests(
    copy_root: str, tests: list[str], seed: int, timeout: float
) -> tuple[str, float, str]:
    """``(result, seconds, first failure)`` of the tests in the copy."""
    env = {**os.environ, "PYTHONPATH": copy_root, "PYTHONDONTWRITEBYTECODE": "1"}
    start = time.monotonic()
    proc = subprocess.Popen(
        pytest_command(tests, seed),
        cwd=copy_root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # pytest and anything it started
        proc.communicate()
        return "timed out", time.monotonic() - start, ""
    seconds = time.monotonic() - start
    failed = next(
        (
            line.split(" ", 1)[1]
            for line in out.splitlines()
            if line.startswith(("FAILED ", "ERROR "))
        ),
        "",
    )
    if proc.returncode == 0:
        return "survived", seconds, ""
    if not failed:
        failed = (out.strip().splitlines() or ["(no output)"])[-1]
    return "killed", seconds, failed


class Worker:
    """A private copy of the repository that runs one mutant at a time."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="moa-mutation-")
        copy_repository(self.dir)

    def run(
        self, number: int, mutant: Mutant, tests: list[str], seed: int, timeout: float
    ) -> Outcome:
        target = os.path.join(self.dir, mutant.path)
        original = _read(target)
        try:
            with open(target, "wb") as f:
                f.write(mutant.apply(original))
            result, seconds, failed = run_tests(self.dir, tests, seed, timeout)
        finally:
            with open(target, "wb") as f:
                f.write(original)
        return Outcome(mutant, number, result, seconds, failed)

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def print_header(*extra: str) -> None:
    """The benchmarks' header (command, Python, machine, date, moa commit, versions)."""
    spec = importlib.util.spec_from_file_location(
        "_benchmarks_common", os.path.join(ROOT, "benchmarks", "_common.py")
    )
    common = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(common)  # type: ignore[union-attr]
    common.print_header(*extra, packages=("pytest", "hypothesis"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--files",
        nargs="+",
        default=list(DEFAULT_FILES),
        metavar="FILE[:QUALNAMES]",
        help="source files to mutate, relative to the repository root",
    )
    ap.add_argument(
        "--tests",
        nargs="+",
        default=list(DEFAULT_TESTS),
        metavar="TEST",
        help="pytest paths (or node ids) run against each mutant",
    )
    ap.add_argument(
        "--max-mutants",
        type=int,
        default=40,
        metavar="N",
        help="sample at most N mutants (default 40; 0 for all)",
    )
    ap.add_argument(
        "--seed", type=int, default=0, help="seeds the sample of mutants and Hypothesis (default 0)"
    )
    ap.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="per mutant (default: 3x the unmutated run, at least 30 s)",
    )
    ap.add_argument(
        "--time-budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help="start no mutant after this long; the rest are reported not run",
    )
    ap.add_argument("--jobs", type=int, default=1, help="mutants run at once (default 1)")
    ap.add_argument(
        "--only",
        type=lambda s: [int(x) for x in s.split(",")],
        default=None,
        metavar="N,N",
        help="run just these mutant numbers (see --list)",
    )
    ap.add_argument("--list", action="store_true", help="list the mutants and run nothing")
    ap.add_argument("--diff", action="store_true", help="print each run mutant's diff")
    ap.add_argument(
        "--fail-under",
        type=float,
        default=None,
        metavar="PERCENT",
        help="exit 1 when the score is below this",
    )
    args = ap.parse_args(argv)

    numbered: list[tuple[int, Mutant]] = []
    per_file = []
    for target in args.files:
        found = mutants_of(target)
        per_file.append(f"{target}: {len(found)}")
        numbered += [(len(numbered) + i + 1, m) for i, m in enumerate(found)]
    if args.only is not None:
        chosen = [nm for nm in numbered if nm[0] in set(args.only)]
    elif args.max_mutants and len(numbered) > args.max_mutants:
        chosen = sorted(
            random.Random(args.seed).sample(numbered, args.max_mutants), key=lambda nm: nm[0]
        )
    else:
        chosen = numbered

    print_header(
        f"mutants : {', '.join(per_file)}",
        f"tests   : {' '.join(args.tests)}",
        f"sample  : {len(chosen)} of {len(numbered)} mutants, seed {args.seed}",
    )
    if args.list:
        for number, m in chosen:
            print(f"{number:4}  {m.path}:{m.line}  {m.describe()}")
        return 0

    worker = Worker()
    try:
        result, baseline, failed = run_tests(
            worker.dir, args.tests, args.seed, timeout=args.timeout or 1800
        )
        if result != "survived":
            print(
                f"the tests fail without any mutant ({result}: {failed}); fix them first",
                file=sys.stderr,
            )
            return 2
        timeout = args.timeout or max(30.0, 3 * baseline)
        print(
            f"baseline: the tests pass unmutated in {baseline:.1f} s; limit {timeout:.0f} s "
            f"a mutant, {args.jobs} at a time\n",
            flush=True,
        )
        outcomes = run_all(chosen, args, timeout, worker)
    finally:
        worker.close()
    return report(outcomes, chosen, args)


def run_all(
    chosen: list[tuple[int, Mutant]], args: argparse.Namespace, timeout: float, first: Worker
) -> list[Outcome]:
    """Run the mutants, ``args.jobs`` at a time, each on a worker's own copy."""
    workers = [first] + [Worker() for _ in range(args.jobs - 1)]
    free = list(workers)
    started = time.monotonic()
    outcomes: list[Outcome] = []

    def one(nm: tuple[int, Mutant]) -> Outcome | None:
        if args.time_budget is not None and time.monotonic() - started > args.time_budget:
            return None
        worker = free.pop()
        try:
            return worker.run(nm[0], nm[1], args.tests, args.seed, timeout)
        finally:
            free.append(worker)

    try:
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            for outcome in pool.map(one, chosen):
                if outcome is None:
                    continue
                outcomes.append(outcome)
                m = outcome.mutant
                print(
                    f"{outcome.number:4}  {outcome.result:9} {outcome.seconds:6.1f}s  "
                    f"{m.path}:{m.line}  {m.describe()}",
                    flush=True,
                )
                if args.diff:
                    print_diff(m)
    finally:
        for w in workers[1:]:
            w.close()
    return outcomes


def print_diff(m: Mutant) -> None:
    source = _read(os.path.join(ROOT, m.path))
    before = source.decode().splitlines(keepends=True)
    after = m.apply(source).decode().splitlines(keepends=True)
    sys.stdout.writelines(difflib.unified_diff(before, after, f"a/{m.path}", f"b/{m.path}", n=1))
    print()


def report(
    outcomes: list[Outcome], chosen: list[tuple[int, Mutant]], args: argparse.Namespace
) -> int:
    count = {r: sum(o.result == r for o in outcomes) for r in ("killed", "survived", "timed out")}
    caught = count["killed"] + count["timed out"]
    score = 100 * caught / len(outcomes) if outcomes else 0.0
    not_run = len(chosen) - len(outcomes)
    print()
    print(
        f"summary : {len(outcomes)} mutants run: {count['killed']} killed, "
        f"{count['survived']} survived, {count['timed out']} timed out"
        + (f", {not_run} not run (time budget)" if not_run else "")
    )
    print(f"score   : {score:.1f}% caught (killed or timed out, of those run)")
    survivors = [o for o in outcomes if o.result == "survived"]
    if survivors:
        files = " ".join(f"'{f}'" if ":" in f or " " in f else f for f in args.files)
        print("survivors (a gap in the tests, or a change no test can see):")
        for o in survivors:
            print(f"  {o.mutant.path}:{o.mutant.line}  #{o.number}  {o.mutant.describe(90)}")
        numbers = ",".join(str(o.number) for o in survivors)
        print(f"show them: python benchmarks/mutation.py --files {files} --only {numbers} --list")
        print(
            f"rerun them: python benchmarks/mutation.py --files {files} --tests "
            f"{' '.join(args.tests)} --seed {args.seed} --only {numbers} --diff"
        )
    if args.fail_under is not None and score < args.fail_under:
        print(f"the score {score:.1f}% is below --fail-under {args.fail_under}%")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

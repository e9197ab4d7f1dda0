"""benchmarks/mutation.py: the mutants it makes, on a small source file. Running them (a pytest per
mutant) is the script's own job and too slow for the suite."""

from __future__ import annotations

import importlib.util
import os
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location(
    "mutation", os.path.join(ROOT, "benchmarks", "mutation.py")
)
mutation = sys.modules["mutation"] = importlib.util.module_from_spec(
    _spec
)  # dataclasses look it up
_spec.loader.exec_module(mutation)

SOURCE = textwrap.dedent('''\
    """Module docstring 1 < 2."""
    __all__ = ("pick", "Step")
    LIMIT: int = 3


    def pick(xs: list[int], rng, k: int = 2) -> list[int]:
        """Docstring: not mutated."""
        if not xs or k < 0:
            raise ValueError(f"bad {k + 1}")
        return rng.sample(xs, k)


    class Step:
        n = 1

        def apply(self, xs, rng):
            return [rng.choice(xs)]
''')


@pytest.fixture
def module(tmp_path):
    path = tmp_path / "subject.py"
    path.write_text(SOURCE)
    return str(path)


def changes(mutants):
    return {(m.line, m.kind, m.old, m.new) for m in mutants}


def test_each_mutant_changes_one_spot_and_compiles(module):
    found = mutation.mutants_of(module)
    source = SOURCE.encode()
    assert len({m.apply(source) for m in found}) == len(found)  # no two alike
    for m in found:
        mutated = m.apply(source)
        assert mutated != source
        compile(mutated, module, "exec")
        assert source[: m.start] == mutated[: m.start]  # one splice, the rest as it was
        assert source[m.end :] == mutated[m.start + len(m.new.encode()) :]


def test_the_mutations_cover_the_operators_and_the_random_draws(module):
    got = changes(mutation.mutants_of(module))
    assert {
        (8, "drop not", "not xs", "(xs)"),
        (8, "boolean", "not xs or k < 0", "(not xs and k < 0)"),
        (8, "compare", "k < 0", "(k <= 0)"),
        (8, "constant", "0", "(1)"),
        (8, "constant", "0", "(-1)"),
        (10, "no randomness", "rng.sample(xs, k)", "(xs[:k])"),
        (10, "return first argument", "return rng.sample(xs, k)", "return xs"),
        (10, "remove statement", "return rng.sample(xs, k)", "pass"),
        (17, "no randomness", "rng.choice(xs)", "(xs[0])"),
        (6, "constant", "2", "(3)"),  # a default
        (14, "constant", "1", "(2)"),  # a class attribute
    } <= got


def test_docstrings_messages_annotations_and_all_are_left_alone(module):
    found = mutation.mutants_of(module)
    lines = {m.line for m in found}
    assert not lines & {1, 2, 7}  # docstrings and __all__
    assert not any(m.line == 9 and m.kind != "remove statement" for m in found)  # f-string
    assert not any(m.line == 3 and m.old == "int" for m in found)  # annotations
    # Statements are removed inside functions only: never an import or a module constant.
    assert all(m.kind != "remove statement" or m.line in (8, 9, 10, 17) for m in found)


def test_a_qualname_limits_the_mutants_to_it(module):
    only = mutation.mutants_of(f"{module}:Step.apply")
    assert only and {m.line for m in only} == {17}
    assert {m.line for m in mutation.mutants_of(f"{module}:Step")} == {14, 17}
    assert mutation.parse_target("moa/x.py:A.b,c") == ("moa/x.py", ("A.b", "c"))


def test_a_qualname_the_file_does_not_define_is_refused(module):
    with pytest.raises(SystemExit, match=r"defines no class or function named Stepp"):
        mutation.mutants_of(f"{module}:Stepp")


def test_the_default_targets_name_what_the_files_define():
    # So a renamed function is noticed here, not by a run that quietly mutates nothing.
    for target in mutation.DEFAULT_FILES:
        path, scopes = mutation.parse_target(target)
        assert set(scopes) <= mutation.qualnames(path), target
    for test in mutation.DEFAULT_TESTS:
        assert os.path.exists(os.path.join(ROOT, test)), test

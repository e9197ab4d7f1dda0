"""benchmarks/mutation.py: the mutmut settings it writes into its copy of the checkout. Running
mutmut (a pytest per mutant) is the script's own job and too slow for the suite."""

from __future__ import annotations

import glob
import importlib.util
import os
import tomllib

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location(
    "mutation", os.path.join(ROOT, "benchmarks", "mutation.py")
)
mutation = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mutation)

PYPROJECT = """\
[project]
name = "x"

[tool.mutmut]
source_paths = ["moa/"]
only_mutate = ["moa/a.py"]
pytest_add_cli_args_test_selection = ["tests/test_a.py"]
do_not_mutate_patterns = ['raise \\w+']

[tool.ruff]
line-length = 100
"""


def test_the_files_and_tests_given_replace_the_configured_ones():
    text = mutation.configured(PYPROJECT, ["moa/b.py", "moa/c.py"], ["tests/test_b.py"])
    data = tomllib.loads(text)
    assert data["tool"]["mutmut"] == {
        "source_paths": ["moa/"],
        "only_mutate": ["moa/b.py", "moa/c.py"],
        "pytest_add_cli_args_test_selection": ["tests/test_b.py"],
        "do_not_mutate_patterns": ["raise \\w+"],  # a backslash survives the round trip
    }
    assert data["project"] == {"name": "x"} and data["tool"]["ruff"] == {"line-length": 100}
    assert text.count("[tool.mutmut]") == 1


def test_without_files_or_tests_the_section_is_kept_as_configured():
    data = tomllib.loads(mutation.configured(PYPROJECT, None, None))
    assert data == tomllib.loads(PYPROJECT)


def test_a_pyproject_without_the_section_is_refused():
    with pytest.raises(SystemExit, match=r"no \[tool\.mutmut\] section"):
        mutation.configured('[project]\nname = "x"\n', ["moa/a.py"], None)


def test_the_configured_targets_exist():
    # So a renamed file is noticed here, not by a run that quietly mutates or tests nothing.
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        config = tomllib.load(f).get("tool", {}).get("mutmut")
    if config is None:
        pytest.skip("pyproject.toml has no [tool.mutmut] section yet")
    for pattern in config["only_mutate"]:
        assert glob.glob(os.path.join(ROOT, pattern)), pattern
    for test in config["pytest_add_cli_args_test_selection"]:
        assert os.path.exists(os.path.join(ROOT, test.split("::")[0])), test

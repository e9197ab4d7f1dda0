"""The documentation's code runs: docs/custom-steps.md and the README's section on
property-testing your own steps, each block in order in one namespace, and every law test that
their check_laws lines define passes."""

import re
from pathlib import Path

import pytest
from hypothesis import settings

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def run_blocks(path, section=None):
    """Execute the python blocks of ``path`` (of its ``## section`` only, if given) in order,
    in one namespace; tracebacks point at the markdown's own lines."""
    text = path.read_text(encoding="utf-8")
    if section is not None:
        start = text.index(f"\n## {section}\n")
        end = text.find("\n## ", start + 1)
        text = text[: end if end != -1 else len(text)]
        text = "\n" * text[:start].count("\n") + text[start:]
    namespace = {"__name__": f"docs.{path.stem}"}
    blocks = list(BLOCK.finditer(text))
    assert blocks, f"no python blocks in {path.name}"
    for match in blocks:
        line = text[: match.start(1)].count("\n")
        exec(compile("\n" * line + match.group(1), str(path), "exec"), namespace)
    return namespace


@pytest.fixture
def fewer_examples():
    """The pages' law tests with 25 examples each: the pages are checked, not the steps."""
    before = settings.get_current_profile_name()
    settings.register_profile("docs", settings(settings.get_profile(before), max_examples=25))
    settings.load_profile("docs")
    yield
    settings.load_profile(before)


def law_tests(namespace):
    return {name: test for name, test in namespace.items() if name.startswith("test_")}


def test_custom_steps_page_runs_and_its_laws_hold(fewer_examples):
    namespace = run_blocks(ROOT / "docs" / "custom-steps.md")
    tests = law_tests(namespace)
    assert {
        "test_dedupe_sub_multiset",
        "test_truncate_fuses",
        "test_rotate_permutation",
        "test_pairwise_judge_judge_length_bound",
        "test_dedupe_keeps_the_first",
    } <= set(tests)
    for test in tests.values():
        test()


def test_readme_section_runs_and_its_laws_hold(fewer_examples):
    namespace = run_blocks(ROOT / "README.md", "Property-testing your own steps")
    tests = law_tests(namespace)
    assert "test_longest_fuses" in tests
    for test in tests.values():
        test()


def test_a_broken_block_fails_at_its_line_in_the_page(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n```python\nx = 1\nassert x == 2\n```\n", encoding="utf-8")
    with pytest.raises(AssertionError) as info:
        run_blocks(page)
    frame = info.traceback[-1]
    assert (str(frame.path), frame.lineno + 1) == (str(page), 5)


def _text_files():
    skip = {".git", "venv", ".venv", "__pycache__", ".hypothesis", ".pytest_cache"}
    for path in ROOT.rglob("*"):
        if (
            path.is_file()
            and path.suffix in {".md", ".py", ".toml", ""}
            and not skip & set(path.relative_to(ROOT).parts)
            and not any(p.endswith(".egg-info") for p in path.parts)
        ):
            yield path


def test_every_llama_cpp_build_command_is_the_portable_one():
    """A native build crashes where the CPU reports AMX; an OpenMP one is slow: every install
    command the project gives (docs, scripts, CI, error messages) builds portably."""
    from moa.clients._local import PORTABLE_CMAKE_ARGS

    found = 0
    for path in _text_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for match in re.finditer(r'CMAKE_ARGS=\\?"([^"\\]*)', text):
            if match.group(1) == "{PORTABLE_CMAKE_ARGS}":  # the constant itself, in _local.py
                continue
            found += 1
            assert match.group(1) == PORTABLE_CMAKE_ARGS, f"{path.name}: {match.group(0)}"
    assert found >= 8
    first = re.search(r"```bash\n(python3 -m venv .*)\n```", (ROOT / "README.md").read_text())
    assert first is not None
    assert f'CMAKE_ARGS="{PORTABLE_CMAKE_ARGS}" pip install --no-cache-dir' in first.group(1)
    assert (ROOT / ".ci" / "run").read_text().count(PORTABLE_CMAKE_ARGS) == 1


def test_the_readme_limits_table_states_every_limit_as_the_code_has_it():
    from moa import _bounds, _parse

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text[text.index("\n## Limits\n") : text.index("\n## History\n")]
    cells = [
        re.split(r"(?<!\\)\|", line)
        for line in table.splitlines()
        if line.startswith("| ") and "---" not in line
    ]
    rows = {c[1].strip(): c[2].strip() for c in cells}

    def has(row_start, value):
        row = next(v for k, v in rows.items() if k.startswith(row_start))
        assert f"{value:,}" in row, (row_start, value, row)

    has("Pipeline/Parallel nesting", _bounds.MAX_NESTING)
    has("steps in a Pipeline", _bounds.MAX_STEPS)
    has("calls one step", _bounds.MAX_CALLS)
    has("a count", _bounds.MAX_COUNT)
    has("characters in one reply", _bounds.MAX_REPLY_CHARS)
    has("characters in one request", _bounds.MAX_REQUEST_CHARS)
    has("a sampling temperature", _bounds.MAX_TEMP)
    has("expression length", _parse.EXPR_MAX_CHARS)
    has("steps in an expression", _parse.EXPR_MAX_STEPS)
    has("`step * n`", _parse.EXPR_MAX_REPEAT)
    has("bracket nesting", _parse.EXPR_MAX_BRACKETS)
    has("bracket nesting", _parse.EXPR_MAX_DEPTH)
    has("items in one list", _parse.EXPR_MAX_ITEMS)
    has("characters in one string", _parse.EXPR_MAX_STRING)
    has("digits in one integer", _parse.EXPR_MAX_INT_DIGITS)
    has("operator characters", _parse.EXPR_MAX_OPERATORS)
    from moa import Retry

    has("a provider's Retry-After", int(Retry().max_retry_after))
    # every constant of moa._bounds has its row
    assert {n for n in vars(_bounds) if n.startswith("MAX_")} == {
        "MAX_NESTING",
        "MAX_STEPS",
        "MAX_CALLS",
        "MAX_COUNT",
        "MAX_REPLY_CHARS",
        "MAX_REQUEST_CHARS",
        "MAX_TEMP",
    }

"""The documentation's claims that are not code: every llama.cpp build command is the portable
one, and the limits table states every limit as the code has it. The pages' code runs in
tests/test_site.py, their terminal sessions in tests/test_transcripts.py."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _text_files():
    skip = {".git", "venv", ".venv", "__pycache__", ".hypothesis", ".pytest_cache", "site"}
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


def test_the_limits_table_states_every_limit_as_the_code_has_it():
    from moa import _bounds, _parse

    table = (ROOT / "docs" / "reference" / "limits.md").read_text(encoding="utf-8")
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

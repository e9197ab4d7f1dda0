"""The site's terminal sessions are real: every ``$ command`` in a ``console`` block of a page
(the README, docs/, benchmarks/README.md) runs on the embedded model in a fresh folder, and its
output must be the lines the page shows, so the transcripts cannot drift from what moa prints. Times (``4.3 s``) vary and are compared as
a pattern; the progress lines a batch prints every few seconds come as the machine's speed
gives them and are left out on both sides.

Run alone to print the sessions as this checkout gives them (for updating a page):
``python tests/test_transcripts.py [PAGE]``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TIME = re.compile(r"\b\d+\.\d+ s\b")
PROGRESS = re.compile(r"^batch: \d+/\d+ prompts, ")


def sessions(text: str) -> list[list[tuple[str, list[str]]]]:
    """Each console block's (command, output lines) pairs, a command's ``\\``-continued lines
    joined."""
    blocks = re.findall(r"```console\n(.*?)```", text, re.S)
    out = []
    for block in blocks:
        pairs: list[tuple[str, list[str]]] = []
        lines = block.splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            if not line.startswith("$ "):
                pairs[-1][1].append(line)
                i += 1
                continue
            command = line[2:]
            while command.endswith("\\"):
                i += 1
                command = command[:-1] + lines[i].strip()
            pairs.append((command, []))
            i += 1
        out.append(pairs)
    return out


def normal(lines: list[str]) -> list[str]:
    kept = [TIME.sub("<t> s", line.rstrip()) for line in lines if not PROGRESS.match(line)]
    while kept and not kept[-1]:
        kept.pop()
    return kept


def run_session(pairs: list[tuple[str, list[str]]], folder: Path) -> list[list[str]]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("COLUMNS", None)
    outputs = []
    for command, _ in pairs:
        proc = subprocess.run(
            ["bash", "-c", f"{command} 2>&1"],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        outputs.append(proc.stdout.splitlines())
    return outputs


def pages() -> list[Path]:
    """The pages with terminal sessions: the README, docs/ and the benchmarks' page."""
    found = [
        ROOT / "README.md",
        ROOT / "benchmarks" / "README.md",
        *sorted((ROOT / "docs").rglob("*.md")),
    ]
    return [page for page in found if "```console" in page.read_text(encoding="utf-8")]


def all_sessions() -> list[object]:
    return [
        pytest.param(pairs, id=f"{page.relative_to(ROOT).as_posix()}#{n}")
        for page in pages()
        for n, pairs in enumerate(sessions(page.read_text(encoding="utf-8")))
    ]


def test_the_site_has_sessions_to_check():
    assert len(all_sessions()) >= 5


@pytest.mark.local
@pytest.mark.parametrize("pairs", all_sessions())
def test_every_session_prints_what_its_page_shows(pairs, model_path, tmp_path):
    for (command, shown), got in zip(pairs, run_session(pairs, tmp_path), strict=True):
        assert normal(got) == normal(shown), f"$ {command}"


if __name__ == "__main__":  # print the sessions as this checkout runs them
    import tempfile

    chosen = [ROOT / arg for arg in sys.argv[1:]] or pages()
    for page in chosen:
        for pairs in sessions(page.read_text(encoding="utf-8")):
            with tempfile.TemporaryDirectory() as folder:
                for (command, _), got in zip(pairs, run_session(pairs, Path(folder)), strict=True):
                    print(f"$ {command}")
                    print("\n".join(got))
            print("-" * 40, page.relative_to(ROOT))

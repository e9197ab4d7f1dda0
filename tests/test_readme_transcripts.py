"""The README's terminal sessions are real: every ``$ command`` in a ``console`` block runs on
the embedded model in a fresh folder, and its output must be the lines the README shows, so
the transcripts cannot drift from what moa prints. Times (``4.3 s``) vary and are compared as
a pattern; the progress lines a batch prints every few seconds come as the machine's speed
gives them and are left out on both sides.

Run alone to print the sessions as this checkout gives them (for updating the README):
``python tests/test_readme_transcripts.py``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
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


@pytest.mark.local
def test_every_readme_session_prints_what_the_readme_shows(model_path, tmp_path):
    found = sessions(README.read_text(encoding="utf-8"))
    assert found, "the README has no console block"
    for n, pairs in enumerate(found):
        folder = tmp_path / f"session-{n}"
        folder.mkdir()
        for (command, shown), got in zip(pairs, run_session(pairs, folder), strict=True):
            assert normal(got) == normal(shown), f"$ {command}"


if __name__ == "__main__":  # print the sessions as this checkout runs them
    import tempfile

    for pairs in sessions(README.read_text(encoding="utf-8")):
        with tempfile.TemporaryDirectory() as folder:
            for (command, _), got in zip(pairs, run_session(pairs, Path(folder)), strict=True):
                print(f"$ {command}")
                print("\n".join(got))
        print("-" * 40)

"""No input makes ``moa`` print a Python traceback: for any arguments, input file, saved run
file and environment drawn here, ``main`` returns 0 (done), 1 (a run failed) or 2 (bad
input), or argparse exits 0/2 for --help and usage errors. Anything else escaping ``main`` is
a traceback a user would see.

The model is a scripted stand-in for the embedded one (installed where ``local_client`` is
looked up), so ``make_client``'s own checks run for real; hosted providers are drawn without
their keys, which must be a usage error."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from scripted import ScriptedClient

import moa.clients
from moa.cli import PROVIDERS, main

SETTINGS = settings(
    max_examples=int(__import__("os").environ.get("MOA_CLI_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Text as hostile as a shell can pass: surrogates (invalid UTF-8 decoded with surrogateescape),
# line and paragraph separators, NULs are left out (argv cannot hold them).
hostile = st.text(st.characters(codec=None, exclude_characters="\x00"), max_size=30)
good_numbers = st.integers(1, 4).map(str)
numbers = st.one_of(
    good_numbers,
    good_numbers,
    good_numbers,
    st.integers(-3, 0).map(str),
    st.sampled_from(["9" * 5000, "1e999", "nan", "-0", "0x10", "1_0"]),
    hostile,
)
prompts = st.one_of(
    st.sampled_from(
        ["What is 6 * 7?", "caf\u00e9 \u2028 line", "q\u0085r", "\ud83d\ude00 emoji", "x" * 5000]
    ),
    st.text(min_size=1, max_size=20).filter(str.strip),
    hostile,
)
expressions = st.one_of(
    st.sampled_from(
        [
            "Propose(['m'])",
            "Propose(['m', 'n']) | Aggregate('m')",
            "Propose(['m']*3) | Majority(r'\\d+')",
            "Propose(['m']) | Pick('m', times=2)",
            "Propose(['m']) | Take(0)",
            "Take(1)",
            "Propose(['m']) | Rank('m', n=2)",
            "Propose([]*10**30)",
            "Take(" + "9" * 5000 + ")",
            "Propose(['\ud800'])",
            "(" * 60 + ")" * 60,
            "Propose(['m'], quorum=5)",
        ]
    ),
    hostile,
)


@st.composite
def json_lines(draw):
    """A batch input: lines of prompts, some good, some hostile."""
    line = st.one_of(
        st.builds(lambda p: json.dumps(p), prompts),
        st.builds(lambda p: json.dumps(p, ensure_ascii=False), prompts),
        st.builds(lambda p: json.dumps(p), hostile),
        st.builds(
            lambda p, i: json.dumps({"prompt": p, "id": i}),
            hostile,
            st.one_of(
                st.integers(),
                st.text(max_size=5),
                st.booleans(),
                st.none(),
                st.floats(allow_nan=True),
            ),
        ),
        st.sampled_from(
            [
                '{"prompt": "q", "id": ' + "9" * 5000 + "}",
                "[" * 3000,
                '"\\ud800"',
                '{"id": 1}',
                "null",
                "",
                "   ",
                '{"prompt": ["x"]}',
                json.dumps({"prompt": "a\u2028b"}, ensure_ascii=False),
            ]
        ),
        hostile,
    )
    return "\n".join(draw(st.lists(line, min_size=0, max_size=4)))


@st.composite
def run_files(draw):
    """A saved run (``moa run --json``) with a field broken, or hostile text."""
    doc = {
        "prompt": "q",
        "seed": 1,
        "outputs": ["a"],
        "wall_time": 0.1,
        "result": "a",
        "steps": [
            {
                "step": "Propose(['m'])",
                "path": [0],
                "kind": "llm",
                "inputs": [],
                "outputs": ["a"],
                "notes": [],
                "duration": 0.1,
                "calls": [
                    {
                        "model": "m",
                        "messages": [{"role": "user", "content": "q"}],
                        "temp": 0.7,
                        "max_tokens": 5,
                        "text": "a",
                        "input_tokens": 1,
                        "output_tokens": 1,
                        "attempts": 1,
                        "error": None,
                    }
                ],
            }
        ],
    }
    junk = st.one_of(
        st.none(),
        st.integers(),
        st.floats(allow_nan=True),
        hostile,
        st.lists(st.integers(), max_size=2),
        st.dictionaries(hostile, st.integers(), max_size=2),
    )
    if draw(st.booleans()):
        return json.dumps(doc)  # a good one: trace draws it
    where = draw(st.sampled_from(["", "steps", "call", "prices"]))
    target = {
        "": doc,
        "steps": doc["steps"][0],
        "call": doc["steps"][0]["calls"][0],
        "prices": doc,
    }[where]
    key = draw(st.sampled_from(sorted(target) + ["prices", "history", "error"]))
    target[key] = draw(junk)
    text = json.dumps(doc)
    return draw(st.sampled_from([text, text[: len(text) // 2], "\n".join([text, text])]))


def _argv(draw, files: Path) -> list[str]:
    command = draw(st.sampled_from(["run", "batch", "trace", "demo", "other"]))
    argv = [command]
    if command in ("run", "batch"):
        if command == "run":
            argv.append(draw(prompts.filter(lambda s: not s.startswith("-"))))
        else:
            (files / "in.jsonl").write_text(
                draw(json_lines()), encoding="utf-8", errors="surrogatepass"
            )
            argv += [str(files / "in.jsonl"), "-o", str(files / "out.jsonl")]
        which = draw(st.sampled_from(["--pipeline", "--recipe"]))
        argv += [
            which,
            draw(expressions)
            if which == "--pipeline"
            else draw(st.sampled_from(["self_moa", "moa_lite", "nope"])),
        ]
        for option in draw(
            st.lists(
                st.sampled_from(
                    [
                        "--seed",
                        "--max-tokens",
                        "--max-concurrency",
                        "--timeout",
                        "--model",
                        "--provider",
                        "--prices",
                        "--cache",
                        "--json",
                        "--concurrency",
                        "-q",
                    ]
                ),
                max_size=3,
                unique=True,
            )
        ):
            argv += _option(draw, option, files, command)
    elif command == "trace":
        (files / "run.json").write_text(draw(run_files()), encoding="utf-8", errors="surrogatepass")
        argv.append(str(files / "run.json"))
        if draw(st.booleans()):
            argv += ["--line", draw(numbers)]
    elif command == "demo":
        argv += [draw(prompts.filter(lambda s: not s.startswith("-"))), "--samples", draw(numbers)]
    else:
        argv = [draw(hostile)]
    return argv


def _option(draw, option: str, files: Path, command: str) -> list[str]:
    if option == "-q":
        return ["-q"]
    if option == "--concurrency" and command != "batch":
        return []
    if option == "--model":
        return [
            option,
            draw(
                st.one_of(
                    hostile,
                    st.sampled_from(["smollm2", "gpt-4o", str(files / "none.gguf"), "/etc/passwd"]),
                )
            ),
        ]
    if option == "--provider":
        return [option, draw(st.sampled_from(sorted(PROVIDERS) + ["nope"]))]
    if option in ("--prices", "--cache"):
        path = files / option.strip("-")
        path.write_bytes(draw(st.binary(max_size=40)))
        return [option, str(path)]
    if option == "--json":
        return [
            option,
            draw(st.sampled_from([str(files / "r.json"), str(files / "no" / "r.json")])),
        ]
    return [option, draw(numbers)]


def _in_environ(text: str) -> bool:
    """An environment holds bytes: only text that came from bytes (surrogateescape) fits."""
    try:
        text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return False
    return True


@pytest.fixture
def scripted_local(monkeypatch):
    client = ScriptedClient(lambda model, messages: "answer 42")
    monkeypatch.setattr(moa.clients, "local_client", lambda path=None: client)
    for spec in PROVIDERS.values():
        if spec.key_env:
            monkeypatch.delenv(spec.key_env, raising=False)
    return client


@SETTINGS
@given(data=st.data())
def test_no_input_makes_moa_print_a_traceback(data, scripted_local, monkeypatch, capsys):
    with tempfile.TemporaryDirectory() as folder:
        files = Path(folder)
        argv = _argv(data.draw, files)
        threads = data.draw(st.one_of(st.none(), numbers.filter(_in_environ)))
        if threads is None:
            monkeypatch.delenv("MOA_THREADS", raising=False)
        else:
            monkeypatch.setenv("MOA_THREADS", threads)
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse: --help, or a usage error it found itself
            code = exc.code
            assert code in (0, 2), argv
        else:
            assert code in (0, 1, 2), argv
        err = capsys.readouterr().err
        event(f"{argv[0] if argv[0] in ('run', 'batch', 'trace', 'demo') else 'other'} exit {code}")
        assert "Traceback" not in err, (argv, err)
        if code == 2:  # a line that says what was wrong: moa's, or argparse's usage
            lines = err.splitlines()
            assert any(line.startswith("moa: ") or ": error: " in line for line in lines), (
                argv,
                err,
            )

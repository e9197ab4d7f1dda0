"""The ``moa`` command line: usage errors exit 2 with one line on stderr; ``moa demo`` runs a
real Self-MoA on the embedded model (the console script, in a subprocess) and on a real
OpenAI-compatible server (``--base-url``). The real runs are marked ``local`` and use the
``model_path`` and ``llama_server`` fixtures of conftest.py."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from moa.cli import PROVIDERS, main

ROOT = Path(__file__).resolve().parent.parent
KEYED = sorted(name for name, spec in PROVIDERS.items() if spec.key_env)


@pytest.fixture
def no_keys(monkeypatch):
    for spec in PROVIDERS.values():
        if spec.key_env:
            monkeypatch.delenv(spec.key_env, raising=False)


@pytest.mark.parametrize("provider", KEYED)
def test_demo_provider_without_its_key_exits_2_naming_it(provider, no_keys, capsys):
    assert main(["demo", "--provider", provider]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("moa: ")
    assert PROVIDERS[provider].key_env in err


def test_demo_provider_openai_without_key_names_openai_api_key(no_keys, capsys):
    assert main(["demo", "--provider", "openai"]) == 2
    assert capsys.readouterr().err == (
        "moa: --provider openai needs OPENAI_API_KEY set in the environment\n")


def test_demo_base_url_without_model_exits_2(no_keys, capsys):
    assert main(["demo", "--base-url", "http://x"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and "--base-url needs --model" in err


@pytest.mark.parametrize("option", ["--samples", "--max-tokens"])
@pytest.mark.parametrize("value", ["0", "-1", "three"])
def test_demo_rejects_a_count_below_one(option, value, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", option, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err


def test_a_command_is_required(capsys):
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
    assert "required" in capsys.readouterr().err


def _moa_command() -> list[str]:
    """The ``moa`` console script installed beside this Python; ``python -m moa.cli`` where it
    is missing (a failure under CI, where the package is installed)."""
    script = Path(sys.executable).with_name("moa")
    if script.is_file():
        return [str(script)]
    if os.environ.get("CI"):
        pytest.fail(f"the moa console script is not installed at {script}")
    return [sys.executable, "-m", "moa.cli"]


def _check_demo_output(out: str, samples: int) -> None:
    assert f"Proposals ({samples}):" in out
    assert "Final answer:" in out
    answer = out.split("\nFinal answer:\n", 1)[1].split("\n\ncalls: ", 1)[0]
    assert answer.strip()
    assert f"calls: {samples + 1} (0 failed)" in out


@pytest.mark.local
def test_moa_demo_console_script_runs_the_embedded_model(model_path):
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    proc = subprocess.run(
        [*_moa_command(), "demo", "--samples", "2", "--max-tokens", "32", "What is 2 + 2?"],
        env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "prompt:   What is 2 + 2?" in proc.stdout
    _check_demo_output(proc.stdout, 2)


@pytest.mark.local
def test_moa_demo_base_url_runs_against_a_real_llama_cpp_server(llama_server, no_keys, capsys):
    code = main(["demo", "--base-url", llama_server, "--model", "smollm2", "--samples", "2",
                 "--max-tokens", "32", "--timeout", "120", "What is 2 + 2?"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"a Self-MoA on smollm2 ({llama_server})" in out
    _check_demo_output(out, 2)

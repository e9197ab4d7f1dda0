"""The command line at its edges: options shared by every command and checked as they enter,
one cap on calls across a whole batch, a pipeline refused at parse time, text from a model
shown but never acted on by the terminal. Each test reproduces a defect a review or a
hostile-input pass found, and failed before its fix."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from scripted import ScriptedClient

import moa.cli as cli
from moa.cli import main
from moa.cli.batchray import _cause


@pytest.fixture
def client(monkeypatch):
    c = ScriptedClient(delay=0.01)
    monkeypatch.setattr(cli.providers, "make_client", lambda provider, base_url, model: (c, "m"))
    return c


def _prompts(tmp_path, n=8, **fields):
    path = tmp_path / "in.jsonl"
    path.write_text(
        "".join(json.dumps({"prompt": f"q{i}?", "id": i, **fields}) + "\n" for i in range(n))
    )
    return str(path)


def test_demo_refuses_a_bad_timeout_as_run_does(capsys):
    with pytest.raises(SystemExit) as info:
        main(["demo", "--timeout", "-1"])
    assert info.value.code == 2
    assert "--timeout: must be a number of seconds > 0, got -1" in capsys.readouterr().err


def test_a_seed_of_5000_digits_is_refused_naming_the_seed(capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", "hi", "--pipeline", "Propose(['m'])", "--seed", "9" * 5000])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--seed: must be a whole number" in err or "--seed: must be a 64-bit integer" in err
    assert "sys.set_int_max_str_digits" not in err


def test_an_id_of_5000_digits_is_a_usage_error_naming_ids(tmp_path, client, capsys):
    path = tmp_path / "in.jsonl"
    path.write_text('{"prompt": "q", "id": ' + "9" * 5000 + "}\n")
    assert (
        main(["batch", str(path), "-o", str(tmp_path / "o.jsonl"), "--pipeline", "Propose(['m'])"])
        == 2
    )
    err = capsys.readouterr().err
    assert "a number of more than 4,300 digits (an id is a string or a 64-bit integer" in err


def test_the_batch_caps_calls_in_flight_across_every_prompt_not_per_prompt(tmp_path, client):
    # Two agents a prompt, four prompts at once: eight calls would be in flight per prompt cap.
    argv = ["batch", _prompts(tmp_path), "-o", str(tmp_path / "o.jsonl"), "-q"]
    argv += ["--pipeline", "Propose(['m', 'n'])", "--max-runs", "4", "--max-concurrency", "3"]
    assert main(argv) == 0
    assert client.max_in_flight == 3 and len(client.calls) == 16


def test_the_old_concurrency_flag_still_works_and_says_its_new_name(tmp_path, client, capsys):
    argv = ["batch", _prompts(tmp_path, 2), "-o", str(tmp_path / "o.jsonl"), "-q"]
    assert main([*argv, "--pipeline", "Propose(['m'])", "--concurrency", "1"]) == 0
    assert "--concurrency is --max-runs now" in capsys.readouterr().err
    assert client.max_in_flight == 1


def test_a_pipeline_that_starts_without_responses_is_a_usage_error_at_parse_time(client, capsys):
    assert main(["run", "hi", "--pipeline", "Aggregate('m')"]) == 2
    err = capsys.readouterr().err
    assert "Aggregate has no responses to work on" in err and "^^^^^^^^^" in err
    assert client.calls == []


def test_a_mistyped_keyword_gets_a_did_you_mean(client, capsys):
    assert main(["run", "hi", "--pipeline", "Propose(['m'], max_token=5)"]) == 2
    assert (
        "Propose has no argument 'max_token': did you mean max_tokens=?" in capsys.readouterr().err
    )


def test_trace_shows_escape_codes_from_a_reply_instead_of_sending_them(
    tmp_path, monkeypatch, capsys
):
    sneaky = "\x1b]0;pwned\x07\x1b[2J\x1b[31mred"
    monkeypatch.setattr(
        cli.providers, "make_client", lambda *a: (ScriptedClient(lambda m, _: sneaky), "m")
    )
    saved = tmp_path / "run.json"
    assert main(["run", "hi", "--pipeline", "Propose(['m'])", "--json", str(saved), "-q"]) == 0
    capsys.readouterr()
    monkeypatch.setattr(cli.progress, "load_rich", lambda: None)
    assert main(["trace", str(saved), "--full"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b]0;pwned\\x07\\x1b[2J\\x1b[31mred" in out


def test_python_dash_m_moa_is_the_command():
    proc = subprocess.run(
        [sys.executable, "-m", "moa", "run", "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and "usage: moa run" in proc.stdout


def test_ray_s_report_of_a_worker_failure_names_the_worker_s_own_error():
    report = (
        "ray.exceptions.RayTaskError(UsageError): ray::MapWorker.__init__() (pid=1)\n"
        '  File "moa/cli/providers.py", line 40, in make_client\n'
        "moa.cli.common.UsageError: --provider openai needs OPENAI_API_KEY set in the environment\n"
        "\n"
        "Task failed. There are infinite retries remaining, so the task will be retried.\n"
    )
    assert _cause(Exception(report)) == (
        "moa.cli.common.UsageError: --provider openai needs OPENAI_API_KEY set in the environment"
    )


def test_an_unreachable_ray_address_is_refused_at_once_and_quietly(tmp_path, client, capsys):
    pytest.importorskip("ray")
    start = time.monotonic()
    argv = ["batch", _prompts(tmp_path, 2), "-o", str(tmp_path / "o.jsonl"), "-q"]
    assert main([*argv, "--pipeline", "Propose(['m'])", "--ray", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("moa: --ray: cannot reach the Ray cluster at '127.0.0.1:1'")
    assert err.count("\n") == 1 and time.monotonic() - start < 60  # not Ray's minutes of retries

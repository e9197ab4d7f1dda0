"""The ``moa`` command line: usage errors exit 2 with one line on stderr; ``moa demo`` runs a
real Self-MoA on the embedded model (the console script, in a subprocess) and on a real
OpenAI-compatible server (``--base-url``). The real runs are marked ``local`` and use the
``model_path`` and ``llama_server`` fixtures of conftest.py."""

import functools
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from scripted import Permanent, ScriptedClient

import moa
import moa.cli as cli
from moa import Aggregate, History, Parallel, Propose, Shuffle, Synthesize, Vote
from moa.cli import PROVIDERS, main, with_max_tokens

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
        "moa: --provider openai needs OPENAI_API_KEY set in the environment\n"
    )


def test_demo_base_url_without_model_exits_2(no_keys, capsys):
    assert main(["demo", "--base-url", "http://x"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and "--base-url needs --model" in err


@pytest.fixture
def loaded(monkeypatch):
    """The model files moa.clients.local_client is asked to load (none is loaded)."""
    from moa import clients

    paths = []
    monkeypatch.setattr(clients, "local_client", lambda path=None: paths.append(path) or "client")
    return paths


@pytest.mark.parametrize("name", ["gpt-4o", "claude-sonnet-4-5", "llama-3.3-70b"])
def test_a_model_the_embedded_provider_does_not_have_exits_2_naming_the_ways(name, loaded, capsys):
    assert main(["run", "hi", "--recipe", "self_moa", "--model", name]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and repr(name) in err
    assert "--provider" in err and "--base-url" in err and ".gguf" in err
    assert loaded == []


def test_a_missing_gguf_file_exits_2(tmp_path, loaded, capsys):
    assert (
        main(["run", "hi", "--recipe", "self_moa", "--model", str(tmp_path / "no" / "such.gguf")])
        == 2
    )
    assert "no such model file" in capsys.readouterr().err
    assert loaded == []


def test_a_gguf_path_loads_that_file_labelled_by_its_name(tmp_path, loaded):
    path = tmp_path / "tiny-model.Q4_0.gguf"
    path.write_bytes(b"GGUF")
    assert cli.make_client("local", None, str(path)) == ("client", "tiny-model.Q4_0")
    assert loaded == [path]


@pytest.mark.parametrize("name", [None, "smollm2", "SmolLM2-135M-Instruct"])
def test_the_embedded_model_answers_to_its_own_names(name, loaded):
    assert cli.make_client("local", None, name) == ("client", name or "SmolLM2-135M-Instruct")
    assert loaded == [None]


def test_identical_failures_are_one_line_with_their_count(monkeypatch, capsys):
    async def unreachable(*, model, messages, temp, max_tokens):
        raise moa.ProviderError(
            "connection failed: [Errno 111] Connection refused", model=model, retryable=False
        )

    _use(monkeypatch, unreachable)
    assert main(["run", "hi", "--pipeline", "Propose(['m'] * 6) | Aggregate('m')", "-q"]) == 1
    err = capsys.readouterr().err
    assert err.count("Connection refused") == 1
    assert "(6 of 6 calls to m: ProviderError: m: connection failed" in err


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
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert "prompt:   What is 2 + 2?" in proc.stdout
    _check_demo_output(proc.stdout, 2)


@pytest.mark.local
def test_moa_demo_base_url_runs_against_a_real_llama_cpp_server(llama_server, no_keys, capsys):
    code = main(
        [
            "demo",
            "--base-url",
            llama_server,
            "--model",
            "smollm2",
            "--samples",
            "2",
            "--max-tokens",
            "32",
            "--timeout",
            "120",
            "What is 2 + 2?",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"a Self-MoA on smollm2 ({llama_server})" in out
    _check_demo_output(out, 2)


# -- moa run / batch / trace, on the scripted client ---------------------------------------------
# main() runs in-process with the client injected (make_client is replaced); stderr is not a
# terminal under capsys, so progress is the plain one-line-per-step text.

PIPE = "Propose(['m', 'n']) | Shuffle() | Aggregate('m')"
PRICES = {"m": [1.0, 2.0], "n": [3.0, 4.0]}


def _use(monkeypatch, client, default_model="m"):
    """Every command gets ``client``; the model is --model, else ``default_model``."""
    asked = []

    def make_client(provider, base_url, model):
        asked.append((provider, base_url, model))
        return client, model or default_model

    monkeypatch.setattr(cli.providers, "make_client", make_client)
    return asked


@pytest.fixture
def client(monkeypatch):
    c = ScriptedClient()
    _use(monkeypatch, c)
    return c


@pytest.fixture
def prices_file(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(PRICES))
    return str(path)


def _expected(pipeline_text, prompt="What is 2+2?", seed=7, **options):
    return moa.run_sync(
        moa.parse_pipeline(pipeline_text), prompt, ScriptedClient(), seed=seed, **options
    )


def test_run_prints_only_the_answer_on_stdout(client, capsys):
    # A hosted provider: models without a price are unknown (the embedded model is free).
    assert (
        main(["run", "What is 2+2?", "--pipeline", PIPE, "--seed", "7", "--provider", "openai"])
        == 0
    )
    out, err = capsys.readouterr()
    result, history = _expected(PIPE)
    assert out == result + "\n"
    assert len(client.calls) == 3
    lines = err.splitlines()
    assert lines[0].startswith("step 1/3 Propose(['m', 'n']): 2/2 calls, 0 failed, 0 retried, ")
    assert lines[1].startswith("step 3/3 Aggregate('m'): 1/1 calls, 0 failed, 0 retried, ")
    assert lines[2].startswith(
        f"calls: 3 (0 failed, 0 cached)   tokens: {history.input_tokens} "
        f"in, {history.output_tokens} out   cost: unknown (m, n)   "
    )
    assert lines[2].endswith("   seed: 7")
    assert len(lines) == 3


def test_run_quiet_writes_nothing_on_stderr(client, capsys):
    assert main(["run", "hi", "--pipeline", PIPE, "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert out.endswith("\n") and out.count("\n") == 1
    assert err == ""


def test_run_rich_progress_goes_to_stderr_never_stdout(client, capsys, monkeypatch):
    monkeypatch.setattr(cli.progress, "fancy", lambda: True)
    monkeypatch.setenv("COLUMNS", "160")
    assert main(["run", "What is 2+2?", "--pipeline", PIPE, "--seed", "7"]) == 0
    out, err = capsys.readouterr()
    assert out == _expected(PIPE)[0] + "\n"
    assert "1/3 Propose(['m', 'n'])" in err and "3/3 Aggregate('m')" in err
    assert "calls: 3 (0 failed, 0 cached)" in err


def test_run_progress_counts_retries(monkeypatch, capsys):
    _use(monkeypatch, ScriptedClient(transient={"n": 1}))
    monkeypatch.setattr(
        cli.options, "RETRY", moa.Retry(attempts=3, initial=0, max_wait=0, jitter=0)
    )
    assert main(["run", "hi", "--pipeline", PIPE]) == 0
    assert "2/2 calls, 0 failed, 1 retried" in capsys.readouterr().err


@pytest.mark.parametrize(
    "recipe, calls", [("self_moa", 7), ("together_moa", 19), ("moa_lite", 13), ("robust_moa", 5)]
)
def test_run_recipe_with_model_uses_that_model_everywhere(recipe, calls, client, capsys):
    assert main(["run", "hi", "--recipe", recipe, "--model", "zz", "--seed", "1"]) == 0
    assert {c["model"] for c in client.calls} == {"zz"}
    assert len(client.calls) == calls


def test_run_recipe_on_the_local_model_uses_it_everywhere(monkeypatch, capsys):
    c = ScriptedClient()
    local = PROVIDERS["local"].model
    _use(monkeypatch, c, default_model=local)
    assert main(["run", "hi", "--recipe", "robust_moa", "--json", "/dev/null"]) == 0
    assert {call["model"] for call in c.calls} == {local}


def test_run_recipe_on_a_provider_keeps_the_recipes_models(monkeypatch, capsys):
    c = ScriptedClient()
    asked = _use(monkeypatch, c, default_model="gpt-5-nano-2025-08-07")
    assert main(["run", "hi", "--recipe", "robust_moa", "--provider", "openai"]) == 0
    assert asked == [("openai", None, None)]
    assert {call["model"] for call in c.calls} == set(moa.recipes.ROBUST_PROPOSERS)


def test_run_reads_the_prompt_from_a_file(client, capsys, tmp_path):
    path = tmp_path / "q.txt"
    path.write_text("What is 2+2?\n")
    assert main(["run", "--prompt-file", str(path), "--pipeline", PIPE, "--seed", "7"]) == 0
    assert capsys.readouterr().out == _expected(PIPE)[0] + "\n"


@pytest.mark.parametrize("argv", [[], ["--prompt-file", "-"]])
def test_run_reads_the_prompt_from_stdin(argv, client, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("What is 2+2?\n"))
    assert main(["run", *argv, "--pipeline", PIPE, "--seed", "7"]) == 0
    assert capsys.readouterr().out == _expected(PIPE)[0] + "\n"


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_run_without_a_prompt_exits_2(client, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", _Terminal())
    assert main(["run", "--pipeline", PIPE]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("moa: no prompt: ")
    assert client.calls == []


def test_run_with_an_empty_prompt_or_two_prompts_exits_2(client, capsys, tmp_path):
    assert main(["run", "   ", "--pipeline", PIPE]) == 2
    assert "the prompt is empty" in capsys.readouterr().err
    assert main(["run", "a", "--prompt-file", str(tmp_path / "q"), "--pipeline", PIPE]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["run", "--prompt-file", str(tmp_path / "missing"), "--pipeline", PIPE]) == 2
    assert "--prompt-file" in capsys.readouterr().err
    assert client.calls == []


def test_run_parse_error_exits_2_with_a_caret_and_runs_nothing(monkeypatch, capsys):
    asked = _use(monkeypatch, ScriptedClient())
    expr = "Propose(['m']) | __import__('os')"
    assert main(["run", "hi", "--pipeline", expr]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    first, line, caret = err.rstrip("\n").split("\n")
    assert first.startswith("moa: --pipeline: ")
    assert line == expr
    assert caret == " " * expr.index("__import__") + "^" * len("__import__")
    assert asked == []  # no client was even made


def test_run_unknown_step_suggests_the_right_name(client, capsys):
    assert main(["run", "hi", "--pipeline", "Propose(['m']) | Agregate('m')"]) == 2
    err = capsys.readouterr().err
    assert "did you mean Aggregate?" in err
    assert client.calls == []


def test_run_max_concurrency_caps_calls_in_flight(monkeypatch, capsys):
    c = ScriptedClient(delay=0.01)
    _use(monkeypatch, c)
    assert (
        main(["run", "hi", "--pipeline", "Propose(['m', 'm', 'm', 'm'])", "--max-concurrency", "2"])
        == 0
    )
    assert c.max_in_flight == 2


def test_run_recipe_and_pipeline_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "hi", "--pipeline", PIPE, "--recipe", "self_moa"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["run", "hi"])
    assert exc.value.code == 2
    assert "--pipeline" in capsys.readouterr().err


def test_run_json_round_trips_and_includes_the_cost(client, capsys, tmp_path, prices_file):
    path = tmp_path / "run.json"
    assert (
        main(
            [
                "run",
                "What is 2+2?",
                "--pipeline",
                PIPE,
                "--seed",
                "7",
                "--json",
                str(path),
                "--prices",
                prices_file,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    doc = json.loads(path.read_text())
    result, history = _expected(PIPE)
    assert doc["result"] == out[:-1] == result
    assert moa.parse_pipeline(doc["pipeline"]) == moa.parse_pipeline(PIPE)
    assert History.from_dict(doc) == history
    assert doc["seed"] == 7 and doc["totals"]["calls"] == 3
    expected = moa.cost(history, moa.DEFAULT_PRICES | PRICES)
    assert doc["cost"]["total"] == pytest.approx(expected.total) and expected.total > 0
    assert doc["cost"]["unknown"] == [] and doc["cost"]["text"] == str(expected)


def test_run_json_is_written_when_the_run_fails(monkeypatch, capsys, tmp_path):
    _use(monkeypatch, ScriptedClient(permanent={"bad"}))
    path = tmp_path / "run.json"
    code = main(
        ["run", "hi", "--pipeline", "Propose(['m', 'n']) | Aggregate('bad')", "--json", str(path)]
    )
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert "moa: Aggregate('bad') failed" in err and "scripted permanent failure" in err
    doc = json.loads(path.read_text())
    assert doc["result"] is None and "Aggregate('bad') failed" in doc["error"]
    assert [s["step"] for s in doc["steps"]] == ["Propose(['m', 'n'])", "Aggregate('bad')"]
    assert "scripted permanent failure" in doc["steps"][1]["calls"][0]["error"]


def test_run_failing_without_json_exits_1_with_the_message(monkeypatch, capsys):
    _use(monkeypatch, ScriptedClient(permanent={"m", "n"}))
    assert main(["run", "hi", "--pipeline", PIPE]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines()[-1].startswith("moa: Propose(['m', 'n']) failed: 0 of 2 calls")


def test_run_max_tokens_applies_to_every_llm_step(client, capsys):
    expr = "Propose(['m', 'n'], max_tokens=99) | (Synthesize(['m']) & Shuffle()) | Vote('m')"
    assert main(["run", "hi", "--pipeline", expr, "--max-tokens", "7"]) == 0
    assert len(client.calls) == 4
    assert {c["max_tokens"] for c in client.calls} == {7}


def test_with_max_tokens_rebuilds_nested_pipelines():
    p = Propose(["a"]) | (Synthesize(["a"]) & (Shuffle() | Aggregate("a"))) | Vote("a")
    assert with_max_tokens(p, 5) == (
        Propose(["a"], max_tokens=5)
        | Parallel(Synthesize(["a"], max_tokens=5), Shuffle() | Aggregate("a", max_tokens=5))
        | Vote("a", max_tokens=5)
    )
    assert with_max_tokens(Shuffle(), 5) == Shuffle()


def test_run_cache_second_run_is_all_cached_and_free(monkeypatch, capsys, tmp_path, prices_file):
    cache = str(tmp_path / "cache.sqlite")
    argv = [
        "run",
        "hi",
        "--pipeline",
        PIPE,
        "--seed",
        "3",
        "--cache",
        cache,
        "--prices",
        prices_file,
    ]
    first = ScriptedClient()
    _use(monkeypatch, first)
    assert main(argv) == 0
    out1, err1 = capsys.readouterr()
    assert len(first.calls) == 3 and "(0 failed, 0 cached)" in err1
    second = ScriptedClient()
    _use(monkeypatch, second)
    assert main(argv) == 0
    out2, err2 = capsys.readouterr()
    assert second.calls == [] and out2 == out1
    summary = err2.splitlines()[-1]
    assert "calls: 3 (0 failed, 3 cached)" in summary and "cost: $0 " in summary
    assert "2/2 calls, 0 failed, 0 retried, 2 cached" in err2


def test_run_bad_prices_file_exits_2(client, capsys, tmp_path):
    path = tmp_path / "p.json"
    path.write_text('{"m": [1]}')
    assert main(["run", "hi", "--pipeline", PIPE, "--prices", str(path)]) == 2
    assert capsys.readouterr().err.startswith(f"moa: --prices {path}: ")
    assert client.calls == []


def test_run_ctrl_c_exits_130(monkeypatch, capsys):
    async def interrupted(**_):
        os.kill(os.getpid(), signal.SIGINT)  # as the terminal sends it on Ctrl-C
        await anyio.sleep(10)

    _use(monkeypatch, interrupted)
    # Python leaves SIGINT ignored when it started ignored (a job run in the background by a
    # non-interactive shell, as some CI runners do): give it the handler a terminal's has.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert main(["run", "hi", "--pipeline", PIPE]) == 130
    finally:
        signal.signal(signal.SIGINT, previous)
    assert capsys.readouterr().err.endswith("moa: interrupted\n")


# -- batch ---------------------------------------------------------------------------------------
def _write_lines(path, *lines):
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def _out(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def prompts(tmp_path):
    return _write_lines(
        tmp_path / "in.jsonl",
        '"first?"',
        '{"prompt": "second?", "id": "b"}',
        "",
        '{"prompt": "third?"}',
        '"fourth?"',
    )


def test_batch_writes_a_line_per_prompt(client, capsys, tmp_path, prompts, prices_file):
    out = tmp_path / "out.jsonl"
    assert (
        main(
            [
                "batch",
                prompts,
                "-o",
                str(out),
                "--pipeline",
                PIPE,
                "--seed",
                "5",
                "--prices",
                prices_file,
            ]
        )
        == 0
    )
    lines = _out(out)
    # ids: as given, else the 0-based index among the prompts (blank lines are not prompts)
    by_id = {e["id"]: e for e in lines}
    assert len(lines) == 4 and set(by_id) == {0, "b", 2, 3}
    assert by_id["b"]["prompt"] == "second?" and by_id[2]["prompt"] == "third?"
    # the same seeds, results and histories as run_many with the same seed and ids
    results = anyio.run(
        functools.partial(
            moa.run_many,
            moa.parse_pipeline(PIPE),
            ["first?", "second?", "third?", "fourth?"],
            ScriptedClient(),
            seed=5,
            ids=[0, "b", 2, 3],
        )
    )
    for e, r in zip([by_id[0], by_id["b"], by_id[2], by_id[3]], results):
        assert e["result"] == r.result and e["error"] is None
        assert e["seed"] == r.history.seed
        assert e["calls"] == 3 and e["input_tokens"] == r.history.input_tokens
        assert e["cost"] == pytest.approx(moa.cost(r.history, moa.DEFAULT_PRICES | PRICES).total)
        assert History.from_dict(e["history"]) == r.history
    assert len(client.calls) == 12
    summary = capsys.readouterr().err.splitlines()[-1]
    assert summary.startswith("batch: 4 done, 0 failed, 0 skipped")


def test_batch_resumes_after_an_interruption(monkeypatch, capsys, tmp_path, prompts):
    out = tmp_path / "out.jsonl"
    whole = tmp_path / "whole.jsonl"
    _use(monkeypatch, ScriptedClient())
    assert main(["batch", prompts, "-o", str(whole), "--pipeline", PIPE, "--seed", "5"]) == 0
    done = {e["id"]: e for e in _out(whole)}
    # a batch killed after two prompts, in the middle of writing a third line
    out.write_text(
        json.dumps(done[0]) + "\n" + json.dumps(done[2]) + "\n" + json.dumps(done["b"])[:40]
    )
    capsys.readouterr()
    c = ScriptedClient()
    _use(monkeypatch, c)
    assert main(["batch", prompts, "-o", str(out), "--pipeline", PIPE, "--seed", "5"]) == 0
    err = capsys.readouterr().err
    assert len(c.calls) == 2 * 3  # only "second?" and "fourth?" ran
    assert "dropped a truncated last line" in err
    assert "batch: 2 done, 0 failed, 2 skipped" in err
    lines = _out(out)  # every line whole again
    assert [e["id"] for e in lines[:2]] == [0, 2]
    assert {e["id"] for e in lines} == {0, "b", 2, 3} and len(lines) == 4
    # a resumed prompt gets the seed it had in the whole batch
    for e in lines:
        assert e["seed"] == done[e["id"]]["seed"] and e["result"] == done[e["id"]]["result"]
    # and once all are done, a rerun runs nothing
    c = ScriptedClient()
    _use(monkeypatch, c)
    assert main(["batch", prompts, "-o", str(out), "--pipeline", PIPE, "--seed", "5"]) == 0
    assert c.calls == [] and "nothing to run" in capsys.readouterr().err
    assert _out(out) == lines


def test_batch_retries_failed_prompts_on_rerun(monkeypatch, capsys, tmp_path, prompts):
    out = tmp_path / "out.jsonl"

    def reply(model, messages):
        if "third?" in messages[-1]["content"]:
            raise Permanent(model)
        return f"{model} ok"

    _use(monkeypatch, ScriptedClient(reply))
    assert main(["batch", prompts, "-o", str(out), "--pipeline", PIPE]) == 1
    err = capsys.readouterr().err
    assert "batch: 3 done, 1 failed, 0 skipped" in err
    failed = [e for e in _out(out) if e["error"] is not None]
    assert [e["id"] for e in failed] == [2] and failed[0]["result"] is None
    assert "failed" in failed[0]["error"] and failed[0]["history"]["steps"]
    c = ScriptedClient()
    _use(monkeypatch, c)
    assert main(["batch", prompts, "-o", str(out), "--pipeline", PIPE]) == 0
    assert len(c.calls) == 3
    assert "1 failed before and run again" in capsys.readouterr().err
    lines = _out(out)  # OUT is only appended to: the failure stays, its answer comes after it
    assert [e["id"] for e in lines if e["error"] is not None] == [2]
    last = {e["id"]: e for e in lines}
    assert len(last) == 4 and all(e["error"] is None for e in last.values())


def test_batch_rejects_a_bad_line_naming_it(client, capsys, tmp_path):
    path = _write_lines(tmp_path / "in.jsonl", '"a"', '{"id": 1}', '"c"')
    assert main(["batch", path, "-o", str(tmp_path / "o"), "--pipeline", PIPE]) == 2
    assert capsys.readouterr().err.startswith(f"moa: {path} line 2: ")
    path = _write_lines(tmp_path / "in.jsonl", '"a"', "", "{not json")
    assert main(["batch", path, "-o", str(tmp_path / "o"), "--pipeline", PIPE]) == 2
    assert f"{path} line 3: not JSON" in capsys.readouterr().err
    path = _write_lines(
        tmp_path / "in.jsonl", '{"prompt": "a", "id": 1}', '{"prompt": "b", "id": 1}'
    )
    assert main(["batch", path, "-o", str(tmp_path / "o"), "--pipeline", PIPE]) == 2
    assert "line 2: id 1 is already used on line 1" in capsys.readouterr().err
    assert client.calls == [] and not (tmp_path / "o").exists()


def test_batch_max_runs_caps_prompts_in_flight(monkeypatch, capsys, tmp_path):
    c = ScriptedClient(delay=0.01)
    _use(monkeypatch, c)
    path = _write_lines(tmp_path / "in.jsonl", *(json.dumps(f"q{i}") for i in range(6)))
    assert (
        main(
            [
                "batch",
                path,
                "-o",
                str(tmp_path / "o"),
                "--pipeline",
                "Propose(['m'])",
                "--max-runs",
                "2",
            ]
        )
        == 0
    )
    assert c.max_in_flight == 2 and len(c.calls) == 6


# -- trace ---------------------------------------------------------------------------------------
JUDGE_REPLY = "The consensus, stated at length: " + "four " * 40 + "END-OF-JUDGE"


def _traced_run(monkeypatch, tmp_path, capsys):
    def reply(model, messages):
        if model == "judge":
            return JUDGE_REPLY
        return f"{model} proposes " + "words " * 40 + "TAIL"

    _use(monkeypatch, ScriptedClient(reply, permanent={"broken"}))
    path = tmp_path / "run.json"
    expr = "Propose(['m', 'n', 'broken']) | Shuffle() | Vote('judge')"
    assert (
        main(
            [
                "run",
                "What is 2+2?",
                "--pipeline",
                expr,
                "--json",
                str(path),
                "--seed",
                "2",
                "--provider",
                "openai",
            ]
        )
        == 0
    )
    capsys.readouterr()
    return path


@pytest.mark.parametrize("renderer", ["plain", "rich"])
def test_trace_renders_a_saved_run(renderer, monkeypatch, tmp_path, capsys, prices_file):
    path = _traced_run(monkeypatch, tmp_path, capsys)
    if renderer == "plain":
        monkeypatch.setattr(cli.progress, "load_rich", lambda: None)
    assert main(["trace", str(path), "--prices", prices_file]) == 0
    out = capsys.readouterr().out
    doc = json.loads(path.read_text())
    assert out.splitlines()[0].startswith("What is 2+2?  seed 2  4 calls (1 failed)")
    for text in (
        "Propose(['m', 'n', 'broken'])",
        "Shuffle()",
        "Vote('judge')",
        "transform",
        "scripted permanent failure",
        "broken",
        "cost unknown",
        JUDGE_REPLY,
    ):
        assert text in out, text
    m_call = doc["steps"][0]["calls"][0]
    dollars = moa.Prices(PRICES).call_cost("m", m_call["input_tokens"], m_call["output_tokens"])
    assert (
        f"m  {m_call['latency']:.2f} s  {m_call['input_tokens']} in / "
        f"{m_call['output_tokens']} out  {moa.Cost(dollars, (), {})}" in out
    )
    assert "words words" in out and "TAIL" not in out  # a proposal is shortened
    if renderer == "plain":
        assert "\n  1 Propose(['m', 'n', 'broken'])  llm, " in out
        assert "\n    call 3 broken  " in out


def test_trace_full_shows_every_text(monkeypatch, tmp_path, capsys):
    path = _traced_run(monkeypatch, tmp_path, capsys)
    monkeypatch.setattr(cli.progress, "load_rich", lambda: None)
    assert main(["trace", str(path), "--full"]) == 0
    assert capsys.readouterr().out.count("TAIL") == 2


def test_trace_shows_a_failed_run_and_cached_calls(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(cli.progress, "load_rich", lambda: None)
    cache, path = str(tmp_path / "c.sqlite"), tmp_path / "run.json"
    _use(monkeypatch, ScriptedClient(permanent={"bad"}))
    argv = [
        "run",
        "hi",
        "--pipeline",
        "Propose(['m']) | Aggregate('bad')",
        "--cache",
        cache,
        "--json",
        str(path),
    ]
    assert main(argv) == 1
    assert main(argv) == 1  # Propose's answer now comes from the cache
    capsys.readouterr()
    assert main(["trace", str(path)]) == 0
    out = capsys.readouterr().out
    assert "call 1 m  0.00 s  " in out and "cached, $0" in out
    assert "failed: Aggregate('bad') failed" in out
    assert "error: " in out and "scripted permanent failure" in out


def test_trace_reads_a_line_of_a_batch_output(client, monkeypatch, tmp_path, capsys, prompts):
    monkeypatch.setattr(cli.progress, "load_rich", lambda: None)
    out = tmp_path / "out.jsonl"
    assert main(["batch", prompts, "-o", str(out), "--pipeline", PIPE]) == 0
    capsys.readouterr()
    second = _out(out)[1]
    assert main(["trace", str(out), "--line", "2"]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith(f"{second['prompt']}  seed {second['seed']}  3 calls")
    assert f"result: {second['result']}" in shown
    assert main(["trace", str(out)]) == 2
    assert "--line N" in capsys.readouterr().err
    assert main(["trace", str(out), "--line", "9"]) == 2


# -- the real model ------------------------------------------------------------------------------
@pytest.mark.local
def test_moa_run_console_script_answers_on_the_embedded_model(model_path, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    proc = subprocess.run(
        [
            *_moa_command(),
            "run",
            "What is 2+2?",
            "--pipeline",
            "Propose(['m','m']) | Aggregate('m')",
            "--max-tokens",
            "24",
            "--json",
            str(tmp_path / "run.json"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() and proc.stdout.endswith("\n")
    assert "calls: 3 (0 failed, 0 cached)" in proc.stderr
    doc = json.loads((tmp_path / "run.json").read_text())
    assert doc["result"] == proc.stdout[:-1]
    assert {c["max_tokens"] for s in doc["steps"] for c in s["calls"]} == {24}


def test_the_embedded_model_is_free_and_trace_keeps_the_prices(tmp_path, monkeypatch, capsys):
    """On the local provider every model name labels the same local model: $0, not unknown;
    the saved run carries its prices, so trace shows the same cost; --prices still wins."""
    from moa.testing import ScriptedClient

    monkeypatch.setattr(
        cli.providers, "make_client", lambda provider, base_url, model: (ScriptedClient(), "m")
    )
    saved = tmp_path / "run.json"
    assert (
        main(
            ["run", "q", "--pipeline", "Propose(['x', 'y']) | Aggregate('x')", "--json", str(saved)]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "cost: $0 " in err and "unknown" not in err
    doc = json.loads(saved.read_text())
    assert doc["prices"] == {"x": [0.0, 0.0], "y": [0.0, 0.0]} and doc["cost"]["total"] == 0
    assert main(["trace", str(saved)]) == 0
    assert "unknown" not in capsys.readouterr().out
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"x": [1_000_000, 0]}))
    assert main(["trace", str(saved), "--prices", str(prices)]) == 0
    x_in = sum(c["input_tokens"] for st in doc["steps"] for c in st["calls"] if c["model"] == "x")
    assert f"cost ${x_in:.2f}" in capsys.readouterr().out  # x's input tokens at $1 each
    assert (
        main(
            [
                "run",
                "q",
                "--pipeline",
                "Propose(['x'])",
                "--provider",
                "local",
                "--base-url",
                "http://127.0.0.1:9/v1",
                "--model",
                "x",
            ]
        )
        == 0
    )
    assert "unknown (x)" in capsys.readouterr().err


def test_batch_resume_after_a_whole_last_line_without_its_newline(
    monkeypatch, capsys, tmp_path, prompts
):
    whole = tmp_path / "whole.jsonl"
    _use(monkeypatch, ScriptedClient())
    assert main(["batch", prompts, "-o", str(whole), "--pipeline", PIPE, "--seed", "5"]) == 0
    done = {e["id"]: e for e in _out(whole)}
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps(done[0]) + "\n" + json.dumps(done["b"]))  # killed before "\n"
    _use(monkeypatch, ScriptedClient())
    assert main(["batch", prompts, "-o", str(out), "--pipeline", PIPE, "--seed", "5"]) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 4 and {json.loads(x)["id"] for x in lines} == {0, "b", 2, 3}
    c = ScriptedClient()
    _use(monkeypatch, c)
    assert main(["batch", prompts, "-o", str(out), "--pipeline", PIPE, "--seed", "5"]) == 0
    assert c.calls == []  # nothing glued, nothing lost, nothing run twice


def test_batch_refuses_an_id_whose_prompt_changed(client, capsys, tmp_path):
    out = tmp_path / "out.jsonl"
    first = _write_lines(tmp_path / "a.jsonl", '"a?"', '"b?"')
    assert main(["batch", first, "-o", str(out), "--pipeline", PIPE]) == 0
    edited = _write_lines(tmp_path / "b.jsonl", '"NEW?"', '"a?"', '"b?"')
    capsys.readouterr()
    assert main(["batch", edited, "-o", str(out), "--pipeline", PIPE]) == 2
    err = capsys.readouterr().err
    assert "holds id 0 for another prompt ('a?', not 'NEW?')" in err
    assert len(_out(out)) == 2


def test_batch_lines_keep_their_prices_for_trace(client, capsys, tmp_path):
    out = tmp_path / "out.jsonl"
    assert (
        main(
            [
                "batch",
                _write_lines(tmp_path / "in.jsonl", '"a?"'),
                "-o",
                str(out),
                "--pipeline",
                PIPE,
            ]
        )
        == 0
    )
    line = _out(out)[0]
    assert line["cost"] == 0 and line["prices"] == {"m": [0.0, 0.0], "n": [0.0, 0.0]}
    capsys.readouterr()
    assert main(["trace", str(out), "--line", "1"]) == 0
    assert "unknown" not in capsys.readouterr().out


def test_local_runs_price_table_models_at_zero_unless_the_user_prices_them(
    client, capsys, tmp_path
):
    pipe = "Propose(['gpt-4o']) | Aggregate('gpt-4o')"
    assert main(["run", "q", "--pipeline", pipe]) == 0
    assert "cost: $0 " in capsys.readouterr().err  # the embedded model, not gpt-4o's price
    prices = tmp_path / "p.json"
    prices.write_text(json.dumps({"gpt-4o": [1_000_000, 0]}))
    assert main(["run", "q", "--pipeline", pipe, "--prices", str(prices)]) == 0
    assert "cost: $0 " not in capsys.readouterr().err


def test_the_cache_namespace_is_the_provider(monkeypatch, capsys, tmp_path):
    cache = str(tmp_path / "c.sqlite")
    _use(monkeypatch, ScriptedClient(lambda m, _: "local answer"))
    assert main(["run", "q", "--pipeline", "Propose(['m'])", "--cache", cache, "-q"]) == 0
    hosted = ScriptedClient(lambda m, _: "hosted answer")
    _use(monkeypatch, hosted)
    assert (
        main(
            [
                "run",
                "q",
                "--pipeline",
                "Propose(['m'])",
                "--cache",
                cache,
                "-q",
                "--provider",
                "openai",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.splitlines() == ["local answer", "hosted answer"]
    assert len(hosted.calls) == 1


def test_run_stream_writes_the_answer_as_it_comes(monkeypatch, capsys):
    written = []

    class Out(io.StringIO):
        def write(self, text):
            written.append(text)
            return super().write(text)

    c = ScriptedClient(lambda m, _: f"{m} one two three")
    _use(monkeypatch, c)
    out = Out()
    monkeypatch.setattr(sys, "stdout", out)
    assert main(["run", "q", "--pipeline", PIPE, "--stream", "--seed", "7"]) == 0
    assert out.getvalue() == "m one two three\n"
    assert written[:4] == ["m ", "one ", "two ", "three"]  # chunk by chunk, then the newline
    assert c.streams == 1 and "step 3/3 Aggregate('m')" in capsys.readouterr().err


def test_run_stream_prints_a_whole_answer_when_the_last_step_does_not_write_it(client, capsys):
    assert main(["run", "q", "--pipeline", "Propose(['m', 'n']) | Take(1)", "--stream"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.strip() and client.streams == 0


def test_run_stream_failure_mid_answer_exits_1_and_ends_the_line(monkeypatch, capsys):
    _use(monkeypatch, ScriptedClient(lambda m, _: f"{m} one two three", break_stream={"m": 2}))
    assert main(["run", "q", "--pipeline", "Propose(['n']) | Aggregate('m')", "--stream"]) == 1
    out, err = capsys.readouterr()
    assert out == "m one \n" and "the reply stream broke after 2 chunk(s)" in err


# -- seeds reach the real model ------------------------------------------------------------------
SEEDED_PIPE = (
    "Propose([Agent('m', temp=0.9), 'm', 'm'], max_tokens=24) | Aggregate('m', max_tokens=24)"
)


def _moa(*argv, cwd):
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    return subprocess.run(
        [*_moa_command(), *argv], env=env, capture_output=True, text=True, timeout=300, cwd=cwd
    )


def _run_doc(path):
    """A saved run with its timings left out (they are not part of a run's identity)."""
    return History.from_dict(json.loads(Path(path).read_text())), json.loads(
        Path(path).read_text()
    )["result"]


@pytest.mark.local
def test_the_same_seed_gives_the_same_answer_and_history_on_the_embedded_model(
    model_path, tmp_path
):
    runs = []
    for i in range(2):  # two processes: nothing carried over but the seed
        proc = _moa(
            "run",
            "Name a fruit and its color.",
            "--pipeline",
            SEEDED_PIPE,
            "--seed",
            "7",
            "--json",
            str(tmp_path / f"{i}.json"),
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr
        runs.append((proc.stdout, *_run_doc(tmp_path / f"{i}.json")))
    (out1, history1, result1), (out2, history2, result2) = runs
    assert out1 == out2 and result1 == result2 and history1 == history2
    seeds = [c.seed for c in history1.calls]
    assert None not in seeds and len(set(seeds)) == 4
    # the three proposals were sampled (temperature > 0) and still differ from each other
    assert len({c.text for c in history1.calls[:3]}) > 1
    other = _moa(
        "run",
        "Name a fruit and its color.",
        "--pipeline",
        SEEDED_PIPE,
        "--seed",
        "8",
        "--json",
        str(tmp_path / "8.json"),
        cwd=tmp_path,
    )
    assert other.returncode == 0, other.stderr
    assert _run_doc(tmp_path / "8.json")[0] != history1


@pytest.mark.local
def test_a_resumed_seeded_batch_equals_an_uninterrupted_one(model_path, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(
        "".join(
            json.dumps(q) + "\n" for q in ["Name a color.", "Name an animal.", "Name a planet."]
        )
    )
    whole, resumed = tmp_path / "whole.jsonl", tmp_path / "resumed.jsonl"
    args = [
        "--pipeline",
        "Propose(['m'] * 2, max_tokens=16) | Aggregate('m', max_tokens=16)",
        "--seed",
        "1",
        "--concurrency",
        "2",
        "-q",
    ]
    assert _moa("batch", str(src), "-o", str(whole), *args, cwd=tmp_path).returncode == 0
    assert _moa("batch", str(src), "-o", str(resumed), *args, cwd=tmp_path).returncode == 0
    # As if killed after its first result: keep one line, then resume.
    first = resumed.read_text().splitlines()[0]
    resumed.write_text(first + "\n")
    proc = _moa("batch", str(src), "-o", str(resumed), *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr

    def lines(path):
        out = {}
        for line in path.read_text().splitlines():
            doc = json.loads(line)
            out[json.dumps(doc["id"])] = (
                doc["result"],
                doc["seed"],
                History.from_dict(doc["history"]),
            )
        return out

    assert lines(resumed) == lines(whole) and len(lines(whole)) == 3


def test_batch_reads_stdin_as_it_goes_and_keeps_what_ran_before_a_bad_line(
    client, capsys, monkeypatch, tmp_path
):
    out = tmp_path / "out.jsonl"
    lines = b'"first?"\n"second?"\n{not json}\n"never read?"\n'
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(lines)))
    assert main(["batch", "-", "-o", str(out), "--pipeline", PIPE, "--concurrency", "1"]) == 2
    assert "- line 3: not JSON" in capsys.readouterr().err
    done = [json.loads(line)["prompt"] for line in out.read_text().splitlines()]
    assert done == ["first?", "second?"]


def test_batch_checks_a_whole_input_file_before_any_call(client, capsys, tmp_path):
    out = tmp_path / "out.jsonl"
    src = _write_lines(tmp_path / "in.jsonl", '"first?"', '"second?"', "{not json}")
    assert main(["batch", src, "-o", str(out), "--pipeline", PIPE]) == 2
    assert "line 3: not JSON" in capsys.readouterr().err
    assert client.calls == [] and not out.exists()


# -- a conversation from a file --------------------------------------------------------------------
CHAT = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "Name a planet."},
    {"role": "assistant", "content": "Mars."},
    {"role": "user", "content": "Its moons?"},
]


@pytest.mark.parametrize("wrapped", [False, True])
def test_run_takes_a_conversation_from_a_messages_file(client, capsys, tmp_path, wrapped):
    path = tmp_path / "chat.json"
    path.write_text(json.dumps({"messages": CHAT} if wrapped else CHAT))
    out = tmp_path / "run.json"
    assert (
        main(
            ["run", "--messages", str(path), "--pipeline", PIPE, "--seed", "3", "--json", str(out)]
        )
        == 0
    )
    answer = capsys.readouterr().out.strip()
    expected, _ = moa.run_sync(moa.parse_pipeline(PIPE), CHAT, ScriptedClient(), seed=3)
    assert answer == expected
    # Every call read the earlier turns; the saved history keeps them.
    assert all(c["messages"][1]["content"] == "Name a planet." for c in client.calls)
    saved = History.from_dict(json.loads(out.read_text()))
    assert [dict(m) for m in saved.conversation] == CHAT[:3] and saved.prompt == "Its moons?"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[", "not JSON"),
        ("[]", "at least one message"),
        ('[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]', "user"),
        ('[{"role": "wizard", "content": "q"}]', "wizard"),
        ('"q"', "a conversation"),
    ],
)
def test_a_bad_messages_file_is_a_usage_error_before_any_call(
    client, capsys, tmp_path, text, words
):
    path = tmp_path / "chat.json"
    path.write_text(text)
    assert main(["run", "--messages", str(path), "--pipeline", PIPE]) == 2
    err = capsys.readouterr().err
    assert f"--messages {path}" in err and words in err
    assert client.calls == []
    assert main(["run", "q", "--messages", str(path), "--pipeline", PIPE]) == 2
    assert "not both" in capsys.readouterr().err


# -- batch rows with a conversation -----------------------------------------------------------------
def _chat_rows(tmp_path, chat=CHAT, name="in.jsonl"):
    return _write_lines(
        tmp_path / name,
        json.dumps({"messages": chat, "id": "c"}),
        json.dumps({"prompt": "Name a colour.", "id": "p"}),
    )


def test_batch_runs_a_messages_row_as_the_whole_conversation(client, tmp_path):
    out = tmp_path / "out.jsonl"
    assert main(["batch", _chat_rows(tmp_path), "-o", str(out), "--pipeline", PIPE, "-q"]) == 0
    by_id = {e["id"]: e for e in _out(out)}
    # Every call of the conversation's run read its earlier turns, the system message first.
    chat_calls = [c for c in client.calls if "Its moons?" in c["messages"][-1]["content"]]
    assert len(chat_calls) == 3
    assert all(c["messages"][1:3] == CHAT[1:3] for c in chat_calls)
    assert all(c["messages"][0]["content"].startswith("Answer briefly.") for c in chat_calls)
    assert not any("Mars." in str(c["messages"]) for c in client.calls if c not in chat_calls)
    # OUT keeps the conversation; its prompt is the last turn; a prompt row has no messages.
    c, p = by_id["c"], by_id["p"]
    assert c["messages"] == CHAT and c["prompt"] == "Its moons?" and "messages" not in p
    saved = History.from_dict(c["history"])
    assert [dict(m) for m in saved.conversation] == CHAT[:3]


def test_batch_messages_rows_are_seeded_as_run_many_seeds_them(client, tmp_path):
    out = tmp_path / "out.jsonl"
    assert (
        main(["batch", _chat_rows(tmp_path), "-o", str(out), "--pipeline", PIPE, "--seed", "5"])
        == 0
    )
    want = anyio.run(
        functools.partial(
            moa.run_many,
            moa.parse_pipeline(PIPE),
            [CHAT, "Name a colour."],
            ScriptedClient(),
            ids=["c", "p"],
            seed=5,
        )
    )
    by_id = {e["id"]: e for e in _out(out)}
    for r in want:
        assert by_id[r.id]["result"] == r.result
        assert History.from_dict(by_id[r.id]["history"]) == r.history


@pytest.mark.parametrize(
    ("row", "words"),
    [
        ({"messages": [{"role": "wizard", "content": "q"}]}, "messages[0]: role must be one of"),
        ({"messages": CHAT[:3]}, "messages: the last message is the question"),
        ({"messages": "Its moons?"}, "messages: a conversation is a list"),
        ({"messages": []}, "at least one message"),
        ({"messages": [{"role": "user", "content": " "}]}, "messages[0]: content must be"),
        ({"messages": CHAT, "prompt": "Its moons?"}, "give a prompt or messages, not both"),
    ],
)
def test_batch_refuses_a_bad_messages_row_naming_its_line_before_any_call(
    client, capsys, tmp_path, row, words
):
    src = _write_lines(tmp_path / "in.jsonl", '"first?"', json.dumps(row))
    out = tmp_path / "out.jsonl"
    assert main(["batch", src, "-o", str(out), "--pipeline", PIPE]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"moa: {src} line 2: ") and words in err, err
    assert client.calls == [] and not out.exists()


def test_batch_resumes_a_conversation_and_refuses_one_whose_earlier_turn_changed(
    client, capsys, tmp_path
):
    out = tmp_path / "out.jsonl"
    run = ["-o", str(out), "--pipeline", PIPE]
    assert main(["batch", _chat_rows(tmp_path), *run]) == 0
    calls, before = len(client.calls), out.read_bytes()
    assert main(["batch", _chat_rows(tmp_path, name="again.jsonl"), *run]) == 0
    assert len(client.calls) == calls and "nothing to run" in capsys.readouterr().err
    edited = [*CHAT[:2], {"role": "assistant", "content": "Venus."}, CHAT[3]]
    assert main(["batch", _chat_rows(tmp_path, edited, "edited.jsonl"), *run]) == 2
    err = capsys.readouterr().err
    assert "holds id 'c' for another prompt" in err and "earlier turns differ" in err
    assert len(client.calls) == calls and out.read_bytes() == before


def test_a_prompts_digest_is_the_one_older_outs_hold():
    from moa.cli.batchout import digest

    # An OUT written before conversations holds this digest for "a?": it must still resume.
    assert digest("a?").hex() == "1f653293b15da8f58717dc9661e28226"
    # A conversation of one message is its prompt, as the run reads it so; with earlier turns
    # every turn counts, and a conversation never hashes as its last prompt does.
    assert digest("a?", [{"role": "user", "content": "a?"}]) == digest("a?")
    assert digest("Its moons?", CHAT) != digest("Its moons?")
    assert digest("Its moons?", CHAT) != digest("Its moons?", [*CHAT[:2], CHAT[1], CHAT[3]])


def test_version_prints_moas_version(capsys):
    import moa
    from moa.cli import main

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"moa {moa.__version__}\n"
    assert (ROOT / "CHANGELOG.md").read_text().count(moa.__version__.split(".dev")[0]) >= 1

"""examples/: every script's pipeline is the seed's, runs with the scripted client, and its
main() fails cleanly (one line naming what is missing, exit status 1) without a provider."""

import importlib.util
import os
import subprocess
import sys
import types
from functools import cache
from pathlib import Path

import pytest
from scripted import ScriptedClient, default_reply

import moa
from moa import Aggregate, Dropout, Propose, Rank, Shuffle, Synthesize, run_sync
from moa.recipes import self_moa

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENROUTER_API_KEY", "GROQ_API_KEY")


@cache
def load(name: str) -> types.ModuleType:
    """Import examples/<name>.py by path (its ``_common`` helper sits beside it)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(EXAMPLES))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(EXAMPLES))
    return module


NANO = "gpt-5-nano-2025-08-07"
LLAMA = "llama-3.3-70b-versatile"
OPENROUTER = ["qwen/qwen-2.5-72b-instruct", "meta-llama/llama-3.3-70b-instruct",
              "mistralai/mixtral-8x22b-instruct"]
GROQ_FREE = [LLAMA, "llama-3.1-8b-instant", "qwen/qwen3-32b",
             "meta-llama/llama-4-scout-17b-16e-instruct"]

# (script, function, the pipeline it must build, steps, calls)
PIPELINES = [
    ("openai_basic", "build_pipeline",
     Propose([NANO] * 3, temp=0.7) | Aggregate(NANO), 2, 4),
    ("openai_self_moa", "build_pipeline",
     Propose([NANO] * 6, temp=0.7) | Aggregate(NANO), 2, 7),
    ("multi_provider", "build_pipeline",
     Propose([NANO, "claude-sonnet-4-5", NANO]) | Shuffle() | Aggregate("claude-sonnet-4-5"), 3, 4),
    ("openrouter_moa", "build_pipeline",
     Propose(OPENROUTER, temp=0.7, max_tokens=512)
     | Synthesize(OPENROUTER, temp=0.7, max_tokens=512)
     | Aggregate("qwen/qwen-2.5-72b-instruct"), 3, 7),
    ("groq_free", "build_pipeline",
     Propose(GROQ_FREE, temp=0.7, max_tokens=512) | Dropout(0.2) | Aggregate(LLAMA), 3, 5),
    ("groq_free", "free_self_moa",
     Propose([LLAMA] * 4, temp=0.7) | Aggregate(LLAMA), 2, 5),
    ("with_history", "build_pipeline",
     Propose([LLAMA] * 4, temp=0.7, max_tokens=256) | Shuffle() | Rank(LLAMA, n=2)
     | Aggregate(LLAMA, max_tokens=512), 4, 6),
]
PIPELINE_ARGS = ("script", "fn", "expected", "steps", "calls")
PIPELINE_IDS = [f"{script}.{fn}" for script, fn, *_ in PIPELINES]

# (script, the variables its main() needs)
SCRIPTS = [
    ("openai_basic", ("OPENAI_API_KEY",)),
    ("openai_self_moa", ("OPENAI_API_KEY",)),
    ("multi_provider", ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")),
    ("openrouter_moa", ("OPENROUTER_API_KEY",)),
    ("groq_free", ("GROQ_API_KEY",)),
    ("with_history", ("GROQ_API_KEY",)),
]
SCRIPT_IDS = [s for s, _ in SCRIPTS]


def test_every_script_is_covered():
    on_disk = {p.stem for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")}
    assert on_disk == set(SCRIPT_IDS)
    assert (EXAMPLES / "EXAMPLES.md").is_file()


@pytest.mark.parametrize(PIPELINE_ARGS, PIPELINES, ids=PIPELINE_IDS)
def test_pipeline_is_the_seeds(script, fn, expected, steps, calls):
    p = getattr(load(script), fn)()
    assert p == expected
    assert eval(repr(p), vars(moa)) == p


def test_self_moa_examples_use_the_recipe():
    assert load("openai_self_moa").build_pipeline() == self_moa(NANO, n=6)
    assert load("groq_free").free_self_moa() == self_moa(LLAMA, n=4)


@pytest.mark.parametrize(PIPELINE_ARGS, PIPELINES, ids=PIPELINE_IDS)
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_pipeline_runs_with_the_scripted_client(script, fn, expected, steps, calls, backend):
    client = ScriptedClient()
    result, history = run_sync(getattr(load(script), fn)(), "What is 2 + 2?", client,
                               backend=backend, seed=3)
    assert result
    assert history.outputs == (result,)
    assert len(history) == steps
    assert history.total_calls == calls == len(client.calls)
    assert not history.failed_calls
    assert history.input_tokens > 0 and history.output_tokens > 0


def rank_judge(model, messages):
    """Answers like the scripted default, but a Rank judge names responses 3 then 1."""
    if messages[0]["content"].startswith("Rank the numbered responses"):
        return "3, 1"
    return default_reply(model, messages)


def test_with_history_formats_every_step():
    mod = load("with_history")
    result, history = run_sync(mod.build_pipeline(), "q", ScriptedClient(rank_judge), seed=1)
    ranked = history[2]
    assert ranked.outputs == (ranked.inputs[2], ranked.inputs[0])
    text = mod.format_history(history)
    lines = text.splitlines()
    for i, step in enumerate(history, 1):
        header = lines.index(f"{i}. {step.step}")
        in_tokens = sum(c.input_tokens for c in step.calls)
        assert lines[header + 1].startswith(
            f"   {len(step.inputs)} in -> {len(step.outputs)} outputs | {len(step.calls)} calls"
            f" | {in_tokens:,} tokens in /"
        )
    assert "1. Propose" in text and "3. Rank(" in text and "4. Aggregate(" in text
    assert sum(line.startswith(f"     {LLAMA}: ") for line in lines) == 6
    assert lines[-1].startswith(f"Total: 4 steps, 6 calls (0 failed), {history.input_tokens:,} "
                                f"tokens in / {history.output_tokens:,} out")
    assert f"seed {history.seed}" in lines[-1]


def test_with_history_shows_notes_failures_and_unknown_tokens():
    mod = load("with_history")

    async def unsure(*, model, messages, temp, max_tokens):
        return "no idea which is best", None, None

    p = Propose(["a", "b"]) | Rank("judge", n=1)
    client = ScriptedClient(permanent={"b"})

    async def mixed(*, model, messages, temp, max_tokens):
        if model == "judge":
            return await unsure(model=model, messages=messages, temp=temp, max_tokens=max_tokens)
        return await client(model=model, messages=messages, temp=temp, max_tokens=max_tokens)

    _, history = run_sync(p, "q", mixed, retry=moa.Retry(attempts=1))
    text = mod.format_history(history)
    assert "FAILED after 1 attempts" in text
    assert "note: Rank: no response number" in text
    assert "note: 1 of 2 calls failed" in text
    assert "judge: " in text and "? in / ? out" in text
    assert text.splitlines()[-1].startswith("Total: 2 steps, 3 calls (1 failed), ? tokens in")


@pytest.fixture
def no_keys(monkeypatch):
    for key in KEYS:
        monkeypatch.delenv(key, raising=False)


@pytest.mark.parametrize(("script", "keys"), SCRIPTS, ids=SCRIPT_IDS)
def test_main_without_its_key_exits_1_naming_it(script, keys, no_keys, capsys):
    with pytest.raises(SystemExit) as exc:
        load(script).main([])
    assert exc.value.code == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.endswith("\n")
    for key in keys:
        assert key in err


def test_main_names_only_the_missing_key(monkeypatch, no_keys, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with pytest.raises(SystemExit) as exc:
        load("multi_provider").main([])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "ANTHROPIC_API_KEY" in err and "OPENAI_API_KEY" not in err


def test_an_empty_key_counts_as_missing(monkeypatch, no_keys, capsys):
    monkeypatch.setenv("GROQ_API_KEY", "")
    with pytest.raises(SystemExit) as exc:
        load("groq_free").main([])
    assert exc.value.code == 1
    assert "GROQ_API_KEY" in capsys.readouterr().err


@pytest.mark.parametrize(("script", "keys"), SCRIPTS, ids=SCRIPT_IDS)
def test_main_without_provider_clients_says_so(script, keys, monkeypatch, capsys):
    for key in keys:
        monkeypatch.setenv(key, "test-key")
    monkeypatch.setitem(sys.modules, "moa.clients", None)  # any import of it fails
    with pytest.raises(SystemExit) as exc:
        load(script).main([])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "moa.clients" in err and "not installed yet" in err


class FakeClients(types.ModuleType):
    """Stands in for the announced ``moa.clients`` (openai_client(base_url=, api_key=),
    litellm_client(), route({prefix: client})), answering with the scripted client and
    recording how each client was made."""

    def __init__(self):
        super().__init__("moa.clients")
        self.scripted = ScriptedClient()
        self.made = []

    def openai_client(self, *, base_url, api_key):
        self.made.append(("openai", base_url, api_key))
        return self.scripted

    def litellm_client(self):
        self.made.append(("litellm",))
        return self.scripted

    def route(self, table):
        self.made.append(("route", tuple(table)))

        async def routed(*, model, messages, temp, max_tokens):
            client = next(c for prefix, c in table.items() if model.startswith(prefix))
            return await client(model=model, messages=messages, temp=temp, max_tokens=max_tokens)

        return routed


@pytest.mark.parametrize(("script", "keys"), SCRIPTS, ids=SCRIPT_IDS)
def test_main_runs_end_to_end_with_clients(script, keys, monkeypatch, capsys):
    fake = FakeClients()
    for key in keys:
        monkeypatch.setenv(key, f"{key.lower()}-value")
    monkeypatch.setitem(sys.modules, "moa.clients", fake)
    load(script).main(["What", "is", "2 + 2?"])
    out = capsys.readouterr().out
    assert out.strip()
    assert fake.scripted.calls
    assert all(c["messages"][-1]["content"].endswith("What is 2 + 2?") for c in fake.scripted.calls)
    for made in fake.made:
        if made[0] == "openai":
            assert made[2] in {f"{k.lower()}-value" for k in keys}
    if script.startswith(("groq", "with_history")):
        assert all(c["model"].startswith("groq/") for c in fake.scripted.calls)
        assert fake.made == [("litellm",)]
    if script == "with_history":
        assert "Total: 4 steps, 6 calls (0 failed)" in out


@pytest.mark.parametrize(("script", "keys"), SCRIPTS, ids=SCRIPT_IDS)
def test_script_run_directly_exits_1_without_its_key(script, keys):
    env = {k: v for k, v in os.environ.items() if k not in KEYS}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, str(EXAMPLES / f"{script}.py")], env=env,
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1
    assert keys[0] in proc.stderr

"""Hostile input gets moa's own clear error where it enters; nothing hangs or leaks. Each test
here reproduces a defect an adversarial pass found and failed before its fix."""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import sys
import textwrap
import tracemalloc

import anyio
import pytest
from conftest import FAST, on_a_virtual_clock
from scripted import ScriptedClient

import moa
from moa import (
    Aggregate,
    History,
    Limits,
    ModelLimit,
    Parallel,
    Pipeline,
    Propose,
    Retry,
    Shuffle,
    Take,
)
from moa._bounds import MAX_NESTING, MAX_REPLY_CHARS
from moa.cli import main
from moa.errors import ClientOutputError, RetryAfterTooLongError, StepFailedError

pytestmark = pytest.mark.anyio


# -- 3. unbounded sizes are refused at construction ----------------------------------------------
def _nested(depth: int):
    step = Take(1)
    for i in range(depth):
        step = (step | Take(2)) if i % 2 else (step & Take(3))
    return step


def test_nesting_past_the_limit_is_refused_when_built_not_when_run():
    with pytest.raises(ValueError, match=f"nest at most {MAX_NESTING} levels"):
        _nested(200)


async def test_a_pipeline_at_the_nesting_limit_reprs_hashes_and_runs():
    deepest = _nested(MAX_NESTING - 1)
    assert eval(repr(deepest), vars(moa)) == deepest
    assert hash(deepest) == hash(eval(repr(deepest), vars(moa)))
    result, history = await moa.run(Propose(["m"]) | deepest, "q", ScriptedClient(), seed=1)
    assert result and history.steps


@pytest.mark.parametrize("n", [10**9, 10**20, 10**5000], ids=["1e9", "1e20", "1e5000"])
def test_repeating_a_step_absurdly_often_is_refused_at_once(n):
    # At once: before any work in proportion to n. Building the n steps first would allocate
    # 8 bytes a step (8 GB at 10**9); the refusal itself takes a few kilobytes.
    step = Take(1)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="repeats 0 to 10,000 times"):
            step * n
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**20


def test_a_huge_parallel_is_refused():
    with pytest.raises(ValueError, match="at most 10,000 branches"):
        Parallel(*[Take(i) for i in range(10_001)])


# -- 4. Retry-After is capped --------------------------------------------------------------------
def _rate_limited(after: float):
    calls = []

    async def client(*, model, messages, temp, max_tokens):
        calls.append(anyio.current_time())
        raise moa.ProviderError(
            "rate limited", model=model, retryable=True, retry_after=after, status=429
        )

    return client, calls


@on_a_virtual_clock  # trio alone: "no time passed at all" is exact only there
@pytest.mark.parametrize("after", [86_400.0, float("inf")])
async def test_a_retry_after_past_the_cap_fails_the_call_at_once(after):
    client, calls = _rate_limited(after)
    start = anyio.current_time()
    with pytest.raises(StepFailedError) as info:
        await moa.run(Propose(["m"]), "q", client, retry=Retry(attempts=5, max_retry_after=60))
    # not slept through, nor for the 60 s cap: any sleep would have moved the virtual clock
    assert anyio.current_time() == start and len(calls) == 1
    call = info.value.history.calls[0]
    assert "RetryAfterTooLongError" in call.error and "max_retry_after=60" in call.error
    assert f"wait {after:g} s" in call.error


async def test_a_retry_after_within_the_cap_is_waited_for():
    client, calls = _rate_limited(0.2)
    with pytest.raises(StepFailedError):
        await moa.run(
            Propose(["m"]),
            "q",
            client,
            retry=Retry(attempts=2, initial=0, jitter=0, max_retry_after=1),
        )
    assert len(calls) == 2 and calls[1] - calls[0] >= 0.2


@on_a_virtual_clock  # trio alone: "no time passed at all" is exact only there
async def test_a_retry_after_past_the_cap_does_not_pause_the_model_for_others():
    state = {"n": 0}

    async def client(*, model, messages, temp, max_tokens):
        state["n"] += 1
        if state["n"] == 1:
            raise moa.ProviderError(
                "daily quota", model=model, retryable=True, retry_after=86_400, status=429
            )
        return "ok", 1, 1

    limits = Limits(default=ModelLimit(max_concurrency=1))
    start = anyio.current_time()
    result, history = await moa.run(Propose(["m"] * 3), "q", client, limits=limits, retry=FAST)
    # the other two calls were not held by a pause: no time passed on the virtual clock
    assert anyio.current_time() == start
    assert sorted(c.ok for c in history.calls) == [False, True, True]


def test_retry_after_too_long_is_a_provider_error_not_retried():
    err = Retry(max_retry_after=5).too_long(
        moa.ProviderError("x", model="m", retryable=True, retry_after=6)
    )
    assert isinstance(err, RetryAfterTooLongError) and isinstance(err, moa.ProviderError)
    assert err.retryable is False and err.model == "m"
    assert (
        Retry().too_long(
            moa.ProviderError("x", model="m", retryable=True, retry_after=float("nan"))
        )
        is None
    )
    with pytest.raises(ValueError, match="max_retry_after"):
        Retry(max_retry_after=-1)


# -- 6. client output shapes ---------------------------------------------------------------------
async def test_a_namedtuple_reply_is_the_right_shape():
    Reply = collections.namedtuple("Reply", "text input_tokens output_tokens")

    async def client(*, model, messages, temp, max_tokens):
        return Reply("x", 1, 2)

    result, history = await moa.run(Propose(["m"]), "q", client)
    assert result == "x" and history.input_tokens == 1


async def test_a_reply_whose_repr_raises_is_reported_not_retried():
    class Broken:
        def __repr__(self):
            raise RuntimeError("no repr")

    calls = []

    async def client(*, model, messages, temp, max_tokens):
        calls.append(model)
        return Broken()

    with pytest.raises(ClientOutputError, match="Broken object with a failing repr"):
        await moa.run(Propose(["m"]), "q", client, retry=FAST)
    assert calls == ["m"]


# -- 11. sizes of replies and requests -----------------------------------------------------------
async def test_a_reply_past_the_limit_fails_that_call_not_the_run():
    async def client(*, model, messages, temp, max_tokens):
        return ("x" * (MAX_REPLY_CHARS + 1) if model == "big" else "fine"), 1, 1

    result, history = await moa.run(Propose(["big", "ok"]), "q", client, retry=FAST)
    big = history.calls[0]
    assert big.error is not None and "1,000,001 characters" in big.error and big.attempts == 1
    assert history.outputs == ("fine",)


async def test_a_request_past_the_limit_fails_its_step_before_sending():
    sent = []

    async def client(*, model, messages, temp, max_tokens):
        sent.append(model)
        return ("y" * (MAX_REPLY_CHARS - 1), 1, 1) if model == "p" else ("agg", 1, 1)

    with pytest.raises(StepFailedError, match="would send .* characters to a in one call"):
        await moa.run(Propose(["p"] * 5) | Aggregate("a"), "q", client)
    assert sent == ["p"] * 5


def test_limits_given_a_string_says_what_it_takes():
    with pytest.raises(TypeError, match="per_model must be a mapping of model name"):
        Limits("x")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d.pop("steps"), "has no 'steps'"),
        (lambda d: d.update(prompt=None), "history.prompt must be str"),
        (lambda d: d["steps"][0].update(duration={}), r"steps\[0\].duration must be"),
        (lambda d: d["steps"][0]["calls"][0].update(temp="hot"), r"calls\[0\].temp must be"),
        (
            lambda d: d["steps"][0]["calls"][0]["messages"].append(3),
            r"messages\[1\] must be an object",
        ),
        (lambda d: d.update(seed=True), "seed must be int"),
    ],
)
def test_a_malformed_saved_history_is_a_value_error_naming_the_field(change, field):
    _, history = moa.run_sync(Propose(["m"]) | Aggregate("m"), "q", ScriptedClient(), seed=1)
    doc = json.loads(json.dumps(history.to_dict()))
    assert History.from_dict(doc) == history
    change(doc)
    with pytest.raises(ValueError, match=field):
        History.from_dict(doc)


# -- 9. Ctrl-C ------------------------------------------------------------------------------------
INTERRUPT = """
import sys, moa
from moa import Propose, Aggregate

async def client(*, model, messages, temp, max_tokens):
    raise KeyboardInterrupt

timeout = float(sys.argv[2]) if len(sys.argv) > 2 else None
try:
    moa.run_sync(Propose(["a", "b"]) | Aggregate("a"), "q", client, backend=sys.argv[1],
                 timeout=timeout)
except KeyboardInterrupt:
    print("KeyboardInterrupt")
"""


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("timeout", [[], ["5"]])
def test_a_client_raising_keyboardinterrupt_ends_the_run_cleanly(backend, timeout, tmp_path):
    script = tmp_path / "interrupt.py"
    script.write_text(INTERRUPT)
    proc = subprocess.run(
        [sys.executable, "-W", "error", str(script), backend, *timeout],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert proc.stdout == "KeyboardInterrupt\n", proc.stderr
    assert proc.stderr == ""  # no "unhandled exception during shutdown", no never-awaited


def test_a_group_of_keyboardinterrupts_is_raised_as_one():
    from moa._executor import interrupt_of as _interrupt_of

    ki = KeyboardInterrupt()
    assert _interrupt_of(BaseExceptionGroup("x", [ki, BaseExceptionGroup("y", [ki])])) is ki
    assert _interrupt_of(BaseExceptionGroup("x", [ki, ValueError()])) is None


# -- 10. a read-only recording replays -----------------------------------------------------------
REPLAY = """
import moa, sys
with moa.Cache(sys.argv[1], mode="replay") as cache:
    print(cache.get("m", [{"role": "user", "content": "q"}], 0.7, 8, (0, 0)), len(cache))
"""


def _read_only_run(folder, script, path):
    """Run ``script`` where ``folder`` cannot be written, even by root."""
    cmd = [sys.executable, "-c", script, str(path)]
    if os.geteuid() != 0:
        os.chmod(path, 0o444)
        os.chmod(folder, 0o555)
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        finally:
            os.chmod(folder, 0o755)
    if shutil.which("unshare") is None:
        pytest.skip("root without unshare: cannot make a folder read-only for root")
    mount = f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder} && " + " ".join(
        f"'{c}'" for c in cmd
    )
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", mount],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )


def test_a_read_only_recording_in_a_read_only_folder_replays(tmp_path):
    folder = tmp_path / "shipped"
    folder.mkdir()
    path = folder / "rec.sqlite"
    with moa.Cache(path) as cache:
        cache.put("m", [{"role": "user", "content": "q"}], 0.7, 8, (0, 0), "stored", 3, 4)
    proc = _read_only_run(folder, REPLAY, path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "('stored', 3, 4) 1\n"


def test_replay_never_creates_a_file(tmp_path):
    path = tmp_path / "none.sqlite"
    with pytest.raises(FileNotFoundError, match="no recording"):
        moa.Cache(path, mode="replay")
    assert not path.exists()


# -- 1 and 5. the command line -------------------------------------------------------------------
SEPARATORS = "a\u2028b\u2029c\u0085d"


@pytest.fixture
def scripted(monkeypatch):
    import moa.cli as cli

    client = ScriptedClient(lambda model, messages: f"answer {SEPARATORS}")
    monkeypatch.setattr(
        cli.providers, "make_client", lambda provider, base_url, model: (client, "m")
    )
    return client


def _batch(tmp_path, lines, *extra):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    code = main(
        [
            "batch",
            str(src),
            "-o",
            str(out),
            "--pipeline",
            "Propose(['m'])",
            "-q",
            "--seed",
            "1",
            *extra,
        ]
    )
    return code, out


def test_a_batch_with_unicode_line_separators_resumes(tmp_path, scripted, capsys):
    raw = json.dumps({"id": "x", "prompt": f"q {SEPARATORS}"}, ensure_ascii=False)
    code, out = _batch(tmp_path, [raw, json.dumps("second")])
    assert code == 0
    assert len(out.read_text(encoding="utf-8").split("\n")) == 3
    code, _ = _batch(tmp_path, [raw, json.dumps("second")])
    assert code == 0 and len(scripted.calls) == 2  # nothing ran again
    assert main(["trace", str(out), "--line", "1"]) == 0
    assert "q a" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ('{"prompt": "q", "id": ' + "9" * 5000 + "}", "not JSON"),
        ("[" * 100_000 + "]" * 100_000, "not JSON"),
        (json.dumps({"prompt": "caf\udcff"}), "not valid Unicode"),
        ('"\\ud800 question"', "not valid Unicode"),
        (json.dumps({"prompt": "q", "id": "\ud800"}), "id is not valid Unicode"),
    ],
)
def test_a_hostile_batch_line_is_a_usage_error(tmp_path, scripted, capsys, line, says):
    code, out = _batch(tmp_path, [line])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("moa: ") and says in err and "Traceback" not in err
    assert not out.exists()


def test_a_prompt_of_invalid_utf8_is_a_usage_error(tmp_path, scripted, capsys):
    assert (
        main(
            [
                "run",
                "caf\udcff question",
                "--pipeline",
                "Propose(['m'])",
                "--json",
                str(tmp_path / "r.json"),
            ]
        )
        == 2
    )
    assert "not valid Unicode" in capsys.readouterr().err
    assert scripted.calls == []


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.update(prompt=None),
        lambda d: d["steps"][0].update(duration={}),
        lambda d: d.update(steps="none"),
        lambda d: d.update(result=["not", "text"]),
    ],
)
def test_trace_of_a_malformed_run_file_is_a_usage_error(tmp_path, scripted, capsys, change):
    path = tmp_path / "run.json"
    assert main(["run", "q", "--pipeline", "Propose(['m'])", "-q", "--json", str(path)]) == 0
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))
    capsys.readouterr()
    code = main(["trace", str(path)])
    err = capsys.readouterr().err
    assert code in (0, 2) and "Traceback" not in err
    if code == 2:
        assert err.startswith("moa: ")


def test_a_reply_holding_a_lone_surrogate_is_written_escaped(tmp_path, monkeypatch):
    import moa.cli as cli

    client = ScriptedClient(lambda model, messages: "bad \ud800 reply")
    monkeypatch.setattr(
        cli.providers, "make_client", lambda provider, base_url, model: (client, "m")
    )
    code, out = _batch(tmp_path, [json.dumps("q")])
    assert code == 0
    line = json.loads(out.read_text(encoding="utf-8"))
    assert line["result"] == "bad \ud800 reply"


def test_the_answer_is_printed_even_when_the_terminal_cannot_encode_it(tmp_path):
    script = tmp_path / "client.py"
    script.write_text(
        textwrap.dedent("""
        import sys, moa.cli as cli
        from scripted import ScriptedClient
        client = ScriptedClient(lambda model, messages: "caf\\u00e9 \\ud800")
        cli.providers.make_client = lambda provider, base_url, model: (client, "m")
        sys.exit(cli.main(["run", "q", "--pipeline", "Propose(['m'])", "-q"]))
    """)
    )
    env = {
        **os.environ,
        "PYTHONIOENCODING": "ascii",
        "PYTHONPATH": os.pathsep.join([os.getcwd(), os.path.join(os.getcwd(), "tests")]),
    }
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "caf\\xe9 \\ud800\n"


def test_shuffle_is_still_a_step_after_all_this():
    # the limits sit in constructors; ordinary pipelines are unaffected
    assert Pipeline(Propose(["m"]), Shuffle(), Aggregate("m")) == (
        Propose(["m"]) | Shuffle() | Aggregate("m")
    )


def test_the_demo_banner_never_shows_a_url_password(monkeypatch, capsys):
    import moa.cli as cli

    monkeypatch.setattr(
        cli.providers, "make_client", lambda provider, base_url, model: (ScriptedClient(), "m")
    )
    assert (
        main(
            [
                "demo",
                "--base-url",
                "http://me:hunter2@127.0.0.1:9/v1",
                "--model",
                "m",
                "--samples",
                "1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "hunter2" not in out and "http://me:***@127.0.0.1:9/v1" in out

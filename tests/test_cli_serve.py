"""``moa serve``: its settings checked before it binds, and (marked ``local``) the command
itself serving the embedded model to the openai SDK and curl, and draining on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import _free_port, _need

from moa.cli import main

_need("starlette", "pip install 'moa-dsl[serve]'")
_need("uvicorn", "pip install 'moa-dsl[serve]'")

import uvicorn  # noqa: E402

REMOTE = ["--base-url", "http://127.0.0.1:9/v1", "--model", "m"]  # made, never called here


@pytest.fixture
def started(monkeypatch):
    """What ``moa serve`` hands uvicorn, instead of serving it."""
    seen: dict = {}

    def run(server):
        c = server.config
        seen.update(
            app=c.app,
            host=c.host,
            port=c.port,
            drain=c.timeout_graceful_shutdown,
            keep_alive=c.timeout_keep_alive,
        )

    monkeypatch.setattr(uvicorn.Server, "run", run)
    monkeypatch.delenv("MOA_SERVE_KEY", raising=False)
    return seen


def test_models_from_the_command_line_and_a_config_are_served(started, tmp_path, capsys):
    config = tmp_path / "moa.toml"
    config.write_text(
        """
[server]
port = 9123
max_requests = 3

[models.pair]
pipeline = "Propose(['m', 'm']) | Aggregate('m')"
max_concurrency = 2
max_tokens = 64
"""
    )
    argv = ["serve", "--config", str(config), "--pipeline", "solo=Propose(['m']) | Aggregate('m')"]
    assert main([*argv, "--recipe", "self_moa", *REMOTE]) == 0
    assert started["host"] == "127.0.0.1" and started["port"] == 9123
    # Longer than a client's pool keeps an idle connection (httpx: 5 s), so the client drops
    # it first and never sends on one the server is closing.
    assert started["keep_alive"] == 75
    server = started["app"].routes[0].endpoint.__self__
    assert list(server.models) == ["pair", "solo", "self_moa"] and server.max_requests == 3
    pair = server.models["pair"]
    assert pair.options.max_concurrency == 2
    # One endpoint and model: one client for all three.
    assert len({id(served.client) for served in server.models.values()}) == 1
    assert {s.max_tokens for s in pair.pipeline.steps} == {64}
    assert "serves pair, solo, self_moa (no key asked: loopback only)" in capsys.readouterr().err


def test_off_loopback_a_key_is_required_and_read_from_the_environment(started, monkeypatch, capsys):
    argv = ["serve", "--pipeline", "p=Propose(['m']) | Aggregate('m')", *REMOTE]
    assert main([*argv, "--host", "0.0.0.0"]) == 2
    assert "set MOA_SERVE_KEY in the environment" in capsys.readouterr().err
    assert started == {}
    monkeypatch.setenv("TEAM_KEY", "sk-team")
    assert main([*argv, "--host", "0.0.0.0", "--key-env", "TEAM_KEY"]) == 0
    assert started["app"].routes[0].endpoint.__self__.key == "sk-team"
    assert "sk-team" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[server\n", "not TOML"),
        ("[servers]\n", "unknown table [servers]"),
        ("[server]\ncolour = 1\n", "[server] has no setting 'colour'"),
        ("[models.a]\nprovider = 'local'\n", "[models.a] needs pipeline"),
        ("[models.a]\npipeline = 'x'\nthreads = 2\n", "[models.a] has no setting 'threads'"),
        ("[models.a]\npipeline = 'Propose(['\n", "--pipeline"),
        ("[models.a]\npipeline = 'self_moa'\nprovider = 'mars'\n", "no provider 'mars'"),
        ("[models.a]\npipeline = 'self_moa'\nmax_concurrency = 0\n", "model 'a'"),
        ("[server]\nmax_requests = 0\n[models.a]\npipeline = 'self_moa'\n", "max_requests"),
    ],
)
def test_a_bad_config_is_refused_naming_the_setting(started, tmp_path, capsys, text, words):
    config = tmp_path / "moa.toml"
    config.write_text(text)
    assert main(["serve", "--config", str(config), *REMOTE]) == 2
    assert words in capsys.readouterr().err
    assert started == {}


def test_without_models_or_with_one_name_twice_it_says_so(started, capsys, tmp_path):
    assert main(["serve", *REMOTE]) == 2
    assert "give the models to serve" in capsys.readouterr().err
    twice = ["--pipeline", "a=Propose(['m']) | Aggregate('m')"] * 2
    assert main(["serve", *twice, *REMOTE]) == 2
    assert "a model is named 'a' already" in capsys.readouterr().err
    assert main(["serve", "--config", str(tmp_path / "none.toml"), *REMOTE]) == 2
    assert "No such file" in capsys.readouterr().err


# -- the command itself, on the embedded model ---------------------------------------------------
@pytest.fixture
def served_model(model_path, tmp_path):
    """``moa serve --recipe self_moa`` on the embedded model, in a process of its own: its
    base URL and the process."""
    port = _free_port()
    log = open(tmp_path / "serve.log", "wb")  # closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "moa", "serve", "--recipe", "self_moa", "--max-tokens", "12"]
        + ["--port", str(port), "--drain", "20"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "MOA_THREADS": "1"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while subprocess.run(["curl", "-sf", f"{base}/health"], capture_output=True).returncode:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"moa serve did not start: {(tmp_path / 'serve.log').read_text()}")
            time.sleep(0.3)
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        log.close()


@pytest.mark.local
def test_moa_serve_answers_the_openai_sdk_and_curl_on_the_embedded_model(served_model):
    _need("openai", "pip install 'moa-dsl[openai]'")
    import openai

    base, _ = served_model
    api = openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0)
    ask = [{"role": "user", "content": "Name a color."}]
    whole = api.chat.completions.create(model="self_moa", messages=ask, seed=4)
    assert whole.choices[0].message.content.strip()
    # self_moa: 6 samples and an aggregation, every call's tokens in usage.
    assert whole.usage.completion_tokens > 12
    stream = api.chat.completions.create(model="self_moa", messages=ask, seed=4, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == whole.choices[0].message.content  # the same seed, the same answer
    body = json.dumps({"model": "self_moa", "messages": ask, "seed": 4})
    raw = subprocess.run(
        ["curl", "-s", f"{base}/v1/chat/completions", "-H", "content-type: application/json"]
        + ["-d", body],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(raw)["choices"][0]["message"]["content"] == text
    api.close()


@pytest.mark.local
def test_sigterm_during_a_stream_lets_it_finish_then_the_server_exits(served_model):
    base, proc = served_model
    body = json.dumps(
        {"model": "self_moa", "messages": [{"role": "user", "content": "Count."}], "stream": True}
    )
    # Asked in a thread; SIGTERM once its first event has come back.
    lines: list[str] = []
    curl = subprocess.Popen(
        ["curl", "-sN", f"{base}/v1/chat/completions", "-H", "content-type: application/json"]
        + ["-d", body],
        stdout=subprocess.PIPE,
        text=True,
    )
    reader = threading.Thread(target=lambda: lines.extend(curl.stdout))
    reader.start()
    deadline = time.monotonic() + 60
    while not lines and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    reader.join(120)
    curl.wait(10)
    curl.stdout.close()
    # uvicorn drains, then ends by the signal it was sent, as a process manager expects.
    assert proc.wait(60) == -signal.SIGTERM
    events = [line[6:].strip() for line in lines if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["choices"][0]["finish_reason"] == "stop"

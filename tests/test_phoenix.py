"""End to end into a real trace store: Arize Phoenix started on 127.0.0.1, ``moa run --otlp``
exporting a run's spans to it over OTLP/HTTP, and the trace read back through Phoenix's REST
API (``/v1/projects/default/spans``) with the tree moa draws: the run, its steps under it, each
call under its step.

Marked ``phoenix``: Phoenix is about 280 packages, so it lives in a virtual environment of its
own (``.ci/run`` makes one and names its ``phoenix`` in ``$MOA_PHOENIX``); without it the test
skips (under CI it fails). Phoenix takes 15-25 s to start on 2 cores.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest
from test_otlp import PIPE, SPAN_NAMES, _moa

pytestmark = pytest.mark.phoenix


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return json.loads(reply.read())


class Started:
    """A Phoenix process serving on 127.0.0.1 (free HTTP and gRPC ports, its database in a
    temporary folder), started as the test session begins (``conftest`` starts it when this
    test is selected: it needs 15-25 s, which the tests before it cover)."""

    def __init__(self, exe: str) -> None:
        self.folder = tempfile.mkdtemp(prefix="moa-phoenix-")
        port = _port()
        env = {
            **os.environ,
            "PHOENIX_HOST": "127.0.0.1",  # it binds 0.0.0.0 otherwise
            "PHOENIX_PORT": str(port),
            "PHOENIX_GRPC_PORT": str(_port()),
            "PHOENIX_WORKING_DIR": os.path.join(self.folder, "db"),
        }
        self.log = os.path.join(self.folder, "phoenix.log")
        with open(self.log, "w") as out:
            self.process = subprocess.Popen(
                [exe, "serve"], env=env, stdout=out, stderr=subprocess.STDOUT
            )
        self.base = f"http://127.0.0.1:{port}"

    def ready(self, seconds: float = 120) -> str:
        """Its base URL, once it answers; RuntimeError with its log if it does not."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                urllib.request.urlopen(f"{self.base}/healthz", timeout=2).read()
                return self.base
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    with open(self.log) as f:
                        text = f.read()[-3000:]
                    raise RuntimeError(f"Phoenix did not start:\n{text}") from None
                time.sleep(0.5)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


#: The Phoenix conftest started for this session (None until then, or when not selected).
started: Started | None = None


def executable() -> str | None:
    return os.environ.get("MOA_PHOENIX") or shutil.which("phoenix")


@pytest.fixture(scope="module")
def phoenix():
    """Phoenix's base URL: the one started as the session began, else one started now."""
    global started
    exe = executable()
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the Phoenix test: set MOA_PHOENIX to Phoenix's phoenix")
        pytest.skip("Phoenix is not installed (pip install arize-phoenix, in a venv of its own)")
    if started is None:
        started = Started(exe)
    try:
        yield started.ready()
    finally:
        started.stop()
        started = None


def test_a_runs_trace_is_read_back_from_phoenix_with_its_tree(phoenix):
    done = _moa("run", "What is 2+2?", "--pipeline", PIPE, "--seed", "11", "--otlp", phoenix)
    assert done.returncode == 0, done.stderr
    spans: list[dict] = []
    deadline = time.monotonic() + 30
    while len(spans) < 7 and time.monotonic() < deadline:  # Phoenix ingests in the background
        time.sleep(0.5)
        spans = _get(f"{phoenix}/v1/projects/default/spans?limit=100")["data"]
    assert sorted(s["name"] for s in spans) == SPAN_NAMES
    by_id = {s["context"]["span_id"]: s for s in spans}
    assert len({s["context"]["trace_id"] for s in spans}) == 1
    (root,) = [s for s in spans if s["parent_id"] is None]
    assert root["name"] == "invoke_workflow moa" and root["attributes"]["moa.seed"] == "11"
    for s in spans:
        if s["name"].startswith("step "):
            assert s["parent_id"] == root["context"]["span_id"]
        if s["name"].startswith("chat "):
            parent = by_id[s["parent_id"]]
            assert parent["name"] in ("step Propose", "step Aggregate")
            # Phoenix reads the GenAI conventions: a chat span is an LLM span to it.
            assert s["span_kind"] == "LLM"
            assert s["attributes"]["llm.model_name"] == s["name"].removeprefix("chat ")
    propose = next(s for s in spans if s["name"] == "step Propose")
    kids = sorted(s["name"] for s in spans if s["parent_id"] == propose["context"]["span_id"])
    assert kids == ["chat m", "chat n"]

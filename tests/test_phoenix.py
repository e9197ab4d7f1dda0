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


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory):
    """Phoenix serving on 127.0.0.1 (its HTTP and gRPC ports free ones, its database in a
    temporary folder): its base URL."""
    exe = os.environ.get("MOA_PHOENIX") or shutil.which("phoenix")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the Phoenix test: set MOA_PHOENIX to Phoenix's phoenix")
        pytest.skip("Phoenix is not installed (pip install arize-phoenix, in a venv of its own)")
    port = _port()
    env = {
        **os.environ,
        "PHOENIX_HOST": "127.0.0.1",  # it binds 0.0.0.0 otherwise
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(_port()),
        "PHOENIX_WORKING_DIR": str(tmp_path_factory.mktemp("phoenix")),
    }
    log = tmp_path_factory.mktemp("phoenix-log") / "phoenix.log"
    with open(log, "w") as out:
        server = subprocess.Popen([exe, "serve"], env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=2).read()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"Phoenix did not start:\n{log.read_text()[-3000:]}"
                    ) from None
                time.sleep(0.5)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


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

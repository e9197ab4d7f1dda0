"""``--otlp URL``: the commands' runs exported over real OTLP/HTTP (the SDK's exporter) to a
receiver on 127.0.0.1 that decodes what it gets with OpenTelemetry's own protobuf types. The
commands run in a process of their own: a tracer provider, once global, stays for the process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import _need

import moa.cli
from moa.cli import main
from moa.cli.otel import endpoint

_need("opentelemetry.sdk", "pip install 'moa-dsl[otel]'")
_need("opentelemetry.exporter.otlp.proto.http", "pip install 'moa-dsl[otel]'")

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PIPE = "Propose(['m', 'n']) | Shuffle() | Aggregate('m')"
#: The spans a run of PIPE makes, sorted by name.
SPAN_NAMES = sorted(
    ["invoke_workflow moa", "step Propose", "chat m", "chat n", "step Shuffle"]
    + ["step Aggregate", "chat m"]
)
# The command, its client a ScriptedClient (no model, no network but the receiver's).
SCRIPT = """
import sys
import moa.cli as cli
from moa.testing import ScriptedClient
cli.providers.make_client = lambda provider, base_url, model: (ScriptedClient(), model or "m")
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.fixture
def receiver():
    """An OTLP/HTTP receiver: its base URL and the spans it got, as (service, span) pairs."""
    got: list[tuple[str, object]] = []
    paths: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            paths.append(self.path)
            request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
            for rs in request.resource_spans:
                service = next(
                    a.value.string_value for a in rs.resource.attributes if a.key == "service.name"
                )
                got.extend((service, s) for ss in rs.scope_spans for s in ss.spans)
            reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", got, paths
    finally:
        server.shutdown()
        server.server_close()


def _moa(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", None)
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=cwd,
    )


def _attrs(span) -> dict[str, object]:
    def value(v):
        kind = v.WhichOneof("value")
        if kind == "array_value":
            return [value(x) for x in v.array_value.values]
        return getattr(v, kind)

    return {a.key: value(a.value) for a in span.attributes}


def test_moa_run_sends_its_trace_to_the_collector(receiver):
    url, got, paths = receiver
    done = _moa("run", "What is 2+2?", "--pipeline", PIPE, "--seed", "7", "--otlp", url)
    assert done.returncode == 0, done.stderr
    assert paths and set(paths) == {"/v1/traces"}  # the base URL gets OTLP's path
    assert sorted(s.name for _, s in got) == SPAN_NAMES
    assert {service for service, _ in got} == {"moa"}
    assert len({s.trace_id for _, s in got}) == 1
    root = next(s for _, s in got if s.name == "invoke_workflow moa")
    assert _attrs(root)["moa.seed"] == "7"
    chat = next(s for _, s in got if s.name == "chat n")
    attrs = _attrs(chat)
    assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.request.model"] == "n"
    assert "gen_ai.input.messages" not in attrs  # content only when asked


def test_moa_batch_sends_a_trace_per_prompt(receiver, tmp_path):
    url, got, _ = receiver
    prompts = tmp_path / "in.jsonl"
    prompts.write_text("\n".join(json.dumps(p) for p in ["q1", "q2", "q3"]) + "\n")
    done = _moa(
        "batch", str(prompts), "--output", str(tmp_path / "out.jsonl"), "--pipeline", PIPE,
        "--otlp", f"{url}/v1/traces", "--quiet",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    roots = [s for _, s in got if s.name == "invoke_workflow moa"]
    assert len(roots) == 3 and len({r.trace_id for r in roots}) == 3
    assert {service for service, _ in got} == {"moa batch"}


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/", "127.0.0.1:4318", "http://"])
def test_an_otlp_url_that_is_not_http_is_a_usage_error_before_a_model_loads(
    url, capsys, monkeypatch
):
    def make_client(*args):  # pragma: no cover - the URL is refused first
        raise AssertionError("a model was made before --otlp was checked")

    monkeypatch.setattr(moa.cli.providers, "make_client", make_client)
    for command in (["run", "q"], ["batch", "in.jsonl", "-o", "out.jsonl"], ["serve"]):
        assert main([*command, "--pipeline", PIPE, "--otlp", url]) == 2, command
        assert "an http:// or https:// URL of an OTLP/HTTP collector" in capsys.readouterr().err


def test_the_endpoint_is_the_collectors_traces_path_under_its_base():
    assert endpoint("http://h:4318") == "http://h:4318/v1/traces"
    assert endpoint("http://h:4318/") == "http://h:4318/v1/traces"
    assert endpoint("https://h/otlp/v1/traces") == "https://h/otlp/v1/traces"
    # A collector under a base path (Langfuse's, Grafana Cloud's) gets OTLP's path below it.
    assert endpoint("https://cloud.langfuse.com/api/public/otel") == (
        "https://cloud.langfuse.com/api/public/otel/v1/traces"
    )


def test_a_collector_that_is_down_costs_seconds_and_never_the_answer(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    done = _moa("run", "What is 2+2?", "--pipeline", PIPE, "--otlp", f"http://127.0.0.1:{port}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()  # the answer
    assert time.monotonic() - start < 20  # the export gives up within EXPORT_SECONDS


def test_otel_service_name_names_the_service(receiver, monkeypatch):
    url, got, _ = receiver
    monkeypatch.setenv("OTEL_SERVICE_NAME", "my-mixture")
    done = _moa("run", "q", "--pipeline", "Propose(['m'])", "--otlp", url)
    assert done.returncode == 0, done.stderr
    assert {service for service, _ in got} == {"my-mixture"}

"""A moa run in Arize Phoenix's trace view, for docs/tracing.md: every part real.

Phoenix serves on 127.0.0.1; ``moa serve --recipe self_moa`` serves the embedded SmolLM2-135M
with ``--otlp`` pointing at it (message content recorded); the openai SDK asks it a question;
the server is stopped with SIGTERM (it drains, then sends its last spans); the trace is read
back through Phoenix's REST API; headless Chromium takes the trace view.

    MOA_PHOENIX=.ci/phoenix/bin/phoenix python docs/phoenix_screenshot.py

Needs moa-dsl[serve,otel,local], the embedded model, Phoenix (in a venv of its own; its
``phoenix`` as $MOA_PHOENIX or on PATH) and Debian's ``chromium``. Writes
docs/img/phoenix-trace.png and prints the trace's spans.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "img" / "phoenix-trace.png"
QUESTION = "What is the capital of France?"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return json.loads(reply.read())


def _wait(url: str, proc: subprocess.Popen[bytes], what: str, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{what} did not start") from None
            time.sleep(0.5)


def main() -> int:
    phoenix_exe = os.environ.get("MOA_PHOENIX") or shutil.which("phoenix")
    chromium = shutil.which("chromium")
    if phoenix_exe is None or chromium is None:
        raise SystemExit("needs Phoenix ($MOA_PHOENIX or phoenix on PATH) and chromium")
    work = Path(tempfile.mkdtemp(prefix="moa-phoenix-"))
    port, serve_port = _port(), _port()
    phoenix_url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(_port()),
        "PHOENIX_WORKING_DIR": str(work),
    }
    phoenix = subprocess.Popen(
        [phoenix_exe, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    serve = None
    try:
        _wait(f"{phoenix_url}/healthz", phoenix, "Phoenix")
        serve_env = {**os.environ, "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true"}
        serve = subprocess.Popen(
            [sys.executable, "-m", "moa", "serve", "--recipe", "self_moa", "--max-tokens", "48",
             "--port", str(serve_port), "--otlp", phoenix_url, "--quiet"],
            env=serve_env,
            cwd=ROOT,
        )  # fmt: skip
        _wait(f"http://127.0.0.1:{serve_port}/health", serve, "moa serve")
        import openai

        api = openai.OpenAI(base_url=f"http://127.0.0.1:{serve_port}/v1", api_key="none")
        reply = api.chat.completions.create(
            model="self_moa", messages=[{"role": "user", "content": QUESTION}]
        )
        print("answer:", reply.choices[0].message.content)
        serve.send_signal(signal.SIGTERM)  # drains, then sends what it still holds
        serve.wait(timeout=60)
        spans: list[dict] = []
        for _ in range(60):
            data = _get(f"{phoenix_url}/v1/projects/default/spans?limit=100")
            spans = data["data"]  # type: ignore[index]
            if any(s["parent_id"] is None for s in spans):
                break
            time.sleep(0.5)
        root = next(s for s in spans if s["parent_id"] is None)
        for s in sorted(spans, key=lambda s: s["start_time"]):
            print(f"  {s['name']:<28} {s['span_kind']:<8} parent={s['parent_id']}")
        projects = _get(f"{phoenix_url}/v1/projects")["data"]  # type: ignore[index]
        project = next(p["id"] for p in projects if p["name"] == "default")
        view = f"{phoenix_url}/projects/{project}/traces/{root['context']['trace_id']}"
        OUT.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--virtual-time-budget=15000", f"--screenshot={OUT}", "--window-size=1400,900", view],
            check=True,
            capture_output=True,
            timeout=120,
        )  # fmt: skip
        print(f"wrote {OUT.relative_to(ROOT)} from {view}")
        return 0
    finally:
        for proc in (serve, phoenix):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

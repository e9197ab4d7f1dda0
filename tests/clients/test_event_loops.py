"""A client outlives its event loop: ``run_sync`` twice (or asyncio then trio) with the same
client works. The SDKs pool connections per loop, so each loop gets its own SDK client; these
tests use a real HTTP server on 127.0.0.1, since a mock transport holds no connections."""

import gc
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import moa
from moa import Propose, Retry

OPENAI_REPLY = {
    "id": "c",
    "object": "chat.completion",
    "created": 0,
    "model": "m",
    "choices": [
        {
            "index": 0,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": "from openai"},
        }
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
}
ANTHROPIC_REPLY = {
    "id": "m",
    "type": "message",
    "role": "assistant",
    "model": "m",
    "content": [{"type": "text", "text": "from anthropic"}],
    "stop_reason": "end_turn",
    "usage": {"input_tokens": 1, "output_tokens": 2},
}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: connections stay in the client's pool
    timeout = 0.5  # an idle kept-alive connection ends, so server_close() can join its thread

    def do_POST(self):
        self.rfile.read(int(self.headers["content-length"]))
        reply = ANTHROPIC_REPLY if self.path.endswith("/messages") else OPENAI_REPLY
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = False

    def handle_error(self, request, client_address):
        pass  # a client dropping a pooled connection is not news


@pytest.fixture
def server_url():
    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def make_openai(url):
    pytest.importorskip("openai")
    from moa.clients import openai_client

    return openai_client(base_url=url + "/v1"), "from openai"


def make_anthropic(url):
    pytest.importorskip("anthropic")
    from moa.clients import anthropic_client

    return anthropic_client("sk-ant-test-0123456789", base_url=url), "from anthropic"


# The first loop's pooled sockets are never closed (that loop is gone): ignore their warning.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("make", [make_openai, make_anthropic], ids=["openai", "anthropic"])
def test_one_client_serves_successive_event_loops(server_url, make):
    client, expected = make(server_url)
    for backend in ("asyncio", "asyncio", "trio", "asyncio"):
        result, history = moa.run_sync(
            Propose(["claude-opus-4-6", "gpt-4o"]),
            "Q",
            client,
            backend=backend,
            retry=Retry(attempts=1),
        )
        assert result == expected, backend
        assert [c.attempts for c in history.calls] == [1, 1]
    # Let the warnings about the dead loops' sockets fire here, where they are ignored.
    del client
    gc.collect()

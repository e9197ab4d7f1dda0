"""Check the built site as a reader would: serve it on 127.0.0.1, open pages in headless
Chromium, search it.

    mkdocs build --strict && python docs/check_site.py [SITE]   (SITE: the build, default site/)

Screenshots of the home page, one how-to guide, one API page and the search for "Propose" go
to SITE/_screenshots/. The search is checked twice: the index it reads
(search/search_index.json) must hold the reference entry of ``moa.Propose``, and the site's own
search, run by Chromium on the page (driven over the DevTools protocol on a pipe, since the
search worker needs real time, not a virtual-time budget), must list results for "Propose";
its screenshot is taken once they show. Needs Debian's ``chromium``. Exits 1, saying what
failed, when a page is missing or blank or the search finds nothing.
"""

from __future__ import annotations

import base64
import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

PAGES = {
    "home": "",
    "how-to": "how-to/latency/",
    "api": "reference/api/steps/",
}
QUERY = "Propose"


def serve(site: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """The site on a free port of 127.0.0.1, in a thread: the server and its base URL."""
    handler = functools.partial(_Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


HEADLESS = ("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars")


def browser() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise SystemExit("check_site: chromium not found (apt-get install chromium)")
    return found


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [browser(), *HEADLESS, *args], capture_output=True, text=True, timeout=120
    )


class DevTools:
    """Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
    it reads commands on its fd 3 and answers on fd 4, JSON messages ended by a NUL byte)."""

    def __init__(self) -> None:
        to_chrome, self._out = os.pipe()
        self._in, from_chrome = os.pipe()

        def fds() -> None:
            os.dup2(to_chrome, 3)
            os.dup2(from_chrome, 4)

        self.proc = subprocess.Popen(
            [browser(), *HEADLESS, "--window-size=1280,900", "--remote-debugging-pipe"],
            preexec_fn=fds,
            pass_fds=(3, 4),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome)
        os.close(from_chrome)
        self._buffer = b""
        self._id = 0

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return dict(reply["result"])
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        os.close(self._out)
        os.close(self._in)


def search(url: str, out: Path, seconds: float = 30.0) -> int:
    """The number of results the site's own search lists for the query on ``url``, waited for
    up to ``seconds``; a screenshot of the page then at ``out``."""
    tools = DevTools()
    try:
        target = tools.call("Target.createTarget", url=f"{url}?q={QUERY}")["targetId"]
        session = tools.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        count = "document.querySelectorAll('.md-search-result__item').length"
        listed = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not listed:
            time.sleep(0.5)
            value = tools.call("Runtime.evaluate", session, expression=count, returnByValue=True)
            listed = int(value["result"].get("value") or 0)
        shot = tools.call("Page.captureScreenshot", session, format="png")
        out.write_bytes(base64.b64decode(shot["data"]))
        return listed
    finally:
        tools.close()


def screenshot(url: str, out: Path) -> str:
    """A 1280x900 screenshot of ``url`` at ``out``; "" when it is there, else why not."""
    chromium(f"--screenshot={out}", "--window-size=1280,900", "--virtual-time-budget=4000", url)
    if not out.is_file():
        return f"{url}: no screenshot"
    if out.stat().st_size < 20_000:  # a blank or error page compresses to a few kB
        return f"{url}: the screenshot is blank ({out.stat().st_size} bytes)"
    return ""


def index_hits(site: Path) -> list[str]:
    """The locations of the search index's entries that mention the query."""
    index = json.loads((site / "search" / "search_index.json").read_text(encoding="utf-8"))
    word = re.compile(rf"\b{QUERY}\b")
    return [d["location"] for d in index["docs"] if word.search(d["title"] + " " + d["text"])]


def main(argv: list[str]) -> int:
    site = Path(argv[0] if argv else "site").resolve()
    if not (site / "index.html").is_file():
        print(f"check_site: no built site at {site} (run mkdocs build --strict)", file=sys.stderr)
        return 1
    shots = site / "_screenshots"
    shots.mkdir(exist_ok=True)
    server, base = serve(site)
    problems = []
    try:
        for name, path in PAGES.items():
            problem = screenshot(base + path, shots / f"{name}.png")
            problems += [problem] if problem else []
        listed = search(base, shots / "search.png")
        if listed == 0:
            problems.append(f"the site's search lists no result for {QUERY!r}")
        hits = index_hits(site)
        if "reference/api/steps/#moa.Propose" not in hits:
            problems.append(f"the search index has no entry for moa.Propose ({len(hits)} hits)")
    finally:
        server.shutdown()
    for problem in problems:
        print(f"check_site: {problem}", file=sys.stderr)
    print(
        f"check_site: {len(PAGES) + 1} screenshots in {shots}; the search lists {listed} "
        f"results for {QUERY!r}; its index has {len(hits)} entries with it, moa.Propose's among them"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

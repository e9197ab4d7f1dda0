"""Check the built site as a reader would: serve it on 127.0.0.1, open pages in headless
Chromium, search it.

    mkdocs build --strict && python docs/check_site.py [SITE]   (SITE: the build, default site/)

Screenshots of the home page, one how-to guide, one API page and the search page opened on
"Propose" go to SITE/_screenshots/. The search is checked in the index the site's search reads:
search/search_index.json must hold the reference entry of ``moa.Propose`` and the pages that
mention it. (Headless Chromium leaves mkdocs-material's search worker at "Initializing
search" whatever the wait, so the results it would list are not counted; the screenshot shows
the query in the search box.) Needs Debian's ``chromium``. Exits 1, saying what failed, when a
page is missing or blank or the index has no entry for the query.
"""

from __future__ import annotations

import functools
import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

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


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("check_site: chromium not found (apt-get install chromium)")
    return subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


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
        problem = screenshot(f"{base}?q={QUERY}", shots / "search.png")
        problems += [problem] if problem else []
        hits = index_hits(site)
        if "reference/api/steps/#moa.Propose" not in hits:
            problems.append(f"the search index has no entry for moa.Propose ({len(hits)} hits)")
    finally:
        server.shutdown()
    for problem in problems:
        print(f"check_site: {problem}", file=sys.stderr)
    print(
        f"check_site: {len(PAGES) + 1} screenshots in {shots}; the search index has "
        f"{len(hits)} entries with {QUERY!r}, moa.Propose's among them"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

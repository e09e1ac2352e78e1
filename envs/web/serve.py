"""Serve a cached site from its HAR on 127.0.0.1, so a person can browse the replay.

Every response comes from ``site.har``; the recorded site itself is never contacted. Pages are
served under the local address (``http://127.0.0.1:PORT/c/kitchen.html``) and a path that was
never recorded answers 404 with a note saying so. Run ``agentgym web serve SITE_DIR``.
"""

from __future__ import annotations

import base64
import http.server
import json
from pathlib import Path
from urllib.parse import urlsplit

_SKIP_HEADERS = {
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "date",
    "server",
}


def load_responses(har: str | Path) -> dict[str, tuple[int, list[tuple[str, str]], bytes]]:
    """``path?query`` -> (status, headers, body) for every GET answered in the HAR."""
    log = json.loads(Path(har).read_text(encoding="utf-8"))["log"]
    out: dict[str, tuple[int, list[tuple[str, str]], bytes]] = {}
    for entry in log["entries"]:
        req, resp = entry["request"], entry["response"]
        if req.get("method", "GET") != "GET":
            continue
        parts = urlsplit(req["url"])
        key = parts.path + (f"?{parts.query}" if parts.query else "")
        content = resp.get("content", {})
        text = content.get("text", "")
        body = base64.b64decode(text) if content.get("encoding") == "base64" else text.encode("utf-8")
        headers = [
            (h["name"], h["value"]) for h in resp.get("headers", []) if h["name"].lower() not in _SKIP_HEADERS
        ]
        out.setdefault(key, (int(resp.get("status", 200)), headers, body))
    return out


def make_server(site_dir: str | Path, port: int = 0) -> http.server.ThreadingHTTPServer:
    """An HTTP server on 127.0.0.1 answering from the site's HAR (``port`` 0 picks a free one)."""
    from agentgym.envs.web.site import Site

    site = Site.load(site_dir)
    responses = load_responses(site.har)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the base class's naming
            found = responses.get(self.path)
            if found is None:
                body = f"{self.path} is not in the recording of {site.origin}.\n".encode()
                self.send_response(404)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            status, headers, body = found
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):  # noqa: A002 - the base class's signature
            pass

    return http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)

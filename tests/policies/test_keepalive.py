"""The OpenAI-compatible client keeps one connection per thread alive; a server that has closed it
in the meantime (uvicorn drops idle ones after 5 s) must not fail the next request."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from agentgym.policies.openai import OpenAIGenerator


class _ClosesAfterEachAnswer(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[str] = []

    def do_POST(self):
        n = int(self.headers["Content-Length"])
        _ClosesAfterEachAnswer.seen.append(json.loads(self.rfile.read(n))["lora_name"])
        body = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()  # no "Connection: close": the client believes the connection stays open
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, *args):
        pass


def test_a_connection_the_server_dropped_is_replaced():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ClosesAfterEachAnswer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        gen = OpenAIGenerator([f"http://127.0.0.1:{server.server_port}/v1"], "base", retries=0)
        for name in ("a", "b", "c"):  # the same thread, so the same kept-alive connection each time
            gen.unload_adapter(name, timeout=10)
        assert _ClosesAfterEachAnswer.seen == ["a", "b", "c"]
    finally:
        server.shutdown()

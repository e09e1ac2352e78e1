"""The OpenAI-compatible client against small stand-in servers: what it sends, how it spreads
requests over several servers, and how fast and how clearly it gives up on broken ones."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from agentgym.policies.openai import OpenAIGenerator, ServerUnavailable

from agentgym.policy import SamplingParams
from agentgym.testing import need

GREEDY = SamplingParams(temperature=0, max_tokens=4)
ANSWER = {
    "choices": [
        {
            "text": "hi",
            "token_ids": [108, 109, 2],
            "logprobs": {"token_logprobs": [-0.5, -0.25, -0.125]},
            "finish_reason": "stop",
        }
    ]
}


class FakeServer:
    """A threaded HTTP server on 127.0.0.1 whose answers a test sets: ``(status, body)`` for
    POSTs, a JSON object for ``GET /v1/models``; it records the request bodies it got."""

    def __init__(self, status: int = 200, body: bytes | None = None, delay: float = 0.0):
        self.status, self.body, self.delay = (
            status,
            json.dumps(ANSWER).encode() if body is None else body,
            delay,
        )
        self.models: dict | None = None
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                outer.requests.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                time.sleep(outer.delay)
                self._send(outer.status, outer.body)

            def do_GET(self):
                if outer.models is None:
                    self._send(404, b"{}")
                else:
                    self._send(200, json.dumps(outer.models).encode())

            def _send(self, status, body):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers():
    made: list[FakeServer] = []

    def make(**kwargs) -> FakeServer:
        made.append(FakeServer(**kwargs))
        return made[-1]

    yield make
    for s in made:
        s.close()


def dead_url() -> str:
    """A port on 127.0.0.1 where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


def generate(gen, n=1, sampling=GREEDY):
    return asyncio.run(gen.generate([[1, 2, 3]] * n, sampling))


def test_the_request_pins_every_sampling_setting(servers):
    """Left out, top_k / min_p / penalties would be the server's defaults, which vLLM reads from
    the model's generation_config.json; the answer's ids and logprobs are taken as sent."""
    srv = servers()
    sampling = SamplingParams(temperature=0.7, top_p=0.9, max_tokens=5, stop=["</x>"], seed=3)
    [c] = generate(OpenAIGenerator([srv.url], "m"), sampling=sampling)
    assert (c.ids, c.logprobs, c.finish_reason) == ([108, 109, 2], [-0.5, -0.25, -0.125], "stop")
    body = srv.requests[0]
    assert body["prompt"] == [1, 2, 3] and body["return_token_ids"] and body["logprobs"] == 0
    assert {k: body[k] for k in ("temperature", "top_p", "max_tokens", "stop", "seed")} == {
        "temperature": 0.7,
        "top_p": 0.9,
        "max_tokens": 5,
        "stop": ["</x>"],
        "seed": 3,
    }
    assert body["include_stop_str_in_output"] and not body["skip_special_tokens"]
    neutral = ("top_k", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty")
    assert {k: body[k] for k in neutral} == dict(zip(neutral, (0, 0.0, 1.0, 0.0, 0.0), strict=True))


def test_requests_are_spread_over_the_servers_and_a_dead_one_is_routed_around(servers):
    a, b = servers(delay=0.05), servers(delay=0.05)
    gen = OpenAIGenerator([a.url, b.url], "m", max_concurrency=16)
    assert len(generate(gen, n=16)) == 16
    assert len(a.requests) + len(b.requests) == 16 and min(len(a.requests), len(b.requests)) >= 6
    # with one server dead, every request still gets an answer from the other
    gen = OpenAIGenerator([dead_url(), b.url], "m", backoff=0.01)
    assert [c.ids for c in generate(gen, n=8)] == [[108, 109, 2]] * 8


def test_a_dead_server_fails_in_seconds_with_a_clear_error():
    gen = OpenAIGenerator([dead_url()], "m")  # the default retries and backoff
    t0 = time.monotonic()
    with pytest.raises(ServerUnavailable, match="no server answered after 4 attempts.*Connection refused"):
        generate(gen)
    assert time.monotonic() - t0 < 10  # 3 backoffs of 0.5, 1 and 2 s, each jittered by x0.5-1.5


@pytest.mark.parametrize(
    ("status", "body", "says"),
    [
        (500, b"engine died", "HTTP 500: engine died"),
        (503, b"overloaded", "HTTP 503"),
        (429, b"slow down", "HTTP 429"),
        (200, b"<html>proxy error</html>", "BadResponse: the answer is not JSON"),
        (200, b'{"choices": [{"text": "a", "tok', "BadResponse: the answer is not JSON"),
        (200, b'{"error": "who knows"}', "BadResponse: the answer is not a completion"),
    ],
)
def test_server_faults_are_retried_then_reported(servers, status, body, says):
    srv = servers(status=status, body=body)
    gen = OpenAIGenerator([srv.url], "m", retries=2, backoff=0.01)
    with pytest.raises(ServerUnavailable, match=f"after 3 attempts: .*{says}"):
        generate(gen)
    assert len(srv.requests) == 3


def test_a_fault_on_one_server_is_retried_on_the_next(servers):
    bad, good = servers(status=500, body=b"x"), servers()
    gen = OpenAIGenerator([bad.url, good.url], "m", retries=1, backoff=0.01)
    assert all(c.ids == [108, 109, 2] for c in generate(gen, n=6))


def test_a_refused_request_is_not_retried(servers):
    srv = servers(status=400, body=b"This model's maximum context length is 2048 tokens")
    gen = OpenAIGenerator([srv.url], "m", retries=3, backoff=0.01)
    with pytest.raises(ValueError, match="refused the request \\(400\\).*maximum context length"):
        generate(gen)
    assert len(srv.requests) == 1


def test_a_server_that_never_answers_times_out(servers):
    srv = servers(delay=30)
    gen = OpenAIGenerator([srv.url], "m", timeout=0.5, retries=1, backoff=0.01)
    t0 = time.monotonic()
    with pytest.raises(ServerUnavailable, match="timed out"):
        generate(gen)
    assert time.monotonic() - t0 < 5


def test_missing_logprobs_are_an_error_never_zeros(servers):
    answer = {"choices": [{**ANSWER["choices"][0], "logprobs": None}]}
    srv = servers(body=json.dumps(answer).encode())
    with pytest.raises(ValueError, match="0 usable logprobs for 3 sampled ids"):
        generate(OpenAIGenerator([srv.url], "m"))
    # asked for none, none are expected
    [c] = generate(OpenAIGenerator([srv.url], "m"), sampling=SamplingParams(max_tokens=4, logprobs=False))
    assert c.ids == [108, 109, 2] and c.logprobs == [0.0, 0.0, 0.0]


def test_the_context_length_comes_from_the_server(servers):
    srv = servers()
    srv.models = {"data": [{"id": "other", "max_model_len": 99}, {"id": "m", "max_model_len": 2048}]}
    assert OpenAIGenerator([dead_url(), srv.url], "m").served_max_model_len() == 2048
    assert OpenAIGenerator([srv.url], "unknown").served_max_model_len() is None
    srv.models = None  # a server without /v1/models
    assert OpenAIGenerator([srv.url], "m").served_max_model_len() is None


def test_a_run_against_a_dead_server_ends_in_policy_errors():
    need(module="transformers", install="pip install 'agentgym[train]'")
    from agentgym.policies.llm import LLMPolicy
    from agentgym.policies.tiny import build_tokenizer

    from agentgym.rollout import run_rollouts

    policy = LLMPolicy(OpenAIGenerator([dead_url()], "m", retries=1, backoff=0.01), build_tokenizer())
    t0 = time.monotonic()
    trajs = run_rollouts("toy/calculator-v0", policy, n=8, concurrency=4, turn_timeout=60)
    assert time.monotonic() - t0 < 20
    assert [t.status for t in trajs] == ["policy_error"] * 8
    assert all("no server answered after 2 attempts" in t.metadata["error"] for t in trajs)
    assert all(t.score == 0.0 and t.tokens is None for t in trajs)

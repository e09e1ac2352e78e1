"""``openai:URL[,URL...],model=NAME``: a policy on any OpenAI-compatible completions server
(``agentgym serve``, ``vllm serve``, ...), token in and token out.

    agentgym serve /tmp/tiny --port 8011 &
    agentgym eval --env toy/calculator-v0 --policy openai:http://127.0.0.1:8011/v1,model=/tmp/tiny

Each turn is one ``POST /v1/completions`` whose ``prompt`` is the list of token ids, asking for
the sampled ids (``return_token_ids``) and their logprobs, so nothing is re-tokenized. Several
base URLs are load-balanced (least requests in flight). A request that fails to connect, times
out or gets a 5xx is retried on the next server with exponential backoff; when every attempt
fails the turn raises, and the rollout records ``policy_error`` (a dead server never hangs a run).

The tokenizer (for the chat template) is loaded from ``tokenizer=PATH``, or else from the model
name when it is a local directory or hub id. Spec options besides the sampling ones:
``model``, ``tokenizer``, ``timeout`` (seconds per request, default 120), ``retries`` (default 3),
``max_model_len``.

``load_adapter(name, path)`` loads a LoRA adapter into a vLLM server started with
``--enable-lora`` and ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=1``, and samples from it afterwards:
the way a trainer pushes new weights to a server.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import random
import threading
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from agentgym.policies.llm import LLMPolicy, check_spec_keys, load_tokenizer, sampling_from_spec

from agentgym.policy import Completion, PolicySpec, SamplingParams


class ServerUnavailable(RuntimeError):
    """No server answered the request after every retry; the message says what each one did."""


class HTTPStatusError(RuntimeError):
    """The server answered with an error status."""

    def __init__(self, code: int, detail: str):
        super().__init__(f"HTTP {code}: {detail}")
        self.code = code
        self.detail = detail


class OpenAIGenerator:
    """Token-level generation over OpenAI-compatible ``/v1/completions`` endpoints.

    Args:
        urls: base URLs ending in ``/v1``.
        model: the model name the servers serve.
        timeout: seconds for one HTTP request.
        retries: further attempts after the first failure (each on the next server).
        backoff: seconds before the first retry; doubles each time (with jitter).
        max_concurrency: most requests in flight (a thread each).
    """

    def __init__(
        self,
        urls: list[str],
        model: str,
        timeout: float = 120.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_concurrency: int = 64,
    ):
        if not urls:
            raise ValueError("give at least one server URL, e.g. openai:http://127.0.0.1:8000/v1,model=NAME")
        self.urls = [u.rstrip("/") for u in urls]
        self.model = model
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.in_flight = [0] * len(self.urls)
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="agentgym-openai")

    def _post(self, url: str, path: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        """POST JSON on this thread's kept-alive connection to the server (reconnecting once it
        breaks); returns the decoded answer. A kept-alive connection that the server has closed
        in the meantime (servers drop idle ones after a few seconds) is replaced and the request
        sent again on a fresh one."""
        parts = urllib.parse.urlsplit(url)
        conns = self._local.__dict__.setdefault("conns", {})
        reused = parts.netloc in conns
        while True:
            conn = conns.get(parts.netloc)
            if conn is None:
                kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
                conn = conns[parts.netloc] = kind(parts.netloc, timeout=timeout)
            elif conn.timeout != timeout:
                conn.timeout = timeout
                if conn.sock is not None:
                    conn.sock.settimeout(timeout)
            try:
                conn.request(
                    "POST", parts.path + path, json.dumps(body), {"Content-Type": "application/json"}
                )
                r = conn.getresponse()
                data = r.read()
                break
            except BaseException as e:
                conn.close()
                del conns[parts.netloc]
                stale = isinstance(e, BrokenPipeError | ConnectionResetError | http.client.RemoteDisconnected)
                if not (reused and stale):
                    raise
                reused = False  # once more, on a fresh connection
        if r.status >= 400:
            raise HTTPStatusError(r.status, data.decode(errors="replace")[:300])
        return json.loads(data) if data.strip().startswith((b"{", b"[")) else {}

    def request_body(self, prompt: list[int], s: SamplingParams) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": s.max_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "return_token_ids": True,
            "skip_special_tokens": False,
            "spaces_between_special_tokens": False,
            "include_stop_str_in_output": True,
        }
        if s.logprobs:
            body["logprobs"] = 0
        if s.stop:
            body["stop"] = list(s.stop)
        if s.seed is not None:
            body["seed"] = s.seed
        return body

    async def _complete(self, prompt: list[int], s: SamplingParams) -> Completion:
        body = self.request_body(prompt, s)
        loop = asyncio.get_running_loop()
        errors = []
        start = random.randrange(len(self.urls))
        for attempt in range(self.retries + 1):
            k = min(
                range(len(self.urls)),
                key=lambda i: (self.in_flight[i], (i - start - attempt) % len(self.urls)),
            )
            url = self.urls[k]
            self.in_flight[k] += 1
            try:
                data = await loop.run_in_executor(
                    self._pool, self._post, url, "/completions", body, self.timeout
                )
                return parse_completion(data)
            except HTTPStatusError as e:
                if e.code < 500:  # the request itself is wrong: retrying cannot help
                    raise ValueError(f"{url} refused the request ({e.code}): {e.detail}") from None
                errors.append(f"{url}: {e}")
            except (OSError, http.client.HTTPException, json.JSONDecodeError) as e:
                errors.append(f"{url}: {type(e).__name__}: {e}")
            finally:
                self.in_flight[k] -= 1
            if attempt < self.retries:
                await asyncio.sleep(self.backoff * 2**attempt * (0.5 + random.random()))
        raise ServerUnavailable(f"no server answered after {self.retries + 1} attempts: " + "; ".join(errors))

    async def generate(self, prompts: list[list[int]], sampling: SamplingParams) -> list[Completion]:
        return list(await asyncio.gather(*(self._complete(list(p), sampling) for p in prompts)))

    def load_adapter(self, name: str, path: str, timeout: float = 120.0) -> None:
        """Load a LoRA adapter on every server and sample from it from now on. Raises when any
        server refuses or does not answer within ``timeout`` seconds."""
        for url in self.urls:
            root = url.removesuffix("/v1")
            try:
                self._post(
                    root, "/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(path)}, timeout
                )
            except HTTPStatusError as e:
                raise RuntimeError(f"{url} did not load adapter {name!r}: {e.detail}") from None
        self.model = name

    def unload_adapter(self, name: str, timeout: float = 120.0) -> None:
        """Unload a LoRA adapter from every server (after a newer one was loaded)."""
        for url in self.urls:
            try:
                self._post(url.removesuffix("/v1"), "/v1/unload_lora_adapter", {"lora_name": name}, timeout)
            except HTTPStatusError as e:
                raise RuntimeError(f"{url} did not unload adapter {name!r}: {e.detail}") from None

    def update_weights(self, weights: Any, timeout: float = 300.0) -> None:
        raise NotImplementedError(
            "a server cannot take raw weights; save a LoRA adapter and call load_adapter(name, path), "
            "or use the in-process vllm: policy"
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def parse_completion(data: dict[str, Any]) -> Completion:
    """One choice of a ``/v1/completions`` response as a ``Completion``; raises ``ValueError``
    when the server did not return token ids (it is not vLLM, or too old)."""
    choice = data["choices"][0]
    ids = choice.get("token_ids")
    if ids is None:
        raise ValueError(
            "the server returned no token_ids; token-exact rollouts need vLLM >= 0.10.2's return_token_ids"
        )
    lp = (choice.get("logprobs") or {}).get("token_logprobs")
    lps = [float(x) if x is not None else 0.0 for x in lp] if lp else [0.0] * len(ids)
    finish = "length" if choice.get("finish_reason") == "length" else "stop"
    return Completion(ids=list(ids), logprobs=lps, text=choice.get("text", ""), finish_reason=finish)


def from_spec(spec: PolicySpec, env: Any = None) -> LLMPolicy:
    """``openai:URL[,URL...],model=NAME[,tokenizer=PATH][,timeout=120][,retries=3]``."""
    check_spec_keys(spec, ("model", "tokenizer", "timeout", "retries", "max_model_len"))
    model = spec.kwargs.get("model")
    if not spec.args or not model:
        raise ValueError(
            f"policy {spec}: give server URL(s) and model=NAME, e.g. openai:http://127.0.0.1:8000/v1,model=/tmp/tiny"
        )
    tok = load_tokenizer(spec.kwargs.get("tokenizer", model), spec.kwargs.get("chat_template"))
    gen = OpenAIGenerator(
        spec.args, model, timeout=spec.get("timeout", 120.0, float), retries=spec.get("retries", 3, int)
    )
    return LLMPolicy(gen, tok, sampling_from_spec(spec), max_model_len=spec.get("max_model_len", None, int))

"""``openai:URL[,URL...],model=NAME``: a policy on any OpenAI-compatible completions server
(``agentgym serve``, ``vllm serve``, ...), token in and token out.

    agentgym serve /tmp/tiny --port 8011 &
    agentgym eval --env toy/calculator-v0 --policy openai:http://127.0.0.1:8011/v1,model=/tmp/tiny

Each turn is one ``POST /v1/completions`` whose ``prompt`` is the list of token ids, asking for
the sampled ids (``return_token_ids``) and their logprobs, so nothing is re-tokenized. Several
base URLs are load-balanced (least requests in flight; a server that just failed rests a while).
A request that fails to connect, times out, gets a 5xx or 429, or gets an answer that is not a
completion is retried on a server it has not tried yet, with exponential backoff; when every attempt fails the turn raises, and the rollout records
``policy_error`` (a dead server never hangs a run: with nothing listening, a turn fails in about
3 s; connecting gives up after ``connect_timeout`` seconds, a request after ``timeout``).

Sampling settings the request leaves out would fall back to the server's defaults, which vLLM
takes from the model's ``generation_config.json`` (a repetition penalty, top-k, ...); every one
is sent, so a turn samples as it would on the ``vllm:`` and ``hf:`` backends.

The tokenizer (for the chat template) is loaded from ``tokenizer=PATH``, or else from the model
name when it is a local directory or hub id. Spec options besides the sampling ones:
``model``, ``tokenizer``, ``timeout`` (seconds per request, default 120), ``retries`` (default 3),
``max_model_len`` (default: what the first server that answers ``/v1/models`` reports, so a turn
near the end of the context gets a smaller ``max_tokens`` as on the other backends).

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
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from agentgym.policies.llm import LLMPolicy, check_spec_keys, load_tokenizer, sampling_from_spec

from agentgym.policy import Completion, PolicySpec, SamplingParams


class ServerUnavailable(RuntimeError):
    """No server answered the request after every retry; the message says what each one did."""


class BadResponse(RuntimeError):
    """The server answered 200 with something that is not a completion."""


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
        connect_timeout: seconds to open a connection (a host that drops packets fails fast).
    """

    def __init__(
        self,
        urls: list[str],
        model: str,
        timeout: float = 120.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_concurrency: int = 64,
        connect_timeout: float = 10.0,
    ):
        if not urls:
            raise ValueError("give at least one server URL, e.g. openai:http://127.0.0.1:8000/v1,model=NAME")
        self.urls = [u.rstrip("/") for u in urls]
        self.model = model
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.connect_timeout = connect_timeout
        self.in_flight = [0] * len(self.urls)
        self._failures = [0] * len(self.urls)
        self._resting_until = [0.0] * len(self.urls)
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="agentgym-openai")

    def _post(self, url: str, path: str, body: dict[str, Any], timeout: float) -> bytes:
        """POST JSON on this thread's kept-alive connection to the server (reconnecting once it
        breaks); returns the body of the answer. A kept-alive connection that the server has closed
        in the meantime (servers drop idle ones after a few seconds) is replaced and the request
        sent again on a fresh one."""
        parts = urllib.parse.urlsplit(url)
        conns = self._local.__dict__.setdefault("conns", {})
        reused = parts.netloc in conns
        while True:
            conn = conns.get(parts.netloc)
            if conn is None:
                kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
                conn = kind(parts.netloc, timeout=min(timeout, self.connect_timeout))
                conn.connect()  # raises (and nothing is kept) when the server is not there
                conns[parts.netloc] = conn
            if conn.timeout != timeout:
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
        return data

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
            # not left to the server's defaults (vLLM takes them from generation_config.json)
            "top_k": 0,
            "min_p": 0.0,
            "repetition_penalty": 1.0,
            "presence_penalty": 0.0,
            "frequency_penalty": 0.0,
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
        tried: set[int] = set()
        for attempt in range(self.retries + 1):
            k = self._pick(tried, start + attempt)
            tried.add(k)
            url = self.urls[k]
            self.in_flight[k] += 1
            try:
                data = await loop.run_in_executor(
                    self._pool, self._post, url, "/completions", body, self.timeout
                )
                try:
                    answer = json.loads(data)
                except ValueError:
                    raise BadResponse(f"the answer is not JSON: {data[:120]!r}") from None
                completion = parse_completion(answer, s.logprobs)
                self._failures[k], self._resting_until[k] = 0, 0.0
                return completion
            except HTTPStatusError as e:
                if e.code < 500 and e.code != 429:  # the request itself is wrong: retrying cannot help
                    raise ValueError(f"{url} refused the request ({e.code}): {e.detail}") from None
                errors.append(f"{url}: {e}")
                self._rest(k)
            except (OSError, http.client.HTTPException, BadResponse) as e:
                errors.append(f"{url}: {type(e).__name__}: {e}")
                self._rest(k)
            finally:
                self.in_flight[k] -= 1
            if attempt < self.retries:
                await asyncio.sleep(self.backoff * 2**attempt * (0.5 + random.random()))
        raise ServerUnavailable(f"no server answered after {self.retries + 1} attempts: " + "; ".join(errors))

    def _pick(self, tried: set[int], turn: int) -> int:
        """The server for the next attempt: one this request has not tried yet, if any; of
        those, one that is not resting after a failure; then the one with fewest requests in
        flight (ties taken in turn). A server that fails fast would otherwise always look least
        loaded and draw every request."""
        n = len(self.urls)
        now = time.monotonic()
        return min(
            range(n),
            key=lambda i: (i in tried, self._resting_until[i] > now, self.in_flight[i], (i - turn) % n),
        )

    def _rest(self, k: int) -> None:
        """Keep new requests off server ``k`` for a while after a failure (0.5 s, doubling with
        each failure in a row, at most 30 s); it still serves when every server is resting."""
        self._failures[k] += 1
        self._resting_until[k] = time.monotonic() + min(30.0, 0.5 * 2 ** (self._failures[k] - 1))

    async def generate(self, prompts: list[list[int]], sampling: SamplingParams) -> list[Completion]:
        return list(await asyncio.gather(*(self._complete(list(p), sampling) for p in prompts)))

    def served_max_model_len(self, timeout: float = 5.0) -> int | None:
        """The context length the first answering server reports for the model in
        ``/v1/models`` (vLLM does), or None when no server says."""
        for url in self.urls:
            parts = urllib.parse.urlsplit(url)
            kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
            conn = kind(parts.netloc, timeout=timeout)
            try:
                conn.request("GET", parts.path + "/models")
                r = conn.getresponse()
                cards = json.loads(r.read()).get("data", []) if r.status == 200 else []
            except (OSError, http.client.HTTPException, ValueError, AttributeError):
                continue
            finally:
                conn.close()
            for card in cards if isinstance(cards, list) else []:
                if isinstance(card, dict) and card.get("id") == self.model and card.get("max_model_len"):
                    return int(card["max_model_len"])
        return None

    def load_adapter(self, name: str, path: str, timeout: float = 120.0) -> None:
        """Load a LoRA adapter on every server and sample from it from now on. Raises when any
        server refuses or does not answer within ``timeout`` seconds.

        A server that already has an adapter of that name (an earlier run, or this one before a
        resume, pushed the same step) gets the new files in its place (vLLM's ``load_inplace``)."""
        for url in self.urls:
            root = url.removesuffix("/v1")
            body = {"lora_name": name, "lora_path": str(path)}
            try:
                try:
                    self._post(root, "/v1/load_lora_adapter", body, timeout)
                except HTTPStatusError as e:
                    if "already been loaded" not in e.detail:
                        raise
                    self._post(root, "/v1/load_lora_adapter", {**body, "load_inplace": True}, timeout)
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


def parse_completion(data: Any, logprobs: bool = True) -> Completion:
    """One choice of a ``/v1/completions`` response as a ``Completion``. Raises ``BadResponse``
    when the answer is not a completion at all, and ``ValueError`` when the server did not
    return token ids (it is not vLLM, or too old) or the logprobs asked for (never made up)."""
    try:
        choice = data["choices"][0]
    except (KeyError, IndexError, TypeError):
        raise BadResponse(f"the answer is not a completion: {json.dumps(data)[:120]}") from None
    ids = choice.get("token_ids")
    if ids is None:
        raise ValueError(
            "the server returned no token_ids; token-exact rollouts need vLLM >= 0.10.2's return_token_ids"
        )
    lp = (choice.get("logprobs") or {}).get("token_logprobs")
    if not logprobs:
        lps = [0.0] * len(ids)
    elif lp is None or len(lp) != len(ids) or any(x is None for x in lp):
        raise ValueError(f"the server returned {len(lp or [])} usable logprobs for {len(ids)} sampled ids")
    else:
        lps = [float(x) for x in lp]
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
    max_len = spec.get("max_model_len", None, int) or gen.served_max_model_len()
    return LLMPolicy(gen, tok, sampling_from_spec(spec), max_model_len=max_len)

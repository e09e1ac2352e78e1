"""``hf:PATH``: a policy on transformers ``generate`` (CPU or GPU), batching concurrent turns.

    agentgym eval --env toy/calculator-v0 --policy hf:/tmp/tiny,temperature=0,max_tokens=64

Concurrent ``generate`` calls are collected for ``batch_window`` seconds (or until ``max_batch``)
and run as one left-padded batch in a worker thread, so the event loop never blocks. Logprobs
are the model's own log-softmax (before temperature), as vLLM reports them.

Sampling means what it means on vLLM: stop strings are looked for in the generated text only
(never across the prompt boundary), a seeded request samples the same ids whatever else is in
flight, and the model's ``generation_config`` defaults (repetition penalty, top-k, ...) do not
apply. Seeded requests still share batches: each row draws its sample from its own random
generator (the Gumbel-max trick: the argmax of ``logits / T`` plus Gumbel noise is a sample of
``softmax(logits / T)``), so neither its neighbours nor the process's random state change it.

A request whose caller stops waiting (a turn over its time limit) is dropped from its batch at
the next generated token; ``close()`` (also run at exit) stops the generation thread the same
way and answers the requests still in flight with an error, so the process never exits while a
thread is inside torch.

On CPU the generation thread runs torch on one thread (``threads``; torch's setting is per
thread, so the rest of the process keeps its own). Decoding is a long run of small matrix
products: on 2 cores SmolLM2-135M decoded 10 steps/s at batch 1 and 5-6 at batch 4 on one
thread, against 0.3-1.7 on two when other processes were busy (the threads wait on each other).

Spec options besides the sampling ones: ``device`` (cpu, cuda, ...), ``dtype`` (float32,
bfloat16, float16), ``max_batch``, ``batch_window``, ``threads``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

from agentgym.policies.llm import LLMPolicy, check_spec_keys, load_tokenizer, sampling_from_spec

from agentgym.policy import Completion, PolicySpec, SamplingParams


@dataclass
class _Request:
    prompt: list[int]
    sampling: SamplingParams
    future: concurrent.futures.Future


class HFGenerator:
    """Token-level generation with a transformers causal LM.

    Args:
        model: a model directory or hub id, or an already loaded ``PreTrainedModel``.
        tokenizer: its tokenizer (for pad/eos ids and stop strings).
        device: where to run (default: cuda when available, else cpu).
        dtype: torch dtype name for loading.
        max_batch: most prompts in one ``generate`` call.
        batch_window: seconds to wait for more concurrent requests before running a batch.
        threads: torch threads of the generation thread on CPU.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        device: str | None = None,
        dtype: str = "float32",
        max_batch: int = 16,
        batch_window: float = 0.01,
        threads: int = 1,
    ):
        import torch
        from transformers import AutoModelForCausalLM

        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if isinstance(model, str):
            model = AutoModelForCausalLM.from_pretrained(model, dtype=getattr(torch, dtype))
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        self.max_batch = max_batch
        self.batch_window = batch_window
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.threads = threads
        self.lock = threading.Lock()
        self._closing = threading.Event()
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="agentgym-hf-generate", daemon=True)
        self._thread.start()
        self._finalizer = weakref.finalize(self, _stop, self._closing, self._queue, self._thread)

    async def generate(self, prompts: list[list[int]], sampling: SamplingParams) -> list[Completion]:
        if self._closing.is_set():
            raise RuntimeError("the hf generator is closed")
        futures = []
        for p in prompts:
            fut: concurrent.futures.Future = concurrent.futures.Future()
            self._queue.put(_Request(list(p), sampling, fut))
            futures.append(asyncio.wrap_future(fut))
        return list(await asyncio.gather(*futures))

    def _loop(self) -> None:
        if self.device == "cpu":
            self.torch.set_num_threads(self.threads)  # this thread only
        while True:
            first = self._queue.get()
            if first is None:
                self._refuse_waiting()
                return
            batch = [first]
            deadline = time.monotonic() + self.batch_window
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                batch.append(item)
            # one batch per sampling setting; seeded requests batch together (each row keeps its
            # own seed), unseeded ones apart from them
            groups: dict[str, list[_Request]] = {}
            for req in batch:
                if req.future.cancelled():  # its caller stopped waiting before it started
                    continue
                unseeded = SamplingParams(**{**vars(req.sampling), "seed": None})
                groups.setdefault(f"{unseeded!r}:{req.sampling.seed is None}", []).append(req)
            for reqs in groups.values():
                self._deliver(reqs)

    def _refuse_waiting(self) -> None:
        """Answer every request still queued when the generator closes with an error."""
        while True:
            try:
                req = self._queue.get_nowait()
            except queue.Empty:
                return
            if req is not None and not req.future.done():
                req.future.set_exception(RuntimeError("the hf generator was closed"))

    def _deliver(self, reqs: list[_Request]) -> None:
        try:
            with self.lock:
                seeds = None if reqs[0].sampling.seed is None else [r.sampling.seed for r in reqs]
                outs = self._run([r.prompt for r in reqs], reqs[0].sampling, seeds, reqs)
            if self._closing.is_set():  # cut short: what was generated is not an answer
                raise RuntimeError("the hf generator was closed")
            for r, out in zip(reqs, outs, strict=True):
                if not r.future.done():  # a cancelled request gets nothing
                    r.future.set_result(out)
        except Exception as e:  # delivered to every waiting caller
            for r in reqs:
                if not r.future.done():
                    r.future.set_exception(e)

    def _run(
        self,
        prompts: list[list[int]],
        s: SamplingParams,
        seeds: list[int] | None = None,
        reqs: list[_Request] | None = None,
    ) -> list[Completion]:
        torch = self.torch
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attn = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(p)
            attn[i, width - len(p) :] = 1
        # Every knob set here, so the model's generation_config (a repetition penalty or top-k
        # its authors recommend) adds nothing that vLLM would not do with the same settings.
        kwargs: dict[str, Any] = {
            "max_new_tokens": s.max_tokens,
            "do_sample": s.temperature > 0,
            "num_beams": 1,
            "repetition_penalty": 1.0,
            "no_repeat_ngram_size": 0,
            "min_new_tokens": 0,
        }
        if s.temperature > 0 and seeds is not None:
            # greedy over logits plus each row's own noise: a seeded sample per row
            kwargs.update(do_sample=False, logits_processor=[_SeededSampling(seeds, s.temperature, s.top_p)])
        elif s.temperature > 0:
            kwargs.update(temperature=s.temperature, top_p=s.top_p, top_k=0, min_p=0.0, typical_p=1.0)
        kwargs["stopping_criteria"] = [_Abandoned(reqs or [], self._closing)]
        if s.stop:
            kwargs["stopping_criteria"].append(_StopStrings(self.tokenizer, s.stop, width))
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids.to(self.device),
                attention_mask=attn.to(self.device),
                eos_token_id=self.eos_id,
                pad_token_id=self.pad_id,
                return_dict_in_generate=True,
                output_logits=True,
                **kwargs,
            )
        new = out.sequences[:, width:].cpu()
        logps = torch.stack(out.logits, dim=1).float().log_softmax(-1).cpu()
        results = []
        for i in range(len(prompts)):
            # A row is over at its first end-of-turn token or stop string; what the batch
            # generated after that is padding, never sampled ids.
            row = new[i].tolist()
            if self.eos_id in row:
                row = row[: row.index(self.eos_id) + 1]
            stop_at = _stop_end(self.tokenizer, row, s.stop) if s.stop and row[-1] != self.eos_id else None
            if stop_at is not None:
                row = row[:stop_at]
            lp = [float(logps[i, t, tok]) for t, tok in enumerate(row)]
            text = self.tokenizer.decode(row, skip_special_tokens=False)
            stopped = row[-1] == self.eos_id or stop_at is not None
            results.append(
                Completion(ids=row, logprobs=lp, text=text, finish_reason="stop" if stopped else "length")
            )
        return results

    def update_weights(self, weights: Any, timeout: float = 300.0) -> None:
        """Load new weights into the model: a state dict or an iterable of ``(name, tensor)``.

        Raises ``TimeoutError`` when the model stays busy past ``timeout`` seconds, and
        ``ValueError`` naming the parameters that do not belong to the model.
        """
        state = dict(weights.items() if hasattr(weights, "items") else weights)
        if not self.lock.acquire(timeout=timeout):
            raise TimeoutError(f"the hf model stayed busy for {timeout} s; weights were not updated")
        try:
            missing = self.model.load_state_dict(state, strict=False).unexpected_keys
            if missing:
                raise ValueError(f"{len(missing)} weights do not belong to the model, e.g. {missing[:3]}")
        finally:
            self.lock.release()

    def close(self, timeout: float = 60.0) -> None:
        """Stop the generation thread: requests in flight end at their next token and get an
        error; waits up to ``timeout`` seconds for the thread. Safe to call twice."""
        self._finalizer.detach()
        _stop(self._closing, self._queue, self._thread, timeout)


def _stop(
    closing: threading.Event, requests: queue.Queue, thread: threading.Thread, timeout: float = 60.0
) -> None:
    closing.set()
    requests.put(None)
    if thread.is_alive() and thread is not threading.current_thread():
        thread.join(timeout)


def _stop_end(tokenizer: Any, row: list[int], stop: list[str]) -> int | None:
    """The length of the shortest prefix of ``row`` whose text contains a stop string, or None."""
    for n in range(1, len(row) + 1):
        text = tokenizer.decode(row[:n], skip_special_tokens=False)
        if any(x in text for x in stop):
            return n
    return None


class _SeededSampling:
    """A transformers logits processor that turns greedy decoding into sampling at
    ``temperature`` and ``top_p``, each row from its own seeded generator: it returns
    ``logits / T`` (outside the top-p set: -inf) plus Gumbel noise, whose argmax is a draw from
    ``softmax(logits / T)`` restricted to the top-p set. A row's draws depend only on its seed."""

    def __init__(self, seeds: list[int], temperature: float, top_p: float):
        import torch

        self.generators = [torch.Generator().manual_seed(int(seed) % 2**63) for seed in seeds]
        self.temperature = temperature
        self.top_p = top_p

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        scores = scores.float() / self.temperature
        if self.top_p < 1.0:
            # keep the most likely tokens until their mass reaches top_p (always at least one)
            ordered, order = scores.sort(dim=-1, descending=True)
            probs = ordered.softmax(-1)
            drop = (probs.cumsum(-1) - probs) >= self.top_p
            ordered = ordered.masked_fill(drop, float("-inf"))
            scores = torch.full_like(scores, float("-inf")).scatter(-1, order, ordered)
        vocab = scores.shape[-1]
        uniform = torch.stack([torch.rand(vocab, generator=g, dtype=torch.float64) for g in self.generators])
        tiny = torch.finfo(torch.float64).tiny
        gumbel = -torch.log((-torch.log(uniform.clamp_min(tiny))).clamp_min(tiny))
        return scores + gumbel.to(device=scores.device, dtype=scores.dtype)


class _Abandoned:
    """A transformers stopping criterion: a row is done once its caller stopped waiting for it
    (its future was cancelled), and every row once the generator is closing."""

    def __init__(self, reqs: list[_Request], closing: threading.Event):
        self.reqs = reqs
        self.closing = closing

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        if self.closing.is_set():
            return torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        done = [r.future.cancelled() for r in self.reqs] if self.reqs else [False] * input_ids.shape[0]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class _StopStrings:
    """A transformers stopping criterion: a row is done once the text it generated (never the
    prompt before it, unlike transformers' own ``stop_strings``) contains a stop string."""

    def __init__(self, tokenizer: Any, stop: list[str], prompt_width: int):
        self.tokenizer = tokenizer
        self.stop = list(stop)
        self.start = prompt_width
        # the last tokens that can hold a stop string (a token is at least one byte)
        self.window = max(len(x.encode()) for x in self.stop) + 4

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        new = input_ids[:, self.start :].tolist()
        done = [
            any(x in self.tokenizer.decode(row[-self.window :], skip_special_tokens=False) for x in self.stop)
            for row in new
        ]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def from_spec(spec: PolicySpec, env: Any = None) -> LLMPolicy:
    """``hf:PATH[,device=cuda][,dtype=bfloat16][,temperature=...]``."""
    check_spec_keys(spec, ("device", "dtype", "max_batch", "batch_window", "threads"))
    if len(spec.args) != 1:
        raise ValueError(f"policy {spec}: give one model path, e.g. hf:/tmp/tiny")
    tok = load_tokenizer(spec.args[0], spec.kwargs.get("chat_template"))
    gen = HFGenerator(
        spec.args[0],
        tok,
        device=spec.kwargs.get("device"),
        dtype=spec.get("dtype", "float32"),
        max_batch=spec.get("max_batch", 16, int),
        batch_window=spec.get("batch_window", 0.01, float),
        threads=spec.get("threads", 1, int),
    )
    max_len = getattr(gen.model.config, "max_position_embeddings", None)
    return LLMPolicy(gen, tok, sampling_from_spec(spec), max_model_len=max_len)

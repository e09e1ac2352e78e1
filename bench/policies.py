"""Rollout throughput through agentgym's policies against the engine underneath, same run.

    .venv/bin/python bench/policies.py [--n 32] [--max-tokens 128] [--repeats 3] [--size tiny]
    .venv/bin/python bench/policies.py --model DIR     # a Hugging Face directory, e.g. SmolLM2

Builds the tiny model (or takes ``--model``), takes the first-turn prompts of ``n`` toy/calculator-v0 tasks, and
measures sampled tokens per second (greedy, fixed budget, so both sides produce the same tokens):

- ``vllm``: ``run_rollouts`` with the ``vllm:`` policy vs vLLM's own ``AsyncLLM.generate`` on the
  same engine, the same prompt ids and the same budget;
- ``openai``: ``run_rollouts`` with the ``openai:`` policy vs plain concurrent HTTP requests
  (aiohttp) to the same vLLM server's ``/v1/completions``.

Prints one JSON object; ``ratio`` is agentgym's tokens/s over the engine's (target >= 0.9).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import tempfile
import time

from agentgym.envs.toy import CalculatorEnv
from agentgym.policies.tiny import build_tiny_model

from agentgym.chat import ChatRenderer
from agentgym.rollout import run_rollouts


def first_prompts(tokenizer, n: int) -> list[list[int]]:
    env = CalculatorEnv(difficulty=1)
    renderer = ChatRenderer(tokenizer, env.tool_schemas)
    out = []
    for tid in env.task_ids(n):
        obs, _ = env.reset(seed=0, options={"task_id": tid})
        out.append(renderer.next_prompt(env.trajectory))
    return out


def agentgym_run(policy, n: int) -> tuple[int, float]:
    t0 = time.perf_counter()
    trajs = run_rollouts(
        "toy/calculator-v0", policy, n=n, concurrency=n, max_turns=1, env_kwargs={"difficulty": 1}
    )
    dt = time.perf_counter() - t0
    bad = [t.metadata.get("error") for t in trajs if t.status not in ("ok", "truncated")]
    if bad:
        raise RuntimeError(f"rollouts failed: {bad[:3]}")
    return sum(sum(t.mask) for t in trajs), dt


def raw_vllm_run(gen, prompts: list[list[int]], max_tokens: int) -> tuple[int, float]:
    from vllm import SamplingParams

    sp = SamplingParams(temperature=0, max_tokens=max_tokens, logprobs=0)

    async def one(i: int, p: list[int]) -> int:
        final = None
        async for out in gen.engine.generate({"prompt_token_ids": p}, sp, f"raw-{time.time_ns()}-{i}"):
            final = out
        return len(final.outputs[0].token_ids)

    async def all_() -> int:
        return sum(await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts))))

    t0 = time.perf_counter()
    tokens = asyncio.run_coroutine_threadsafe(all_(), gen._loop).result()
    return tokens, time.perf_counter() - t0


def raw_http_run(url: str, model: str, prompts: list[list[int]], max_tokens: int) -> tuple[int, float]:
    import aiohttp

    async def all_() -> int:
        async with aiohttp.ClientSession() as s:

            async def one(p: list[int]) -> int:
                body = {
                    "model": model,
                    "prompt": p,
                    "max_tokens": max_tokens,
                    "temperature": 0,
                    "logprobs": 0,
                }
                body["return_token_ids"] = True
                async with s.post(url + "/completions", json=body) as r:
                    return len((await r.json())["choices"][0]["token_ids"])

            return sum(await asyncio.gather(*(one(p) for p in prompts)))

    t0 = time.perf_counter()
    tokens = asyncio.run(all_())
    return tokens, time.perf_counter() - t0


def compare(name: str, ours, theirs, repeats: int) -> dict:
    """Alternate the two sides ``repeats`` times; report the best tokens/s of each."""
    ours()
    theirs()  # warm-up
    a, b = [], []
    for _ in range(repeats):
        tok, dt = ours()
        a.append((tok, tok / dt))
        tok, dt = theirs()
        b.append((tok, tok / dt))
    best_a, best_b = max(x[1] for x in a), max(x[1] for x in b)
    return {
        "agentgym_tokens": a[0][0],
        "engine_tokens": b[0][0],
        "agentgym_tok_s": round(best_a, 1),
        "engine_tok_s": round(best_b, 1),
        "ratio": round(best_a / best_b, 3),
        "runs_agentgym_tok_s": [round(x[1], 1) for x in a],
        "runs_engine_tok_s": [round(x[1], 1) for x in b],
        "engine": name,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32, help="episodes (and prompts) per run")
    ap.add_argument("--max-tokens", type=int, default=128, help="token budget per turn")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per side")
    ap.add_argument("--size", default="tiny", choices=["tiny", "small"])
    ap.add_argument("--only", choices=["vllm", "openai"], default=None)
    ap.add_argument("--model", default=None, help="a Hugging Face model directory instead of the tiny model")
    args = ap.parse_args()
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # vLLM logs to stdout; keep it for the JSON

    from agentgym.policies import openai as openai_backend
    from agentgym.policies import vllm as vllm_backend
    from agentgym.policies.server import VLLMServer

    from agentgym.policy import parse_spec

    if args.model:
        model = args.model
    else:
        model = build_tiny_model(tempfile.mkdtemp(prefix="agentgym-bench-") + "/model", size=args.size)
    greedy = f"temperature=0,max_tokens={args.max_tokens}"
    out: dict = {"n": args.n, "max_tokens": args.max_tokens, "model": args.model or args.size}
    env = CalculatorEnv(difficulty=1)
    if args.only in (None, "vllm"):
        policy = vllm_backend.from_spec(parse_spec(f"vllm:{model},{greedy},max_model_len=2048"), env)
        prompts = first_prompts(policy.tokenizer, args.n)
        out["vllm"] = compare(
            "vllm AsyncLLM.generate",
            lambda: agentgym_run(policy, args.n),
            lambda: raw_vllm_run(policy.generator, prompts, args.max_tokens),
            args.repeats,
        )
        policy.generator.close()
    if args.only in (None, "openai"):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with VLLMServer(
            model, port=port, served_model_name="tiny", extra_args=["--max-model-len", "2048"]
        ) as srv:
            policy = openai_backend.from_spec(
                parse_spec(f"openai:{srv.url},model=tiny,tokenizer={model},{greedy}"), env
            )
            prompts = first_prompts(policy.tokenizer, args.n)
            out["openai"] = compare(
                "vllm server /v1/completions via aiohttp",
                lambda: agentgym_run(policy, args.n),
                lambda: raw_http_run(srv.url, "tiny", prompts, args.max_tokens),
                args.repeats,
            )
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

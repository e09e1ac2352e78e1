"""Evaluation metrics: pass^k next to pass@k, per-status counts and per-turn reward summaries."""

import json
import subprocess
import sys

import pytest

from agentgym.rollout import pass_at_k, pass_hat_k, summarize, turn_reward_summary
from agentgym.types import Trajectory

AGENTGYM = [sys.executable, "-m", "agentgym.cli"]


def _samples(task_id, scores, status="ok"):
    return [
        Trajectory(env="e", task_id=task_id, score=s, status=status, metadata={"sample": i})
        for i, s in enumerate(scores)
    ]


def test_pass_hat_k_is_c_choose_k_over_n_choose_k():
    # C(2,2)/C(4,2) = 1/6; C(3,2)/C(4,2) = 3/6; C(3,3)/C(5,3) = 1/10
    assert pass_hat_k(4, 2, 2) == pytest.approx(1 / 6)
    assert pass_hat_k(4, 3, 2) == pytest.approx(0.5)
    assert pass_hat_k(5, 3, 3) == pytest.approx(0.1)
    assert pass_hat_k(4, 1, 2) == 0.0  # fewer passes than k: k samples can never all pass
    assert pass_hat_k(6, 6, 4) == 1.0
    # with k = 1 both are the pass rate; beyond that pass^k <= pass@k
    assert pass_hat_k(5, 2, 1) == pytest.approx(0.4) == pytest.approx(pass_at_k(5, 2, 1))
    assert pass_hat_k(4, 2, 2) < pass_at_k(4, 2, 2) == pytest.approx(5 / 6)
    with pytest.raises(ValueError, match="pass\\^3 needs at least 3 samples per task, got 2"):
        pass_hat_k(2, 1, 3)
    with pytest.raises(ValueError, match="between 0 and the samples"):
        pass_hat_k(4, 5, 2)


def test_summary_averages_pass_hat_k_over_the_tasks_with_k_evidence_samples():
    # a: 2 of 4 pass -> 1/6; b: 3 of 4 -> 1/2 (a truncated episode is evidence, never a pass);
    # c: 4 of 4 -> 1; d: one evidence sample (the other timed out) -> left out
    sample = _samples("a", [1, 0, 1, 0]) + _samples("b", [1, 1, 1]) + _samples("b", [1], "truncated")
    sample += _samples("c", [1, 1, 1, 1]) + _samples("d", [1]) + _samples("d", [0], "timeout")
    s = summarize(sample, k=2)
    assert s["pass^2"] == pytest.approx((1 / 6 + 1 / 2 + 1) / 3)
    # pass@2 of the same tasks: a 1 - C(2,2)/C(4,2) = 5/6, b 1 - 0 = 1, c 1
    assert s["pass@2"] == pytest.approx((5 / 6 + 1 + 1) / 3)
    assert s["pass@2_tasks"] == 3 and s["tasks"] == 4
    assert s["statuses"] == {"ok": 12, "truncated": 1, "env_error": 0, "policy_error": 0, "timeout": 1}
    assert "turn_rewards" not in s  # no trajectory carries per-turn rewards
    one = summarize(sample, k=1)
    assert one["pass^1"] == pytest.approx(one["pass@1"]) == pytest.approx((0.5 + 0.75 + 1 + 1) / 4)


def test_turn_rewards_are_summarised_over_evidence_episodes_that_carry_them():
    a = Trajectory(env="e", task_id="a", score=1.0, metadata={"turn_rewards": [1.0, 0.0, 1.0]})
    b = Trajectory(env="e", task_id="b", score=0.0, metadata={"turn_rewards": [0.5]})
    plain = Trajectory(env="e", task_id="c", score=1.0)
    crashed = Trajectory(env="e", task_id="d", status="env_error", metadata={"turn_rewards": [9.0]})
    s = summarize([a, b, plain, crashed])
    # 4 turns of 2 episodes: mean (1 + 0 + 1 + 0.5) / 4; totals 2 and 0.5; by turn (1 + 0.5) / 2, 0, 1
    assert s["turn_rewards"] == {
        "episodes": 2,
        "turns": 4,
        "mean": 0.625,
        "mean_total": 1.25,
        "mean_by_turn": [0.75, 0.0, 1.0],
    }
    bad = Trajectory(env="e", task_id="x", metadata={"turn_rewards": [1.0, float("nan")]})
    with pytest.raises(ValueError, match="x of 'e'.*list of finite numbers"):
        turn_reward_summary([bad])


def test_eval_cli_reports_pass_hat_k_with_a_group():
    proc = subprocess.run(
        [*AGENTGYM, "eval", "--env", "toy/calculator-v0", "--policy", "scripted", "--n", "3"]
        + ["--k", "2", "--group", "3", "--json", "--no-progress"],
        capture_output=True,
        text=True,
        check=True,
    )
    s = json.loads(proc.stdout)
    assert s["episodes"] == 9 and s["statuses"]["ok"] == 9 and s["pass@2_tasks"] == 3
    assert s["pass^2"] == 1.0 and s["pass@2"] == 1.0
    text = subprocess.run(
        [*AGENTGYM, "eval", "--env", "toy/calculator-v0", "--policy", "scripted", "--n", "2"]
        + ["--k", "2", "--no-progress"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "pass^2: 1.0" in text

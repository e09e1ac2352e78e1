"""DPO: pairs from rollouts of the same task; training raises the chosen-over-rejected margin."""

import pytest
from agentgym.trainers.config import DPOConfig
from agentgym.trainers.dpo import build_pairs, train_dpo

from agentgym.types import Trajectory, write_jsonl


def test_pairs_skip_infrastructure_failures_and_single_samples():
    t = lambda tid, s, status="ok": Trajectory(env="e", task_id=tid, score=s, status=status)  # noqa: E731
    trajs = [
        t("a", 1.0),
        t("a", 0.0, "env_error"),
        t("a", 0.2),
        t("b", 1.0),
        t("c", 0.0),
        t("c", 0.9, "timeout"),
    ]
    pairs = build_pairs(trajs)
    assert [(p.chosen.task_id, p.chosen.score, p.rejected.score) for p in pairs] == [("a", 1.0, 0.2)]
    assert build_pairs(trajs, min_margin=0.8) == []
    with pytest.raises(ValueError, match="pairs_per_task"):
        build_pairs(trajs, pairs_per_task="some")


def _scripted_vs_random(tmp_path):
    from agentgym.rollout import run_rollouts

    kw = dict(n=4, env_kwargs={"difficulty": 1}, seed=5, progress=False)
    good = run_rollouts("toy/calculator-v0", "scripted", **kw)
    bad = run_rollouts("toy/calculator-v0", "random", **kw)
    assert {t.task_id for t in good} == {t.task_id for t in bad}
    data = tmp_path / "rollouts.jsonl"
    write_jsonl(data, good + bad)
    return data


@pytest.mark.slow
def test_dpo_on_rollout_pairs_raises_margin_and_accuracy(tiny_model_dir, tmp_path):
    data = _scripted_vs_random(tmp_path)
    cfg = DPOConfig(
        model=str(tiny_model_dir),
        data=[str(data)],
        output_dir=str(tmp_path / "dpo"),
        beta=0.1,
        batch_size=4,
        micro_batch_size=4,
        max_steps=6,
        learning_rate=3e-3,
        max_length=4096,
        quiet=True,
    )
    s = train_dpo(cfg)
    assert s["pairs"] == 4
    # the policy starts as the reference: zero implicit-reward margin, no pair ranked right
    assert s["reward_margin_before"] == pytest.approx(0.0, abs=1e-4) and s["reward_accuracy_before"] == 0.0
    assert s["logp_margin_after"] > s["logp_margin_before"] + 1.0
    assert s["reward_accuracy_after"] == 1.0


@pytest.mark.slow
def test_rpo_term_raises_the_chosen_likelihood(tiny_model_dir, tmp_path):
    data = _scripted_vs_random(tmp_path)
    kw = dict(
        model=str(tiny_model_dir),
        data=[str(data)],
        beta=0.1,
        batch_size=4,
        micro_batch_size=4,
        max_steps=4,
        learning_rate=1e-3,
        max_length=4096,
        quiet=True,
    )
    plain = train_dpo(DPOConfig(output_dir=str(tmp_path / "plain"), **kw))
    rpo = train_dpo(DPOConfig(output_dir=str(tmp_path / "rpo"), rpo_alpha=1.0, **kw))
    assert plain["chosen_logp_before"] == pytest.approx(rpo["chosen_logp_before"], abs=1e-3)
    # the NLL term pulls the chosen trajectories up, beyond what the DPO loss alone does
    assert rpo["chosen_logp_after"] > plain["chosen_logp_after"] + 10.0  # measured +63
    assert rpo["chosen_logp_after"] > rpo["chosen_logp_before"]
    assert rpo["reward_margin_after"] > 0  # and still a preference for the chosen side
    with pytest.raises(ValueError, match="rpo_alpha"):
        DPOConfig(output_dir=str(tmp_path / "x"), rpo_alpha=-1.0, **kw)

"""Reward model: the Bradley-Terry loss, training on rollout pairs until held-out pairs rank
right, loading it back, and ``rm:DIR`` / ``judge:SPEC`` as the verifier of a run."""

import json
import math

import pytest
import torch
from agentgym.trainers.config import RMConfig
from agentgym.trainers.losses import bradley_terry, bradley_terry_loss
from agentgym.trainers.rm import load_reward_model, train_rm

from agentgym.cli import main
from agentgym.rollout import run_rollouts
from agentgym.types import load_trajectories, write_jsonl


def test_bradley_terry_loss_of_rewards_2_5_and_1_5():
    chosen, rejected = torch.tensor([2.5]), torch.tensor([1.5])
    assert round(bradley_terry(chosen - rejected).item(), 3) == 0.731
    assert bradley_terry_loss(chosen, rejected).item() == pytest.approx(-math.log(1 / (1 + math.exp(-1.0))))
    # the loss falls as the margin grows and is symmetric in which side is ahead
    assert bradley_terry_loss(torch.tensor([5.0]), rejected) < bradley_terry_loss(chosen, rejected)
    assert bradley_terry_loss(rejected, chosen).item() == pytest.approx(
        1.0 + bradley_terry_loss(chosen, rejected).item(), abs=1e-6
    )


def test_rm_config_checks():
    with pytest.raises(ValueError, match="data is required"):
        RMConfig(model="/m")
    with pytest.raises(ValueError, match="eval_data .* or eval_fraction"):
        RMConfig(model="/m", data=["a"], eval_data=["b"], eval_fraction=0.2)
    with pytest.raises(ValueError, match="lora_r \\(8\\)"):
        RMConfig(model="/m", data=["a"], lora_r=8)


def _rollouts(path, seed):
    """Pairs where one kind of trajectory is always better: the scripted solver (score 1) against
    random tool calls and answers (score 0) on the same tasks."""
    kw = dict(n=8, env_kwargs={"difficulty": 1}, seed=seed, progress=False)
    write_jsonl(
        path,
        run_rollouts("toy/calculator-v0", "scripted", **kw)
        + run_rollouts("toy/calculator-v0", "random", **kw),
    )
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("rm-data")
    return _rollouts(root / "train.jsonl", seed=1), _rollouts(root / "eval.jsonl", seed=2)


def _flags(model, data, out, seed):
    train, held = data
    return [
        "--model", str(model), "--data", train, "--eval-data", held, "--output-dir", str(out),
        "--max-steps", "3", "--batch-size", "4", "--micro-batch-size", "4", "--learning-rate", "1e-3",
        "--max-length", "4096", "--seed", str(seed), "--quiet", "true",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tiny_model_dir, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("rm") / "run"
    assert main(["train", "rm", *_flags(tiny_model_dir, data, out, seed=0)]) == 0
    return out


def test_train_rm_cli_ranks_held_out_pairs(trained):
    summary = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()][-1]
    assert summary["event"] == "done" and summary["pairs"] == 8 and summary["eval_pairs"] == 8
    # chance is 0.5; three steps on 8 pairs rank every held-out pair right
    assert summary["eval_accuracy_after"] >= 0.875 > summary["eval_accuracy_before"]
    assert summary["eval_loss_after"] < 0.5 * summary["eval_loss_before"]
    assert summary["last_loss"] < summary["first_loss"]
    info = json.loads((trained / "final" / "reward_model.json").read_text())
    assert info["kind"] == "agentgym-reward-model" and info["base_model"]


def test_train_rm_another_seed(tiny_model_dir, data, tmp_path):
    train, held = data
    cfg = RMConfig(
        model=str(tiny_model_dir),
        data=[train],
        eval_data=[held],
        output_dir=str(tmp_path / "rm"),
        max_steps=3,
        batch_size=4,
        micro_batch_size=4,
        learning_rate=1e-3,
        max_length=4096,
        seed=1,
        quiet=True,
    )
    s = train_rm(cfg)
    assert s["eval_accuracy_after"] >= 0.875 and s["eval_loss_after"] < s["eval_loss_before"]


def test_saved_rm_loads_back_and_scores_as_the_run_verifier(trained, data):
    model, tok, info = load_reward_model(trained / "final")
    assert not model.training and tok.pad_token_id is not None and info["max_length"] == 4096
    kw = dict(n=4, env_kwargs={"difficulty": 1}, seed=9, progress=False, verifier=f"rm:{trained / 'final'}")
    good = run_rollouts("toy/calculator-v0", "scripted", **kw)
    bad = run_rollouts("toy/calculator-v0", "random", **kw)
    assert all(t.status in ("ok", "truncated") for t in good + bad)
    assert all(0.0 < t.score < 1.0 and t.score == t.metadata["breakdown"]["rm"] for t in good + bad)
    assert min(t.score for t in good) > max(t.score for t in bad)
    assert [t.metadata["breakdown"]["env_score"] for t in good] == [1.0] * 4


def test_cli_eval_with_rm_verifier(trained, capsys):
    argv = ["eval", "--env", "toy/calculator-v0", "--policy", "scripted", "--n", "2", "--json"]
    assert main([*argv, "--env-kwargs", "difficulty=1", "--verifier", f"rm:{trained / 'final'}"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0.5 < summary["mean_score"] < 1.0  # sigma(r) of good trajectories, not the env's 1.0


def test_missing_rm_is_a_verifier_error(tmp_path):
    trajs = run_rollouts(
        "toy/calculator-v0", "scripted", n=2, progress=False, verifier=f"rm:{tmp_path / 'nothing'}"
    )
    for t in trajs:
        assert t.status == "env_error" and t.score == 0.0
        assert "no reward model at" in t.metadata["verifier_errors"]["rm"]
        assert "reward_model.json is missing" in t.metadata["verifier_errors"]["rm"]


def test_judge_through_a_model_backend_that_writes_garbage(tiny_model_dir, tmp_path, capsys):
    """The untrained tiny model never writes 'SCORE: x': every episode is a verifier error."""
    out = tmp_path / "judged.jsonl"
    judge = f"judge:hf:{tiny_model_dir},temperature=0,max_tokens=8"
    argv = ["rollout", "--env", "toy/calculator-v0", "--policy", "scripted", "--n", "2", "--out", str(out)]
    assert main([*argv, "--env-kwargs", "difficulty=1", "--verifier", judge]) == 0
    trajs = load_trajectories(out)
    assert [t.status for t in trajs] == ["env_error", "env_error"]
    assert all("has no 'SCORE: x' line" in t.metadata["verifier_errors"]["judge"] for t in trajs)

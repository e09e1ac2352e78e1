"""Same seed, same machine, same result: the offline trainers repeat themselves exactly on CPU
(losses and final weights), so a learning test that passes once passes again."""

import json

import pytest
import torch


def _weights(model_dir):
    from safetensors.torch import load_file

    return load_file(f"{model_dir}/model.safetensors")


def _same_weights(a, b):
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _losses(output_dir):
    with open(f"{output_dir}/metrics.jsonl") as f:
        rows = [json.loads(x) for x in f]
    return [r["loss"] for r in rows if "loss" in r]


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    from agentgym.rollout import run_rollouts
    from agentgym.types import write_jsonl

    path = tmp_path_factory.mktemp("demos") / "demos.jsonl"
    good = run_rollouts("toy/calculator-v0", "scripted", n=16, env_kwargs={"difficulty": 1}, progress=False)
    bad = run_rollouts("toy/calculator-v0", "random", n=16, env_kwargs={"difficulty": 1}, progress=False)
    write_jsonl(path, good + bad)
    return path


def test_sft_repeats_exactly_for_a_seed_and_differs_for_another(tiny_model_dir, demos, tmp_path):
    from agentgym.trainers import SFTConfig, train_sft

    def run(name, seed):
        cfg = SFTConfig(
            model=str(tiny_model_dir),
            data=[str(demos)],
            output_dir=str(tmp_path / name),
            max_steps=8,
            batch_size=8,
            micro_batch_size=4,
            learning_rate=3e-3,
            seed=seed,
            quiet=True,
        )
        return train_sft(cfg)

    a, b = run("a", 0), run("b", 0)
    run("c", 1)
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")
    assert _same_weights(a["model_dir"], b["model_dir"])
    assert _losses(tmp_path / "a") != _losses(tmp_path / "c")  # the seed orders the data


def test_offline_dpo_repeats_exactly_for_a_seed(tiny_model_dir, demos, tmp_path):
    from agentgym.trainers import DPOConfig, train_dpo

    def run(name):
        cfg = DPOConfig(
            model=str(tiny_model_dir),
            data=[str(demos)],
            output_dir=str(tmp_path / name),
            max_steps=4,
            batch_size=4,
            micro_batch_size=2,
            learning_rate=1e-3,
            quiet=True,
        )
        return train_dpo(cfg)

    a, b = run("a"), run("b")
    assert a["pairs"] >= 8
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")
    assert _same_weights(a["model_dir"], b["model_dir"])

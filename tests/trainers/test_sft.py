"""SFT: exact resume from a checkpoint, and learning the toy calculator from scripted demos."""

import json
import shutil

import pytest
import torch
from agentgym.trainers.config import SFTConfig
from agentgym.trainers.sft import batch_indices, train_sft

from agentgym.types import Trajectory, write_jsonl


def _token_records(path, n=6):
    trajs = []
    for i in range(n):
        prompt = [1, 10 + i, 11, 12, 2, 1, 20]
        answer = [30 + i, 31, 32 + i, 2]
        tool = [1, 40, 41 + i, 2, 1, 20]
        final = [50 + i, 2]
        ids = prompt + answer + tool + final
        mask = [0] * len(prompt) + [1] * len(answer) + [0] * len(tool) + [1] * len(final)
        trajs.append(
            Trajectory(
                messages=[],
                env="",
                task_id=f"t{i}",
                score=1.0,
                tokens=ids,
                mask=mask,
                logprobs=[0.0] * len(ids),
            )
        )
    write_jsonl(path, trajs)
    return path


def _weights(model_dir):
    from safetensors.torch import load_file

    return load_file(f"{model_dir}/model.safetensors")


def test_data_position_is_a_function_of_the_step():
    a = [batch_indices(10, s, 4, seed=3) for s in range(5)]
    assert a == [batch_indices(10, s, 4, seed=3) for s in range(5)]
    # each epoch of 10 records is a permutation, read across step boundaries
    flat = sum(a, [])
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))


@pytest.mark.slow
def test_resume_continues_exactly(tiny_model_dir, tmp_path):
    data = _token_records(tmp_path / "d.jsonl")
    common = dict(
        model=str(tiny_model_dir),
        data=[str(data)],
        batch_size=4,
        micro_batch_size=2,
        max_steps=4,
        save_every=2,
        learning_rate=1e-2,
        lr_scheduler="linear",
        warmup_steps=1,
        quiet=True,
    )
    full = train_sft(SFTConfig(output_dir=str(tmp_path / "a"), **common))
    assert full["last_loss"] < full["first_loss"]
    before = _weights(tiny_model_dir)
    after = _weights(full["model_dir"])
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # interrupt after step 2: drop the later checkpoint and the final model, then resume
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "step-4")
    shutil.rmtree(tmp_path / "b" / "final")
    resumed = train_sft(SFTConfig(output_dir=str(tmp_path / "b"), resume=True, **common))
    assert resumed["steps"] == 4
    again = _weights(resumed["model_dir"])
    for k in after:
        assert torch.equal(after[k], again[k]), k
    rows = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r][-2:] == [3, 4]

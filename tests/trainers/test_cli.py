"""`agentgym train ...` from the command line: a tiny SFT run, and bad settings explained."""

import json
import subprocess
import sys

import pytest

from agentgym.types import Trajectory, write_jsonl


def _token_records(path, n):
    ids, mask = [1, 10, 11, 2, 1, 20, 21, 22, 2], [0, 0, 0, 0, 0, 1, 1, 1, 1]
    trajs = [
        Trajectory(env="", task_id=f"t{i}", score=1.0, tokens=ids, mask=mask, logprobs=[0.0] * 9)
        for i in range(n)
    ]
    write_jsonl(path, trajs)
    return path


def _agentgym(*args):
    return subprocess.run(
        [sys.executable, "-m", "agentgym", *args], capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_train_sft_cli_runs_and_prints_json_metrics(tiny_model_dir, tmp_path):
    data = _token_records(tmp_path / "d.jsonl", n=4)
    out = _agentgym(
        "train",
        "sft",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(data),
        "--max-steps",
        "2",
        "--batch-size",
        "2",
        "--micro-batch-size",
        "1",
        "--learning-rate",
        "1e-2",
        "--output-dir",
        str(tmp_path / "run"),
    )
    assert out.returncode == 0, out.stderr
    lines = [json.loads(x) for x in out.stdout.splitlines() if x.startswith("{")]
    assert [r["step"] for r in lines if "loss" in r] == [1, 2]
    assert lines[-1]["summary"]["steps"] == 2
    assert (tmp_path / "run" / "final" / "config.json").exists()


def test_train_cli_names_both_conflicting_values(tmp_path):
    out = _agentgym(
        "train", "sft", "--model", "m", "--data", "d.jsonl", "--batch-size", "3", "--micro-batch-size", "2"
    )
    assert out.returncode == 2
    assert "batch_size (3)" in out.stderr and "micro_batch_size (2)" in out.stderr

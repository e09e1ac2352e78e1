"""Trainer configs: YAML + flag overrides, documented fields, cross-field checks naming both values."""

import argparse
import dataclasses

import pytest
from agentgym.trainers.config import (
    DistillConfig,
    DPOConfig,
    GRPOConfig,
    OnlineConfig,
    OnlineDPOConfig,
    SFTConfig,
    add_config_flags,
    config_from_args,
    field_docs,
    load_config,
)


def test_yaml_then_flags_override(tmp_path):
    path = tmp_path / "sft.yaml"
    path.write_text("model: /m\ndata: [a.jsonl, b.jsonl]\nlearning_rate: 1e-3\nbatch_size: 8\n")
    parser = argparse.ArgumentParser()
    add_config_flags(parser, SFTConfig)
    args = parser.parse_args(["--config", str(path), "--batch-size", "4", "--micro-batch-size", "2"])
    cfg = config_from_args(SFTConfig, args)
    assert (cfg.model, cfg.data, cfg.learning_rate) == ("/m", ["a.jsonl", "b.jsonl"], 1e-3)
    assert (cfg.batch_size, cfg.micro_batch_size, cfg.accumulation_steps) == (4, 2, 2)


def test_every_field_is_documented_once():
    for cls in (SFTConfig, DPOConfig, OnlineDPOConfig, GRPOConfig, DistillConfig):
        docs = field_docs(cls)
        missing = [f.name for f in dataclasses.fields(cls) if not docs.get(f.name)]
        assert not missing, f"{cls.__name__}: undocumented {missing}"


@pytest.mark.parametrize(
    "cls, overrides, words",
    [
        (SFTConfig, {"batch_size": 6, "micro_batch_size": 4}, ["batch_size (6)", "micro_batch_size (4)"]),
        (SFTConfig, {"eval_data": ["e.jsonl"], "eval_fraction": 0.1}, ["eval_data", "eval_fraction (0.1)"]),
        (SFTConfig, {"max_steps": 5, "epochs": 2.0}, ["epochs (2.0)", "max_steps (5)"]),
        (SFTConfig, {"lora_alpha": 32}, ["lora_alpha (32)", "lora_r (0)"]),
        (
            DPOConfig,
            {"loss_type": "ipo", "label_smoothing": 0.1},
            ["label_smoothing (0.1)", "loss_type (ipo)"],
        ),
        (GRPOConfig, {"loss_agg": "constant"}, ["loss_constant (0.0)", "'constant'"]),
        (
            GRPOConfig,
            {"sampler": "hf", "gpu_memory_utilization": 0.5},
            ["gpu_memory_utilization (0.5)", "sampler (hf)"],
        ),
        (GRPOConfig, {"num_tasks": 2, "tasks_per_step": 4}, ["num_tasks (2)", "tasks_per_step (4)"]),
        (GRPOConfig, {"loss_agg": "sum"}, ["loss_agg", "'sum'"]),
        (GRPOConfig, {"sampler": "server", "lora_r": 8}, ["server_url"]),
        (GRPOConfig, {"sampler": "server", "server_url": "http://h/v1"}, ["sampler (server)", "lora_r is 0"]),
        (GRPOConfig, {"server_url": "http://h/v1"}, ["server_url ('http://h/v1')", "sampler (vllm)"]),
        (GRPOConfig, {"sampler": "hf", "enforce_eager": True}, ["enforce_eager (True)", "sampler (hf)"]),
        (DPOConfig, {"data": []}, ["data is required", "online-dpo"]),
        (OnlineDPOConfig, {"rounds": 0}, ["rounds must be >= 1", "got 0"]),
        (OnlineDPOConfig, {"group_size": 1}, ["group_size must be >= 2", "got 1"]),
        (OnlineDPOConfig, {"beta": 0.0}, ["beta must be > 0", "got 0.0"]),
    ],
)
def test_cross_field_errors_name_both_values(cls, overrides, words):
    base = (
        {"model": "/m", "env": "toy/calculator-v0"}
        if issubclass(cls, OnlineConfig)
        else {"model": "/m", "data": ["d.jsonl"]}
    )
    with pytest.raises(ValueError) as e:
        load_config(cls, overrides={**base, **overrides})
    for w in words:
        assert w in str(e.value)


def test_unknown_field_and_bad_override_are_explained():
    with pytest.raises(ValueError, match="unknown SFTConfig field.*learning_rte.*known:"):
        load_config(SFTConfig, overrides=["model=/m", "data=[d]", "learning_rte=1"])
    with pytest.raises(ValueError, match="field=value"):
        load_config(SFTConfig, overrides=["model"])
    with pytest.raises(ValueError, match="model is required"):
        load_config(SFTConfig, overrides=["data=[d]"])


def test_cli_parses_without_importing_torch():
    import subprocess
    import sys

    code = (
        "import sys; from agentgym.cli import build_parser; p = build_parser(); "
        "a = p.parse_args(['train', 'grpo', '--model', 'm', '--env', 'toy/calculator-v0', '--clip-high', '0.3']); "
        "print(a.cfg_clip_high, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["0.3", "False"]


def test_the_task_pool_is_the_given_ids_checked_against_the_env():
    from agentgym.trainers.sampler import step_tasks, task_pool

    cfg = GRPOConfig(model="/m", env="toy/calculator-v0", task_ids=["calc-5", "calc-31"], tasks_per_step=1)
    assert task_pool(cfg) == ["calc-5", "calc-31"]
    assert [step_tasks(task_pool(cfg), step, 1) for step in range(3)] == [["calc-5"], ["calc-31"], ["calc-5"]]
    assert task_pool(GRPOConfig(model="/m", env="toy/calculator-v0", num_tasks=3, tasks_per_step=3)) == [
        "calc-0",
        "calc-1",
        "calc-2",
    ]
    with pytest.raises(ValueError, match="calc-12"):
        task_pool(
            GRPOConfig(model="/m", env="toy/calculator-v0", task_ids=["calc-5", "five"], tasks_per_step=2)
        )
    with pytest.raises(ValueError, match=r"task_ids \(1 distinct\) must hold at least tasks_per_step \(2\)"):
        GRPOConfig(model="/m", env="toy/calculator-v0", task_ids=["calc-5", "calc-5"], tasks_per_step=2)


def test_task_ids_come_from_flags_and_overrides():
    parser = argparse.ArgumentParser()
    add_config_flags(parser, GRPOConfig)
    args = parser.parse_args(
        [
            "--model",
            "/m",
            "--env",
            "toy/calculator-v0",
            "--task-ids",
            "[calc-1, calc-7]",
            "--tasks-per-step",
            "2",
        ]
    )
    assert config_from_args(GRPOConfig, args).task_ids == ["calc-1", "calc-7"]
    cfg = load_config(
        GRPOConfig, overrides=["model=/m", "env=toy/calculator-v0", "task_ids=[calc-2]", "tasks_per_step=1"]
    )
    assert cfg.task_ids == ["calc-2"]


def test_env_kwargs_take_the_same_key_value_pairs_as_every_command():
    from agentgym.cli_core import parse_kwargs

    parser = argparse.ArgumentParser()
    add_config_flags(parser, GRPOConfig)
    pairs = ["difficulty=1", "site=shop", "sizes=[1, 2]", "flag=true"]
    want = {"difficulty": 1, "site": "shop", "sizes": [1, 2], "flag": True}
    args = parser.parse_args(["--model", "m", "--env", "toy/calculator-v0", "--env-kwargs", *pairs])
    assert config_from_args(GRPOConfig, args).env_kwargs == want
    assert parse_kwargs(pairs) == want  # what rollout, eval and generate use
    args = parser.parse_args(
        ["--model", "m", "--env", "toy/calculator-v0", "--env-kwargs", "{difficulty: 1}"]
    )
    assert config_from_args(GRPOConfig, args).env_kwargs == {"difficulty": 1}  # one YAML mapping still reads
    with pytest.raises(ValueError, match="key=value pairs"):
        parse_kwargs(["difficulty"])


def test_offline_dpo_config_points_online_fields_to_online_dpo():
    with pytest.raises(ValueError) as e:
        load_config(DPOConfig, overrides={"model": "/m", "data": ["d.jsonl"], "env": "toy/calculator-v0"})
    assert "unknown DPOConfig field(s) env" in str(e.value)
    assert "agentgym train online-dpo" in str(e.value)

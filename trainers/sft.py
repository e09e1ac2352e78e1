"""Supervised fine-tuning on trajectories: masked NLL on the agent's tokens only.

    agentgym rollout --env toy/calculator-v0 --policy scripted --n 64 --out demos.jsonl
    agentgym train sft --model /tmp/tiny --data demos.jsonl --output-dir runs/sft --max-steps 100

or from Python: ``train_sft(SFTConfig(model=..., data=[...]))``. Records come from any producer
of the trajectory JSONL schema (teacher demos, self-play, filtered samples); records with a
token record train on exactly those tokens, message-only records are tokenized once with the
model's chat template. Only ``ok`` / ``truncated`` records are used. The final model (LoRA
merged) is written to ``output_dir/final``.
"""

from __future__ import annotations

import math
import sys
import zlib

import torch
from agentgym.trainers.batch import Sequence, collate, forward_logprobs, passed_token_check
from agentgym.trainers.common import (
    Tokenizer,
    accumulate,
    batch_indices,
    load_tokenizer,
    make_accelerator,
    save_checkpoint,
    save_model,
    start_run,
)
from agentgym.trainers.config import SFTConfig

from agentgym.types import Trajectory, load_trajectories


def held_out(task_id: str, fraction: float) -> bool:
    """A stable split by task id: the same task is always on the same side."""
    return fraction > 0 and (zlib.crc32(task_id.encode()) % 10_000) < fraction * 10_000


def load_records(paths: list[str], min_score: float | None) -> list[Trajectory]:
    trajs = [t for p in paths for t in load_trajectories(p)]
    kept = [t for t in trajs if t.is_evidence and (min_score is None or t.score >= min_score)]
    usable = [t for t in kept if passed_token_check(t)]
    if len(usable) < len(kept):
        print(
            f"sft: left out {len(kept) - len(usable)} records whose token record failed its check",
            file=sys.stderr,
        )
    return usable


def nll_sum(model, batch) -> torch.Tensor:
    return -(forward_logprobs(model, batch) * batch.loss_mask).sum()


@torch.no_grad()
def eval_loss(acc, model, seqs: list[Sequence], micro_size: int, pad_id: int) -> float | None:
    """Mean NLL per agent token over ``seqs``."""
    if not seqs:
        return None
    model.eval()
    total, tokens = 0.0, 0
    for i in range(0, len(seqs), micro_size):
        batch = collate(sorted(seqs, key=len)[i : i + micro_size], pad_id).to(acc.device)
        with acc.autocast():
            total += float(nll_sum(model, batch))
        tokens += batch.num_agent_tokens
    model.train()
    return total / max(tokens, 1)


def train_sft(cfg: SFTConfig) -> dict:
    """Run SFT; returns a summary (first/last train loss, eval loss before/after, model dir)."""
    acc = make_accelerator(cfg)
    tok = load_tokenizer(cfg.model)
    tokenize = Tokenizer(tok, cfg.max_length)
    records = load_records(cfg.data, cfg.min_score)
    if cfg.eval_data:
        train_trajs, eval_trajs = records, load_records(cfg.eval_data, cfg.min_score)
    else:
        train_trajs = [t for t in records if not held_out(t.task_id, cfg.eval_fraction)]
        eval_trajs = [t for t in records if held_out(t.task_id, cfg.eval_fraction)]
    if not train_trajs:
        raise ValueError(f"no usable training records in {cfg.data} (ok/truncated, score >= {cfg.min_score})")
    train = [tokenize(t) for t in train_trajs]
    evals = [tokenize(t) for t in eval_trajs]
    global_batch = cfg.batch_size * acc.num_processes
    total_steps = cfg.max_steps or math.ceil(cfg.epochs * len(train) / global_batch)

    run = start_run(cfg, acc, "sft", total_steps)
    model, step = run.model, run.step
    eval_before = eval_loss(acc, model, evals, cfg.micro_batch_size, tok.pad_token_id) if step == 0 else None
    first_loss = last_loss = None
    while step < total_steps:
        idx = batch_indices(len(train), step, global_batch, cfg.seed)[acc.process_index :: acc.num_processes]
        batch = [train[i] for i in idx]
        loss, agent_tokens = accumulate(
            acc, model, batch, cfg.micro_batch_size, tok.pad_token_id, nll_sum, run.share
        )
        grad_norm = run.optimizer_step(cfg.max_grad_norm)
        step += 1
        first_loss = loss if first_loss is None else first_loss
        last_loss = loss
        row = {
            "loss": loss,
            "train_tokens": sum(len(x) for x in batch),
            "agent_tokens": int(agent_tokens),
            "lr": run.sched.get_last_lr()[0],
        }
        if grad_norm is not None:
            row["grad_norm"] = grad_norm
        if cfg.eval_every and step % cfg.eval_every == 0 and evals:
            row["eval_loss"] = eval_loss(acc, model, evals, cfg.micro_batch_size, tok.pad_token_id)
        run.metrics.log(step, **row)
        if cfg.save_every and step % cfg.save_every == 0:
            save_checkpoint(acc, cfg.output_dir, step, {"records": len(train)})
    eval_after = eval_loss(acc, model, evals, cfg.micro_batch_size, tok.pad_token_id)
    final = save_model(acc, model, tok, f"{cfg.output_dir}/final")
    summary = {
        "steps": step,
        "train_records": len(train),
        "eval_records": len(evals),
        "first_loss": first_loss,
        "last_loss": last_loss,
        "eval_loss_before": eval_before,
        "eval_loss_after": eval_after,
        "model_dir": str(final),
    }
    run.metrics.log(step, event="done", **{k: v for k, v in summary.items() if k != "model_dir"})
    acc.end_training()
    return summary

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
from contextlib import nullcontext

import torch
from agentgym.trainers.batch import Sequence, collate, forward_logprobs, passed_token_check, prompt_of
from agentgym.trainers.common import (
    Metrics,
    Tokenizer,
    load_checkpoint,
    load_model,
    load_tokenizer,
    make_accelerator,
    make_optimizer,
    save_checkpoint,
    save_model,
    shares_prefix,
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


def batch_indices(n: int, step: int, batch: int, seed: int) -> list[int]:
    """The record indices of global optimizer step ``step``: a seeded permutation per epoch, read
    in order, so the data position is a pure function of the step (exact resume)."""
    out: list[int] = []
    start = step * batch
    epoch, offset = divmod(start, n)
    while len(out) < batch:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
        take = perm[offset : offset + batch - len(out)]
        out += take
        epoch, offset = epoch + 1, 0
    return out


def accumulate(
    acc,
    model,
    seqs: list[Sequence],
    micro_size: int,
    pad_id: int,
    loss_sum_fn,
    share_prefix: bool = False,
    total: float | None = None,
) -> tuple[float, float]:
    """Forward/backward over micro-batches of ``seqs`` (sorted by length for tight padding; with
    ``share_prefix``, by prompt first, so the sequences of one prompt share a micro-batch) so that
    the gradient equals that of ``sum(loss) / total``, ``total`` being the batch's agent tokens
    unless given (a trainer that splits one batch over processes passes the whole batch's agent
    tokens / processes, so that DDP's average is the whole batch's token mean).

    ``loss_sum_fn(model, batch) -> scalar`` returns the summed loss of one micro-batch."""
    seqs = sorted(seqs, key=lambda s: (prompt_of(s), len(s)) if share_prefix else len(s))
    total = max(total if total is not None else sum(s.num_agent_tokens for s in seqs), 1)
    chunks = [seqs[i : i + micro_size] for i in range(0, len(seqs), micro_size)]
    loss_total = 0.0
    for i, chunk in enumerate(chunks):
        batch = collate(chunk, pad_id, share_prefix).to(acc.device)
        sync = nullcontext() if i == len(chunks) - 1 else acc.no_sync(model)
        with sync, acc.autocast():
            loss_sum = loss_sum_fn(model, batch)
            acc.backward(loss_sum / total)
        loss_total += float(loss_sum.detach())
    return loss_total / total, total


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

    model = load_model(cfg)
    model.train()
    opt, sched = make_optimizer(cfg, model, total_steps)
    model, opt, sched = acc.prepare(model, opt, sched)
    metrics = Metrics(acc, cfg, "sft")
    share = shares_prefix(cfg, acc)
    step = 0
    if cfg.resume and (state := load_checkpoint(acc, cfg.output_dir)) is not None:
        step = state["step"]
    eval_before = eval_loss(acc, model, evals, cfg.micro_batch_size, tok.pad_token_id) if step == 0 else None
    first_loss = last_loss = None
    while step < total_steps:
        idx = batch_indices(len(train), step, global_batch, cfg.seed)[acc.process_index :: acc.num_processes]
        loss, tokens = accumulate(
            acc, model, [train[i] for i in idx], cfg.micro_batch_size, tok.pad_token_id, nll_sum, share
        )
        grad_norm = (
            acc.clip_grad_norm_(model.parameters(), cfg.max_grad_norm) if cfg.max_grad_norm > 0 else None
        )
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        first_loss = loss if first_loss is None else first_loss
        last_loss = loss
        row = {"loss": loss, "agent_tokens": tokens, "lr": sched.get_last_lr()[0]}
        if grad_norm is not None:
            row["grad_norm"] = float(grad_norm)
        if cfg.eval_every and step % cfg.eval_every == 0 and evals:
            row["eval_loss"] = eval_loss(acc, model, evals, cfg.micro_batch_size, tok.pad_token_id)
        metrics.log(step, **row)
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
    metrics.log(step, event="done", **{k: v for k, v in summary.items() if k != "model_dir"})
    acc.end_training()
    return summary

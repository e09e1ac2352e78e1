"""On-policy distillation: the student rolls out, a frozen teacher scores each sampled token.

    agentgym train distill --model runs/small --teacher runs/sft/final --env toy/calculator-v0 \\
        --env-kwargs difficulty=1 --sampler vllm --group-size 4 --tasks-per-step 8 \\
        --max-steps 20 --output-dir runs/distill

or ``train_distill(DistillConfig(...))``. The teacher must share the student's tokenizer: it
scores the very token ids the student sampled. Each step reads top to bottom:

1. ``tasks_per_step`` tasks from a fixed pool, ``group_size`` rollouts each, with the student's
   current weights through the rollout runner (the same samplers, task schedule and
   ``output_dir/rollouts.jsonl`` as GRPO, ``agentgym.trainers.sampler``);
2. only ``ok`` / ``truncated`` trajectories with a checked token record are trained on; the env's
   scores are logged (mean score, pass rate) and play no part in the loss;
3. the frozen teacher (eval mode, no gradient) gives its log-prob of every token the student
   sampled, and the student minimises the reverse KL(student || teacher) on its agent tokens,
   each token's reward being ``log teacher - log sampler``
   (``agentgym.trainers.losses.reverse_kl_loss``); ``reverse_kl`` is logged per agent token;
4. the new weights reach the sampler, as in GRPO.
"""

from __future__ import annotations

import time
from collections import Counter

import torch
from agentgym.trainers import sampler as online
from agentgym.trainers.batch import forward_logprobs, passed_token_check
from agentgym.trainers.common import (
    Tokenizer,
    accumulate,
    load_model,
    load_tokenizer,
    make_accelerator,
    process_share,
    save_checkpoint,
    save_model,
    start_run,
)
from agentgym.trainers.config import DistillConfig
from agentgym.trainers.losses import reverse_kl_loss

from agentgym.types import Trajectory


def check_same_tokenizer(student, teacher, student_name: str, teacher_name: str) -> None:
    """Raise unless the two tokenizers map every token to the same id: the teacher scores the
    student's sampled ids, which mean nothing under another vocabulary."""
    mine, theirs = student.get_vocab(), teacher.get_vocab()
    if mine == theirs:
        return
    differ = sorted(t for t in mine.keys() | theirs.keys() if mine.get(t) != theirs.get(t))
    example = differ[0]
    raise ValueError(
        f"the teacher ({teacher_name}) does not share the student's ({student_name}) tokenizer: "
        f"{len(theirs)} vs {len(mine)} tokens, {len(differ)} with different ids (e.g. {example!r}: "
        f"{theirs.get(example)} in the teacher, {mine.get(example)} in the student); on-policy "
        "distillation scores the student's sampled token ids with the teacher, so pick a teacher "
        "of the student's model family (the same tokenizer)"
    )


def trainable(trajs: list[Trajectory]) -> tuple[list[Trajectory], dict[str, int]]:
    """The rollouts that are trained on (``ok`` / ``truncated``, with a token record that passed
    its check), and counts of those left out."""
    counts: Counter[str] = Counter(excluded_status=0, excluded_tokens=0)
    kept = []
    for t in trajs:
        if not t.is_evidence:
            counts["excluded_status"] += 1
        elif t.tokens is None or not passed_token_check(t):
            counts["excluded_tokens"] += 1
        else:
            kept.append(t)
    missing = [t.task_id for t in kept if t.logprobs is None]
    if missing:
        raise ValueError(
            f"distillation needs the sampler's log-prob of every sampled token, and {len(missing)} "
            f"rollouts (e.g. of task {missing[0]}) have none; use a sampler that reports them"
        )
    return kept, dict(counts)


def train_distill(cfg: DistillConfig) -> dict:
    """Run on-policy distillation; returns the summary (reverse KL and mean score per step, model dir)."""
    acc = make_accelerator(cfg)
    tok = load_tokenizer(cfg.model)
    check_same_tokenizer(tok, load_tokenizer(cfg.teacher_dir), cfg.model, cfg.teacher)
    tokenize = Tokenizer(tok, cfg.max_length)
    pool = online.task_pool(cfg)
    model = load_model(cfg)
    teacher = load_model(cfg, cfg.teacher_dir, trainable=False).to(acc.device)
    run = start_run(cfg, acc, "distill", cfg.max_steps, model=model)
    model, step = run.model, run.step
    online.start_backend(cfg)
    policy = online.make_sampler(cfg, acc.unwrap_model(model), tok)
    version = run.state.get("policy_version", step) if run.state is not None else step
    if step:
        online.push(cfg, policy, acc.unwrap_model(model), step)
    scores: list[float] = []
    kls: list[float] = []
    try:
        while step < cfg.max_steps:
            trajs, row = online.rollout_step(cfg, policy, pool, step, acc, version)
            scores.append(row["mean_score"])
            kept, counts = trainable(trajs)
            row.update(counts, sequences=len(kept))
            seqs = [tokenize(t) for t in kept]
            t1 = time.perf_counter()
            model.train()
            procs, rank = acc.num_processes, acc.process_index
            global_batch = cfg.batch_size * procs
            sums = Counter()
            losses, norms = [], []
            for b in range(0, len(seqs), global_batch):
                # every process holds every sequence and trains its share of the global batch,
                # normalised by the global batch's agent tokens (as GRPO does)
                both = seqs[b : b + global_batch]
                chunk, weight = process_share(both, procs, rank)
                loss, _ = accumulate(
                    acc,
                    model,
                    chunk,
                    cfg.micro_batch_size,
                    tok.pad_token_id,
                    _loss_fn(cfg, teacher, sums, weight),
                    run.share,
                    total=sum(s.num_agent_tokens for s in both) / procs,
                )
                norms.append(run.optimizer_step(cfg.max_grad_norm, schedule=False))
                losses.append(loss)
            run.sched.step()
            update_s = time.perf_counter() - t1
            row["update_s"] = update_s
            if losses:
                tokens = sums["agent_tokens"]
                row.update(
                    loss=sum(losses) / len(losses),
                    reverse_kl=sums["reverse_kl"] / tokens,
                    ratio_mean=sums["ratio_mean"] / tokens,
                    agent_tokens=int(tokens),
                )
                if norms[0] is not None:
                    row["grad_norm"] = sum(norms) / len(norms)
                kls.append(row["reverse_kl"])
                version += 1
                if (took := online.push(cfg, policy, acc.unwrap_model(model), step + 1)) is not None:
                    row["push_s"] = took
            step += 1
            run.metrics.log(step, **row)
            if cfg.save_every and step % cfg.save_every == 0:
                state = {"tasks_seen": step * cfg.tasks_per_step, "policy_version": version}
                save_checkpoint(acc, cfg.output_dir, step, state)
    finally:
        online.close(policy, cfg)
    final = save_model(acc, model, tok, f"{cfg.output_dir}/final")
    summary = {
        "steps": step,
        "reverse_kls": kls,
        "first_reverse_kl": kls[0] if kls else None,
        "last_reverse_kl": kls[-1] if kls else None,
        "mean_scores": scores,
        "model_dir": str(final),
    }
    run.metrics.log(
        step,
        event="done",
        first_reverse_kl=summary["first_reverse_kl"],
        last_reverse_kl=summary["last_reverse_kl"],
    )
    acc.end_training()
    return summary


def _loss_fn(cfg: DistillConfig, teacher, sums: Counter, weight: float):
    """The summed reverse-KL loss of one micro-batch, for ``accumulate`` (which divides by the
    batch's agent tokens); adds the micro-batch's token-weighted stats to ``sums``. ``weight`` 0
    makes a process take part in the gradient all-reduce without contributing to it."""

    def loss_sum(model, batch):
        lp = forward_logprobs(model, batch)
        with torch.no_grad():
            teacher_lp = forward_logprobs(teacher, batch)
        loss, stats = reverse_kl_loss(
            lp,
            batch.old_logprobs,
            teacher_lp,
            batch.loss_mask,
            agg=cfg.loss_agg,
            constant=cfg.loss_constant or 1.0,
        )
        n = batch.loss_mask.sum()
        if weight:
            sums["agent_tokens"] += float(n)
            for k, v in stats.items():
                sums[k] += v * float(n)
        return loss * n * weight

    return loss_sum

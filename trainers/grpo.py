"""Online GRPO on multi-turn trajectories: roll out, score, group advantages, PPO-clip, push weights.

    agentgym train grpo --model runs/sft/final --env toy/calculator-v0 --env-kwargs difficulty=1 \\
        --sampler vllm --group-size 8 --tasks-per-step 4 --max-steps 20 --output-dir runs/grpo

or ``train_grpo(GRPOConfig(...))``. Each step reads top to bottom:

1. ``tasks_per_step`` tasks from a fixed pool, ``group_size`` rollouts each, through the rollout
   runner with the current policy (vLLM in-process engine, vLLM servers, or the training model
   itself via hf); under ``accelerate launch`` each process samples tasks of its own and all
   processes share the rollouts, then train their part of every batch;
2. only ``ok`` / ``truncated`` trajectories with a checked token record enter a group;
3. group advantages from the env verifier's scores; zero-variance groups are dropped (counted);
4. ``inner_epochs`` passes of PPO-clip over the agent tokens, the ratio taken against the
   sampler's log-probs, optional k3 KL to the frozen starting model;
   Every rollout is appended to ``output_dir/rollouts.jsonl`` (DPO pairs and data-engine input);
5. the new weights reach the sampler (``agentgym.trainers.sampler``): full weights into the
   in-process engine, or a new LoRA adapter loaded by the servers; a push that does not finish in
   ``push_timeout`` seconds raises.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict

import torch
from agentgym.trainers import sampler as online
from agentgym.trainers.batch import forward_logprobs, passed_token_check
from agentgym.trainers.common import (
    Tokenizer,
    accumulate,
    load_model,
    load_tokenizer,
    make_accelerator,
    save_checkpoint,
    save_model,
    start_run,
)
from agentgym.trainers.config import GRPOConfig
from agentgym.trainers.losses import group_advantages, ppo_clip_loss

from agentgym.types import Trajectory


def make_groups(trajs: list[Trajectory], scale: str) -> tuple[list[tuple[Trajectory, float]], dict[str, int]]:
    """(trajectory, advantage) for every trajectory that enters a group, and counts of what was left out.

    Infrastructure failures and trajectories whose token record failed its check never enter a
    group; groups with fewer than two members or all-equal scores are dropped."""
    counts: Counter[str] = Counter()
    groups: dict[str, list[Trajectory]] = defaultdict(list)
    for t in trajs:
        if not t.is_evidence:
            counts["excluded_status"] += 1
        elif t.tokens is None or not passed_token_check(t):
            counts["excluded_tokens"] += 1
        else:
            groups[t.task_id].append(t)
    kept: list[Trajectory] = []
    ids: list[int] = []
    for i, (_, members) in enumerate(sorted(groups.items())):
        scores = {m.score for m in members}
        if len(members) < 2 or len(scores) == 1:
            counts["dropped_groups"] += 1
            continue
        kept += members
        ids += [i] * len(members)
    counts["groups"] = len(groups) - counts["dropped_groups"]
    if not kept:
        return [], dict(counts)
    adv = group_advantages(torch.tensor([t.score for t in kept]), ids, scale=scale)
    return list(zip(kept, adv.tolist(), strict=True)), dict(counts)


def train_grpo(cfg: GRPOConfig) -> dict:
    """Run online GRPO; returns the summary (mean score per step, first/last, model dir)."""
    acc = make_accelerator(cfg)
    tok = load_tokenizer(cfg.model)
    tokenize = Tokenizer(tok, cfg.max_length)
    pool = online.task_pool(cfg)
    model = load_model(cfg)  # before the reference, as every trainer loads them
    ref = load_model(cfg, trainable=False).to(acc.device) if cfg.kl_coef > 0 else None
    run = start_run(cfg, acc, "grpo", cfg.max_steps * cfg.inner_epochs, model=model)
    model, step = run.model, run.step
    policy = online.make_sampler(cfg, acc.unwrap_model(model), tok)
    if step:
        online.push(cfg, policy, acc.unwrap_model(model), step)
    scores: list[float] = []
    sync_gaps: list[float] = []
    fixed_prompt: list[int] | None = None
    try:
        while step < cfg.max_steps:
            trajs, row = online.rollout_step(cfg, policy, pool, step, acc)
            scores.append(row["mean_score"])
            members, counts = make_groups(trajs, cfg.adv_scale)
            seqs = [tokenize(t, adv) for t, adv in members]
            row.update(counts)
            t1 = time.perf_counter()
            losses, stats_all, tokens, agent_tokens = [], defaultdict(list), 0, 0
            model.train()
            procs, rank = acc.num_processes, acc.process_index
            global_batch = cfg.batch_size * procs
            for _ in range(cfg.inner_epochs if seqs else 0):
                order = torch.randperm(
                    len(seqs), generator=torch.Generator().manual_seed(cfg.seed + step)
                ).tolist()
                for b in range(0, len(order), global_batch):
                    # every process holds every sequence; each trains its share of the global
                    # batch, normalised by the global batch's agent tokens (exact token mean)
                    both = [seqs[i] for i in order[b : b + global_batch]]
                    chunk = both[rank::procs]
                    weight = 1.0
                    if not chunk:  # fewer sequences than processes: join the all-reduce with zero weight
                        chunk, weight = both[:1], 0.0
                    loss, n = accumulate(
                        acc,
                        model,
                        chunk,
                        cfg.micro_batch_size,
                        tok.pad_token_id,
                        _loss_fn(cfg, ref, stats_all, weight),
                        run.share,
                        total=sum(x.num_agent_tokens for x in both) / procs,
                    )
                    run.optimizer_step(cfg.max_grad_norm, schedule=False)
                    losses.append(loss)
                    if weight:
                        tokens += sum(len(s) for s in chunk)
                        agent_tokens += sum(s.num_agent_tokens for s in chunk)
                run.sched.step()
            update_s = time.perf_counter() - t1
            row.update(
                update_s=update_s,
                train_tokens=tokens,
                agent_tokens=agent_tokens,
                train_tokens_per_s=tokens / max(update_s, 1e-9),
            )
            if losses:
                row["loss"] = sum(losses) / len(losses)
                row.update({k: sum(v) / len(v) for k, v in stats_all.items()})
            if seqs and (took := online.push(cfg, policy, acc.unwrap_model(model), step + 1)) is not None:
                row["push_s"] = took
            fixed_prompt = fixed_prompt or online.sync_prompt(trajs)
            if cfg.check_sync and fixed_prompt:
                row["sync_gap"] = online.check_sync(policy, acc.unwrap_model(model), fixed_prompt)
                sync_gaps.append(row["sync_gap"])
            step += 1
            run.metrics.log(step, **row)
            if cfg.save_every and step % cfg.save_every == 0:
                save_checkpoint(acc, cfg.output_dir, step, {"tasks_seen": step * cfg.tasks_per_step})
    finally:
        online.close(policy)
    final = save_model(acc, model, tok, f"{cfg.output_dir}/final")
    summary = {
        "steps": step,
        "mean_scores": scores,
        "first_score": scores[0] if scores else None,
        "last_score": scores[-1] if scores else None,
        "sync_gaps": sync_gaps,
        "model_dir": str(final),
    }
    run.metrics.log(step, event="done", first_score=summary["first_score"], last_score=summary["last_score"])
    acc.end_training()
    return summary


def _loss_fn(cfg: GRPOConfig, ref, stats_all: dict[str, list[float]], weight: float = 1.0):
    """The summed PPO-clip loss of one micro-batch, for ``accumulate`` (which divides by the
    batch's agent tokens: token-mean). Other aggregations are rescaled to match. ``weight`` 0
    makes a process take part in the gradient all-reduce without contributing to it."""

    def loss_sum(model, batch):
        lp = forward_logprobs(model, batch)
        ref_lp = None
        if ref is not None:
            with torch.no_grad():
                ref_lp = forward_logprobs(ref, batch)
        loss, stats = ppo_clip_loss(
            lp,
            batch.old_logprobs,
            batch.advantages.to(lp.device),
            batch.loss_mask,
            clip_low=cfg.clip_low,
            clip_high=cfg.clip_high,
            agg=cfg.loss_agg,
            constant=cfg.loss_constant or 1.0,
            ratio_level=cfg.ratio_level,
            ref_logprobs=ref_lp,
            kl_coef=cfg.kl_coef,
        )
        for k, v in stats.items() if weight else ():
            stats_all[k].append(v)
        # accumulate() divides by the whole batch's agent tokens: weighting each micro-batch's
        # loss by its own agent tokens makes the sum exact for token-mean and a token-weighted
        # average of micro-batch losses for the other modes
        return loss * batch.loss_mask.sum() * weight

    return loss_sum

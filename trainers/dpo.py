"""DPO on trajectory pairs: chosen and rejected rollouts of the same task, agent tokens only.

    agentgym rollout --env toy/calculator-v0 --policy hf:runs/sft/final,temperature=1 --n 32 --group 4 --out r.jsonl
    agentgym train dpo --model runs/sft/final --data r.jsonl --output-dir runs/dpo --max-steps 50

Online, each round samples fresh pairs from the current policy and pushes the update to the
sampler (vLLM in-process, vLLM servers through LoRA adapters, or the model itself)::

    agentgym train online-dpo --model runs/sft/final --env toy/calculator-v0 --env-kwargs difficulty=1 \
        --rounds 8 --tasks-per-step 4 --group-size 8 --sampler vllm --output-dir runs/dpo-online

or ``train_dpo(DPOConfig(...))`` and ``train_online_dpo(OnlineDPOConfig(...))``. Pairs come from the rollouts of one ``(env, task_id)``: chosen
is the higher score, rejected the lower, at least ``min_margin`` apart; ``pairs_per_task="one"``
takes the best against the worst, ``"all"`` every such pair. Log-probabilities are summed over
the agent's tokens only (env and tool tokens never count; IPO uses their mean). The reference
log-probs are computed once per pair with the reference (``ref_model``, else the starting model)
and cached. ``rpo_alpha`` > 0 adds the per-token NLL of the chosen side (RPO, Pang et al. 2024,
arXiv:2404.19733), which keeps the chosen trajectory's likelihood from falling with the rejected.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from agentgym.trainers import sampler as online
from agentgym.trainers.batch import Sequence, collate, forward_logprobs, passed_token_check
from agentgym.trainers.common import (
    Run,
    Tokenizer,
    batch_indices,
    load_model,
    load_tokenizer,
    make_accelerator,
    save_checkpoint,
    save_model,
    shares_prefix,
    start_run,
)
from agentgym.trainers.config import DPOConfig, OnlineDPOConfig
from agentgym.trainers.losses import dpo_loss

from agentgym.types import Trajectory, load_trajectories


@dataclass
class Pair:
    chosen: Trajectory
    rejected: Trajectory


def build_pairs(trajs: list[Trajectory], min_margin: float = 0.0, pairs_per_task: str = "one") -> list[Pair]:
    """Preference pairs from rollouts of the same (env, task_id); infrastructure failures and
    records whose token record failed its check are left out, and a pair needs
    ``chosen.score - rejected.score > min_margin``.

    >>> t = lambda s: Trajectory(env="e", task_id="a", score=s)
    >>> [(p.chosen.score, p.rejected.score) for p in build_pairs([t(0.0), t(1.0), t(0.5)])]
    [(1.0, 0.0)]
    >>> len(build_pairs([t(0.0), t(1.0), t(0.5)], pairs_per_task="all")), len(build_pairs([t(0.0), t(1.0)], min_margin=1.0))
    (3, 0)
    """
    groups: dict[tuple[str, str], list[Trajectory]] = defaultdict(list)
    for t in trajs:
        if t.is_evidence and passed_token_check(t):
            groups[(t.env, t.task_id)].append(t)
    pairs: list[Pair] = []
    for key in sorted(groups):
        ranked = sorted(groups[key], key=lambda t: -t.score)
        if pairs_per_task == "one":
            candidates = [(ranked[0], ranked[-1])] if len(ranked) > 1 else []
        elif pairs_per_task == "all":
            candidates = list(itertools.combinations(ranked, 2))
        else:
            raise ValueError(f"pairs_per_task must be 'one' or 'all', got {pairs_per_task!r}")
        pairs += [Pair(c, r) for c, r in candidates if c.score - r.score > min_margin]
    return pairs


def pair_logps(
    model, seqs: list[Sequence], pad_id: int, mean: bool, share_prefix: bool = False
) -> torch.Tensor:
    """Summed (or mean) agent-token log-probs of each sequence, in one forward pass (the prompt a
    pair's two sides share runs once with ``share_prefix``)."""
    batch = collate(seqs, pad_id, share_prefix).to(next(model.parameters()).device)
    lp = (forward_logprobs(model, batch) * batch.loss_mask).sum(-1)
    return lp / batch.loss_mask.sum(-1).clamp(min=1) if mean else lp


@torch.no_grad()
def all_logps(
    acc,
    model,
    pairs: list[tuple[Sequence, Sequence]],
    micro: int,
    pad_id: int,
    mean: bool,
    share_prefix: bool = False,
) -> torch.Tensor:
    """``[n, 2]`` (chosen, rejected) log-probs of every pair; used for the cached reference."""
    model.eval()
    out = []
    for i in range(0, len(pairs), micro):
        chunk = pairs[i : i + micro]
        with acc.autocast():
            seqs = [c for c, _ in chunk] + [r for _, r in chunk]
            lp = pair_logps(model, seqs, pad_id, mean, share_prefix).float().cpu()
        out.append(torch.stack([lp[: len(chunk)], lp[len(chunk) :]], dim=1))
    model.train()
    return torch.cat(out) if out else torch.zeros(0, 2)


def preference_stats(policy: torch.Tensor, ref: torch.Tensor, beta: float) -> dict[str, float]:
    """Margin of chosen over rejected log-probs, the implicit reward accuracy (reward margin > 0),
    and the mean log-prob of the chosen side."""
    rewards = beta * (policy - ref)
    return {
        "chosen_logp": float(policy[:, 0].mean()),
        "logp_margin": float((policy[:, 0] - policy[:, 1]).mean()),
        "reward_margin": float((rewards[:, 0] - rewards[:, 1]).mean()),
        "reward_accuracy": float((rewards[:, 0] > rewards[:, 1]).float().mean()),
    }


def train_dpo(cfg: DPOConfig) -> dict:
    """Offline DPO on the pairs in ``cfg.data``; returns the summary (pairs, margins and accuracy
    before and after, model dir)."""
    acc = make_accelerator(cfg)
    tok = load_tokenizer(cfg.model)
    tokenize = Tokenizer(tok, cfg.max_length)
    trajs = [t for p in cfg.data for t in load_trajectories(p)]
    pairs = build_pairs(trajs, cfg.min_margin, cfg.pairs_per_task)
    if not pairs:
        raise ValueError(
            f"no preference pairs in {cfg.data}: need tasks with several ok/truncated samples whose scores "
            f"differ by more than min_margin ({cfg.min_margin}); roll out with --group 4 or more"
        )
    seqs = [(tokenize(p.chosen), tokenize(p.rejected)) for p in pairs]
    mean = cfg.loss_type == "ipo"
    share = shares_prefix(cfg, acc)
    pad = tok.pad_token_id
    total_steps = cfg.max_steps or math.ceil(cfg.epochs * len(seqs) / (cfg.batch_size * acc.num_processes))

    model = load_model(cfg)
    model.train()
    if cfg.ref_model:
        ref = load_model(cfg, cfg.ref_model, trainable=False).to(acc.device)
        ref_lp = all_logps(acc, ref, seqs, cfg.micro_batch_size, pad, mean, share)
        del ref
    else:
        ref_lp = all_logps(acc, model.to(acc.device), seqs, cfg.micro_batch_size, pad, mean, share)
    run = start_run(cfg, acc, "dpo", total_steps, model=model)
    model, step = run.model, run.step
    # a fresh run's policy is its own reference: the before-pass would recompute ref_lp exactly
    fresh = step == 0 and not cfg.ref_model
    start_lp = ref_lp if fresh else all_logps(acc, model, seqs, cfg.micro_batch_size, pad, mean, share)
    before = preference_stats(start_lp, ref_lp, cfg.beta)
    while step < total_steps:
        row = dpo_step(run, cfg, seqs, ref_lp, step, pad)
        step += 1
        run.metrics.log(step, **row)
        if cfg.save_every and step % cfg.save_every == 0:
            save_checkpoint(acc, cfg.output_dir, step, {"pairs": len(seqs)})
    after = preference_stats(
        all_logps(acc, model, seqs, cfg.micro_batch_size, pad, mean, share), ref_lp, cfg.beta
    )
    final = save_model(acc, model, tok, f"{cfg.output_dir}/final")
    summary = {
        "steps": step,
        "pairs": len(seqs),
        **{f"{k}_before": v for k, v in before.items()},
        **{f"{k}_after": v for k, v in after.items()},
        "model_dir": str(final),
    }
    run.metrics.log(step, event="done", **{k: v for k, v in summary.items() if k != "model_dir"})
    acc.end_training()
    return summary


def dpo_step(
    run: Run, cfg: DPOConfig | OnlineDPOConfig, seqs, ref_lp: torch.Tensor, step: int, pad: int
) -> dict:
    """One optimizer step on the pairs of global step ``step`` (gradient accumulation over
    micro-batches); returns its metrics row."""
    acc, model, share = run.acc, run.model, run.share
    global_batch = cfg.batch_size * acc.num_processes
    mean = cfg.loss_type == "ipo"
    idx = batch_indices(len(seqs), step, global_batch, cfg.seed)[acc.process_index :: acc.num_processes]
    chunks = [idx[i : i + cfg.micro_batch_size] for i in range(0, len(idx), cfg.micro_batch_size)]
    loss_total, nll_total, margins, correct, tokens, agent_tokens = 0.0, 0.0, [], 0, 0, 0
    for i, chunk in enumerate(chunks):
        sync = nullcontext() if i == len(chunks) - 1 else acc.no_sync(model)
        with sync, acc.autocast():
            both = [seqs[j][0] for j in chunk] + [seqs[j][1] for j in chunk]
            lp = pair_logps(model, both, pad, mean, share)
            r = ref_lp[chunk].to(lp.device)
            n = len(chunk)
            loss, cr, rr = dpo_loss(
                lp[:n], lp[n:], r[:, 0], r[:, 1], cfg.beta, cfg.loss_type, cfg.label_smoothing
            )
            if cfg.rpo_alpha:
                counts = torch.tensor([max(seqs[j][0].num_agent_tokens, 1) for j in chunk], device=lp.device)
                nll = -(lp[:n] if mean else lp[:n] / counts).mean()
                loss = loss + cfg.rpo_alpha * nll
                nll_total += nll.item() * n / len(idx)
            acc.backward(loss * n / len(idx))
        loss_total += loss.item() * n / len(idx)
        margins += (cr - rr).tolist()
        correct += int((cr > rr).sum())
        tokens += sum(len(seqs[j][0]) + len(seqs[j][1]) for j in chunk)
        agent_tokens += sum(seqs[j][0].num_agent_tokens + seqs[j][1].num_agent_tokens for j in chunk)
    grad_norm = run.optimizer_step(cfg.max_grad_norm)
    row = {
        "loss": loss_total,
        "reward_margin": sum(margins) / len(margins),
        "reward_accuracy": correct / len(margins),
        "train_tokens": tokens,
        "agent_tokens": agent_tokens,
        "lr": run.sched.get_last_lr()[0],
    }
    if cfg.rpo_alpha:
        row["chosen_nll"] = nll_total
    if grad_norm is not None:
        row["grad_norm"] = grad_norm
    return row


def train_online_dpo(cfg: OnlineDPOConfig) -> dict:
    """Online DPO: each round rolls ``tasks_per_step`` tasks out ``group_size`` times with the
    current policy, pairs them, trains on the pairs against the frozen reference (``ref_model`` or
    the starting model) and pushes the new weights to the sampler. Checkpoints are taken at the
    end of a round (when ``save_every`` > 0), so a resumed run starts at the next round. Returns
    the summary with per-round scores."""
    acc = make_accelerator(cfg)
    tok = load_tokenizer(cfg.model)
    tokenize = Tokenizer(tok, cfg.max_length)
    pool = online.task_pool(cfg)
    mean = cfg.loss_type == "ipo"
    share = shares_prefix(cfg, acc)
    pad = tok.pad_token_id
    global_batch = cfg.batch_size * acc.num_processes
    most_pairs = cfg.tasks_per_step * (1 if cfg.pairs_per_task == "one" else math.comb(cfg.group_size, 2))
    per_round = cfg.max_steps or math.ceil(cfg.epochs * most_pairs / global_batch)

    model = load_model(cfg)  # before the reference, as every trainer loads them
    ref = load_model(cfg, cfg.ref_model or cfg.model, trainable=False).to(acc.device)
    run = start_run(cfg, acc, "dpo", per_round * cfg.rounds, model=model)
    model, step, first_round, total_pairs = run.model, run.step, 0, 0
    if run.state is not None:
        first_round, total_pairs = run.state["round"], run.state["pairs"]
    online.start_backend(cfg)
    policy = online.make_sampler(cfg, acc.unwrap_model(model), tok)
    if first_round:
        online.push(cfg, policy, acc.unwrap_model(model), first_round)
    scores: list[float] = []
    rounds: list[dict] = []
    sync_gaps: list[float] = []
    fixed_prompt: list[int] | None = None
    try:
        for rnd in range(first_round, cfg.rounds):
            trajs, row = online.rollout_step(cfg, policy, pool, rnd, acc, version=rnd)
            scores.append(row["mean_score"])
            pairs = build_pairs(trajs, cfg.min_margin, cfg.pairs_per_task)
            seqs = [(tokenize(p.chosen), tokenize(p.rejected)) for p in pairs]
            total_pairs += len(seqs)
            row.update(round=rnd + 1, pairs=len(seqs))
            if seqs:
                ref_lp = all_logps(acc, ref, seqs, cfg.micro_batch_size, pad, mean, share)
                before = preference_stats(
                    all_logps(acc, model, seqs, cfg.micro_batch_size, pad, mean, share), ref_lp, cfg.beta
                )
                t1 = time.perf_counter()
                steps = cfg.max_steps or math.ceil(cfg.epochs * len(seqs) / global_batch)
                for k in range(steps):
                    last = dpo_step(run, cfg, seqs, ref_lp, k, pad)
                    step += 1
                after = preference_stats(
                    all_logps(acc, model, seqs, cfg.micro_batch_size, pad, mean, share), ref_lp, cfg.beta
                )
                row.update(steps=steps, update_s=time.perf_counter() - t1, loss=last["loss"])
                row.update({f"{k}_before": v for k, v in before.items()})
                row.update({f"{k}_after": v for k, v in after.items()})
                row["push_s"] = online.push(cfg, policy, acc.unwrap_model(model), rnd + 1)
            fixed_prompt = fixed_prompt or online.sync_prompt(trajs)
            if cfg.check_sync and fixed_prompt:
                row["sync_gap"] = online.check_sync(policy, acc.unwrap_model(model), fixed_prompt)
                sync_gaps.append(row["sync_gap"])
            rounds.append(run.metrics.log(step, **row))
            if cfg.save_every:
                save_checkpoint(acc, cfg.output_dir, step, {"round": rnd + 1, "pairs": total_pairs})
    finally:
        online.close(policy, cfg)
    final = save_model(acc, model, tok, f"{cfg.output_dir}/final")
    summary = {
        "steps": step,
        "rounds": cfg.rounds,
        "pairs": total_pairs,
        "mean_scores": scores,
        "first_score": scores[0] if scores else None,
        "last_score": scores[-1] if scores else None,
        "round_metrics": rounds,
        "sync_gaps": sync_gaps,
        "model_dir": str(final),
    }
    run.metrics.log(step, event="done", first_score=summary["first_score"], last_score=summary["last_score"])
    acc.end_training()
    return summary

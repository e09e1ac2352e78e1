"""Online GRPO on multi-turn trajectories: roll out, score, group advantages, PPO-clip, push weights.

    agentgym train grpo --model runs/sft/final --env toy/calculator-v0 --env-kwargs difficulty=1 \\
        --sampler vllm --group-size 8 --tasks-per-step 4 --max-steps 20 --output-dir runs/grpo

or ``train_grpo(GRPOConfig(...))``. Each step reads top to bottom:

1. ``tasks_per_step`` tasks from a fixed pool (in order; or, with ``curriculum: band``, drawn
   favouring tasks of middling pass rate: ``sampler.DifficultyPool``), ``group_size`` rollouts
   each, through the rollout runner with the current policy (vLLM in-process engine, vLLM servers, or the training model
   itself via hf); under ``accelerate launch`` each process samples tasks of its own and all
   processes share the rollouts, then train their part of every batch;
2. only ``ok`` / ``truncated`` trajectories with a checked token record enter a group;
3. group advantages from the env verifier's scores (``advantage: trajectory``), or one per
   assistant turn from the env's per-turn rewards and the score (``turn``; ``gigpo``, which also
   compares the turns that start from the same state: ``make_groups``); groups without a
   difference are dropped (counted) and, with ``max_refills`` > 0, replaced by groups of fresh
   tasks (DAPO's dynamic sampling);
4. ``inner_epochs`` passes of PPO-clip over the agent tokens, optional k3 KL to the frozen
   starting model; with ``tis_cap`` > 0 (the default) the trainer first recomputes the rollouts'
   log-probs with its own weights (no gradient), clips the ratio around them and weights each
   token by the truncated importance weight min(trainer / sampler, tis_cap) (decoupled PPO,
   ``agentgym.trainers.losses.ppo_clip_loss``); with 0 the ratio is taken against the sampler's
   log-probs;
   Every rollout is appended to ``output_dir/rollouts.jsonl`` (DPO pairs and data-engine input);
5. the new weights reach the sampler (``agentgym.trainers.sampler``): full weights into the
   in-process engine, or a new LoRA adapter loaded by the servers; a push that does not finish in
   ``push_timeout`` seconds raises.

With ``max_staleness`` k > 0, items 1-3 for step j run on the sampler's own thread
(``sampler.AsyncSampler``) while the trainer trains step j - 1: step j is rolled out with the
weights after step j - k (a copy the trainer publishes after each update), so generation and
training overlap and the decoupled loss's importance weights correct for the lag (AReaL,
arXiv:2505.24298, calls this bounded staleness). Which weights sample which step is fixed by k,
not by timing, so an asynchronous run repeats itself for a seed; k = 0 is the loop above.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from collections import Counter, defaultdict

import torch
from agentgym.trainers import sampler as online
from agentgym.trainers.batch import Sequence, collate, forward_logprobs, passed_token_check
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
from agentgym.trainers.config import GRPOConfig
from agentgym.trainers.losses import (
    discounted_returns,
    gigpo_advantages,
    group_advantages,
    ppo_clip_loss,
    turn_advantages,
)

from agentgym.types import Trajectory


def make_groups(
    trajs: list[Trajectory],
    scale: str,
    advantage: str = "trajectory",
    gamma: float = 1.0,
    step_adv_weight: float = 1.0,
) -> tuple[list[tuple[Trajectory, float | list[float]]], dict[str, float]]:
    """(trajectory, advantage) for every trajectory that enters a group, and counts of what was left out.

    Infrastructure failures and trajectories whose token record failed its check never enter a
    group; groups with fewer than two members or without any difference to learn from are
    dropped: all-equal scores (``trajectory``), all-equal turn returns (``turn``), or both of
    these within every step group (``gigpo``). With ``advantage`` ``turn`` or ``gigpo`` (see
    ``GRPOConfig.advantage``) each advantage is a list, one per assistant turn, and with
    ``gigpo`` the counts carry the step groups' statistics (``losses.gigpo_advantages``)."""
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
    returns: list[list[float]] = []
    anchors: list[list[str]] = []
    for i, (_, members) in enumerate(sorted(groups.items())):
        rets = (
            [discounted_returns(turn_rewards(m), gamma) for m in members] if advantage != "trajectory" else []
        )
        states = [turn_anchors(m) for m in members] if advantage == "gigpo" else []
        if len(members) < 2 or not _has_signal(advantage, [m.score for m in members], rets, states):
            counts["dropped_groups"] += 1
            continue
        kept += members
        ids += [i] * len(members)
        returns += rets
        anchors += states
    counts["groups"] = len(groups) - counts["dropped_groups"]
    if not kept:
        return [], dict(counts)
    scores = [t.score for t in kept]
    if advantage == "trajectory":
        adv = group_advantages(torch.tensor(scores), ids, scale=scale).tolist()
    elif advantage == "turn":
        adv = turn_advantages(returns, ids, scale=scale)
    else:
        adv, stats = gigpo_advantages(scores, returns, anchors, ids, step_adv_weight, scale=scale)
        counts.update(stats)
    return list(zip(kept, adv, strict=True)), dict(counts)


def _has_signal(
    advantage: str, scores: list[float], returns: list[list[float]], anchors: list[list[str]]
) -> bool:
    """Whether a group's advantages can differ from zero anywhere."""
    if advantage == "trajectory":
        return len(set(scores)) > 1
    if advantage == "turn":
        return len({g for row in returns for g in row}) > 1
    by_state: dict[str, set[float]] = defaultdict(set)
    for row, states in zip(returns, anchors, strict=True):
        for g, state in zip(row, states, strict=True):
            by_state[state].add(g)
    return len(set(scores)) > 1 or any(len(v) > 1 for v in by_state.values())


def turn_rewards(traj: Trajectory) -> list[float]:
    """The reward of each assistant turn: the env's per-turn (process) reward
    (``metadata["turn_rewards"]``, 0 where the env gives none) with the trajectory's score added
    at the last turn. The turns are the sampled spans of the token record.

    >>> turn_rewards(Trajectory(score=1.0, mask=[0, 1, 0, 1], metadata={"turn_rewards": [0.5, 0.0]}))
    [0.5, 1.0]
    """
    from agentgym.chat import mask_spans

    n = len(mask_spans(traj.mask or []))
    given = traj.metadata.get("turn_rewards")
    rewards = [float(r) for r in given] if given is not None else [0.0] * n
    if len(rewards) != n:
        raise ValueError(
            f"trajectory {traj.task_id} of {traj.env!r} has {len(rewards)} turn_rewards for {n} sampled "
            "turns; an env records one per assistant turn (ToolEnv.turn_reward)"
        )
    if rewards:
        rewards[-1] += traj.score
    return rewards


def turn_anchors(traj: Trajectory) -> list[str]:
    """GiGPO's anchor state of each assistant turn: a hash of everything the env showed before it
    (the role, name and content of every message that is not the assistant's), so that turns
    of different rollouts that saw the same observations share a state even where their own
    words differed (two calls that returned the same result, say).

    >>> a = Trajectory(messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}])
    >>> b = Trajectory(messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "y"}])
    >>> turn_anchors(a) == turn_anchors(b)
    True
    """
    seen = hashlib.sha256()
    out = []
    for m in traj.messages:
        if m.get("role") == "assistant":
            out.append(seen.hexdigest()[:16])
        else:
            part = [m.get("role"), m.get("name"), m.get("content")]
            seen.update(json.dumps(part, ensure_ascii=False).encode() + b"\n")
    if traj.mask is not None:
        from agentgym.chat import mask_spans

        if len(out) != len(mask_spans(traj.mask)):
            raise ValueError(
                f"trajectory {traj.task_id} of {traj.env!r} has {len(out)} assistant messages but "
                f"{len(mask_spans(traj.mask))} sampled spans; its token record does not match its messages"
            )
    return out


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
    if cfg.max_staleness and acc.num_processes > 1:
        raise ValueError(
            f"max_staleness {cfg.max_staleness} runs in one process; under accelerate launch with "
            f"{acc.num_processes} processes use max_staleness 0"
        )
    # the asynchronous hf sampler samples with a copy: the trainer changes its own model meanwhile
    sampler_model = acc.unwrap_model(model)
    if cfg.max_staleness and cfg.sampler == "hf":
        sampler_model = copy.deepcopy(sampler_model).eval()
    online.start_backend(cfg)
    policy = online.make_sampler(cfg, sampler_model, tok)
    # the policy version: the trainer's update count, i.e. the steps that changed the weights (a
    # step whose groups were all dropped changes nothing)
    version = run.state.get("policy_version", step) if run.state is not None else step
    if step:
        online.push(cfg, policy, acc.unwrap_model(model), step)
    scores: list[float] = []
    sync_gaps: list[float] = []
    fixed_prompt: list[int] | None = None

    def produce(at: int, version: int):
        trajs, row = online.rollout_step(cfg, policy, pool, at, acc, version)
        members, counts = make_groups(trajs, cfg.adv_scale, cfg.advantage, cfg.gamma, cfg.step_adv_weight)
        if cfg.max_refills:
            trajs, members, counts = refill(cfg, policy, pool, at, acc, version, trajs, members, counts, row)
        return trajs, members, counts, row

    ahead = None
    if cfg.max_staleness:
        ahead = online.AsyncSampler(
            produce,
            lambda weights, done: online.load(cfg, policy, weights, done),
            step,
            cfg.max_steps,
            cfg.max_staleness,
            version,
        )
    try:
        while step < cfg.max_steps:
            trajs, members, counts, row = ahead.get(step) if ahead else produce(step, version)
            scores.append(row["mean_score"])
            seqs = [tokenize(t, adv) for t, adv in members]
            row.update(counts)
            t1 = time.perf_counter()
            losses, norms, stats_all, tokens, agent_tokens = [], [], defaultdict(list), 0, 0
            model.train()
            procs, rank = acc.num_processes, acc.process_index
            global_batch = cfg.batch_size * procs
            # the proximal log-probs need a pass of their own only when the weights change within
            # the step (several epochs or optimizer steps); with one update they are the loss
            # pass's own log-probs, detached (the same numbers, for free)
            if cfg.tis_cap > 0 and seqs and (cfg.inner_epochs > 1 or len(seqs) > global_batch):
                proximal_logprobs(acc, model, seqs, cfg.micro_batch_size, tok.pad_token_id)
            for _ in range(cfg.inner_epochs if seqs else 0):
                order = torch.randperm(
                    len(seqs), generator=torch.Generator().manual_seed(cfg.seed + step)
                ).tolist()
                for b in range(0, len(order), global_batch):
                    # every process holds every sequence; each trains its share of the global
                    # batch, normalised by the global batch's agent tokens (exact token mean)
                    both = [seqs[i] for i in order[b : b + global_batch]]
                    chunk, weight = process_share(both, procs, rank)
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
                    norms.append(run.optimizer_step(cfg.max_grad_norm, schedule=False))
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
            if norms and None not in norms:
                row["grad_norm"] = sum(norms) / len(norms)
            version += bool(seqs)
            if ahead is not None:
                if ahead.needs(step + 1):
                    ahead.publish(step + 1, version, online.snapshot(cfg, acc.unwrap_model(model), step + 1))
            elif seqs and (took := online.push(cfg, policy, acc.unwrap_model(model), step + 1)) is not None:
                row["push_s"] = took
            fixed_prompt = fixed_prompt or online.sync_prompt(trajs)
            if cfg.check_sync and fixed_prompt and ahead is None:
                row["sync_gap"] = online.check_sync(policy, acc.unwrap_model(model), fixed_prompt)
                sync_gaps.append(row["sync_gap"])
            step += 1
            run.metrics.log(step, **row)
            if cfg.save_every and step % cfg.save_every == 0:
                state = {"tasks_seen": step * cfg.tasks_per_step, "policy_version": version}
                save_checkpoint(acc, cfg.output_dir, step, state)
    finally:
        if ahead is not None:
            ahead.close(cfg.push_timeout)
        online.close(policy, cfg)
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


def refill(cfg: GRPOConfig, policy, pool, step: int, acc, version: int, trajs, members, counts, row: dict):
    """Dynamic sampling (DAPO, Yu et al. 2025, arXiv:2503.14476, section 3.2): while fewer groups
    than the step's tasks carry a learning signal, roll out as many fresh tasks of the pool as
    are missing (spread over the processes), at most ``max_refills`` times. The row's mean score
    and pass rate stay those of the step's own tasks; ``refills`` and ``refill_episodes`` count
    what was added, and ``dropped_groups`` every group dropped. Returns the grown
    ``(trajs, members, counts)``."""
    procs, rank = acc.num_processes, acc.process_index
    target = cfg.tasks_per_step * procs
    refills, episodes = 0, 0
    while counts["groups"] < target and refills < cfg.max_refills:
        fresh = online.refill_tasks(pool, step, cfg.tasks_per_step, procs, {t.task_id for t in trajs})
        if not fresh:  # every task of the pool is in this step already
            break
        per_process = math.ceil((target - counts["groups"]) / procs)
        refills += 1
        more, more_row = online.rollout_step(
            cfg,
            policy,
            pool,
            step,
            acc,
            version,
            fresh[rank * per_process : (rank + 1) * per_process],
            refills,
        )
        trajs = trajs + more
        episodes += len(more)
        row["rollout_s"] += more_row["rollout_s"]
        members, counts = make_groups(trajs, cfg.adv_scale, cfg.advantage, cfg.gamma, cfg.step_adv_weight)
    row.update(refills=refills, refill_episodes=episodes)
    return trajs, members, counts


@torch.no_grad()
def proximal_logprobs(acc, model, seqs: list[Sequence], micro_size: int, pad_id: int) -> None:
    """Set each sequence's ``prox_logprobs``: the model's own log-prob of every agent token as the
    weights are now, before the step's update (decoupled PPO's proximal policy). Every process
    computes them for every sequence, in the model's current (training) mode, so that at the first
    micro-batch the ratio is 1 up to rounding."""
    missing = [s.meta.get("task_id") for s in seqs if s.logprobs is None]
    if missing:
        raise ValueError(
            f"the decoupled loss (tis_cap > 0) needs the sampler's log-prob of every sampled token, and "
            f"{len(missing)} rollouts (e.g. of task {missing[0]}) have none; use a sampler that reports "
            "them or set tis_cap 0"
        )
    for i in range(0, len(seqs), micro_size):
        chunk = seqs[i : i + micro_size]
        batch = collate(chunk, pad_id).to(acc.device)
        with acc.autocast():
            lp = forward_logprobs(model, batch).float().cpu()
        for row, s in enumerate(chunk):
            s.prox_logprobs = [0.0] + lp[row, : len(s) - 1].tolist()


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
        decoupled = cfg.tis_cap > 0
        if decoupled:
            proximal = (
                batch.prox_logprobs if batch.prox_logprobs is not None else lp.detach() * batch.loss_mask
            )
        loss, stats = ppo_clip_loss(
            lp,
            proximal if decoupled else batch.old_logprobs,
            batch.advantages.to(lp.device),
            batch.loss_mask,
            clip_low=cfg.clip_low,
            clip_high=cfg.clip_high,
            agg=cfg.loss_agg,
            constant=cfg.loss_constant or 1.0,
            ratio_level=cfg.ratio_level,
            ref_logprobs=ref_lp,
            kl_coef=cfg.kl_coef,
            behaviour_logprobs=batch.old_logprobs if decoupled else None,
            tis_cap=cfg.tis_cap,
        )
        for k, v in stats.items() if weight else ():
            stats_all[k].append(v)
        # accumulate() divides by the whole batch's agent tokens: weighting each micro-batch's
        # loss by its own agent tokens makes the sum exact for token-mean and a token-weighted
        # average of micro-batch losses for the other modes
        return loss * batch.loss_mask.sum() * weight

    return loss_sum

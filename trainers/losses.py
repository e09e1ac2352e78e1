"""The maths of the trainers as pure functions on tensors: no models, no data loading.

Every function takes per-token tensors of shape ``[batch, time]`` with a ``mask`` of the same
shape (1 on tokens the policy sampled, 0 on prompt, env, tool and padding tokens) and says which
paper it implements. The trainers call these and nothing else for their objectives, so turn
masking happens here and in ``agentgym.trainers.batch``, nowhere else.

>>> import torch
>>> [round(a, 4) for a in group_advantages(torch.tensor([1.0, 0.0, 1.0, 0.0]), [0, 0, 0, 0]).tolist()]
[1.0, -1.0, 1.0, -1.0]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

LossAgg = Literal["token-mean", "seq-mean-token-mean", "constant"]
"""How per-token losses become one number:

- ``token-mean``: sum over every agent token of the batch / number of agent tokens (DAPO, Yu et
  al. 2025, arXiv:2503.14476, section 3.3: long sequences are not down-weighted);
- ``seq-mean-token-mean``: mean over each sequence's agent tokens, then mean over sequences (the
  original GRPO, Shao et al. 2024, arXiv:2402.03300, eq. 3);
- ``constant``: sum over agent tokens / a fixed constant such as the generation budget
  (Dr. GRPO, Liu et al. 2025, arXiv:2503.20783, section 3.1: no length bias at all).
"""


def masked_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum()


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is 1 (0 when the mask is empty, never NaN).

    >>> masked_mean(torch.tensor([1.0, 2.0, 9.0]), torch.tensor([1.0, 1.0, 0.0])).item()
    1.5
    """
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1.0)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target_t | context) for each position, from logits already aligned with targets.

    Uses ``gather - logsumexp`` so that no ``[batch, time, vocab]`` log-softmax is kept for
    backward beyond what autograd needs.
    """
    logits = logits.float()
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def group_advantages(
    rewards: torch.Tensor,
    group_ids: Sequence[int] | torch.Tensor,
    scale: Literal["std", "none"] = "std",
    eps: float = 1e-6,
) -> torch.Tensor:
    """Group-relative advantages of GRPO (Shao et al. 2024, arXiv:2402.03300, section 4.1.2):
    ``(r - mean(group)) / (std(group) + eps)`` with the population standard deviation.
    ``scale="none"`` leaves out the division (Dr. GRPO, Liu et al. 2025, arXiv:2503.20783), which
    removes the bias toward groups whose rewards barely differ.

    Args:
        rewards: one scalar reward per trajectory, shape ``[n]``.
        group_ids: which group (task) each trajectory belongs to, length ``n``.
        scale: ``"std"`` (GRPO) or ``"none"`` (Dr. GRPO).
        eps: added to the standard deviation.

    Returns:
        Advantages, shape ``[n]``. A group whose rewards are all equal gets zeros.

    >>> group_advantages(torch.tensor([1.0, 0.0, 3.0, 1.0]), [0, 0, 1, 1], scale="none").tolist()
    [0.5, -0.5, 1.0, -1.0]
    """
    if scale not in ("std", "none"):
        raise ValueError(f"scale must be 'std' or 'none', got {scale!r}")
    rewards = rewards.float()
    gid = torch.as_tensor(group_ids, device=rewards.device)
    if gid.shape != rewards.shape:
        raise ValueError(f"group_ids has shape {tuple(gid.shape)} but rewards has {tuple(rewards.shape)}")
    _, inverse = torch.unique(gid, return_inverse=True)
    n_groups = int(inverse.max().item()) + 1 if len(inverse) else 0
    count = torch.zeros(n_groups, device=rewards.device).index_add_(0, inverse, torch.ones_like(rewards))
    mean = torch.zeros(n_groups, device=rewards.device).index_add_(0, inverse, rewards) / count
    centered = rewards - mean[inverse]
    if scale == "none":
        return centered
    var = torch.zeros(n_groups, device=rewards.device).index_add_(0, inverse, centered**2) / count
    denom = var.sqrt()[inverse] + eps
    return torch.where(denom > 0, centered / denom.clamp(min=1e-30), torch.zeros_like(centered))


def discounted_returns(rewards: Sequence[float], gamma: float = 1.0) -> list[float]:
    """Return of each turn: ``G_t = sum_{k >= t} gamma^(k - t) r_k`` over the rest of the episode.

    >>> discounted_returns([0.25, 0.0, 1.0], gamma=0.5)
    [0.5, 0.5, 1.0]
    """
    out: list[float] = []
    running = 0.0
    for r in reversed(rewards):
        running = float(r) + gamma * running
        out.append(running)
    return out[::-1]


def turn_advantages(
    returns: Sequence[Sequence[float]],
    group_ids: Sequence[int],
    scale: Literal["std", "none"] = "std",
    eps: float = 1e-6,
) -> list[list[float]]:
    """Turn-level advantages: every turn's return ``G_{i,t}`` normalised against all the turns of
    its group, ``A_{i,t} = (G_{i,t} - mean) / (std + eps)`` where mean and (population) std are
    taken over the pooled returns ``{G_{j,s}}`` of every trajectory ``j`` of the group and every
    turn ``s`` of it (``scale="none"``: no division). A trajectory of many turns thus weighs more
    in its group's mean, as in process-supervised GRPO (Shao et al. 2024, arXiv:2402.03300,
    section 4.1.3), which pools the step rewards of the group the same way.

    Args:
        returns: one list of per-turn returns (``discounted_returns``) per trajectory.
        group_ids: which group (task) each trajectory belongs to.

    >>> turn_advantages([[2.0, 1.0], [0.0]], [0, 0], scale="none")
    [[1.0, 0.0], [-1.0]]
    """
    flat = torch.tensor([g for row in returns for g in row], dtype=torch.float32)
    ids = [gid for row, gid in zip(returns, group_ids, strict=True) for _ in row]
    adv = group_advantages(flat, ids, scale=scale, eps=eps).tolist()
    out, k = [], 0
    for row in returns:
        out.append(adv[k : k + len(row)])
        k += len(row)
    return out


def gigpo_advantages(
    scores: Sequence[float],
    returns: Sequence[Sequence[float]],
    anchors: Sequence[Sequence[str]],
    group_ids: Sequence[int],
    step_adv_weight: float = 1.0,
    scale: Literal["std", "none"] = "std",
    eps: float = 1e-6,
) -> tuple[list[list[float]], dict[str, float]]:
    """Group-in-Group Policy Optimization (GiGPO, Feng et al. 2025, arXiv:2505.10978, eqs. 4-8):
    ``A_{i,t} = A^E_i + step_adv_weight * A^S_{i,t}``.

    - episode level: ``A^E_i`` is GRPO's group advantage of the trajectory's score
      (``group_advantages``), the same for all its turns;
    - step level: the turns of one group that start from the same anchor state (equal
      ``anchors[i][t]``, across the group's trajectories and within one) form a step group;
      ``A^S_{i,t} = (G_{i,t} - mean) / (std + eps)`` over the step group's discounted returns
      (``scale="none"``: no division). A turn whose state no other turn shares gets ``A^S = 0``.

    Returns:
        ``(advantages, stats)``: per-turn advantages, one list per trajectory; ``stats`` counts the
        step groups of two or more turns (``step_groups``), the turns in them
        (``step_grouped_turns``), all turns (``step_turns``) and the mean size of a step group
        (``step_group_size``, 0 when there is none).

    >>> adv, stats = gigpo_advantages(
    ...     [1.0, 0.0], [[1.0, 1.0], [0.0]], [["s0", "s1"], ["s0"]], [0, 0], scale="none")
    >>> adv, stats["step_groups"]
    ([[1.0, 0.5], [-1.0]], 1)
    """
    episode = group_advantages(
        torch.tensor(list(scores), dtype=torch.float32), group_ids, scale=scale, eps=eps
    )
    keys: dict[tuple[int, str], int] = {}
    step_ids = [
        keys.setdefault((gid, a), len(keys)) for row, gid in zip(anchors, group_ids, strict=True) for a in row
    ]
    flat = torch.tensor([g for row in returns for g in row], dtype=torch.float32)
    if len(flat) != len(step_ids):
        raise ValueError(f"{len(flat)} per-turn returns but {len(step_ids)} anchor states")
    step = group_advantages(flat, step_ids, scale=scale, eps=eps).tolist() if step_ids else []
    out, k = [], 0
    for i, row in enumerate(returns):
        out.append([episode[i].item() + step_adv_weight * a for a in step[k : k + len(row)]])
        k += len(row)
    sizes = Counter(step_ids)
    shared = [n for n in sizes.values() if n > 1]
    stats = {
        "step_groups": len(shared),
        "step_grouped_turns": sum(shared),
        "step_turns": len(step_ids),
        "step_group_size": sum(shared) / len(shared) if shared else 0.0,
    }
    return out, stats


def aggregate(
    per_token: torch.Tensor, mask: torch.Tensor, mode: LossAgg = "token-mean", constant: float = 1.0
) -> torch.Tensor:
    """Reduce a ``[batch, time]`` per-token loss to a scalar (see ``LossAgg`` for the modes).

    >>> loss = torch.tensor([[1.0, 1.0, 1.0], [4.0, 0.0, 0.0]]); m = torch.tensor([[1, 1, 1], [1, 0, 0]])
    >>> aggregate(loss, m, "token-mean").item(), aggregate(loss, m, "seq-mean-token-mean").item()
    (1.75, 2.5)
    >>> aggregate(loss, m, "constant", constant=7.0).item()
    1.0
    """
    mask = mask.to(per_token.dtype)
    if mode == "token-mean":
        return masked_mean(per_token, mask)
    if mode == "seq-mean-token-mean":
        per_seq = masked_mean(per_token, mask, dim=-1)
        has_tokens = (mask.sum(-1) > 0).to(per_token.dtype)
        return (per_seq * has_tokens).sum() / has_tokens.sum().clamp(min=1.0)
    if mode == "constant":
        if constant <= 0:
            raise ValueError(f"the constant normaliser must be > 0, got {constant}")
        return masked_sum(per_token, mask) / constant
    raise ValueError(f"unknown loss aggregation {mode!r}; use token-mean, seq-mean-token-mean or constant")


def gspo_log_ratio(logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sequence-level log importance ratio of GSPO (Zheng et al. 2025, arXiv:2507.18071, eq. 7):
    ``log s_i = mean_t (log pi(y_t) - log pi_old(y_t))`` over the sequence's agent tokens, given
    to every token as ``sg[log s_i] + log pi(y_t) - sg[log pi(y_t)]`` so that the value is the
    sequence ratio and the gradient flows through each token (GSPO-token, eq. 14)."""
    seq = masked_mean(logprobs - old_logprobs, mask, dim=-1).detach()
    return seq.unsqueeze(-1) + logprobs - logprobs.detach()


def k3_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(pi || pi_ref) (Schulman 2020, "Approximating KL divergence";
    used by GRPO, arXiv:2402.03300 eq. 4): ``exp(ref - lp) - (ref - lp) - 1``, never negative.

    >>> round(k3_kl(torch.tensor([0.0]), torch.tensor([-1.0])).item(), 4)
    0.3679
    """
    delta = ref_logprobs - logprobs
    return torch.exp(delta) - delta - 1.0


def ppo_clip_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    agg: LossAgg = "token-mean",
    constant: float = 1.0,
    ratio_level: Literal["token", "sequence"] = "token",
    ref_logprobs: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    behaviour_logprobs: torch.Tensor | None = None,
    tis_cap: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate policy loss of PPO (Schulman et al. 2017, arXiv:1707.06347, eq. 7) at the
    token level, with separate lower and upper clip ranges (DAPO's clip-higher, arXiv:2503.14476,
    section 3.1), optional GSPO sequence-level ratio and optional k3 KL penalty to a reference.

    Without ``behaviour_logprobs`` the ratio is taken against ``old_logprobs``, the sampler's
    log-probabilities, so a sampler that differs from the trainer (vLLM vs. torch) is corrected by
    the ratio itself. With them the loss is decoupled PPO (Hilton et al. 2021, arXiv:2110.00641;
    AReaL, Fu et al. 2025, arXiv:2505.24298): ``old_logprobs`` are the trainer's
    own log-probs before the update (the proximal policy) that the ratio is clipped around, and
    each token's surrogate is multiplied by the truncated importance weight
    ``w = min(pi_old / pi_behaviour, tis_cap)`` (truncated importance sampling, Yao et al. 2025,
    "Your efficient RL framework secretly brings you off-policy RL training"), which corrects for
    a sampler whose weights are stale or whose kernels differ, without letting a rare token's
    weight blow up the gradient. The KL term is not weighted.

    Args:
        logprobs: current policy log-probs of each token, ``[batch, time]``, with gradient.
        old_logprobs: the sampler's log-probs of the same tokens.
        advantages: ``[batch]`` (one per sequence) or ``[batch, time]``.
        mask: 1 on agent tokens; everything else gets exactly zero gradient.
        clip_low: ratio is clipped below at ``1 - clip_low``.
        clip_high: ratio is clipped above at ``1 + clip_high``.
        agg: how per-token losses are reduced (``LossAgg``).
        constant: the normaliser for ``agg="constant"``.
        ratio_level: ``"token"`` (PPO/GRPO) or ``"sequence"`` (GSPO).
        ref_logprobs: reference model log-probs for the KL term, or None.
        kl_coef: weight of the k3 KL term (needs ``ref_logprobs`` when > 0).
        behaviour_logprobs: the sampler's log-probs, for the decoupled loss (needs ``tis_cap``).
        tis_cap: the truncation of the importance weights (> 0 exactly when
            ``behaviour_logprobs`` are given).

    Returns:
        ``(loss, stats)``: the scalar loss and floats for logging (clip fraction, mean ratio, KL;
        with the decoupled loss also the mean weight ``tis_weight_mean`` and the share of agent
        tokens whose weight was truncated, ``tis_truncated_frac``).
    """
    if (behaviour_logprobs is not None) != (tis_cap > 0):
        raise ValueError(
            f"the decoupled loss needs both behaviour_logprobs and tis_cap > 0 (got tis_cap {tis_cap} "
            f"and {'no ' if behaviour_logprobs is None else ''}behaviour_logprobs)"
        )
    mask = mask.to(logprobs.dtype)
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(-1).expand_as(logprobs)
    if ratio_level == "sequence":
        log_ratio = gspo_log_ratio(logprobs, old_logprobs, mask)
    elif ratio_level == "token":
        log_ratio = logprobs - old_logprobs
    else:
        raise ValueError(f"ratio_level must be 'token' or 'sequence', got {ratio_level!r}")
    ratio = torch.exp(log_ratio)
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    pg_loss = torch.maximum(pg_loss1, pg_loss2)
    tis_stats: dict[str, float] = {}
    if behaviour_logprobs is not None:
        with torch.no_grad():
            raw_weight = torch.exp(old_logprobs - behaviour_logprobs)
            tis_weight = raw_weight.clamp(max=tis_cap)
            tis_stats = {
                "tis_weight_mean": masked_mean(tis_weight, mask).item(),
                "tis_truncated_frac": masked_mean((raw_weight > tis_cap).to(mask.dtype), mask).item(),
            }
        pg_loss = tis_weight * pg_loss
    per_token = pg_loss
    kl_value = 0.0
    if kl_coef > 0:
        if ref_logprobs is None:
            raise ValueError(f"kl_coef is {kl_coef} but no ref_logprobs were given")
        kl = k3_kl(logprobs, ref_logprobs)
        per_token = per_token + kl_coef * kl
        kl_value = masked_mean(kl.detach(), mask).item()
    loss = aggregate(per_token, mask, agg, constant)
    with torch.no_grad():
        clipped = (pg_loss2 > pg_loss1).to(mask.dtype)
        stats = {
            "clip_frac": masked_mean(clipped, mask).item(),
            "ratio_mean": masked_mean(ratio.detach(), mask).item(),
            "approx_kl_old": masked_mean((ratio.detach() - 1) - log_ratio.detach(), mask).item(),
            "kl_ref": kl_value,
            **tis_stats,
        }
    return loss, stats


def dpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    loss_type: Literal["sigmoid", "ipo"] = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Direct Preference Optimization on summed sequence log-probs.

    ``sigmoid``: ``-(1-e) log sigma(b * m) - e log sigma(-b * m)`` with the log-ratio margin
    ``m = (log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))`` (Rafailov et al. 2023,
    arXiv:2305.18290, eq. 7; label smoothing ``e`` as conservative DPO, Mitchell 2023).
    ``ipo``: ``(m - 1 / (2 b))^2`` (Azar et al. 2023, arXiv:2310.12036, eq. 17), where the
    log-probs should be averages over tokens rather than sums.

    Returns:
        ``(loss, chosen_rewards, rejected_rewards)``: the mean loss and the implicit rewards
        ``b * (log pi - log ref)`` of each side (their difference is the preference margin).

    >>> z = torch.zeros(1)
    >>> _, cr, rr = dpo_loss(torch.tensor([2.0]), torch.tensor([-3.0]), z, z, beta=0.1)
    >>> round((cr - rr).item(), 6)
    0.5
    """
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    chosen_ratio = chosen_logps - ref_chosen_logps
    rejected_ratio = rejected_logps - ref_rejected_logps
    margin = chosen_ratio - rejected_ratio
    if loss_type == "sigmoid":
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * margin) - label_smoothing * F.logsigmoid(
            -beta * margin
        )
    elif loss_type == "ipo":
        if label_smoothing:
            raise ValueError(
                f"label_smoothing ({label_smoothing}) has no meaning for loss_type 'ipo'; set it to 0"
            )
        losses = (margin - 1.0 / (2.0 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss_type {loss_type!r}; use 'sigmoid' or 'ipo'")
    return losses.mean(), beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


def bradley_terry(margin: torch.Tensor) -> torch.Tensor:
    """Probability that the chosen answer is preferred under the Bradley-Terry model,
    ``sigma(margin)`` (Bradley and Terry 1952; the model DPO's loss is the likelihood of).

    >>> round(bradley_terry(torch.tensor(1.0)).item(), 3)
    0.731
    """
    return torch.sigmoid(margin)


def bradley_terry_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> torch.Tensor:
    """Reward-model loss: the negative log-likelihood of the preferences under Bradley-Terry,
    ``mean(-log sigma(r_chosen - r_rejected))`` (InstructGPT's reward model, Ouyang et al. 2022,
    arXiv:2203.02155, eq. 1, with one pair per comparison).

    >>> c, r = torch.tensor([2.5]), torch.tensor([1.5])
    >>> round(bradley_terry(c - r).item(), 3), round(bradley_terry_loss(c, r).item(), 4)
    (0.731, 0.3133)
    """
    return -F.logsigmoid(chosen_rewards - rejected_rewards).mean()


def masked_nll(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Supervised fine-tuning loss: mean negative log-likelihood of the agent tokens only
    (the standard language-modelling objective restricted to the assistant's turns, as in
    InstructGPT's SFT stage, Ouyang et al. 2022, arXiv:2203.02155)."""
    return -masked_mean(token_logprobs(logits, targets), mask)


def reverse_kl_loss(
    logprobs: torch.Tensor,
    sampler_logprobs: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    mask: torch.Tensor,
    agg: LossAgg = "token-mean",
    constant: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """On-policy distillation: the student's own samples, scored token by token by a frozen
    teacher, minimising the reverse KL(student || teacher) (GKD, Agarwal et al. 2024,
    arXiv:2306.13649, with the student's samples and the reverse KL; the per-token log-ratio as a
    reward, as in Thinking Machines Lab's "On-Policy Distillation", 2025).

    Each agent token gets the detached advantage ``A = log teacher(y_t) - log sampler(y_t)`` (a
    per-token reward, no sum over later tokens) in an importance-weighted policy gradient,
    ``-A * exp(log pi(y_t) - log sampler(y_t))``. While the student's weights are those that
    sampled (ratio 1) its value is the k1 estimate of the reverse KL, ``mean(log sampler -
    log teacher)``, and its gradient ``-A * grad log pi(y_t)``, the policy gradient of the
    reverse KL with each token's own log-ratio as its reward; the ratio corrects for a sampler
    whose kernels differ from the trainer's, or weights a few optimizer steps old.

    Args:
        logprobs: the student's log-probs of each token, ``[batch, time]``, with gradient.
        sampler_logprobs: the sampler's log-probs of the same tokens (what sampled them).
        teacher_logprobs: the teacher's log-probs of the same tokens (no gradient needed).
        mask: 1 on agent tokens; everything else gets exactly zero gradient.
        agg: how per-token losses are reduced (``LossAgg``).
        constant: the normaliser for ``agg="constant"``.

    Returns:
        ``(loss, stats)``: the scalar loss, and floats for logging: ``reverse_kl`` (the mean of
        ``log sampler - log teacher`` over agent tokens) and ``ratio_mean``.

    >>> lp = torch.tensor([[-1.0, -2.0, -3.0]])
    >>> loss, stats = reverse_kl_loss(lp, lp, torch.tensor([[-9.0, -1.5, -2.0]]), torch.tensor([[0, 1, 1]]))
    >>> round(loss.item(), 4), round(stats["reverse_kl"], 4)
    (-0.75, -0.75)
    """
    mask = mask.to(logprobs.dtype)
    advantages = (teacher_logprobs - sampler_logprobs).detach()
    ratio = torch.exp(logprobs - sampler_logprobs)
    pg_loss = -advantages * ratio
    loss = aggregate(pg_loss, mask, agg, constant)
    with torch.no_grad():
        stats = {
            "reverse_kl": masked_mean(-advantages, mask).item(),
            "ratio_mean": masked_mean(ratio.detach(), mask).item(),
        }
    return loss, stats

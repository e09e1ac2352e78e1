"""The one place where trajectories become tensors.

A trajectory's token record (``tokens`` / ``mask`` / ``logprobs``, see ``agentgym.types``) is
turned into a ``Sequence``; message-only records (teacher demos, imported data) are tokenized
once with the chat renderer (``agentgym.chat.tokenize_messages``). ``collate`` pads a micro-batch
on the right to its own longest sequence (``micro_batches`` groups sequences of similar length,
so padding stays small) and builds:

- ``input_ids`` and ``attention_mask``: every real token is attended to, env and tool tokens
  included (the attention mask is NOT the loss mask);
- ``targets`` / ``loss_mask`` / ``old_logprobs``: shifted by one, so position ``t`` holds the
  token predicted from the logits at ``t``; ``loss_mask`` is 1 only on tokens the policy sampled;
- ``advantages``: one per sequence, or, where a sequence carries per-token advantages (a
  different advantage for each assistant turn: GRPO's ``advantage: turn`` and ``gigpo``), one per
  target aligned with ``loss_mask`` (0 wherever the loss mask is 0);
- ``prox_logprobs``: where the sequences carry them, the trainer's own log-probs before an update
  (decoupled PPO's proximal policy, see ``agentgym.trainers.losses.ppo_clip_loss``).

>>> s = Sequence(ids=[5, 6, 7, 8], mask=[0, 0, 1, 1], logprobs=[0.0, 0.0, -0.5, -0.25])
>>> b = collate([s, Sequence(ids=[5, 9], mask=[0, 1])], pad_id=3)
>>> b.input_ids.tolist(), b.attention_mask.tolist()
([[5, 6, 7, 8], [5, 9, 3, 3]], [[1, 1, 1, 1], [1, 1, 0, 0]])
>>> b.loss_mask.tolist()
[[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]]
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from agentgym.trainers.losses import token_logprobs
from torch.utils.checkpoint import checkpoint

from agentgym.types import Trajectory


@dataclass
class Sequence:
    """One training sequence: the whole conversation's token ids and which ones were sampled."""

    ids: list[int]
    mask: list[int]
    logprobs: list[float] | None = None
    advantage: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)
    prox_logprobs: list[float] | None = None
    """the trainer's log-prob of each token before the update (aligned as ``logprobs``), or None"""
    token_advantages: list[float] | None = None
    """the advantage of each token (aligned with ``ids``, 0 where ``mask`` is 0) when they differ
    within the sequence; None: every agent token gets ``advantage``"""

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_agent_tokens(self) -> int:
        return int(sum(self.mask))


@dataclass
class TokenBatch:
    input_ids: torch.Tensor
    """[B, T] token ids, right-padded with the pad id"""
    attention_mask: torch.Tensor
    """[B, T] 1 on every real token (prompt, agent, env and tool tokens), 0 on padding"""
    targets: torch.Tensor
    """[B, T-1] the next token at each position (``input_ids[:, 1:]``)"""
    loss_mask: torch.Tensor
    """[B, T-1] float; 1 where the target was sampled by the policy, else 0 (padding included)"""
    old_logprobs: torch.Tensor
    """[B, T-1] the sampler's log-prob of each target (0 where unknown or masked)"""
    advantages: torch.Tensor
    """[B] one advantage per sequence; [B, T-1] one per target (0 where ``loss_mask`` is 0) when
    some sequence carries ``token_advantages``"""
    prefix_ids: torch.Tensor | None = None
    """[G, P] with shared prefixes (``collate(share_prefix=True)``): the G distinct prefixes,
    right-padded; every field above then holds only what follows a row's prefix"""
    prefix_mask: torch.Tensor | None = None
    """[G, P] 1 on the real prefix tokens"""
    prefix_index: torch.Tensor | None = None
    """[B] which prefix each row continues"""
    prox_logprobs: torch.Tensor | None = None
    """[B, T-1] the trainer's own log-prob of each target before the update (0 where masked), when
    every sequence carries them; else None"""

    def to(self, device: torch.device | str) -> TokenBatch:
        return TokenBatch(
            *(None if (v := getattr(self, f)) is None else v.to(device) for f in self.__dataclass_fields__)
        )

    @property
    def num_agent_tokens(self) -> int:
        return int(self.loss_mask.sum().item())

    @property
    def num_tokens(self) -> int:
        return int(self.attention_mask.sum().item())


def passed_token_check(traj: Trajectory) -> bool:
    """False when the trajectory's token record was checked and failed (mask-1 spans that do not
    decode to the assistant's messages); such a record is never trained on."""
    return traj.metadata.get("token_check", "ok") == "ok"


class TokenizeError(ValueError):
    """A trajectory cannot be turned into a training sequence; the message says why and what to do."""


def to_sequence(
    traj: Trajectory,
    tokenize: Callable[[Trajectory], tuple[list[int], list[int]]] | None = None,
    advantage: float | list[float] = 0.0,
) -> Sequence:
    """A trajectory as a training sequence: its own token record when it has one (exactly what
    was sampled), else its messages tokenized by ``tokenize(traj) -> (ids, mask)``.

    ``advantage`` is one number for every agent token, or a list of one per assistant turn: the
    k-th goes to every token of the k-th sampled span of the mask (the k-th assistant turn)."""
    if traj.tokens is not None:
        if not passed_token_check(traj):
            raise TokenizeError(
                f"trajectory {traj.task_id} of {traj.env!r} failed its token check "
                f"({traj.metadata['token_check']}); it is never "
                "trained on: drop it from the data, or remove its token record to re-tokenize its messages"
            )
        if traj.mask is None or len(traj.mask) != len(traj.tokens):
            raise TokenizeError(
                f"trajectory {traj.task_id}: token record has no mask of the same length as its ids"
            )
        ids, mask, lps = list(traj.tokens), list(traj.mask), traj.logprobs
    elif tokenize is not None:
        ids, mask = tokenize(traj)
        lps = None
    else:
        raise TokenizeError(
            f"trajectory {traj.task_id} of {traj.env!r} has no token record; pass a tokenizer "
            "(the trainers use agentgym.chat.tokenize_messages with the model's chat template)"
        )
    if not any(mask):
        raise TokenizeError(f"trajectory {traj.task_id} of {traj.env!r} has no agent tokens to train on")
    meta = {"task_id": traj.task_id, "score": traj.score, "env": traj.env}
    mask = [int(m) for m in mask]
    per_token = None
    if isinstance(advantage, list | tuple):
        per_token = turn_token_values(mask, advantage, f"trajectory {traj.task_id} of {traj.env!r}")
        advantage = sum(per_token) / sum(mask)  # the mean over its agent tokens, for logging
    return Sequence(
        ids=ids,
        mask=mask,
        logprobs=list(lps) if lps is not None else None,
        advantage=advantage,
        meta=meta,
        token_advantages=per_token,
    )


def turn_token_values(mask: list[int], per_turn: list[float], what: str = "a sequence") -> list[float]:
    """Spread one value per assistant turn over the tokens: the k-th value on every token of the
    k-th sampled span of ``mask``, 0 on every other token.

    >>> turn_token_values([0, 1, 1, 0, 0, 1], [0.5, -2.0])
    [0.0, 0.5, 0.5, 0.0, 0.0, -2.0]
    """
    from agentgym.chat import mask_spans

    spans = mask_spans(mask)
    if len(spans) != len(per_turn):
        raise TokenizeError(
            f"{what} has {len(spans)} sampled spans but {len(per_turn)} per-turn advantages; "
            "its token record needs one span per assistant turn (the rollout's token check)"
        )
    out = [0.0] * len(mask)
    for (a, b), value in zip(spans, per_turn, strict=True):
        out[a:b] = [float(value)] * (b - a)
    return out


def prompt_of(seq: Sequence) -> tuple[int, ...]:
    """The ids before a sequence's first agent token: what the rollouts of one task share."""
    return tuple(seq.ids[: seq.mask.index(1)] if 1 in seq.mask else seq.ids)


def shared_prefixes(seqs: list[Sequence]) -> tuple[list[list[int]], list[int]]:
    """Group sequences by their prompt (``prompt_of``: the rollouts of one task share system
    prompt, tools and task) and give each group a prefix: its prompt less the last token, so that
    every agent token is still predicted from the continuation that follows the prefix.

    Returns ``(prefixes, index)``: the distinct prefixes and the prefix of each sequence.

    >>> a = Sequence(ids=[1, 2, 3, 4, 5], mask=[0, 0, 0, 1, 1])
    >>> b = Sequence(ids=[1, 2, 3, 9], mask=[0, 0, 0, 1])
    >>> c = Sequence(ids=[7, 2, 3, 4], mask=[0, 0, 1, 1])
    >>> shared_prefixes([a, b, c])
    ([[1, 2], [7]], [0, 0, 1])
    """
    groups: dict[tuple[int, ...], int] = {}
    index = [groups.setdefault(prompt_of(s), len(groups)) for s in seqs]
    return [list(p[:-1]) for p in groups], index


def collate(seqs: list[Sequence], pad_id: int, share_prefix: bool = False) -> TokenBatch:
    """Right-pad sequences to the longest one in this list and build the shifted tensors.

    With ``share_prefix``, when at least two sequences have one prompt and every prompt is at least
    two tokens long, each group's prefix (``shared_prefixes``) is stored once in ``prefix_ids`` and
    the other fields hold only the continuations; ``forward_logprobs`` runs each prefix once and
    gives the same log-probs, with the same gradient, as the padded batch."""
    if not seqs:
        raise ValueError("cannot collate an empty list of sequences")
    prefix_ids = prefix_mask = prefix_index = None
    prefixes, index = shared_prefixes(seqs) if share_prefix else ([], [])
    if 0 < len(prefixes) < len(seqs) and all(prefixes):
        cut = [len(prefixes[g]) for g in index]
        seqs = [
            Sequence(
                ids=s.ids[k:],
                mask=s.mask[k:],
                logprobs=s.logprobs[k:] if s.logprobs is not None else None,
                advantage=s.advantage,
                prox_logprobs=s.prox_logprobs[k:] if s.prox_logprobs is not None else None,
                token_advantages=s.token_advantages[k:] if s.token_advantages is not None else None,
            )
            for s, k in zip(seqs, cut, strict=True)
        ]
        width = max(len(p) for p in prefixes)
        prefix_ids = torch.full((len(prefixes), width), pad_id, dtype=torch.long)
        prefix_mask = torch.zeros((len(prefixes), width), dtype=torch.long)
        for g, p in enumerate(prefixes):
            prefix_ids[g, : len(p)] = torch.tensor(p, dtype=torch.long)
            prefix_mask[g, : len(p)] = 1
        prefix_index = torch.tensor(index, dtype=torch.long)
    width = max(len(s) for s in seqs)
    n = len(seqs)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.float32)
    lps = torch.zeros((n, width), dtype=torch.float32)
    prox = torch.zeros((n, width), dtype=torch.float32)
    has_prox = all(s.prox_logprobs is not None for s in seqs)
    per_token = any(s.token_advantages is not None for s in seqs)
    adv = torch.zeros((n, width), dtype=torch.float32)
    for i, s in enumerate(seqs):
        k = len(s)
        input_ids[i, :k] = torch.tensor(s.ids, dtype=torch.long)
        attention[i, :k] = 1
        mask[i, :k] = torch.tensor(s.mask, dtype=torch.float32)
        if s.logprobs is not None:
            lps[i, :k] = torch.tensor(s.logprobs, dtype=torch.float32)
        if has_prox:
            prox[i, :k] = torch.tensor(s.prox_logprobs, dtype=torch.float32)
        if per_token:
            adv[i, :k] = (
                torch.tensor(s.token_advantages, dtype=torch.float32)
                if s.token_advantages is not None
                else s.advantage
            )
    return TokenBatch(
        input_ids=input_ids,
        attention_mask=attention,
        targets=input_ids[:, 1:].clone(),
        loss_mask=mask[:, 1:] * attention[:, 1:],
        old_logprobs=lps[:, 1:] * mask[:, 1:],
        advantages=adv[:, 1:] * mask[:, 1:]
        if per_token
        else torch.tensor([s.advantage for s in seqs], dtype=torch.float32),
        prefix_ids=prefix_ids,
        prefix_mask=prefix_mask,
        prefix_index=prefix_index,
        prox_logprobs=prox[:, 1:] * mask[:, 1:] if has_prox else None,
    )


def micro_batches(
    seqs: list[Sequence], max_tokens: int, max_seqs: int | None = None
) -> Iterable[list[Sequence]]:
    """Group sequences (kept in the given order's length ranking) into micro-batches whose padded
    size ``len(batch) * longest`` stays within ``max_tokens``: sorting by length first keeps the
    padding small. A sequence longer than ``max_tokens`` gets a micro-batch of its own."""
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    batch: list[Sequence] = []
    for i in order:
        s = seqs[i]
        longest = max([len(s)] + [len(b) for b in batch])
        if batch and (
            (len(batch) + 1) * longest > max_tokens or (max_seqs is not None and len(batch) >= max_seqs)
        ):
            yield batch
            batch = []
        batch.append(s)
    if batch:
        yield batch


LOGITS_PER_CHUNK = 2**25
"""most logits (rows x vocabulary) one chunk of the LM head holds at a time: 128 MiB in float32,
682 rows of a 49,152-id vocabulary"""


def forward_logprobs(model: torch.nn.Module, batch: TokenBatch, full_logits: bool = False) -> torch.Tensor:
    """``[B, T-1]`` log-probs the model gives each trained target token (with gradient if enabled):
    the positions where ``batch.loss_mask`` is 1; every other position holds 0.

    Only the attention mask goes to the model (and only where padding is not all at the ends of
    the rows, see ``_mask_for``); the loss mask is applied by the caller's loss.
    A batch with shared prefixes runs them once, keeps their keys and values (with gradient) and
    runs every continuation on top of its prefix's cache, so a group of G rollouts of one task
    pays for its prompt once instead of G times (the idea of Prefix Grouper, Liu et al. 2025,
    arXiv:2506.05433, here through the model's own KV cache).

    The LM head runs only on the trained positions, a chunk of rows at a time (``_head_logprobs``),
    so no ``[B, T, vocabulary]`` logits are ever held. ``full_logits`` computes the logits of
    every position as the model's own forward does (log-probs then fill every position); models
    whose forward changes the head's output (a logit soft-cap, a scale) always take that path."""
    inputs = {"input_ids": batch.input_ids}
    if batch.prefix_ids is None:
        inputs |= {"attention_mask": _mask_for(model, batch.attention_mask), "use_cache": False}
    else:
        inputs |= _prefix_cache(model, batch)
    head = _unwrap_ddp(model).get_output_embeddings()
    if full_logits or head is None or _PLAIN_HEAD.get(head) is False:
        return token_logprobs(model(**inputs).logits[:, :-1, :], batch.targets)
    seen: dict[str, Any] = {}

    def keep_hidden(_module, args):
        # the final hidden states the head would turn into logits, and the autocast state the
        # head runs under inside the model's forward; the model's own head computes the last
        # position only
        kind = args[0].device.type
        seen["hidden"] = args[0]
        seen["autocast"] = torch.autocast(
            kind, torch.get_autocast_dtype(kind), enabled=torch.is_autocast_enabled(kind)
        )
        return (args[0][:, -1:], *args[1:])

    handle = head.register_forward_pre_hook(keep_hidden)
    try:
        out = model(**inputs)
    finally:
        handle.remove()
    if "hidden" not in seen:  # the forward never called its output embeddings: these are all its logits
        _PLAIN_HEAD[head] = False
        return token_logprobs(out.logits[:, :-1, :], batch.targets)
    hidden = seen["hidden"]
    if head not in _PLAIN_HEAD:
        with seen["autocast"], torch.no_grad():
            mine = head(hidden[:, -1:]).float()
        _PLAIN_HEAD[head] = mine.shape == out.logits.shape and torch.equal(mine, out.logits.float())
        if not _PLAIN_HEAD[head]:
            return forward_logprobs(model, batch, full_logits=True)
    with seen["autocast"]:
        return _head_logprobs(head, hidden[:, :-1], batch.targets, batch.loss_mask > 0, out.logits.shape[-1])


_PLAIN_HEAD: weakref.WeakKeyDictionary[torch.nn.Module, bool] = weakref.WeakKeyDictionary()
"""output-embedding module -> whether its model's logits are exactly what it returns"""


def _head_logprobs(
    head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor, trained: torch.Tensor, vocab: int
) -> torch.Tensor:
    """Log-probs of ``targets`` where ``trained`` is True, from the final hidden states
    ``[B, T-1, H]``: the head and the log-softmax run on ``LOGITS_PER_CHUNK`` logits at a time,
    each chunk under activation checkpointing, so its logits are freed once its log-probs are
    taken and computed again, one chunk at a time, in the backward pass."""
    rows, picked = hidden[trained], targets[trained]
    step = max(1, LOGITS_PER_CHUNK // vocab)
    grad = torch.is_grad_enabled() and rows.requires_grad
    parts = []
    for i in range(0, max(len(rows), 1), step):  # at least once: the head stays in the graph
        args = (head, rows[i : i + step], picked[i : i + step])
        parts.append(
            checkpoint(_chunk_logprobs, *args, use_reentrant=False) if grad else _chunk_logprobs(*args)
        )
    return torch.zeros(trained.shape, dtype=parts[0].dtype, device=rows.device).masked_scatter(
        trained, torch.cat(parts)
    )


def _chunk_logprobs(head: torch.nn.Module, rows: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return token_logprobs(head(rows), targets)


def _prefix_cache(model: torch.nn.Module, batch: TokenBatch) -> dict[str, Any]:
    """Run a batch's shared prefixes once and return the inputs that run its continuations on top
    of them: the prefixes' KV cache (with gradient), one row per continuation, and the positions
    and attention mask that place each continuation after its prefix."""
    from transformers import DynamicCache

    # The prefix pass goes to the module itself: under DDP its gradient reaches the same
    # parameters within the one backward, and only the continuation pass is a DDP forward.
    inner = _unwrap_ddp(model)
    cache = DynamicCache(config=_config(inner))
    inner(
        input_ids=batch.prefix_ids,
        attention_mask=_mask_for(inner, batch.prefix_mask),
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    for layer in cache.layers:
        layer.keys = layer.keys.index_select(0, batch.prefix_index)
        layer.values = layer.values.index_select(0, batch.prefix_index)
    lengths = batch.prefix_mask.sum(-1).index_select(0, batch.prefix_index)
    width = batch.input_ids.shape[1]
    positions = lengths[:, None] + torch.arange(width, device=lengths.device)[None, :]
    attention = torch.cat([batch.prefix_mask.index_select(0, batch.prefix_index), batch.attention_mask], 1)
    return {
        "attention_mask": _mask_for(model, attention),
        "position_ids": positions,
        "past_key_values": cache,
        "use_cache": True,
    }


def _mask_for(model: torch.nn.Module, mask: torch.Tensor) -> torch.Tensor | None:
    """The attention mask to give the model, or None where it changes nothing: when every row's
    padding is at its end, causal attention already keeps real tokens from seeing it (the padded
    positions' own outputs are never trained on), and without a mask the attention kernel takes
    its faster causal path. Flash-attention models get the mask anyway: it lets them skip the
    padding altogether."""
    config = _config(_unwrap_ddp(model))
    if "flash" in str(getattr(config, "_attn_implementation", "")):
        return mask
    right_padded = bool((mask.cumprod(-1).sum(-1) == mask.sum(-1)).all())
    return None if right_padded else mask


def _unwrap_ddp(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def _config(model: torch.nn.Module):
    config = getattr(model, "config", None)
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def sequence_logprob_sums(model: torch.nn.Module, batch: TokenBatch) -> torch.Tensor:
    """``[B]`` sum of log-probs over each sequence's agent tokens only (for DPO)."""
    return (forward_logprobs(model, batch) * batch.loss_mask).sum(-1)

"""Reward model: a causal LM backbone with a scalar head on the last token, fit with the
Bradley-Terry loss on pairs of rollouts of the same task; and ``rm:DIR``, the verifier that scores
trajectories with it.

    agentgym rollout --env toy/calculator-v0 --policy hf:runs/sft/final,temperature=1 --n 64 --group 4 --out r.jsonl
    agentgym train rm --model runs/sft/final --data r.jsonl --eval-fraction 0.2 --output-dir runs/rm
    agentgym eval --env toy/calculator-v0 --policy hf:runs/sft/final --n 20 --verifier rm:runs/rm/final

or ``train_rm(RMConfig(...))``. Pairs are built as DPO builds them (``dpo.build_pairs``: same
``(env, task_id)``, chosen = the higher score). Every trajectory is rendered from its messages
with the backbone's chat template (``common.Tokenizer``; a token record, perhaps sampled by
another model, is not used), so training and scoring see the same tokens. The reward ``r`` is the
head's value on the final hidden state of the last token; the loss is
``-log sigma(r_chosen - r_rejected)`` (``losses.bradley_terry_loss``). Each step logs its loss
and pair accuracy (a tie counts half); the held-out pairs (``eval_data``, or the task ids that
``eval_fraction`` holds out) are measured before and after training.

``output_dir/final`` holds the backbone and tokenizer (``save_pretrained``),
``reward_head.safetensors`` and ``reward_model.json`` (what it is, its base model, the
scoring); ``load_reward_model`` reads it back. As a verifier a trajectory scores ``sigma(r)``,
in (0, 1): the Bradley-Terry probability that it is preferred to one of reward 0. It ranks
trajectories exactly as ``r`` does; its absolute level carries no calibration.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import threading
from contextlib import nullcontext
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from agentgym.trainers.batch import Sequence, collate
from agentgym.trainers.common import (
    Run,
    Tokenizer,
    batch_indices,
    load_model,
    load_tokenizer,
    make_accelerator,
    save_checkpoint,
    start_run,
)
from agentgym.trainers.config import RMConfig
from agentgym.trainers.dpo import build_pairs
from agentgym.trainers.losses import bradley_terry_loss
from agentgym.trainers.sft import held_out

from agentgym.types import Task, Trajectory, load_trajectories

KIND = "agentgym-reward-model"
HEAD_FILE = "reward_head.safetensors"
INFO_FILE = "reward_model.json"


class RewardModel(torch.nn.Module):
    """A causal LM's decoder and a linear head: one scalar reward per sequence, read at its last
    real token (sequences are right-padded)."""

    def __init__(self, backbone: Any, head: torch.nn.Linear | None = None):
        super().__init__()
        self.backbone = backbone
        hidden = backbone.config.get_text_config().hidden_size
        if head is None:
            head = torch.nn.Linear(hidden, 1)
            torch.nn.init.normal_(head.weight, std=1.0 / math.sqrt(hidden + 1))
            torch.nn.init.zeros_(head.bias)
        self.head = head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.backbone.get_decoder()(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        last = attention_mask.sum(-1) - 1
        hidden = out.last_hidden_state[torch.arange(len(last), device=last.device), last]
        return self.head(hidden.float()).squeeze(-1)


def as_messages(traj: Trajectory) -> Trajectory:
    """The trajectory without its token record: it is rendered from its messages."""
    return dataclasses.replace(traj, tokens=None, mask=None, logprobs=None)


def sequences(tokenize: Tokenizer, pairs) -> list[tuple[Sequence, Sequence]]:
    return [(tokenize(as_messages(p.chosen)), tokenize(as_messages(p.rejected))) for p in pairs]


@torch.no_grad()
def pair_rewards(acc, model, seqs: list[tuple[Sequence, Sequence]], micro: int, pad: int) -> torch.Tensor:
    """``[n, 2]`` (chosen, rejected) rewards of every pair."""
    model.eval()
    out = []
    for i in range(0, len(seqs), micro):
        chunk = seqs[i : i + micro]
        batch = collate([c for c, _ in chunk] + [r for _, r in chunk], pad).to(acc.device)
        with acc.autocast():
            r = model(batch.input_ids, batch.attention_mask).float().cpu()
        out.append(torch.stack([r[: len(chunk)], r[len(chunk) :]], dim=1))
    model.train()
    return torch.cat(out) if out else torch.zeros(0, 2)


def pair_accuracy(rewards: torch.Tensor) -> float | None:
    """Share of pairs whose chosen side has the higher reward (a tie counts half); None for no pairs.

    >>> pair_accuracy(torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [3.0, 2.0]]))
    0.625
    """
    if not len(rewards):
        return None
    wins = (rewards[:, 0] > rewards[:, 1]).float() + 0.5 * (rewards[:, 0] == rewards[:, 1]).float()
    return float(wins.mean())


def train_rm(cfg: RMConfig) -> dict:
    """Fit a reward model on the pairs in ``cfg.data``; returns the summary (pairs, held-out
    accuracy and loss before and after, the first and last step's training loss, model dir)."""
    acc = make_accelerator(cfg)
    tok = load_tokenizer(cfg.model)
    tokenize = Tokenizer(tok, cfg.max_length)
    records = [t for p in cfg.data for t in load_trajectories(p)]
    if cfg.eval_data:
        train_trajs, eval_trajs = records, [t for p in cfg.eval_data for t in load_trajectories(p)]
    else:
        train_trajs = [t for t in records if not held_out(t.task_id, cfg.eval_fraction)]
        eval_trajs = [t for t in records if held_out(t.task_id, cfg.eval_fraction)]
    pairs = build_pairs(train_trajs, cfg.min_margin, cfg.pairs_per_task)
    if not pairs:
        raise ValueError(
            f"no preference pairs in {cfg.data}: need tasks with several ok/truncated samples whose scores "
            f"differ by more than min_margin ({cfg.min_margin}); roll out with --group 4 or more"
        )
    seqs = sequences(tokenize, pairs)
    eval_seqs = sequences(tokenize, build_pairs(eval_trajs, cfg.min_margin, cfg.pairs_per_task))
    pad = tok.pad_token_id
    total_steps = cfg.max_steps or math.ceil(cfg.epochs * len(seqs) / (cfg.batch_size * acc.num_processes))

    model = RewardModel(load_model(cfg))
    run = start_run(cfg, acc, "rm", total_steps, model=model)
    model, step = run.model, run.step

    def measure(when: str) -> dict[str, Any]:
        r = pair_rewards(acc, model, eval_seqs, cfg.micro_batch_size, pad)
        loss = float(bradley_terry_loss(r[:, 0], r[:, 1])) if len(r) else None
        return {f"eval_accuracy_{when}": pair_accuracy(r), f"eval_loss_{when}": loss}

    before = measure("before")
    rows = []
    while step < total_steps:
        rows.append(rm_step(run, cfg, seqs, step, pad))
        step += 1
        run.metrics.log(step, **rows[-1])
        if cfg.save_every and step % cfg.save_every == 0:
            save_checkpoint(acc, cfg.output_dir, step, {"pairs": len(seqs)})
    after = measure("after")
    info = {
        "kind": KIND,
        "version": 1,
        "base_model": cfg.model,
        "max_length": cfg.max_length,
        "score": "sigmoid(reward of the last token's hidden state)",
        "pairs": len(seqs),
        "eval_pairs": len(eval_seqs),
        "eval_accuracy": after["eval_accuracy_after"],
    }
    final = save_reward_model(acc, model, tok, f"{cfg.output_dir}/final", info)
    summary = {"steps": step, "pairs": len(seqs), "eval_pairs": len(eval_seqs), **before, **after}
    if rows:
        summary |= {"first_loss": rows[0]["loss"], "last_loss": rows[-1]["loss"]}
    run.metrics.log(step, event="done", **summary)
    acc.end_training()
    return {**summary, "model_dir": str(final)}


def rm_step(run: Run, cfg: RMConfig, seqs: list[tuple[Sequence, Sequence]], step: int, pad: int) -> dict:
    """One optimizer step on the pairs of global step ``step`` (gradient accumulation over
    micro-batches); returns its metrics row."""
    acc, model = run.acc, run.model
    idx = batch_indices(len(seqs), step, cfg.batch_size * acc.num_processes, cfg.seed)
    idx = idx[acc.process_index :: acc.num_processes]
    chunks = [idx[i : i + cfg.micro_batch_size] for i in range(0, len(idx), cfg.micro_batch_size)]
    loss_total, margins, tokens = 0.0, [], 0
    for i, chunk in enumerate(chunks):
        n = len(chunk)
        batch = collate([seqs[j][0] for j in chunk] + [seqs[j][1] for j in chunk], pad).to(acc.device)
        sync = nullcontext() if i == len(chunks) - 1 else acc.no_sync(model)
        with sync, acc.autocast():
            r = model(batch.input_ids, batch.attention_mask)
            loss = bradley_terry_loss(r[:n], r[n:])
            acc.backward(loss * n / len(idx))
        loss_total += loss.item() * n / len(idx)
        margins += (r[:n] - r[n:]).detach().float().tolist()
        tokens += batch.num_tokens
    grad_norm = run.optimizer_step(cfg.max_grad_norm)
    row = {
        "loss": loss_total,
        "accuracy": sum((m > 0) + 0.5 * (m == 0) for m in margins) / len(margins),
        "reward_margin": sum(margins) / len(margins),
        "train_tokens": tokens,
        "lr": run.sched.get_last_lr()[0],
    }
    if grad_norm is not None:
        row["grad_norm"] = grad_norm
    return row


def save_reward_model(acc, model, tokenizer, out_dir: str | os.PathLike[str], info: dict) -> Path:
    """Write the backbone and tokenizer, the head, and ``reward_model.json``."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    acc.wait_for_everyone()
    state = acc.get_state_dict(model)
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        backbone = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
        acc.unwrap_model(model).backbone.save_pretrained(out, state_dict=backbone)
        tokenizer.save_pretrained(out)
        head = {
            k.removeprefix("head."): v.detach().cpu().contiguous()
            for k, v in state.items()
            if k.startswith("head.")
        }
        save_file(head, str(out / HEAD_FILE))
        (out / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    acc.wait_for_everyone()
    return out


def load_reward_model(
    path: str | os.PathLike[str], device: str | None = None
) -> tuple[RewardModel, Any, dict]:
    """``(model, tokenizer, info)`` of a directory written by ``agentgym train rm`` (in eval mode)."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    root = Path(path)
    if not (root / INFO_FILE).is_file():
        raise FileNotFoundError(
            f"no reward model at {path}: {root / INFO_FILE} is missing (`agentgym train rm` writes "
            "OUTPUT_DIR/final; give that directory)"
        )
    info = json.loads((root / INFO_FILE).read_text())
    if info.get("kind") != KIND:
        raise ValueError(f"{root / INFO_FILE} describes {info.get('kind')!r}, not {KIND!r}")
    backbone = AutoModelForCausalLM.from_pretrained(root, dtype=torch.float32)
    model = RewardModel(backbone)
    model.head.load_state_dict(load_file(str(root / HEAD_FILE)))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval().requires_grad_(False), load_tokenizer(str(root)), info


_LOCK = threading.Lock()


@lru_cache(maxsize=4)
def _loaded(path: str) -> tuple[RewardModel, Tokenizer]:
    model, tok, info = load_reward_model(path)
    return model, Tokenizer(tok, info.get("max_length", 2048))


class RewardModelVerifier:
    """``rm:DIR`` as a reward function: ``sigma(r)`` of the trajectory (see the module docstring).
    The model loads on the first call, once per directory and process; a missing or broken
    directory raises there, which the rubric or the runner records as a verifier error."""

    __name__ = "rm"

    def __init__(self, path: str):
        if not path:
            raise ValueError("rm: give the directory of a reward model, e.g. rm:runs/rm/final")
        self.path = path

    def reward(self, traj: Trajectory) -> float:
        """The raw reward ``r`` of one trajectory."""
        with _LOCK:
            model, tokenize = _loaded(os.path.abspath(self.path))
            batch = collate([tokenize(as_messages(traj))], tokenize.tokenizer.pad_token_id)
            device = next(model.parameters()).device
            with torch.no_grad():
                return float(model(batch.input_ids.to(device), batch.attention_mask.to(device))[0])

    def __call__(self, traj: Trajectory, task: Task | None = None) -> float:
        return 1.0 / (1.0 + math.exp(-self.reward(traj)))

"""What every trainer shares: the accelerate setup, model loading (optionally with LoRA), the
optimizer and schedule, resumable checkpoints, metrics, and tokenizing message-only records.

Checkpoints live in ``output_dir/checkpoints/step-N``: ``accelerator.save_state`` writes the
model, optimizer, scheduler and every RNG state, and ``trainer_state.json`` the step and data
position. ``resume=True`` loads the newest one, so an interrupted run continues exactly.
"""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from agentgym.trainers.batch import Sequence, TokenizeError, collate, prompt_of, to_sequence
from agentgym.trainers.config import TrainConfig

from agentgym.registry import env_tool_schemas
from agentgym.types import Trajectory


def make_accelerator(cfg: TrainConfig):
    """An ``Accelerator`` for this config (CPU when no GPU; DDP/FSDP/DeepSpeed under ``accelerate launch``)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    kwargs: dict[str, Any] = {"mixed_precision": cfg.mixed_precision}
    if cfg.log_with != "none":
        kwargs.update(log_with=cfg.log_with, project_dir=cfg.output_dir)
    acc = Accelerator(**kwargs)
    set_seed(cfg.seed)
    if cfg.log_with != "none":
        acc.init_trackers(
            "agentgym", config={k: v for k, v in vars(cfg).items() if isinstance(v, int | float | str | bool)}
        )
    return acc


def shares_prefix(cfg: TrainConfig, acc) -> bool:
    """Whether this run collates with shared prefixes (``TrainConfig.share_prefix``): the prefix
    pass calls the module outside its distributed wrapper, which DDP allows and sharded setups
    (FSDP, DeepSpeed) do not."""
    from accelerate.utils import DistributedType

    sharded = acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    if cfg.share_prefix == "on" and sharded:
        raise ValueError(
            f"share_prefix (on) is not supported with distributed type ({acc.distributed_type.value}); "
            "use share_prefix auto or off"
        )
    return cfg.share_prefix != "off" and not sharded


def load_model(cfg: TrainConfig, path: str | None = None, trainable: bool = True):
    """Load a causal LM in fp32 (autocast handles bf16), with LoRA adapters when ``lora_r > 0``."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path or cfg.model, dtype=torch.float32)
    model.config.use_cache = False
    if not trainable:
        model.eval().requires_grad_(False)
        return model
    if cfg.lora_r > 0:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=list(cfg.lora_target_modules),
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
    return model


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def warmup_steps(cfg: TrainConfig, total_steps: int) -> int:
    """Warm-up length in optimizer steps: ``cfg.warmup_steps`` itself, or below 1 that share of
    ``total_steps``.

    >>> from types import SimpleNamespace as C
    >>> warmup_steps(C(warmup_steps=0.1), 400), warmup_steps(C(warmup_steps=25), 400), warmup_steps(C(warmup_steps=0), 9)
    (40, 25, 0)
    """
    w = cfg.warmup_steps
    return round(w * total_steps) if 0 < w < 1 else int(w)


def make_optimizer(cfg: TrainConfig, model: torch.nn.Module, total_steps: int):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    from transformers import get_scheduler

    total = max(total_steps, 1)
    sched = get_scheduler(
        cfg.lr_scheduler, opt, num_warmup_steps=warmup_steps(cfg, total), num_training_steps=total
    )
    return opt, sched


class Tokenizer:
    """Turns trajectories into ``Sequence``s: their token record when present, else their
    messages through the chat renderer with the tool schemas the record carries (a record
    written before records carried them: those of its env, made once with its env kwargs)."""

    def __init__(self, tokenizer: Any, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self._renderers: dict[str, Any] = {}

    def renderer(self, traj: Trajectory):
        from agentgym.chat import ChatRenderer

        tools = traj.tools if traj.tools is not None else env_tool_schemas(traj.env, traj.env_kwargs)
        key = json.dumps(tools, sort_keys=True)
        if key not in self._renderers:
            self._renderers[key] = ChatRenderer(self.tokenizer, tools)
        return self._renderers[key]

    def __call__(self, traj: Trajectory, advantage: float | list[float] = 0.0) -> Sequence:
        if traj.tokens is not None and "token_check" not in traj.metadata and traj.num_turns:
            # a token record nobody checked (loaded from a file written elsewhere): its mask-1
            # spans must decode to the assistant's messages before it is trained on; a record
            # with no messages at all is raw token data and is taken as it is
            self.renderer(traj).check(traj)
        seq = to_sequence(traj, lambda t: self.renderer(t).tokenize_messages(t.messages), advantage)
        if len(seq) > self.max_length:
            raise TokenizeError(
                f"trajectory {traj.task_id} of {traj.env!r} has {len(seq)} tokens, over max_length "
                f"({self.max_length}); raise max_length or filter long records out"
            )
        return seq


def checkpoint_dirs(output_dir: str) -> list[Path]:
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith("step-") and (p / "trainer_state.json").exists()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def save_checkpoint(acc, output_dir: str, step: int, state: dict[str, Any]) -> Path:
    """Save model, optimizer, scheduler, RNG (``accelerator.save_state``) and the trainer state."""
    path = Path(output_dir) / "checkpoints" / f"step-{step}"
    acc.save_state(str(path))
    if acc.is_main_process:
        (path / "trainer_state.json").write_text(json.dumps({"step": step, **state}) + "\n")
    acc.wait_for_everyone()
    return path


def load_checkpoint(acc, output_dir: str) -> dict[str, Any] | None:
    """Load the newest checkpoint into the prepared objects; returns its trainer state or None."""
    dirs = checkpoint_dirs(output_dir)
    if not dirs:
        return None
    acc.load_state(str(dirs[-1]))
    return json.loads((dirs[-1] / "trainer_state.json").read_text())


def save_model(acc, model, tokenizer, out_dir: str | os.PathLike[str]) -> Path:
    """Write the trained model (LoRA merged into the weights) and tokenizer, loadable by every backend."""
    out = Path(out_dir)
    acc.wait_for_everyone()
    unwrapped = acc.unwrap_model(model)
    is_peft = hasattr(unwrapped, "merge_and_unload")
    state = None if is_peft else acc.get_state_dict(model)
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        if is_peft:
            import copy

            copy.deepcopy(unwrapped).merge_and_unload().save_pretrained(out)
        else:
            unwrapped.save_pretrained(out, state_dict=state)
        tokenizer.save_pretrained(out)
    acc.wait_for_everyone()
    return out


class Metrics:
    """One JSON object per line: to stdout (unless quiet), ``output_dir/metrics.jsonl`` and trackers."""

    def __init__(self, acc, cfg: TrainConfig, name: str):
        self.acc = acc
        self.quiet = cfg.quiet
        self.name = name
        self.trackers = cfg.log_with != "none"
        self.path = Path(cfg.output_dir) / "metrics.jsonl"
        self.t0 = time.perf_counter()
        if acc.is_main_process:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.history: list[dict[str, Any]] = []

    def log(self, step: int, **values: Any) -> dict[str, Any]:
        row = {"trainer": self.name, "step": step, **{k: _round(v) for k, v in values.items()}}
        row["elapsed_s"] = round(time.perf_counter() - self.t0, 2)
        self.history.append(row)
        if self.acc.is_main_process:
            line = json.dumps(row)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
            if not self.quiet:
                print(line, file=sys.stdout, flush=True)
            if self.trackers:
                self.acc.log({k: v for k, v in row.items() if isinstance(v, int | float)}, step=step)
        return row


def _round(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        v = v.item()
    return round(v, 6) if isinstance(v, float) else v


def _once(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with each tensor under its first name only: tied weights (an LM head that is the
    embedding matrix) are stored once in a checkpoint, and an engine loading them knows one name."""
    seen: set[tuple[int, tuple[int, ...]]] = set()
    out = {}
    for k, v in state.items():
        key = (v.data_ptr(), tuple(v.shape))
        if key not in seen:
            seen.add(key)
            out[k] = v
    return out


def trainable_state(model) -> dict[str, torch.Tensor]:
    """Full-precision weights with the names a fresh ``from_pretrained`` model uses (LoRA merged;
    tied weights once, under their first name)."""
    if hasattr(model, "merge_adapter") and hasattr(model, "get_base_model"):
        model.merge_adapter()
        try:
            base = model.get_base_model()
            state = {}
            for k, v in _once(base.state_dict()).items():
                if "lora_" in k:
                    continue
                state[k.replace(".base_layer", "")] = v.detach().clone()
            return state
        finally:
            model.unmerge_adapter()
    return {k: v.detach() for k, v in _once(model.state_dict()).items()}


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


def process_share(batch: list, procs: int, rank: int) -> tuple[list, float]:
    """This process's share of a global batch that every process holds, and its loss weight: a
    process left without sequences (fewer than processes) takes the first one with weight 0, so
    it still joins the gradient all-reduce without adding to it."""
    chunk = batch[rank::procs]
    return (chunk, 1.0) if chunk else (batch[:1], 0.0)


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


@dataclass
class Run:
    """What every trainer's loop holds: the accelerator, the prepared model, optimizer and
    schedule, its metrics, whether prompts are shared (``share_prefix``), and where it starts
    (``step`` and ``state`` of the checkpoint it resumed from; 0 and None on a fresh run)."""

    acc: Any
    model: Any
    opt: Any
    sched: Any
    metrics: Metrics
    share: bool
    step: int = 0
    state: dict[str, Any] | None = None

    def optimizer_step(self, max_grad_norm: float, schedule: bool = True) -> float | None:
        """Clip (when ``max_grad_norm`` > 0), step and zero the gradients, then step the
        schedule unless told not to; returns the gradient norm before clipping."""
        norm = None
        if max_grad_norm > 0:
            norm = float(self.acc.clip_grad_norm_(self.model.parameters(), max_grad_norm))
        self.opt.step()
        if schedule:
            self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        return norm


def start_run(cfg: TrainConfig, acc, name: str, total_steps: int, model=None) -> Run:
    """Load the model (unless given), build the optimizer and schedule for ``total_steps``,
    prepare them with the accelerator and resume from the newest checkpoint when ``cfg.resume``."""
    model = load_model(cfg) if model is None else model
    model.train()
    opt, sched = make_optimizer(cfg, model, total_steps)
    model, opt, sched = acc.prepare(model, opt, sched)
    run = Run(acc, model, opt, sched, Metrics(acc, cfg, name), shares_prefix(cfg, acc))
    if cfg.resume and (state := load_checkpoint(acc, cfg.output_dir)) is not None:
        run.step, run.state = state["step"], state
    return run

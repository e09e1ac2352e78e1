"""Trainer configs: flat dataclasses, loaded from YAML and overridden by command-line flags.

Each trainer has one config class (``SFTConfig``, ``GRPOConfig``, ``DPOConfig``, ``RMConfig``) built on
``TrainConfig``, the fields every trainer shares. Each field is documented once, in the string
right below it; ``field_docs`` reads those strings back for ``--help``. Cross-field checks run in
``__post_init__`` and name both values; a field that the chosen setup would ignore raises.

>>> from agentgym.trainers.sft import SFTConfig
>>> cfg = load_config(SFTConfig, overrides=["model=/m", "data=[a.jsonl]", "learning_rate=3e-4"])
>>> cfg.learning_rate, cfg.data
(0.0003, ['a.jsonl'])
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import os
import textwrap
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import yaml

LossAgg = Literal["token-mean", "seq-mean-token-mean", "constant"]
"""see agentgym.trainers.losses.aggregate"""


@dataclass
class TrainConfig:
    """Fields shared by every trainer."""

    model: str = ""
    """model directory or hub id to start from (a full model, not an adapter)"""
    output_dir: str = "runs/train"
    """where checkpoints, the final model and metrics.jsonl go"""
    seed: int = 0
    """seed of data order, dropout and sampling"""
    learning_rate: float = 1e-4
    """peak learning rate of AdamW"""
    weight_decay: float = 0.0
    """AdamW weight decay"""
    lr_scheduler: Literal["constant", "linear", "cosine"] = "constant"
    """learning-rate schedule after warm-up (SFT: cosine by default)"""
    warmup_steps: float = 0
    """linear warm-up: a number of optimizer steps, or below 1 a share of the run's steps (0.1: the
    first tenth; SFT's default)"""
    max_grad_norm: float = 1.0
    """gradient clipping norm (0 turns clipping off)"""
    batch_size: int = 8
    """sequences per optimizer step on each process"""
    micro_batch_size: int = 8
    """sequences per forward/backward pass; batch_size / micro_batch_size is the gradient accumulation"""
    max_length: int = 2048
    """longest sequence in tokens; a longer one is an error naming the record (never silently cut)"""
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    """autocast precision (bf16 on GPU; 'no' keeps fp32, as CPU tests use)"""
    share_prefix: Literal["auto", "on", "off"] = "auto"
    """run a prompt that several sequences of a micro-batch share (GRPO's rollouts of one task, a
    DPO pair's two sides) once, through the KV cache: the same loss and gradient for less compute.
    auto: on in one process and under DDP, off under FSDP / DeepSpeed (where 'on' is refused)"""
    save_every: int = 0
    """save a resumable checkpoint every N optimizer steps (0: only at the end)"""
    resume: bool = False
    """continue from the newest checkpoint in output_dir (model, optimizer, scheduler, RNG, data position)"""
    lora_r: int = 0
    """LoRA rank; 0 trains all weights"""
    lora_alpha: int = 16
    """LoRA scaling (used only when lora_r > 0)"""
    lora_dropout: float = 0.0
    """LoRA dropout (used only when lora_r > 0)"""
    lora_target_modules: list[str] = dataclasses.field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )
    """module names LoRA adapts (used only when lora_r > 0)"""
    log_with: Literal["none", "tensorboard", "wandb"] = "none"
    """extra metrics sink besides the JSON lines on stdout and in metrics.jsonl"""
    quiet: bool = False
    """do not print metrics to stdout (they still go to metrics.jsonl)"""

    def __post_init__(self) -> None:
        if isinstance(self.share_prefix, bool):  # YAML reads on / off as booleans
            self.share_prefix = "on" if self.share_prefix else "off"
        if not self.model:
            raise ValueError(
                "model is required: a model directory (e.g. from `agentgym tiny-model DIR`) or hub id"
            )
        if self.batch_size < 1 or self.micro_batch_size < 1:
            raise ValueError(
                f"batch_size ({self.batch_size}) and micro_batch_size ({self.micro_batch_size}) must be >= 1"
            )
        if self.batch_size % self.micro_batch_size:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be divisible by micro_batch_size ({self.micro_batch_size})"
            )
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if 1 < self.warmup_steps != int(self.warmup_steps):
            raise ValueError(
                f"warmup_steps ({self.warmup_steps}) must be a whole number of steps, or below 1 a share of them"
            )
        if self.save_every < 0 or self.warmup_steps < 0:
            raise ValueError(
                f"save_every ({self.save_every}) and warmup_steps ({self.warmup_steps}) must be >= 0"
            )
        defaults = {
            f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING
        }
        if self.lora_r == 0:
            for name in ("lora_alpha", "lora_dropout"):
                if getattr(self, name) != defaults[name]:
                    raise ValueError(
                        f"{name} ({getattr(self, name)}) has no effect with lora_r (0); set lora_r > 0 or drop it"
                    )
            if self.lora_target_modules != ["q_proj", "k_proj", "v_proj", "o_proj"]:
                raise ValueError(
                    f"lora_target_modules ({self.lora_target_modules}) has no effect with lora_r (0)"
                )
        check_choices(self)

    @property
    def accumulation_steps(self) -> int:
        return self.batch_size // self.micro_batch_size


@dataclass
class SFTConfig(TrainConfig):
    lr_scheduler: Literal["constant", "linear", "cosine"] = "cosine"
    """learning-rate schedule after warm-up; decayed to 0 by default (at a constant rate the last
    updates leave the weights wherever a noisy step put them, and a tool-call format learned to a
    low mean loss can still come out garbled)"""
    warmup_steps: float = 0.1
    """linear warm-up: a number of optimizer steps, or below 1 a share of the run's steps"""
    data: list[str] = field(default_factory=list)
    """trajectory JSONL files to train on"""
    eval_data: list[str] = field(default_factory=list)
    """held-out trajectory JSONL files for the evaluation loss"""
    eval_fraction: float = 0.0
    """share of task ids held out of ``data`` for evaluation (when eval_data is empty)"""
    min_score: float | None = None
    """keep only records scoring at least this (None keeps every ok/truncated record)"""
    epochs: float = 1.0
    """passes over the data (used when max_steps is 0)"""
    max_steps: int = 0
    """optimizer steps to run; 0 derives them from epochs"""
    eval_every: int = 0
    """evaluate every N steps (0: before and after training only)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.data:
            raise ValueError(
                "data is required: one or more trajectory JSONL files (e.g. from `agentgym rollout --out`)"
            )
        if self.eval_data and self.eval_fraction:
            raise ValueError(
                f"give eval_data ({self.eval_data}) or eval_fraction ({self.eval_fraction}), not both"
            )
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if self.max_steps and self.epochs != 1.0:
            raise ValueError(
                f"epochs ({self.epochs}) has no effect when max_steps ({self.max_steps}) is set; drop one"
            )
        if self.epochs <= 0 or self.max_steps < 0:
            raise ValueError(f"epochs ({self.epochs}) must be > 0 and max_steps ({self.max_steps}) >= 0")


@dataclass
class SamplingFields:
    """How episodes are sampled, in every config that rolls a model out (the online trainers, the
    flywheel)."""

    temperature: float = 1.0
    """sampling temperature of the model's episodes (evaluations are greedy)"""
    max_tokens: int = 128
    """most new tokens per assistant turn"""
    concurrency: int = 16
    """episodes in flight"""


@dataclass
class OnlineConfig(SamplingFields, TrainConfig):
    """Fields of the trainers that roll the current policy out on an env (GRPO, online DPO)."""

    env: str = ""
    """env id to roll out on"""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """env constructor arguments, e.g. {difficulty: 1}"""
    num_tasks: int = 64
    """size of the fixed task pool (env.task_ids(num_tasks, seed))"""
    task_ids: list[str] = field(default_factory=list)
    """the task pool itself, instead of env.task_ids(num_tasks, seed): e.g. the tasks the starting
    model solves only sometimes (the ones whose groups carry a learning signal)"""
    tasks_per_step: int = 4
    """tasks rolled out per step (GRPO) or per round (online DPO), by each process"""
    group_size: int = 8
    """rollouts per task (G)"""
    sampler: Literal["vllm", "hf", "server"] = "vllm"
    """'vllm': an in-process vLLM engine that receives each update; 'hf': the training model samples
    itself; 'server': vLLM OpenAI-compatible server(s) at server_url, each update pushed as a LoRA adapter"""
    server_url: str = ""
    """base URL(s) ending in /v1, comma-separated (sampler 'server' only); the server must share this
    file system, run with --enable-lora --max-lora-rank >= lora_r and VLLM_ALLOW_RUNTIME_LORA_UPDATING=1"""
    server_model: str = ""
    """the name the server serves the base model under (sampler 'server' only; default: model)"""
    max_turns: int = 0
    """assistant turns per episode (0: the env's default)"""
    push_timeout: float = 120.0
    """seconds a weight push to the sampler may take before the run fails"""
    gpu_memory_utilization: float = 0.3
    """share of GPU memory for the vLLM engine (sampler 'vllm' only)"""
    check_sync: bool = False
    """after each push, compare the sampler's log-probs of a fixed sequence with the trainer's (logged as sync_gap)"""
    enforce_eager: bool = False
    """run the vLLM engine without graph compilation: starts much faster on CPU (sampler 'vllm' only)"""
    rollout_backend: Literal["local", "ray"] = "local"
    """where the episodes run: 'local' (this process's rollout runner) or 'ray' (Ray actors on the
    cluster at ray_address, as `agentgym rollout --ray`; needs sampler 'server', whose URLs every
    node must reach; the trainer stays here and pushes each update to the servers as usual)"""
    ray_address: str = "local"
    """the Ray cluster of rollout_backend 'ray': 'local' (one started in this process), 'auto' or
    HOST:PORT"""
    curriculum: Literal["off", "band"] = "off"
    """'off': each step takes the next slice of the task pool, in order; 'band': a difficulty pool
    (sampler.DifficultyPool) draws each step's tasks, weight 1 for tasks whose pass rate so far
    lies in [band_low, band_high] (and tasks not seen yet), band_out_weight for the others;
    logged as curriculum_in_band (of the step's tasks), pool_in_band, pool_unseen, pool_too_easy
    and pool_too_hard"""
    band_low: float = 0.2
    """lowest pass rate of a task in band (curriculum 'band' only)"""
    band_high: float = 0.8
    """highest pass rate of a task in band (curriculum 'band' only)"""
    band_out_weight: float = 0.1
    """chance of a task outside the band relative to one inside (curriculum 'band' only; 0: drawn
    only when too few tasks are in band)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rollout_backend == "ray" and self.sampler != "server":
            raise ValueError(
                f"rollout_backend 'ray' needs sampler 'server' (got {self.sampler!r}): the episodes run in "
                "Ray actors, which reach the policy over HTTP; start vLLM servers (`agentgym serve MODEL "
                "--enable-lora`) and give their URLs as server_url"
            )
        if self.rollout_backend != "ray" and self.ray_address != "local":
            raise ValueError(f"ray_address ({self.ray_address!r}) is for rollout_backend 'ray'")
        if not self.env:
            raise ValueError("env is required, e.g. toy/calculator-v0 (`agentgym list` shows the ids)")
        if self.group_size < 2:
            raise ValueError(f"group_size must be >= 2 to compare rollouts of a task, got {self.group_size}")
        if self.task_ids and len(set(self.task_ids)) < self.tasks_per_step:
            raise ValueError(
                f"task_ids ({len(set(self.task_ids))} distinct) must hold at least tasks_per_step "
                f"({self.tasks_per_step}) tasks"
            )
        if not self.task_ids and self.num_tasks < self.tasks_per_step:
            raise ValueError(
                f"num_tasks ({self.num_tasks}) must be >= tasks_per_step ({self.tasks_per_step})"
            )
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 for exploration, got {self.temperature}")
        defaults = {f.name: f.default for f in dataclasses.fields(OnlineConfig)}
        only = {"gpu_memory_utilization": "vllm", "enforce_eager": "vllm", "server_url": "server"}
        only["server_model"] = "server"
        for name, sampler in only.items():
            if self.sampler != sampler and getattr(self, name) != defaults[name]:
                raise ValueError(
                    f"{name} ({getattr(self, name)!r}) has no effect with sampler ({self.sampler}); "
                    f"it is for sampler {sampler}"
                )
        for name in ("band_low", "band_high", "band_out_weight"):
            if self.curriculum == "off" and getattr(self, name) != defaults[name]:
                raise ValueError(
                    f"{name} ({getattr(self, name)}) has no effect with curriculum (off); it is for curriculum band"
                )
        if not 0.0 <= self.band_low <= self.band_high <= 1.0:
            raise ValueError(f"need 0 <= band_low ({self.band_low}) <= band_high ({self.band_high}) <= 1")
        if not 0.0 <= self.band_out_weight <= 1.0:
            raise ValueError(f"band_out_weight must lie in [0, 1], got {self.band_out_weight}")
        if self.sampler == "vllm" and self.lora_r > 0:
            raise ValueError(
                f"lora_r ({self.lora_r}) with sampler ({self.sampler}): the in-process engine takes full "
                "weights; use lora_r 0, sampler hf, or sampler server (which takes LoRA adapters)"
            )
        if self.sampler == "server":
            if not self.server_url:
                raise ValueError(
                    "sampler (server) needs server_url, e.g. http://127.0.0.1:8000/v1 (`agentgym serve MODEL "
                    "--enable-lora`)"
                )
            if self.lora_r <= 0:
                raise ValueError(
                    f"sampler (server) takes each update as a LoRA adapter, but lora_r is {self.lora_r}; "
                    "set lora_r > 0 (and start the server with --max-lora-rank >= lora_r)"
                )


@dataclass
class PairFields:
    """How preference pairs are built from rollouts, and how long to train on them (DPO, the
    reward model)."""

    min_margin: float = 0.0
    """a pair needs chosen score - rejected score above this"""
    pairs_per_task: Literal["one", "all"] = "one"
    """best-vs-worst pair per task, or every pair that clears min_margin"""
    epochs: float = 1.0
    """passes over the pairs (over each round's pairs when online; used when max_steps is 0)"""
    max_steps: int = 0
    """optimizer steps (per round when online); 0 derives them from epochs"""

    def check_pairs(self) -> None:
        if self.max_steps and self.epochs != 1.0:
            raise ValueError(
                f"epochs ({self.epochs}) has no effect when max_steps ({self.max_steps}) is set; drop one"
            )
        if self.epochs <= 0 or self.max_steps < 0:
            raise ValueError(f"epochs ({self.epochs}) must be > 0 and max_steps ({self.max_steps}) >= 0")
        if self.min_margin < 0:
            raise ValueError(f"min_margin must be >= 0, got {self.min_margin}")


@dataclass
class PreferenceFields(PairFields):
    """How pairs are built and scored, in offline and online DPO alike."""

    beta: float = 0.1
    """strength of the implicit KL to the reference"""
    loss_type: Literal["sigmoid", "ipo"] = "sigmoid"
    """DPO's logistic loss, or IPO's squared loss"""
    label_smoothing: float = 0.0
    """assumed share of flipped preference labels (sigmoid loss only)"""
    rpo_alpha: float = 0.0
    """weight of an NLL term on the chosen trajectory's agent tokens (per-token mean; RPO), which
    keeps DPO from lowering the chosen likelihood along with the rejected one"""
    ref_model: str = ""
    """reference model directory (empty: the starting model)"""

    def check_preference(self) -> None:
        self.check_pairs()
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if self.loss_type == "ipo" and self.label_smoothing:
            raise ValueError(
                f"label_smoothing ({self.label_smoothing}) has no effect with loss_type ({self.loss_type})"
            )
        if self.rpo_alpha < 0:
            raise ValueError(f"rpo_alpha must be >= 0, got {self.rpo_alpha}")


@dataclass
class DPOConfig(PreferenceFields, TrainConfig):
    """Offline DPO on pairs from rollout files."""

    see_also: ClassVar[str] = (
        "online DPO on an env (env, rounds, ...) is OnlineDPOConfig, `agentgym train online-dpo`"
    )

    data: list[str] = field(default_factory=list)
    """rollout JSONL files to build pairs from (several samples per task id, e.g. `agentgym rollout --group 4`)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.data:
            raise ValueError(
                "data is required: rollout JSONL with several samples per task (`agentgym rollout --group 4`); "
                "to sample pairs from the policy as it trains, use OnlineDPOConfig (`agentgym train online-dpo`)"
            )
        self.check_preference()


@dataclass
class RMConfig(PairFields, TrainConfig):
    """A Bradley-Terry reward model on pairs from rollout files."""

    learning_rate: float = 1e-5
    """peak learning rate of AdamW (the scalar head is new, the backbone is not)"""
    data: list[str] = field(default_factory=list)
    """rollout JSONL files to build pairs from (several samples per task id, e.g. `agentgym rollout --group 4`)"""
    eval_data: list[str] = field(default_factory=list)
    """held-out rollout JSONL files whose pairs measure the reward model's accuracy"""
    eval_fraction: float = 0.0
    """share of task ids held out of ``data`` for the accuracy (when eval_data is empty)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.data:
            raise ValueError(
                "data is required: rollout JSONL with several samples per task (`agentgym rollout --group 4`)"
            )
        if self.eval_data and self.eval_fraction:
            raise ValueError(
                f"give eval_data ({self.eval_data}) or eval_fraction ({self.eval_fraction}), not both"
            )
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if self.lora_r:
            raise ValueError(
                f"lora_r ({self.lora_r}): the reward model trains all weights so far; use lora_r 0"
            )
        self.check_pairs()


@dataclass
class OnlineDPOConfig(PreferenceFields, OnlineConfig):
    """Online DPO: each round samples fresh pairs from the current policy on ``env``."""

    rounds: int = 4
    """rounds of (roll out tasks_per_step tasks x group_size with the current policy -> pairs ->
    train -> push)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        self.check_preference()


@dataclass
class GRPOConfig(OnlineConfig):
    max_steps: int = 20
    """online steps (rollout + update + push)"""
    inner_epochs: int = 1
    """PPO passes over each step's rollouts"""
    clip_low: float = 0.2
    """ratio clipped below at 1 - clip_low"""
    clip_high: float = 0.28
    """ratio clipped above at 1 + clip_high (DAPO clip-higher)"""
    loss_agg: LossAgg = "token-mean"
    """token-mean, seq-mean-token-mean or constant (Dr. GRPO; normaliser loss_constant)"""
    loss_constant: float = 0.0
    """the normaliser of loss_agg 'constant' (e.g. max_tokens * max_turns)"""
    adv_scale: Literal["std", "none"] = "std"
    """divide advantages by the group's std (GRPO) or not (Dr. GRPO)"""
    ratio_level: Literal["token", "sequence"] = "token"
    """per-token importance ratio, or GSPO's sequence-level ratio"""
    kl_coef: float = 0.0
    """weight of the k3 KL to the frozen starting model (0: no reference model is loaded)"""
    tis_cap: float = 2.0
    """decoupled PPO with truncated importance sampling: before each update the trainer recomputes
    the rollouts' log-probs with its current weights, clips the ratio around them, and weights each
    token by min(pi_trainer / pi_sampler, tis_cap), correcting for a sampler whose kernels or
    weights differ from the trainer's (costs one forward pass without gradient per step); 0 takes
    the ratio against the sampler's log-probs directly, with no extra pass"""
    max_staleness: int = 0
    """asynchronous GRPO: how many steps a rollout's weights lag the trainer. 0 is the synchronous
    loop (each step rolled out with the newest weights, then trained). k > 0 rolls step j out on a
    thread of its own with the weights after step j - k while the trainer trains the steps before
    it (with the vLLM engine the sampling runs in the engine's process; the hf sampler samples with
    a copy of the model); the truncated importance weights (tis_cap) correct for the lag. One
    process only; check_sync is not run"""
    max_refills: int = 0
    """dynamic sampling (DAPO, arXiv:2503.14476, section 3.2): while fewer than tasks_per_step
    groups carry a learning signal (the rest were dropped for equal rewards), roll out that many
    fresh tasks of the pool again, at most this many times per step (0: dropped groups are not
    replaced); logged as refills and refill_episodes"""
    advantage: Literal["trajectory", "turn", "gigpo"] = "trajectory"
    """credit assignment over the turns of an episode. 'trajectory': every agent token gets its
    trajectory's group advantage of the score. 'turn': each turn's discounted return (gamma) of
    the env's per-turn rewards (metadata turn_rewards, 0 without) plus the score at the last
    turn, normalised over all turns of the group (losses.turn_advantages). 'gigpo': the
    trajectory's group advantage plus step_adv_weight times a step advantage: the turn's
    discounted return normalised among the group's turns that start from the same observations
    (GiGPO, arXiv:2505.10978; losses.gigpo_advantages); logged as step_groups"""
    gamma: float = 1.0
    """discount of later turns' rewards in a turn's return (advantage 'turn' and 'gigpo' only)"""
    step_adv_weight: float = 1.0
    """weight of GiGPO's step-level advantage (advantage 'gigpo' only)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.advantage == "trajectory" and self.gamma != 1.0:
            raise ValueError(
                f"gamma ({self.gamma}) has no effect with advantage (trajectory); use turn or gigpo"
            )
        if self.advantage != "gigpo" and self.step_adv_weight != 1.0:
            raise ValueError(
                f"step_adv_weight ({self.step_adv_weight}) has no effect with advantage ({self.advantage}); "
                "it is for gigpo"
            )
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1], got {self.gamma}")
        if self.step_adv_weight < 0:
            raise ValueError(f"step_adv_weight must be >= 0, got {self.step_adv_weight}")
        if self.tis_cap != 0 and self.tis_cap < 1:
            raise ValueError(
                f"tis_cap must be 0 (off) or at least 1, got {self.tis_cap}: a cap below 1 would shrink "
                "the weight of tokens where sampler and trainer agree"
            )
        if self.max_refills < 0:
            raise ValueError(f"max_refills must be >= 0, got {self.max_refills}")
        if self.max_staleness < 0:
            raise ValueError(
                f"max_staleness ({self.max_staleness}) must be >= 0: 0 is the synchronous loop, k > 0 "
                "rolls out up to k steps ahead of the trainer"
            )
        if (self.loss_agg == "constant") != (self.loss_constant > 0):
            raise ValueError(
                f"loss_constant ({self.loss_constant}) must be > 0 exactly when loss_agg is 'constant' (got {self.loss_agg!r})"
            )
        if self.clip_low <= 0 or self.clip_low >= 1 or self.clip_high <= 0:
            raise ValueError(f"need 0 < clip_low ({self.clip_low}) < 1 and clip_high ({self.clip_high}) > 0")


@dataclass
class DistillConfig(OnlineConfig):
    """On-policy distillation: the student (``model``) rolls out on ``env`` and is trained toward
    a frozen teacher's per-token log-probs of its own samples (reverse KL on agent tokens)."""

    teacher: str = ""
    """the frozen teacher: a model directory or hub id, or hf:DIR (the same: the teacher runs in
    this process with transformers; vllm: and openai: specs are refused). It must share the
    student's tokenizer (the same token ids), which is checked before any rollout"""
    max_steps: int = 20
    """online steps (rollout + update + push)"""
    loss_agg: LossAgg = "token-mean"
    """token-mean, seq-mean-token-mean or constant (normaliser loss_constant)"""
    loss_constant: float = 0.0
    """the normaliser of loss_agg 'constant' (e.g. max_tokens * max_turns)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.teacher:
            raise ValueError(
                "teacher is required: a model directory or hub id (or hf:DIR) that shares the student's tokenizer"
            )
        kind, colon, _ = self.teacher.partition(":")
        if colon and kind in ("vllm", "openai", "server", "scripted", "random"):
            raise ValueError(
                f"teacher ({self.teacher!r}): only a model directory, hub id or hf:DIR is accepted; the "
                "teacher's log-probs of every sampled token come from a forward pass in this process"
            )
        if kind == "hf" and "," in self.teacher:
            raise ValueError(
                f"teacher ({self.teacher!r}): hf:DIR takes no options (the teacher runs on the trainer's "
                "device, in float32 under the run's mixed_precision)"
            )
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if (self.loss_agg == "constant") != (self.loss_constant > 0):
            raise ValueError(
                f"loss_constant ({self.loss_constant}) must be > 0 exactly when loss_agg is 'constant' (got {self.loss_agg!r})"
            )

    @property
    def teacher_dir(self) -> str:
        """The directory or hub id the teacher loads from (``teacher`` without ``hf:``)."""
        return self.teacher.removeprefix("hf:")


def check_choices(cfg: Any) -> None:
    """Raise when a ``Literal``-typed field holds a value outside its choices."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        hint = hints.get(f.name)
        if typing.get_origin(hint) is Literal and getattr(cfg, f.name) not in typing.get_args(hint):
            raise ValueError(f"{f.name} must be one of {typing.get_args(hint)}, got {getattr(cfg, f.name)!r}")


def field_docs(cls: type) -> dict[str, str]:
    """The documentation string written under each field of a dataclass (and its bases)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, nxt in zip(body, body[1:], strict=False):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _parse_value(raw: str) -> Any:
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _coerce(cls: type, name: str, value: Any) -> Any:
    hint = typing.get_type_hints(cls).get(name)
    if hint is float and isinstance(value, int | str) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"{name} must be a number, got {value!r}") from None
    if hint is str and value is not None and not isinstance(value, str):
        return str(value)
    if typing.get_origin(hint) is list and isinstance(value, str):
        return [v for v in value.split(",") if v]
    return value


def load_config(
    cls: type, path: str | os.PathLike[str] | None = None, overrides: list[str] | dict[str, Any] | None = None
):
    """Build a config: fields from a YAML file, then ``key=value`` overrides (values parsed as YAML).

    Unknown keys raise, listing the known ones.
    """
    values: dict[str, Any] = {}
    if path is not None:
        with open(path, encoding="utf-8") as f:
            loaded = yaml.safe_load(f) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: a config file must be a YAML mapping of field: value")
        values.update(loaded)
    if isinstance(overrides, dict):
        values.update(overrides)
    else:
        for item in overrides or []:
            key, eq, raw = item.partition("=")
            if not eq:
                raise ValueError(f"override {item!r} must look like field=value")
            values[key.strip().replace("-", "_")] = _parse_value(raw)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        hint = f" ({cls.see_also})" if getattr(cls, "see_also", "") else ""
        raise ValueError(
            f"unknown {cls.__name__} field(s) {', '.join(unknown)}{hint}; known: {', '.join(sorted(known))}"
        )
    return cls(**{k: _coerce(cls, k, v) for k, v in values.items()})


def add_config_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """``--config FILE`` plus one ``--field-name VALUE`` flag per field (help from ``field_docs``)."""
    docs = field_docs(cls)
    parser.add_argument("--config", help="YAML file of field: value (flags override it)")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        if typing.get_origin(hints.get(f.name)) is dict:  # key=value pairs, as in every command
            parser.add_argument(
                flag,
                dest=f"cfg_{f.name}",
                default=None,
                nargs="+",
                metavar="KEY=VALUE",
                help=docs.get(f.name, ""),
            )
            continue
        parser.add_argument(flag, dest=f"cfg_{f.name}", default=None, metavar="V", help=docs.get(f.name, ""))


def config_from_args(cls: type, args: argparse.Namespace):
    """The config named by ``--config`` and the field flags of ``add_config_flags``."""
    from agentgym.cli_core import parse_kwargs

    overrides = {
        name[4:]: parse_kwargs(value, "--" + name[4:].replace("_", "-"))
        if isinstance(value, list)
        else _parse_value(value)
        for name, value in vars(args).items()
        if name.startswith("cfg_") and value is not None
    }
    return load_config(cls, args.config, overrides)

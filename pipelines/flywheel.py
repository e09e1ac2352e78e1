"""The data flywheel: rounds of generate -> verify -> filter -> train -> evaluate, with a report.

Round 0 evaluates the starting model (p_0). Each round t then

1. generates ``samples_per_task`` samples on ``tasks_per_round`` fresh tasks with its generator
   (a policy spec such as ``teacher``, or ``model``: the current model through ``backend``); the
   env's verifier scores every sample and all of them are kept in ``round_TT/raw.jsonl``;
2. filters them (status ok, score >= ``min_score``, the best per task) into ``kept.jsonl``;
3. trains the current model on the kept data (SFT), then optionally DPO on pairs from the raw
   samples or GRPO on the env, into ``round_TT/train``;
4. evaluates the new model on ``eval_tasks`` held-out tasks (greedy) into ``eval.jsonl``.

After the last round, each of ``arms`` (``grpo``, ``dpo``) trains from the last round's model
into ``arm_<name>/`` and is evaluated on the same held-out tasks, so finishing methods can be
compared side by side (the quickstart is such a run: one teacher round, then both arms).

Each finished stage writes ``round_TT/<stage>.json`` (its numbers, counted from the files it
wrote); a rerun skips finished stages and resumes generation mid-file, so a round that dies
resumes from its last finished stage. ``report.json`` and the plots are rebuilt from these
stage records after every stage.

    agentgym flywheel --config flywheel.yaml
    agentgym flywheel --config flywheel.yaml --set rounds=5 rl=dpo
    agentgym report runs/flywheel
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agentgym.pipelines.stages import Stages, same_settings, starting_model
from agentgym.trainers.config import SamplingFields

from agentgym.data.export import preference_pairs
from agentgym.data.filter import check_min_score, filter_file
from agentgym.data.report import odds_multiplier, plot_flywheel, read_metrics, smoothed_multiplier
from agentgym.data.sample import file_stats, generate_samples
from agentgym.types import iter_jsonl

STAGES = ("generate", "filter", "train", "evaluate")
ARMS = ("grpo", "dpo")


@dataclass
class FlywheelConfig(SamplingFields):
    """One flat config for a flywheel run (temperature, max_tokens and concurrency from
    ``SamplingFields``: of 'model' generation, GRPO rollouts, DPO samples and evaluations)."""

    run_dir: str = "runs/flywheel"
    """where rounds, stage records, report.json and plots go"""
    env: str = "toy/calculator-v0"
    """environment id"""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """constructor arguments of the env (e.g. difficulty: 1)"""
    generator_env_kwargs: dict[str, Any] = field(default_factory=dict)
    """env kwargs that override env_kwargs while generating (e.g. teacher demos at another
    difficulty than the one evaluated)"""
    model: str = "tiny"
    """starting model: a Hugging Face directory, a name ``agentgym model get`` knows, or 'tiny' to
    build the offline tiny model into run_dir/model0"""
    rounds: int = 3
    """rounds after the round-0 evaluation"""
    generators: list[str] = field(default_factory=lambda: ["teacher", "model"])
    """generator of round t is generators[t-1] (the last one repeats): a policy spec, or 'model'
    for samples from the current model"""
    backend: str = "hf"
    """model backend for 'model' generation, evaluation and GRPO rollouts (hf or vllm)"""
    tasks_per_round: int = 64
    """fresh tasks generated each round"""
    samples_per_task: int = 4
    """samples per task (best-of-K)"""
    min_score: float = 1.0
    """lowest score kept by the filter (and counted as a pass)"""
    cumulative: bool = True
    """train on the kept data of every round so far (else only this round's)"""
    sft_steps: int = 60
    """SFT optimizer steps per round"""
    learning_rate: float = 3e-3
    """learning rate of SFT (and of DPO and GRPO unless rl_learning_rate is set)"""
    lr_scheduler: Literal["constant", "linear", "cosine"] = "cosine"
    """learning-rate schedule of each round's SFT, after a warm-up of a tenth of its steps (a
    decay ends the round at a low rate; a constant rate can leave the round's model on a loss
    spike)"""
    batch_size: int = 16
    """sequences per optimizer step"""
    lora_r: int = 0
    """LoRA rank of every training stage (0: full fine-tuning); GRPO then samples with hf"""
    rl: Literal["none", "dpo", "grpo"] = "none"
    """after SFT in each round: 'dpo' on preference pairs from this round's raw samples, 'grpo' on
    the env"""
    rl_steps: int = 20
    """optimizer steps of the dpo/grpo stage (of rl and of the arms, unless grpo_steps/dpo_steps)"""
    rl_learning_rate: float | None = None
    """learning rate of DPO and GRPO (default: learning_rate)"""
    arms: list[str] = field(default_factory=list)
    """after the last round, each of these ('grpo', 'dpo') trains from the last round's model and is
    evaluated beside it; 'dpo' samples its pairs from that model first"""
    grpo_steps: int = 0
    """GRPO optimizer steps (0: rl_steps)"""
    grpo_learning_rate: float | None = None
    """learning rate of GRPO (default: rl_learning_rate)"""
    grpo_tasks: int = 0
    """GRPO's task pool (0: tasks_per_round)"""
    tasks_per_step: int = 4
    """GRPO tasks per step"""
    group: int = 0
    """rollouts per task in GRPO groups and in the dpo arm's samples (0: samples_per_task, at least 2)"""
    dpo_steps: int = 0
    """DPO optimizer steps (0: rl_steps)"""
    dpo_tasks: int = 0
    """tasks the dpo arm samples its pairs on (0: tasks_per_round)"""
    dpo_batch_size: int = 0
    """pairs per DPO step (0: batch_size)"""
    rpo_alpha: float = 0.0
    """weight of an NLL term on DPO's chosen side (keeps a few dozen pairs from pulling the good
    trajectories down with the bad)"""
    eval_tasks: int = 64
    """held-out tasks evaluated greedily after each round"""
    eval_seed: int = 9_999
    """task seed of the held-out evaluation (generation in round t uses seed + t)"""
    seed: int = 0
    """base seed of tasks, sampling and training"""

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if not self.generators:
            raise ValueError("generators must name at least one generator (a policy spec or 'model')")
        if self.tasks_per_round < 1 or self.samples_per_task < 1 or self.eval_tasks < 1:
            raise ValueError(
                f"tasks_per_round ({self.tasks_per_round}), samples_per_task ({self.samples_per_task}) "
                f"and eval_tasks ({self.eval_tasks}) must be >= 1"
            )
        if self.rl not in ("none", "dpo", "grpo"):
            raise ValueError(f"rl must be none, dpo or grpo, got {self.rl!r}")
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown or len(set(self.arms)) != len(self.arms):
            raise ValueError(f"arms must be distinct names from {', '.join(ARMS)}, got {self.arms}")
        if self.rl == "none" and not self.arms and self.rl_steps != 20:
            raise ValueError(
                f"rl_steps ({self.rl_steps}) has no effect with rl (none) and no arms; set rl or arms, or drop rl_steps"
            )
        check_min_score(self.min_score)
        if self.lr_scheduler not in ("constant", "linear", "cosine"):
            raise ValueError(f"lr_scheduler must be constant, linear or cosine, got {self.lr_scheduler!r}")
        if self.backend not in ("hf", "vllm"):
            raise ValueError(f"backend must be hf or vllm, got {self.backend!r}")

    def generator(self, t: int) -> str:
        return self.generators[min(t, len(self.generators)) - 1]

    def policy(self, model: str, temperature: float) -> str:
        """The policy spec of ``model`` on this run's backend."""
        return (
            f"{self.backend}:{model},temperature={temperature},max_tokens={self.max_tokens},seed={self.seed}"
        )

    @property
    def rl_lr(self) -> float:
        return self.learning_rate if self.rl_learning_rate is None else self.rl_learning_rate


def load_config(path: str | os.PathLike[str] | None, overrides: list[str] | None = None) -> FlywheelConfig:
    """A ``FlywheelConfig`` from a YAML/JSON mapping plus ``key=value`` overrides (values as YAML)."""
    from agentgym.trainers.config import load_config as load_fields

    return load_fields(FlywheelConfig, path, overrides)


def round_dir(run_dir: str | os.PathLike[str], t: int) -> Path:
    return Path(run_dir) / f"round_{t:02d}"


# ----- adapters: one small function per external component --------------------------------------


def train_tokens(train_dir: Path) -> int:
    """Agent tokens (the trained ones) that the trainers logged under ``train_dir``."""
    return sum(
        int(r.get("agent_tokens") or 0)
        for path in sorted(train_dir.rglob("metrics.jsonl"))
        for r in read_metrics(path)
        if "event" not in r
    )


def train_sft_stage(
    cfg: FlywheelConfig, model: str, data: list[str], out: Path, steps: int
) -> dict[str, Any]:
    from agentgym.trainers.sft import SFTConfig, train_sft

    return train_sft(
        SFTConfig(
            model=model,
            data=data,
            output_dir=str(out),
            max_steps=steps,
            batch_size=cfg.batch_size,
            micro_batch_size=cfg.batch_size,
            learning_rate=cfg.learning_rate,
            lr_scheduler=cfg.lr_scheduler,
            warmup_steps=0.1,
            lora_r=cfg.lora_r,
            seed=cfg.seed,
            quiet=True,
        )
    )


def train_dpo_stage(cfg: FlywheelConfig, model: str, samples: Path, out: Path) -> dict[str, Any] | None:
    """DPO on pairs from ``samples``; None when they give no pair."""
    from agentgym.trainers.config import DPOConfig
    from agentgym.trainers.dpo import train_dpo

    if not preference_pairs([r for _, r in iter_jsonl(samples, errors="skip")]):
        return None
    batch = cfg.dpo_batch_size or cfg.batch_size
    return train_dpo(
        DPOConfig(
            model=model,
            data=[str(samples)],
            output_dir=str(out),
            max_steps=cfg.dpo_steps or cfg.rl_steps,
            batch_size=batch,
            micro_batch_size=batch,
            learning_rate=cfg.rl_lr,
            rpo_alpha=cfg.rpo_alpha,
            lora_r=cfg.lora_r,
            seed=cfg.seed,
            quiet=True,
        )
    )


def train_grpo_stage(cfg: FlywheelConfig, model: str, out: Path, seed: int) -> dict[str, Any]:
    """Online GRPO on the env, the model sampling itself (pushed into vLLM after each update)."""
    from agentgym.trainers.config import GRPOConfig
    from agentgym.trainers.grpo import train_grpo

    vllm = cfg.backend == "vllm" and not cfg.lora_r
    return train_grpo(
        GRPOConfig(
            model=model,
            env=cfg.env,
            env_kwargs=dict(cfg.env_kwargs),
            output_dir=str(out),
            sampler="vllm" if vllm else "hf",
            enforce_eager=vllm,  # starts in seconds on CPU
            num_tasks=cfg.grpo_tasks or cfg.tasks_per_round,
            tasks_per_step=min(cfg.tasks_per_step, cfg.grpo_tasks or cfg.tasks_per_round),
            group_size=cfg.group or max(2, cfg.samples_per_task),
            temperature=cfg.temperature,
            max_tokens=cfg.max_tokens,
            max_steps=cfg.grpo_steps or cfg.rl_steps,
            batch_size=cfg.batch_size,
            micro_batch_size=cfg.batch_size,
            learning_rate=cfg.rl_lr if cfg.grpo_learning_rate is None else cfg.grpo_learning_rate,
            lora_r=cfg.lora_r,
            seed=seed,
            quiet=True,
        )
    )


def generate(
    cfg: FlywheelConfig, policy: str, out: Path, tasks: int, per_task: int, seed: int, kwargs: dict[str, Any]
) -> dict[str, Any]:
    """Sample ``per_task`` episodes on each of ``tasks`` tasks into ``out`` (resuming a partial
    file); the record holds the file's statistics."""
    stats, seconds = generate_samples(
        cfg.env,
        policy,
        n_per_task=per_task,
        tasks=tasks,
        out=out,
        seed=seed,
        concurrency=cfg.concurrency,
        env_kwargs={**cfg.env_kwargs, **kwargs},
        min_score=cfg.min_score,
        resume=True,
    )
    return {"policy": policy, "file": str(out), "seconds": round(seconds, 3), **stats.to_dict()}


def evaluate(cfg: FlywheelConfig, model: str, out: Path) -> dict[str, Any]:
    """Greedy episodes of ``model`` on the held-out tasks."""
    rec = generate(cfg, cfg.policy(model, 0.0), out, cfg.eval_tasks, 1, cfg.eval_seed, {})
    keep = ("file", "passed", "evidence", "statuses", "seconds")
    return {"model": model, "p": rec["pass_rate"], **{k: rec[k] for k in keep}}


def summary(trained: dict[str, Any]) -> dict[str, Any]:
    """What a stage record keeps of a trainer's summary."""
    keys = ("steps", "first_loss", "last_loss", "pairs", "mean_scores")
    return {k: trained[k] for k in keys if k in trained}


# ----- the loop ----------------------------------------------------------------------------------


class Flywheel:
    """One run: its config, its stage records, and the report rebuilt after every stage."""

    def __init__(self, cfg: FlywheelConfig, label: str = "flywheel"):
        self.cfg = cfg
        self.run_dir = Path(cfg.run_dir)
        self.stages = Stages(self.run_dir, label)

    def stage(self, key: str, text: str, fn) -> dict[str, Any]:
        done = self.stages.path(key).exists()
        record = self.stages.run(key, text, fn)
        if not done:
            refresh(self.run_dir)
        return record

    def round(self, t: int, model: str, kept_so_far: list[str]) -> str:
        """Run the unfinished stages of round t; returns the model it ends with."""
        cfg, d = self.cfg, round_dir(self.run_dir, t)
        gen = cfg.generator(t)
        raw, kept = d / "raw.jsonl", d / "kept.jsonl"
        policy = cfg.policy(model, cfg.temperature) if gen == "model" else gen
        self.stage(
            f"{d.name}/generate",
            f"round {t}: generating {cfg.samples_per_task} x {cfg.tasks_per_round} samples with {policy}",
            lambda: {
                "generator": gen,
                **generate(
                    cfg,
                    policy,
                    raw,
                    cfg.tasks_per_round,
                    cfg.samples_per_task,
                    cfg.seed + t,
                    cfg.generator_env_kwargs,
                ),
            },
        )

        def filtering() -> dict[str, Any]:
            _, report = filter_file(raw, kept, min_score=cfg.min_score, dedup=True)
            return {
                "file": str(kept),
                "kept": report.kept,
                "total": report.total,
                "malformed": len(report.malformed),
            }

        self.stage(f"{d.name}/filter", f"round {t}: filtering {raw}", filtering)

        def training() -> dict[str, Any]:
            data = [*kept_so_far, str(kept)] if cfg.cumulative else [str(kept)]
            data = [p for p in data if file_stats(p, cfg.min_score).passed > 0]
            new_model, stages, runs = model, [], {}
            if data:
                runs["sft"] = train_sft_stage(cfg, model, data, d / "train" / "sft", cfg.sft_steps)
            if cfg.rl == "dpo":
                found = train_dpo_stage(
                    cfg, runs.get("sft", {}).get("model_dir", model), raw, d / "train" / "dpo"
                )
                if found is not None:
                    runs["dpo"] = found
            elif cfg.rl == "grpo":
                start = runs.get("sft", {}).get("model_dir", model)
                runs["grpo"] = train_grpo_stage(cfg, start, d / "train" / "grpo", cfg.seed + t)
            for name, trained in runs.items():
                new_model = trained["model_dir"]
                stages.append(name)
            return {
                "model_in": model,
                "model": new_model,
                "data": data,
                "stages": stages,
                **{name: summary(trained) for name, trained in runs.items()},
                "tokens": train_tokens(d / "train") if (d / "train").exists() else 0,
            }

        steps = f"SFT for {cfg.sft_steps} steps" + ("" if cfg.rl == "none" else f", then {cfg.rl.upper()}")
        train = self.stage(f"{d.name}/train", f"round {t}: {steps}", training)
        self.stage(
            f"{d.name}/evaluate",
            f"round {t}: evaluating {train['model']} on {cfg.eval_tasks} held-out tasks",
            lambda: evaluate(cfg, train["model"], d / "eval.jsonl"),
        )
        return train["model"]

    def arm(self, name: str, model: str) -> None:
        """Train arm ``name`` from ``model`` (the last round's) and evaluate it."""
        cfg, d = self.cfg, self.run_dir / f"arm_{name}"
        seed = cfg.seed + cfg.rounds + 1 + ARMS.index(name)

        def training() -> dict[str, Any]:
            if name == "grpo":
                trained = train_grpo_stage(cfg, model, d / "train", seed)
            else:
                trained = train_dpo_stage(cfg, model, d / "samples.jsonl", d / "train")
            if trained is None:
                return {"model_in": model, "model": None, "note": "the samples gave no preference pair"}
            return {"model_in": model, "model": trained["model_dir"], **summary(trained)}

        def sampling() -> dict[str, Any]:
            rec = generate(
                cfg, cfg.policy(model, cfg.temperature), d / "samples.jsonl", tasks, group, seed, {}
            )
            return {
                **rec,
                "pairs": len(preference_pairs([r for _, r in iter_jsonl(rec["file"], errors="skip")])),
            }

        if name == "dpo":
            group, tasks = cfg.group or max(2, cfg.samples_per_task), cfg.dpo_tasks or cfg.tasks_per_round
            self.stage(
                f"{d.name}/generate",
                f"dpo arm: sampling {model} for pairs ({tasks} x {group}, temperature {cfg.temperature})",
                sampling,
            )
        steps = cfg.grpo_steps if name == "grpo" else cfg.dpo_steps
        train = self.stage(
            f"{d.name}/train", f"{name} arm: {name.upper()} for {steps or cfg.rl_steps} steps", training
        )
        if train["model"] is not None:
            self.stage(
                f"{d.name}/evaluate",
                f"{name} arm: evaluating {train['model']}",
                lambda: evaluate(cfg, train["model"], d / "eval.jsonl"),
            )

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        same_settings(self.run_dir / "flywheel.json", dataclasses.asdict(cfg), may_change=("rounds",))
        model = self.stage(
            "model",
            f"starting model ({cfg.model})",
            lambda: starting_model(cfg.model, self.run_dir, cfg.seed),
        )["model"]
        self.stage(
            "round_00/evaluate",
            f"round 0: evaluating the starting model on {cfg.eval_tasks} held-out tasks",
            lambda: evaluate(cfg, model, round_dir(self.run_dir, 0) / "eval.jsonl"),
        )
        kept: list[str] = []
        for t in range(1, cfg.rounds + 1):
            model = self.round(t, model, kept)
            kept.append(str(round_dir(self.run_dir, t) / "kept.jsonl"))
        for name in cfg.arms:
            self.arm(name, model)
        return refresh(self.run_dir)


def run_flywheel(cfg: FlywheelConfig, label: str = "flywheel") -> dict[str, Any]:
    """Run (or resume) every round and arm; returns the report (also in ``run_dir/report.json``)."""
    return Flywheel(cfg, label).run()


# ----- the report --------------------------------------------------------------------------------


def _gain(prev: dict[str, Any] | None, ev: dict[str, Any]) -> dict[str, Any]:
    """p of an evaluation and its odds multiplier over ``prev`` (the evaluation before it)."""
    row: dict[str, Any] = {"p": ev["p"]}
    if prev:
        row["p_prev"] = prev["p"]
        row["g"], note = odds_multiplier(prev["p"], ev["p"])
        if note:
            row["g_note"] = note
        row["g_smoothed"] = smoothed_multiplier(
            prev["passed"], prev["evidence"], ev["passed"], ev["evidence"]
        )
    return row


def collect_report(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The flywheel report, rebuilt from the stage records on disk (finished or running)."""
    run = Path(run_dir)
    cfg = json.loads((run / "flywheel.json").read_text())
    stages = Stages(run, "report", quiet=True)
    base = stages.read("round_00/evaluate")
    report: dict[str, Any] = {"env": cfg["env"], "run_dir": str(run), "config": cfg, "baseline": base}
    report["rounds"], report["arms"] = [], []
    prev = base
    t = 1
    while round_dir(run, t).exists():
        st = {s: stages.read(f"round_{t:02d}/{s}") for s in STAGES}
        gen, filt, train, ev = st["generate"], st["filter"], st["train"], st["evaluate"]
        row: dict[str, Any] = {
            "round": t,
            "generator": (gen or {}).get("generator", cfg["generators"][min(t, len(cfg["generators"])) - 1]),
            "complete": all(st.values()),
            **st,
        }
        if gen and filt:
            row["kept"] = filt["kept"]
            row["yield"] = filt["kept"] / gen["samples"] if gen["samples"] else None
            row["passes_per_kept"] = gen["samples"] / filt["kept"] if filt["kept"] else None
            row["seconds_per_kept"] = gen["seconds"] / filt["kept"] if filt["kept"] else None
        if ev:
            row.update(_gain(prev, ev))
            prev = ev
        row["tokens"] = ((gen or {}).get("sampled_tokens") or 0) + ((train or {}).get("tokens") or 0)
        row["wall_s"] = sum((x or {}).get("seconds", 0.0) for x in st.values())
        report["rounds"].append(row)
        t += 1
    for name in cfg.get("arms", []):
        st = {s: stages.read(f"arm_{name}/{s}") for s in ("generate", "train", "evaluate")}
        if not any(st.values()):
            continue
        arm: dict[str, Any] = {
            "arm": name,
            "complete": bool(st["evaluate"] or (st["train"] or {}).get("note")),
            **st,
        }
        if st["evaluate"]:
            arm.update(_gain(prev, st["evaluate"]))
        arm["wall_s"] = sum((x or {}).get("seconds", 0.0) for x in st.values())
        report["arms"].append(arm)
    return report


def refresh(run_dir: Path) -> dict[str, Any]:
    """Rewrite ``report.json`` and the plots from the stage records."""
    report = collect_report(run_dir)
    path = run_dir / "report.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)
    plot_flywheel(report, run_dir / "plots")
    return report

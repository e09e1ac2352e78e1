"""The data flywheel: rounds of generate -> verify -> filter -> train -> evaluate, with a report.

Round 0 evaluates the starting model (p_0). Each round t then

1. generates ``samples_per_task`` samples on ``tasks_per_round`` fresh tasks with its generator
   (a policy spec such as ``teacher``, or ``model``: the current model through ``backend``); the
   env's verifier scores every sample and all of them are kept in ``round_TT/raw.jsonl``;
2. filters them (status ok, score >= ``min_score``, the best per task) into ``kept.jsonl``;
3. trains the current model on the kept data (SFT), then optionally DPO on pairs from the raw
   samples or GRPO on the env, into ``round_TT/train``;
4. evaluates the new model on ``eval_tasks`` held-out tasks (greedy) into ``eval.jsonl``.

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
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from agentgym.data.filter import check_min_score, filter_file
from agentgym.data.report import odds_multiplier, plot_flywheel, smoothed_multiplier
from agentgym.data.sample import file_stats
from agentgym.types import iter_jsonl

STAGES = ("generate", "filter", "train", "evaluate")
EVAL_SEED = 9_999
"""task seed of the held-out evaluation tasks (generation rounds use seed + round)"""


@dataclass
class FlywheelConfig:
    """One flat config for a flywheel run."""

    run_dir: str = "runs/flywheel"
    """where rounds, stage records, report.json and plots go"""
    env: str = "toy/calculator-v0"
    """environment id"""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """constructor arguments of the env (e.g. difficulty: 1)"""
    model: str = "tiny"
    """starting model directory, or 'tiny' to build the offline tiny model into run_dir/model0"""
    rounds: int = 3
    """rounds after the round-0 evaluation"""
    generators: list[str] = field(default_factory=lambda: ["teacher", "model"])
    """generator of round t is generators[t-1] (the last one repeats): a policy spec, or 'model'
    for samples from the current model"""
    backend: str = "hf"
    """model backend for 'model' generation and evaluation (hf or vllm)"""
    tasks_per_round: int = 64
    """fresh tasks generated each round"""
    samples_per_task: int = 4
    """samples per task (best-of-K)"""
    temperature: float = 1.0
    """sampling temperature of 'model' generation"""
    max_tokens: int = 128
    """most new tokens per assistant turn (generation and evaluation)"""
    min_score: float = 1.0
    """lowest score kept by the filter (and counted as a pass)"""
    cumulative: bool = True
    """train on the kept data of every round so far (else only this round's)"""
    sft_steps: int = 60
    """SFT optimizer steps per round"""
    learning_rate: float = 3e-3
    """learning rate of every training stage"""
    lr_scheduler: Literal["constant", "linear", "cosine"] = "cosine"
    """learning-rate schedule of each round's SFT, after a warm-up of a tenth of its steps (a
    decay ends the round at a low rate; a constant rate can leave the round's model on a loss
    spike)"""
    batch_size: int = 16
    """sequences per optimizer step"""
    rl: Literal["none", "dpo", "grpo"] = "none"
    """after SFT: 'dpo' on preference pairs from this round's raw samples, 'grpo' on the env"""
    rl_steps: int = 20
    """optimizer steps of the dpo/grpo stage"""
    eval_tasks: int = 64
    """held-out tasks evaluated greedily after each round"""
    concurrency: int = 16
    """episodes in flight during generation and evaluation"""
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
        if self.rl == "none" and self.rl_steps != 20:
            raise ValueError(
                f"rl_steps ({self.rl_steps}) has no effect with rl (none); set rl or drop rl_steps"
            )
        check_min_score(self.min_score)
        if self.lr_scheduler not in ("constant", "linear", "cosine"):
            raise ValueError(f"lr_scheduler must be constant, linear or cosine, got {self.lr_scheduler!r}")
        if self.backend not in ("hf", "vllm"):
            raise ValueError(f"backend must be hf or vllm, got {self.backend!r}")

    def generator(self, t: int) -> str:
        return self.generators[min(t, len(self.generators)) - 1]


def load_config(path: str | os.PathLike[str] | None, overrides: list[str] | None = None) -> FlywheelConfig:
    """A ``FlywheelConfig`` from a YAML/JSON mapping plus ``key=value`` overrides (values as YAML)."""
    values: dict[str, Any] = {}
    if path is not None:
        with open(path, encoding="utf-8") as f:
            loaded = yaml.safe_load(f) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: a flywheel config must be a mapping of field: value")
        values.update(loaded)
    for item in overrides or []:
        key, eq, raw = item.partition("=")
        if not eq:
            raise ValueError(f"override {item!r} must look like field=value")
        values[key.strip().replace("-", "_")] = yaml.safe_load(raw)
    known = {f.name for f in dataclasses.fields(FlywheelConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown flywheel field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return FlywheelConfig(**values)


# ----- stage records ---------------------------------------------------------------------------


def round_dir(run_dir: str | os.PathLike[str], t: int) -> Path:
    return Path(run_dir) / f"round_{t:02d}"


def read_stage(run_dir: str | os.PathLike[str], t: int, stage: str) -> dict[str, Any] | None:
    path = round_dir(run_dir, t) / f"{stage}.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())


def write_stage(run_dir: str | os.PathLike[str], t: int, stage: str, data: dict[str, Any]) -> None:
    """Mark a stage finished: its record is written to a temporary file and renamed into place,
    so a killed process leaves either no record or a whole one."""
    d = round_dir(run_dir, t)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".{stage}.json.tmp"
    tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, d / f"{stage}.json")


# ----- adapters: one small function per external component --------------------------------------


def model_spec(cfg: FlywheelConfig, model_dir: str, temperature: float) -> str:
    return f"{cfg.backend}:{model_dir},temperature={temperature},max_tokens={cfg.max_tokens},seed={cfg.seed}"


def rollout_into(cfg: FlywheelConfig, policy: str, out: Path, n: int, group: int, seed: int) -> float:
    """Roll ``policy`` out into ``out`` (resuming a partial file); returns the wall seconds."""
    from agentgym.rollout import run_rollouts

    t0 = time.perf_counter()
    run_rollouts(
        cfg.env,
        policy,
        n=n,
        group=group,
        seed=seed,
        concurrency=cfg.concurrency,
        out=str(out),
        resume=True,
        env_kwargs=dict(cfg.env_kwargs),
        progress=sys.stderr.isatty(),
    )
    return time.perf_counter() - t0


def train_tokens(train_dir: Path) -> int:
    """Agent tokens the trainers logged in ``metrics.jsonl`` files under ``train_dir``."""
    from agentgym.data.report import read_metrics

    total = 0
    for path in sorted(train_dir.rglob("metrics.jsonl")):
        for r in read_metrics(path):
            if "event" not in r:
                total += int(r.get("agent_tokens") or r.get("train_tokens") or r.get("tokens") or 0)
    return total


def train_sft_stage(cfg: FlywheelConfig, model: str, data: list[str], out: Path, steps: int) -> str:
    from agentgym.trainers.sft import SFTConfig, train_sft

    summary = train_sft(
        SFTConfig(
            model=model,
            data=data,
            output_dir=str(out),
            max_steps=steps,
            batch_size=cfg.batch_size,
            micro_batch_size=cfg.batch_size,
            learning_rate=cfg.learning_rate,
            lr_scheduler=cfg.lr_scheduler,
            warmup_steps=steps // 10,
            seed=cfg.seed,
            quiet=True,
        )
    )
    return summary["model_dir"]


def train_dpo_stage(cfg: FlywheelConfig, model: str, raw: Path, out: Path) -> str | None:
    """DPO on pairs from one round's raw samples; None when the samples give no pair."""
    from agentgym.data.export import preference_pairs
    from agentgym.trainers.config import DPOConfig
    from agentgym.trainers.dpo import train_dpo

    if not preference_pairs([r for _, r in iter_jsonl(raw, errors="skip")]):
        return None
    summary = train_dpo(
        DPOConfig(
            model=model,
            data=[str(raw)],
            output_dir=str(out),
            max_steps=cfg.rl_steps,
            batch_size=cfg.batch_size,
            micro_batch_size=cfg.batch_size,
            learning_rate=cfg.learning_rate,
            seed=cfg.seed,
            quiet=True,
        )
    )
    return summary["model_dir"]


def train_grpo_stage(cfg: FlywheelConfig, model: str, out: Path, seed: int) -> str:
    """Online GRPO on the env: ``samples_per_task`` rollouts per task as the group."""
    from agentgym.trainers.config import GRPOConfig
    from agentgym.trainers.grpo import train_grpo

    summary = train_grpo(
        GRPOConfig(
            model=model,
            env=cfg.env,
            env_kwargs=dict(cfg.env_kwargs),
            output_dir=str(out),
            sampler=cfg.backend,
            num_tasks=cfg.tasks_per_round,
            tasks_per_step=min(4, cfg.tasks_per_round),
            group_size=max(2, cfg.samples_per_task),
            temperature=cfg.temperature,
            max_tokens=cfg.max_tokens,
            max_steps=cfg.rl_steps,
            batch_size=cfg.batch_size,
            micro_batch_size=cfg.batch_size,
            learning_rate=cfg.learning_rate,
            seed=seed,
            quiet=True,
        )
    )
    return summary["model_dir"]


# ----- the loop ----------------------------------------------------------------------------------


def evaluate(cfg: FlywheelConfig, model: str, out: Path) -> dict[str, Any]:
    seconds = rollout_into(cfg, model_spec(cfg, model, 0.0), out, n=cfg.eval_tasks, group=1, seed=EVAL_SEED)
    s = file_stats(out, cfg.min_score)
    return {
        "model": model,
        "file": str(out),
        "p": s.pass_rate,
        "passed": s.passed,
        "evidence": s.evidence,
        "statuses": s.statuses,
        "seconds": round(seconds, 3),
    }


def starting_model(cfg: FlywheelConfig) -> str:
    if cfg.model != "tiny":
        return cfg.model
    path = Path(cfg.run_dir) / "model0"
    if not (path / "config.json").exists():
        from agentgym.policies.tiny import build_tiny_model

        build_tiny_model(path, seed=cfg.seed)
    return str(path)


def run_round(cfg: FlywheelConfig, t: int, model: str, kept_so_far: list[str]) -> str:
    """Run the unfinished stages of round t; returns the model it ends with."""
    d = round_dir(cfg.run_dir, t)
    d.mkdir(parents=True, exist_ok=True)
    gen = cfg.generator(t)
    raw, kept = d / "raw.jsonl", d / "kept.jsonl"
    if read_stage(cfg.run_dir, t, "generate") is None:
        policy = model_spec(cfg, model, cfg.temperature) if gen == "model" else gen
        _say(f"round {t}: generating {cfg.samples_per_task} x {cfg.tasks_per_round} samples with {policy}")
        seconds = rollout_into(cfg, policy, raw, cfg.tasks_per_round, cfg.samples_per_task, cfg.seed + t)
        stats = file_stats(raw, cfg.min_score).to_dict()
        write_stage(
            cfg.run_dir,
            t,
            "generate",
            {"generator": gen, "policy": policy, "file": str(raw), "seconds": round(seconds, 3), **stats},
        )
        _refresh(cfg)
    if read_stage(cfg.run_dir, t, "filter") is None:
        t0 = time.perf_counter()
        _, report = filter_file(raw, kept, min_score=cfg.min_score, dedup=True)
        write_stage(
            cfg.run_dir,
            t,
            "filter",
            {
                "file": str(kept),
                "kept": report.kept,
                "total": report.total,
                "malformed": len(report.malformed),
                "seconds": round(time.perf_counter() - t0, 3),
            },
        )
        _refresh(cfg)
    train = read_stage(cfg.run_dir, t, "train")
    if train is None:
        t0 = time.perf_counter()
        data = [*kept_so_far, str(kept)] if cfg.cumulative else [str(kept)]
        data = [p for p in data if file_stats(p, cfg.min_score).passed > 0]
        new_model, stages = model, []
        if data:
            _say(f"round {t}: SFT for {cfg.sft_steps} steps on {', '.join(data)}")
            new_model = train_sft_stage(cfg, model, data, d / "train" / "sft", cfg.sft_steps)
            stages.append("sft")
        if cfg.rl == "dpo":
            _say(f"round {t}: DPO for {cfg.rl_steps} steps on pairs from {raw}")
            out = train_dpo_stage(cfg, new_model, raw, d / "train" / "dpo")
            if out is not None:
                new_model = out
                stages.append("dpo")
        elif cfg.rl == "grpo":
            _say(f"round {t}: GRPO for {cfg.rl_steps} steps on {cfg.env}")
            new_model = train_grpo_stage(cfg, new_model, d / "train" / "grpo", cfg.seed + t)
            stages.append("grpo")
        train = {
            "model_in": model,
            "model": new_model,
            "data": data,
            "stages": stages,
            "tokens": train_tokens(d / "train") if (d / "train").exists() else 0,
            "seconds": round(time.perf_counter() - t0, 3),
        }
        write_stage(cfg.run_dir, t, "train", train)
        _refresh(cfg)
    if read_stage(cfg.run_dir, t, "evaluate") is None:
        _say(f"round {t}: evaluating {train['model']} on {cfg.eval_tasks} held-out tasks")
        write_stage(cfg.run_dir, t, "evaluate", evaluate(cfg, train["model"], d / "eval.jsonl"))
        _refresh(cfg)
    return train["model"]


def run_flywheel(cfg: FlywheelConfig) -> dict[str, Any]:
    """Run (or resume) every round; returns the report (also in ``run_dir/report.json``)."""
    run = Path(cfg.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    cfg_path = run / "flywheel.json"
    current = dataclasses.asdict(cfg)
    if cfg_path.exists():
        previous = json.loads(cfg_path.read_text())
        changed = {k for k in current if k not in ("rounds",) and previous.get(k) != current[k]}
        if changed:
            raise ValueError(
                f"{run} holds a flywheel run with other settings ({', '.join(sorted(changed))}); "
                "use a new run_dir, or the same settings to resume (only rounds may grow)"
            )
    cfg_path.write_text(json.dumps(current, indent=2) + "\n")
    model = starting_model(cfg)
    if read_stage(run, 0, "evaluate") is None:
        _say(f"round 0: evaluating the starting model {model}")
        write_stage(run, 0, "evaluate", evaluate(cfg, model, round_dir(run, 0) / "eval.jsonl"))
        _refresh(cfg)
    kept: list[str] = []
    for t in range(1, cfg.rounds + 1):
        model = run_round(cfg, t, model, kept)
        kept.append(str(round_dir(run, t) / "kept.jsonl"))
    return _refresh(cfg)


def collect_report(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The flywheel report, rebuilt from the stage records on disk (finished or running)."""
    run = Path(run_dir)
    cfg = json.loads((run / "flywheel.json").read_text())
    base = read_stage(run, 0, "evaluate")
    report: dict[str, Any] = {
        "env": cfg["env"],
        "run_dir": str(run),
        "config": cfg,
        "baseline": base,
        "rounds": [],
    }
    prev = base
    t = 1
    while round_dir(run, t).exists():
        st = {s: read_stage(run, t, s) for s in STAGES}
        gen, filt, train, ev = st["generate"], st["filter"], st["train"], st["evaluate"]
        row: dict[str, Any] = {
            "round": t,
            "generator": (gen or {}).get("generator", cfg["generators"][min(t, len(cfg["generators"])) - 1]),
            "complete": all(st.values()),
            "generate": gen,
            "filter": filt,
            "train": train,
            "evaluate": ev,
        }
        if gen and filt:
            row["kept"] = filt["kept"]
            row["yield"] = filt["kept"] / gen["samples"] if gen["samples"] else None
            row["passes_per_kept"] = gen["samples"] / filt["kept"] if filt["kept"] else None
            row["seconds_per_kept"] = gen["seconds"] / filt["kept"] if filt["kept"] else None
        if ev:
            row["p"] = ev["p"]
            if prev:
                row["p_prev"] = prev["p"]
                row["g"], note = odds_multiplier(prev["p"], ev["p"])
                if note:
                    row["g_note"] = note
                row["g_smoothed"] = smoothed_multiplier(
                    prev["passed"], prev["evidence"], ev["passed"], ev["evidence"]
                )
            prev = ev
        row["tokens"] = ((gen or {}).get("sampled_tokens") or 0) + ((train or {}).get("tokens") or 0)
        row["wall_s"] = sum((x or {}).get("seconds", 0.0) for x in st.values())
        report["rounds"].append(row)
        t += 1
    return report


def _refresh(cfg: FlywheelConfig) -> dict[str, Any]:
    report = collect_report(cfg.run_dir)
    path = Path(cfg.run_dir) / "report.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)
    plot_flywheel(report, Path(cfg.run_dir) / "plots")
    return report


def _say(msg: str) -> None:
    print(f"[flywheel {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

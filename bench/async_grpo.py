"""Asynchronous GRPO against synchronous: wall time to a held-out pass rate on CPU.

    python bench/async_grpo.py [--arms k0,k1,k2,k0r2] [--seeds 0,1,2] [--steps 48] [--model SFT_DIR]

The recipe (the tiny model, as ``tests/trainers/test_online.py`` trains it): the tiny model is
SFT-ed on scripted calculator demonstrations (or ``--model`` names such a model), then GRPO runs
from it on ``toy/calculator-v0`` with the vLLM engine as the sampler (its own process, so that
sampling and training can overlap), once per arm and seed, each run in a fresh process. An arm
``kK`` runs with ``max_staleness`` K (``k0``: the synchronous loop); ``kKrN`` adds dynamic
sampling with ``max_refills`` N.
Every ``--eval-every`` steps the run saves a checkpoint; after the run each checkpoint's weights
are evaluated greedily on ``--eval-tasks`` held-out tasks (not counted in the run's time). The
elapsed time of each checkpoint's step comes from the run's ``metrics.jsonl``.

Prints one JSON object: per run, the wall time of every step and of the whole run, the
held-out pass rate at each checkpoint, and ``time_to_target`` / ``steps_to_target``: the
elapsed seconds and the step of the first checkpoint whose held-out pass rate reaches
``--target`` (default: the best pass rate every synchronous run reached at a checkpoint after
the start); per arm, the medians.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ENV = "toy/calculator-v0"


def _sft(root: Path, steps: int) -> str:
    """The tiny model after ``steps`` of the tests' SFT recipe (128 scripted demos, batch 16, lr
    3e-3); at 200 steps it passes about a third of the held-out tasks, leaving GRPO room."""
    from agentgym.policies.tiny import build_tiny_model
    from agentgym.trainers import SFTConfig, train_sft

    from agentgym.rollout import run_rollouts
    from agentgym.types import write_jsonl

    base = build_tiny_model(root / "tiny", seed=0)
    demos = run_rollouts(ENV, "scripted", n=128, seed=0, env_kwargs={"difficulty": 1}, progress=False)
    write_jsonl(root / "demos.jsonl", demos)
    cfg = SFTConfig(
        model=str(base),
        data=[str(root / "demos.jsonl")],
        output_dir=str(root / "sft"),
        max_steps=steps,
        batch_size=16,
        micro_batch_size=16,
        learning_rate=3e-3,
        seed=0,
        quiet=True,
    )
    return train_sft(cfg)["model_dir"]


def _grpo(
    model: str,
    out: str,
    staleness: int,
    refills: int,
    seed: int,
    steps: int,
    every: int,
    pool: list[str],
    lr: float,
) -> None:
    from agentgym.trainers import GRPOConfig, train_grpo

    cfg = GRPOConfig(
        model=model,
        env=ENV,
        env_kwargs={"difficulty": 1},
        task_ids=pool,
        tasks_per_step=4,
        group_size=4,
        max_steps=steps,
        batch_size=16,
        micro_batch_size=16,
        learning_rate=lr,
        sampler="vllm",
        enforce_eager=True,
        temperature=1.0,
        max_tokens=128,
        max_length=1024,
        max_staleness=staleness,
        max_refills=refills,
        seed=seed,
        save_every=every,
        output_dir=out,
        quiet=True,
    )
    train_grpo(cfg)


def _held_out(model_dir: str, checkpoint: Path, tasks: list[str]) -> float:
    """Greedy pass rate of the checkpoint's weights on the held-out tasks (hf)."""
    import torch
    from agentgym.policies.hf import HFGenerator
    from agentgym.policies.llm import LLMPolicy
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agentgym.policy import SamplingParams
    from agentgym.rollout import run_rollouts

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    [weights] = list(checkpoint.glob("model*.safetensors"))
    missing, unexpected = model.load_state_dict(load_file(str(weights)), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:  # a tied head is saved once
        raise RuntimeError(f"{checkpoint}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    tok = AutoTokenizer.from_pretrained(model_dir)
    policy = LLMPolicy(
        HFGenerator(model, tok, max_batch=32), tok, SamplingParams(temperature=0.0, max_tokens=128)
    )
    trajs = run_rollouts(
        ENV,
        policy,
        n=len(tasks),
        task_ids=tasks,
        env_kwargs={"difficulty": 1},
        concurrency=32,
        progress=False,
    )
    return sum(t.score >= 1.0 for t in trajs) / len(trajs)


def _tasks(n_pool: int, n_eval: int) -> tuple[list[str], list[str]]:
    from agentgym.registry import make

    env = make(ENV, difficulty=1)
    try:
        ids = env.task_ids(n_pool + n_eval, 12345)
    finally:
        env.close()
    return ids[:n_pool], ids[n_pool:]


def one_run(model: str, out: str, arm: str, seed: int, args, pool, held_out) -> dict:
    staleness, refills = _arm(arm)
    t0 = time.perf_counter()
    ctx = mp.get_context("spawn")
    p = ctx.Process(
        target=_grpo,
        args=(model, out, staleness, refills, seed, args.steps, args.eval_every, pool, args.lr),
    )
    p.start()
    p.join()
    if p.exitcode != 0:
        raise RuntimeError(f"GRPO run {out} failed (exit {p.exitcode})")
    wall = time.perf_counter() - t0
    rows = [json.loads(x) for x in Path(out, "metrics.jsonl").read_text().splitlines()]
    steps = {r["step"]: r for r in rows if "mean_score" in r}
    points = [{"step": 0, "elapsed_s": 0.0, "pass_rate": _held_out(model, Path(model), held_out)}]
    for ckpt in sorted(Path(out, "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1])):
        step = int(ckpt.name.split("-")[1])
        points.append(
            {
                "step": step,
                "elapsed_s": steps[step]["elapsed_s"],
                "pass_rate": _held_out(model, ckpt, held_out),
            }
        )
    return {
        "arm": arm,
        "staleness": staleness,
        "refills": [r.get("refills", 0) for r in steps.values()],
        "seed": seed,
        "process_s": round(wall, 1),
        "train_s": steps[max(steps)]["elapsed_s"],
        "step_s": [r.get("rollout_s", 0) + r.get("update_s", 0) for r in steps.values()],
        "wait_s": [r.get("wait_s") for r in steps.values()],
        "train_pass_rate": [r["pass_rate"] for r in steps.values()],
        "held_out": points,
    }


def _arm(arm: str) -> tuple[int, int]:
    """``(max_staleness, max_refills)`` of an arm name: ``k1`` -> (1, 0), ``k0r2`` -> (0, 2)."""
    m = re.fullmatch(r"k(\d+)(?:r(\d+))?", arm)
    if m is None:
        raise SystemExit(f"--arms: {arm!r} is not kK or kKrN (e.g. k0, k2, k0r2)")
    return int(m.group(1)), int(m.group(2) or 0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arms", default="k0,k1,k2", help="kK: max_staleness K; kKrN: and max_refills N")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=48)
    p.add_argument("--eval-every", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-4, help="GRPO learning rate")
    p.add_argument("--sft-steps", type=int, default=400)
    p.add_argument("--eval-tasks", type=int, default=64)
    p.add_argument("--pool", type=int, default=64, help="GRPO task pool size")
    p.add_argument("--model", help="an SFT-ed tiny model (default: train one, ~5 min)")
    p.add_argument("--target", type=float, help="held-out pass rate to time (default: see the docstring)")
    p.add_argument("--work", default=None, help="work directory (default: a temporary one)")
    args = p.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    work = Path(args.work or tempfile.mkdtemp(prefix="agentgym-async-grpo-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model = args.model or _sft(work, args.sft_steps)
    sft_s = time.perf_counter() - t0
    pool, held_out = _tasks(args.pool, args.eval_tasks)
    runs = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for arm in args.arms.split(","):
            run = one_run(model, str(work / f"{arm}-seed{seed}"), arm, seed, args, pool, held_out)
            print(json.dumps(run), file=sys.stderr, flush=True)
            runs.append(run)
    sync_best = [max(pt["pass_rate"] for pt in r["held_out"][1:]) for r in runs if r["arm"] == "k0"]
    target = args.target if args.target is not None else (min(sync_best) if sync_best else 1.0)
    for r in runs:
        hit = [pt for pt in r["held_out"][1:] if pt["pass_rate"] >= target]
        r["time_to_target"] = hit[0]["elapsed_s"] if hit else None
        r["steps_to_target"] = hit[0]["step"] if hit else None
    summary = {}
    for arm in dict.fromkeys(r["arm"] for r in runs):
        mine = [r for r in runs if r["arm"] == arm]
        reached = [r["time_to_target"] for r in mine if r["time_to_target"] is not None]
        steps = [r["steps_to_target"] for r in mine if r["steps_to_target"] is not None]
        summary[arm] = {
            "train_s": [r["train_s"] for r in mine],
            "train_s_median": statistics.median(r["train_s"] for r in mine),
            "time_to_target": [r["time_to_target"] for r in mine],
            "time_to_target_median": statistics.median(reached) if reached else None,
            "steps_to_target_median": statistics.median(steps) if steps else None,
            "reached": f"{len(reached)}/{len(mine)}",
            "final_held_out": [r["held_out"][-1]["pass_rate"] for r in mine],
        }
    print(
        json.dumps(
            {
                "target": target,
                "sft_s": round(sft_s, 1),
                "model": model,
                "by_arm": summary,
                "runs": runs,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()

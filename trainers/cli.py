"""``agentgym train sft|grpo|distill|dpo|online-dpo|rm``: every config field is a flag, and ``--config FILE`` reads YAML.

    agentgym train sft --model /tmp/tiny --data demos.jsonl --max-steps 50 --output-dir runs/sft
    agentgym train grpo --config grpo.yaml --max-steps 20
    accelerate launch --config_file trainers/configs/ddp.yaml -m agentgym train dpo --config dpo.yaml

Metrics are printed as JSON lines (and appended to ``OUTPUT_DIR/metrics.jsonl``); the last line
is the run's summary. Nothing heavy is imported until a command runs.
"""

from __future__ import annotations

import argparse
import importlib
import json

TRAINERS = {
    "sft": ("agentgym.trainers.sft", "SFTConfig", "train_sft", "supervised fine-tuning on agent tokens"),
    "grpo": (
        "agentgym.trainers.grpo",
        "GRPOConfig",
        "train_grpo",
        "online GRPO (vLLM engine, vLLM server or hf sampler)",
    ),
    "distill": (
        "agentgym.trainers.distill",
        "DistillConfig",
        "train_distill",
        "on-policy distillation: the student's rollouts, scored per token by a frozen teacher (reverse KL)",
    ),
    "dpo": (
        "agentgym.trainers.dpo",
        "DPOConfig",
        "train_dpo",
        "DPO on pairs of rollouts of the same task, from rollout files",
    ),
    "rm": (
        "agentgym.trainers.rm",
        "RMConfig",
        "train_rm",
        "a Bradley-Terry reward model on pairs of rollouts of the same task (use it with --verifier rm:DIR)",
    ),
    "online-dpo": (
        "agentgym.trainers.dpo",
        "OnlineDPOConfig",
        "train_online_dpo",
        "online DPO: each round samples pairs from the current policy on an env",
    ),
}


def add_commands(subparsers) -> None:
    train = subparsers.add_parser(
        "train", help="train a policy (sft, grpo, distill, dpo, online-dpo) or a reward model (rm)"
    )
    sub = train.add_subparsers(dest="trainer", metavar="TRAINER")
    sub.required = True
    for name, (module, _cls, _fn, help_text) in TRAINERS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        _add_flags(p, module, TRAINERS[name][1])
        p.set_defaults(func=_run, trainer=name)


def _add_flags(parser: argparse.ArgumentParser, module: str, cls_name: str) -> None:
    from agentgym.trainers import config

    config.add_config_flags(parser, getattr(config, cls_name))


def _run(args: argparse.Namespace) -> int:
    if getattr(args, "import_error", None):
        raise ImportError(
            f"training needs the train extra ({args.import_error}); pip install 'agentgym[train]'"
        )
    from agentgym.trainers.config import config_from_args

    module, cls_name, fn_name, _ = TRAINERS[args.trainer]
    mod = importlib.import_module(module)
    cfg = config_from_args(getattr(mod, cls_name), args)
    summary = getattr(mod, fn_name)(cfg)
    print(json.dumps({"summary": summary}))
    return 0

"""Trainers: SFT warm start, online trajectory GRPO, on-policy distillation from a teacher, DPO on
trajectory pairs (offline or online), and a Bradley-Terry reward model on the same pairs.

Python entry points (each takes its config dataclass and returns a summary dict)::

    from agentgym.trainers import SFTConfig, train_sft, GRPOConfig, train_grpo, DPOConfig, train_dpo
    from agentgym.trainers import OnlineDPOConfig, train_online_dpo, DistillConfig, train_distill
    from agentgym.trainers import RMConfig, train_rm

Command line: ``agentgym train sft|grpo|distill|dpo|online-dpo|rm --help``. Importing this package stays
light; torch is imported when a trainer function is first used.
"""

from agentgym.trainers.config import (
    DistillConfig,
    DPOConfig,
    GRPOConfig,
    OnlineDPOConfig,
    RMConfig,
    SFTConfig,
    load_config,
)

_LAZY = {
    "train_sft": "agentgym.trainers.sft",
    "train_grpo": "agentgym.trainers.grpo",
    "train_distill": "agentgym.trainers.distill",
    "train_dpo": "agentgym.trainers.dpo",
    "train_online_dpo": "agentgym.trainers.dpo",
    "train_rm": "agentgym.trainers.rm",
}

__all__ = [
    "DistillConfig",
    "DPOConfig",
    "GRPOConfig",
    "OnlineDPOConfig",
    "RMConfig",
    "SFTConfig",
    "load_config",
    "train_distill",
    "train_dpo",
    "train_grpo",
    "train_online_dpo",
    "train_rm",
    "train_sft",
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'agentgym.trainers' has no attribute {name!r}")

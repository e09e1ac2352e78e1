"""Trainers: SFT, GRPO, DPO."""

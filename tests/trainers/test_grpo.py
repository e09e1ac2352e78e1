"""GRPO: who enters a group, weight pushes that fail loudly, and the online loop on the toy env."""

import threading

import pytest
import torch
from agentgym.trainers.grpo import make_groups
from agentgym.trainers.sampler import push_weights

from agentgym.types import Trajectory


def _t(tid, score, status="ok", tokens=True):
    ids = [1, 2, 3] if tokens else None
    return Trajectory(
        env="e", task_id=tid, score=score, status=status, tokens=ids, mask=[0, 1, 1] if tokens else None
    )


def test_groups_exclude_failures_and_drop_zero_variance():
    trajs = [
        _t("a", 1.0),
        _t("a", 0.0),
        _t("a", 0.0, "env_error"),
        _t("a", 1.0, "timeout"),  # failures never count
        _t("b", 1.0),
        _t("b", 1.0),
        _t("b", 0.0, "policy_error"),  # zero variance once failures are out
        _t("c", 0.0, "truncated"),
        _t("c", 1.0),
        _t("c", 1.0, tokens=False),  # no token record: cannot train
    ]
    members, counts = make_groups(trajs, "std")
    assert counts == {"excluded_status": 3, "excluded_tokens": 1, "dropped_groups": 1, "groups": 2}
    adv = {(t.task_id, t.score): a for t, a in members}
    assert adv[("a", 1.0)] == pytest.approx(1.0, abs=1e-5) and adv[("a", 0.0)] == pytest.approx(
        -1.0, abs=1e-5
    )
    assert adv[("c", 0.0)] == pytest.approx(-1.0, abs=1e-5)
    assert all(t.task_id != "b" for t, _ in members)


class _SlowGenerator:
    """A sampler whose weight update never finishes in time (a hung engine)."""

    def __init__(self):
        self.release = threading.Event()

    def update_weights(self, weights, timeout=300.0):
        self.release.wait(5)


class _Policy:
    def __init__(self, gen):
        self.generator = gen


def test_a_hung_weight_push_raises_within_its_timeout():
    gen = _SlowGenerator()
    with pytest.raises(TimeoutError, match="push_timeout"):
        push_weights(_Policy(gen), {"w": torch.zeros(1)}, timeout=0.2)
    gen.release.set()

"""Best-of-K sampling under the env's verifier (rejection sampling).

Each of N tasks gets K samples from the policy; every sample is appended to the raw JSONL file
with its score, status and sample index, whatever it scored. ``agentgym filter --dedup`` then
keeps the best passing sample per task. The statistics are always computed from the file on
disk, so a resumed run reports the same numbers as an uninterrupted one.

From the command line::

    agentgym generate sample --env toy/calculator-v0 --policy hf:/tmp/tiny --n-per-task 8 --tasks 50 --out raw.jsonl
"""

from __future__ import annotations

import os
import time
from typing import Any

from agentgym.data.filter import SampleStats, check_min_score, sample_stats
from agentgym.types import iter_jsonl

__all__ = ["SampleStats", "file_stats", "generate_samples", "sample_stats"]


def file_stats(path: str | os.PathLike[str], min_score: float = 1.0) -> SampleStats:
    """``sample_stats`` of a JSONL file (malformed lines are reported and skipped)."""
    return sample_stats((r for _, r in iter_jsonl(path, errors="skip")), min_score)


def generate_samples(
    env_id: str,
    policy: Any,
    *,
    n_per_task: int,
    tasks: int,
    out: str | os.PathLike[str],
    seed: int = 0,
    concurrency: int = 8,
    env_kwargs: dict[str, Any] | None = None,
    max_turns: int | None = None,
    min_score: float = 1.0,
    resume: bool = False,
    progress: bool | None = None,
    run: Any = None,
) -> tuple[SampleStats, float]:
    """Sample ``n_per_task`` episodes on each of ``tasks`` tasks into ``out``.

    ``run`` replaces ``agentgym.rollout.run_rollouts`` (e.g. ``agentgym.ray_runner.rollout_ray``
    with an address bound: the episodes then run on a Ray cluster). Returns the statistics of the
    file on disk and the wall time of this call in seconds.
    """
    if n_per_task < 1 or tasks < 1:
        raise ValueError(f"need --n-per-task >= 1 and --tasks >= 1, got {n_per_task} and {tasks}")
    min_score = check_min_score(min_score)
    from agentgym.rollout import run_rollouts

    t0 = time.perf_counter()
    (run or run_rollouts)(
        env_id,
        policy,
        n=tasks,
        group=n_per_task,
        concurrency=concurrency,
        seed=seed,
        out=os.fspath(out),
        resume=resume,
        env_kwargs=env_kwargs,
        max_turns=max_turns,
        progress=progress,
    )
    return file_stats(out, min_score), time.perf_counter() - t0

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
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from agentgym.data.filter import Record, check_min_score
from agentgym.types import EVIDENCE_STATUSES, iter_jsonl, passes


@dataclass
class SampleStats:
    """What a sampling run produced, counted from its records."""

    samples: int = 0
    """records in the file (every status)"""
    evidence: int = 0
    """samples whose status is ok or truncated"""
    passed: int = 0
    """samples with status ok and score >= min_score"""
    tasks: int = 0
    tasks_passed: int = 0
    """tasks with at least one passing sample (what best-of-K keeps)"""
    statuses: dict[str, int] = field(default_factory=dict)
    sampled_tokens: int = 0
    """tokens the policy sampled (mask 1), over all samples that carry a token record"""
    min_score: float = 1.0

    @property
    def pass_rate(self) -> float | None:
        """per-sample pass rate among evidence samples (pass@1 estimate)"""
        return self.passed / self.evidence if self.evidence else None

    @property
    def best_of_k_rate(self) -> float | None:
        """fraction of tasks with at least one passing sample"""
        return self.tasks_passed / self.tasks if self.tasks else None

    @property
    def yield_(self) -> float | None:
        """kept trajectories (one per solved task) per generated sample"""
        return self.tasks_passed / self.samples if self.samples else None

    @property
    def passes_per_kept(self) -> float | None:
        """generation passes (episodes) spent per kept trajectory"""
        return self.samples / self.tasks_passed if self.tasks_passed else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(
            pass_rate=self.pass_rate,
            best_of_k_rate=self.best_of_k_rate,
            yield_=self.yield_,
            passes_per_kept=self.passes_per_kept,
        )
        d["yield"] = d.pop("yield_")
        return d


def sample_stats(records: Iterable[Record], min_score: float = 1.0) -> SampleStats:
    """Count samples, passes, solved tasks, statuses and sampled tokens.

    >>> recs = [{"env": "e", "task_id": t, "score": s, "status": st, "messages": []}
    ...         for t, s, st in [("a", 1.0, "ok"), ("a", 0.0, "ok"), ("b", 0.0, "timeout")]]
    >>> s = sample_stats(recs)
    >>> s.samples, s.evidence, s.passed, s.tasks, s.tasks_passed, s.pass_rate
    (3, 2, 1, 2, 1, 0.5)
    """
    s = SampleStats(min_score=min_score)
    solved: dict[tuple[str, str], bool] = defaultdict(bool)
    for r in records:
        key = (str(r["env"]), str(r["task_id"]))
        s.samples += 1
        s.statuses[r["status"]] = s.statuses.get(r["status"], 0) + 1
        ok = passes(r, min_score)
        solved[key] |= ok
        if r["status"] in EVIDENCE_STATUSES:
            s.evidence += 1
        s.passed += ok
        tok = r.get("tokens") or {}
        if tok.get("mask"):
            s.sampled_tokens += int(sum(tok["mask"]))
    s.tasks, s.tasks_passed = len(solved), sum(solved.values())
    return s


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
) -> tuple[SampleStats, float]:
    """Sample ``n_per_task`` episodes on each of ``tasks`` tasks into ``out``.

    Returns the statistics of the file on disk and the wall time of this call in seconds.
    """
    if n_per_task < 1 or tasks < 1:
        raise ValueError(f"need --n-per-task >= 1 and --tasks >= 1, got {n_per_task} and {tasks}")
    min_score = check_min_score(min_score)
    from agentgym.rollout import run_rollouts

    t0 = time.perf_counter()
    run_rollouts(
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

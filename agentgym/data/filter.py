"""Quality filtering of trajectory records: keep what passed the verifier, optionally the best
record per task.

``filter_quality`` keeps records whose status is ``ok`` and whose score is at least
``min_score``. With ``dedup`` it keeps exactly one record per ``(env, task_id)``: the one with the
HIGHEST score. Ties are broken by a key that does not depend on input order (fewer assistant turns
first, then the smaller canonical JSON text), so shuffling a file never changes what is kept.

From the command line::

    agentgym filter raw.jsonl --min-score 1.0 --dedup --out kept.jsonl

>>> recs = [
...     {"messages": [], "env": "e", "task_id": "t", "score": 0.5, "status": "ok"},
...     {"messages": [], "env": "e", "task_id": "t", "score": 0.9, "status": "ok"},
...     {"messages": [], "env": "e", "task_id": "t", "score": 1.0, "status": "env_error"},
... ]
>>> [r["score"] for r in filter_quality(recs, min_score=0.5, dedup=True)]
[0.9]
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from agentgym.types import EVIDENCE_STATUSES, Trajectory, dump_record, iter_jsonl

Record = dict[str, Any]


def _as_record(r: Record | Trajectory) -> Record:
    return r.to_record() if isinstance(r, Trajectory) else r


def passes(record: Record, min_score: float) -> bool:
    """True when the record's status is ``ok`` and its score is at least ``min_score``.

    >>> passes({"status": "ok", "score": 1.0}, 1.0), passes({"status": "truncated", "score": 1.0}, 0.0)
    (True, False)
    """
    return record.get("status") == "ok" and float(record.get("score", 0.0)) >= min_score - 1e-12


def num_turns(record: Record) -> int:
    return sum(1 for m in record.get("messages", []) if isinstance(m, dict) and m.get("role") == "assistant")


def rank_key(record: Record) -> tuple[float, int, str]:
    """Sort key under which the best record of a task comes first: the highest score, then the
    fewest assistant turns, then the smallest canonical JSON (a total order, independent of the
    order records arrive in)."""
    canonical = json.dumps(record, sort_keys=True, ensure_ascii=False, default=str)
    return (-float(record.get("score", 0.0)), num_turns(record), canonical)


def filter_quality(
    records: Iterable[Record | Trajectory], min_score: float = 1.0, dedup: bool = False
) -> list[Record]:
    """Keep records with status ``ok`` and ``score >= min_score``.

    Args:
        records: JSONL-schema dicts or ``Trajectory`` objects.
        min_score: the lowest score kept.
        dedup: keep exactly one record per ``(env, task_id)``, the highest-scoring (ties broken
            by ``rank_key``).

    Returns:
        The kept records as dicts, in the order they first appeared.
    """
    kept = [(i, r) for i, r in enumerate(map(_as_record, records)) if passes(r, min_score)]
    if not dedup:
        return [r for _, r in kept]
    best: dict[tuple[str, str], tuple[int, Record]] = {}
    first: dict[tuple[str, str], int] = {}
    for i, r in kept:
        key = (str(r["env"]), str(r["task_id"]))
        first.setdefault(key, i)
        if key not in best or rank_key(r) < rank_key(best[key][1]):
            best[key] = (i, r)
    return [best[k][1] for k in sorted(best, key=first.__getitem__)]


@dataclass
class EnvStats:
    """Counts for one env id in a filter run."""

    total: int = 0
    """valid records seen"""
    evidence: int = 0
    """records whose status is ok or truncated (the pass rate's denominator)"""
    passed: int = 0
    """records with status ok and score >= min_score"""
    failures: dict[str, int] = field(default_factory=dict)
    """infrastructure statuses (env_error, policy_error, timeout) and how many of each"""
    tasks: int = 0
    """distinct task ids seen"""
    tasks_passed: int = 0
    """distinct task ids with at least one passing record"""
    kept: int = 0

    @property
    def pass_rate(self) -> float | None:
        return self.passed / self.evidence if self.evidence else None


@dataclass
class FilterReport:
    """What a filter run read, skipped and kept; every number is a count of lines in the input."""

    path: str
    min_score: float
    dedup: bool
    total: int = 0
    """valid records read"""
    kept: int = 0
    malformed: list[tuple[int, str]] = field(default_factory=list)
    """(line number, reason) of each line skipped as malformed"""
    per_env: dict[str, EnvStats] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "min_score": self.min_score,
            "dedup": self.dedup,
            "total": self.total,
            "kept": self.kept,
            "malformed": [{"line": n, "reason": why} for n, why in self.malformed],
            "per_env": {
                env: {
                    "total": s.total,
                    "evidence": s.evidence,
                    "passed": s.passed,
                    "pass_rate": s.pass_rate,
                    "failures": s.failures,
                    "tasks": s.tasks,
                    "tasks_passed": s.tasks_passed,
                    "kept": s.kept,
                }
                for env, s in sorted(self.per_env.items())
            },
        }

    def format(self) -> str:
        lines = [
            f"kept {self.kept} / {self.total} records from {self.path} "
            f"(status ok, score >= {self.min_score:g}{', best per (env, task_id)' if self.dedup else ''})"
        ]
        if self.malformed:
            lines.append(
                f"skipped {len(self.malformed)} malformed line(s): "
                + ", ".join(str(n) for n, _ in self.malformed[:20])
            )
        lines.append(
            f"{'env':<32} {'records':>8} {'passed':>7} {'pass rate':>9} {'tasks':>6} {'solved':>6} {'kept':>6}  failures"
        )
        for env, s in sorted(self.per_env.items()):
            rate = f"{s.pass_rate:.3f}" if s.pass_rate is not None else "-"
            fails = ", ".join(f"{k}={v}" for k, v in sorted(s.failures.items())) or "-"
            lines.append(
                f"{env:<32} {s.total:>8} {s.passed:>7} {rate:>9} {s.tasks:>6} {s.tasks_passed:>6} {s.kept:>6}  {fails}"
            )
        return "\n".join(lines)


def stats_of(records: Iterable[Record], min_score: float) -> dict[str, EnvStats]:
    """Per-env counts (records, evidence, passed, failures, tasks) of an iterable of records."""
    per_env: dict[str, EnvStats] = defaultdict(EnvStats)
    tasks: dict[str, set[str]] = defaultdict(set)
    solved: dict[str, set[str]] = defaultdict(set)
    for r in records:
        env = str(r["env"])
        s = per_env[env]
        s.total += 1
        tasks[env].add(str(r["task_id"]))
        if r["status"] in EVIDENCE_STATUSES:
            s.evidence += 1
        else:
            s.failures[r["status"]] = s.failures.get(r["status"], 0) + 1
        if passes(r, min_score):
            s.passed += 1
            solved[env].add(str(r["task_id"]))
    for env, s in per_env.items():
        s.tasks, s.tasks_passed = len(tasks[env]), len(solved[env])
    return dict(per_env)


def filter_file(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str] | None,
    min_score: float = 1.0,
    dedup: bool = False,
) -> tuple[list[Record], FilterReport]:
    """Filter a JSONL file of trajectories. Malformed lines are recorded in the report with their
    line numbers and skipped; ``out`` (when given) receives the kept records."""
    report = FilterReport(path=os.fspath(path), min_score=min_score, dedup=dedup)
    records = [
        r for _, r in iter_jsonl(path, errors="skip", report=lambda n, why: report.malformed.append((n, why)))
    ]
    kept = filter_quality(records, min_score=min_score, dedup=dedup)
    report.total, report.kept = len(records), len(kept)
    report.per_env = stats_of(records, min_score)
    for r in kept:
        report.per_env[str(r["env"])].kept += 1
    if out is not None:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w", encoding="utf-8") as f:
            for r in kept:
                f.write(dump_record(r))
    return kept, report

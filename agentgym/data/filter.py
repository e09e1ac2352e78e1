"""Quality filtering of trajectory records: keep what passed the verifier, optionally the best
record per task.

``filter_quality`` keeps records whose status is ``ok`` and whose score is at least
``min_score``. With ``dedup`` it keeps exactly one record per ``(env, task_id)``: the one with the
HIGHEST score. Ties are broken by a key that does not depend on input order (fewer assistant turns
first, then the smaller canonical JSON text), so shuffling a file never changes what is kept.

Scores are mostly fractions in [0, 1], and so is ``min_score``: a threshold such as 99 (meant as
99 %) is refused with a message naming 0.99 instead of silently keeping nothing. A rubric's
weighted sum may exceed 1 (correctness 1 + format 0.2 = 1.2); a threshold above 1 is taken when
some record scores above 1, so such records can still be filtered on their full scale. Every record is checked
against the JSONL schema first; a NaN, infinite, missing or non-numeric score, an unknown status or
a missing field is an error that names the record, never a silent keep or drop.

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
import math
import os
import tempfile
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from agentgym.types import (
    EVIDENCE_STATUSES,
    RecordError,
    Trajectory,
    dump_record,
    iter_jsonl,
    passes,
    validate_record,
)

Record = dict[str, Any]


def _as_record(r: Record | Trajectory) -> Record:
    return r.to_record() if isinstance(r, Trajectory) else r


def check_min_score(min_score: Any, top: float = 1.0) -> float:
    """``min_score`` as a float, or a ``ValueError`` saying what to pass instead. ``top`` is the
    highest threshold that makes sense: 1, or the highest score of the records being filtered
    when a rubric's weighted sum goes above 1.

    >>> check_min_score(0.99)
    0.99
    >>> check_min_score(1.1, top=1.2)
    1.1
    >>> check_min_score(99)
    Traceback (most recent call last):
    ...
    ValueError: min_score must be a number in [0, 1] (verifier scores are fractions of 1), got 99; if 99 is a percentage, pass 0.99
    """
    number = isinstance(min_score, int | float) and not isinstance(min_score, bool)
    top = max(1.0, float(top))
    if number and math.isfinite(min_score) and 0.0 <= min_score <= top:
        return float(min_score)
    hint = ""
    if number and 1.0 < min_score <= 100.0:
        hint = f"; if {min_score:g} is a percentage, pass {min_score / 100:g}"
    scale = (
        "[0, 1] (verifier scores are fractions of 1)"
        if top == 1.0
        else f"[0, {top:g}] (the highest score here)"
    )
    raise ValueError(f"min_score must be a number in {scale}, got {min_score!r}{hint}")


def top_score(records: list[Record]) -> float:
    """The highest score among the records (scores are checked finite numbers by then)."""
    return max((float(r["score"]) for r in records), default=1.0)


def num_turns(record: Record) -> int:
    return sum(1 for m in record.get("messages", []) if isinstance(m, dict) and m.get("role") == "assistant")


def rank_key(record: Record) -> tuple[float, int, str]:
    """Sort key under which the best record of a task comes first: the highest score, then the
    fewest assistant turns, then the smallest canonical JSON (a total order, independent of the
    order records arrive in)."""
    canonical = json.dumps(record, sort_keys=True, ensure_ascii=False, default=str)
    return (-float(record.get("score", 0.0)), num_turns(record), canonical)


def _better(a: Record, b: Record) -> bool:
    """True when ``a`` ranks before ``b`` under ``rank_key`` (the canonical text only on a tie)."""
    if float(a["score"]) != float(b["score"]):
        return float(a["score"]) > float(b["score"])
    return rank_key(a) < rank_key(b)


def checked_records(records: Iterable[Record | Trajectory]) -> list[Record]:
    """The records as dicts, each checked against the JSONL schema; the first bad one raises
    ``RecordError`` naming its position, its task and what is wrong."""
    out = []
    for i, r in enumerate(records):
        rec = _as_record(r)
        try:
            validate_record(rec)
        except RecordError as e:
            where = ""
            if isinstance(rec, dict):
                where = f" (env {rec.get('env')!r}, task_id {rec.get('task_id')!r})"
            raise RecordError(
                f"records[{i}]{where}: {e}; fix or drop it (`agentgym filter FILE` skips such lines "
                "and reports their line numbers)"
            ) from None
        out.append(rec)
    return out


def filter_quality(
    records: Iterable[Record | Trajectory], min_score: float = 1.0, dedup: bool = False
) -> list[Record]:
    """Keep records with status ``ok`` and ``score >= min_score``.

    Args:
        records: JSONL-schema dicts or ``Trajectory`` objects. A record that breaks the schema
            (e.g. a NaN, infinite, missing or non-numeric score) raises ``RecordError``.
        min_score: the lowest score kept, a fraction in [0, 1] (99 % is 0.99; 99 is refused), or
            up to the highest score present when rubric scores go above 1.
        dedup: keep exactly one record per ``(env, task_id)``, the highest-scoring (ties broken
            by ``rank_key``).

    Returns:
        The kept records as dicts, in the order their task first appeared.
    """
    checked = checked_records(records)
    return select(checked, check_min_score(min_score, top_score(checked)), dedup)


def select(records: list[Record], min_score: float, dedup: bool) -> list[Record]:
    """``filter_quality`` on records already checked against the schema."""
    kept = [r for r in records if passes(r, min_score)]
    if not dedup:
        return kept
    best: dict[tuple[str, str], Record] = {}
    for r in kept:
        key = (str(r["env"]), str(r["task_id"]))
        if key not in best or _better(r, best[key]):
            best[key] = r
    return list(best.values())


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
    def failures(self) -> dict[str, int]:
        """infrastructure statuses (env_error, policy_error, timeout) and how many of each"""
        return {k: v for k, v in self.statuses.items() if k not in EVIDENCE_STATUSES}

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
    per_env: dict[str, SampleStats] = field(default_factory=dict)
    """the counts of each env id's records"""
    kept_per_env: dict[str, int] = field(default_factory=dict)

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
                    "total": s.samples,
                    "evidence": s.evidence,
                    "passed": s.passed,
                    "pass_rate": s.pass_rate,
                    "failures": s.failures,
                    "tasks": s.tasks,
                    "tasks_passed": s.tasks_passed,
                    "kept": self.kept_per_env.get(env, 0),
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
                f"{env:<32} {s.samples:>8} {s.passed:>7} {rate:>9} {s.tasks:>6} {s.tasks_passed:>6} "
                f"{self.kept_per_env.get(env, 0):>6}  {fails}"
            )
        return "\n".join(lines)


def stats_of(records: Iterable[Record], min_score: float) -> dict[str, SampleStats]:
    """``sample_stats`` of each env id's records."""
    by_env: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        by_env[str(r["env"])].append(r)
    return {env: sample_stats(rs, min_score) for env, rs in by_env.items()}


def write_records(out: str | os.PathLike[str], rows: Iterable[dict[str, Any]]) -> None:
    """Write JSONL rows to ``out`` through a temporary file in the same directory renamed into
    place, so a process killed mid-write leaves the old file (or none), never half a file."""
    out = os.fspath(out)
    d = os.path.dirname(os.path.abspath(out))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=f".{os.path.basename(out)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(dump_record(row))
        os.replace(tmp, out)
    except BaseException:
        os.unlink(tmp)
        raise


def no_records_message(path: str | os.PathLike[str], malformed: list[tuple[int, str]]) -> str:
    """Why a file gave no records: empty, or every line malformed (the first reasons shown)."""
    if not malformed:
        return f"{os.fspath(path)} holds no records (it is empty)"
    shown = "; ".join(f"line {n}: {why}" for n, why in malformed[:3])
    return (
        f"{os.fspath(path)} holds no valid records: all {len(malformed)} non-blank lines are malformed "
        f"({shown}); the input must be JSONL, one trajectory record per line"
    )


def filter_file(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str] | None,
    min_score: float = 1.0,
    dedup: bool = False,
) -> tuple[list[Record], FilterReport]:
    """Filter a JSONL file of trajectories. Malformed lines are recorded in the report with their
    line numbers and skipped; ``out`` (when given) receives the kept records (written whole or
    not at all)."""
    malformed: list[tuple[int, str]] = []
    records = [
        r for _, r in iter_jsonl(path, errors="skip", report=lambda n, why: malformed.append((n, why)))
    ]
    if not records:
        raise ValueError(no_records_message(path, malformed))
    min_score = check_min_score(min_score, top_score(records))
    report = FilterReport(path=os.fspath(path), min_score=min_score, dedup=dedup, malformed=malformed)
    kept = select(records, min_score, dedup)
    report.total, report.kept = len(records), len(kept)
    report.per_env = stats_of(records, min_score)
    for r in kept:
        report.kept_per_env[str(r["env"])] = report.kept_per_env.get(str(r["env"]), 0) + 1
    if out is not None:
        write_records(out, kept)
    return kept, report

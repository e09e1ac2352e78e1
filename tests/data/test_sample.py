"""`agentgym generate sample`: K samples per task, every sample on disk, statistics from the file."""

from __future__ import annotations

import json
import subprocess
import sys

from agentgym.data.sample import file_stats, generate_samples
from agentgym.types import iter_jsonl


def cli(*args):
    p = subprocess.run(
        [sys.executable, "-m", "agentgym.cli", *args], capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 0, p.stderr
    return p


def test_generate_sample_keeps_every_sample_and_counts_from_disk(tmp_path):
    out = tmp_path / "raw.jsonl"
    p = cli(
        "generate",
        "sample",
        "--env",
        "toy/calculator-v0",
        "--policy",
        "random",
        "--n-per-task",
        "4",
        "--tasks",
        "5",
        "--out",
        str(out),
        "--json",
        "--env-kwargs",
        "difficulty=1",
    )
    stats = json.loads(p.stdout)
    recs = [r for _, r in iter_jsonl(out)]
    assert len(recs) == 20
    assert sorted((r["task_id"], r["metadata"]["sample"]) for r in recs) == sorted(
        (f"calc-{i}", s) for i in range(5) for s in range(4)
    )
    passed = [r for r in recs if r["status"] == "ok" and r["score"] >= 1.0]
    solved = {r["task_id"] for r in passed}
    evidence = [r for r in recs if r["status"] in ("ok", "truncated")]
    assert stats["samples"] == 20 and stats["tasks"] == 5
    assert stats["passed"] == len(passed) and stats["tasks_passed"] == len(solved)
    assert stats["pass_rate"] == len(passed) / len(evidence)
    assert stats["yield"] == len(solved) / 20
    assert sum(stats["statuses"].values()) == 20


def test_resume_fills_only_missing_samples(tmp_path):
    out = tmp_path / "raw.jsonl"
    stats, _ = generate_samples(
        "toy/calculator-v0", "scripted", n_per_task=3, tasks=4, out=out, progress=False
    )
    assert (stats.samples, stats.passed, stats.tasks_passed, stats.pass_rate, stats.passes_per_kept) == (
        12,
        12,
        4,
        1.0,
        3.0,
    )
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:7]) + lines[7][:20])  # a run killed mid-write
    stats, _ = generate_samples(
        "toy/calculator-v0", "scripted", n_per_task=3, tasks=4, out=out, resume=True, progress=False
    )
    assert stats.samples == 12 and file_stats(out).to_dict() == stats.to_dict()


def test_a_percentage_threshold_is_refused_before_any_sampling(tmp_path):
    import pytest

    out = tmp_path / "raw.jsonl"
    with pytest.raises(ValueError, match=r"got 95; if 95 is a percentage, pass 0\.95"):
        generate_samples("toy/calculator-v0", "scripted", n_per_task=2, tasks=2, out=out, min_score=95)
    assert not out.exists()

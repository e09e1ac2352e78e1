"""filter_quality keeps the best passing record per task, whatever the input order."""

from __future__ import annotations

import json
import random
import subprocess
import sys

from agentgym.data.filter import filter_file, filter_quality
from agentgym.types import STATUSES, Trajectory


def rec(env, task, score, status="ok", turns=1, tag=""):
    msgs = [{"role": "user", "content": f"task {task}"}]
    msgs += [{"role": "assistant", "content": f"{tag}{i}"} for i in range(turns)]
    return {
        "messages": msgs,
        "env": env,
        "task_id": task,
        "score": score,
        "status": status,
        "metadata": {"tag": tag},
    }


def corpus():
    records = [
        # t1: best is 0.9; a higher score with a failure status must never win
        rec("a", "t1", 0.5, tag="low"),
        rec("a", "t1", 0.9, tag="best"),
        rec("a", "t1", 1.0, status="env_error", tag="infra"),
        rec("a", "t1", 1.0, status="timeout", tag="infra2"),
        rec("a", "t1", 1.0, status="truncated", tag="trunc"),
        # t2: a three-way tie at 1.0; fewer turns wins, then the canonical text
        rec("a", "t2", 1.0, turns=3, tag="long"),
        rec("a", "t2", 1.0, turns=1, tag="zz"),
        rec("a", "t2", 1.0, turns=1, tag="aa"),
        # t3: nothing passes
        rec("a", "t3", 0.2, tag="fail"),
        rec("a", "t3", 1.0, status="policy_error", tag="infra3"),
        # same task id in another env is another task
        rec("b", "t1", 1.0, tag="other-env"),
        rec("b", "t1", 0.7, tag="other-env-low"),
    ]
    return records


def test_dedup_keeps_highest_score_per_task_under_every_shuffle():
    base = corpus()
    expected = {("a", "t1"): "best", ("a", "t2"): "aa", ("b", "t1"): "other-env"}
    for seed in range(50):
        records = list(base)
        random.Random(seed).shuffle(records)
        kept = filter_quality(records, min_score=0.5, dedup=True)
        got = {(r["env"], r["task_id"]): r["metadata"]["tag"] for r in kept}
        assert got == expected, seed
        assert len(kept) == len({(r["env"], r["task_id"]) for r in kept})


def test_never_keeps_a_non_ok_status():
    records = [rec("e", f"t{i}", 1.0, status=s) for i, s in enumerate(STATUSES)]
    for dedup in (False, True):
        kept = filter_quality(records, min_score=0.0, dedup=dedup)
        assert [r["status"] for r in kept] == ["ok"]


def test_threshold_and_no_dedup_keeps_all_passing():
    kept = filter_quality(corpus(), min_score=0.9, dedup=False)
    assert sorted(r["metadata"]["tag"] for r in kept) == ["aa", "best", "long", "other-env", "zz"]
    assert all(r["score"] >= 0.9 and r["status"] == "ok" for r in kept)


def test_accepts_trajectories():
    trajs = [Trajectory(messages=[], env="e", task_id="t", score=s) for s in (0.3, 0.8, 0.6)]
    kept = filter_quality(trajs, min_score=0.0, dedup=True)
    assert [r["score"] for r in kept] == [0.8]


def write_with_bad_lines(path):
    lines = [json.dumps(r) for r in corpus()]
    lines.insert(2, "{not json")
    lines.insert(5, json.dumps({"env": "a", "task_id": "t9", "score": 1.0}))  # no messages/status
    lines.insert(7, json.dumps(rec("a", "t9", float("nan"))).replace("NaN", '"nan"'))
    lines.append('{"messages": [], "env": "a", "task_id": "t9", "sc')  # cut off mid-write
    path.write_text("\n".join(lines) + "\n")
    return [3, 6, 8, len(lines)]


def test_filter_file_reports_malformed_lines_and_per_env_rates(tmp_path):
    src = tmp_path / "raw.jsonl"
    bad_lines = write_with_bad_lines(src)
    out = tmp_path / "kept.jsonl"
    kept, report = filter_file(src, out, min_score=1.0, dedup=True)
    assert [n for n, _ in report.malformed] == bad_lines
    assert report.total == len(corpus()) and report.kept == len(kept) == 2
    a, b = report.per_env["a"], report.per_env["b"]
    # env a: 10 records, 7 evidence (ok/truncated), passing = ok with score >= 1: the three t2 records
    assert (a.total, a.evidence, a.passed, a.tasks, a.tasks_passed, a.kept) == (10, 7, 3, 3, 1, 1)
    assert a.pass_rate == 3 / 7
    assert a.failures == {"env_error": 1, "timeout": 1, "policy_error": 1}
    assert (b.total, b.passed, b.pass_rate) == (2, 1, 0.5)
    assert [json.loads(line)["metadata"]["tag"] for line in out.read_text().splitlines()] == [
        "aa",
        "other-env",
    ]


def test_cli_filter(tmp_path):
    src = tmp_path / "raw.jsonl"
    bad_lines = write_with_bad_lines(src)
    out = tmp_path / "kept.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "agentgym.cli",
        "filter",
        str(src),
        "--min-score",
        "0.5",
        "--dedup",
        "--out",
        str(out),
    ]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "kept 3 / 12 records" in p.stdout
    for n in bad_lines:
        assert f"raw.jsonl:{n}: skipped" in p.stderr
    assert len(out.read_text().splitlines()) == 3
    p = subprocess.run(cmd + ["--json"], capture_output=True, text=True, timeout=120)
    report = json.loads(p.stdout)
    assert (
        report["per_env"]["a"]["pass_rate"] == 5 / 7 and [m["line"] for m in report["malformed"]] == bad_lines
    )

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
    assert (a.samples, a.evidence, a.passed, a.tasks, a.tasks_passed) == (10, 7, 3, 3, 1)
    assert report.kept_per_env == {"a": 1, "b": 1}
    assert a.pass_rate == 3 / 7
    assert a.failures == {"env_error": 1, "timeout": 1, "policy_error": 1}
    assert (b.samples, b.passed, b.pass_rate) == (2, 1, 0.5)
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


def test_bad_scores_and_missing_fields_are_errors_that_name_the_record():
    import pytest

    from agentgym.types import RecordError

    good = rec("e", "t", 0.5)
    for bad_score in (float("nan"), float("inf"), None, "0.9", True, [1.0]):
        with pytest.raises(
            RecordError, match=r"records\[1\] \(env 'e', task_id 't'\): 'score' must be a finite"
        ):
            filter_quality([good, rec("e", "t", bad_score)], min_score=0.0, dedup=True)
    for field in ("score", "status", "env", "task_id", "messages"):
        broken = {k: v for k, v in rec("e", "t", 1.0).items() if k != field}
        with pytest.raises(RecordError, match=rf"records\[0\].*missing field '{field}'"):
            filter_quality([broken], min_score=0.0)
    with pytest.raises(RecordError, match="'status' must be one of"):
        filter_quality([rec("e", "t", 1.0, status="OK")], min_score=0.0)


def test_min_score_is_a_fraction_and_99_is_refused_with_the_fix(tmp_path):
    import pytest

    recs = [rec("e", "t", 1.0), rec("e", "u", 0.99), rec("e", "v", 0.98)]
    assert [r["task_id"] for r in filter_quality(recs, min_score=0.99)] == ["t", "u"]
    assert len(filter_quality(recs, min_score=0)) == 3 and len(filter_quality(recs, min_score=1)) == 1
    with pytest.raises(ValueError, match=r"got 99; if 99 is a percentage, pass 0\.99"):
        filter_quality(recs, min_score=99)
    for bad in (float("nan"), -0.1, 1.5, "1"):
        with pytest.raises(ValueError, match=r"min_score must be a number in \[0, 1\]"):
            filter_quality(recs, min_score=bad)
    src, out = tmp_path / "raw.jsonl", tmp_path / "kept.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in recs))
    p = subprocess.run(
        [sys.executable, "-m", "agentgym.cli", "filter", str(src), "--min-score", "99", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2 and "pass 0.99" in p.stderr and not out.exists()


def test_cli_reports_each_kind_of_malformed_line_and_keeps_every_valid_one(tmp_path):
    valid = [rec("a", f"t{i}", 1.0 if i % 2 else 0.0) for i in range(6)]
    lines = [json.dumps(r).encode() for r in valid]
    wrong_type = dict(rec("a", "w", 1.0), env=5)
    lines[1:1] = [b"", b"   "]  # blank lines: not records, ignored
    lines.insert(3, json.dumps([rec("a", "x", 1.0)]).encode())  # line 4: a JSON list
    lines.insert(5, json.dumps(rec("a", "u", 1.0)).encode().replace(b'"u"', b'"\xff\xfe"'))  # line 6
    lines.insert(7, json.dumps(wrong_type).encode())  # line 8
    lines.append(json.dumps(rec("a", "cut", 1.0)).encode()[:25])  # line 12: cut off mid-write
    src, out = tmp_path / "raw.jsonl", tmp_path / "kept.jsonl"
    src.write_bytes(b"\n".join(lines))
    p = subprocess.run(
        [sys.executable, "-m", "agentgym.cli", "filter", str(src), "--min-score", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    assert "kept 3 / 6 records" in p.stdout and "skipped 4 malformed line(s): 4, 6, 8, 12" in p.stdout
    assert "raw.jsonl:4: skipped: a record must be a JSON object, got list" in p.stderr
    assert "raw.jsonl:6: skipped: invalid UTF-8" in p.stderr
    assert "raw.jsonl:8: skipped: 'env' must be a string" in p.stderr
    assert "raw.jsonl:12: skipped: invalid JSON" in p.stderr
    assert "raw.jsonl:2:" not in p.stderr and "raw.jsonl:3:" not in p.stderr
    assert [json.loads(x)["task_id"] for x in out.read_text().splitlines()] == ["t1", "t3", "t5"]
    assert [x for x in p.stdout.splitlines() if x.startswith("a ")][0].split()[1:4] == ["6", "3", "0.500"]


def test_a_file_with_no_valid_record_is_an_error_not_an_empty_result(tmp_path):
    import pytest

    src = tmp_path / "pretty.json"
    src.write_text(json.dumps([rec("a", "t", 1.0)], indent=2))
    with pytest.raises(
        ValueError, match=r"no valid records: all \d+ non-blank lines are malformed \(line 1:"
    ):
        filter_file(src, tmp_path / "kept.jsonl")
    assert not (tmp_path / "kept.jsonl").exists()
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="holds no records"):
        filter_file(tmp_path / "empty.jsonl", None)


def test_kept_file_is_never_half_written(tmp_path, monkeypatch):
    import pytest

    from agentgym.data import filter as filter_mod

    src, out = tmp_path / "raw.jsonl", tmp_path / "kept.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in corpus()))
    out.write_text("previous\n")
    real, written = filter_mod.dump_record, []

    def dies_on_the_second_row(row):
        if written:
            raise KeyboardInterrupt
        written.append(row)
        return real(row)

    monkeypatch.setattr(filter_mod, "dump_record", dies_on_the_second_row)
    with pytest.raises(KeyboardInterrupt):
        filter_file(src, out, min_score=0.5)
    assert written and out.read_text() == "previous\n" and sorted(tmp_path.iterdir()) == [out, src]


def test_rubric_scores_above_one_can_be_filtered_on_their_own_scale(tmp_path):
    import pytest

    # correctness 1 + format 0.2: a rubric's weighted sum goes up to 1.2
    recs = [rec("e", "t", 1.2), rec("e", "u", 1.0), rec("e", "v", 0.2)]
    assert [r["task_id"] for r in filter_quality(recs, min_score=1.1)] == ["t"]
    assert [r["task_id"] for r in filter_quality(recs, min_score=1.2)] == ["t"]
    with pytest.raises(ValueError, match=r"min_score must be a number in \[0, 1\.2\].*pass 0\.99"):
        filter_quality(recs, min_score=99)
    src = tmp_path / "raw.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in recs))
    kept, report = filter_file(src, None, min_score=1.1)
    assert [r["task_id"] for r in kept] == ["t"] and report.total == 3 and report.kept == 1

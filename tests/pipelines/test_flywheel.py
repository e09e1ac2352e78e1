"""The flywheel on the real calculator env with the tiny model: stage records, resume, report."""

from __future__ import annotations

import json
import math

import pytest
from agentgym.pipelines import flywheel
from agentgym.pipelines.cli import report_run
from agentgym.pipelines.flywheel import FlywheelConfig, collect_report, load_config, run_flywheel

from agentgym.data.report import odds_multiplier, smoothed_multiplier
from agentgym.testing import need
from agentgym.types import iter_jsonl


def test_odds_multiplier_edges():
    assert odds_multiplier(0.5, 0.75) == (3.0, None)
    assert math.isclose(odds_multiplier(0.2, 0.5)[0], 4.0)
    assert odds_multiplier(0.0, 0.0)[0] is None and "no evidence" in odds_multiplier(0.0, 0.0)[1]
    assert odds_multiplier(0.0, 0.3)[0] is None and "infinite" in odds_multiplier(0.0, 0.3)[1]
    assert odds_multiplier(0.4, 1.0)[0] is None and "p = 1" in odds_multiplier(0.4, 1.0)[1]
    assert odds_multiplier(1.0, 0.5) == (0.0, None)
    assert odds_multiplier(1.0, 1.0)[0] is None
    assert odds_multiplier(None, 0.5)[0] is None
    # smoothed: finite at the edges, equal to the plain ratio's direction
    assert smoothed_multiplier(0, 8, 8, 8) == pytest.approx((8.5 / 0.5) / (0.5 / 8.5))
    assert smoothed_multiplier(4, 8, 4, 8) == pytest.approx(1.0)


def test_config_errors_name_the_fields(tmp_path):
    with pytest.raises(ValueError, match="unknown FlywheelConfig field"):
        load_config(None, ["roundz=3"])
    with pytest.raises(ValueError, match=r"rl_steps \(5\) has no effect with rl \(none\)"):
        load_config(None, ["rl_steps=5"])
    with pytest.raises(ValueError, match=r"min_score must be a number in \[0, 1\].*pass 0\.9"):
        load_config(None, ["min_score=90"])
    path = tmp_path / "f.yaml"
    path.write_text("rounds: 2\nenv_kwargs: {difficulty: 1}\n")
    cfg = load_config(path, ["generators=[teacher, model]"])
    assert (cfg.rounds, cfg.env_kwargs, cfg.generators, cfg.generator(1), cfg.generator(5)) == (
        2,
        {"difficulty": 1},
        ["teacher", "model"],
        "teacher",
        "model",
    )


@pytest.mark.slow
def test_two_rounds_resume_after_a_crash_and_report(tmp_path, monkeypatch):
    need(module="torch", install="pip install 'agentgym[train]'")
    cfg = FlywheelConfig(
        run_dir=str(tmp_path / "fw"),
        env_kwargs={"difficulty": 1},
        rounds=2,
        generators=["teacher", "model"],
        tasks_per_round=6,
        samples_per_task=2,
        eval_tasks=6,
        sft_steps=2,
        batch_size=4,
        max_tokens=24,
    )
    real_sft = flywheel.train_sft_stage
    calls = []

    def dies_in_round_2(c, model, data, out, steps):
        calls.append(str(out))
        if "round_02" in str(out):
            raise RuntimeError("killed")
        return real_sft(c, model, data, out, steps)

    monkeypatch.setattr(flywheel, "train_sft_stage", dies_in_round_2)
    with pytest.raises(RuntimeError, match="killed"):
        run_flywheel(cfg)
    run = tmp_path / "fw"
    assert (run / "round_02" / "generate.json").exists() and (run / "round_02" / "filter.json").exists()
    assert not (run / "round_02" / "train.json").exists()
    gen_before = (run / "round_02" / "generate.json").read_text()
    raw_before = (run / "round_02" / "raw.jsonl").read_text()

    monkeypatch.setattr(flywheel, "train_sft_stage", real_sft)
    report = run_flywheel(cfg)
    # generation of round 2 was not redone
    assert (run / "round_02" / "generate.json").read_text() == gen_before
    assert (run / "round_02" / "raw.jsonl").read_text() == raw_before
    assert [r["round"] for r in report["rounds"]] == [1, 2] and all(r["complete"] for r in report["rounds"])

    # every number traces back to the files on disk
    for r in report["rounds"]:
        raw = [x for _, x in iter_jsonl(r["generate"]["file"])]
        kept = [x for _, x in iter_jsonl(r["filter"]["file"])]
        ev = [x for _, x in iter_jsonl(r["evaluate"]["file"])]
        assert r["generate"]["samples"] == len(raw) == 12
        assert (
            r["kept"]
            == len(kept)
            == len({x["task_id"] for x in raw if x["status"] == "ok" and x["score"] >= 1.0})
        )
        assert r["yield"] == len(kept) / len(raw)
        evidence = [x for x in ev if x["status"] in ("ok", "truncated")]
        assert r["p"] == sum(x["status"] == "ok" and x["score"] >= 1.0 for x in ev) / len(evidence)
    r1 = report["rounds"][0]
    assert r1["generator"] == "teacher" and r1["kept"] == 6 and r1["passes_per_kept"] == 2.0
    assert r1["train"]["stages"] == ["sft"] and r1["train"]["tokens"] > 0
    assert report["rounds"][1]["generate"]["policy"].startswith("hf:")
    assert json.loads((run / "report.json").read_text()) == collect_report(run)
    text = report_run(run)
    assert "passes/kept" in text and (run / "plots" / "pass_rate.png").stat().st_size > 1000
    assert (run / "plots" / "cost_per_kept.png").stat().st_size > 1000

    # a different setting in the same run_dir is refused, not silently mixed
    with pytest.raises(ValueError, match="other settings"):
        run_flywheel(FlywheelConfig(run_dir=str(run), rounds=2, tasks_per_round=7))

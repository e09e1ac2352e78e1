"""The quickstart pipeline end to end on a tiny budget: every stage runs for real (tiny model,
teacher demos, SFT, GRPO, DPO sampling, evaluations); the table is counted from the files and a
rerun resumes instead of redoing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from agentgym.pipelines.quickstart import (
    QuickstartConfig,
    collect_quickstart,
    format_quickstart,
    run_quickstart,
)

from agentgym.testing import need
from agentgym.types import iter_jsonl


@pytest.mark.slow
def test_quickstart_tiny_budget_runs_every_stage_and_resumes(tmp_path, capsys):
    need(module="torch", install="pip install 'agentgym[train]'")
    cfg = QuickstartConfig(
        out_dir=str(tmp_path / "qs"),
        demos=12,
        sft_steps=3,
        grpo_steps=1,
        group=2,
        dpo_tasks=4,
        dpo_steps=1,
        eval_tasks=4,
        batch_size=4,
        max_tokens=12,
    )
    results = run_quickstart(cfg)
    out = tmp_path / "qs"
    for key in (
        "model",
        "round_00/evaluate",
        "round_01/generate",
        "round_01/filter",
        "round_01/train",
        "round_01/evaluate",
        "arm_grpo/train",
        "arm_grpo/evaluate",
        "arm_dpo/generate",
        "arm_dpo/train",
    ):
        assert (out / f"{key}.json").exists(), key
    demos = json.loads((out / "round_01" / "filter.json").read_text())
    assert demos["kept"] == demos["total"] == 12
    evals = {"untrained": "round_00", "sft": "round_01", "grpo": "arm_grpo"}
    for key, where in evals.items():
        recs = [r for _, r in iter_jsonl(out / where / "eval.jsonl")]
        row = results["rows"][key]
        assert len(recs) == 4 and row["evidence"] == sum(r["status"] in ("ok", "truncated") for r in recs)
        assert row["passed"] == sum(r["status"] == "ok" and r["score"] >= 1.0 for r in recs)
    # the arms start from the SFT model; GRPO trained on the env, DPO on pairs of SFT samples
    sft = json.loads((out / "round_01" / "train.json").read_text())
    grpo = json.loads((out / "arm_grpo" / "train.json").read_text())
    assert sft["stages"] == ["sft"] and sft["sft"]["steps"] == 3 and grpo["model_in"] == sft["model"]
    dpo = json.loads((out / "arm_dpo" / "train.json").read_text())
    samples = json.loads((out / "arm_dpo" / "generate.json").read_text())
    assert samples["samples"] == len(list(iter_jsonl(out / "arm_dpo" / "samples.jsonl"))) == 8
    assert dpo["model_in"] == sft["model"] and (dpo["model"] is None) == (samples["pairs"] == 0)
    table = capsys.readouterr().out
    assert "untrained" in table and "SFT -> GRPO" in table and "SFT -> DPO" in table
    assert table.strip() == format_quickstart(collect_quickstart(out))

    # a rerun finds every stage done and prints the same table
    run_quickstart(cfg)
    captured = capsys.readouterr()
    assert captured.out.strip() == table.strip() and "done earlier" in captured.err
    p = subprocess.run(
        [sys.executable, "-m", "agentgym.cli", "report", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0 and p.stdout.strip() == table.strip()
    with pytest.raises(ValueError, match="other settings"):
        run_quickstart(QuickstartConfig(out_dir=str(out), demos=13))


def test_real_model_budgets_and_the_model_choice(tmp_path):
    """A real model gets its own budgets (vLLM sampling, fewer steps at lower rates); overrides
    win; a name that is neither tiny, a known model nor a directory is refused before any work."""
    tiny = QuickstartConfig.for_model("tiny")
    assert tiny == QuickstartConfig() and tiny.sampler == "hf"
    real = QuickstartConfig.for_model("smollm2-135m-instruct")
    assert real.sampler == "vllm" and real.learning_rate < tiny.learning_rate
    assert real.sft_steps < tiny.sft_steps and real.eval_tasks <= tiny.eval_tasks
    fast = QuickstartConfig.for_model("smollm2-135m-instruct", fast=True, eval_tasks=6)
    assert fast.sft_steps < real.sft_steps and fast.eval_tasks == 6
    with pytest.raises(ValueError, match="sampler must be hf or vllm"):
        QuickstartConfig(sampler="openai")
    cfg = QuickstartConfig.for_model("no-such-model", out_dir=str(tmp_path / "qs"))
    with pytest.raises(ValueError, match="neither 'tiny', a known model .*smollm2-135m-instruct"):
        run_quickstart(cfg)

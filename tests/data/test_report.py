"""`agentgym report` on a training run: the table follows metrics.jsonl, a running run shows so."""

from __future__ import annotations

import json

import pytest
from agentgym.pipelines.cli import report_run

from agentgym.data.report import training_table


def write_metrics(path, steps, done):
    rows = [
        {"trainer": "grpo", "step": s, "loss": 1.0 / s, "mean_score": s / steps, "elapsed_s": s * 2.0}
        for s in range(1, steps + 1)
    ]
    if done:
        rows.append(
            {"trainer": "grpo", "step": steps, "event": "done", "first_score": 1 / steps, "last_score": 1.0}
        )
    path.write_text(
        "".join(json.dumps(r) + "\n" for r in rows) + ('{"trainer": "grpo", "st' if not done else "")
    )


def test_training_run_table_and_plots(tmp_path):
    write_metrics(tmp_path / "metrics.jsonl", 50, done=False)
    text = report_run(tmp_path)
    lines = text.splitlines()
    assert lines[0].split() == ["trainer", "step", "loss", "mean_score", "elapsed_s"]
    shown = [int(line.split()[1]) for line in lines[1:] if line.startswith("grpo")]
    assert shown[0] == 1 and shown[-1] == 50 and len(shown) <= 22
    assert "running: 50 steps logged so far" in text
    assert (tmp_path / "plots" / "loss.png").stat().st_size > 1000
    assert (tmp_path / "plots" / "mean_score.png").stat().st_size > 1000
    write_metrics(tmp_path / "metrics.jsonl", 5, done=True)
    table = training_table([json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()])
    assert table.splitlines()[-1] == "done: step=5, first_score=0.2000, last_score=1.0000"


def test_report_of_an_unknown_directory_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="agentgym flywheel"):
        report_run(tmp_path)
    with pytest.raises(FileNotFoundError, match="no run directory"):
        report_run(tmp_path / "missing")

"""bench/gpu.sh on CPU at a tiny size: the GPU benchmark's code runs end to end and reports every
step, ours beside TRL's, so a GPU run only changes the device and the size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_gpu_benchmark_runs_on_cpu_at_a_tiny_size():
    args = ["--size", "tiny", "--device", "cpu", "--batch", "4", "--group", "2"]
    args += ["--prompt-len", "16", "--completion-len", "16", "--steps", "1"]
    proc = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu.sh"), *args],
        env={**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["device"] == "cpu" and res["peak_tflops"] is None and res["sft"]["mfu"] is None
    steps = ["sft", "sft_full_head", "grpo_update", "grpo_update_full_head", "dpo", "dpo_full_head"]
    if res["trl"] is not None:
        steps += ["sft_trl", "grpo_update_trl", "dpo_trl"]
    for step in steps:
        assert res[step]["tokens_per_s"] > 0, (step, res[step])
    assert res["grpo_generate"]["tokens_per_s"] > 0


def test_a_bare_machine_is_told_what_is_missing(tmp_path):
    """Without agentgym importable the script stops before running anything and says how to bring
    it in offline."""
    proc = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu.sh"), "--size", "tiny"],
        env={**os.environ, "PYTHON": "/usr/bin/python3", "PYTHONPATH": ""},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "agentgym.trainers.batch" in proc.stderr and "--prepare-wheels DIR" in proc.stderr

"""Data-engine throughput: ``agentgym filter --dedup`` and the exports, beside the raw minimum.

    .venv/bin/python bench/data_engine.py [--records 20000]

Writes real calculator trajectories (scripted solver and random tool calls, several samples per
task), then times, on the same file:
- ``filter_file(min_score=1, dedup=True)`` (schema validation of every line, best record per task
  with a total-order tie-break, per-env counts) against a bare loop of ``json.loads`` and a
  max-score dict (no validation, first-seen tie-break);
- ``export_file`` to trl-sft and hf against ``datasets.Dataset.from_list`` on the raw records.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

from agentgym.data.export import export_file
from agentgym.data.filter import filter_file
from agentgym.rollout import run_rollouts
from agentgym.types import write_jsonl


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def raw_dedup(path: str) -> int:
    best: dict[tuple[str, str], dict] = {}
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if r["status"] != "ok" or r["score"] < 1.0:
                continue
            key = (r["env"], r["task_id"])
            if key not in best or r["score"] > best[key]["score"]:
                best[key] = r
    return len(best)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=20000)
    args = ap.parse_args()
    d = tempfile.mkdtemp(prefix="agentgym-bench-")
    tasks = max(1, args.records // 8)
    good = run_rollouts("toy/calculator-v0", "scripted", n=tasks, group=2, progress=False)
    bad = run_rollouts("toy/calculator-v0", "random", n=tasks, group=6, progress=False)
    path = os.path.join(d, "raw.jsonl")
    n = write_jsonl(path, good + bad)
    size_mb = os.path.getsize(path) / 1e6

    (kept, _), t_filter = timed(lambda: filter_file(path, os.path.join(d, "kept.jsonl"), 1.0, True))
    raw_kept, t_raw = timed(lambda: raw_dedup(path))
    _, t_sft = timed(lambda: export_file(path, "trl-sft", os.path.join(d, "sft.jsonl")))
    _, t_hf = timed(lambda: export_file(path, "hf", os.path.join(d, "hf")))

    import datasets

    def raw_hf():
        with open(path) as f:
            rows = [json.loads(line) for line in f]
        for r in rows:
            r["metadata"] = json.dumps(r["metadata"])
        datasets.Dataset.from_list(rows).save_to_disk(os.path.join(d, "hf_raw"))

    _, t_hf_raw = timed(raw_hf)
    print(
        json.dumps(
            {
                "records": n,
                "file_mb": round(size_mb, 2),
                "filter_dedup": {
                    "agentgym_s": round(t_filter, 3),
                    "raw_loop_s": round(t_raw, 3),
                    "agentgym_records_per_s": round(n / t_filter),
                    "raw_records_per_s": round(n / t_raw),
                    "kept": len(kept),
                    "raw_kept": raw_kept,
                },
                "export_trl_sft": {"agentgym_s": round(t_sft, 3), "records_per_s": round(n / t_sft)},
                "export_hf": {"agentgym_s": round(t_hf, 3), "raw_from_list_s": round(t_hf_raw, 3)},
                "cpus": os.cpu_count(),
                "python": sys.version.split()[0],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

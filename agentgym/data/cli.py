"""Data-engine commands: ``filter`` and ``export``, and the ``generate sample`` generator (best-of-K
rejection sampling).

Light at import time: everything heavy is imported inside the command functions.
"""

from __future__ import annotations

import argparse
import json
import sys


def cmd_filter(args: argparse.Namespace) -> int:
    from agentgym.data.filter import filter_file

    _, report = filter_file(args.input, args.out, min_score=args.min_score, dedup=args.dedup)
    for n, why in report.malformed:
        print(f"{args.input}:{n}: skipped: {why}", file=sys.stderr)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format())
    if args.out:
        print(f"wrote {report.kept} records to {args.out}", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from agentgym.data.export import export_file

    read, written, bad = export_file(args.input, args.format, args.out, margin=args.margin)
    for n, why in bad:
        print(f"{args.input}:{n}: skipped: {why}", file=sys.stderr)
    what = "preference pairs" if args.format == "trl-dpo" else "rows"
    print(
        f"exported {written} {what} from {read} records ({len(bad)} malformed lines skipped) as {args.format} to {args.out}"
    )
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from agentgym.cli_core import parse_kwargs, runner_of
    from agentgym.data.sample import generate_samples

    same = ("n_per_task", "tasks", "out", "seed", "concurrency", "max_turns", "min_score", "resume")
    stats, seconds = generate_samples(
        args.env,
        args.policy,
        env_kwargs=parse_kwargs(args.env_kwargs),
        run=runner_of(args),
        **{k: getattr(args, k) for k in same},
    )
    d = stats.to_dict()
    d.update(out=args.out, seconds=round(seconds, 3))
    if args.json:
        print(json.dumps(d, indent=2))
    else:
        rate = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        print(
            f"{stats.samples} samples on {stats.tasks} tasks ({args.n_per_task} per task) in {seconds:.1f} s -> {args.out}\n"
            f"pass rate per sample {rate(stats.pass_rate)} ({stats.passed}/{stats.evidence} evidence samples); "
            f"best-of-{args.n_per_task} {rate(stats.best_of_k_rate)} ({stats.tasks_passed}/{stats.tasks} tasks)\n"
            f"yield {rate(stats.yield_)} kept per sample; statuses {stats.statuses}"
        )
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "filter", help="keep trajectories that passed the verifier (optionally the best per task)"
    )
    p.add_argument("input", help="JSONL file of trajectory records")
    p.add_argument("--min-score", type=float, default=1.0, help="lowest score kept (default 1.0)")
    p.add_argument(
        "--dedup", action="store_true", help="keep only the highest-scoring record per (env, task_id)"
    )
    p.add_argument("--out", default=None, help="write the kept records here (JSONL)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_filter)

    p = sub.add_parser(
        "export", help="export trajectories for TRL (SFT, DPO), ms-swift or Hugging Face datasets"
    )
    p.add_argument("input", help="JSONL file of trajectory records")
    p.add_argument("--format", required=True, choices=["trl-sft", "trl-dpo", "ms-swift", "hf"])
    p.add_argument("--out", required=True, help="output JSONL file (a directory for --format hf)")
    p.add_argument(
        "--margin", type=float, default=0.0, help="trl-dpo: least score gap between chosen and rejected"
    )
    p.set_defaults(func=cmd_export)


def add_generators(sub: argparse._SubParsersAction) -> None:
    from agentgym.cli_core import add_ray_flags

    p = sub.add_parser("sample", help="best-of-K samples scored by the env's verifier (every sample kept)")
    p.add_argument("--env", required=True)
    p.add_argument("--policy", required=True, help="policy spec, e.g. hf:PATH, vllm:PATH, scripted, random")
    p.add_argument("--n-per-task", type=int, required=True, help="samples per task (K)")
    p.add_argument("--tasks", type=int, required=True, help="number of tasks (N)")
    p.add_argument("--out", required=True, help="raw JSONL file: every sample with its score and status")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--max-turns", type=int, default=None)
    p.add_argument("--min-score", type=float, default=1.0, help="score counted as a pass in the summary")
    p.add_argument("--env-kwargs", nargs="*", default=None, metavar="KEY=VALUE")
    p.add_argument("--resume", action="store_true", help="skip (task, sample) pairs already in --out")
    p.add_argument("--json", action="store_true")
    add_ray_flags(p)
    p.set_defaults(func=cmd_sample)

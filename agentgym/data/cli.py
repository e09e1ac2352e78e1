"""Data-engine commands: ``filter``, ``export``, ``flywheel``, ``report``, ``quickstart``, and the
``generate sample`` generator (best-of-K rejection sampling).

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
    from agentgym.cli_core import parse_kwargs
    from agentgym.data.sample import generate_samples

    stats, seconds = generate_samples(
        args.env,
        args.policy,
        n_per_task=args.n_per_task,
        tasks=args.tasks,
        out=args.out,
        seed=args.seed,
        concurrency=args.concurrency,
        env_kwargs=parse_kwargs(args.env_kwargs),
        max_turns=args.max_turns,
        min_score=args.min_score,
        resume=args.resume,
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


def cmd_flywheel(args: argparse.Namespace) -> int:
    from agentgym.data.flywheel import load_config, run_flywheel

    config = load_config(args.config, overrides=args.set)
    report = run_flywheel(config)
    from agentgym.data.report import format_table

    print(format_table(report))
    print(f"report: {config.run_dir}/report.json", file=sys.stderr)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from agentgym.data.report import report_run

    print(report_run(args.run_dir, plots=not args.no_plots))
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from agentgym.data.quickstart import QuickstartConfig, run_quickstart

    config = QuickstartConfig.for_model(
        args.model, fast=args.fast, out_dir=args.out, seed=args.seed, lora_r=args.lora_r
    )
    run_quickstart(config)
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

    p = sub.add_parser(
        "flywheel", help="rounds of generate -> verify -> filter -> train -> evaluate, with a report"
    )
    p.add_argument("--config", required=True, help="flywheel config (YAML or JSON)")
    p.add_argument("--set", nargs="*", default=None, metavar="KEY=VALUE", help="override config fields")
    p.set_defaults(func=cmd_flywheel)

    p = sub.add_parser("report", help="print the table and write the plots of a flywheel or training run")
    p.add_argument("run_dir")
    p.add_argument("--no-plots", action="store_true")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "quickstart",
        help="a model (tiny by default), teacher data, SFT, GRPO and DPO on toy/calculator-v0, end to end",
    )
    p.add_argument("--out", default="runs/quickstart", help="run directory (default runs/quickstart)")
    p.add_argument(
        "--fast", action="store_true", help="a smaller budget (about a third of the time) for smoke tests"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--model",
        default="tiny",
        help="tiny (default, built here), smollm2-135m-instruct (from its package), or a Hugging Face model directory",
    )
    p.add_argument("--lora-r", type=int, default=0, help="LoRA rank (default 0: full fine-tuning)")
    p.set_defaults(func=cmd_quickstart)


def add_generators(sub: argparse._SubParsersAction) -> None:
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
    p.set_defaults(func=cmd_sample)

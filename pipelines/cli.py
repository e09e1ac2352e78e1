"""Pipeline commands: ``flywheel``, ``quickstart`` and ``report``.

Light at import time: everything heavy is imported inside the command functions.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def report_run(run_dir: str | os.PathLike[str], plots: bool = True) -> str:
    """The table of a quickstart run, a flywheel run (rebuilt from its stage records), or a
    training run (``metrics.jsonl``), with its plots written under ``RUN_DIR/plots``."""
    from agentgym.data.report import format_table, plot_flywheel, plot_training, read_metrics, training_table

    d = Path(run_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"no run directory {d}")
    if (d / "quickstart.json").exists():
        from agentgym.pipelines.quickstart import collect_quickstart, format_quickstart

        return format_quickstart(collect_quickstart(d))
    if (d / "flywheel.json").exists():
        from agentgym.pipelines.flywheel import collect_report

        report = collect_report(d)
        text = format_table(report)
        if plots:
            text += "\nplots: " + ", ".join(str(p) for p in plot_flywheel(report, d / "plots"))
        return text
    metrics = d / "metrics.jsonl"
    if metrics.exists():
        rows = read_metrics(metrics)
        text = training_table(rows)
        if plots:
            paths = plot_training(rows, d / "plots")
            if paths:
                text += "\nplots: " + ", ".join(str(p) for p in paths)
        return text
    raise FileNotFoundError(
        f"{d} holds no flywheel.json, quickstart.json or metrics.jsonl; "
        "point `agentgym report` at a directory made by `agentgym flywheel`, `agentgym quickstart` or `agentgym train`"
    )


def cmd_flywheel(args: argparse.Namespace) -> int:
    from agentgym.pipelines.flywheel import load_config, run_flywheel

    from agentgym.data.report import format_table

    config = load_config(args.config, overrides=args.set)
    print(format_table(run_flywheel(config)))
    print(f"report: {config.run_dir}/report.json", file=sys.stderr)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    print(report_run(args.run_dir, plots=not args.no_plots))
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from agentgym.pipelines.quickstart import QuickstartConfig, run_quickstart

    config = QuickstartConfig.for_model(
        args.model, fast=args.fast, out_dir=args.out, seed=args.seed, lora_r=args.lora_r
    )
    run_quickstart(config)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "flywheel",
        help="rounds of generate -> verify -> filter -> train -> evaluate (then optional GRPO/DPO arms), with a report",
    )
    p.add_argument("--config", required=True, help="flywheel config (YAML or JSON)")
    p.add_argument("--set", nargs="*", default=None, metavar="KEY=VALUE", help="override config fields")
    p.set_defaults(func=cmd_flywheel)

    p = sub.add_parser(
        "report", help="print the table and write the plots of a quickstart, flywheel or training run"
    )
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

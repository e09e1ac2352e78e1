"""The ``agentgym`` command line. Core commands live here; each layer adds its own commands
from a module with ``add_commands(subparsers)`` (listed in ``COMMAND_MODULES``), and generators
for ``agentgym generate KIND`` from modules with ``add_generators(subparsers)``.

Command modules must stay light at import time (no torch, vLLM, Playwright or pyspiel at module
level): they import what they need inside the command function.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = [
    "agentgym.cli_core",
    "agentgym.envs.code.cli",
    "agentgym.envs.games.cli",
    "agentgym.envs.web.cli",
    "agentgym.envs.openenv.cli",
    "agentgym.policies.cli",
    "agentgym.trainers.cli",
    "agentgym.data.cli",
    "agentgym.pipelines.cli",
]
GENERATOR_MODULES = [
    "agentgym.envs.games.cli",
    "agentgym.envs.web.cli",
    "agentgym.data.cli",
]


def _load(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name == name:
            return None
        raise


def _add_from(sub, modules, hook: str) -> None:
    """Let each module that loads add its subcommands through its ``hook`` function."""
    for name in modules:
        mod = _load(name)
        if mod is not None and hasattr(mod, hook):
            getattr(mod, hook)(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentgym", description="A gym for agentic, multi-turn, tool-using LLMs."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_from(sub, COMMAND_MODULES, "add_commands")
    gen = sub.add_parser("generate", help="generate training data (self-play, teacher, best-of-N samples)")
    _add_from(
        gen.add_subparsers(dest="generator", metavar="KIND", required=True),
        GENERATOR_MODULES,
        "add_generators",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, KeyError, ImportError, FileNotFoundError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"agentgym {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

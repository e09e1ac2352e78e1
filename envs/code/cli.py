"""``agentgym sandbox run [--backend B] [--timeout S] [--memory MB] [--json] FILE.py``: run a Python
file in a sandbox and report its stdout, stderr, exit code and the limit (if any) that stopped it.

Exit status: 0 when the program exited 0 within its limits, 1 when it did not, 3 when the
sandbox itself failed or no backend is usable.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_commands(subparsers) -> None:
    sandbox = subparsers.add_parser("sandbox", help="run programs in an isolated sandbox (bwrap or docker)")
    sub = sandbox.add_subparsers(dest="sandbox_command", metavar="ACTION")
    sub.required = True
    run = sub.add_parser("run", help="run a Python file in a sandbox and report what happened")
    run.add_argument("file", help="the Python file to run (it runs as /work/main.py)")
    run.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "bwrap", "docker"],
        help="sandbox backend (default: auto)",
    )
    run.add_argument("--timeout", type=float, default=10.0, help="wall-clock seconds (default: 10)")
    run.add_argument("--memory", type=int, default=512, help="memory limit in MiB (default: 512)")
    run.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    run.set_defaults(func=run_file)
    engine = sub.add_parser("engine", help="the Docker engine the docker backend talks to")
    engine_sub = engine.add_subparsers(dest="engine_command", metavar="ACTION")
    engine_sub.required = True
    start = engine_sub.add_parser(
        "start", help="start dockerd unless an engine answers, and wait until it does"
    )
    start.add_argument("--wait", type=float, default=60.0, help="seconds to wait for an answer (default: 60)")
    start.set_defaults(func=engine_start)
    engine_sub.add_parser("status", help="say whether an engine answers").set_defaults(func=engine_status)
    build = sub.add_parser(
        "build-image",
        help="build the docker backend's image (agentgym-sandbox) with debootstrap, no registry",
    )
    build.add_argument("--mirror", default=None, help="Debian archive URL (default: deb.debian.org)")
    build.add_argument("--force", action="store_true", help="build again even where the image exists")
    build.set_defaults(func=build_image)


def run_file(args: argparse.Namespace) -> int:
    from agentgym.envs.code.sandbox import Limits, SandboxError, make_sandbox

    path = Path(args.file)
    if not path.is_file():
        raise FileNotFoundError(f"no file {str(path)!r}; give the path of a Python file to run")
    limits = Limits(timeout=args.timeout, memory_mb=args.memory)
    try:
        with make_sandbox(args.backend, limits) as box:
            box.write_file("main.py", path.read_bytes())
            result = box.run(["python", "-u", "main.py"])
    except SandboxError as e:
        print(f"agentgym sandbox: error: {e}", file=sys.stderr)
        return 3
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(f"backend:   {result.backend}")
        print(f"exit code: {result.exit_code}")
        print(f"limit:     {result.limit or 'none'}")
        print(f"duration:  {result.duration:.3f} s" + ("  (output truncated)" if result.truncated else ""))
        print("--- stdout ---")
        print(result.stdout, end="" if result.stdout.endswith("\n") or not result.stdout else "\n")
        print("--- stderr ---")
        print(result.stderr, end="" if result.stderr.endswith("\n") or not result.stderr else "\n")
    return 0 if result.ok else 1


def engine_start(args: argparse.Namespace) -> int:
    from agentgym.envs.code.engine import start_engine

    try:
        print(f"docker engine: {start_engine(wait=args.wait)}")
    except RuntimeError as e:
        print(f"agentgym sandbox engine start: error: {e}", file=sys.stderr)
        return 3
    return 0


def engine_status(args: argparse.Namespace) -> int:
    from agentgym.envs.code.docker_backend import docker_problem

    problem = docker_problem()
    print("docker engine: answers" if problem is None else f"docker engine: {problem}")
    return 0 if problem is None else 1


def build_image(args: argparse.Namespace) -> int:
    from agentgym.envs.code.engine import DEFAULT_MIRROR, LATEST, build_image

    try:
        tag = build_image(mirror=args.mirror or DEFAULT_MIRROR, force=args.force)
    except (RuntimeError, ImportError) as e:
        print(f"agentgym sandbox build-image: error: {e}", file=sys.stderr)
        return 3
    except Exception as e:  # the engine does not answer
        print(
            f"agentgym sandbox build-image: error: {e}; start it: agentgym sandbox engine start",
            file=sys.stderr,
        )
        return 3
    print(f"image: {tag} (tagged {LATEST})")
    return 0

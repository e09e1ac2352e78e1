"""``agentgym env serve ENV_ID``: serve an env to other frameworks in the OpenEnv protocol.

agentgym env serve toy/calculator-v0 --port 8000
agentgym env serve code/python_functions-v0 --env-kwargs backend=bwrap --max-sessions 16
"""

from __future__ import annotations

import argparse
import sys


def cmd_serve(args: argparse.Namespace) -> int:
    from agentgym.envs.openenv.server import Limits, serve

    from agentgym.cli_core import parse_kwargs

    limits = Limits(
        max_sessions=args.max_sessions,
        idle_timeout=args.idle_timeout,
        max_message_bytes=int(args.max_message_mb * (1 << 20)),
        step_timeout=args.step_timeout,
    )
    print(
        f"agentgym env serve: {args.env_id} on ws://{args.host}:{args.port}/ws "
        f"(at most {limits.max_sessions} sessions)",
        file=sys.stderr,
        flush=True,
    )
    serve(args.env_id, parse_kwargs(args.env_kwargs), args.host, args.port, limits, args.log_level)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("env", help="environment tools: serve an env over HTTP/WebSocket (OpenEnv protocol)")
    env_sub = p.add_subparsers(dest="env_command", metavar="COMMAND", required=True)
    s = env_sub.add_parser(
        "serve",
        help="serve an env in the OpenEnv protocol (one env per WebSocket session at /ws)",
        description="Serve ENV_ID in the OpenEnv protocol: an openenv-core client (GenericEnvClient, "
        "MCPToolClient) or `--env openenv:ws://HOST:PORT` here plays episodes on it.",
    )
    s.add_argument("env_id", help="registered env id, or file.py:Class")
    s.add_argument("--env-kwargs", nargs="*", default=[], help="key=value arguments for the env")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 serves other machines)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--max-sessions", type=int, default=64, help="sessions (envs) alive at once")
    s.add_argument(
        "--idle-timeout", type=float, default=300.0, help="seconds before an idle session is closed"
    )
    s.add_argument("--max-message-mb", type=float, default=4.0, help="largest message accepted, in MiB")
    s.add_argument("--step-timeout", type=float, default=600.0, help="seconds a reset or step may take")
    s.add_argument("--log-level", default="warning", help="uvicorn's log level")
    s.set_defaults(func=cmd_serve)

"""Envs over the wire: tool-call steps/s over the OpenEnv WebSocket protocol and over MCP stdio,
beside the same work in process.

    .venv/bin/python bench/interop.py [--steps 2000] [--episodes 200]

In one run, on the same machine:
(a) one env stepped directly, one tool call a step, for ``--steps`` steps: ``toy/calculator-v0``
    in process; the same env served by ``agentgym env serve`` and played through
    ``--env openenv:ws://...`` (one WebSocket session, a JSON message each way); and
    ``mcp/server-v0`` on ``mcp-server-time`` (``convert_time`` over the SDK's stdio transport, a
    thread hop each way);
(b) the rollout runner, ``--episodes`` episodes at concurrency 8: the calculator in process
    (``scripted``) and over the WebSocket (the same player, 8 sessions), and ``teacher`` on the
    time tasks (one MCP server per env, the 8 server starts included): turns/s and episodes/s;
(c) what a fresh server costs: starting ``mcp-server-time`` and listing its tools (median of 5).

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

from agentgym.envs.mcp.client import Connection
from agentgym.envs.mcp.env import McpEnv
from agentgym.envs.openenv.server import ServerProcess
from agentgym.envs.toy import CalculatorEnv, ScriptedCalculator, make_task

import agentgym
from agentgym.rollout import run_rollouts
from agentgym.types import tool_call

TIME_SERVER = str(Path(sys.executable).with_name("mcp-server-time"))
CONVERT = {"source_timezone": "Asia/Tokyo", "time": "09:30", "target_timezone": "Asia/Kolkata"}


def steps_per_s(env, task_id: str, name: str, arguments: dict, steps: int) -> float:
    env.reset(seed=0, options={"task_id": task_id})
    action = {"role": "assistant", "content": "", "tool_calls": [tool_call(name, arguments)]}
    env.step(action)  # warm up
    t0 = time.perf_counter()
    for _ in range(steps):
        obs, *_ = env.step(action)
    elapsed = time.perf_counter() - t0
    assert not obs[0]["content"].startswith("Error"), obs
    return steps / elapsed


class RemoteCalculator:
    """``scripted`` for a remote calculator: the expression, which the wire does not carry, is
    rebuilt from the task id."""

    async def act(self, traj, env):
        return ScriptedCalculator.reply(traj, make_task(int(traj.task_id.removeprefix("calc-")), 1))


def runner(env_id: str, policy, episodes: int, **env_kwargs) -> dict:
    t0 = time.perf_counter()
    trajs = run_rollouts(env_id, policy, n=episodes, concurrency=8, env_kwargs=env_kwargs, progress=False)
    wall = time.perf_counter() - t0
    assert all(t.score == 1.0 for t in trajs), [t.metadata.get("error") for t in trajs if t.score < 1]
    turns = sum(t.num_turns for t in trajs)
    return {
        "episodes": len(trajs),
        "wall_s": round(wall, 2),
        "episodes_per_s": round(len(trajs) / wall, 1),
        "turns_per_s": round(turns / wall, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--episodes", type=int, default=200)
    args = ap.parse_args()
    limit = args.steps + 2

    calc = {"expression": "3 + 4 * 2"}
    served = ServerProcess("toy/calculator-v0", env_kwargs={"difficulty": 1, "max_turns": limit})
    mcp_env = McpEnv(server=TIME_SERVER, tasks="time", max_turns=limit)
    toy_env = CalculatorEnv(difficulty=1, max_turns=limit)
    try:
        remote_env = agentgym.make(f"openenv:{served.ws}")
        ws_rate = steps_per_s(remote_env, "calc-0", "calculator", calc, args.steps)
        remote_env.close()
        mcp_rate = steps_per_s(mcp_env, "tokyo-kolkata-0930", "convert_time", CONVERT, args.steps)
        toy_rate = steps_per_s(toy_env, "calc-0", "calculator", calc, args.steps)
        remote_runner = runner(f"openenv:{served.ws}", RemoteCalculator(), args.episodes)
    finally:
        mcp_env.close()
        toy_env.close()
        served.stop()

    starts = []
    for _ in range(5):
        t0 = time.perf_counter()
        conn = Connection([TIME_SERVER], timeout=30)
        conn.open()
        starts.append(time.perf_counter() - t0)
        conn.close()

    print(
        json.dumps(
            {
                "python": platform.python_version(),
                "direct_steps": {
                    "steps": args.steps,
                    "toy_calculator_steps_per_s": round(toy_rate, 1),
                    "openenv_websocket_steps_per_s": round(ws_rate, 1),
                    "mcp_time_server_steps_per_s": round(mcp_rate, 1),
                    "toy_ms_per_step": round(1000 / toy_rate, 4),
                    "openenv_websocket_ms_per_step": round(1000 / ws_rate, 3),
                    "mcp_ms_per_step": round(1000 / mcp_rate, 3),
                },
                "runner_concurrency_8": {
                    "mcp_time_server_teacher": runner(
                        "mcp/server-v0", "teacher", args.episodes, server=TIME_SERVER, tasks="time"
                    ),
                    "toy_calculator_scripted": runner(
                        "toy/calculator-v0", "scripted", args.episodes, difficulty=1
                    ),
                    "openenv_websocket_calculator_scripted": remote_runner,
                },
                "server_start_and_list_tools_s": round(statistics.median(starts), 3),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

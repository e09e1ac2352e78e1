"""Rollout runner benchmark: framework overhead per turn, and concurrency efficiency.

    .venv/bin/python bench/rollout.py [--episodes 20000]

(a) An instant policy (the toy env's scripted solver, which computes nothing) on
    ``toy/calculator-v0``: turns per second with every trajectory written to JSONL, by wall
    clock and per CPU second of this process (the latter is robust to other load on the machine).
(b) A policy that sleeps 50 ms per turn (an LLM stand-in), 256 episodes at concurrency 64:
    achieved episodes/s over the ideal concurrency / (turns per episode x 50 ms).

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time

from agentgym.envs.toy import ScriptedCalculator

from agentgym.rollout import rollout


class SleepyPolicy:
    """The scripted solver, after an ``asyncio.sleep`` standing in for model latency."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    async def act(self, traj, env):
        await asyncio.sleep(self.seconds)
        return ScriptedCalculator.reply(traj, env.task)


async def overhead(episodes: int, concurrency: int, path: str) -> dict:
    cpu0, t0 = time.process_time(), time.perf_counter()
    trajs = await rollout(
        "toy/calculator-v0", "scripted", n=episodes, concurrency=concurrency, out=path, progress=False
    )
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    turns = sum(t.num_turns for t in trajs)
    assert all(t.score == 1.0 for t in trajs)
    return {
        "episodes": len(trajs),
        "turns": turns,
        "wall_s": round(wall, 3),
        "turns_per_s": round(turns / wall),
        "turns_per_cpu_s": round(turns / cpu),
        "us_per_turn": round(wall / turns * 1e6, 1),
        "jsonl_bytes": os.path.getsize(path),
    }


async def efficiency(episodes: int, concurrency: int, sleep: float, path: str) -> dict:
    t0 = time.perf_counter()
    trajs = await rollout(
        "toy/calculator-v0",
        SleepyPolicy(sleep),
        n=episodes,
        concurrency=concurrency,
        out=path,
        progress=False,
    )
    wall = time.perf_counter() - t0
    turns_per_episode = sum(t.num_turns for t in trajs) / len(trajs)
    ideal = concurrency / (turns_per_episode * sleep)
    achieved = len(trajs) / wall
    return {
        "episodes": len(trajs),
        "concurrency": concurrency,
        "sleep_per_turn_s": sleep,
        "wall_s": round(wall, 3),
        "episodes_per_s": round(achieved, 1),
        "ideal_episodes_per_s": round(ideal, 1),
        "efficiency": round(achieved / ideal, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--episodes", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=64)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        a = asyncio.run(overhead(args.episodes, args.concurrency, os.path.join(d, "a.jsonl")))
        b = asyncio.run(efficiency(256, 64, 0.05, os.path.join(d, "b.jsonl")))
    print(
        json.dumps(
            {
                "bench": "rollout",
                "date": time.strftime("%Y-%m-%d"),
                "machine": f"{os.cpu_count()} cores, {platform.python_version()}",
                "overhead": a,
                "concurrency": b,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()

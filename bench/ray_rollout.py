"""Episodes/s through the Ray backend against the local runner, on the same machine.

    .venv/bin/python bench/ray_rollout.py [--skip-web] [--skip-nodes]

(a) each env with the local runner, then with ``--ray local`` (a Ray instance started in this
    process, as the CLI does): ``toy/calculator-v0`` (scripted), ``code/python_functions-v0``
    (teacher) and ``web/shop-v0`` (teacher, needs chromium), concurrency 8. ``episodes_per_s``
    counts the episodes alone; ``wall_s`` adds what the backend costs to start (Ray itself, the
    actors, their envs);
(b) the code env on a cluster started with ``ray start`` on 127.0.0.1: one node with one CPU,
    then that node and a second one with one CPU each.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from agentgym.ray_runner import rollout_ray
from agentgym.rollout import run_rollouts

RAY = str(Path(sys.executable).with_name("ray"))


def measure(run, env_id: str, policy: str, n: int, **kwargs) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        trajs = run(env_id, policy, n=n, concurrency=8, out=f"{tmp}/x.jsonl", progress=False, **kwargs)
        wall = time.perf_counter() - t0
    ok = sum(t.status == "ok" for t in trajs)
    secs = trajs.stats["seconds"]
    return {
        "episodes": len(trajs),
        "ok": ok,
        "episodes_per_s": round(len(trajs) / secs, 2),
        "wall_s": round(wall, 1),
    }


def compare(env_id: str, policy: str, n: int) -> dict:
    local = measure(run_rollouts, env_id, policy, n)
    ray = measure(rollout_ray, env_id, policy, n, address="local")
    return {"env": env_id, "policy": policy, "local": local, "ray": ray,
            "ray_over_local": round(ray["episodes_per_s"] / local["episodes_per_s"], 3)}  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nodes(env_id: str, policy: str, n: int) -> dict:
    """The same run on one node of one CPU, then on two such nodes (the CLI, as a user runs it)."""
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    port = _free_port()
    address = f"127.0.0.1:{port}"
    agentgym = str(Path(sys.executable).with_name("agentgym"))
    out = {"env": env_id, "policy": policy}

    def run() -> dict:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [agentgym, "rollout", "--env", env_id, "--policy", policy, "--n", str(n), "--ray", address,
                   "--out", f"{tmp}/x.jsonl", "--no-progress"]  # fmt: skip
            t0 = time.perf_counter()
            done = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
            wall = time.perf_counter() - t0
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        return {"episodes": summary["episodes"], "ok": summary["statuses"]["ok"],
                "episodes_per_s": summary["episodes_per_s"], "wall_s": round(wall, 1)}  # fmt: skip

    try:
        start = [RAY, "start", "--num-cpus=1"]
        head = [*start, "--head", f"--port={port}", "--include-dashboard=false"]
        subprocess.run(head, env=env, check=True, capture_output=True)
        out["1_node"] = run()
        subprocess.run([*start, f"--address={address}"], env=env, check=True, capture_output=True)
        out["2_nodes"] = run()
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True)
    out["speedup"] = round(out["2_nodes"]["episodes_per_s"] / out["1_node"]["episodes_per_s"], 2)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--skip-web", action="store_true", help="leave out web/shop-v0 (needs chromium)")
    p.add_argument("--skip-nodes", action="store_true", help="leave out the 1 vs 2 node runs")
    args = p.parse_args()
    result = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, "ray_vs_local": []}
    result["ray_vs_local"].append(compare("toy/calculator-v0", "scripted", 2000))
    result["ray_vs_local"].append(compare("code/python_functions-v0", "teacher", 64))
    if not args.skip_web:
        result["ray_vs_local"].append(compare("web/shop-v0", "teacher", 16))
    print(json.dumps(result), file=sys.stderr)  # the half that is done, should the rest fail
    if not args.skip_nodes:
        result["nodes"] = nodes("code/python_functions-v0", "teacher", 64)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

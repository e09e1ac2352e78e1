"""Sandbox overhead: the same tiny Python program run bare (a plain subprocess of the sandbox's
interpreter, no isolation) and in each sandbox backend, interleaved in one run; the cost of
opening and closing a session (docker: a new container each time, or one from the warm pool);
and whole teacher episodes of code/python_functions-v0 on each backend (reset, write_file,
run_tests, submit and hidden-test grading in two fresh sandboxes), docker with and without its
warm pool, after one warm-up episode each.

    .venv/bin/python bench/sandbox.py [--runs 40] [--episodes 10] [--sessions 20]

Prints one JSON object. Backends that cannot run here are reported with the reason.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import time

PROGRAM = "import json, sys; print(json.dumps({'ok': sys.version_info[:2]}))"


def _stats(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    return {
        "median_ms": round(1000 * statistics.median(xs), 1),
        "p90_ms": round(1000 * xs[int(0.9 * (len(xs) - 1))], 1),
        "min_ms": round(1000 * xs[0], 1),
    }


def bench_runs(runs: int) -> dict:
    from agentgym.envs.code.bwrap import find_python
    from agentgym.envs.code.sandbox import Limits, backend_problem, make_sandbox

    python = find_python()
    boxes = {}
    out: dict = {"program": PROGRAM, "runs": runs, "python": python}
    for name in ("bwrap", "docker"):
        problem = backend_problem(name)
        if problem is None:
            boxes[name] = make_sandbox(name, Limits(timeout=30))
        else:
            out[name] = {"unavailable": problem}
    times: dict[str, list[float]] = {"bare": [], **{n: [] for n in boxes}}
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([python, "-c", PROGRAM], capture_output=True, check=True)
        times["bare"].append(time.perf_counter() - t)
        for name, box in boxes.items():
            t = time.perf_counter()
            r = box.run(["python", "-c", PROGRAM])
            times[name].append(time.perf_counter() - t)
            assert r.ok, (name, r.stderr)
    for box in boxes.values():
        box.close()
    out["bare"] = _stats(times["bare"])
    for name in boxes:
        out[name] = _stats(times[name])
        out[name]["overhead_median_ms"] = round(out[name]["median_ms"] - out["bare"]["median_ms"], 1)
    return out


def bench_sessions(n: int) -> dict:
    """Open a session, run nothing, close it: what a new sandbox costs an episode."""
    from agentgym.envs.code.sandbox import Limits, backend_problem, make_sandbox

    out: dict = {}
    configs = {
        "bwrap": ("bwrap", {}),
        "docker_cold": ("docker", {"pool": 0}),
        "docker_warm": ("docker", {"pool": 8}),
    }
    for label, (name, kwargs) in configs.items():
        if backend_problem(name) is not None:
            out[label] = {"unavailable": backend_problem(name)}
            continue
        make_sandbox(name, Limits(timeout=30), **kwargs).close()  # fills the pool (warm) or nothing
        times = []
        for _ in range(n):
            t = time.perf_counter()
            make_sandbox(name, Limits(timeout=30), **kwargs).close()
            times.append(time.perf_counter() - t)
        out[label] = _stats(times)
    return out


def bench_episodes(n: int, backend: str, **env_kwargs) -> dict:
    import agentgym

    env = agentgym.make("code/python_functions-v0", backend=backend, **env_kwargs)
    teacher = agentgym.resolve_policy("teacher", env)
    times, scores, grading = [], [], []
    ids = env.task_ids(n + 1)
    for i, task_id in enumerate(ids):
        t = time.perf_counter()
        env.reset(seed=0, options={"task_id": task_id})
        while not env.done:
            msg = asyncio.run(teacher.act(env.trajectory, env))
            if msg["tool_calls"][0]["function"]["name"] == "submit":
                g = time.perf_counter()
            _, reward, *_ = env.step(msg)
        if i == 0:
            continue  # warm-up: imports, the image's page cache, the pool's first containers
        grading.append(time.perf_counter() - g)
        times.append(time.perf_counter() - t)
        scores.append(reward)
    env.close()
    return {
        "backend": env.backend,
        **env_kwargs,
        "episodes": n,
        "mean_score": sum(scores) / n,
        "episodes_per_s": round(n / sum(times), 2),
        "episode": _stats(times),
        "submit_and_grade": _stats(grading),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--sessions", type=int, default=20)
    args = parser.parse_args()
    from agentgym.envs.code.docker_backend import pool_stats
    from agentgym.envs.code.sandbox import backend_problem

    configs = {
        "bwrap": ("bwrap", {}),
        "docker_cold": ("docker", {"pool": 0}),
        "docker_warm": ("docker", {"pool": 8}),
    }
    episodes = {
        label: bench_episodes(args.episodes, name, **kwargs)
        if backend_problem(name) is None
        else {"unavailable": backend_problem(name)}
        for label, (name, kwargs) in configs.items()
    }
    sessions = bench_sessions(args.sessions)
    result = {"per_run": bench_runs(args.runs), "session_open_close": sessions, "episodes": episodes}
    if backend_problem("docker") is None:
        result["docker_pool"] = pool_stats()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Sandbox overhead: the same tiny Python program run bare (a plain subprocess of the sandbox's
interpreter, no isolation) and in each sandbox backend, interleaved in one run, plus the wall
time of whole teacher episodes of code/python_functions-v0 on each backend (reset, write_file, run_tests,
submit and hidden-test grading in two fresh sandboxes).

    .venv/bin/python bench/sandbox.py [--runs 40] [--episodes 10]

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


def bench_episodes(n: int, backend: str) -> dict:
    import agentgym

    env = agentgym.make("code/python_functions-v0", backend=backend)
    teacher = env.make_policy(agentgym.parse_spec("teacher"))
    times, scores, grading = [], [], []
    for task_id in env.task_ids(n):
        t = time.perf_counter()
        env.reset(seed=0, options={"task_id": task_id})
        while not env.done:
            msg = asyncio.run(teacher.act(env.trajectory, env))
            if msg["tool_calls"][0]["function"]["name"] == "submit":
                g = time.perf_counter()
            _, reward, *_ = env.step(msg)
        grading.append(time.perf_counter() - g)
        times.append(time.perf_counter() - t)
        scores.append(reward)
    env.close()
    return {
        "backend": env.backend,
        "episodes": n,
        "mean_score": sum(scores) / n,
        "episode": _stats(times),
        "submit_and_grade": _stats(grading),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--episodes", type=int, default=10)
    args = parser.parse_args()
    from agentgym.envs.code.sandbox import backend_problem

    episodes = {
        name: bench_episodes(args.episodes, name)
        if backend_problem(name) is None
        else {"unavailable": backend_problem(name)}
        for name in ("bwrap", "docker")
    }
    print(json.dumps({"per_run": bench_runs(args.runs), "episodes": episodes}, indent=2))


if __name__ == "__main__":
    main()

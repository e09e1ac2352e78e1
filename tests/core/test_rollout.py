import asyncio
import json
import signal
import subprocess
import sys
import time

import pytest
from agentgym.envs.toy import CalculatorEnv, ScriptedCalculator

from agentgym.registry import _REGISTRY, register
from agentgym.rollout import Runner, pass_at_k, plan_jobs, rollout, run_rollouts, summarize
from agentgym.types import load_trajectories

AGENTGYM = [sys.executable, "-m", "agentgym.cli"]


def test_scripted_rollout_writes_valid_records(tmp_path):
    out = tmp_path / "x.jsonl"
    proc = subprocess.run(
        [
            *AGENTGYM,
            "rollout",
            "--env",
            "toy/calculator-v0",
            "--policy",
            "scripted",
            "--n",
            "200",
            "--concurrency",
            "32",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    summary = json.loads(proc.stdout)
    assert summary["episodes"] == 200 and summary["mean_score"] == 1.0
    trajs = load_trajectories(out)
    assert len(trajs) == 200 and all(t.score == 1.0 and t.status == "ok" for t in trajs)
    assert len({(t.task_id, t.metadata["sample"]) for t in trajs}) == 200


def test_sigkill_then_resume_gives_exactly_the_full_set(tmp_path):
    out = tmp_path / "x.jsonl"
    cmd = [
        *AGENTGYM,
        "rollout",
        "--env",
        "toy/calculator-v0",
        "--policy",
        "scripted:delay=0.01",
        "--n",
        "200",
        "--concurrency",
        "4",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        if out.exists() and out.read_bytes().count(b"\n") >= 100:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = out.read_bytes().count(b"\n")
    assert 100 <= done_before < 200, done_before
    # a write cut off by the kill leaves a partial last line: simulate the worst case too
    with open(out, "ab") as f:
        f.write(b'{"messages": [{"role": "us')
    resumed = subprocess.run(
        [*cmd[:-4], "--concurrency", "32", "--out", str(out), "--resume"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(resumed.stdout)["new_episodes"] == 200 - done_before
    trajs = load_trajectories(out)
    keys = [(t.task_id, t.metadata["sample"]) for t in trajs]
    assert len(trajs) == 200 and len(set(keys)) == 200
    assert all(t.score == 1.0 for t in trajs)


def test_groups_and_resume_keys(tmp_path):
    out = tmp_path / "g.jsonl"
    first = run_rollouts("toy/calculator-v0", "scripted", n=5, group=3, out=out)
    assert len(first) == 15
    assert sorted(t.metadata["sample"] for t in first if t.task_id == first[0].task_id) == [0, 1, 2]
    again = run_rollouts("toy/calculator-v0", "scripted", n=5, group=3, out=out, resume=True)
    assert rollout.last_stats["episodes"] == 0 and len(again) == 15


class FlakyPolicy:
    """Raises on some tasks, sleeps past the turn limit on others, solves the rest."""

    async def act(self, traj, env):
        index = int(env.task.task_id.removeprefix("calc-"))
        if index % 3 == 1:
            raise ConnectionError("model server went away")
        if index % 3 == 2:
            await asyncio.sleep(30)
        return ScriptedCalculator.reply(traj, env.task)


def test_failures_become_statuses_not_crashes():
    trajs = run_rollouts("toy/calculator-v0", FlakyPolicy(), n=9, concurrency=9, turn_timeout=0.3)
    by_index = {int(t.task_id.removeprefix("calc-")): t for t in trajs}
    for i, t in by_index.items():
        expected = ["ok", "policy_error", "timeout"][i % 3]
        assert t.status == expected, (i, t.status, t.metadata)
    assert "model server went away" in by_index[1].metadata["error"]
    s = summarize(trajs)
    assert s["statuses"] == {"ok": 3, "truncated": 0, "env_error": 0, "policy_error": 3, "timeout": 3}
    assert s["mean_score"] == 1.0 and s["evidence_episodes"] == 3  # failures are not zeros


class CrashyEnv(CalculatorEnv):
    instances = 0

    def __init__(self, **kw):
        super().__init__(**kw)
        CrashyEnv.instances += 1
        self.broken = False

    def step(self, action):
        if self.task.task_id == "calc-2":
            self.broken = True
            raise OSError("simulator died")
        assert not self.broken, "a crashed env must not be reused"
        return super().step(action)


def test_env_crash_is_env_error_and_env_is_replaced():
    register("test/crashy-v0", f"{__name__}:CrashyEnv")
    try:
        CrashyEnv.instances = 0
        trajs = run_rollouts("test/crashy-v0", "scripted", n=6, concurrency=1)
        statuses = {t.task_id: t.status for t in trajs}
        assert statuses.pop("calc-2") == "env_error" and set(statuses.values()) == {"ok"}
        assert CrashyEnv.instances >= 3  # the probe, the first worker env, its replacement
    finally:
        _REGISTRY.pop("test/crashy-v0")


def test_concurrency_overlaps_waiting():
    t0 = time.perf_counter()
    trajs = run_rollouts("toy/calculator-v0", "scripted:delay=0.1", n=32, concurrency=32)
    elapsed = time.perf_counter() - t0
    assert all(t.score == 1.0 for t in trajs)
    assert elapsed < 32 * 0.2 / 4  # serial would take 6.4 s; concurrent takes about 0.2 s


def test_blocking_env_runs_off_the_event_loop():
    class SlowEnv(CalculatorEnv):
        blocking = True

        def step(self, action):
            time.sleep(0.2)
            return super().step(action)

    ticks = []

    async def main():
        async def ticker():
            while True:
                ticks.append(time.perf_counter())
                await asyncio.sleep(0.01)

        t = asyncio.create_task(ticker())
        runner = Runner("toy/calculator-v0", "scripted", concurrency=2)
        runner.new_env = SlowEnv
        trajs = await runner.run(plan_jobs(["calc-1", "calc-2"], 1, 0))
        t.cancel()
        assert [t.score for t in trajs] == [1.0, 1.0]

    asyncio.run(main())
    gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
    assert len(ticks) > 10 and max(gaps) < 0.15  # a blocked loop would stall 0.2 s


def test_pass_at_k_and_summary():
    assert pass_at_k(5, 0, 3) == 0.0
    assert pass_at_k(5, 5, 3) == 1.0
    assert pass_at_k(5, 1, 1) == pytest.approx(0.2)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - (3 * 2) / (5 * 4))
    trajs = run_rollouts("toy/calculator-v0", "random", n=4, group=3)
    s = summarize(trajs, k=2)
    assert s["tasks"] == 4 and s["episodes"] == 12 and 0.0 <= s["pass@2"] <= 1.0


def test_eval_cli_json(tmp_path):
    proc = subprocess.run(
        [
            *AGENTGYM,
            "eval",
            "--env",
            "toy/calculator-v0",
            "--policy",
            "scripted",
            "--n",
            "20",
            "--k",
            "2",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    s = json.loads(proc.stdout)
    assert s["pass@2"] == 1.0 and s["mean_score"] == 1.0 and s["episodes"] == 40
    assert s["statuses"]["ok"] == 40 and s["turns_per_s"] > 0 and s["episodes_per_s"] > 0
    bad = subprocess.run(
        [*AGENTGYM, "eval", "--env", "toy/nope-v0", "--policy", "scripted", "--n", "1"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "agentgym list" in bad.stderr
    bad = subprocess.run(
        [*AGENTGYM, "eval", "--env", "toy/calculator-v0", "--policy", "wizard", "--n", "1"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "unknown policy 'wizard'" in bad.stderr

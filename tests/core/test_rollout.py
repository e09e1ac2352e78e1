import asyncio
import json
import signal
import subprocess
import sys
import time

import pytest
from agentgym.envs.toy import CalculatorEnv, ScriptedCalculator

from agentgym.registry import _REGISTRY, register
from agentgym.rollout import Runner, pass_at_k, plan_jobs, run_rollouts, summarize
from agentgym.tools import tool
from agentgym.types import Trajectory, load_trajectories, tool_call

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
    assert again.stats["episodes"] == 0 and len(again) == 15


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
        assert CrashyEnv.instances == 2  # the first worker env (it named the tasks), its replacement
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


class HangingToolEnv(CalculatorEnv):
    """Task calc-0 calls a tool that hangs: a blocking one (in the runner's thread pool) when
    ``blocking`` is set, else an async one (on the event loop)."""

    @tool
    def stall(self) -> str:
        """Never answers in time."""
        time.sleep(3)
        return "late"

    @tool
    async def astall(self) -> str:
        """Never answers in time either."""
        await asyncio.sleep(30)
        return "late"


class BlockingHangingToolEnv(HangingToolEnv):
    blocking = True


class CallsStall:
    def __init__(self, name):
        self.name = name

    async def act(self, traj, env):
        if env.task.task_id == "calc-0" and traj.num_turns == 0:
            return {"role": "assistant", "content": "", "tool_calls": [tool_call(self.name, {})]}
        return ScriptedCalculator.reply(traj, env.task)


@pytest.mark.parametrize("env_cls, name", [(BlockingHangingToolEnv, "stall"), (HangingToolEnv, "astall")])
def test_turn_timeout_covers_a_hanging_tool_without_stalling_other_episodes(env_cls, name):
    async def main():
        runner = Runner("toy/calculator-v0", CallsStall(name), concurrency=4, turn_timeout=0.4)
        runner.new_env = env_cls
        t0 = time.perf_counter()
        trajs = await runner.run(plan_jobs([f"calc-{i}" for i in range(12)], 1, 0))
        return trajs, time.perf_counter() - t0

    trajs, elapsed = asyncio.run(main())
    by_id = {t.task_id: t for t in trajs}
    assert by_id["calc-0"].status == "timeout"
    assert "turn time limit of 0.4 s exceeded during env" in by_id["calc-0"].metadata["error"]
    assert "raise it with --turn-timeout" in by_id["calc-0"].metadata["error"]
    assert all(t.status == "ok" and t.score == 1.0 for tid, t in by_id.items() if tid != "calc-0")
    assert elapsed < 2.5  # the episode limit (3600 s) and the tool (3 s, 30 s) never ran out


def test_resume_repairs_the_file_and_reports_bad_lines(tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    run_rollouts("toy/calculator-v0", "scripted", n=30, out=out)
    lines = out.read_bytes().splitlines(keepends=True)
    lines[5] = lines[5][:40] + b"\n"  # a line cut short in the middle of the file
    lines.insert(12, b"[" * 5000 + b"\n")
    out.write_bytes(b"".join(lines) + b'{"messages": [{"role": "us')  # and a cut-off last line
    trajs = run_rollouts("toy/calculator-v0", "scripted", n=30, out=out, resume=True)
    err = capsys.readouterr().err
    assert "r.jsonl:6: malformed line moved to" in err and "r.jsonl:13: malformed line" in err
    assert "r.jsonl:32: dropped an incomplete last line" in err
    assert trajs.stats["episodes"] == 1 and len(trajs) == 30  # only the cut record reruns
    again = load_trajectories(out)  # strict: no malformed line is left
    assert len(again) == 30 and len({(t.task_id, t.metadata["sample"]) for t in again}) == 30
    assert len((tmp_path / "r.jsonl.rejected").read_bytes().splitlines()) == 3
    # a whole last record that only lacks its newline is kept, not rerun
    out.write_bytes(out.read_bytes()[:-1])
    again = run_rollouts("toy/calculator-v0", "scripted", n=30, out=out, resume=True)
    assert again.stats["episodes"] == 0 and len(load_trajectories(out)) == 30


def test_pass_at_k_is_the_per_task_unbiased_estimate_averaged():
    def trajs(task_id, scores):
        return [
            Trajectory(env="e", task_id=task_id, score=s, metadata={"sample": i})
            for i, s in enumerate(scores)
        ]

    # task a: 1 of 4 pass -> 1 - C(3,2)/C(4,2) = 0.5; task b: 3 of 4 -> 1 - C(1,2)/C(4,2) = 1.0
    # task c: 0 of 4 -> 0; task d has only one evidence sample (one timed out) and is left out
    sample = trajs("a", [1, 0, 0, 0]) + trajs("b", [1, 1, 0, 1]) + trajs("c", [0, 0, 0, 0])
    sample += trajs("d", [1]) + [Trajectory(env="e", task_id="d", status="timeout")]
    s = summarize(sample, k=2)
    assert s["pass@2"] == pytest.approx((0.5 + 1.0 + 0.0) / 3) and s["pass@2_tasks"] == 3
    assert summarize(sample, k=1)["pass@1"] == pytest.approx((0.25 + 0.75 + 0 + 1) / 4)


def test_env_errors_are_no_evidence_in_the_summary():
    """A crashed env is a status, not a zero: it leaves mean score, pass@k and the task count alone."""
    ok = [Trajectory(env="e", task_id="a", score=1.0), Trajectory(env="e", task_id="b", score=0.5)]
    crashed = [
        Trajectory(env="e", task_id="a", score=0.0, status="env_error"),
        Trajectory(env="e", task_id="c", score=0.0, status="env_error"),
    ]
    s = summarize(ok + crashed)
    assert s["mean_score"] == pytest.approx(0.75) and s["evidence_episodes"] == 2
    assert s["pass@1"] == pytest.approx(0.5) and s["pass@1_tasks"] == 2 and s["tasks"] == 2
    assert s["statuses"]["env_error"] == 2 and s["episodes"] == 4
    only_crashes = summarize(crashed)
    assert only_crashes["mean_score"] is None and only_crashes["pass@1"] is None


def test_eval_refuses_k_above_the_samples_per_task():
    bad = subprocess.run(
        [*AGENTGYM, "eval", "--env", "toy/calculator-v0", "--policy", "scripted", "--n", "2"]
        + ["--k", "4", "--group", "2"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert "pass@4 needs at least 4 samples per task, but --group is 2" in bad.stderr


@pytest.mark.parametrize(
    "limits", [{"turn_timeout": 0}, {"episode_timeout": -1}, {"turn_timeout": float("nan")}]
)
def test_time_limits_that_would_do_nothing_are_refused(limits):
    with pytest.raises(ValueError, match="must be a positive number of seconds"):
        run_rollouts("toy/calculator-v0", "scripted", n=1, **limits)


def test_resume_with_fewer_tasks_returns_only_the_planned_keys(tmp_path):
    out = tmp_path / "r.jsonl"
    run_rollouts("toy/calculator-v0", "scripted", n=10, out=out)
    trajs = run_rollouts("toy/calculator-v0", "scripted", n=4, out=out, resume=True)
    assert sorted(t.task_id for t in trajs) == [f"calc-{i}" for i in range(4)]
    assert trajs.stats["episodes"] == 0 and len(load_trajectories(out)) == 10


class ClosingScripted(ScriptedCalculator):
    closed = 0

    def close(self) -> None:
        ClosingScripted.closed += 1


def test_a_policy_built_from_a_spec_is_closed_when_the_run_ends(monkeypatch):
    """The runner owns a policy it built from a spec string (a model backend's thread or engine
    goes with it); a policy object passed in stays open for its owner."""
    import agentgym.envs.toy as toy

    monkeypatch.setattr(toy, "scripted_calculator", lambda spec, env: ClosingScripted())
    ClosingScripted.closed = 0
    trajs = run_rollouts("toy/calculator-v0", "scripted", n=3)
    assert [t.status for t in trajs] == ["ok"] * 3 and ClosingScripted.closed == 1
    run_rollouts("toy/calculator-v0", ClosingScripted(), n=3)
    assert ClosingScripted.closed == 1


def test_the_env_that_names_the_tasks_runs_episodes_too(monkeypatch):
    """No env is built only to read task ids: with one worker, one env serves the whole run."""
    made = []
    init = CalculatorEnv.__init__

    def counting(self, *a, **kw):
        made.append(self)
        init(self, *a, **kw)

    monkeypatch.setattr(CalculatorEnv, "__init__", counting)
    trajs = run_rollouts("toy/calculator-v0", "scripted", n=3, concurrency=1)
    assert [t.score for t in trajs] == [1.0] * 3 and len(made) == 1
    made.clear()
    assert run_rollouts("toy/calculator-v0", "scripted", n=0) == [] and len(made) == 1

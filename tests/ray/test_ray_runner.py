"""The Ray backend of the rollout runner on real Ray: a local instance started by the CLI, and a
two-node cluster on 127.0.0.1 (``ray start``) with a node killed mid-run."""

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from agentgym.rollout import run_rollouts
from agentgym.testing import need

BIN = Path(sys.executable).parent
ENV = "toy/calculator-v0"


@pytest.fixture(autouse=True)
def _ray():
    need(module="ray", install="pip install 'agentgym[ray]'")


def agentgym(*args, env=None, timeout=300):
    proc = subprocess.run(
        [str(BIN / "agentgym"), *args, "--no-progress"],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def records(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def key(r):
    return (r["task_id"], r["metadata"]["sample"])


def content(r):
    return (key(r), json.dumps(r["messages"], sort_keys=True), r["score"], r["status"], r["env"])


@pytest.fixture(scope="module")
def local_2000(tmp_path_factory):
    out = tmp_path_factory.mktemp("ray") / "ray.jsonl"
    t0 = time.perf_counter()
    summary, _ = agentgym(
        "rollout", "--env", ENV, "--policy", "scripted", "--n", "2000", "--ray", "local", "--out", str(out)
    )
    return summary, records(out), time.perf_counter() - t0


def test_2000_episodes_on_local_ray(local_2000, tmp_path):
    summary, recs, _ = local_2000
    assert len(recs) == 2000
    assert len({key(r) for r in recs}) == 2000
    assert all(r["score"] == 1.0 and r["status"] == "ok" for r in recs)
    assert summary["statuses"] == {
        "ok": 2000,
        "truncated": 0,
        "env_error": 0,
        "policy_error": 0,
        "timeout": 0,
    }
    assert summary["episodes"] == summary["new_episodes"] == 2000
    # the episodes ran in more than one actor (the machine's CPUs each hold one)
    actors = Counter(r["metadata"]["ray"]["actor"] for r in recs)
    assert len(actors) == min(os.cpu_count(), 8)
    local, _ = agentgym(
        "rollout", "--env", ENV, "--policy", "scripted", "--n", "20", "--out", str(tmp_path / "l.jsonl")
    )
    assert summary.keys() == local.keys()


def test_same_records_as_the_local_runner(local_2000):
    _, recs, _ = local_2000
    local = run_rollouts(ENV, "scripted", n=2000, concurrency=8, seed=0, progress=False)
    assert sorted(content(r) for r in recs) == sorted(content(t.to_record()) for t in local)


def test_resume_skips_finished_keys(tmp_path):
    out = tmp_path / "x.jsonl"
    run_rollouts(ENV, "scripted", n=10, out=out, progress=False)
    before = out.read_bytes()
    summary, _ = agentgym(
        "rollout",
        "--env",
        ENV,
        "--policy",
        "scripted",
        "--n",
        "25",
        "--ray",
        "local",
        "--out",
        str(out),
        "--resume",
    )
    assert summary["new_episodes"] == 15 and summary["episodes"] == 25
    recs = records(out)
    assert out.read_bytes().startswith(before)  # the finished records stay as they were
    assert len(recs) == 25 and len({key(r) for r in recs}) == 25
    assert all("ray" in r["metadata"] for r in recs[10:])
    assert not any("ray" in r["metadata"] for r in recs[:10])


def test_a_worker_that_dies_is_retried_then_recorded_as_env_error():
    """A policy (shipped to the actors with cloudpickle) that kills its worker process on one
    task: that episode runs 1 + retries times, then is an env_error; every other episode is ok."""
    from agentgym.envs.toy import ScriptedCalculator

    from agentgym.ray_runner import rollout_ray
    from agentgym.rollout import summarize

    class DiesOnCalc3(ScriptedCalculator):
        async def act(self, traj, env):
            if traj.task_id == "calc-3":
                os._exit(1)
            return await super().act(traj, env)

    trajs = rollout_ray(ENV, DiesOnCalc3(), n=40, concurrency=4, address="local", retries=1, progress=False)
    assert len(trajs) == 40 and len({(t.task_id, t.metadata["sample"]) for t in trajs}) == 40
    failed = [t for t in trajs if t.status != "ok"]
    assert [t.task_id for t in failed] == ["calc-3"]
    assert failed[0].status == "env_error" and "lost 2 times" in failed[0].metadata["error"]
    assert summarize(trajs)["statuses"]["env_error"] == 1
    # episodes that shared a chunk with calc-3 ran again and finished
    assert any(t.metadata["ray"]["attempt"] >= 1 and t.status == "ok" for t in trajs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pgid_of_raylet(node_manager_port: int) -> int:
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args[0].endswith(b"raylet/raylet") and f"--node_manager_port={node_manager_port}".encode() in args:
            return os.getpgid(int(proc.name))
    raise AssertionError(f"no raylet with node manager port {node_manager_port}")


@pytest.fixture(scope="module")
def cluster():
    """A head and a second node, one CPU each, on 127.0.0.1, with a token of their own."""
    need(module="ray", install="pip install 'agentgym[ray]'")
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    ray = str(BIN / "ray")
    port, node_port = _free_port(), _free_port()
    try:
        subprocess.run(
            [ray, "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false"],
            env=env, check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        subprocess.run(
            [ray, "start", f"--address=127.0.0.1:{port}", "--num-cpus=1", f"--node-manager-port={node_port}"],
            env=env, check=True, capture_output=True, timeout=120, start_new_session=True,
        )  # fmt: skip
        pgid = _pgid_of_raylet(node_port)  # the second node's processes, in a group of their own
        assert pgid != os.getpgid(0)
        yield {"address": f"127.0.0.1:{port}", "env": env, "second_node_pgid": pgid}
    finally:
        subprocess.run([ray, "stop", "--force"], env=env, capture_output=True, timeout=120)


def test_a_run_spreads_over_both_nodes(cluster, tmp_path):
    out = tmp_path / "x.jsonl"
    summary, _ = agentgym(
        "rollout", "--env", ENV, "--policy", "scripted:delay=0.02", "--n", "200", "--ray", cluster["address"],
        "--out", str(out),
        env=cluster["env"],
    )  # fmt: skip
    recs = records(out)
    assert summary["statuses"]["ok"] == 200 and len({key(r) for r in recs}) == 200
    by_node = Counter(r["metadata"]["ray"]["node"] for r in recs)
    assert len(by_node) == 2 and min(by_node.values()) >= 40, by_node


def test_a_node_killed_mid_run(cluster, tmp_path):
    """The second node dies mid-run: nothing finished is lost or written twice, the episodes it
    had run again on the head node, and the run ends by itself with every key ok."""
    out = tmp_path / "x.jsonl"
    n = 600
    proc = subprocess.Popen(
        [str(BIN / "agentgym"), "rollout", "--env", ENV, "--policy", "scripted:delay=0.05", "--n", str(n),
         "--ray", cluster["address"], "--out", str(out), "--no-progress"],
        env=cluster["env"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while (not out.exists() or len(out.read_bytes().splitlines()) < 100) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            time.sleep(0.1)
        os.killpg(cluster["second_node_pgid"], signal.SIGKILL)
        before = out.read_bytes()
        before = before[: before.rfind(b"\n") + 1]  # the records finished when the node died
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    summary = json.loads(stdout.strip().splitlines()[-1])
    after = out.read_bytes()
    assert after.startswith(before)
    recs = records(out)
    assert len(before.splitlines()) < n  # the node died before the run was over
    assert len(recs) == n and len({key(r) for r in recs}) == n
    assert summary["statuses"]["ok"] == n and summary["episodes"] == n
    nodes = Counter(r["metadata"]["ray"]["node"] for r in recs)
    assert len(nodes) == 2, nodes
    retried = [r for r in recs if r["metadata"]["ray"]["attempt"] > 0]
    assert retried, "no episode was running on the node that died"
    survivor = {r["metadata"]["ray"]["node"] for r in retried}
    assert len(survivor) == 1  # the episodes lost with the second node ran again on the head
    assert {r["metadata"]["ray"]["node"] for r in recs[-100:]} == survivor  # which ran the rest
    assert "Ray actors were lost" in stderr

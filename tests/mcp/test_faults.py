"""Servers that misbehave (tests/mcp/fake_server.py): every episode ends, with a status and an
error that says what the server did, and no server process is left behind."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentgym.types import tool_call

ECHO_TASK = {
    "task_id": "echo",
    "prompt": "Echo the word pelican.",
    "answer": "pelican",
    "solution": [{"tool": "echo", "arguments": {"text": "pelican"}}],
}


def call(name: str, arguments: dict | None = None) -> dict:
    return {"role": "assistant", "content": "", "tool_calls": [tool_call(name, arguments or {})]}


def alive(pid: int) -> bool:
    """The process runs (a zombie that its new parent has not reaped yet does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[0] != b"Z"


def our_zombies() -> list[int]:
    me, out = os.getpid(), []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                fields = Path(f"/proc/{name}/stat").read_bytes().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if fields[0] == b"Z" and int(fields[1]) == me:
                out.append(int(name))
    return out


@pytest.fixture
def make_env(write_tasks, fake):
    """``make_env(mode="ok", tasks=[ECHO_TASK], **kwargs)``: an McpEnv on the test server, closed
    after the test."""
    from agentgym.envs.mcp.env import McpEnv

    made = []

    def make(mode: str = "ok", tasks: list[dict] | None = None, **kwargs):
        kwargs.setdefault("timeout", 3)
        env = McpEnv(server=fake(mode), tasks=write_tasks(tasks or [ECHO_TASK]), **kwargs)
        made.append(env)
        return env

    yield make
    for env in made:
        env.close()


def test_a_command_that_does_not_exist(write_tasks):
    from agentgym.envs.mcp.env import McpEnv

    with pytest.raises(
        ValueError, match=r"cannot start the MCP server 'no-such-mcp-server --x': no such program on PATH"
    ):
        McpEnv(server="no-such-mcp-server --x", tasks=write_tasks([ECHO_TASK]))


def test_the_cli_says_what_is_wrong_without_a_traceback(write_tasks):
    agentgym = str(Path(sys.executable).with_name("agentgym"))
    cmd = [agentgym, "eval", "--env", "mcp/server-v0", "--policy", "teacher", "--n", "1", "--env-kwargs"]
    done = subprocess.run(
        [*cmd, "server=no-such-mcp-server", f"tasks={write_tasks([ECHO_TASK])}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "cannot start the MCP server 'no-such-mcp-server': no such program on PATH" in done.stderr


def test_a_setup_command_that_fails_is_env_error_for_its_episode(write_tasks, fake):
    from agentgym.rollout import run_rollouts

    broken = {**ECHO_TASK, "task_id": "broken", "setup": ["git no-such-subcommand"]}
    trajs = run_rollouts(
        "mcp/server-v0",
        "teacher",
        n=2,
        concurrency=1,
        env_kwargs={"server": fake(), "tasks": write_tasks([ECHO_TASK, broken])},
        progress=False,
    )
    by_id = {t.task_id: t for t in trajs}
    assert by_id["echo"].status == "ok" and by_id["echo"].score == 1.0
    assert by_id["broken"].status == "env_error"
    assert "setup command 'git no-such-subcommand' exited with 1" in by_id["broken"].metadata["error"]


def test_a_server_that_exits_at_start_shows_its_stderr(make_env):
    t0 = time.monotonic()
    with pytest.raises(ValueError) as err:
        make_env("exit")
    assert time.monotonic() - t0 < 5
    assert "closed the connection during startup" in str(err.value)
    assert "cannot open its database /nonexistent/db.sqlite" in str(err.value)
    assert err.value.__cause__.status == "env_error"


def test_a_server_that_never_answers_the_handshake_times_out(make_env):
    t0 = time.monotonic()
    with pytest.raises(ValueError, match="did not start and list its tools within 1 s") as err:
        make_env("hang", timeout=1)
    assert err.value.__cause__.status == "timeout" and time.monotonic() - t0 < 8


def test_a_call_that_hangs_ends_the_episode_with_timeout(make_env):
    # the timeout also bounds the server's start, and importing the mcp SDK alone takes 2-2.6 s
    # on these machines: 5 s leaves room for it
    env = make_env(timeout=5)
    env.reset(seed=0, options={"task_id": "echo"})
    pid = env.conn.pid
    assert pid is not None and alive(pid)
    t0 = time.monotonic()
    obs, reward, terminated, _, info = env.step(call("hang"))
    assert time.monotonic() - t0 < 5 + 8  # the call's timeout, then stopping the server
    assert terminated and reward == 0.0
    assert obs[0]["content"] == "Error: the server did not answer in time; the episode ends."
    assert info["status"] == "timeout" and env.trajectory.status == "timeout"
    assert "did not answer the call of 'hang' within 5 s" in env.trajectory.metadata["error"]
    assert env.conn is None and not alive(pid)
    env.reset(seed=0, options={"task_id": "echo"})  # the next episode gets a new server
    obs, *_ = env.step(call("echo", {"text": "again"}))
    assert obs[0]["content"] == "again" and env.conn.pid != pid


def test_a_server_that_dies_in_a_call_is_env_error(make_env):
    env = make_env()
    env.reset(seed=0, options={"task_id": "echo"})
    _, reward, terminated, _, info = env.step(call("die"))
    assert terminated and reward == 0.0 and info["status"] == "env_error"
    assert "closed the connection during the call of 'die'" in env.trajectory.metadata["error"]


def test_error_results_come_back_and_the_episode_goes_on(make_env):
    env = make_env()
    env.reset(seed=0, options={"task_id": "echo"})
    obs, _, terminated, *_ = env.step(call("fail"))
    assert not terminated and obs[0]["content"].startswith("Error: ") and "fail" in obs[0]["content"]
    obs, _, terminated, *_ = env.step(call("echo", {"txt": "wrong argument name"}))
    assert not terminated and obs[0]["content"].startswith("Error: ") and "text" in obs[0]["content"]
    obs, *_ = env.step(call("echo", {"text": "pelican"}))
    assert obs[0]["content"] == "pelican"
    _, reward, terminated, _, info = env.step({"role": "assistant", "content": "pelican"})
    assert terminated and reward == 1.0 and info["status"] == "ok"


def test_lines_that_are_not_json_rpc_are_dropped_and_counted(make_env):
    env = make_env("garbage")  # garbage before the handshake too
    env.reset(seed=0, options={"task_id": "echo"})
    obs, *_ = env.step(call("garbage", {"lines": 2000}))
    assert obs[0]["content"] == "survived"
    obs, *_ = env.step(call("echo", {"text": "pelican"}))
    assert obs[0]["content"] == "pelican"
    _, reward, *_ = env.step({"role": "assistant", "content": "pelican"})
    assert reward == 1.0 and env.trajectory.metadata["server_bad_lines"] >= 2000


def test_a_stdout_flood_without_newlines_times_out(make_env):
    env = make_env(timeout=5)  # room for the server's start (see the hang test)
    env.reset(seed=0, options={"task_id": "echo"})
    t0 = time.monotonic()
    _, _, terminated, _, info = env.step(call("flood_stdout", {"mb": 30}))
    assert terminated and info["status"] == "timeout" and time.monotonic() - t0 < 5 + 8


def test_a_stderr_flood_keeps_only_a_tail(make_env):
    env = make_env()
    env.reset(seed=0, options={"task_id": "echo"})
    obs, *_ = env.step(call("flood_stderr", {"mb": 30}))
    assert obs[0]["content"] == "flooded stderr"
    tail = env.conn.stderr_tail()
    assert len(env.conn._stderr) == 4096 and tail.endswith("the last words on stderr")
    _, _, terminated, _, info = env.step(call("die"))  # the error shows that tail
    assert info["status"] == "env_error"
    assert env.trajectory.metadata["error"].endswith("eeee\nthe last words on stderr")
    assert len(env.trajectory.metadata["error"]) < 4096 + 300


def test_the_server_and_its_children_are_killed_at_episode_end(make_env):
    env = make_env(fresh="episode")
    env.reset(seed=0, options={"task_id": "echo"})
    server = env.conn.pid
    obs, *_ = env.step(call("spawn"))
    child = int(obs[0]["content"])
    assert alive(server) and alive(child)
    env.step({"role": "assistant", "content": "done"})
    assert not alive(server) and not alive(child)
    assert our_zombies() == []


def test_fresh_run_keeps_one_server_and_close_stops_it(make_env):
    env = make_env(tasks=[ECHO_TASK, {**ECHO_TASK, "task_id": "echo2"}])
    assert env.fresh == "run"  # no {workdir} in the command
    pids = []
    for task_id in ("echo", "echo2", "echo"):
        env.reset(seed=0, options={"task_id": task_id})
        obs, *_ = env.step(call("pid"))
        pids.append(int(obs[0]["content"]))
        env.step({"role": "assistant", "content": "pelican"})
    assert len(set(pids)) == 1 and alive(pids[0])
    env.close()
    env.close()
    assert not alive(pids[0]) and our_zombies() == []


def test_a_check_call_on_a_dead_server_is_a_verifier_error(make_env):
    task = {**ECHO_TASK, "check_call": {"name": "echo", "arguments": {"text": "x"}, "contains": "x"}}
    env = make_env(tasks=[task])
    env.reset(seed=0, options={"task_id": "echo"})
    obs, *_ = env.step(call("die_soon"))
    assert obs[0]["content"] == "bye"
    time.sleep(1.0)
    _, reward, terminated, _, info = env.step({"role": "assistant", "content": "pelican"})
    assert terminated and reward == 0.0 and info["status"] == "env_error"
    assert info["breakdown"] == {"answer": 1.0}
    assert "closed the connection" in info["verifier_errors"]["call"]


def test_a_user_verifier_is_one_more_check(make_env, tmp_path):
    checks = tmp_path / "checks.py"
    checks.write_text(
        "import os\n"
        "def short_answer(traj, task):\n"
        "    assert os.path.isdir(task.info['workdir'])\n"
        "    return float(len(traj.messages[-1]['content']) < 10)\n"
        "def broken(traj, task):\n"
        "    raise RuntimeError('no database')\n"
    )
    env = make_env(verifier=f"{checks}:short_answer")
    env.reset(seed=0, options={"task_id": "echo"})
    _, reward, _, _, info = env.step({"role": "assistant", "content": "a pelican, I think"})
    assert info["breakdown"] == {"answer": 1.0, "verifier": 0.0} and reward == 0.5

    env = make_env(verifier=f"{checks}:broken")
    env.reset(seed=0, options={"task_id": "echo"})
    _, reward, _, _, info = env.step({"role": "assistant", "content": "pelican"})
    assert info["status"] == "env_error" and "no database" in info["verifier_errors"]["verifier"]


def test_streamable_http(http_fake, write_tasks):
    from agentgym.rollout import run_rollouts

    trajs = run_rollouts(
        "mcp/server-v0",
        "teacher",
        n=3,
        env_kwargs={"url": http_fake, "tasks": write_tasks([ECHO_TASK]), "timeout": 10},
        progress=False,
    )
    assert [t.score for t in trajs] == [1.0, 1.0, 1.0] and {t.status for t in trajs} == {"ok"}
    assert trajs[0].messages[3] == {
        "role": "tool",
        "tool_call_id": "call_0",
        "name": "echo",
        "content": "pelican",
    }
    assert {t["function"]["name"] for t in trajs[0].tools} >= {"echo", "hang", "die"}


def test_an_http_server_that_is_not_there(write_tasks):
    from agentgym.envs.mcp.env import McpEnv

    with pytest.raises(ValueError, match=r"the MCP server at http://127\.0\.0\.1:9/mcp failed to start"):
        McpEnv(url="http://127.0.0.1:9/mcp", tasks=write_tasks([ECHO_TASK]), timeout=5)

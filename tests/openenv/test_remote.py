"""``--env openenv:URL``: a remote OpenEnv server as an env here, for rollouts, evaluation and
training; a server that dies or stalls is ``env_error`` on the episode, never a zero reward."""

from __future__ import annotations

import json
import re

import pytest
from agentgym.envs.toy import ScriptedCalculator, make_task

from agentgym.rollout import run_rollouts, summarize
from agentgym.types import tool_call

pytest.importorskip("fastapi", reason="pip install 'agentgym[serve]'")


class RemoteCalculator:
    """The scripted calculator player for a remote calculator: the task's expression is not sent
    over the wire, so it is rebuilt from the task id."""

    def __init__(self, kill=None, after=None):
        self.kill, self.after, self.turns = kill, after, 0

    async def act(self, traj, env):
        self.turns += 1
        if self.kill is not None and self.turns == self.after:
            self.kill()
        return ScriptedCalculator.reply(traj, make_task(int(traj.task_id.removeprefix("calc-")), 2))


def _same(a, b):
    return [(t.task_id, t.messages, t.score, t.status, t.metadata.get("breakdown")) for t in a] == [
        (t.task_id, t.messages, t.score, t.status, t.metadata.get("breakdown")) for t in b
    ]


def test_remote_episodes_are_the_in_process_episodes(served):
    server = served("toy/calculator-v0")
    local = run_rollouts("toy/calculator-v0", "scripted", n=12, concurrency=4, progress=False)
    remote = run_rollouts(f"openenv:{server.ws}", RemoteCalculator(), n=12, concurrency=4, progress=False)
    assert summarize(remote)["mean_score"] == 1.0
    key = lambda t: t.task_id  # noqa: E731
    assert _same(sorted(local, key=key), sorted(remote, key=key))
    # the records describe themselves: the same env is made again from them
    assert {(t.env, json.dumps(t.env_kwargs)) for t in remote} == {
        ("openenv/remote-v0", json.dumps({"url": server.ws}))
    }
    assert remote[0].tools == local[0].tools


def test_a_pool_of_servers_spreads_sessions_and_skips_a_dead_one(served):
    a, b, c = served("toy/calculator-v0"), served("toy/calculator-v0"), served("toy/calculator-v0")
    pool = f"openenv:{a.ws},{b.ws}"
    trajs = run_rollouts(pool, RemoteCalculator(), n=16, concurrency=4, progress=False)
    assert summarize(trajs)["mean_score"] == 1.0
    assert {t.metadata["server"] for t in trajs} == {a.ws, b.ws}
    c.stop()  # a pool with a dead server: its sessions go to the live one
    trajs = run_rollouts(f"openenv:{c.ws},{b.ws}", RemoteCalculator(), n=8, concurrency=2, progress=False)
    assert summarize(trajs)["mean_score"] == 1.0
    assert {t.metadata["server"] for t in trajs} == {b.ws}


def test_a_server_that_dies_mid_run_gives_env_error_and_the_run_ends(served):
    server = served("toy/calculator-v0")
    policy = RemoteCalculator(kill=server.stop, after=5)
    trajs = run_rollouts(f"openenv:{server.ws}", policy, n=10, concurrency=1, progress=False)
    statuses = [t.status for t in trajs]
    assert len(trajs) == 10
    assert statuses[:2] == ["ok", "ok"] and statuses[2:] == ["env_error"] * 8
    assert all(t.score == 0.0 for t in trajs[2:])
    assert "OpenEnv server" in trajs[2].metadata["error"]
    assert summarize(trajs)["statuses"]["env_error"] == 8


def test_a_stalled_server_is_a_timeout_error_not_a_hang(served):
    server = served("tests/openenv/slow_env.py:SlowEnv", "--step-timeout", "1")
    stall = {"role": "assistant", "content": "", "tool_calls": [tool_call("wait", {"seconds": 3})]}

    class Waiter:
        async def act(self, traj, env):
            return stall

    # the client gives up first
    trajs = run_rollouts(
        f"openenv:{server.ws}", Waiter(), n=2, env_kwargs={"timeout": 0.5}, concurrency=1, progress=False
    )
    assert [t.status for t in trajs] == ["env_error", "env_error"]
    assert "within 0.5 s" in trajs[0].metadata["error"]
    # the server gives up first (its --step-timeout)
    trajs = run_rollouts(f"openenv:{server.ws}", Waiter(), n=1, concurrency=1, progress=False)
    assert trajs[0].status == "env_error" and "--step-timeout" in trajs[0].metadata["error"]


def test_an_unreachable_server_is_a_clear_error():
    from agentgym.envs.openenv.client import RemoteEnvError

    from agentgym import make

    with pytest.raises(RemoteEnvError, match="no OpenEnv server answered: ws://127.0.0.1:9"):
        make("openenv:ws://127.0.0.1:9")
    with pytest.raises(ValueError, match="not an http"):
        make("openenv:ftp://x")


class EchoTeacher:
    """Solves the openenv-core echo env: sends back the number in the prompt."""

    async def act(self, traj, env):
        number = int(re.search(r"number (\d+)", traj.messages[-1]["content"]).group(1))
        return {"role": "assistant", "content": "", "tool_calls": [tool_call("step", {"number": number})]}


def test_an_env_served_by_openenv_core_is_played_as_a_step_tool(openenv_echo_server):
    trajs = run_rollouts(
        f"openenv:{openenv_echo_server.url}", EchoTeacher(), n=8, concurrency=4, progress=False
    )
    assert summarize(trajs)["mean_score"] == 1.0
    schema = trajs[0].tools[0]["function"]
    assert schema["name"] == "step" and schema["parameters"]["properties"]["number"]["type"] == "integer"
    assert (
        trajs[0].messages[-1]["role"] == "tool" and '"feedback": "right"' in trajs[0].messages[-1]["content"]
    )
    # the same task id is the same episode
    again = run_rollouts(
        f"openenv:{openenv_echo_server.url}", EchoTeacher(), n=1, task_ids=[trajs[3].task_id], progress=False
    )
    assert again[0].messages[1] == trajs[3].messages[1]
    # a wrong action scores 0, an action the env's schema refuses is an error the model sees

    class Wrong:
        async def act(self, traj, env):
            if traj.num_turns == 0:
                return {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [tool_call("step", {"number": "many"})],
                }
            return {"role": "assistant", "content": "", "tool_calls": [tool_call("step", {"number": 1})]}

    [wrong] = run_rollouts(f"openenv:{openenv_echo_server.url}", Wrong(), n=1, progress=False)
    assert wrong.status == "ok" and wrong.score == 0.0
    assert (
        wrong.messages[3]["content"].startswith("Error:")
        and "VALIDATION_ERROR" in wrong.messages[3]["content"]
    )


@pytest.fixture
def bad_server():
    """A WebSocket server that lists one tool, then answers every other message the way ``mode``
    says: ``garbage`` (not JSON), ``array`` (JSON, not an object), ``huge`` (a 2 MiB message),
    ``silent`` (never)."""
    import threading

    from websockets.sync.server import serve

    state = {"mode": "garbage"}
    tool = {"name": "ping", "description": "", "input_schema": {"type": "object", "properties": {}}}

    def handler(ws):
        for raw in ws:
            message = json.loads(raw)
            if message.get("type") == "step" and message["data"].get("type") == "list_tools":
                ws.send(json.dumps({"type": "observation", "data": {"observation": {"tools": [tool]}}}))
            elif state["mode"] == "garbage":
                ws.send("{not json")
            elif state["mode"] == "array":
                ws.send("[1, 2]")
            elif state["mode"] == "huge":
                ws.send("x" * (2 << 20))
            # silent: no answer

    server = serve(handler, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield state, f"ws://127.0.0.1:{server.socket.getsockname()[1]}"
    server.shutdown()


@pytest.mark.parametrize(
    "mode,error",
    [
        ("garbage", "not JSON"),
        ("array", "not a message object"),
        ("huge", "failed"),
        ("silent", "within 1 s"),
    ],
)
def test_a_misbehaving_server_ends_each_episode_with_env_error(bad_server, mode, error):
    state, url = bad_server
    state["mode"] = mode

    class Player:
        async def act(self, traj, env):  # never reached: reset fails
            raise AssertionError("no episode should start")

    trajs = run_rollouts(
        f"openenv:{url}",
        Player(),
        n=3,
        env_kwargs={"timeout": 1, "max_message_mb": 1},
        concurrency=1,
        progress=False,
    )
    assert [t.status for t in trajs] == ["env_error"] * 3
    assert error in trajs[0].metadata["error"] and "OpenEnv server" in trajs[0].metadata["error"]


class LetterCounter:
    """Plays the openenv-core MCP env: counts with its tool, then submits the tool's answer."""

    async def act(self, traj, env):
        last = traj.messages[-1]
        if last["role"] == "user":
            letter, word = re.search(r"'(.)' occur in '(\w+)'", last["content"]).groups()
            call = tool_call("count_letters", {"word": word, "letter": letter})
        else:
            call = tool_call("submit", {"answer": int(last["content"])})
        return {"role": "assistant", "content": "", "tool_calls": [call]}


def test_an_openenv_core_mcp_env_is_played_through_its_own_tools(openenv_mcp_server):
    trajs = run_rollouts(
        f"openenv:{openenv_mcp_server.url}", LetterCounter(), n=8, concurrency=4, progress=False
    )
    assert summarize(trajs)["mean_score"] == 1.0
    assert [s["function"]["name"] for s in trajs[0].tools] == ["count_letters", "submit"]
    word, letter = re.search(r"'(.)' occur in '(\w+)'", trajs[0].messages[1]["content"]).groups()[::-1]
    assert trajs[0].messages[3] == {
        "role": "tool",
        "tool_call_id": "call_0",
        "name": "count_letters",
        "content": str(word.count(letter)),
    }
    # a tool the server does not have is the model's mistake, shown to it; the episode goes on

    class Confused:
        async def act(self, traj, env):
            name = "guess" if traj.num_turns == 0 else "submit"
            return {"role": "assistant", "content": "", "tool_calls": [tool_call(name, {"answer": -1})]}

    [t] = run_rollouts(f"openenv:{openenv_mcp_server.url}", Confused(), n=1, progress=False)
    assert t.status == "ok" and t.score == 0.0
    assert t.messages[3]["content"].startswith("Error: unknown tool 'guess'")


def test_resume_over_a_remote_env_skips_finished_keys(served, tmp_path):
    """Records say openenv/remote-v0, the run was asked for openenv:URL: resume still finds them."""
    server = served("toy/calculator-v0")
    out = tmp_path / "x.jsonl"
    first = run_rollouts(f"openenv:{server.ws}", RemoteCalculator(), n=4, out=out, progress=False)
    assert first.stats["episodes"] == 4
    again = run_rollouts(
        f"openenv:{server.ws}", RemoteCalculator(), n=6, out=out, resume=True, progress=False
    )
    assert again.stats["episodes"] == 2 and len(again) == 6
    assert len(out.read_text().splitlines()) == 6

import asyncio
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import agentgym
from agentgym.env import EpisodeOver, ToolEnv
from agentgym.tools import tool
from agentgym.types import Task, tool_call


class Shelf(ToolEnv):
    """A small env with a stateful tool, a tool that raises, and an exact-answer verifier."""

    max_turns = 5

    def __init__(self, **kw):
        super().__init__(**kw)
        self.items: list[str] = []

    @tool
    def put(self, item: str, count: int = 1) -> str:
        """Put items on the shelf.

        Args:
            item: what to put
            count: how many
        """
        self.items += [item] * count
        return f"{len(self.items)} items"

    @tool
    def explode(self) -> str:
        """Always fails."""
        raise RuntimeError("kaboom")

    @staticmethod
    def correct(traj, task):
        return float(traj.messages[-1].get("content") == task.answer)

    verifier = correct

    def load_task(self, task_id):
        self.items = []
        return Task(task_id or "t0", prompt="Put two pens, then say done.", answer="done")

    def task_ids(self, n, seed=0):
        return [f"t{i}" for i in range(n)]


def _call(name, args):
    return {"role": "assistant", "content": "", "tool_calls": [tool_call(name, args)]}


def test_every_model_mistake_is_an_observation():
    env = Shelf()
    env.reset(seed=0)
    cases = [
        (
            {"role": "assistant", "content": '<tool_call>{"name": "fly", "arguments": {}}</tool_call>'},
            "Error: unknown tool 'fly'. Available tools: put, explode.",
        ),
        (
            {"role": "assistant", "content": '<tool_call>{"name": "put", "arguments": {</tool_call>'},
            "Error: tool call 1 is not valid JSON",
        ),
        (_call("put", {}), "Error: put: missing required argument(s) ['item']"),
        (_call("put", {"item": "pen", "count": "two"}), "Error: put: argument 'count' must be an integer"),
        (_call("put", {"item": "pen", "colour": "red"}), "Error: put: unknown argument(s) ['colour']"),
        (_call("explode", {}), "Error: explode raised RuntimeError: kaboom"),
        (
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "put", "arguments": "[1"}}
                ],
            },
            "Error: arguments of put are not valid JSON",
        ),
    ]
    for action, expected in cases:
        env.reset(seed=0)
        obs, reward, terminated, truncated, info = env.step(action)
        assert obs[0]["role"] == "tool" and obs[0]["content"].startswith(expected), obs
        assert (reward, terminated, truncated) == (0.0, False, False)
        assert env.items == []


def test_reward_only_at_the_end_with_breakdown():
    env = Shelf()
    obs, info = env.reset(seed=1)
    assert [m["role"] for m in obs] == ["system", "user"]
    obs, reward, terminated, truncated, info = env.step(_call("put", {"item": "pen", "count": 2}))
    assert obs[0]["content"] == "2 items" and obs[0]["tool_call_id"] == "call_0" and reward == 0.0
    obs, reward, terminated, truncated, info = env.step({"role": "assistant", "content": "done"})
    assert obs == [] and terminated and not truncated
    assert reward == 1.0 and info["breakdown"] == {"correct": 1.0} and info["status"] == "ok"
    assert env.trajectory.score == 1.0 and env.trajectory.metadata["turns"] == 2
    with pytest.raises(EpisodeOver):
        env.step({"role": "assistant", "content": "again"})


class CountedShelf(Shelf):
    """Shelf with a process reward: 0.5 for a turn whose tool result shows items on the shelf,
    nothing (None) for other turns."""

    def turn_reward(self, action, replies):
        return 0.5 if any("items" in (m.get("content") or "") for m in replies) else None


def test_per_turn_rewards_are_recorded_once_per_turn_and_round_trip_json():
    from agentgym.types import Trajectory

    env = CountedShelf()
    env.reset(seed=0)
    _, _, _, _, info = env.step(_call("nope", {}))
    assert "turn_reward" not in info and "turn_rewards" not in env.trajectory.metadata
    _, reward, _, _, info = env.step(_call("put", {"item": "pen", "count": 2}))
    assert info["turn_reward"] == 0.5 and reward == 0.0
    _, reward, terminated, _, info = env.step({"role": "assistant", "content": "done"})
    assert terminated and reward == 1.0 and info["turn_reward"] == 0.0
    traj = env.trajectory
    assert traj.metadata["turn_rewards"] == [0.0, 0.5, 0.0]  # one per assistant turn
    back = Trajectory.from_record(json.loads(json.dumps(traj.to_record())))
    assert back.metadata["turn_rewards"] == [0.0, 0.5, 0.0] and back == traj


def test_envs_without_process_rewards_record_none():
    env = Shelf()
    env.reset(seed=0)
    env.step({"role": "assistant", "content": "done"})
    assert "turn_rewards" not in env.trajectory.metadata


def test_a_turn_reward_that_is_not_a_finite_number_raises():
    class Bad(Shelf):
        def turn_reward(self, action, replies):
            return float("nan")

    env = Bad()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="finite number or None"):
        env.step({"role": "assistant", "content": "done"})


def test_truncation_scores_and_marks_status():
    env = Shelf(max_turns=2)
    env.reset(seed=0)
    env.step(_call("put", {"item": "a"}))
    _, reward, terminated, truncated, info = env.step(_call("put", {"item": "b"}))
    assert truncated and not terminated and reward == 0.0 and info["status"] == "truncated"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "1.0", None, [1.0]])
def test_verifier_garbage_is_an_error_not_a_number(bad):
    class Broken(Shelf):
        verifier = agentgym.Rubric([lambda traj, task: bad])

    env = Broken()
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step({"role": "assistant", "content": "done"})
    assert terminated and reward == 0.0
    assert env.trajectory.status == "env_error" and "<lambda>" in info["verifier_errors"]


def test_verifier_exception_is_recorded():
    def boom(traj, task):
        raise KeyError("answer")

    class Broken(Shelf):
        verifier = agentgym.Rubric([boom])

    env = Broken()
    env.reset(seed=0)
    env.step({"role": "assistant", "content": "done"})
    assert env.trajectory.status == "env_error"
    assert env.trajectory.metadata["verifier_errors"]["boom"].startswith("raised KeyError")


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=500),
        st.builds(
            lambda n, a: f"<tool_call>{json.dumps({'name': n, 'arguments': a})}</tool_call>",
            st.sampled_from(["put", "explode", "x"]),
            st.dictionaries(
                st.sampled_from(["item", "count", "z"]),
                st.one_of(st.integers(), st.text(max_size=5), st.none(), st.floats()),
            ),
        ),
    )
)
def test_arbitrary_text_never_raises_from_step(text):
    env = agentgym.make("toy/calculator-v0")
    env.reset(seed=0, options={"task_id": "calc-1"})
    obs, reward, terminated, truncated, info = env.step({"role": "assistant", "content": text})
    assert isinstance(obs, list) and isinstance(reward, float)
    shelf = Shelf()
    shelf.reset(seed=0)
    shelf.step({"role": "assistant", "content": text})


class Clock(Shelf):
    """A Shelf with an async tool and a tool that exits like argparse does on bad input."""

    loops: list = []

    @tool
    async def wait(self, seconds: float) -> str:
        """Wait, then report.

        Args:
            seconds: how long
        """
        Clock.loops.append(asyncio.get_running_loop())
        await asyncio.sleep(seconds)
        return f"waited {seconds}"

    @tool
    def parse(self, flag: str) -> str:
        """Parse a flag."""
        raise SystemExit(2)


def test_async_tools_are_awaited_on_the_callers_loop():
    env = Clock()
    env.reset(seed=0)
    obs, *_ = env.step(_call("wait", {"seconds": 0}))  # sync step: runs it to completion
    assert obs[0]["content"] == "waited 0"

    async def main():
        env.reset(seed=0)
        obs, reward, terminated, truncated, _ = await env.astep(_call("wait", {"seconds": 0.01}))
        assert obs[0]["content"] == "waited 0.01" and not terminated
        assert Clock.loops[-1] is asyncio.get_running_loop()
        obs, *_ = await env.astep(_call("wait", {"seconds": "soon"}))
        assert obs[0]["content"].startswith("Error: wait: argument 'seconds' must be a finite number")
        _, reward, terminated, *_ = await env.astep({"role": "assistant", "content": "done"})
        assert terminated and reward == 1.0

    asyncio.run(main())


def test_tool_exiting_is_an_observation():
    env = Clock()
    env.reset(seed=0)
    obs, *_ = env.step(_call("parse", {"flag": "--nope"}))
    assert obs[0]["content"] == "Error: parse exited (SystemExit 2)" and not env.done


@pytest.mark.parametrize("calls", [5, "x", {"function": {"name": "put", "arguments": {"item": "pen"}}}])
def test_tool_calls_that_are_not_a_list(calls):
    env = Shelf()
    env.reset(seed=0)
    obs, reward, terminated, *_ = env.step({"role": "assistant", "content": "", "tool_calls": calls})
    expected = "1 items" if isinstance(calls, dict) else "Error: malformed tool call"
    assert [m["content"] for m in obs] == [expected] and not terminated
    assert isinstance(env.trajectory.messages[-2]["tool_calls"], list)  # the record stays valid


def test_tool_arguments_decode_exactly_as_json_loads():
    """Tool-call arguments decode as ``json.loads`` decodes them (integers past 64 bits stay exact
    ints, lone surrogates are kept), except NaN and Infinity, which JSON does not have: refused in
    a model's text and in a structured call alike."""
    from agentgym.parsing import loads_json

    cases = [
        '{"n": 123456789012345678901234567890}',
        '{"n": -9223372036854775809, "m": 18446744073709551616}',
        '{"x": 1e308, "y": 0.1000000000000000055511151231257827, "z": -0.0, "w": 1e400}',
        '{"s": "\\ud800", "t": "caf\\u00e9 \\ud83d\\ude00"}',
        '{"a": [1, {"b": null, "c": true}], "d": ""}',
    ]
    for raw in cases:
        got, want = loads_json(raw), json.loads(raw)
        assert got == want and repr(got) == repr(want), raw
    for bad in ('{"a": ', "{'a': 1}", '{"a": 1,}', '{"x": NaN}', "[Infinity]"):
        with pytest.raises(ValueError):
            loads_json(bad)
    env = agentgym.make("toy/calculator-v0")
    env.reset(seed=0)
    call = tool_call("calculator", {})
    call["function"]["arguments"] = '{"expression": NaN}'
    replies, *_ = env.step({"role": "assistant", "content": "", "tool_calls": [call]})
    assert replies[0]["content"].startswith("Error: arguments of calculator are not valid JSON"), replies

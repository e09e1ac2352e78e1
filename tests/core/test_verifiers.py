import pytest

from agentgym.types import Task, Trajectory, tool_call
from agentgym.verifiers import Rubric, StaticTraceVerifier, check_reward, format_reward


def _t(*messages):
    return Trajectory(messages=list(messages))


def _call(name, args):
    return {"role": "assistant", "content": "", "tool_calls": [tool_call(name, args)]}


def test_rubric_weights_metrics_and_sum_above_one():
    def correct(traj, task):
        return 1.0

    def length(traj, task):
        return 7.0

    score = Rubric([correct, format_reward, length], weights=[1.0, 0.2, 0.0])(
        _t({"role": "assistant", "content": "4"}), Task("t")
    )
    assert score.total == pytest.approx(1.2)
    assert score.breakdown == {"correct": 1.0, "format_reward": 1.0, "length": 7.0}
    with pytest.raises(ValueError, match="2 functions but 1 weights"):
        Rubric([correct, length], weights=[1.0])


@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), -float("inf"), "0.5", None, complex(1, 0), [1]]
)
def test_check_reward_refuses_non_finite_and_non_numbers(value):
    with pytest.raises(ValueError):
        check_reward(value)


def test_check_reward_accepts_numbers():
    import numpy as np

    assert check_reward(True) == 1.0 and check_reward(3) == 3.0 and check_reward(np.float32(0.5)) == 0.5


def test_format_reward():
    good = _t(_call("a", {}), {"role": "tool", "content": "x"}, {"role": "assistant", "content": "42"})
    assert format_reward(good) == 1.0
    bad = _t(
        {"role": "assistant", "content": "<tool_call>{bad</tool_call>"}, {"role": "tool", "content": "Error"}
    )
    assert format_reward(bad) == 0.0
    assert format_reward(_t()) == 0.0


def test_static_trace_verifier_checks_each_constraint():
    v = StaticTraceVerifier(
        required_calls=["search", "open"],
        argument_schemas={
            "search": {
                "type": "object",
                "properties": {"q": {"type": "string", "minLength": 1}},
                "required": ["q"],
                "additionalProperties": False,
            }
        },
        answer_pattern=r"^\$\d+\.\d\d$",
        forbidden_tools=["delete"],
        max_turns=4,
    )
    good = _t(
        _call("search", {"q": "tea"}),
        {"role": "tool", "content": "r"},
        _call("open", {"id": 1}),
        {"role": "tool", "content": "p"},
        {"role": "assistant", "content": "$4.50"},
    )
    assert v(good) == 1.0 and all(ok for ok, _ in v.check(good).values())
    bad = _t(
        _call("open", {"id": 1}),
        _call("search", {"query": "tea"}),
        _call("delete", {}),
        _call("x", {}),
        _call("y", {}),
        {"role": "assistant", "content": "4.5"},
    )
    checks = v.check(bad)
    assert {k for k, (ok, _) in checks.items() if not ok} == {
        "required_calls",
        "argument_schemas",
        "answer_pattern",
        "forbidden_tools",
        "max_turns",
    }
    assert "arguments.q is required" in checks["argument_schemas"][1]
    assert "arguments.query is not allowed" in checks["argument_schemas"][1]
    assert v(bad) == 0.0
    assert StaticTraceVerifier(required_calls=["search"], forbidden_tools=["delete"])(bad) == 0.5

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


def test_rubric_records_exits_overflow_and_keeps_same_named_functions_apart():
    def exits(traj, task):
        raise SystemExit(1)

    def one(traj, task):
        return 1.0

    t = _t({"role": "assistant", "content": "4"})
    s = Rubric([exits, one])(t, Task("t"))
    assert s.errors == {"exits": "raised SystemExit: 1"} and s.total == 1.0
    s = Rubric([one, one, lambda traj, task: 0.5])(t, Task("t"))
    assert s.breakdown == {"one": 1.0, "one_2": 1.0, "<lambda>": 0.5} and s.total == 2.5
    s = Rubric([one, one], weights=[1e308, 1e308])(t, Task("t"))
    assert s.total == 0.0 and "overflowed" in s.errors["total"]


def test_static_trace_verifier_order_and_malformed_calls():
    v = StaticTraceVerifier(required_calls=["a", "b", "a"])
    names = lambda *ns: _t(*[_call(n, {}) for n in ns])  # noqa: E731
    assert v(names("a", "b", "a")) == 1.0
    assert v(names("a", "x", "b", "y", "a")) == 1.0
    assert v(names("b", "a", "a")) == 0.0 and v(names("a", "a", "b")) == 0.0
    assert v.check(names("a", "b"))["required_calls"][1].startswith("missing call 'a'")
    # a call without a function (the env answered it with an error) is no call, not a crash
    broken = _t({"role": "assistant", "content": "", "tool_calls": [{"id": "x"}, "junk"]})
    assert v(broken) == 0.0
    assert StaticTraceVerifier(forbidden_tools=["rm"])(broken) == 1.0

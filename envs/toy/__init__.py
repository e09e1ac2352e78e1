"""Toy environments: tiny, deterministic tool envs for fast tests and the tiny-model quickstart.

``toy/calculator-v0``: an arithmetic word task, a ``calculator`` tool, and an exact check of the
final answer. ``difficulty`` 1 asks "What is 7 + 5?"; 2 adds word problems with two operations;
3 uses three operations and larger numbers.

Policies it provides: ``scripted`` (a correct solver: one calculator call, then the answer).
"""

from __future__ import annotations

import ast
import operator
from typing import Any

import numpy as np

from agentgym.env import ToolEnv
from agentgym.policy import PolicySpec
from agentgym.tools import tool
from agentgym.types import Message, Task, Trajectory, tool_call
from agentgym.verifiers import Rubric, final_answer, format_reward

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


def safe_eval(expression: str) -> int:
    """Evaluate integer arithmetic with + - * and parentheses; anything else raises ValueError.

    >>> safe_eval("(2 + 3) * 4")
    20
    """
    if len(expression) > 200:
        raise ValueError("expression too long (200 characters at most)")
    try:
        node = ast.parse(expression.strip(), mode="eval").body
    except SyntaxError:
        raise ValueError(f"cannot parse {expression!r}; use numbers, + - * and parentheses") from None

    def ev(n: ast.AST) -> int:
        if isinstance(n, ast.Constant) and isinstance(n.value, int) and not isinstance(n.value, bool):
            return n.value
        if isinstance(n, ast.BinOp) and type(n.op) in _OPS:
            value = _OPS[type(n.op)](ev(n.left), ev(n.right))
            if abs(value) > 10**12:
                raise ValueError("result too large")
            return value
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub):
            return -ev(n.operand)
        raise ValueError(f"unsupported expression {expression!r}; use integers, + - * and parentheses")

    return ev(node)


_ITEMS = ["apples", "books", "coins", "stamps", "pencils", "marbles", "cards", "shells"]
_NAMES = ["Ada", "Ben", "Chen", "Dara", "Eli", "Fay", "Gus", "Hana"]


def make_task(index: int, difficulty: int) -> Task:
    """The task with this index: the same index and difficulty always give the same task."""
    rng = np.random.default_rng([index, difficulty])
    if difficulty == 1:
        a, b = (int(x) for x in rng.integers(1, 10, size=2))
        op = ["+", "-", "*"][int(rng.integers(3))]
        expr = f"{a} {op} {b}"
        prompt = f"What is {expr}?"
    elif difficulty == 2:
        name, item = _NAMES[int(rng.integers(8))], _ITEMS[int(rng.integers(8))]
        a, b, c = (int(x) for x in rng.integers(2, 30, size=3))
        if rng.integers(2):
            expr = f"{a} + {b} * {c}"
            prompt = f"{name} has {a} {item} and buys {b} boxes of {c} {item}. How many {item} does {name} have now?"
        else:
            a = a + b * c
            expr = f"{a} - {b} * {c}"
            prompt = f"{name} has {a} {item} and gives away {b} bags of {c} {item}. How many {item} are left?"
    else:
        a, b, c, d = (int(x) for x in rng.integers(10, 300, size=4))
        expr = f"({a} + {b}) * {c} - {d}"
        prompt = f"Compute ({a} plus {b}) times {c}, minus {d}."
    return Task(task_id=f"calc-{index}", prompt=prompt, answer=str(safe_eval(expr)), info={"expression": expr})


def exact_answer(traj: Trajectory, task: Task) -> float:
    """1.0 when the final answer is exactly the number asked for (surrounding spaces ignored)."""
    ans = final_answer(traj)
    return float(ans is not None and ans.strip() == task.answer)


def used_calculator(traj: Trajectory, task: Task) -> float:
    return float(any(m.get("role") == "tool" and m.get("name") == "calculator" for m in traj.messages))


class CalculatorEnv(ToolEnv):
    system_prompt = (
        "Solve the arithmetic task. Call the calculator tool with an expression, "
        "then reply with only the final number."
    )
    verifier = Rubric([exact_answer, format_reward, used_calculator], weights=[1.0, 0.0, 0.0])
    max_turns = 4

    def __init__(self, difficulty: int = 2, max_turns: int | None = None, **kwargs: Any):
        if difficulty not in (1, 2, 3):
            raise ValueError(f"difficulty must be 1, 2 or 3, got {difficulty}")
        super().__init__(max_turns=max_turns, **kwargs)
        self.difficulty = difficulty

    @tool
    def calculator(self, expression: str) -> str:
        """Evaluate an integer arithmetic expression.

        Args:
            expression: integers with + - * and parentheses, e.g. "3 + 4 * 2"
        """
        return str(safe_eval(expression))

    def load_task(self, task_id: str | None) -> Task:
        if task_id is None:
            return make_task(int(self.np_random.integers(10**6)), self.difficulty)
        try:
            index = int(str(task_id).removeprefix("calc-"))
        except ValueError:
            raise ValueError(f"toy/calculator task ids look like 'calc-12', got {task_id!r}") from None
        return make_task(index, self.difficulty)

    def task_ids(self, n: int, seed: int = 0) -> list[str]:
        return [f"calc-{seed * 1_000_000 + i}" for i in range(n)]

    def make_policy(self, spec: PolicySpec):
        if spec.name in ("scripted", "teacher"):
            return ScriptedCalculator()
        return None


class ScriptedCalculator:
    """Solves calculator tasks: one calculator call with the task's expression, then the answer."""

    async def act(self, traj: Trajectory, env: CalculatorEnv) -> Message:
        return self.reply(traj, env.task)

    @staticmethod
    def reply(traj: Trajectory, task: Task) -> Message:
        last = traj.messages[-1]
        if last.get("role") == "tool" and last.get("name") == "calculator":
            return {"role": "assistant", "content": last["content"]}
        return {"role": "assistant", "content": "", "tool_calls": [tool_call("calculator", {"expression": task.info["expression"]})]}

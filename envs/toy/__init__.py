"""Toy environments: tiny, deterministic tool envs for fast tests and the tiny-model quickstart.

``toy/calculator-v0``: an arithmetic word task, a ``calculator`` tool, and an exact check of the
final answer. ``difficulty`` 1 asks "What is 7 + 5?"; 2 adds word problems with two operations;
3 uses three operations and larger numbers.

Policies it provides: ``scripted`` (a correct solver: one calculator call, then the answer).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from agentgym.env import ToolEnv
from agentgym.policy import PolicySpec
from agentgym.tools import tool
from agentgym.types import Message, Task, Trajectory, tool_call
from agentgym.verifiers import Rubric, final_answer, format_reward

_TOKEN = re.compile(r"\s*(?:(\d+)|(\S))")
_PRECEDENCE = {"+": 1, "-": 1, "*": 2}


def _apply(values: list[int], op: str) -> None:
    b = values.pop()
    if op == "neg":
        values.append(-b)
        return
    a = values.pop()
    value = a + b if op == "+" else a - b if op == "-" else a * b
    if abs(value) > 10**12:
        raise ValueError("result too large")
    values.append(value)


def safe_eval(expression: str) -> int:
    """Evaluate integer arithmetic with + - * and parentheses; anything else raises ValueError.

    Shunting-yard over a regex tokenizer (no ``eval``, no ``ast``): it runs on every toy step,
    so it is kept cheap.

    >>> safe_eval("(2 + 3) * 4 - -1")
    21
    """
    if len(expression) > 200:
        raise ValueError("expression too long (200 characters at most)")
    bad = ValueError(f"cannot evaluate {expression!r}; use integers, + - * and parentheses")
    values: list[int] = []
    ops: list[str] = []
    expect_value = True
    consumed = 0
    for m in _TOKEN.finditer(expression):
        consumed = m.end()
        num, op = m.groups()
        if num is not None:
            if not expect_value:
                raise bad
            values.append(int(num))
            expect_value = False
        elif op == "(" and expect_value:
            ops.append("(")
        elif op == "-" and expect_value:
            ops.append("neg")
        elif op == ")" and not expect_value:
            while ops and ops[-1] != "(":
                _apply(values, ops.pop())
            if not ops:
                raise bad
            ops.pop()
        elif op in _PRECEDENCE and not expect_value:
            while ops and ops[-1] != "(" and (ops[-1] == "neg" or _PRECEDENCE[ops[-1]] >= _PRECEDENCE[op]):
                _apply(values, ops.pop())
            ops.append(op)
            expect_value = True
        else:
            raise bad
    if expect_value or "(" in ops or expression[consumed:].strip():
        raise bad
    while ops:
        _apply(values, ops.pop())
    return values[0]


_ITEMS = ["apples", "books", "coins", "stamps", "pencils", "marbles", "cards", "shells"]
_NAMES = ["Ada", "Ben", "Chen", "Dara", "Eli", "Fay", "Gus", "Hana"]


class _Draws:
    """A tiny deterministic generator (splitmix64), far cheaper to seed than ``random.Random``."""

    def __init__(self, seed: int):
        self.state = seed & 0xFFFFFFFFFFFFFFFF

    def next(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        return z ^ (z >> 31)

    def randint(self, lo: int, hi: int) -> int:
        return lo + self.next() % (hi - lo + 1)

    def choice(self, seq):
        return seq[self.next() % len(seq)]

    def random(self) -> float:
        return self.next() / 2**64


def make_task(index: int, difficulty: int) -> Task:
    """The task with this index: the same index and difficulty always give the same task."""
    rng = _Draws(index * 4 + difficulty)
    if difficulty == 1:
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        op = rng.choice("+-*")
        expr = f"{a} {op} {b}"
        answer = a + b if op == "+" else a - b if op == "-" else a * b
        prompt = f"What is {expr}?"
    elif difficulty == 2:
        name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
        a, b, c = rng.randint(2, 29), rng.randint(2, 29), rng.randint(2, 29)
        if rng.random() < 0.5:
            expr, answer = f"{a} + {b} * {c}", a + b * c
            prompt = f"{name} has {a} {item} and buys {b} boxes of {c} {item}. How many {item} does {name} have now?"
        else:
            a = a + b * c
            expr, answer = f"{a} - {b} * {c}", a - b * c
            prompt = f"{name} has {a} {item} and gives away {b} bags of {c} {item}. How many {item} are left?"
    else:
        a, b, c, d = (rng.randint(10, 299) for _ in range(4))
        expr, answer = f"({a} + {b}) * {c} - {d}", (a + b) * c - d
        prompt = f"Compute ({a} plus {b}) times {c}, minus {d}."
    return Task(task_id=f"calc-{index}", prompt=prompt, answer=str(answer), info={"expression": expr})


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
    policies = {"scripted": f"{__name__}:scripted_calculator", "teacher": f"{__name__}:scripted_calculator"}

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


def scripted_calculator(spec: PolicySpec, env: CalculatorEnv) -> ScriptedCalculator:
    """``scripted`` and ``teacher`` on the calculator (``scripted:delay=0.05`` adds latency)."""
    return ScriptedCalculator(delay=spec.get("delay", 0.0, float))


class ScriptedCalculator:
    """Solves calculator tasks: one calculator call with the task's expression, then the answer.

    ``delay`` (seconds per turn, spec ``scripted:delay=0.05``) stands in for model latency in
    benchmarks and tests.
    """

    def __init__(self, delay: float = 0.0):
        self.delay = delay

    async def act(self, traj: Trajectory, env: CalculatorEnv) -> Message:
        if self.delay > 0:
            await asyncio.sleep(self.delay)
        return self.reply(traj, env.task)

    @staticmethod
    def reply(traj: Trajectory, task: Task) -> Message:
        last = traj.messages[-1]
        if last.get("role") == "tool" and last.get("name") == "calculator":
            return {"role": "assistant", "content": last["content"]}
        return {
            "role": "assistant",
            "content": "",
            "tool_calls": [tool_call("calculator", {"expression": task.info["expression"]})],
        }

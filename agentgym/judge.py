"""An LLM judge as a reward function: ``judge:POLICY_SPEC`` (any policy backend: ``hf:DIR``,
``vllm:DIR``, ``openai:URL,model=NAME``, ...), or ``Judge(policy)`` with a policy object.

    agentgym eval --env toy/calculator-v0 --policy scripted --n 10 \\
        --verifier judge:openai:http://127.0.0.1:8000/v1,model=judge,temperature=0,max_tokens=256

The judge is shown ``RUBRIC`` as its system message and the trajectory as text (``render``: the
task, each of the agent's turns with its tool calls, each tool result, and the final answer; the
task's reference answer is not shown). Its reply must end with a line ``SCORE: x`` with x in
[0, 1]; ``SCORE: 8/10`` reads as 0.8, and the last such line counts. A reply without one, a score
outside [0, 1], a judge that raises or gives no reply within ``timeout`` seconds is a verifier
error: the episode becomes ``env_error`` with the reason in ``metadata["verifier_errors"]``, never
a silent 0. Sampling follows the spec (``temperature=0`` for a deterministic judge).

The judge's coroutines run on an event loop of its own, in a thread, so a judge can be called
from plain code, from a rubric inside an env, or from the rollout runner's worker threads.

>>> parse_score("The agent used the tool and answered correctly.\\nSCORE: 0.8")
0.8
>>> parse_score("score: 7 / 10")
0.7
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import re
import threading
from typing import Any

from agentgym.policy import Policy, PolicySpec, parse_spec, resolve_policy
from agentgym.types import Task, Trajectory

RUBRIC = """You grade the work of an AI agent that used tools to solve a task.
You are shown the task, every turn of the agent (its messages and tool calls), the tools' results
and the agent's final answer. Judge whether the final answer solves the task correctly and
whether the agent's steps support it. Explain briefly, then end your reply with one line
SCORE: x
where x is a number from 0 (wrong or no answer) to 1 (fully correct), e.g. SCORE: 0.8"""

_SCORE = re.compile(r"SCORE\s*:\s*([-+]?\d+(?:\.\d+)?)\s*(?:/\s*(\d+(?:\.\d+)?))?", re.IGNORECASE)


def parse_score(reply: str) -> float:
    """The score in a judge's reply (the last ``SCORE: x`` or ``SCORE: a/b``); raises
    ``ValueError`` saying what was wrong when there is none or it lies outside [0, 1]."""
    found = list(_SCORE.finditer(reply or ""))
    if not found:
        raise ValueError(f"the judge's reply has no 'SCORE: x' line (x in [0, 1]): {reply!r:.300}")
    num, den = found[-1].groups()
    value = float(num)
    if den is not None:
        if float(den) == 0:
            raise ValueError(f"the judge's score {found[-1].group(0)!r} divides by zero")
        value /= float(den)
    if not 0.0 <= value <= 1.0:
        raise ValueError(
            f"the judge's score {found[-1].group(0)!r} is outside [0, 1] (write SCORE: 0.8 or SCORE: 8/10)"
        )
    return value


def render(traj: Trajectory, task: Task | None = None) -> str:
    """The trajectory as the judge reads it."""
    from agentgym.verifiers import final_answer

    messages = list(traj.messages)
    first_user = next((i for i, m in enumerate(messages) if m.get("role") == "user"), None)
    prompt = task.prompt if task is not None and task.prompt else None
    if prompt is None and first_user is not None:
        prompt = messages[first_user].get("content") or ""
    lines = [f"TASK:\n{prompt or '(none)'}", "", "TRAJECTORY:"]
    for m in messages[(first_user + 1 if first_user is not None else 0) :]:
        role, content = m.get("role"), m.get("content") or ""
        if role == "assistant":
            lines.append(f"[agent] {content}".rstrip())
            for call in m.get("tool_calls") or []:
                fn = call.get("function", {}) if isinstance(call, dict) else {}
                lines.append(f"[agent calls] {fn.get('name')}({fn.get('arguments', '')})")
        elif role == "tool":
            lines.append(f"[tool {m.get('name') or ''}] {content}".rstrip())
        elif role != "system":
            lines.append(f"[{role}] {content}".rstrip())
    answer = final_answer(traj)
    lines += [
        "",
        f"FINAL ANSWER:\n{answer if answer is not None else '(none: the agent gave no final answer)'}",
    ]
    return "\n".join(lines)


class _NoTools:
    """What a judge policy is resolved against: no env, no tools."""

    env_id = "judge"
    tool_schemas: list[dict[str, Any]] = []
    policies: dict[str, str] = {}


class Judge:
    """An LLM judge as a reward function ``(trajectory, task) -> float`` in [0, 1].

    Args:
        policy: a policy spec string (resolved on the first call, closed by ``close``) or a
            policy object (the caller's to close).
        rubric: the system message.
        timeout: seconds one judgement may take.
    """

    __name__ = "judge"

    def __init__(self, policy: str | PolicySpec | Policy, rubric: str = RUBRIC, timeout: float = 600.0):
        if isinstance(policy, str | PolicySpec):
            self.policy_spec: str | None = str(parse_spec(policy))
            self.policy: Policy | None = None
        else:
            self.policy_spec, self.policy = None, policy
        self.rubric = rubric
        self.timeout = timeout
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def __getstate__(self) -> dict[str, Any]:  # shipped to Ray actors: the spec, not the loop
        if self.policy_spec is None:
            return dict(self.__dict__, _lock=None, _loop=None, _thread=None)
        return dict(self.__dict__, policy=None, _lock=None, _loop=None, _thread=None)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    def _start(self) -> tuple[asyncio.AbstractEventLoop, Policy]:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._loop.run_forever, name="agentgym-judge", daemon=True
                )
                self._thread.start()
            if self.policy is None:
                self.policy = resolve_policy(self.policy_spec, _NoTools())
            return self._loop, self.policy

    def ask(self, traj: Trajectory, task: Task | None = None) -> str:
        """The judge's reply to one trajectory."""
        loop, policy = self._start()
        seat = Trajectory(
            messages=[
                {"role": "system", "content": self.rubric},
                {"role": "user", "content": render(traj, task)},
            ],
            env="judge",
            task_id=traj.task_id,
            metadata={"seed": traj.metadata.get("seed")},
        )
        future = asyncio.run_coroutine_threadsafe(policy.act(seat, _NoTools()), loop)
        try:
            reply = future.result(self.timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"the judge gave no reply within {self.timeout} s") from None
        if reply.get("tool_calls"):
            return reply.get("content") or json.dumps(reply["tool_calls"])
        return reply.get("content") or ""

    def __call__(self, traj: Trajectory, task: Task | None = None) -> float:
        return parse_score(self.ask(traj, task))

    def close(self) -> None:
        """Stop the judge's loop, and its policy when it was built from a spec."""
        if self.policy is not None and self.policy_spec is not None:
            close = getattr(self.policy, "close", None)
            if close is not None:
                close()
            self.policy = None
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()
            self._loop = self._thread = None

"""The web teacher: the shortest action path for a task, played in the browser one tool call a turn.

For each subtask the teacher walks the site's topology (breadth-first over links) from the page it
is on to each page the task needs, clicking the link whose name and target match in the current
snapshot; form steps (choose a quantity, press "Add to cart") are found by role and name. It ends
with ``answer``. It serves as ``--policy teacher`` and as the generator behind
``agentgym generate teacher`` (``generate_teacher``), which keeps only trajectories the env's own
verifier scores 1.0.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from urllib.parse import urljoin

from agentgym.envs.web.browser import parse_snapshot

from agentgym.types import Message, Trajectory, tool_call, write_jsonl


@dataclass
class _Plan:
    traj: Trajectory
    steps: list[dict] = field(default_factory=list)
    """high-level steps still to do: {"visit": url}, {"select": [...]}, {"click": [...]}, {"answer": text}"""
    clicks: list[tuple[str, str]] = field(default_factory=list)
    """the link clicks of the visit in progress: (link text, target url)"""


class WebTeacher:
    """A deterministic player that knows the task's plan and the site's link graph."""

    def __init__(self) -> None:
        self._plans: dict[int, _Plan] = {}

    def _plan(self, traj: Trajectory, env) -> _Plan:
        plan = self._plans.get(id(traj))
        if plan is None or plan.traj is not traj:
            subs = env.task.info["subtasks"]
            steps = [step for sub in subs for step in sub["plan"]]
            text = " | ".join("done" if "cart" in sub else str(sub["answer"]) for sub in subs)
            plan = _Plan(traj, steps + [{"answer": text}])
            if len(self._plans) >= 256:  # forget the oldest episodes
                self._plans.pop(next(iter(self._plans)))
            self._plans[id(traj)] = plan
        return plan

    async def act(self, traj: Trajectory, env) -> Message:
        plan = self._plan(traj, env)
        here = env.current_url
        nodes = parse_snapshot(env.snapshot)
        turn = sum(1 for m in traj.messages if m.get("role") == "assistant")
        while not plan.clicks and plan.steps and "visit" in plan.steps[0]:
            target = env.site.url(plan.steps.pop(0)["visit"])
            path = env.site.shortest_path(here, target)
            if path is None:
                return _say(f"Open {target} directly.", "goto", {"url": target}, turn)
            plan.clicks = list(path)
        if plan.clicks:
            text, target = plan.clicks.pop(0)
            links = [n for n in nodes if n.role == "link" and n.name == text]
            exact = [n for n in links if n.url and urljoin(here, n.url).split("#")[0] == target]
            node = (exact or links or [None])[0]
            if node is None:
                plan.clicks = []
                return _say(f"Open {target} directly.", "goto", {"url": target}, turn)
            return _say(f"Follow the link {text!r}.", "click", {"ref": node.ref}, turn)
        step = plan.steps.pop(0) if plan.steps else {"answer": ""}
        if "answer" in step:
            return _say("I have everything the task asks for.", "answer", {"text": step["answer"]}, turn)
        kind = "select" if "select" in step else "click"
        role, name, *option = step[kind]
        node = next((n for n in nodes if n.role == role and n.name == name), None)
        if node is None:
            return _say(
                f"I cannot find {role} {name!r}; answering with what I know.",
                "answer",
                {"text": plan.steps[-1]["answer"]},
                turn,
            )
        if kind == "select":
            return _say(
                f"Choose {option[0]} in {name!r}.", "select", {"ref": node.ref, "option": option[0]}, turn
            )
        return _say(f"Press {name!r}.", "click", {"ref": node.ref}, turn)


def web_teacher(spec, env) -> WebTeacher:
    """``teacher`` and ``scripted`` on the web envs."""
    return WebTeacher()


def _say(thought: str, name: str, args: dict, turn: int) -> Message:
    return {
        "role": "assistant",
        "content": thought,
        "tool_calls": [tool_call(name, args, call_id=f"call_{turn}")],
    }


def generate_teacher(
    env_id: str, n: int, out: str, subtasks: int = 1, seed: int = 0, log=None, concurrency: int = 2
) -> tuple[int, int]:
    """Write ``n`` teacher trajectories of ``env_id`` to ``out`` (JSONL); returns (kept, failed).

    The episodes run through the rollout runner (its time limits and statuses; each episode in
    flight has a browser context of its own). Every trajectory is scored by the env's own
    verifier; only those that score 1.0 with status ok are written.
    """
    from agentgym.rollout import run_rollouts

    log = log or (lambda s: print(s, file=sys.stderr))
    trajs = run_rollouts(
        env_id, "teacher", n=n, seed=seed, concurrency=concurrency, env_kwargs={"subtasks": subtasks}
    )
    kept = []
    for traj in sorted(trajs, key=lambda t: t.task_id):
        traj.metadata.update(generator="teacher", subtasks=subtasks)
        if traj.status == "ok" and traj.score == 1.0:
            kept.append(traj)
        else:
            log(f"task {traj.task_id}: status {traj.status}, score {traj.score}; not kept")
    write_jsonl(out, kept)
    return len(kept), len(trajs) - len(kept)

"""Verifiers of web tasks: the agent's answer (normalised) and the final page state.

Each subtask is checked on its own and the score is their mean. Answer subtasks compare the
normalised answer text with the accepted answers (``answers``, else ``answer``); cart subtasks read the cart from the page's ``localStorage`` captured by
the env when the episode ended (``metadata["final_state"]``), never from anything the agent wrote;
navigation subtasks also require the final URL.
"""

from __future__ import annotations

import json
import re

from agentgym.envs.web.site import normalize_answer

from agentgym.types import Task, Trajectory
from agentgym.verifiers import tool_calls_of


def submitted_answer(traj: Trajectory) -> str | None:
    """The text of the last ``answer`` call, or None."""
    for name, args in reversed(tool_calls_of(traj)):
        if name == "answer" and isinstance(args, dict) and isinstance(args.get("text"), str):
            return args["text"]
    return None


def _cart(traj: Trajectory) -> dict[str, int]:
    state = traj.metadata.get("final_state") or {}
    try:
        cart = json.loads((state.get("local_storage") or {}).get("cart") or "{}")
        return {str(k): int(v) for k, v in cart.items()} if isinstance(cart, dict) else {}
    except (ValueError, TypeError):
        return {}


def subtask_scores(traj: Trajectory, task: Task) -> list[float]:
    """1.0 or 0.0 for each subtask of the task, in order."""
    subs = task.info["subtasks"]
    text = submitted_answer(traj)
    parts = [p for p in re.split(r"\s*\|\s*", text.strip())] if text is not None else []
    if len(subs) == 1 and text is not None:
        parts = [text]
    cart = _cart(traj)
    final_url = (traj.metadata.get("final_state") or {}).get("url", "")
    scores = []
    for i, sub in enumerate(subs):
        given = parts[i] if i < len(parts) else None
        if "cart" in sub:
            ok = all(cart.get(sku) == qty for sku, qty in sub["cart"].items())
        else:
            accepted = {normalize_answer(a) for a in sub.get("answers") or [sub["answer"]]}
            ok = given is not None and normalize_answer(given) in accepted
            if ok and sub.get("final_url"):
                ok = final_url.split("#")[0] == sub["final_url"]
        scores.append(float(ok))
    return scores


def task_success(traj: Trajectory, task: Task) -> float:
    """Mean of the subtask scores (0 when no answer was given)."""
    if submitted_answer(traj) is None:
        return 0.0
    scores = subtask_scores(traj, task)
    return sum(scores) / len(scores)


def pages_visited(traj: Trajectory, task: Task) -> float:
    """Metric: the fraction of the pages the task needs that the agent actually saw."""
    need = [step["visit"] for sub in task.info["subtasks"] for step in sub["plan"] if "visit" in step]
    if not need:
        return 1.0
    seen = set(
        re.findall(
            r"^URL: (\S+)$",
            "\n".join(m.get("content") or "" for m in traj.messages if m.get("role") in ("tool", "user")),
            re.M,
        )
    )
    origin = task.info.get("origin", "")
    return sum(1 for u in need if (u if u.startswith("http") else origin + u) in seen) / len(need)

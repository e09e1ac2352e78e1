"""Verifiers: plain reward functions composed with weights, and a declarative trace checker.

A reward function takes ``(trajectory, task)`` and returns a finite float (most in [0, 1]). A
``Rubric`` sums them with weights; weight 0 makes a function a metric that is reported but not
scored. Anything that is not a finite number (NaN, infinity, a string, an exception) is recorded
as a verifier error, never turned into a silent number.

>>> from agentgym.types import Trajectory, Task
>>> def correct(traj, task):
...     return float(traj.messages[-1]["content"] == task.answer)
>>> rubric = Rubric([correct, format_reward], weights=[1.0, 0.2])
>>> t = Trajectory(messages=[{"role": "assistant", "content": "4"}])
>>> rubric(t, Task("t", answer="4")).total
1.2

Learned and judged rewards come from a spec string (``make_verifier``): ``rm:DIR`` scores with a
reward model from ``agentgym train rm`` (``agentgym.trainers.rm``), ``judge:POLICY_SPEC`` asks
any policy backend (``judge:hf:DIR,temperature=0``, ``judge:openai:URL,model=NAME``) to grade the
trajectory (``agentgym.judge``). Either can score any env's episodes: ``agentgym rollout|eval
--verifier SPEC`` (``run_rollouts(..., verifier=SPEC)``) puts its value in place of the env's
score, and the env's own total stays in the breakdown as ``env_score``.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentgym.parsing import Format, parse_tool_calls
from agentgym.types import Task, Trajectory

RewardFn = Callable[[Trajectory, Task], float]


@dataclass
class Score:
    """A verifier's verdict: the weighted total, each function's value, and any errors."""

    total: float = 0.0
    breakdown: dict[str, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    """function name -> why its value was refused; a non-empty dict makes the episode env_error"""


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


def check_reward(value: Any) -> float:
    """Return ``value`` as a float if it is a finite real number, else raise ``ValueError``."""
    if type(value) is float and math.isfinite(value):
        return value
    if isinstance(value, bool):
        return float(value)
    if not isinstance(value, int | float) or isinstance(value, complex):
        try:
            import numpy as np

            if isinstance(value, np.generic) and np.isreal(value):
                value = value.item()
            else:
                raise TypeError
        except (ImportError, TypeError):
            raise ValueError(f"returned {type(value).__name__} {value!r:.80}, not a number") from None
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"returned {value}, not a finite number")
    return value


def run_reward(fn: Callable[..., Any], traj: Trajectory, task: Task) -> tuple[float, str | None]:
    """Call one reward function; returns (value, None) or (0.0, reason) for a bad value or a crash."""
    try:
        return check_reward(fn(traj, task)), None
    except (Exception, SystemExit) as e:  # a verifier bug must not kill the rollout; it is recorded
        if isinstance(e, ValueError) and str(e).startswith("returned "):
            return 0.0, str(e)
        return 0.0, f"raised {type(e).__name__}: {e}"


class Rubric:
    """Weighted reward functions. Weight 0 = metric only (in the breakdown, not in the total)."""

    def __init__(self, funcs: Sequence[RewardFn], weights: Sequence[float] | None = None):
        self.funcs = list(funcs)
        self.weights = [1.0] * len(self.funcs) if weights is None else [float(w) for w in weights]
        if len(self.weights) != len(self.funcs):
            raise ValueError(f"Rubric got {len(self.funcs)} functions but {len(self.weights)} weights")
        for w in self.weights:
            if not math.isfinite(w):
                raise ValueError(f"Rubric weights must be finite, got {w}")
        self.names: list[str] = []
        """each function's key in the breakdown: its name, numbered when two share one"""
        for fn in self.funcs:
            name, n = _name(fn), 1
            while (name if n == 1 else f"{name}_{n}") in self.names:
                n += 1
            self.names.append(name if n == 1 else f"{name}_{n}")

    def __call__(self, traj: Trajectory, task: Task) -> Score:
        score = Score()
        for fn, w, name in zip(self.funcs, self.weights, self.names, strict=True):
            value, err = run_reward(fn, traj, task)
            if err is not None:
                score.errors[name] = err
                continue
            score.breakdown[name] = value
            score.total += w * value
        if not math.isfinite(score.total):
            score.errors["total"] = f"the weighted sum overflowed to {score.total}"
            score.total = 0.0
        return score


def as_verifier(obj: Rubric | RewardFn) -> Callable[[Trajectory, Task], Score]:
    """Wrap a single reward function as a one-function rubric; rubrics pass through."""
    return obj if isinstance(obj, Rubric) else Rubric([obj])


VERIFIER_SCHEMES = {
    "rm": ("agentgym.trainers.rm:RewardModelVerifier", "train"),
    "judge": ("agentgym.judge:Judge", None),
}
"""spec prefix -> (``"module:Class"`` built with the rest of the spec, imported when first used;
the pip extra it needs)"""


def make_verifier(spec: str) -> RewardFn:
    """The reward function a spec names: ``rm:DIR`` or ``judge:POLICY_SPEC``.

    >>> make_verifier("judge:hf:/models/judge,temperature=0").policy_spec
    'hf:/models/judge,temperature=0'
    """
    prefix, colon, rest = spec.partition(":")
    if not colon or prefix not in VERIFIER_SCHEMES or not rest.strip():
        raise ValueError(
            f"verifier {spec!r}: give rm:DIR (a model from `agentgym train rm`) or judge:POLICY_SPEC "
            "(e.g. judge:hf:DIR,temperature=0 or judge:openai:URL,model=NAME)"
        )
    ref, extra = VERIFIER_SCHEMES[prefix]
    module, _, attr = ref.partition(":")
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"verifier {prefix}: needs a package that is not installed ({e}); pip install 'agentgym[{extra}]'"
        ) from e
    return getattr(mod, attr)(rest.strip())


def final_answer(traj: Trajectory) -> str | None:
    """The content of the last assistant message if it holds no tool call (well formed or not)."""
    for m in reversed(traj.messages):
        if m.get("role") == "assistant":
            content = m.get("content") or ""
            if m.get("tool_calls"):
                return None
            parsed = parse_tool_calls(content)
            return None if parsed.tool_calls or parsed.errors else content
    return None


def format_reward(traj: Trajectory, task: Task | None = None, fmt: Format = "auto") -> float:
    """Fraction of assistant turns that are well formed: no malformed tool call, and the episode
    ends with a final answer. 1.0 for a clean trace, 0.0 when nothing was said."""
    turns = [m for m in traj.messages if m.get("role") == "assistant"]
    if not turns:
        return 0.0
    good = sum(1 for m in turns if not parse_tool_calls(m.get("content") or "", fmt).errors)
    ends_with_answer = final_answer(traj) not in (None, "")
    return (good + ends_with_answer) / (len(turns) + 1)


def tool_calls_of(traj: Trajectory) -> list[tuple[str, Any]]:
    """All tool calls in order as (name, parsed arguments or the raw string if not JSON)."""
    import json

    calls = []
    for m in traj.messages:
        if m.get("role") != "assistant":
            continue
        tcs = m.get("tool_calls") or parse_tool_calls(m.get("content") or "").tool_calls
        for tc in tcs if isinstance(tcs, list) else []:
            fn = tc.get("function") if isinstance(tc, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                continue  # a malformed call (the env answered it with an error) calls no tool
            args = fn.get("arguments")
            try:
                args = json.loads(args) if isinstance(args, str) else args
            except (json.JSONDecodeError, RecursionError):
                pass
            calls.append((fn["name"], args))
    return calls


def schema_errors(value: Any, schema: dict[str, Any], where: str = "arguments") -> list[str]:
    """Check a value against a JSON-schema subset (type, properties, required, enum, pattern,
    minimum, maximum, items, additionalProperties=false). Returns the reasons it fails."""
    errs: list[str] = []
    kinds = {
        "object": dict,
        "array": list,
        "string": str,
        "integer": int,
        "number": (int, float),
        "boolean": bool,
        "null": type(None),
    }
    kind = schema.get("type")
    if kind is not None:
        ok = isinstance(value, kinds.get(kind, object))
        if kind in ("integer", "number") and isinstance(value, bool):
            ok = False
        if not ok:
            return [f"{where} must be {kind}, got {value!r:.60}"]
    if "enum" in schema and value not in schema["enum"]:
        errs.append(f"{where} must be one of {schema['enum']}")
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        errs.append(f"{where} must match {schema['pattern']!r}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errs.append(f"{where} must be >= {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errs.append(f"{where} must be <= {schema['maximum']}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for req in schema.get("required", []):
            if req not in value:
                errs.append(f"{where}.{req} is required")
        for k, v in value.items():
            if k in props:
                errs.extend(schema_errors(v, props[k], f"{where}.{k}"))
            elif schema.get("additionalProperties") is False:
                errs.append(f"{where}.{k} is not allowed")
    if isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            errs.extend(schema_errors(v, schema["items"], f"{where}[{i}]"))
    return errs


@dataclass
class StaticTraceVerifier:
    """Score a trace against declarative constraints, without running anything.

    Each configured constraint is one check; the score is the fraction of checks that pass, and
    ``check`` returns each check's verdict and reason.

    >>> from agentgym.types import tool_call
    >>> v = StaticTraceVerifier(required_calls=["search", "open"], answer_pattern=r"^\\d+$")
    >>> t = Trajectory(messages=[
    ...     {"role": "assistant", "content": "", "tool_calls": [tool_call("search", {"q": "x"})]},
    ...     {"role": "tool", "content": "ok", "tool_call_id": "call_0"},
    ...     {"role": "assistant", "content": "42"}])
    >>> v(t)
    0.5
    >>> v.check(t)["required_calls"]
    (False, "missing call 'open' (in order after the earlier required calls)")
    """

    required_calls: Sequence[str] = ()
    """tool names that must be called, in this order (other calls may come between)"""
    argument_schemas: dict[str, dict[str, Any]] = field(default_factory=dict)
    """tool name -> JSON schema every call of that tool must satisfy"""
    answer_pattern: str | None = None
    """regular expression the final answer must match (re.search)"""
    forbidden_tools: Sequence[str] = ()
    """tools that must never be called"""
    max_turns: int | None = None
    """most assistant turns allowed"""

    def check(self, traj: Trajectory) -> dict[str, tuple[bool, str]]:
        calls = tool_calls_of(traj)
        names = [n for n, _ in calls]
        out: dict[str, tuple[bool, str]] = {}
        if self.required_calls:
            i = 0
            for n in names:
                if i < len(self.required_calls) and n == self.required_calls[i]:
                    i += 1
            ok = i == len(self.required_calls)
            out["required_calls"] = (
                ok,
                ""
                if ok
                else f"missing call {self.required_calls[i]!r} (in order after the earlier required calls)",
            )
        if self.argument_schemas:
            errs = [
                f"{n}: {e}"
                for n, a in calls
                if n in self.argument_schemas
                for e in schema_errors(a, self.argument_schemas[n])
            ]
            out["argument_schemas"] = (not errs, "; ".join(errs))
        if self.answer_pattern is not None:
            ans = final_answer(traj)
            ok = ans is not None and re.search(self.answer_pattern, ans.strip()) is not None
            out["answer_pattern"] = (
                ok,
                "" if ok else f"final answer {ans!r:.80} does not match {self.answer_pattern!r}",
            )
        if self.forbidden_tools:
            bad = sorted({n for n in names if n in self.forbidden_tools})
            out["forbidden_tools"] = (not bad, f"called forbidden {bad}" if bad else "")
        if self.max_turns is not None:
            ok = traj.num_turns <= self.max_turns
            out["max_turns"] = (ok, "" if ok else f"{traj.num_turns} turns > {self.max_turns}")
        return out

    def __call__(self, traj: Trajectory, task: Task | None = None) -> float:
        checks = self.check(traj)
        if not checks:
            return 1.0
        return sum(ok for ok, _ in checks.values()) / len(checks)

"""Core records: chat messages, tool calls, trajectories, and the one JSONL schema.

Messages are plain dicts in the OpenAI chat format (typed with ``TypedDict``), so they go to
and from JSON, Hugging Face datasets and chat templates without conversion. A ``Trajectory``
is a typed dataclass: the messages of one episode, its score and status, and the exact token
record that training uses.

>>> t = Trajectory(messages=[{"role": "user", "content": "2+2?"}], env="toy/calculator-v0", task_id="t0")
>>> Trajectory.from_record(t.to_record()) == t
True
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

try:
    import orjson as _orjson
except ImportError:  # optional speed-up
    _orjson = None

STATUSES = ("ok", "truncated", "env_error", "policy_error", "timeout")
"""Every trajectory ends in one of these. Only ``ok`` and ``truncated`` are evidence about the
policy; the others are infrastructure failures, excluded from advantages, pass rates and data."""

Status = Literal["ok", "truncated", "env_error", "policy_error", "timeout"]
EVIDENCE_STATUSES = frozenset({"ok", "truncated"})


class FunctionCall(TypedDict):
    name: str
    arguments: str
    """JSON-encoded arguments, as the OpenAI format has it."""


class ToolCall(TypedDict):
    id: str
    type: Literal["function"]
    function: FunctionCall


class Message(TypedDict, total=False):
    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_calls: list[ToolCall]
    tool_call_id: str
    name: str
    reasoning_content: str


@dataclass
class Task:
    """One task of an environment: what the model is asked, and what the verifier checks against.

    ``answer`` and ``info`` are never shown to the model and never written to trajectory records.
    """

    task_id: str
    prompt: str = ""
    answer: Any = None
    info: dict[str, Any] = field(default_factory=dict)


def tool_call(name: str, arguments: dict[str, Any] | str, call_id: str = "call_0") -> ToolCall:
    """Build a ``ToolCall``; ``arguments`` may be a dict or a JSON string.

    >>> tool_call("add", {"a": 1})["function"]
    {'name': 'add', 'arguments': '{"a": 1}'}
    """
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}


@dataclass
class Trajectory:
    """One episode: what was said, how it scored, and the tokens the policy sampled."""

    messages: list[Message] = field(default_factory=list)
    env: str = ""
    task_id: str = ""
    score: float = 0.0
    status: Status = "ok"
    metadata: dict[str, Any] = field(default_factory=dict)
    tokens: list[int] | None = None
    """token ids of the whole conversation, prompt included"""
    mask: list[int] | None = None
    """1 where the policy sampled the token (trained on), 0 for prompt, env and tool tokens"""
    logprobs: list[float] | None = None
    """the sampler's log-probability of each token (0.0 where mask is 0)"""
    tools: list[dict[str, Any]] | None = None
    """the tool schemas shown to the model (what the chat template rendered into the prompt)"""
    env_kwargs: dict[str, Any] | None = None
    """the keyword arguments the env was made with (``make(env, **env_kwargs)`` builds it again)"""

    @property
    def is_evidence(self) -> bool:
        """True when the status says something about the policy (ok or truncated)."""
        return self.status in EVIDENCE_STATUSES

    @property
    def num_turns(self) -> int:
        return sum(1 for m in self.messages if m.get("role") == "assistant")

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "messages": self.messages,
            "env": self.env,
            "task_id": self.task_id,
            "score": self.score,
            "status": self.status,
            "metadata": self.metadata,
        }
        if self.tools is not None:
            record["tools"] = self.tools
        if self.env_kwargs is not None:
            record["env_kwargs"] = self.env_kwargs
        if self.tokens is not None:
            record["tokens"] = {"ids": self.tokens, "mask": self.mask, "logprobs": self.logprobs}
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Trajectory:
        """Build from a dict in the JSONL schema; raises ``RecordError`` naming what is wrong."""
        validate_record(record)
        tok = record.get("tokens") or {}
        return cls(
            messages=record["messages"],
            env=record["env"],
            task_id=str(record["task_id"]),
            score=float(record["score"]),
            status=record["status"],
            metadata=dict(record.get("metadata") or {}),
            tokens=tok.get("ids"),
            mask=tok.get("mask"),
            logprobs=tok.get("logprobs"),
            tools=record.get("tools"),
            env_kwargs=record.get("env_kwargs"),
        )


def passes(item: Trajectory | dict[str, Any], threshold: float = 1.0) -> bool:
    """The one definition of a pass: the episode finished (status ``ok``) with a score of at
    least ``threshold``. A truncated episode is evidence about the policy but never a pass.

    >>> passes({"status": "ok", "score": 1.0}), passes({"status": "truncated", "score": 1.0})
    (True, False)
    """
    if isinstance(item, Trajectory):
        status, score = item.status, item.score
    else:
        status, score = item.get("status"), item.get("score", 0.0)
    return status == "ok" and float(score) >= threshold - 1e-9


class RecordError(ValueError):
    """A record that does not follow the JSONL schema; the message says where and why."""


_ROLES = ("system", "user", "assistant", "tool")


def validate_record(record: Any) -> None:
    """Check one record against the schema ``{"messages", "env", "task_id", "score", "status",
    "metadata", "tools"?, "env_kwargs"?, "tokens"?}``. Raises ``RecordError`` with the reason."""
    if not isinstance(record, dict):
        raise RecordError(f"a record must be a JSON object, got {type(record).__name__}")
    for key in ("messages", "env", "task_id", "score", "status"):
        if key not in record:
            raise RecordError(f"missing field {key!r}")
    messages = record["messages"]
    if not isinstance(messages, list):
        raise RecordError("'messages' must be a list of chat messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            raise RecordError(f"messages[{i}] must be an object with role in {_ROLES}")
        content = m.get("content")
        if content is not None and not isinstance(content, str):
            raise RecordError(f"messages[{i}].content must be a string")
        calls = m.get("tool_calls")
        if calls is not None and not isinstance(calls, list):
            raise RecordError(f"messages[{i}].tool_calls must be a list of tool calls")
    if not isinstance(record["env"], str):
        raise RecordError("'env' must be a string")
    if not isinstance(record["task_id"], str | int):
        raise RecordError("'task_id' must be a string")
    score = record["score"]
    if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
        raise RecordError(f"'score' must be a finite number, got {score!r}")
    if record["status"] not in STATUSES:
        raise RecordError(f"'status' must be one of {STATUSES}, got {record['status']!r}")
    if not isinstance(record.get("metadata", {}), dict):
        raise RecordError("'metadata' must be an object")
    tools = record.get("tools")
    if tools is not None and not (isinstance(tools, list) and all(isinstance(t, dict) for t in tools)):
        raise RecordError("'tools' must be a list of tool schemas (objects)")
    if record.get("env_kwargs") is not None and not isinstance(record["env_kwargs"], dict):
        raise RecordError("'env_kwargs' must be an object")
    tok = record.get("tokens")
    if tok is not None:
        if not isinstance(tok, dict) or not isinstance(tok.get("ids"), list):
            raise RecordError("'tokens' must be an object with 'ids', 'mask' and 'logprobs' lists")
        n = len(tok["ids"])
        for key in ("mask", "logprobs"):
            if tok.get(key) is not None and not isinstance(tok[key], list):
                raise RecordError(f"tokens.{key} must be a list")
            if tok.get(key) is not None and len(tok[key]) != n:
                raise RecordError(f"tokens.{key} has {len(tok[key])} entries but tokens.ids has {n}")


def iter_jsonl(
    path: str | os.PathLike[str], *, errors: Literal["raise", "skip"] = "raise", report=None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, record)`` for each valid line of a JSONL file of trajectories.

    A malformed line raises ``RecordError`` naming the file, its line number and the reason; with
    ``errors="skip"`` it is passed to ``report(line_number, reason)`` (default: printed to stderr)
    and skipped. Blank lines are ignored. A final line cut off mid-write (a killed run) and a line
    that is not UTF-8 are treated like any other malformed line.
    """
    import sys

    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
                validate_record(record)
            except (ValueError, RecursionError) as e:  # JSON, UTF-8, schema, nesting, huge ints
                if isinstance(e, UnicodeDecodeError):
                    reason = f"invalid UTF-8 at byte {e.start} of the line"
                elif isinstance(e, json.JSONDecodeError):
                    reason = f"invalid JSON: {e.msg} at char {e.pos}"
                elif isinstance(e, RecursionError):
                    reason = "invalid JSON: nested too deeply"
                elif isinstance(e, RecordError):
                    reason = str(e)
                else:
                    reason = f"invalid JSON: {e}"
                if errors == "raise":
                    raise RecordError(f"{path}:{lineno}: {reason}") from None
                if report is not None:
                    report(lineno, reason)
                else:
                    print(f"{path}:{lineno}: skipped: {reason}", file=sys.stderr)
                continue
            yield lineno, record


def load_trajectories(
    path: str | os.PathLike[str], *, errors: Literal["raise", "skip"] = "raise"
) -> list[Trajectory]:
    """Read every trajectory in a JSONL file (see ``iter_jsonl`` for how bad lines are handled)."""
    return [Trajectory.from_record(r) for _, r in iter_jsonl(path, errors=errors)]


def dump_record_bytes(record: dict[str, Any]) -> bytes:
    """One JSONL line (UTF-8, with its newline) for a record. A non-finite score is refused.

    Uses orjson when it is installed (about 15x faster than the json module on trajectories)."""
    score = record.get("score")
    if isinstance(score, float) and not math.isfinite(score):
        raise RecordError(f"refusing to write a record with score {score}")
    if _orjson is not None:
        try:
            return _orjson.dumps(record, option=_orjson.OPT_APPEND_NEWLINE | _orjson.OPT_SERIALIZE_NUMPY)
        except TypeError:
            pass
    return (json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n").encode()


def dump_record(record: dict[str, Any]) -> str:
    """One JSONL line (with its newline) for a record, as text."""
    return dump_record_bytes(record).decode()


def write_jsonl(path: str | os.PathLike[str], records, *, append: bool = False) -> int:
    """Write records (dicts or trajectories) as JSONL; returns how many were written."""
    n = 0
    with open(path, "ab" if append else "wb") as f:
        for r in records:
            f.write(dump_record_bytes(r.to_record() if isinstance(r, Trajectory) else r))
            n += 1
    return n

"""Task files of the MCP env: JSONL, one task a line.

A task (only ``task_id`` and ``prompt`` are required)::

    {"task_id": "fs-edit",
     "prompt": "In notes.txt, change the word draft to final.",
     "files": {"notes.txt": "status: draft\\n"},
     "setup": ["git init -q"],
     "answer": "final",
     "check_files": {"notes.txt": "status: final"},
     "check_call": {"name": "read_text_file", "arguments": {"path": "notes.txt"}, "contains": "final"},
     "solution": [{"tool": "edit_file", "arguments": {"path": "notes.txt",
                   "edits": [{"oldText": "draft", "newText": "final"}]}},
                  {"answer": "Done: the status is final."}]}

- ``files``: ``{relative path: content}`` written into the episode's work directory before the
  server starts (the server sees that directory as ``{workdir}`` in its command, and as its
  working directory).
- ``setup``: command lines run in the work directory after the files are written and before the
  server starts (no shell: each line is split like a shell would split it), e.g. to make a git
  repository; one that fails makes the episode ``env_error``.
- ``answer``: the final answer (the last assistant message without a tool call) must contain
  this text, case-insensitive.
- ``check_files``: ``{relative path: text}``: after the episode each file must exist and contain
  its text.
- ``check_call``: a tool call made on the server after the episode; the text of its result must
  contain ``contains`` (case-sensitive).
- ``solution``: what the ``teacher`` policy does: tool calls ``{"tool": NAME, "arguments": {...}}``
  in order, then an optional last step ``{"answer": TEXT}``; without it the teacher answers with
  the last tool result.

The score of an episode is the mean of the checks the task has (``answer``, ``files``, ``call``,
plus the env's ``verifier=`` when given), each 1 or 0.

>>> t = task_from_record({"task_id": "t1", "prompt": "Say hi.", "answer": "hi",
...                       "solution": [{"answer": "hi there"}]})
>>> t.checks, t.solution, t.solution_answer
(['answer'], [], 'hi there')
>>> task_from_record({"task_id": "t2", "prompt": "x", "files": {"../up.txt": ""}})
Traceback (most recent call last):
...
ValueError: files: '../up.txt' is not a relative path inside the work directory
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

SHIPPED = Path(__file__).with_name("tasks")
"""the shipped task files: ``tasks=time`` reads ``tasks/time.jsonl``"""

_KEYS = ("task_id", "prompt", "files", "setup", "answer", "check_files", "check_call", "solution")


@dataclass(frozen=True)
class Step:
    """One tool call of a task's solution."""

    tool: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CallCheck:
    """A tool call made on the server after the episode, and the text its result must contain."""

    name: str
    arguments: dict[str, Any]
    contains: str


@dataclass(frozen=True)
class McpTask:
    task_id: str
    prompt: str
    files: dict[str, str] = field(default_factory=dict)
    setup: list[list[str]] = field(default_factory=list)
    """command lines (already split) run in the work directory before the server starts"""
    answer: str | None = None
    check_files: dict[str, str] = field(default_factory=dict)
    check_call: CallCheck | None = None
    solution: list[Step] | None = None
    """the teacher's tool calls; None when the task has no solution"""
    solution_answer: str | None = None
    """the teacher's final answer (None: the text of the last tool result)"""

    @property
    def checks(self) -> list[str]:
        """The names of the checks this task has, in scoring order."""
        return [
            name
            for name, present in (
                ("answer", self.answer is not None),
                ("files", bool(self.check_files)),
                ("call", self.check_call is not None),
            )
            if present
        ]


def _relative(path: Any, where: str) -> str:
    if not isinstance(path, str) or not path.strip():
        raise ValueError(f"{where}: paths must be non-empty strings, got {path!r}")
    parts = PurePosixPath(path).parts
    if os.path.isabs(path) or path.startswith("/") or ".." in parts:
        raise ValueError(f"{where}: {path!r} is not a relative path inside the work directory")
    return path


def _text_map(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be an object {{relative path: text}}, got {type(value).__name__}")
    out = {}
    for path, text in value.items():
        if not isinstance(text, str):
            raise ValueError(f"{where}[{path!r}] must be a string, got {type(text).__name__}")
        out[_relative(path, where)] = text
    return out


def _arguments(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a JSON object, got {type(value).__name__}")
    return value


def _solution(value: Any) -> tuple[list[Step], str | None]:
    if not isinstance(value, list):
        raise ValueError(f"solution must be a list of steps, got {type(value).__name__}")
    steps: list[Step] = []
    answer = None
    for i, step in enumerate(value):
        where = f"solution[{i}]"
        if not isinstance(step, dict):
            raise ValueError(f"{where} must be an object, got {type(step).__name__}")
        if "answer" in step:
            if set(step) != {"answer"} or not isinstance(step["answer"], str):
                raise ValueError(f'{where}: a final step is {{"answer": TEXT}} and nothing else')
            if i != len(value) - 1:
                raise ValueError(f"{where}: the answer step must be the last one")
            answer = step["answer"]
            continue
        if not isinstance(step.get("tool"), str) or not step["tool"]:
            raise ValueError(f'{where} must be {{"tool": NAME, "arguments": {{...}}}} or {{"answer": TEXT}}')
        unknown = set(step) - {"tool", "arguments"}
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; a step has tool and arguments")
        steps.append(Step(step["tool"], _arguments(step.get("arguments"), f"{where}.arguments")))
    return steps, answer


def task_from_record(rec: Any) -> McpTask:
    """One task from a parsed JSON record; raises ``ValueError`` saying which field is wrong."""
    if not isinstance(rec, dict):
        raise ValueError(f"a task must be a JSON object, got {type(rec).__name__}")
    unknown = set(rec) - set(_KEYS)
    if unknown:
        raise ValueError(f"unknown key(s) {sorted(unknown)}; a task has {', '.join(_KEYS)}")
    task_id = rec.get("task_id")
    if isinstance(task_id, int) and not isinstance(task_id, bool):
        task_id = str(task_id)
    if not isinstance(task_id, str) or not task_id:
        raise ValueError("task_id must be a non-empty string")
    prompt = rec.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("prompt must be a non-empty string")
    answer = rec.get("answer")
    if answer is not None and (not isinstance(answer, str) or not answer.strip()):
        raise ValueError("answer must be a non-empty string")
    setup = rec.get("setup", [])
    if not isinstance(setup, list) or not all(isinstance(c, str) and c.strip() for c in setup):
        raise ValueError("setup must be a list of command lines (strings)")
    check_call = None
    if "check_call" in rec:
        cc = rec["check_call"]
        if (
            not isinstance(cc, dict)
            or not isinstance(cc.get("name"), str)
            or not isinstance(cc.get("contains"), str)
            or set(cc) - {"name", "arguments", "contains"}
        ):
            raise ValueError('check_call must be {"name": TOOL, "arguments": {...}, "contains": TEXT}')
        check_call = CallCheck(
            cc["name"], _arguments(cc.get("arguments"), "check_call.arguments"), cc["contains"]
        )
    steps, final = _solution(rec["solution"]) if "solution" in rec else (None, None)
    return McpTask(
        task_id=task_id,
        prompt=prompt,
        files=_text_map(rec.get("files", {}), "files"),
        setup=[shlex.split(c) for c in setup],
        answer=answer,
        check_files=_text_map(rec.get("check_files", {}), "check_files"),
        check_call=check_call,
        solution=steps,
        solution_answer=final,
    )


def resolve_path(tasks: str) -> Path:
    """A task file's path: the path as given, or the name of a shipped file (``time``)."""
    path = Path(tasks)
    if path.exists():
        return path
    shipped = SHIPPED / f"{tasks}.jsonl"
    if "/" not in tasks and shipped.exists():
        return shipped
    names = ", ".join(sorted(p.stem for p in SHIPPED.glob("*.jsonl")))
    raise FileNotFoundError(f"no task file {tasks!r}; give a JSONL path or a shipped set ({names})")


def load_tasks(tasks: str) -> list[McpTask]:
    """Every task of a JSONL file (or a shipped set by name); a bad line raises ``ValueError``
    naming the file and line."""
    path = resolve_path(tasks)
    out: list[McpTask] = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                task = task_from_record(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: {e}") from None
            if task.task_id in seen:
                raise ValueError(
                    f"{path}:{lineno}: task_id {task.task_id!r} is used already on line {seen[task.task_id]}"
                )
            seen[task.task_id] = lineno
            out.append(task)
    if not out:
        raise ValueError(f"{path} holds no tasks; write one JSON object a line")
    return out

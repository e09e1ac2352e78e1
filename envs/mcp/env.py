"""``mcp/server-v0``: any MCP server as a tool environment.

The server is a command run over stdio (``server=``; ``{workdir}`` in it becomes the episode's
fresh work directory, which is also the server's working directory) or a streamable HTTP
endpoint (``url=``). Its tools, with their JSON schemas, are the env's tools; calls are forwarded
and their results come back as tool messages. An error result, an unknown tool or arguments the
server rejects come back as ``Error: ...`` messages and the episode goes on; a server that dies or
does not answer within ``timeout`` seconds ends the episode (status ``env_error`` or
``timeout``, the error with the tail of the server's stderr in the trajectory's metadata).

Tasks come from a JSONL file (``agentgym.envs.mcp.tasks`` describes the format); the score is the
mean of the checks a task has. With no arguments the env wraps ``mcp-server-time`` with the
shipped time tasks.

    agentgym eval --env mcp/server-v0 --env-kwargs server=mcp-server-time tasks=time --policy teacher --n 10 --json
    agentgym eval --env mcp/server-v0 --policy teacher --n 10 --json --env-kwargs tasks=filesystem \\
        server=".mcp-servers/node_modules/.bin/mcp-server-filesystem {workdir}"

Policies it provides: ``teacher`` (alias ``scripted``): replays each task's ``solution``.
"""

from __future__ import annotations

import functools
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mcp_types as types
from agentgym.envs.mcp.client import Connection, ServerError, ToolCallError
from agentgym.envs.mcp.tasks import McpTask, load_tasks

from agentgym.env import ListedTasks, ToolEnv
from agentgym.policy import PolicySpec
from agentgym.registry import import_source
from agentgym.tools import Tool
from agentgym.types import Message, Task, Trajectory, tool_call
from agentgym.verifiers import Score, final_answer, run_reward

MAX_RESULT_CHARS = 16000
"""characters of a tool result shown to the model; the rest is cut with a marker"""

_LISTINGS: dict[tuple[str | None, str | None], list[types.Tool]] = {}
"""tool listings by (server command, url): every env of a run asks its server once"""


def result_text(result: types.CallToolResult) -> str:
    """A tool result as the text of a tool message (``Error: ...`` when the server flags it).

    >>> result_text(types.CallToolResult(content=[types.TextContent(text="42")]))
    '42'
    >>> result_text(types.CallToolResult(content=[types.TextContent(text="no such file")], is_error=True))
    'Error: no such file'
    """
    parts: list[str] = []
    for block in result.content:
        if isinstance(block, types.TextContent):
            parts.append(block.text)
        elif isinstance(block, types.ImageContent | types.AudioContent):
            parts.append(f"[{block.type}: {block.mime_type}, {len(block.data)} base64 characters]")
        elif isinstance(block, types.EmbeddedResource):
            res = block.resource
            text = getattr(res, "text", None)
            parts.append(text if text is not None else f"[resource {res.uri}: {res.mime_type or 'binary'}]")
        elif isinstance(block, types.ResourceLink):
            parts.append(f"[resource link: {block.uri}]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    text = "\n".join(parts)
    if len(text) > MAX_RESULT_CHARS:
        text = f"{text[:MAX_RESULT_CHARS]}\n...[truncated: {len(text) - MAX_RESULT_CHARS} more characters]"
    return f"Error: {text}" if result.is_error else text


def load_function(ref: str) -> Callable[..., Any]:
    """The function that ``module:function`` or ``path/to/file.py:function`` names."""
    where, _, name = ref.rpartition(":")
    if not where or not name:
        raise ValueError(f"verifier={ref!r}: give 'module:function' or 'file.py:function'")
    try:
        module = import_source(where)
    except FileNotFoundError:
        raise ValueError(f"verifier={ref!r}: no file {where!r}") from None
    except ValueError as e:
        raise ValueError(f"verifier={ref!r}: {e}") from e
    except ImportError as e:
        raise ValueError(f"verifier={ref!r}: cannot import {where!r} ({e})") from e
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ValueError(f"verifier={ref!r}: {where} has no function {name!r}")
    return fn


def default_server() -> str:
    """The command of ``mcp-server-time`` (beside this Python, or on PATH)."""
    beside = Path(sys.executable).with_name("mcp-server-time")
    if beside.exists():
        return str(beside)
    found = shutil.which("mcp-server-time")
    if found is None:
        raise ValueError(
            "McpEnv with no server= wraps mcp-server-time, which is not installed: "
            "pip install mcp-server-time==2026.10.19, or give server=COMMAND or url=URL"
        )
    return found


class McpEnv(ListedTasks, ToolEnv):
    """An MCP server's tools as an environment.

    Args:
        server: the server's command line (split like a shell would); ``{workdir}`` in it is
            replaced by the episode's work directory. Default: ``mcp-server-time``.
        url: a streamable HTTP endpoint instead of a command (``http://127.0.0.1:8000/mcp``).
        tasks: a JSONL task file, or the name of a shipped set (``time``, ``filesystem``, ``git``).
            Default: ``time`` when the server is the default one; required otherwise.
        fresh: ``episode`` (a new server process, or HTTP session, and work directory for each
            episode; the default when the command holds ``{workdir}``) or ``run`` (one server
            for every episode of this env; task files are written into its work directory).
        timeout: seconds for starting the server and for each tool call.
        verifier: ``module:function`` or ``file.py:function`` taking (trajectory, task) and
            returning a float, one more check of every task; ``task.info["workdir"]`` is the
            episode's work directory.
        max_turns: assistant turns before the episode is truncated.
    """

    task_kind = "MCP task"
    system_prompt = (
        "You are connected to a server through its tools. Use them to do the task, then reply "
        "with your final answer as plain text, without a tool call."
    )
    blocking = True
    max_turns = 10
    policies = {"teacher": f"{__name__}:mcp_teacher", "scripted": f"{__name__}:mcp_teacher"}

    def __init__(
        self,
        server: str | None = None,
        url: str | None = None,
        tasks: str | None = None,
        fresh: str | None = None,
        timeout: float = 30.0,
        verifier: str | None = None,
        max_turns: int | None = None,
        **kwargs: Any,
    ):
        if server is not None and url is not None:
            raise ValueError("give server= (a command) or url= (streamable HTTP), not both")
        if server is None and url is None:
            server = default_server()
            tasks = "time" if tasks is None else tasks
        if tasks is None:
            raise ValueError("tasks= is required: a JSONL task file (agentgym.envs.mcp.tasks describes it)")
        if server is not None and (not isinstance(server, str) or not shlex.split(server)):
            raise ValueError(f"server= must be a command line, got {server!r}")
        if not isinstance(timeout, int | float) or not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if fresh is None:
            fresh = "episode" if server is not None and "{workdir}" in server else "run"
        if fresh not in ("episode", "run"):
            raise ValueError(f"fresh must be 'episode' or 'run', got {fresh!r}")
        self.server, self.url, self.fresh, self.timeout = server, url, fresh, float(timeout)
        self.tasks: list[McpTask] = load_tasks(str(tasks))
        self.by_id = {t.task_id: t for t in self.tasks}
        if url is not None:
            bad = [t.task_id for t in self.tasks if t.files or t.check_files or t.setup]
            if bad:
                raise ValueError(
                    f"tasks {bad[:3]} use files/setup/check_files, which need a server command that "
                    "works in the episode's directory (server='... {workdir}'), not a url"
                )
        self.user_verifier = load_function(verifier) if verifier is not None else None
        unchecked = [t.task_id for t in self.tasks if not t.checks]
        if unchecked and self.user_verifier is None:
            raise ValueError(
                f"tasks {unchecked[:3]} have nothing to check: give each answer, check_files or "
                "check_call, or give the env a verifier="
            )
        self.conn: Connection | None = None
        self.workdir: str | None = None
        self.mcp_task: McpTask | None = None
        self.failure: ServerError | None = None
        self._listing = self._tool_listing()
        super().__init__(max_turns=max_turns, **kwargs)

    # ----- the server ------------------------------------------------------------------------

    def _command(self, workdir: str) -> list[str]:
        return [arg.replace("{workdir}", workdir) for arg in shlex.split(self.server)]

    def _prepare(self, task: McpTask | None) -> str:
        """A new work directory, seeded with the task's files and setup."""
        workdir = tempfile.mkdtemp(prefix="agentgym-mcp-")
        if task is not None:
            try:
                self._seed(task, workdir)
            except BaseException:
                shutil.rmtree(workdir, ignore_errors=True)
                raise
        return workdir

    def _seed(self, task: McpTask, workdir: str) -> None:
        """Write the task's files into ``workdir``, then run its setup commands there."""
        for rel, text in task.files.items():
            path = Path(workdir, rel)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        for argv in task.setup:
            self._run_setup(argv, workdir, task)

    def _run_setup(self, argv: list[str], workdir: str, task: McpTask) -> None:
        line = shlex.join(argv)
        try:
            done = subprocess.run(
                argv, cwd=workdir, capture_output=True, text=True, timeout=self.timeout, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ServerError(f"task {task.task_id}: setup command {line!r} failed: {e}") from None
        if done.returncode != 0:
            raise ServerError(
                f"task {task.task_id}: setup command {line!r} exited with {done.returncode}: "
                f"{(done.stderr or done.stdout).strip()[-2000:]}"
            )

    def _connect(self, workdir: str) -> Connection:
        if self.url is not None:
            conn = Connection(url=self.url, timeout=self.timeout)
        else:
            conn = Connection(self._command(workdir), cwd=workdir, timeout=self.timeout)
        conn.open()
        return conn

    def _tool_listing(self) -> list[types.Tool]:
        """The server's tools, asked once per server in this process (in the work directory of
        the first task, so a server that needs its files can start)."""
        key = (self.server, self.url)
        if key not in _LISTINGS:
            workdir = self._prepare(self.tasks[0] if self.url is None else None)
            try:
                conn = self._connect(workdir)
                conn.close()
            except ServerError as e:  # a server that cannot start is a bad argument to the env
                raise ValueError(str(e)) from e
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            _LISTINGS[key] = conn.tools
        return _LISTINGS[key]

    def _stop_server(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    # ----- tools -----------------------------------------------------------------------------

    def collect_tools(self) -> list[Tool]:
        tools = []
        for t in self._listing:
            params = {k: v for k, v in t.input_schema.items() if k != "$schema"}
            params.setdefault("type", "object")
            params.setdefault("properties", {})
            tools.append(
                Tool(
                    fn=functools.partial(self._forward, t.name),
                    name=t.name,
                    description=t.description or t.title or "",
                    parameters=params,
                )
            )
        return tools

    def call_tool(self, call: Any, arguments: dict[str, Any] | None = None) -> Message:
        """Forward one call to the server (the server checks the arguments)."""
        out, tool, args = self._resolve_call(call, arguments)
        if tool is None:
            return out
        if not isinstance(args, dict):
            out["content"] = f"Error: the arguments of {tool.name} must be a JSON object, got {args!r:.80}"
            return out
        out["content"] = self._forward(tool.name, args)
        return out

    async def acall_tool(self, call: Any, arguments: dict[str, Any] | None = None) -> Message:
        return await self._in_thread(self.call_tool, call, arguments)

    def _forward(self, name: str, arguments: dict[str, Any]) -> str:
        try:
            return result_text(self.conn.call(name, arguments))
        except ToolCallError as e:
            return f"Error: {name}: {e}"
        except ServerError as e:
            self.failure = e
            self.done = True
            why = "did not answer in time" if e.status == "timeout" else "failed"
            return f"Error: the server {why}; the episode ends."

    # ----- tasks -----------------------------------------------------------------------------

    def load_task(self, task_id: str | None) -> Task:
        task = self.listed_task(task_id)
        self.mcp_task, self.failure = task, None
        if self.fresh == "episode" or self.conn is None or not self.conn.alive:
            self._stop_server()
            self.workdir = self._prepare(task)
            self.conn = self._connect(self.workdir)
        else:
            self._seed(task, self.workdir)
        if [t.name for t in self.conn.tools] != list(self._tools):  # the server changed its tools
            self._listing = self.conn.tools
            self._tools = {t.name: t for t in self.collect_tools()}
        return Task(task.task_id, task.prompt, answer=task.answer, info={"workdir": self.workdir})

    # ----- scoring ---------------------------------------------------------------------------

    def score(self) -> Score:
        """The mean of the task's checks; a check that cannot run is an error (env_error)."""
        task, workdir, conn = self.mcp_task, self.workdir, self.conn

        def answer(traj: Trajectory, _: Task) -> float:
            said = final_answer(traj)
            return float(said is not None and task.answer.casefold() in said.casefold())

        def files(traj: Trajectory, _: Task) -> float:
            for rel, text in task.check_files.items():
                path = Path(workdir, rel)
                if not path.is_file() or text not in path.read_text(encoding="utf-8", errors="replace"):
                    return 0.0
            return 1.0

        def call(traj: Trajectory, _: Task) -> float:
            check = task.check_call
            return float(check.contains in result_text(conn.call(check.name, check.arguments)))

        checks = {"answer": answer, "files": files, "call": call}
        funcs = [(name, checks[name]) for name in task.checks]
        if self.user_verifier is not None:
            funcs.append(("verifier", self.user_verifier))
        score = Score()
        for name, fn in funcs:
            value, error = run_reward(fn, self.trajectory, self.task)
            if error is not None:
                score.errors[name] = error
            else:
                score.breakdown[name] = value
        if score.breakdown and not score.errors:
            score.total = sum(score.breakdown.values()) / len(score.breakdown)
        return score

    def finish(self, truncated: bool, info: dict[str, Any]) -> None:
        """Score (unless the server failed), then stop the episode's server."""
        traj = self.trajectory
        try:
            if self.failure is None:
                super().finish(truncated, info)
            else:
                traj.score, traj.status = 0.0, self.failure.status
                traj.metadata.update(error=str(self.failure), turns=self.turns)
                info.update(score=0.0, breakdown={}, status=traj.status, error=str(self.failure))
            if self.conn is not None and self.conn.bad_lines:
                traj.metadata["server_bad_lines"] = self.conn.bad_lines
        finally:
            if self.fresh == "episode" or self.failure is not None:
                self._stop_server()

    def close(self) -> None:
        self._stop_server()
        super().close()


def mcp_teacher(spec: PolicySpec, env: McpEnv) -> McpTeacher:
    """``teacher`` and ``scripted`` on the MCP env: each task's ``solution``."""
    return McpTeacher()


class McpTeacher:
    """Replays a task's solution: its tool calls one a turn, then its answer (or, without one,
    the text of the last tool result)."""

    async def act(self, traj: Trajectory, env: McpEnv) -> Message:
        return self.reply(traj, env.mcp_task)

    @staticmethod
    def reply(traj: Trajectory, task: McpTask) -> Message:
        if task.solution is None:
            raise ValueError(f"task {task.task_id} has no solution; the teacher cannot solve it")
        done = sum(1 for m in traj.messages if m.get("role") == "assistant")
        if done < len(task.solution):
            step = task.solution[done]
            call = tool_call(step.tool, step.arguments, f"call_{done}")
            return {"role": "assistant", "content": "", "tool_calls": [call]}
        if task.solution_answer is not None:
            return {"role": "assistant", "content": task.solution_answer}
        results = [m for m in traj.messages if m.get("role") == "tool"]
        return {"role": "assistant", "content": results[-1].get("content", "") if results else ""}

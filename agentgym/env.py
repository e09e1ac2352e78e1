"""``ToolEnv``: a Gymnasium environment whose actions are assistant messages and whose
observations are the messages that come back (tool results, or the opening prompt).

A subclass declares data, not control flow: its tools (methods decorated with ``@tool``), a
verifier, and how to load a task. The reward is 0 until the episode ends; then it is the
verifier's score of the whole trajectory, with the breakdown in ``info``.

>>> from agentgym.envs.toy import CalculatorEnv
>>> env = CalculatorEnv()
>>> obs, info = env.reset(seed=0, options={"task_id": "calc-3"})
>>> [m["role"] for m in obs]
['system', 'user']
>>> obs, reward, terminated, truncated, info = env.step({"role": "assistant", "content": '<tool_call>{"name": "nope"}</tool_call>'})
>>> obs[0]["content"]
"Error: unknown tool 'nope'. Available tools: calculator."
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import math
from collections.abc import Callable
from typing import Any, ClassVar

import gymnasium
import gymnasium.utils.seeding

from agentgym.parsing import Format, loads_json, parse_tool_calls
from agentgym.spaces import ConversationSpace, MessageSpace
from agentgym.tools import Tool, ToolArgumentError
from agentgym.types import Message, Task, Trajectory
from agentgym.verifiers import Rubric, Score, as_verifier

Verifier = Callable[[Trajectory, Task], Score]


class EpisodeOver(RuntimeError):
    """``step`` was called after the episode ended; call ``reset`` first."""


def _tool_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


def _json_safe(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def _tool_error(name: str, e: BaseException) -> str:
    if isinstance(e, ToolArgumentError):
        return f"Error: {name}: {e}"
    if isinstance(e, SystemExit):  # e.g. argparse inside a tool, rejecting the model's input
        return f"Error: {name} exited (SystemExit {e.code!r})"
    return f"Error: {name} raised {type(e).__name__}: {e}"


class ToolEnv(gymnasium.Env):
    """Base class of every agentgym environment.

    Subclasses set ``tools`` (or decorate methods with ``@tool``), ``verifier``, and implement
    ``load_task`` with ``task_ids`` (checked when the class is defined); optionally
    ``initial_messages``, and ``policies``: the players that know the env, as data.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi"]}

    system_prompt: ClassVar[str] = "You are a helpful assistant that uses tools to solve tasks."
    verifier: ClassVar[Rubric | Callable[[Trajectory, Task], float] | None] = None
    max_turns: int = 10
    """assistant turns before the episode is truncated"""
    tool_format: Format = "auto"
    """how tool calls are parsed from the model's text (``agentgym.parsing``)"""
    ends_on_text: ClassVar[bool] = True
    """a reply without tool calls ends the episode (its content is the final answer); envs whose
    episodes end through a tool (submit, answer, a game's last move) set this to False"""
    policies: ClassVar[dict[str, str]] = {}
    """players that know this env, by spec name: ``{"teacher": "module:factory"}``, each
    ``factory(spec, env) -> Policy`` imported when first used (``agentgym.register_policy`` adds
    more from outside the class)"""
    blocking: ClassVar[bool] = False
    """reset/step block (subprocesses, I/O, a sync tool that may hang): the async runner then calls
    them in a thread, so a slow step never stalls other episodes and its turn time limit can fire.
    Async tools (``async def``) need no thread: ``astep`` awaits them on the runner's loop."""

    def __init__(
        self, max_turns: int | None = None, tool_format: Format | None = None, render_mode: str | None = None
    ):
        if max_turns is not None:
            if max_turns < 1:
                raise ValueError(f"max_turns must be at least 1, got {max_turns}")
            self.max_turns = max_turns
        if tool_format is not None:
            self.tool_format = tool_format
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode {render_mode!r} is not one of {self.metadata['render_modes']}")
        self.render_mode = render_mode
        self._tools: dict[str, Tool] = {t.name: t for t in self.collect_tools()}
        self._async_tools = any(t.is_async for t in self._tools.values())
        self.observation_space = ConversationSpace()
        self.action_space = MessageSpace(self.tool_schemas)
        # a plain function set as the class's verifier is read from the class, not as a method
        verifier = inspect.getattr_static(self, "verifier", None)
        if isinstance(verifier, staticmethod | classmethod):
            verifier = self.verifier
        self._verify = as_verifier(verifier) if verifier is not None else None
        self.task: Task | None = None
        self.trajectory = Trajectory()
        self.done = True
        self.turns = 0

    # ----- what subclasses declare -----------------------------------------------------------

    def collect_tools(self) -> list[Tool]:
        """The env's tools: every ``Tool`` found on the class (methods decorated with ``@tool``)."""
        found: dict[str, Tool] = {}
        for cls in reversed(type(self).__mro__):
            for value in vars(cls).values():
                if isinstance(value, Tool):
                    found[value.name] = value
        return list(found.values())

    def load_task(self, task_id: str | None) -> Task:
        """Return the task with this id, or a task drawn with ``self.np_random`` when None."""
        raise NotImplementedError

    def task_ids(self, n: int, seed: int = 0) -> list[str]:
        """The ids of ``n`` tasks for a run (shipped tasks in order, cycling; or generated ones),
        each one that ``load_task`` accepts."""
        raise NotImplementedError(f"{type(self).__name__} defines no task_ids(n, seed)")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """An env that loads tasks must say which ids exist: made-up ids ("0", "1", ...) would
        reach ``load_task`` silently and every run would score tasks that were never there."""
        super().__init_subclass__(**kwargs)
        if "load_task" in vars(cls) and cls.task_ids is ToolEnv.task_ids:
            raise TypeError(
                f"{cls.__qualname__} defines load_task but not task_ids: add "
                "`def task_ids(self, n, seed=0) -> list[str]` returning n ids that load_task accepts "
                "(e.g. the first n of a shipped list, cycling, or ids drawn with the seed)"
            )

    def initial_messages(self, task: Task) -> list[Message]:
        return [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": task.prompt}]

    def score(self) -> Score:
        """Score the finished trajectory with the verifier (outside anything the agent wrote)."""
        if self._verify is None:
            return Score()
        return self._verify(self.trajectory, self.task)

    # ----- Gymnasium API -----------------------------------------------------------------------

    @property
    def tool_schemas(self) -> list[dict[str, Any]]:
        """The OpenAI-style schemas of the env's tools (what a chat template renders)."""
        return [t.schema for t in self._tools.values()]

    @property
    def env_id(self) -> str:
        """The registry id this env was made under (``file.py:Class`` or ``module:Class`` when
        made from one; the class name when built directly)."""
        made = getattr(self, "_made_as", None)
        if made is not None:
            return made[0]
        spec = getattr(self, "spec", None)
        if spec is None:
            return type(self).__name__
        if getattr(self, "_env_id_for", None) is not spec:
            from agentgym.registry import agentgym_id

            self._env_id, self._env_id_for = agentgym_id(spec.id), spec
        return self._env_id

    @property
    def env_kwargs(self) -> dict[str, Any]:
        """The keyword arguments this env was made with (registered defaults included), the
        JSON-serialisable ones: what a record stores so that ``make(env_id, **env_kwargs)``
        builds the same env again. Empty for an env built directly rather than through ``make``."""
        made = getattr(self, "_made_as", None)
        source = made if made is not None else getattr(self, "spec", None)
        if getattr(self, "_env_kwargs_for", False) is not source:  # once per spec, not per reset
            kwargs = made[1] if made is not None else getattr(source, "kwargs", None) or {}
            self._env_kwargs = {k: v for k, v in kwargs.items() if _json_safe(v)}
            self._env_kwargs_for = source
        return dict(self._env_kwargs)

    def new_trajectory(self, messages: list[Message], **metadata: Any) -> Trajectory:
        """The trajectory a reset starts: its first messages, the env's id, kwargs and tool
        schemas, and the task id, so the record describes itself."""
        return Trajectory(
            messages=list(messages),
            env=self.env_id,
            task_id=self.task.task_id if self.task is not None else "",
            metadata=metadata,
            tools=self.tool_schemas,
            env_kwargs=self.env_kwargs,
        )

    # The random generator is built on first use: seeding numpy costs more than a whole toy
    # episode, and most envs draw nothing when the task id is given.
    _rng: Any = None
    _pending_seed: int | None = None

    @property
    def _np_random(self):
        if self._rng is None and self._pending_seed is not None:
            self._rng, self._np_random_seed = gymnasium.utils.seeding.np_random(self._pending_seed)
            self._pending_seed = None
        return self._rng

    @_np_random.setter
    def _np_random(self, value) -> None:
        self._rng = value
        self._pending_seed = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            self._rng, self._pending_seed, self._np_random_seed = None, seed, seed
        options = options or {}
        self.task = self.load_task(options.get("task_id"))
        self.turns = 0
        self.done = False
        messages = self.initial_messages(self.task)
        self.trajectory = self.new_trajectory(messages, seed=seed)
        return [dict(m) for m in messages], {"task_id": self.task.task_id}

    def step(self, action: Message):
        action = self._begin_step(action)
        return self._end_step(self.respond(action))

    def _begin_step(self, action: Any) -> Message:
        if self.done:
            raise EpisodeOver("the episode is over; call reset() before step()")
        if not isinstance(action, dict):
            action = {"role": "assistant", "content": action if isinstance(action, str) else repr(action)}
        content = action.get("content")
        if content is not None and not isinstance(content, str):
            action = {**action, "content": str(content)}
        calls = action.get("tool_calls")
        if calls is not None and not isinstance(calls, list):  # one call, or junk: answered as malformed
            action = {**action, "tool_calls": [calls]}
        self.trajectory.messages.append(action)
        self.turns += 1
        return action

    def turn_reward(self, action: Message, replies: list[Message]) -> float | None:
        """A process reward for the assistant turn just taken (``action``, answered by
        ``replies``), or None for none: the default, so that only the final score rewards an
        episode. An env that returns numbers gets them recorded, one per assistant turn, in
        ``trajectory.metadata["turn_rewards"]`` (turns that returned None count 0.0) and in the
        step's ``info["turn_reward"]``; the episode's score stays the verifier's. GRPO's
        ``advantage: turn`` and ``gigpo`` train on them."""
        return None

    def _end_step(self, replies: list[Message]):
        action = self.trajectory.messages[-1]
        self.trajectory.messages.extend(replies)
        terminated = self.done
        truncated = not terminated and self.turns >= self.max_turns
        reward = 0.0
        info: dict[str, Any] = {"turn": self.turns}
        self._record_turn_reward(self.turn_reward(action, replies), info)
        if terminated or truncated:
            self.done = True
            self.finish(truncated, info)
            reward = self.trajectory.score
        return [dict(m) for m in replies], reward, terminated, truncated, info

    def _record_turn_reward(self, value: float | None, info: dict[str, Any]) -> None:
        rewards = self.trajectory.metadata.get("turn_rewards")
        if value is None and rewards is None:
            return
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
        ):
            raise ValueError(
                f"{type(self).__name__}.turn_reward must return a finite number or None, got {value!r}"
            )
        rewards = self.trajectory.metadata.setdefault("turn_rewards", [])
        rewards.extend([0.0] * (self.turns - 1 - len(rewards)))
        rewards.append(float(value or 0.0))
        info["turn_reward"] = rewards[-1]

    def finish(self, truncated: bool, info: dict[str, Any]) -> None:
        """Score the trajectory and set its status; the breakdown goes into ``info``."""
        score = self.score()
        traj = self.trajectory
        traj.score = score.total
        traj.status = "truncated" if truncated else "ok"
        if score.errors:
            traj.status = "env_error"
            traj.metadata["verifier_errors"] = dict(score.errors)
        traj.metadata["breakdown"] = dict(score.breakdown)
        traj.metadata["turns"] = self.turns
        info.update(score=score.total, breakdown=dict(score.breakdown), status=traj.status)
        if score.errors:
            info["verifier_errors"] = dict(score.errors)

    def respond(self, action: Message) -> list[Message]:
        """Run the tool calls of an assistant message; a message without calls is the final answer
        (or, when ``ends_on_text`` is False, a reminder to call a tool)."""
        replies, calls, decoded = self._plan(action)
        for i, call in enumerate(calls):
            replies.append(self.call_tool(call, decoded[i] if i < len(decoded) else None))
            if self.done:
                break
        return replies

    async def arespond(self, action: Message) -> list[Message]:
        """``respond`` for the async path: async tools are awaited on the running event loop."""
        replies, calls, decoded = self._plan(action)
        for i, call in enumerate(calls):
            replies.append(await self.acall_tool(call, decoded[i] if i < len(decoded) else None))
            if self.done:
                break
        return replies

    def _plan(self, action: Message) -> tuple[list[Message], list[Any], list[Any]]:
        """The error replies of malformed calls, the calls to run and their decoded arguments."""
        calls = action.get("tool_calls")
        errors: list[str] = []
        decoded: list[Any] = []
        if not calls:
            parsed = parse_tool_calls(action.get("content") or "", self.tool_format)
            calls, errors, decoded = parsed.tool_calls, parsed.errors, parsed.arguments
        replies: list[Message] = [{"role": "tool", "name": "error", "content": f"Error: {e}"} for e in errors]
        if not calls and not errors:
            if self.ends_on_text:
                self.done = True
            else:
                names = ", ".join(self._tools)
                replies.append({"role": "user", "content": f"Please call one of the tools ({names})."})
            return replies, [], []
        return replies, list(calls), decoded

    def call_tool(self, call: Any, arguments: dict[str, Any] | None = None) -> Message:
        """Execute one tool call; every model mistake becomes an error message, never an exception.

        ``arguments`` are the call's already-decoded arguments, when the parser has them. An async
        tool is run to completion here (``astep`` awaits it on the caller's loop instead)."""
        out, tool, args = self._resolve_call(call, arguments)
        if tool is not None:
            try:
                out["content"] = _tool_text(tool.call_blocking(args, owner=self))
            except (Exception, SystemExit) as e:
                out["content"] = _tool_error(tool.name, e)
        return out

    async def acall_tool(self, call: Any, arguments: dict[str, Any] | None = None) -> Message:
        """``call_tool`` that awaits an async tool."""
        out, tool, args = self._resolve_call(call, arguments)
        if tool is not None:
            try:
                out["content"] = _tool_text(await tool.acall(args, owner=self))
            except (Exception, SystemExit) as e:
                out["content"] = _tool_error(tool.name, e)
        return out

    def _resolve_call(self, call: Any, arguments: Any) -> tuple[Message, Tool | None, Any]:
        """The reply message, the tool and its decoded arguments; no tool when the reply already
        holds the error (malformed call, unknown tool, arguments that are not JSON)."""
        try:
            fn = call["function"]
            name, raw = fn["name"], fn.get("arguments", "{}")
            call_id = call.get("id", "")
        except (KeyError, TypeError, AttributeError):
            return {"role": "tool", "name": "error", "content": "Error: malformed tool call"}, None, None
        out: Message = {"role": "tool", "tool_call_id": str(call_id), "name": str(name)}
        tool = self._tools.get(name) if isinstance(name, str) else None
        if tool is None:
            out["content"] = (
                f"Error: unknown tool {name!r}. Available tools: {', '.join(self._tools) or 'none'}."
            )
            return out, None, None
        if arguments is not None:
            return out, tool, arguments
        if isinstance(raw, str):
            try:
                return out, tool, loads_json(raw) if raw.strip() else {}
            except (ValueError, RecursionError) as e:  # not JSON, or NaN / Infinity
                out["content"] = f"Error: arguments of {name} are not valid JSON: {getattr(e, 'msg', e)}"
                return out, None, None
        return out, tool, raw

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        return "\n".join(f"[{m.get('role')}] {m.get('content') or ''}" for m in self.trajectory.messages)

    def close(self) -> None:
        self.done = True

    # ----- async API for the rollout runner ---------------------------------------------------

    executor: Any = None
    """thread pool for blocking envs (the rollout runner sizes one to its concurrency); None uses
    the event loop's default pool"""

    async def _in_thread(self, fn, *args, **kwargs):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))

    async def areset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if self.blocking:
            return await self._in_thread(self.reset, seed=seed, options=options)
        return self.reset(seed=seed, options=options)

    async def astep(self, action: Message):
        if self.blocking:
            return await self._in_thread(self.step, action)
        if not self._async_tools:
            return self.step(action)
        action = self._begin_step(action)
        return self._end_step(await self.arespond(action))

    async def aclose(self) -> None:
        if self.blocking:
            await self._in_thread(self.close)
        else:
            self.close()


class ListedTasks:
    """Tasks for an env whose tasks are a fixed list (a task file, a benchmark): the subclass sets
    ``self.tasks`` (each with a ``task_id``) and ``self.by_id``; ``task_ids`` cycle through the list
    from the seed, and ``listed_task`` finds one (or draws one with the env's generator).

    ``class MyEnv(ListedTasks, ToolEnv)``
    """

    task_kind: ClassVar[str] = "task"
    """what the tasks are called in the error for an unknown id"""
    tasks: list[Any]
    by_id: dict[str, Any]

    def task_ids(self, n: int, seed: int = 0) -> list[str]:
        start = seed % len(self.tasks)
        return [self.tasks[(start + i) % len(self.tasks)].task_id for i in range(n)]

    def listed_task(self, task_id: str | None) -> Any:
        if task_id is None:
            return self.tasks[int(self.np_random.integers(len(self.tasks)))]
        if str(task_id) in self.by_id:
            return self.by_id[str(task_id)]
        raise KeyError(
            f"no {self.task_kind} {task_id!r}; there are {len(self.tasks)} (e.g. {self.tasks[0].task_id!r})"
        )

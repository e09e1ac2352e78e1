"""MCP task files: what loads, and the errors (with file and line) for what does not; the
teacher's replies; the env's arguments."""

from __future__ import annotations

import json

import pytest

from agentgym.types import Trajectory

GOOD = {"task_id": "t1", "prompt": "Say hi.", "answer": "hi"}


def test_shipped_task_files_load_and_every_task_has_a_solution():
    from agentgym.envs.mcp.tasks import load_tasks

    sizes = {}
    for name in ("time", "filesystem", "git"):
        tasks = load_tasks(name)
        sizes[name] = len(tasks)
        assert all(t.checks and t.solution for t in tasks)
    assert sizes == {"time": 12, "filesystem": 12, "git": 6}


@pytest.mark.parametrize(
    "line, error",
    [
        ("{not json", r"tasks.jsonl:2: not valid JSON"),
        (json.dumps({"prompt": "x", "answer": "y"}), r":2: task_id must be a non-empty string"),
        (json.dumps({**GOOD, "task_id": "t2", "anwser": "y"}), r":2: unknown key\(s\) \['anwser'\]"),
        (json.dumps(GOOD), r":2: task_id 't1' is used already on line 1"),
        (
            json.dumps({**GOOD, "task_id": "t2", "files": {"/etc/x": "y"}}),
            r":2: files: '/etc/x' is not a relative",
        ),
        (
            json.dumps({**GOOD, "task_id": "t2", "check_call": {"name": "x"}}),
            r':2: check_call must be \{"name"',
        ),
        (
            json.dumps({**GOOD, "task_id": "t2", "solution": [{"answer": "a"}, {"tool": "x"}]}),
            r":2: solution\[0\]: the answer step must be the last one",
        ),
        (
            json.dumps({**GOOD, "task_id": "t2", "solution": [{"tool": "x", "args": {}}]}),
            r":2: solution\[0\]: unknown key\(s\) \['args'\]",
        ),
        ("[1, 2]", r":2: a task must be a JSON object, got list"),
    ],
)
def test_a_bad_line_names_its_line(write_tasks, tmp_path, line, error):
    from agentgym.envs.mcp.tasks import load_tasks

    path = tmp_path / "tasks.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + line + "\n")
    with pytest.raises(ValueError, match=error):
        load_tasks(str(path))


def test_missing_and_empty_task_files(tmp_path):
    from agentgym.envs.mcp.tasks import load_tasks

    with pytest.raises(
        FileNotFoundError, match=r"no task file 'nope'.*shipped set \(filesystem, git, time\)"
    ):
        load_tasks("nope")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="holds no tasks"):
        load_tasks(str(tmp_path / "empty.jsonl"))


def test_teacher_replays_the_solution_then_answers():
    from agentgym.envs.mcp.env import McpTeacher
    from agentgym.envs.mcp.tasks import task_from_record

    task = task_from_record(
        {**GOOD, "solution": [{"tool": "a", "arguments": {"x": 1}}, {"tool": "b"}, {"answer": "hi there"}]}
    )
    traj = Trajectory(messages=[{"role": "system", "content": ""}, {"role": "user", "content": "Say hi."}])
    names = []
    for _ in range(3):
        reply = McpTeacher.reply(traj, task)
        traj.messages += [reply, {"role": "tool", "content": "result"}]
        names.append([c["function"]["name"] for c in reply.get("tool_calls", [])] or reply["content"])
    assert names == [["a"], ["b"], "hi there"]
    no_answer = task_from_record({**GOOD, "solution": [{"tool": "a"}]})
    traj.messages = traj.messages[:2] + [McpTeacher.reply(traj, no_answer), {"role": "tool", "content": "42"}]
    assert McpTeacher.reply(traj, no_answer) == {"role": "assistant", "content": "42"}
    with pytest.raises(ValueError, match="task t1 has no solution"):
        McpTeacher.reply(traj, task_from_record(GOOD))


def test_env_arguments_are_checked(write_tasks, fake, tmp_path):
    from agentgym.envs.mcp.env import McpEnv

    tasks = write_tasks([GOOD])
    with pytest.raises(ValueError, match="not both"):
        McpEnv(server="x", url="http://127.0.0.1:1/mcp", tasks=tasks)
    with pytest.raises(ValueError, match="tasks= is required"):
        McpEnv(server="x")
    with pytest.raises(ValueError, match="fresh must be 'episode' or 'run'"):
        McpEnv(server="x", tasks=tasks, fresh="always")
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        McpEnv(server="x", tasks=tasks, timeout=0)
    with pytest.raises(ValueError, match=r"verifier='nope': give 'module:function'"):
        McpEnv(server="x", tasks=tasks, verifier="nope")
    with pytest.raises(ValueError, match=r"cannot import 'no_such_module_x'"):
        McpEnv(server="x", tasks=tasks, verifier="no_such_module_x:f")
    with pytest.raises(ValueError, match=r"need a server command that works in the episode's directory"):
        McpEnv(url="http://127.0.0.1:1/mcp", tasks=write_tasks([{**GOOD, "files": {"a": "b"}}], "f.jsonl"))
    unchecked = write_tasks([{"task_id": "t", "prompt": "p"}], "u.jsonl")
    with pytest.raises(ValueError, match=r"tasks \['t'\] have nothing to check"):
        McpEnv(server="x", tasks=unchecked)

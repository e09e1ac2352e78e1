"""The MCP env against real servers nobody here wrote: mcp-server-time and mcp-server-git (PyPI)
and @modelcontextprotocol/server-filesystem (npm), through the CLI and step by step."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from agentgym.types import tool_call

AGENTGYM = str(Path(sys.executable).with_name("agentgym"))
TASKS = Path(__file__).parents[2] / "envs" / "mcp" / "tasks"


def eval_json(*env_kwargs: str, n: int, tmp_path: Path) -> tuple[dict, list[dict]]:
    out = tmp_path / "episodes.jsonl"
    cmd = [AGENTGYM, "eval", "--env", "mcp/server-v0", "--env-kwargs", *env_kwargs]
    cmd += ["--policy", "teacher", "--n", str(n), "--json", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    return summary, [json.loads(line) for line in out.read_text().splitlines()]


def call(name: str, arguments: dict, call_id: str = "call_0") -> dict:
    return {"role": "assistant", "content": "", "tool_calls": [tool_call(name, arguments, call_id)]}


def test_eval_time_server_teacher(time_server, tmp_path):
    summary, records = eval_json(
        f"server={time_server}", f"tasks={TASKS / 'time.jsonl'}", n=10, tmp_path=tmp_path
    )
    assert summary["episodes"] == 10 and summary["mean_score"] == 1.0
    assert summary["statuses"]["ok"] == 10
    tokyo = next(r for r in records if r["task_id"] == "tokyo-kolkata-0930")
    result = json.loads(tokyo["messages"][3]["content"])  # what the real server answered
    assert (
        result["target"]["timezone"] == "Asia/Kolkata" and "T06:00:00+05:30" in result["target"]["datetime"]
    )
    assert {t["function"]["name"] for t in tokyo["tools"]} == {"get_current_time", "convert_time"}


def test_eval_filesystem_server_fresh_per_episode(fs_server, tmp_path):
    summary, records = eval_json(f"server={fs_server}", "tasks=filesystem", n=12, tmp_path=tmp_path)
    assert summary["episodes"] == 12 and summary["mean_score"] == 1.0
    by_id = {r["task_id"]: r for r in records}
    assert by_id["fs-edit-status"]["metadata"]["breakdown"] == {"files": 1.0}
    assert by_id["fs-move-archive"]["metadata"]["breakdown"] == {"files": 1.0, "call": 1.0}
    assert by_id["fs-read-port"]["metadata"]["breakdown"] == {"answer": 1.0}


def test_eval_git_server(git_server, tmp_path):
    summary, records = eval_json(f"server={git_server}", "tasks=git", n=6, tmp_path=tmp_path)
    assert summary["mean_score"] == 1.0 and summary["statuses"]["ok"] == 6
    commit = next(r for r in records if r["task_id"] == "git-commit-notes")
    assert "Changes committed successfully" in commit["messages"][5]["content"]


def test_wrong_answer_scores_zero(time_server):
    from agentgym.envs.mcp.env import McpEnv

    env = McpEnv(server=time_server, tasks="time")
    try:
        env.reset(seed=0, options={"task_id": "tokyo-kolkata-0930"})
        obs, *_ = env.step(
            call(
                "convert_time",
                {"source_timezone": "Asia/Tokyo", "time": "09:30", "target_timezone": "Asia/Kolkata"},
            )
        )
        assert "06:00" in obs[0]["content"]
        _, reward, terminated, _, info = env.step({"role": "assistant", "content": "It is 07:00."})
        assert terminated and reward == 0.0
        assert info["breakdown"] == {"answer": 0.0} and info["status"] == "ok"
    finally:
        env.close()


def test_tool_errors_come_back_as_messages_and_the_episode_goes_on(time_server):
    from agentgym.envs.mcp.env import McpEnv

    env = McpEnv(server=time_server, tasks="time")
    try:
        env.reset(seed=0, options={"task_id": "kolkata-utc-1845"})
        obs, _, terminated, _, _ = env.step(call("get_weather", {"city": "Pune"}))
        assert obs[0]["content"] == (
            "Error: unknown tool 'get_weather'. Available tools: get_current_time, convert_time."
        )
        obs, *_ = env.step(call("convert_time", {"source_timezone": "Asia/Kolkata"}))
        assert obs[0]["content"].startswith("Error: ") and "target_timezone" in obs[0]["content"]
        obs, *_ = env.step(
            call(
                "convert_time", {"source_timezone": "Mars/Olympus", "time": "18:45", "target_timezone": "UTC"}
            )
        )
        assert obs[0]["content"].startswith("Error: ") and "Mars/Olympus" in obs[0]["content"]
        bad_json = {
            "role": "assistant",
            "content": "",
            "tool_calls": [tool_call("convert_time", "{not json")],
        }
        obs, *_ = env.step(bad_json)
        assert obs[0]["content"].startswith("Error: arguments of convert_time are not valid JSON")
        obs, *_ = env.step(call("convert_time", ["Asia/Kolkata"]))
        assert obs[0]["content"].startswith("Error: the arguments of convert_time must be a JSON object")
        obs, _, terminated, _, _ = env.step(
            call(
                "convert_time", {"source_timezone": "Asia/Kolkata", "time": "18:45", "target_timezone": "UTC"}
            )
        )
        assert not terminated and "13:15" in obs[0]["content"]
        _, reward, terminated, _, info = env.step({"role": "assistant", "content": "13:15"})
        assert terminated and reward == 1.0 and info["status"] == "ok" and env.turns == 7
    finally:
        env.close()


def test_files_are_checked_in_the_episode_workdir(fs_server):
    from agentgym.envs.mcp.env import McpEnv

    env = McpEnv(server=fs_server, tasks="filesystem")
    try:
        env.reset(seed=0, options={"task_id": "fs-edit-status"})
        workdir = Path(env.workdir)
        assert (workdir / "notes.txt").read_text().startswith("title: quarterly plan")
        obs, *_ = env.step(
            call("edit_file", {"path": "notes.txt", "edits": [{"oldText": "draft", "newText": "done"}]})
        )
        assert "+status: done" in obs[0]["content"]
        _, reward, _, _, info = env.step({"role": "assistant", "content": "Edited."})
        assert reward == 0.0 and info["breakdown"] == {"files": 0.0}
        assert not workdir.exists()  # the episode's directory goes with its server

        env.reset(seed=0, options={"task_id": "fs-edit-status"})  # a fresh directory and server
        assert Path(env.workdir) != workdir and "status: draft" in Path(env.workdir, "notes.txt").read_text()
        obs, *_ = env.step(call("read_text_file", {"path": "../../etc/passwd"}))
        assert obs[0]["content"].startswith("Error: ") and "outside allowed directories" in obs[0]["content"]
    finally:
        env.close()


def test_default_env_wraps_the_time_server(time_server):
    import agentgym

    env = agentgym.make("mcp/server-v0")
    try:
        assert [t["function"]["name"] for t in env.tool_schemas] == ["get_current_time", "convert_time"]
        schema = env.tool_schemas[1]["function"]["parameters"]
        assert schema["required"] == ["source_timezone", "time", "target_timezone"]
        ids = env.task_ids(14)
        assert ids[:12] == [t.task_id for t in env.tasks] and ids[12:] == ids[:2]
        assert env.task_ids(2, seed=1) == ids[1:3]
    finally:
        env.close()
        env.close()

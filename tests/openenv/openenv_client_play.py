"""Plays calculator episodes with the openenv-core package's own clients, untouched (run from
.venv-openenv): ``python openenv_client_play.py URL TASKS_JSON`` prints one JSON line of results.

Each task is ``{"task_id", "expression"}``: the client resets to the task, lists the tools, calls
the calculator with the expression and answers with the tool's result.
"""

import asyncio
import json
import sys

from openenv.core.generic_client import GenericEnvClient
from openenv.core.mcp_client import MCPToolClient


async def play(url: str, tasks: list[dict]) -> dict:
    episodes = []
    async with MCPToolClient(base_url=url) as env:
        tools = [t.name for t in await env.list_tools()]
        for task in tasks:
            reset = await env.reset(task_id=task["task_id"])
            result = await env.call_tool("calculator", expression=task["expression"])
            final = await env.step(str(result))  # a plain value: the client sends {"action": ...}
            state = await env.state()
            episodes.append(
                {
                    "task_id": reset.observation.metadata.get("task_id", task["task_id"]),
                    "result": result,
                    "reward": final.reward,
                    "done": final.done,
                    "steps": state.step_count,
                }
            )
    async with GenericEnvClient(base_url=url) as env:
        reset = await env.reset(task_id=tasks[0]["task_id"])
        call = await env.step(
            {
                "type": "call_tool",
                "tool_name": "calculator",
                "arguments": {"expression": tasks[0]["expression"]},
            }
        )
        final = await env.step({"type": "message", "content": str(call.observation["result"])})
        generic = {
            "prompt": reset.observation["messages"][-1]["content"],
            "tool_messages": call.observation["messages"],
            "reward": final.reward,
            "status": final.observation.get("status"),
        }
    return {"tools": tools, "episodes": episodes, "generic": generic}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(play(sys.argv[1], json.loads(sys.argv[2])))))

"""MCP (Model Context Protocol) servers as tool environments: ``mcp/server-v0``.

Any MCP server, a command over stdio or a streamable HTTP endpoint, becomes a ``ToolEnv`` whose
tools are the server's own; tasks come from a JSONL file (``agentgym.envs.mcp.tasks``). Shipped
task sets: ``time`` (mcp-server-time), ``filesystem`` (@modelcontextprotocol/server-filesystem)
and ``git`` (mcp-server-git)::

    agentgym eval --env mcp/server-v0 --env-kwargs server=mcp-server-time tasks=time --policy teacher --n 12
    agentgym eval --env mcp/server-v0 --policy teacher --n 12 --env-kwargs tasks=filesystem \\
        server=".mcp-servers/node_modules/.bin/mcp-server-filesystem {workdir}"

Importing this package is light; ``McpEnv`` (and the ``mcp`` SDK) load on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["McpEnv"]


def __getattr__(name: str) -> Any:
    if name == "McpEnv":
        from agentgym.envs.mcp.env import McpEnv

        return McpEnv
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

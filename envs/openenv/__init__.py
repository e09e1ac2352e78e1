"""Interoperation over the wire in the OpenEnv protocol.

- ``server``: ``agentgym env serve ENV_ID`` serves any registered env to other frameworks (an
  OpenEnv client, TRL, SkyRL...): a WebSocket session per client at ``/ws`` with ``reset``,
  ``step``, ``state`` and ``close`` messages, plus the HTTP routes an OpenEnv server has.
- ``client``: ``--env openenv:URL`` makes a remote OpenEnv server an env here, for rollouts,
  evaluation and training.

The wire format follows the ``openenv-core`` package (client messages ``{"type": ..., "data":
...}``; replies ``{"type": "observation", "data": {"observation", "reward", "done"}}``, ``state``
or ``error``). Tool calls use OpenEnv's MCP actions: ``{"type": "list_tools"}`` and ``{"type":
"call_tool", "tool_name": ..., "arguments": {...}}``.
"""

"""Built-in environments. Each family registers its ids here with lazy entry points, so
importing agentgym never imports an environment's heavy dependencies."""

from agentgym.registry import register, register_scheme


def register_builtin_envs() -> None:
    register("toy/calculator-v0", "agentgym.envs.toy:CalculatorEnv")
    register("code/python_functions-v0", "agentgym.envs.code.env:CodeEnv", requires="sandbox")
    for game in ("tic_tac_toe", "connect_four", "kuhn_poker", "leduc_poker"):
        register(f"games/{game}-v0", "agentgym.envs.games.env:GameEnv", requires="games", game=game)
    register("games/openspiel-v0", "agentgym.envs.games.env:GameEnv", requires="games", game="tic_tac_toe")
    register("web/shop-v0", "agentgym.envs.web.env:WebReplayEnv", requires="web", site="shop")
    register("web/wiki-v0", "agentgym.envs.web.env:WebReplayEnv", requires="web", site="wiki")
    register("web/pydocs-v0", "agentgym.envs.web.env:WebReplayEnv", requires="web", site="pydocs")
    register("web/replay-v0", "agentgym.envs.web.env:WebReplayEnv", requires="web")
    register("mcp/server-v0", "agentgym.envs.mcp.env:McpEnv", requires="mcp")
    # a remote OpenEnv server (`--env openenv:ws://HOST:PORT`, a pool as URL1,URL2)
    register("openenv/remote-v0", "agentgym.envs.openenv.client:OpenEnvEnv", requires="serve")
    register_scheme("openenv", "openenv/remote-v0", "url")
    # an MCP server's tools (`--env mcp --env-kwargs server=... tasks=...`, or `--env mcp:COMMAND`)
    register_scheme("mcp", "mcp/server-v0", "server")

"""OpenSpiel games as tool environments: ``games/tic_tac_toe-v0``, ``games/connect_four-v0``,
``games/kuhn_poker-v0``, ``games/leduc_poker-v0``, and any OpenSpiel game through
``games/openspiel-v0`` with ``game="..."`` (and ``params={...}``).

The agent holds one seat and plays with a ``move`` tool; opponents are bots chosen by spec
(``opponent="random" | "mcts:sims=N" | "cfr:iters=N"``), and the same specs are agent policies::

    agentgym eval --env games/tic_tac_toe-v0 --policy mcts:sims=200 --n 100
    agentgym eval --env games/kuhn_poker-v0 --policy cfr:iters=1000 --opponent random
    agentgym generate selfplay --game connect_four --n 200 --out wins.jsonl

Importing this package is light; ``GameEnv`` (and pyspiel) load on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BotPolicy", "GameEnv", "load_game", "make_bot", "outcome_score"]


def __getattr__(name: str) -> Any:
    if name in ("BotPolicy", "GameEnv", "load_game", "outcome_score"):
        from agentgym.envs.games import env

        return getattr(env, name)
    if name == "make_bot":
        from agentgym.envs.games.bots import make_bot

        return make_bot
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

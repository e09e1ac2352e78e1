"""Which OpenSpiel games ``games/openspiel-v0`` serves, and why the others are not.

A game is served when it loads with its default parameters, is sequential or simultaneous (made
turn-based), and its first decision lists its legal moves. The rest are named with the reason:
mean-field games (a population, not seats), games whose moves are structs with no list of legal
actions, games read from a file, and games that need a parameter to load at all (most of them
wrap another game, and serve fine once given one, e.g. ``misere(game=tic_tac_toe())``).

    agentgym games list          # served games, then the others with reasons
    agentgym games list --json
"""

from __future__ import annotations

import re

import pyspiel
from agentgym.envs.games.env import GameEnv
from agentgym.envs.games.text import quiet_stderr

NEEDS_PARAMETERS = (
    "needs the parameter {} to load; give parameters in the name, e.g. misere(game=tic_tac_toe()) "
    "or repeated_game(stage_game=matrix_rps(),num_repetitions=3)"
)


def why_not_served(name: str) -> str | None:
    """None when ``games/openspiel-v0`` can serve ``name`` with default parameters, else why not."""
    kind = _kind(name)
    if kind.dynamics == pyspiel.GameType.Dynamics.MEAN_FIELD:
        return "a mean-field game: it models a population's distribution, not players in seats"
    if "filename" in kind.parameter_specification:
        return f"reads its game from a file: give it, e.g. {name}(filename=/path/to/game)"
    try:
        with quiet_stderr():
            env = GameEnv(name, opponent="random")
            env.reset(options={"task_id": f"{name}-0"})
            moves = env.legal_moves()
        if not moves:
            return "its first decision lists no legal moves"
    except Exception as e:  # noqa: BLE001 - any failure here is the reason the game is not served
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "action structs only" in reason:
            return "its moves are action structs with no list of legal actions"
        missing = re.search(r"Missing parameter (\w+)", reason)
        if missing:
            return NEEDS_PARAMETERS.format(missing.group(1))
        return f"fails to start: {type(e).__name__}: {reason[:200]}"
    return None


def _kind(name: str) -> pyspiel.GameType:
    for kind in pyspiel.registered_games():
        if kind.short_name == name:
            return kind
    raise ValueError(f"unknown OpenSpiel game {name!r}")


def catalog() -> tuple[list[str], dict[str, str]]:
    """(served game names, {other game: reason}), over every game OpenSpiel registers."""
    served: list[str] = []
    others: dict[str, str] = {}
    for name in sorted(pyspiel.registered_names()):
        reason = why_not_served(name)
        if reason is None:
            served.append(name)
        else:
            others[name] = reason
    return served, others

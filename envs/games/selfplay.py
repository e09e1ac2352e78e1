"""Self-play data: bots play each other inside ``GameEnv`` and the winning side's transcript (chat
messages with ``move`` tool calls, exactly as the env shows them) is kept as a teacher demo.

Game ``k`` is task ``GAME-k``: it is first played with the agent in seat 0; when another seat
wins, the same game is replayed move for move from the winner's seat, so every record is the
winner's own view (its hidden cards only). Draws are kept (seat 0's view) only with
``keep="all"``. Output is the same for any number of worker processes.

Run it with ``agentgym generate selfplay --game connect_four --n 200 --out wins.jsonl``.
"""

from __future__ import annotations

import math
import re
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from agentgym.types import Trajectory, write_jsonl

BUILTIN_GAMES = ("tic_tac_toe", "connect_four", "kuhn_poker", "leduc_poker")


@dataclass
class SelfPlayConfig:
    """What to play and what to keep."""

    game: str
    """OpenSpiel game name, optionally with parameters: ``connect_four`` or ``breakthrough(rows=6)``"""
    n: int
    """records to write (games are played until this many are kept, or ``max_games`` is reached)"""
    bots: list[str] = field(default_factory=list)
    """one bot spec per seat, or one for all; empty: mcts:sims=200 (cfr:iters=1000 for imperfect information)"""
    keep: str = "winners"
    """``winners``: decisive games only; ``all``: draws too"""
    seed: int = 0
    """game k of the run is task ``GAME-(seed * 1_000_000 + k)``"""
    workers: int = 1
    """processes playing games in parallel"""
    params: dict[str, Any] | None = None
    """game parameters"""
    max_games: int | None = None
    """stop after this many games even when short of ``n`` (default 20 * n)"""

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}")
        if self.keep not in ("winners", "all"):
            raise ValueError(f"keep must be 'winners' or 'all', got {self.keep!r}")
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        if self.max_games is None:
            self.max_games = 20 * self.n
        if self.max_games < self.n:
            raise ValueError(f"max_games ({self.max_games}) must be at least n ({self.n})")


def split_bots(text: str) -> list[str]:
    """Split ``"mcts:sims=200,seed=1,random"`` into bot specs (a comma starts a new spec only
    before a bot name).

    >>> split_bots("mcts:sims=200,seed=1,mcts:sims=50,random")
    ['mcts:sims=200,seed=1', 'mcts:sims=50', 'random']
    """
    return [s.strip() for s in re.split(r",(?=\s*(?:random|mcts|cfr)\b(?![=\w]))", text) if s.strip()]


def _env_args(cfg: SelfPlayConfig) -> tuple[str, dict[str, Any]]:
    name = cfg.game.split("(", 1)[0].strip()
    if name in BUILTIN_GAMES and "(" not in cfg.game and not cfg.params:
        return f"games/{name}-v0", {}
    return "games/openspiel-v0", {"game": cfg.game, "params": cfg.params}


_ENVS: dict[Any, Any] = {}


def _make_env(env_id: str, kwargs: dict[str, Any], bots: list[str] | None):
    import agentgym

    key = (env_id, repr(sorted(kwargs.items())), tuple(bots or ()))
    if key not in _ENVS:
        env = agentgym.make(env_id, **kwargs)
        if bots is None:
            return env
        _ENVS[key] = agentgym.make(env_id, **kwargs, opponent=_per_seat(bots, env.game.num_players()))
    return _ENVS[key]


def _per_seat(bots: list[str], n: int) -> list[str]:
    if len(bots) == 1:
        return bots * n
    if len(bots) != n:
        raise ValueError(f"--bots names {len(bots)} bots but the game has {n} players; give one or {n}")
    return list(bots)


def _play(env, agent, task_id: str, seat: int) -> Trajectory:
    env.reset(options={"task_id": task_id, "seat": seat})
    done = False
    while not done:
        _, _, terminated, truncated, _ = env.step(agent.reply(env))
        done = terminated or truncated
    return env.trajectory


def play_game(
    env_id: str, kwargs: dict[str, Any], bots: list[str], k: int
) -> tuple[str, dict[str, Any] | None]:
    """Play task ``k``; returns (outcome, record): outcome is ``win``, ``draw`` or ``error``, and
    the record is the winner's trajectory (seat 0's for a draw) in the JSONL schema."""
    from agentgym.envs.games.bots import ReplayBot, make_bot
    from agentgym.envs.games.env import BotPolicy

    env = _make_env(env_id, kwargs, bots)
    task_id = f"{env.name}-{k}"
    traj = _play(env, BotPolicy(make_bot(env.opponent_specs[0], env.game)), task_id, 0)
    returns = traj.metadata.get("returns")
    if traj.status != "ok" or returns is None:
        return "error", None
    best = max(returns)
    winners = [p for p, r in enumerate(returns) if r == best]
    outcome = "win" if len(winners) == 1 and min(returns) < best else "draw"
    if outcome == "win" and winners[0] != 0:
        history = list(traj.metadata["history"])
        real, replay = env.bots, ReplayBot(history)
        env.bots = [replay] * len(real)
        try:
            traj = _play(env, BotPolicy(replay), task_id, winners[0])
        finally:
            env.bots = real
        if traj.metadata.get("history") != history:
            return "error", None
    traj.metadata.update(bots=list(env.opponent_specs), winner=winners[0] if outcome == "win" else None)
    return outcome, traj.to_record()


def _play_star(args: tuple) -> tuple[str, dict[str, Any] | None]:
    return play_game(*args)


def generate(cfg: SelfPlayConfig, out: str) -> dict[str, Any]:
    """Play until ``cfg.n`` records are kept and write them to ``out`` (JSONL); returns counts."""
    from agentgym.envs.games.bots import make_bot
    from agentgym.envs.games.env import GameEnv

    env_id, kwargs = _env_args(cfg)
    probe = _make_env(env_id, kwargs, None)
    assert isinstance(probe, GameEnv)
    bots = cfg.bots or ["mcts:sims=200" if probe.perfect else "cfr:iters=1000"]
    bots = _per_seat(bots, probe.game.num_players())
    for b in set(bots):
        make_bot(b, probe.game)  # bad specs fail here, once; CFR solves once before the workers start
    t0 = time.perf_counter()
    kept: list[dict[str, Any]] = []
    counts = {"games": 0, "wins": 0, "draws": 0, "errors": 0}
    base = cfg.seed * 1_000_000
    pool = ProcessPoolExecutor(cfg.workers) if cfg.workers > 1 else None
    try:
        while len(kept) < cfg.n and counts["games"] < cfg.max_games:
            rate = (
                max(len(kept) / counts["games"], 0.05) if counts["games"] else 1.0
            )  # records per game so far
            need = math.ceil((cfg.n - len(kept)) / rate * 1.1) + cfg.workers
            batch = min(cfg.max_games - counts["games"], need)
            jobs = [(env_id, kwargs, bots, base + counts["games"] + i) for i in range(batch)]
            results = (
                pool.map(_play_star, jobs, chunksize=max(1, batch // (4 * cfg.workers)))
                if pool
                else map(_play_star, jobs)
            )
            for outcome, record in results:
                counts["games"] += 1
                counts[{"win": "wins", "draw": "draws", "error": "errors"}[outcome]] += 1
                if record is not None and len(kept) < cfg.n and (outcome == "win" or cfg.keep == "all"):
                    kept.append(record)
    finally:
        if pool is not None:
            pool.shutdown()
    write_jsonl(out, kept)
    seconds = time.perf_counter() - t0
    return {
        "out": out,
        "env": env_id,
        "bots": bots,
        "kept": len(kept),
        **counts,
        "seconds": round(seconds, 2),
    }

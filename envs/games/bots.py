"""Game-playing bots selected by spec string: ``random``, ``mcts:sims=N``, ``cfr:iters=N``.

A bot is stateless: ``choose(state, player, seed)`` returns an action id, drawing all its
randomness from ``seed``. The environment derives that seed from the task, the player and the
move number (``move_seed``), so a game is a pure function of the task and the bots in each seat:
the same game comes out whichever seat the agent sits in, which is what self-play relies on.

- ``random[:seed=S]``: a uniformly random legal move.
- ``mcts:sims=N[,rollouts=R,uct_c=C,seed=S]``: OpenSpiel's C++ ``MCTSBot`` with a
  ``RandomRolloutEvaluator`` (perfect-information games only: it would see hidden cards).
  Defaults sims=200, rollouts=4, uct_c=1.0: on tic_tac_toe these win 98% against random
  (96% as the second player) and draw about 90% against themselves, where one rollout and
  uct_c=2 win 94% and draw 45%.
- ``cfr:iters=N[,algo=cfr+|cfr,seed=S]``: a move sampled from the average policy of CFR or CFR+
  after N iterations, solved once and cached on disk under ``$AGENTGYM_CACHE/cfr``
  (default ``~/.cache/agentgym/cfr``) per game, parameters, algorithm and iteration count.

>>> import pyspiel
>>> game = pyspiel.load_game("tic_tac_toe")
>>> bot = make_bot("mcts:sims=50", game)
>>> state = game.new_initial_state()
>>> bot.choose(state, 0, seed=1) == bot.choose(state, 0, seed=1)
True
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pyspiel

from agentgym.policy import PolicySpec, parse_spec

BOT_NAMES = ("random", "mcts", "cfr")
_MASK = (1 << 31) - 1
_M64 = (1 << 64) - 1


def move_seed(*parts: int) -> int:
    """Mix integers (task seed, player, move number, spec seed) into one 31-bit seed, the same in
    every process: Python's hash of a tuple of ints (not randomized per process) put through the
    SplitMix64 finalizer. (The tuple hash alone is no mixer: seeds of consecutive moves came out
    correlated, and kuhn_poker never dealt the Q-K hand.)

    >>> move_seed(1, 0, 3) == move_seed(1, 0, 3), move_seed(1, 0, 3) == move_seed(1, 1, 3)
    (True, False)
    """
    z = hash(parts) + 0x9E3779B97F4A7C15 & _M64
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 & _M64
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB & _M64
    return (z ^ (z >> 31)) & _MASK


def pick(
    options: list[int] | tuple[int, ...], weights: list[float] | tuple[float, ...] | None, seed: int
) -> int:
    """An option drawn with probability proportional to its weight (uniform when None), fixed by
    ``seed`` (a 31-bit value from ``move_seed``).

    >>> pick([5, 6, 7], None, 0), pick([5, 6, 7], [0.0, 0.0, 1.0], 12345)
    (5, 7)
    """
    if weights is None:
        return options[seed % len(options)]
    u = seed / (_MASK + 1) * sum(weights)
    acc = 0.0
    for option, w in zip(options, weights, strict=True):
        acc += w
        if u < acc:
            return option
    return next(o for o, w in zip(reversed(options), reversed(weights), strict=True) if w > 0)


class Bot(Protocol):
    spec: str

    def choose(self, state: pyspiel.State, player: int, seed: int) -> int: ...


def _check_keys(spec: PolicySpec, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(spec.kwargs) - set(allowed))
    if unknown or spec.args:
        bad = unknown or spec.args
        raise ValueError(
            f"bot {spec}: unknown option(s) {bad}; {spec.name} takes {', '.join(allowed) or 'no options'}"
        )


@dataclass
class RandomBot:
    """A uniformly random legal move."""

    spec: str = "random"
    seed: int = 0

    def choose(self, state: pyspiel.State, player: int, seed: int) -> int:
        return pick(state.legal_actions(), None, move_seed(seed, self.seed))


@dataclass
class MCTSBot:
    """pyspiel's C++ MCTS with random rollouts; a fresh search (and RNG) for every move."""

    game: pyspiel.Game
    spec: str
    sims: int = 200
    rollouts: int = 4
    uct_c: float = 1.0
    seed: int = 0

    def choose(self, state: pyspiel.State, player: int, seed: int) -> int:
        s = move_seed(seed, self.seed)
        evaluator = pyspiel.RandomRolloutEvaluator(self.rollouts, s)
        bot = pyspiel.MCTSBot(self.game, evaluator, self.uct_c, self.sims, 1000, False, s, False)
        return bot.step(state)


@dataclass
class CFRBot:
    """Samples from a CFR average policy (a table: information state -> [(action, prob)])."""

    spec: str
    table: dict[str, list[tuple[int, float]]]
    seed: int = 0

    def choose(self, state: pyspiel.State, player: int, seed: int) -> int:
        legal = state.legal_actions(player)
        probs = dict(self.table.get(state.information_state_string(player), []))
        weights = [max(probs.get(a, 0.0), 0.0) for a in legal]
        if sum(weights) <= 0:  # never reached in solving: play uniformly
            return pick(legal, None, move_seed(seed, self.seed))
        return pick(legal, weights, move_seed(seed, self.seed))


def make_bot(spec: str | PolicySpec, game: pyspiel.Game) -> Bot:
    """Build the bot a spec names; a bad spec raises ``ValueError`` saying what works."""
    p = parse_spec(spec)
    info = game.get_type().information
    if p.name == "random":
        _check_keys(p, ("seed",))
        return RandomBot(str(p), p.get("seed", 0, int))
    if p.name == "mcts":
        _check_keys(p, ("sims", "rollouts", "uct_c", "seed"))
        if info != pyspiel.GameType.Information.PERFECT_INFORMATION:
            raise ValueError(
                f"mcts plays perfect-information games only (it would see the hidden information of "
                f"{game.get_type().short_name}); use cfr:iters=N or random"
            )
        sims = p.get("sims", 200, int)
        if sims < 1:
            raise ValueError(f"bot {p}: sims must be at least 1, got {sims}")
        return MCTSBot(
            game, str(p), sims, p.get("rollouts", 4, int), p.get("uct_c", 1.0, float), p.get("seed", 0, int)
        )
    if p.name == "cfr":
        _check_keys(p, ("iters", "algo", "seed"))
        iters = p.get("iters", 1000, int)
        algo = p.get("algo", "cfr+")
        return CFRBot(str(p), solve_cfr(game, iters, algo), p.get("seed", 0, int))
    raise ValueError(f"unknown bot {str(p)!r}; use random, mcts:sims=N or cfr:iters=N")


@dataclass
class ReplayBot:
    """Plays the moves of a recorded history (action ids by position); replays self-play games."""

    history: list[int]
    spec: str = "replay"

    def choose(self, state: pyspiel.State, player: int, seed: int) -> int:
        return self.history[len(state.history())]


# ----- CFR: solved once, cached on disk ----------------------------------------------------------

_SOLVED: dict[str, dict[str, list[tuple[int, float]]]] = {}
_LOCK = threading.Lock()


def cache_dir() -> Path:
    """Where solved policies are kept: ``$AGENTGYM_CACHE/cfr`` or ``~/.cache/agentgym/cfr``."""
    root = os.environ.get("AGENTGYM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "agentgym")
    return Path(root) / "cfr"


def cfr_cache_path(game: pyspiel.Game, iters: int, algo: str = "cfr+") -> Path:
    key = re.sub(r"[^A-Za-z0-9_.=-]+", "_", str(game)).strip("_")
    return cache_dir() / f"{key}-{algo.replace('+', 'plus')}-{iters}.json"


def solve_cfr(game: pyspiel.Game, iters: int, algo: str = "cfr+") -> dict[str, list[tuple[int, float]]]:
    """The average policy of ``iters`` iterations of CFR (``algo="cfr"``) or CFR+ (``"cfr+"``),
    read from the disk cache when it was solved before, else solved and written there."""
    if algo not in ("cfr", "cfr+"):
        raise ValueError(f"cfr algo must be 'cfr' or 'cfr+', got {algo!r}")
    if iters < 1:
        raise ValueError(f"cfr iters must be at least 1, got {iters}")
    if game.get_type().dynamics != pyspiel.GameType.Dynamics.SEQUENTIAL:
        raise ValueError(f"cfr needs a sequential game, {game} is not")
    path = cfr_cache_path(game, iters, algo)
    with _LOCK:
        if str(path) in _SOLVED:
            return _SOLVED[str(path)]
        table = _read_cache(path, {"game": str(game), "algo": algo, "iters": iters})
        if table is None:
            solver = pyspiel.CFRPlusSolver(game) if algo == "cfr+" else pyspiel.CFRSolver(game)
            for _ in range(iters):
                solver.evaluate_and_update_policy()
            table = {
                k: [(int(a), float(p)) for a, p in v]
                for k, v in solver.tabular_average_policy().policy_table().items()
            }
            _write_cache(path, {"game": str(game), "algo": algo, "iters": iters, "policy": table})
        _SOLVED[str(path)] = table
        return table


def _read_cache(path: Path, key: dict[str, Any]) -> dict[str, list[tuple[int, float]]] | None:
    """The cached table, or None when the file is missing, damaged, or solved something else."""
    try:
        data: Any = json.loads(path.read_text())
        if any(data.get(k) != v for k, v in key.items()):
            return None
        table = {str(k): [(int(a), float(p)) for a, p in v] for k, v in data["policy"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # solve again (and overwrite)
    return table if table else None


def _write_cache(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(f".tmp{os.getpid()}")  # renamed into place: readers never see half a file
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
    except OSError:  # a read-only or full cache only costs solving again next time
        tmp.unlink(missing_ok=True)

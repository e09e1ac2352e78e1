"""``GameEnv``: an OpenSpiel game as a tool environment. The agent holds one seat and plays with a
``move`` tool; opponents (bots chosen by spec) and chance move inside ``step``.

Tasks are ids like ``tic_tac_toe-17``: the number seeds chance and every bot, and picks the
agent's seat (``17 % num_players``) unless ``seat`` is given, so the same task always gives the
same game for the same moves. Reward at the end, from the game's returns for the agent's seat:
two-player zero-sum games score win 1, draw 0.5, loss 0; other games score the return scaled
from [min_utility, max_utility] to [0, 1]. After ``max_illegal`` illegal or unreadable moves the
agent forfeits: the game is over, scored 0, status ``ok``, the count in the metadata. One move
is played per reply; further ``move`` calls in the same reply are answered with an error.

Simultaneous-move games are played turn by turn (OpenSpiel's ``convert_to_turn_based``): a
later seat never sees an earlier seat's move of the same round. Games of more than two players,
or not zero-sum, score the return scaled as above and say so in the final message. The agent
sees only its own view; the episode's metadata keeps the full ``history`` (chance outcomes
included, for replay), and is written only when the episode ends.

>>> env = GameEnv("connect_four", opponent="random")
>>> obs, info = env.reset(options={"task_id": "connect_four-2"})
>>> info["seat"], info["legal_moves"][:2]
(0, ['x0', 'x1'])
>>> replies, reward, done, truncated, _ = env.step({"role": "assistant", "content": "I'll take the middle."})
>>> replies[0]["content"].startswith("Please call the move tool")
True
>>> replies, *_ = env.step({"role": "assistant", "content": '<tool_call>{"name": "move", "arguments": {"move": "9"}}</tool_call>'})
>>> replies[0]["content"].splitlines()[0]
"Error: '9' is not a legal move. Legal moves: x0, x1, x2, x3, x4, x5, x6 (or the column number)."
"""

from __future__ import annotations

import asyncio
import difflib
import re
from typing import Any

import pyspiel
from agentgym.envs.games.bots import BOT_NAMES, Bot, MCTSBot, make_bot, move_seed, pick
from agentgym.envs.games.text import make_viewer, parse_move

from agentgym.env import ToolEnv
from agentgym.policy import PolicySpec
from agentgym.tools import tool
from agentgym.types import Message, Task, Trajectory, tool_call
from agentgym.verifiers import Score

_TASK = re.compile(r"(?:.*-)?(\d+)")
_FIXED_MOVE_NAMES = frozenset({"tic_tac_toe", "connect_four", "kuhn_poker", "leduc_poker"})
"""games whose move names do not depend on the position, so they are computed once"""
_CHANCE = 1_000_003
_CHANCE_PLAYER = int(pyspiel.PlayerId.CHANCE)
"""stands for the chance player in seeds"""


def load_game(game: str, params: dict[str, Any] | None = None) -> pyspiel.Game:
    """Load an OpenSpiel game by name (``"connect_four"``, ``"connect_four(rows=5)"``) and
    parameters; simultaneous-move games are made turn-based. Unknown names raise ``ValueError``."""
    name = game.split("(", 1)[0].strip()
    known = pyspiel.registered_names()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown OpenSpiel game {name!r}.{hint} pyspiel.registered_names() lists them all.")
    try:
        g = pyspiel.load_game(game, dict(params or {})) if params else pyspiel.load_game(game)
    except pyspiel.SpielError as e:
        raise ValueError(f"cannot load game {game!r} with parameters {params}: {e}") from None
    dynamics = g.get_type().dynamics
    if dynamics == pyspiel.GameType.Dynamics.SIMULTANEOUS:
        g = pyspiel.convert_to_turn_based(g)
    elif dynamics != pyspiel.GameType.Dynamics.SEQUENTIAL:
        raise ValueError(
            f"game {game!r} has {dynamics} dynamics; only sequential and simultaneous games are supported"
        )
    return g


_ZERO_SUM_2P: dict[str, bool] = {}


def _zero_sum_2p(game: pyspiel.Game) -> bool:
    key = str(game)
    if key not in _ZERO_SUM_2P:
        _ZERO_SUM_2P[key] = (
            game.num_players() == 2 and game.get_type().utility == pyspiel.GameType.Utility.ZERO_SUM
        )
    return _ZERO_SUM_2P[key]


def outcome_score(game: pyspiel.Game, returns: list[float], seat: int) -> float:
    """The agent's return mapped to [0, 1] (see the module docstring).

    >>> g = pyspiel.load_game("tic_tac_toe")
    >>> outcome_score(g, [1.0, -1.0], 0), outcome_score(g, [1.0, -1.0], 1), outcome_score(g, [0.0, 0.0], 1)
    (1.0, 0.0, 0.5)
    """
    r = returns[seat]
    if _zero_sum_2p(game):
        return 1.0 if r > 0 else 0.0 if r < 0 else 0.5
    lo, hi = game.min_utility(), game.max_utility()
    return min(1.0, max(0.0, (r - lo) / (hi - lo))) if hi > lo else 0.5


class GameEnv(ToolEnv):
    """An OpenSpiel game; the agent is one seat and moves with the ``move`` tool.

    Args:
        game: an OpenSpiel game name, optionally with parameters (``"connect_four(rows=5)"``)
        params: game parameters as a dict (``{"rows": 5}``)
        opponent: the bot spec for every other seat (``random``, ``mcts:sims=200``,
            ``cfr:iters=1000``), or a list of specs indexed by player (the agent's entry unused)
        seat: the agent's player number; None picks it from the task (task number % players)
        max_illegal: illegal or unreadable moves after which the agent forfeits
        max_turns: assistant turns before truncation (default: the game's longest length plus
            ``max_illegal`` plus 4)
    """

    policies = {name: f"{__name__}:bot_policy" for name in ("teacher", *BOT_NAMES)}

    ends_on_text = False

    def __init__(
        self,
        game: str = "tic_tac_toe",
        params: dict[str, Any] | None = None,
        opponent: str | list[str] = "random",
        seat: int | None = None,
        max_illegal: int = 3,
        max_turns: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(max_turns=max_turns, **kwargs)
        self.game = load_game(game, params)
        self.name = game.split("(", 1)[0].strip()
        """the game's short name, as in task ids (``connect_four-12``)"""
        n = self.game.num_players()
        if seat is not None and not 0 <= seat < n:
            raise ValueError(f"seat must be a player number in 0..{n - 1} for {self.name}, got {seat}")
        if max_illegal < 1:
            raise ValueError(f"max_illegal must be at least 1, got {max_illegal}")
        specs = [opponent] * n if isinstance(opponent, str) else list(opponent)
        if len(specs) != n:
            raise ValueError(f"opponent lists one spec per player: {n} for {self.name}, got {len(specs)}")
        self.opponent_specs = specs
        self.bots: list[Bot] = [make_bot(s, self.game) for s in specs]
        self.fixed_seat = seat
        self.max_illegal = max_illegal
        if max_turns is None:
            self.max_turns = self.game.max_game_length() + max_illegal + 4
        self.perfect = self.game.get_type().information == pyspiel.GameType.Information.PERFECT_INFORMATION
        self.state: pyspiel.State | None = None
        self.seat = 0
        self.task_seed = 0
        self.illegal = 0
        self.forfeit = False
        self._seat_option: int | None = None
        self._ply = 0
        self._view = make_viewer(self.game)
        self._system: dict[int, str] = {}
        self._names: dict[tuple[int, int], str] | None = {} if self.name in _FIXED_MOVE_NAMES else None
        self._moves_cache: dict[str, int] | None = None
        """the agent's listed moves in the current position; None once the state moves on"""
        self._moved = False
        """a move was played in the reply being answered (one move per turn)"""

    # ----- tasks and episodes ------------------------------------------------------------------

    def task_ids(self, n: int, seed: int = 0) -> list[str]:
        return [f"{self.name}-{seed * 1_000_000 + i}" for i in range(n)]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start the game of ``options["task_id"]`` (drawn from ``seed`` when absent);
        ``options["seat"]`` overrides the agent's seat for this episode."""
        options = dict(options or {})
        self._seat_option = options.pop("seat", None)
        obs, info = super().reset(seed=seed, options=options)
        info.update(seat=self.seat, legal_moves=list(self._moves()))
        return obs, info

    def load_task(self, task_id: str | None) -> Task:
        if task_id is None:
            k = int(self.np_random.integers(2**31))
        else:
            m = _TASK.fullmatch(str(task_id).strip())
            if m is None:
                raise ValueError(
                    f"game task ids look like '{self.name}-12' (a number seeds the game), got {task_id!r}"
                )
            k = int(m.group(1))
        n = self.game.num_players()
        seat = self._seat_option if self._seat_option is not None else self.fixed_seat
        self.seat = int(seat) if seat is not None else k % n
        if not 0 <= self.seat < n:
            raise ValueError(f"seat must be a player number in 0..{n - 1}, got {self.seat}")
        self.task_seed, self.illegal, self.forfeit = k, 0, False
        self.state = self.game.new_initial_state()
        self._moves_cache = None
        self._ply = 0
        self.done = False
        seen = self._advance()
        tid = f"{self.name}-{k}" if task_id is None else str(task_id)
        return Task(task_id=tid, prompt=self._turn_text(seen), info={"seed": k, "seat": self.seat})

    def initial_messages(self, task: Task) -> list[Message]:
        if self.seat not in self._system:
            others = sorted(
                {self.opponent_specs[p] for p in range(self.game.num_players()) if p != self.seat}
            )
            self._system[self.seat] = (
                f"You are playing {self.game.get_type().long_name} as player {self.seat} "
                f"(players are numbered from 0) against {' and '.join(others)}. "
                f"On each of your turns call the move tool with exactly one legal move, written as listed. "
                f"After {self.max_illegal} illegal or unreadable moves you forfeit the game."
            )
        return [
            {"role": "system", "content": self._system[self.seat]},
            {"role": "user", "content": task.prompt},
        ]

    def bot_seed(self, player: int) -> int:
        """The seed of the move ``player`` makes now: a function of the task and the move number
        only, so a bot plays the same whether it is the agent or an opponent."""
        return move_seed(self.task_seed, player, self._ply)

    def legal_moves(self) -> list[str]:
        """The agent's legal moves now, as listed to it (empty when it is not its turn)."""
        return list(self._moves())

    def _moves(self) -> dict[str, int]:
        """Listed move -> action id for the agent's turn, computed once per position."""
        moves = self._moves_cache
        if moves is None:
            s, moves = self.state, {}
            if s is not None and not s.is_terminal() and s.current_player() == self.seat:
                known, seat = self._names or {}, self.seat  # the names seen before, first
                moves = {known.get((seat, a)) or self._move_name(seat, a): a for a in s.legal_actions()}
            self._moves_cache = moves
        return moves

    def _move_name(self, player: int, action: int) -> str:
        if self._names is None:
            return self.state.action_to_string(player, action)
        name = self._names.get((player, action))
        if name is None:
            name = self._names[player, action] = self.state.action_to_string(player, action)
        return name

    def _apply(self, action: int) -> None:
        self.state.apply_action(action)
        self._ply += 1
        self._moves_cache = None

    def _advance(self) -> list[str]:
        """Play chance and opponents until the agent's turn or the end; returns what the agent
        saw of it (the opponents' moves in perfect-information games)."""
        s, seat, seen = self.state, self.seat, []
        while True:
            p = s.current_player()
            if p == seat:
                return seen
            if p == _CHANCE_PLAYER:
                actions, probs = zip(*s.chance_outcomes(), strict=True)
                self._apply(pick(actions, probs, move_seed(self.task_seed, _CHANCE, self._ply)))
            elif p < 0:  # terminal
                self.done = True
                return seen
            else:
                a = self.bots[p].choose(s, p, move_seed(self.task_seed, p, self._ply))
                if self.perfect:
                    seen.append(f"Player {p} played {self._move_name(p, a)}.")
                self._apply(a)

    def _turn_text(self, lines: list[str]) -> str:
        s = self.state
        if self.done:  # the game is over
            r = s.returns()
            score = outcome_score(self.game, r, self.seat)
            if _zero_sum_2p(self.game):
                verdict = {1.0: "You won.", 0.0: "You lost.", 0.5: "It is a draw."}[score]
            else:  # no win or loss to name: the score says where the return lies
                verdict = f"Your score: {score:.4g} (0 = the worst return, 1 = the best)."
            lines.append(f"Game over. {verdict} Returns by player: {[round(x, 4) for x in r]}.")
            lines.append(self._view(s, self.seat).rstrip())
        else:
            lines.append(self._view(s, self.seat).rstrip())
            lines.append(f"You are player {self.seat}. Legal moves: {self._moves_hint()}")
        return "\n".join(lines)

    def _moves_hint(self) -> str:
        hint = ", ".join(self._moves())
        return hint + " (or the column number)" if self.name == "connect_four" else hint

    # ----- the agent's tool ----------------------------------------------------------------------

    @tool
    def move(self, move: str | int) -> str:
        """Play one move on your turn.

        Args:
            move: a legal move written as in the list of legal moves
        """
        if self._moved:
            return "Error: one move per turn; this call was not played. Look at the position and move again."
        text = str(move)
        action = parse_move(self.state, self.seat, text, self._moves())
        if action is None:
            shown = text if len(text) <= 60 else text[:57] + "..."
            return f"Error: {shown!r} is not a legal move. {self._count_illegal()}"
        self._apply(action)
        self._moved = True
        return self._turn_text(self._advance())

    def respond(self, action: Message) -> list[Message]:
        self._moved = False
        tried = self.illegal
        replies = super().respond(action)
        if self.done or self._moved or self.illegal > tried:
            return replies
        # No move was played or tried (no tool call, a call that could not be read, another
        # tool): an unreadable move, counted with the illegal ones so that a policy that never
        # manages a move forfeits instead of running out the turn budget.
        tail = self._count_illegal()
        note = f"No move was played. {tail}" if self.forfeit else f"Please call the move tool. {tail}"
        if replies and replies[-1].get("role") == "user":  # a reply without a tool call
            return [*replies[:-1], {"role": "user", "content": note}]
        if replies and replies[-1].get("role") == "tool":  # the errors of calls that were not moves
            last = dict(replies[-1])
            last["content"] = f"{last.get('content') or ''}\n{note}"
            return [*replies[:-1], last]
        return [*replies, {"role": "user", "content": note}]

    def _count_illegal(self) -> str:
        """Count one illegal or unreadable move; what the agent is told: the forfeit when that was
        the last one allowed, else the legal moves and how many more it may get wrong."""
        self.illegal += 1
        if self.illegal >= self.max_illegal:
            self.forfeit = self.done = True
            return f"That is {self.illegal} illegal or unreadable moves: you forfeit and lose."
        left = self.max_illegal - self.illegal
        return (
            f"Legal moves: {self._moves_hint()}.\n"
            f"{left} more illegal or unreadable move{'s' if left > 1 else ''} and you forfeit."
        )

    # ----- scoring ------------------------------------------------------------------------------

    def score(self) -> Score:
        s = self.state
        total = 0.0
        if s is not None and s.is_terminal() and not self.forfeit:
            total = outcome_score(self.game, s.returns(), self.seat)
        return Score(total=total, breakdown={"outcome": total, "illegal_moves": float(self.illegal)})

    def finish(self, truncated: bool, info: dict[str, Any]) -> None:
        s = self.state
        meta = self.trajectory.metadata
        meta.update(
            game=str(self.game),
            seat=self.seat,
            opponents=[x for p, x in enumerate(self.opponent_specs) if p != self.seat],
            illegal_moves=self.illegal,
            forfeit=self.forfeit,
            history=list(s.history()),
            returns=list(s.returns()) if s.is_terminal() else None,
        )
        super().finish(truncated, info)
        info.update(illegal_moves=self.illegal, forfeit=self.forfeit)

    # ----- players that know the game -------------------------------------------------------------


def bot_policy(spec: PolicySpec, env: GameEnv) -> BotPolicy:
    """``random``, ``mcts:sims=N``, ``cfr:iters=N`` as agents (moving through the ``move`` tool);
    ``teacher`` is MCTS with 400 simulations, or CFR+ for imperfect-information games."""
    if spec.name == "teacher":
        spec = (
            PolicySpec("mcts", kwargs={"sims": "400"})
            if env.perfect
            else PolicySpec("cfr", kwargs={"iters": "1000"})
        )
    return BotPolicy(make_bot(spec, env.game))


class BotPolicy:
    """A bot playing the agent's seat through the ``move`` tool (any number of envs at once)."""

    def __init__(self, bot: Bot):
        self.bot = bot

    def reply(self, env: GameEnv) -> Message:
        s = env.state
        if s is None or env.done or s.is_terminal():
            return {"role": "assistant", "content": "The game is over."}
        a = self.bot.choose(s, env.seat, env.bot_seed(env.seat))
        call = tool_call("move", {"move": s.action_to_string(env.seat, a)}, f"call_{env._ply}")
        return {"role": "assistant", "content": "", "tool_calls": [call]}

    async def act(self, traj: Trajectory, env: GameEnv) -> Message:
        if isinstance(self.bot, MCTSBot):
            return await asyncio.to_thread(self.reply, env)
        return self.reply(env)

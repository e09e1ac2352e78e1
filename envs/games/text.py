"""Games as text: what one seat sees, the legal moves in the game's notation, and the parsing of
the moves models write.

Only the agent's own view is ever rendered: the observation or information-state string of its
seat, never ``str(state)`` of an imperfect-information game (which shows every hand).

>>> import pyspiel
>>> state = pyspiel.load_game("connect_four").new_initial_state()
>>> [parse_move(state, 0, m) for m in ("x3", "3", " X3 ", "column 3", "`x3`", "9")]
[3, 3, 3, 3, 3, None]
>>> state = pyspiel.load_game("tic_tac_toe").new_initial_state()
>>> [parse_move(state, 0, m) for m in ("x(1,1)", "(1, 1)", "1,1", "4")]
[4, 4, 4, 4]
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Callable

import pyspiel

_PREFIX = re.compile(r"^[a-z]+(?=[\d(])")
_TAG = re.compile(r"^\[p\d+\]")
_COLUMN = re.compile(r"col(?:umn)?#?(\d+)")
_NUMBER = re.compile(r"\d+")
_RANKS = ["2", "3", "4", "5", "6", "7", "8", "9", "10", "J", "Q", "K", "A"]


def _aliases(move: str) -> list[str]:
    """Other ways models write a move: without the player's mark (``x3`` -> ``3``,
    ``x(1,1)`` -> ``(1,1)`` and ``1,1``) or the turn-based player tag (``[p1]bid:2`` -> ``bid:2``)."""
    out = []
    untagged = _TAG.sub("", move)
    if untagged != move:
        out.append(untagged)
    bare = _PREFIX.sub("", untagged)
    if bare != untagged:
        out.append(bare)
    if bare.startswith("(") and bare.endswith(")"):
        out.append(bare[1:-1])
    return out


_SPACE = re.compile(r"\s+")
_TOKEN = re.compile(r"[\w()\[\],:;+#=@/-]+")


def parse_move(
    state: pyspiel.State, player: int, text: str, moves: dict[str, int] | None = None
) -> int | None:
    """The legal action ``text`` names, or None. Accepted, in order: the move as listed (spaces
    ignored; any case unless case tells two moves apart), the move without the player's mark (a
    column number in connect_four), the game's own ``string_to_action``, and a legal action id.
    ``moves`` (listed move -> action) saves recomputing the legal moves."""
    if moves is None:
        moves = {state.action_to_string(player, a): a for a in state.legal_actions(player)}
    if text in moves:
        return moves[text]
    if len(text) > 200:
        return None
    raw = _SPACE.sub("", text).strip("\"'`.*")
    want = raw.lower()
    if not want:
        return None
    written = {_SPACE.sub("", s): a for s, a in moves.items()}
    if raw in written:
        return written[raw]
    folded = [a for s, a in written.items() if s.lower() == want]
    if len(folded) == 1:  # case-insensitive, unless that confuses two moves (chess Bxc3 / bxc3)
        return folded[0]
    column = _COLUMN.fullmatch(want)  # "column 3": the bare number of a move like x3
    alias = column.group(1) if column else want
    found = [a for s, a in written.items() if alias in _aliases(s.lower())]
    if len(found) == 1:  # an alias that fits two moves is refused
        return found[0]
    if column:
        return None
    legal = set(moves.values())
    poker = _POKER.get(state.get_game().get_type().short_name)
    if poker is not None and want in _POKER_WORDS:
        a = poker(state, want)
        return a if a in legal else None
    if len(want) <= 32 and _TOKEN.fullmatch(want) and not want.isdigit():
        a = _string_to_action(state, player, text.strip())
        if a in legal:
            return a
    if want.isdigit() and int(want) in legal:
        n = int(want)
        # an action number, unless a listed move reads as that number and is another move
        # (goofspiel's "[P1]Bid: 1" is action 0): then "1" is ambiguous and refused
        named = {a for s, a in written.items() if _numbers(s) == [n]}
        return n if named <= {n} else None
    return None


def _numbers(move: str) -> list[int]:
    return [int(x) for x in _NUMBER.findall(_TAG.sub("", move.lower()))]


# ----- poker words: the betting terms models use, mapped to the game's own actions ---------------

_POKER_WORDS = frozenset({"check", "call", "fold", "bet", "raise"})


def _kuhn_word(state: pyspiel.State, word: str) -> int | None:
    """Kuhn's actions are Pass (0) and Bet (1): facing a bet, pass folds and bet calls."""
    facing = 1 in state.history()[state.get_game().num_players() :]
    if facing:
        return {"call": 1, "fold": 0}.get(word)
    return {"check": 0, "call": 0, "bet": 1, "raise": 1}.get(word)  # nothing to call: a check


def _leduc_word(state: pyspiel.State, word: str) -> int | None:
    """Leduc's actions are Fold (0), Call (1), Raise (2); Fold is legal only facing a bet."""
    if 0 in state.legal_actions():
        return None  # fold, call and raise are already the listed names; bet and check are unclear
    return {"check": 1, "bet": 2}.get(word)


_POKER = {"kuhn_poker": _kuhn_word, "leduc_poker": _leduc_word}


def make_viewer(game: pyspiel.Game) -> Callable[[pyspiel.State, int], str]:
    """The function rendering what a seat sees in this game: the board in a perfect-information
    game, else that seat's information state (its own cards and the public moves)."""
    kind = game.get_type()
    if kind.short_name == "kuhn_poker":
        return _kuhn
    if kind.short_name == "leduc_poker" and not any(
        game.get_parameters().get(k) for k in ("action_mapping", "suit_isomorphism")
    ):
        return _leduc
    perfect = kind.information == pyspiel.GameType.Information.PERFECT_INFORMATION
    if perfect and kind.provides_observation_string:
        return lambda state, player: state.observation_string(player)
    if kind.provides_information_state_string:
        return lambda state, player: state.information_state_string(player)
    if kind.provides_observation_string:
        return lambda state, player: state.observation_string(player)
    return lambda state, player: "(this game shows no observation)"


_QUIET = threading.Lock()


@contextlib.contextmanager
def quiet_stderr():
    """Send file descriptor 2 to /dev/null for the block: pyspiel prints "OpenSpiel exception:
    ..." there before it raises, and an expected refusal is not an error of the program."""
    with _QUIET:
        saved = None
        try:
            sys.stderr.flush()
            saved = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        except (OSError, ValueError):
            pass
        try:
            yield
        finally:
            if saved is not None:
                os.dup2(saved, 2)
                os.close(saved)


def _string_to_action(state: pyspiel.State, player: int, text: str) -> int | None:
    """The game's own parser, or None (a model's bad move is not an error of the program)."""
    with quiet_stderr():
        try:
            return state.string_to_action(player, text)
        except Exception:  # SpielError for a string the game cannot read
            return None


def observation(state: pyspiel.State, player: int) -> str:
    """What ``player`` sees now (see ``make_viewer``)."""
    return make_viewer(state.get_game())(state, player)


def card_ranks(players: int) -> list[str]:
    """The card ranks of Kuhn and Leduc poker, lowest first: both decks have one rank more than
    there are players, ending at the king (J Q K for two), numbers past 12 ranks.

    >>> card_ranks(2), card_ranks(3)
    (['J', 'Q', 'K'], ['10', 'J', 'Q', 'K'])
    """
    n = players + 1
    return _RANKS[12 - n : 12] if n <= 12 else [str(c) for c in range(n)]


def _kuhn(state: pyspiel.State, player: int) -> str:
    info = state.information_state_string(player)
    n = state.get_game().num_players()
    m = re.match(r"\d+", info)
    if m is None:
        return "No card dealt yet."
    card, bets = int(m.group()), info[m.end() :]
    cards = card_ranks(n)
    names = {"p": "pass", "b": "bet"}
    lines = [f"Your card: {cards[card] if card < len(cards) else card} ({' < '.join(cards)})."]
    if bets:
        lines.append(
            "Betting so far: "
            + ", ".join(f"player {i % n} {names.get(c, c)}" for i, c in enumerate(bets))
            + "."
        )
    else:
        lines.append("No bets yet.")
    return "\n".join(lines)


def describe_game(game: pyspiel.Game) -> str:
    """One line naming the game and its players."""
    kind = game.get_type()
    return f"{kind.long_name} ({game}), {game.num_players()} players"


_LEDUC_FIELD = re.compile(r"\[(Private|Public|Pot|Money): ([^\]]*)\]")


def _leduc(state: pyspiel.State, player: int) -> str:
    """Leduc hold'em in words, from ``player``'s information state (its own card, the public card,
    pot and chips) and the betting so far (public moves only; the deal stays hidden)."""
    info = state.information_state_string(player)
    fields = dict(_LEDUC_FIELD.findall(info))
    if "Private" not in fields:
        return info
    n = state.get_game().num_players()
    ranks = card_ranks(n)
    deck = len(ranks) * 2

    def card(text: str) -> str:
        c = int(text)
        return ranks[c // 2] if 0 <= c < deck else text

    lines = [
        f"Your card: {card(fields['Private'])} (ranks {' < '.join(ranks)}, two of each; a pair with "
        f"the public card beats any other hand, otherwise the higher card wins)."
    ]
    public = fields.get("Public")
    lines.append(f"Public card: {card(public)}." if public else "Public card: not dealt yet.")
    rounds: list[list[str]] = [[], []]
    deals = 0
    for step in state.full_history():
        if step.player < 0:  # a card dealt: the private ones first, then the public one
            deals += 1
        else:
            name = state.action_to_string(step.player, step.action).lower()
            rounds[deals > n].append(f"player {step.player} {name}")
    for i, moves in enumerate(rounds[: 2 if public else 1]):
        lines.append(f"Round {i + 1} betting: {', '.join(moves) if moves else 'none yet'}.")
    chips = fields.get("Money", "").split()
    lines.append(
        f"Pot: {fields.get('Pot', '?')}. Chips left: "
        + ", ".join(f"player {p} {c}" for p, c in enumerate(chips))
        + "."
    )
    return "\n".join(lines)

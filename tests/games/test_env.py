"""GameEnv: the registry check, determinism, move parsing, illegal moves, what each seat sees."""

import json
import warnings

import pytest
from gymnasium.utils.env_checker import check_env

import agentgym
from agentgym.types import tool_call

GAME_IDS = [i for i in agentgym.list_envs() if i.startswith("games/")]


def move_msg(move):
    return {"role": "assistant", "content": "", "tool_calls": [tool_call("move", {"move": move})]}


def play(env, policy, task_id, **options):
    """Play one episode; returns the messages."""
    env.reset(options={"task_id": task_id, **options})
    done = False
    while not done:
        _, reward, terminated, truncated, info = env.step(policy.reply(env))
        done = terminated or truncated
    return env.trajectory


def test_the_four_games_and_the_generic_id_are_registered():
    for name in ("tic_tac_toe", "connect_four", "kuhn_poker", "leduc_poker", "openspiel"):
        assert f"games/{name}-v0" in GAME_IDS


@pytest.mark.parametrize("env_id", GAME_IDS)
def test_check_env_and_same_seed_same_game(env_id):
    env = agentgym.make(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(env, skip_render_check=True)
    policy = agentgym.resolve_policy("random", env)
    for task in env.task_ids(3, seed=5):
        a, b = play(env, policy, task), play(env, policy, task)
        assert a.messages == b.messages and a.metadata["history"] == b.metadata["history"]
        assert a.status == "ok" and a.score in (0.0, 0.5, 1.0)
    # the seed alone (no task id) also fixes the game
    first = [env.reset(seed=11)[0], env.trajectory.task_id]
    assert [env.reset(seed=11)[0], env.trajectory.task_id] == first
    env.close()
    env.close()


def test_a_game_does_not_depend_on_which_seat_the_bot_plays_from():
    env = agentgym.make("games/connect_four-v0", opponent="mcts:sims=20")
    bot = agentgym.resolve_policy("mcts:sims=20", env)
    h0 = play(env, bot, "connect_four-4", seat=0).metadata["history"]
    h1 = play(env, bot, "connect_four-4", seat=1).metadata["history"]
    assert h0 == h1
    other = play(env, bot, "connect_four-5", seat=0).metadata["history"]
    assert other != h0


@pytest.mark.parametrize(
    "game,written,expected",
    [
        ("connect_four", "x3", 3),
        ("connect_four", "3", 3),
        ("connect_four", 3, 3),
        ("connect_four", " X3 ", 3),
        ("tic_tac_toe", "(1, 1)", 4),
        ("tic_tac_toe", "x(1,1)", 4),
        ("tic_tac_toe", "1,1", 4),
        ("tic_tac_toe", "4", 4),
    ],
)
def test_moves_in_the_forms_models_write(game, written, expected):
    env = agentgym.make(f"games/{game}-v0")
    env.reset(options={"task_id": f"{game}-0", "seat": 0})
    env.step(move_msg(written))
    assert env.state.history()[0] == expected


def test_case_is_ignored_unless_it_tells_two_moves_apart():
    import pyspiel
    from agentgym.envs.games.text import parse_move

    # white pawn b2 and bishop b4 can both take the knight on c3: "bxc3" and "Bxc3"
    state = pyspiel.load_game("chess").new_initial_state("4k3/8/8/8/1B6/2n5/1P6/4K3 w - - 0 1")
    p = state.current_player()
    pawn, bishop = state.string_to_action("bxc3"), state.string_to_action("Bxc3")
    assert pawn != bishop
    assert parse_move(state, p, "Bxc3") == bishop and parse_move(state, p, " bxc3 ") == pawn
    assert parse_move(state, p, "BXC3") is None
    assert parse_move(state, p, "kf1") == state.string_to_action("Kf1")


def test_illegal_moves_list_the_legal_ones_then_forfeit_as_a_loss():
    env = agentgym.make("games/tic_tac_toe-v0", max_illegal=2)
    env.reset(options={"task_id": "tic_tac_toe-0"})
    replies, reward, terminated, truncated, _ = env.step(move_msg("the centre please"))
    assert "not a legal move" in replies[0]["content"] and "x(1,1)" in replies[0]["content"]
    assert not terminated and reward == 0.0
    replies, reward, terminated, truncated, info = env.step(move_msg("(7,7)"))
    assert terminated and not truncated and reward == 0.0
    assert "forfeit" in replies[0]["content"]
    traj = env.trajectory
    assert traj.status == "ok" and traj.score == 0.0
    assert traj.metadata["illegal_moves"] == 2 and traj.metadata["forfeit"] is True


def test_a_reply_without_a_move_gets_a_reminder_with_the_legal_moves():
    env = agentgym.make("games/connect_four-v0")
    env.reset(options={"task_id": "connect_four-0"})
    replies, reward, terminated, truncated, _ = env.step(
        {"role": "assistant", "content": "Hmm, let me think."}
    )
    assert not terminated and replies[-1]["role"] == "user"
    assert "x0" in replies[-1]["content"] and "move tool" in replies[-1]["content"]


def test_replies_that_play_no_move_count_toward_the_forfeit():
    """No tool call, an unreadable call and an illegal move each use up one of max_illegal."""
    env = agentgym.make("games/tic_tac_toe-v0", max_illegal=3)
    env.reset(options={"task_id": "tic_tac_toe-0"})
    replies, _, terminated, _, _ = env.step({"role": "assistant", "content": "Let me think."})
    assert not terminated and "2 more illegal or unreadable moves" in replies[-1]["content"]
    broken = '<tool_call>{"name": "move", "arguments": {"move</tool_call>'
    replies, _, terminated, _, _ = env.step({"role": "assistant", "content": broken})
    assert not terminated and replies[-1]["role"] == "tool"
    assert "not valid JSON" in replies[-1]["content"] and "1 more illegal" in replies[-1]["content"]
    replies, reward, terminated, truncated, _ = env.step(move_msg("(9,9)"))
    assert terminated and not truncated and reward == 0.0 and "forfeit" in replies[-1]["content"]
    traj = env.trajectory
    assert traj.status == "ok" and traj.metadata["illegal_moves"] == 3 and traj.metadata["forfeit"] is True
    # a legal move in between does not reset the count, and does not add to it
    env.reset(options={"task_id": "tic_tac_toe-0"})
    env.step({"role": "assistant", "content": "hmm"})
    env.step(move_msg(env.legal_moves()[0]))
    assert env.illegal == 1 and not env.done


def test_running_out_of_turns_is_truncated_not_a_forfeit():
    env = agentgym.make("games/tic_tac_toe-v0", max_turns=2, max_illegal=5)
    env.reset(options={"task_id": "tic_tac_toe-0"})
    env.step({"role": "assistant", "content": "thinking"})
    _, reward, terminated, truncated, info = env.step({"role": "assistant", "content": "still thinking"})
    assert truncated and not terminated and reward == 0.0
    assert env.trajectory.status == "truncated" and env.trajectory.metadata["forfeit"] is False


def test_rewards_map_returns_to_win_draw_loss():
    env = agentgym.make("games/tic_tac_toe-v0", opponent="mcts:sims=200")
    mcts = agentgym.resolve_policy("mcts:sims=200", env)
    rnd = agentgym.resolve_policy("random", env)
    for task in env.task_ids(6):
        t = play(env, rnd, task)
        r = t.metadata["returns"][t.metadata["seat"]]
        assert t.score == {1.0: 1.0, 0.0: 0.5, -1.0: 0.0}[r]
    draws = [t for t in (play(env, mcts, task) for task in env.task_ids(10)) if t.score == 0.5]
    assert len(draws) >= 6 and all(t.metadata["returns"] == [0.0, 0.0] for t in draws)


@pytest.mark.parametrize("game", ["kuhn_poker", "leduc_poker"])
def test_poker_info_dicts_carry_no_game_state(game):
    env = agentgym.make(f"games/{game}-v0", seat=0)
    policy = agentgym.resolve_policy("random", env)
    for task in env.task_ids(10):
        _, info = env.reset(options={"task_id": task})
        infos, done = [info], False
        while not done:
            _, _, terminated, truncated, info = env.step(policy.reply(env))
            infos.append(info)
            done = terminated or truncated
        shown = {"task_id", "seat", "legal_moves", "turn", "score", "breakdown", "status"}
        assert set().union(*infos) <= shown | {"illegal_moves", "forfeit"}
        assert "history" not in json.dumps(infos)


@pytest.mark.parametrize("game", ["kuhn_poker", "leduc_poker"])
def test_poker_never_shows_the_opponents_card(game):
    env = agentgym.make(f"games/{game}-v0")
    policy = agentgym.resolve_policy("random", env)
    for task in env.task_ids(20):
        traj = play(env, policy, task)
        seat = traj.metadata["seat"]
        # rebuild the deal and check every message the agent saw against the other seat's view
        import pyspiel

        state = pyspiel.load_game(game).new_initial_state()
        for a in traj.metadata["history"]:
            state.apply_action(a)
        shown = "\n".join(m.get("content") or "" for m in traj.messages if m["role"] != "assistant")
        if game == "leduc_poker":
            mine, other = ("JQK"[traj.metadata["history"][p] // 2] for p in (seat, 1 - seat))
            assert shown.count(f"Your card: {mine} ") == shown.count("Your card: ") > 0
            assert "Private" not in shown and (mine == other or f"Your card: {other}" not in shown)
        else:
            card = "JQK"[traj.metadata["history"][seat]]
            other = "JQK"[traj.metadata["history"][1 - seat]]
            assert f"Your card: {card}" in shown and f"Your card: {other}" not in shown


def test_bad_configuration_says_what_to_do():
    with pytest.raises(ValueError, match="unknown OpenSpiel game 'tic_tac_to'.*tic_tac_toe"):
        agentgym.make("games/openspiel-v0", game="tic_tac_to")
    with pytest.raises(ValueError, match="perfect-information games only"):
        agentgym.make("games/kuhn_poker-v0", opponent="mcts:sims=10")
    with pytest.raises(ValueError, match="unknown bot"):
        agentgym.make("games/tic_tac_toe-v0", opponent="alphazero")
    with pytest.raises(ValueError, match="sim.*takes"):
        agentgym.make("games/tic_tac_toe-v0", opponent="mcts:sim=10")
    env = agentgym.make("games/tic_tac_toe-v0")
    with pytest.raises(ValueError, match="tic_tac_toe-12"):
        env.reset(options={"task_id": "banana"})


def test_records_are_json_and_parameters_reach_the_game():
    env = agentgym.make("games/openspiel-v0", game="connect_four", params={"rows": 4, "columns": 5})
    obs, info = env.reset(options={"task_id": "x-0", "seat": 0})
    assert info["legal_moves"] == ["x0", "x1", "x2", "x3", "x4"]
    traj = play(env, agentgym.resolve_policy("random", env), "x-1")
    json.dumps(traj.to_record())


def test_any_openspiel_game_by_name_including_simultaneous_ones():
    for game, task in [
        ("goofspiel(num_cards=4)", "goofspiel-3"),
        ("liars_dice", "7"),
        ("breakthrough(rows=5,columns=5)", "b-2"),
    ]:
        env = agentgym.make("games/openspiel-v0", game=game)
        traj = play(env, agentgym.resolve_policy("random", env), task)
        assert traj.task_id == task and traj.status == "ok" and traj.metadata["returns"] is not None
        assert env.name == game.split("(")[0]


def test_chance_and_random_bots_draw_uniformly():
    from collections import Counter

    # every kuhn deal equally often (the Q-K deal once never came up), leduc's 30 deals too
    env = agentgym.make("games/kuhn_poker-v0")
    deals = Counter()
    for task in env.task_ids(1200):
        env.reset(options={"task_id": task})
        deals[tuple(env.state.history()[:2])] += 1
    assert len(deals) == 6 and min(deals.values()) >= 150 and max(deals.values()) <= 250
    env = agentgym.make("games/leduc_poker-v0")
    deals = Counter()
    for task in env.task_ids(3000):
        env.reset(options={"task_id": task})
        deals[tuple(env.state.history()[:2])] += 1
    assert len(deals) == 30 and min(deals.values()) >= 65 and max(deals.values()) <= 135
    # a random opponent's reply to the agent's first move, and to its second
    env = agentgym.make("games/tic_tac_toe-v0", seat=0)
    replies = Counter()
    for task in env.task_ids(900):
        env.reset(options={"task_id": task})
        env.step(move_msg("x(1,1)"))
        env.step(move_msg(next(m for m in env.legal_moves() if m != "x(1,1)")))
        replies[tuple(env.state.history()[1::2])] += 1
    firsts = Counter()
    for (first, *_), c in replies.items():
        firsts[first] += c
    assert len(firsts) == 8 and min(firsts.values()) >= 75 and max(firsts.values()) <= 150
    assert len(replies) == 48 and min(replies.values()) >= 5  # 8 first replies, then 6 each


@pytest.mark.parametrize(
    "game,before,written,expected",
    [
        ("connect_four", [], "column 3", 3),
        ("connect_four", [], "Col 3", 3),
        ("connect_four", [], "**x3**", 3),
        ("connect_four", [], "`3`", 3),
        ("tic_tac_toe", [], "'x(1,1)'", 4),
        ("tic_tac_toe", [], "`(1,1)`", 4),
        ("tic_tac_toe", [], "column 1", None),  # no column moves in tic_tac_toe
        # kuhn: Pass (0) and Bet (1); facing a bet, pass folds and bet calls
        ("kuhn_poker", [0, 1], "check", 0),
        ("kuhn_poker", [0, 1], "Bet", 1),
        ("kuhn_poker", [0, 1], "raise", 1),
        ("kuhn_poker", [0, 1], "fold", None),
        ("kuhn_poker", [0, 1, 1], "Call", 1),
        ("kuhn_poker", [0, 1, 1], "call", 1),
        ("kuhn_poker", [0, 1, 1], "fold", 0),
        ("kuhn_poker", [0, 1, 1], "raise", None),
        ("kuhn_poker", [0, 1, 1], "check", None),
        # leduc: Fold (0), Call (1), Raise (2)
        ("leduc_poker", [0, 1], "call", 1),
        ("leduc_poker", [0, 1], "raise", 2),
        ("leduc_poker", [0, 1], "Bet", 2),
        ("leduc_poker", [0, 1], "check", 1),
        ("leduc_poker", [0, 1, 2], "Bet", None),
        ("leduc_poker", [0, 1, 2], "check", None),
        ("leduc_poker", [0, 1, 2], "Fold", 0),
    ],
)
def test_more_forms_and_poker_words(game, before, written, expected):
    import pyspiel
    from agentgym.envs.games.text import parse_move

    state = pyspiel.load_game(game).new_initial_state()
    for a in before:
        state.apply_action(a)
    assert parse_move(state, state.current_player(), written) == expected


def test_a_number_that_names_another_move_is_refused_not_guessed():
    # goofspiel lists "[P1]Bid: 1" as action 0: a bare "1" could mean either, so it is refused
    env = agentgym.make("games/openspiel-v0", game="goofspiel", params={"num_cards": 4}, seat=1)
    env.reset(options={"task_id": "g-0"})
    assert env.legal_moves()[:2] == ["[P1]Bid: 1", "[P1]Bid: 2"]
    replies, *_ = env.step(move_msg("1"))
    assert "not a legal move" in replies[0]["content"] and env.illegal == 1
    replies, *_ = env.step(move_msg("Bid: 2"))
    assert env.illegal == 1 and "P1 hand: 1 3 4" in str(env.state)  # it bid its 2


def test_one_move_per_reply():
    env = agentgym.make("games/connect_four-v0", seat=0)
    env.reset(options={"task_id": "connect_four-0"})
    calls = [tool_call("move", {"move": "3"}, "a"), tool_call("move", {"move": "4"}, "b")]
    replies, *_ = env.step({"role": "assistant", "content": "", "tool_calls": calls})
    assert len(env.state.history()) == 2 and env.state.history()[0] == 3  # one move and the reply
    assert "one move per turn" in replies[1]["content"] and env.illegal == 0


def test_three_player_kuhn_names_the_cards_and_bettors_right():
    env = agentgym.make("games/openspiel-v0", game="kuhn_poker", params={"players": 3}, seat=2)
    obs, _ = env.reset(options={"task_id": "k-2"})
    history = env.state.history()  # 3 cards dealt, then players 0 and 1 acted
    card = ["10", "J", "Q", "K"][history[2]]
    acts = ", ".join(f"player {p} {'bet' if a else 'pass'}" for p, a in enumerate(history[3:]))
    assert f"Your card: {card} (10 < J < Q < K)." in obs[-1]["content"]
    assert f"Betting so far: {acts}." in obs[-1]["content"]
    replies, reward, terminated, *_ = env.step(move_msg("Pass"))
    assert terminated and "Your score:" in replies[0]["content"] and "You won" not in replies[0]["content"]
    lo, hi = env.game.min_utility(), env.game.max_utility()
    assert reward == pytest.approx((env.state.returns()[2] - lo) / (hi - lo))


def test_a_simultaneous_move_is_hidden_from_the_seat_that_moves_second():
    # rock-paper-scissors turn by turn: whatever seat 0 chose, seat 1 sees the same thing
    env = agentgym.make("games/openspiel-v0", game="matrix_rps", seat=1)
    seen, chosen = set(), set()
    for task in env.task_ids(30):
        obs, info = env.reset(options={"task_id": task})
        seen.add(json.dumps([obs, info["legal_moves"]]).replace(task, ""))
        chosen.add(env.state.history()[0])
    assert len(chosen) == 3 and len(seen) == 1


def test_same_seed_same_transcript_with_mcts_on_both_sides():
    def transcript():
        env = agentgym.make("games/connect_four-v0", opponent="mcts:sims=50")
        bot = agentgym.resolve_policy("mcts:sims=50", env)
        return [play(env, bot, t).messages for t in ("connect_four-3", "connect_four-8")]

    assert transcript() == transcript()


@pytest.mark.parametrize("game", ["kuhn_poker", "leduc_poker", "kuhn_poker(players=3)"])
def test_a_poker_view_does_not_change_with_the_opponents_cards(game):
    from agentgym.envs.games.text import make_viewer

    # deal someone else a card nobody holds: what the seat is shown must stay the same
    env = agentgym.make("games/openspiel-v0", game=game)
    view = make_viewer(env.game)
    policy = agentgym.resolve_policy("random", env)
    n = env.game.num_players()
    for task in env.task_ids(30):
        history = play(env, policy, task).metadata["history"]
        seat, other = env.seat, (env.seat + 1) % n
        state, dealt = env.game.new_initial_state(), []
        for x in history:
            if state.is_chance_node():
                dealt.append(x)
            state.apply_action(x)
        free = [c for c, _ in env.game.new_initial_state().chance_outcomes() if c not in dealt]
        swapped = list(history)
        swapped[other] = free[0]
        a, b = env.game.new_initial_state(), env.game.new_initial_state()
        views = []
        for x, y in zip(history, swapped, strict=True):
            a.apply_action(x)
            b.apply_action(y)
            # a showdown may show the result of the other hand (its chips), and a fold may not
            if not a.is_chance_node() and (not a.is_terminal() or a.returns() == b.returns()):
                views.append((view(a, seat), view(b, seat)))
        assert views and all(va == vb for va, vb in views)

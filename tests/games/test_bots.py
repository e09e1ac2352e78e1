"""Bots as opponents and as agents through the rollout runner: MCTS strength, CFR caching."""

import json
import os
import subprocess
import sys
import time

import pyspiel
import pytest
from agentgym.envs.games import bots

import agentgym
from agentgym.rollout import run_rollouts, summarize


def test_mcts_as_agent_beats_random_with_no_failures():
    trajs = run_rollouts("games/tic_tac_toe-v0", "mcts:sims=200", n=100, concurrency=4)
    s = summarize(trajs)
    assert s["episodes"] == 100 and s["statuses"]["ok"] == 100
    assert s["mean_score"] >= 0.95
    assert {t.metadata["seat"] for t in trajs} == {0, 1}  # both seats are played


def test_mcts_against_mcts_draws_most_games():
    trajs = run_rollouts(
        "games/tic_tac_toe-v0", "mcts:sims=200", n=60, env_kwargs={"opponent": "mcts:sims=200"}
    )
    draws = sum(t.score == 0.5 for t in trajs)
    assert all(t.status == "ok" for t in trajs)
    assert draws > 0.6 * len(trajs)


def test_random_agent_plays_only_legal_moves():
    trajs = run_rollouts("games/connect_four-v0", "random", n=20)
    assert all(t.status == "ok" and t.metadata["illegal_moves"] == 0 for t in trajs)
    assert 0.0 < summarize(trajs)["mean_score"] < 1.0


def test_cfr_is_solved_once_and_read_back_from_disk(monkeypatch):
    import pyspiel

    game = pyspiel.load_game("kuhn_poker")
    path = bots.cfr_cache_path(game, 300)
    assert not path.exists()
    table = bots.solve_cfr(game, 300)
    assert path.exists() and len(table) == 12  # kuhn has 12 information states
    bots._SOLVED.clear()

    def refuse(*a, **k):
        raise AssertionError("solved again instead of reading the cache")

    monkeypatch.setattr(pyspiel, "CFRPlusSolver", refuse)
    assert bots.solve_cfr(game, 300) == table
    # the equilibrium bets with a king when checked to, and never calls a bet holding a jack
    assert dict(table["2p"])[1] > 0.99 and dict(table["0b"])[1] < 0.01


def test_cfr_wins_more_chips_against_random_than_random_does():
    def mean_chips(policy):
        trajs = run_rollouts("games/kuhn_poker-v0", policy, n=1000, concurrency=16)
        assert all(t.status == "ok" for t in trajs)
        return sum(t.metadata["returns"][t.metadata["seat"]] for t in trajs) / len(trajs)

    cfr, rnd = mean_chips("cfr:iters=300"), mean_chips("random")
    assert cfr > 0.05 and cfr > rnd + 0.1


def test_leduc_cfr_agent_and_opponent():
    trajs = run_rollouts(
        "games/leduc_poker-v0", "cfr:iters=50", n=30, env_kwargs={"opponent": "cfr:iters=50"}
    )
    assert all(t.status == "ok" for t in trajs)


def test_teacher_is_mcts_or_cfr():
    env = agentgym.make("games/tic_tac_toe-v0")
    assert isinstance(agentgym.resolve_policy("teacher", env).bot, bots.MCTSBot)
    env = agentgym.make("games/kuhn_poker-v0")
    assert isinstance(agentgym.resolve_policy("teacher", env).bot, bots.CFRBot)


def test_bot_seeds_change_play():
    env = agentgym.make("games/connect_four-v0")
    a = run_rollouts("games/connect_four-v0", "mcts:sims=30", n=3)
    b = run_rollouts("games/connect_four-v0", "mcts:sims=30,seed=9", n=3)
    assert [t.metadata["history"] for t in a] != [t.metadata["history"] for t in b]
    with pytest.raises(ValueError, match="sims must be at least 1"):
        agentgym.resolve_policy("mcts:sims=0", env)


def test_cfr_cache_is_per_game_parameters_and_iterations():
    two, three = pyspiel.load_game("kuhn_poker"), pyspiel.load_game("kuhn_poker", {"players": 3})
    paths = {
        bots.cfr_cache_path(two, 100),
        bots.cfr_cache_path(two, 200),
        bots.cfr_cache_path(two, 100, "cfr"),
        bots.cfr_cache_path(three, 100),
    }
    assert len(paths) == 4
    assert len(bots.solve_cfr(three, 20)) > len(bots.solve_cfr(two, 20))


@pytest.mark.parametrize(
    "damage", ["{not json", "", "[]", '{"policy": []}', '{"policy": {"0": 5}}', "wrong game"]
)
def test_a_damaged_cfr_cache_is_solved_again(damage):
    game = pyspiel.load_game("kuhn_poker")
    good = bots.solve_cfr(game, 50)
    path = bots.cfr_cache_path(game, 50)
    bots._SOLVED.clear()
    if damage == "wrong game":  # a complete file that holds another solve
        data = json.loads(path.read_text())
        path.write_text(json.dumps({**data, "iters": 51, "policy": {"0": [[0, 1.0]]}}))
    else:
        path.write_text(damage)
    assert bots.solve_cfr(game, 50) == good
    assert json.loads(path.read_text())["iters"] == 50  # rewritten


def test_two_processes_solving_at_once_leave_a_whole_cache(tmp_path):
    code = (
        "import sys, time, pyspiel\n"
        "from agentgym.envs.games import bots\n"
        "while time.time() < float(sys.argv[1]): pass\n"
        "t = bots.solve_cfr(pyspiel.load_game('leduc_poker'), 30)\n"
        "print(len(t))\n"
    )
    env = {**os.environ, "AGENTGYM_CACHE": str(tmp_path / "shared")}
    start = str(time.time() + 3)
    procs = [
        subprocess.Popen([sys.executable, "-c", code, start], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    counts = [int(p.communicate(timeout=300)[0]) for p in procs]
    assert [p.returncode for p in procs] == [0, 0] and counts[0] == counts[1] == 936
    files = list((tmp_path / "shared" / "cfr").iterdir())
    assert [f.name for f in files] == ["leduc_poker-cfrplus-30.json"]  # no temporary files left
    assert len(json.loads(files[0].read_text())["policy"]) == 936

"""Every OpenSpiel game that ``games/openspiel-v0`` serves plays to its end with random and MCTS
players: no exception, every legal move accepted, an illegal one refused, a score in [0, 1]."""

import json
import random

import pytest


def _play(name: str, opponent: str, seed: int) -> str | None:
    """One episode with the agent choosing random legal moves; None, or what went wrong."""
    from agentgym.envs.games.env import GameEnv

    env = GameEnv(name, opponent=opponent)
    obs, info = env.reset(options={"task_id": f"{name}-{seed}"})
    rng = random.Random(seed)
    for turn in range(env.max_turns + 1):
        moves = env.legal_moves()
        if not moves:
            return f"no legal moves at turn {turn}"
        if turn == 1:  # one illegal move: refused, counted, the game goes on
            before = list(moves)
            replies, reward, term, trunc, info = env.step(_move("no such move ~~"))
            if env.illegal != 1 or env.legal_moves() != before or term:
                return f"an illegal move was not refused cleanly: {replies[0]['content'][:200]}"
        move = rng.choice(moves)
        replies, reward, term, trunc, info = env.step(_move(move))
        if env.illegal > (1 if turn >= 1 else 0):
            return f"legal move {move!r} refused: {replies[0]['content'][:200]}"
        if not 0.0 <= reward <= 1.0:
            return f"reward {reward} outside [0, 1]"
        if term or trunc:
            traj = env.trajectory
            if traj.status != "ok" or not 0.0 <= traj.score <= 1.0:
                return f"ended with status {traj.status}, score {traj.score}"
            return None
    return f"not over after max_turns ({env.max_turns})"


def _move(move: str) -> dict:
    call = {"name": "move", "arguments": {"move": move}}
    return {"role": "assistant", "content": f"<tool_call>{json.dumps(call)}</tool_call>"}


def test_catalog_names_every_registered_game():
    import pyspiel
    from agentgym.envs.games.catalog import catalog

    served, others = catalog()
    assert sorted(served + list(others)) == sorted(pyspiel.registered_names())
    assert {"tic_tac_toe", "connect_four", "kuhn_poker", "leduc_poker", "chess", "go", "goofspiel"} <= set(
        served
    )
    assert len(served) >= 100, others
    assert "mean-field" in others["mfg_garnet"] and "action structs" in others["crossword"]
    assert "parameter game" in others["misere"]
    assert all(others.values())


@pytest.mark.slow
def test_every_served_game_plays_to_the_end_with_random_and_mcts():
    import pyspiel
    from agentgym.envs.games.catalog import catalog
    from agentgym.envs.games.env import load_game

    served, _ = catalog()
    failures = {}
    for name in served:
        perfect = load_game(name).get_type().information == pyspiel.GameType.Information.PERFECT_INFORMATION
        for opponent in ["random"] + (["mcts:sims=4,rollouts=1"] if perfect else []):
            for seed in (1, 2):
                problem = _play(name, opponent, seed)
                if problem:
                    failures[f"{name} vs {opponent}, seed {seed}"] = problem
    assert not failures, failures


def test_a_wrapper_game_serves_once_given_its_parameters():
    from agentgym.envs.games.catalog import why_not_served

    assert why_not_served("misere") is not None
    assert _play("misere(game=tic_tac_toe())", "random", 1) is None
    assert _play("repeated_game(stage_game=matrix_rps(),num_repetitions=3)", "random", 1) is None

"""Self-play generation: every record is a real game the recorded side won, replayed move by
move through OpenSpiel; output does not depend on the number of workers."""

import json
import subprocess
import sys

import pyspiel
import pytest
from agentgym.envs.games.selfplay import SelfPlayConfig, generate, split_bots

from agentgym.types import load_trajectories


def replay(record):
    """Apply the recorded history in OpenSpiel, checking each of the recorded side's moves against
    its ``move`` tool calls; returns the final state."""
    meta = record["metadata"]
    seat, history = meta["seat"], meta["history"]
    calls = [
        json.loads(c["function"]["arguments"])["move"]
        for m in record["messages"]
        if m["role"] == "assistant"
        for c in m.get("tool_calls", [])
    ]
    state = pyspiel.load_game(meta["game"]).new_initial_state()
    mine = 0
    for action in history:
        if state.current_player() == seat:
            assert state.string_to_action(seat, calls[mine]) == action
            mine += 1
        state.apply_action(action)
    assert mine == len(calls)
    assert state.is_terminal()
    return state


def check_wins(path, n, env_id, game):
    records = [t.to_record() for t in load_trajectories(path)]
    assert len(records) == n
    for r in records:
        state = replay(r)
        returns, seat = state.returns(), r["metadata"]["seat"]
        assert returns[seat] == max(returns) > min(returns) and r["metadata"]["winner"] == seat
        assert r["score"] == 1.0 and r["status"] == "ok" and r["env"] == env_id
        assert r["task_id"].startswith(f"{game}-")
        assert r["metadata"]["bots"] == ["mcts:sims=200", "mcts:sims=200"]
    assert len({r["task_id"] for r in records}) == n
    return records


@pytest.mark.slow
def test_connect_four_cli_writes_200_replayable_wins(tmp_path):
    out = tmp_path / "w.jsonl"
    cmd = [sys.executable, "-m", "agentgym.cli", "generate", "selfplay", "--game", "connect_four"]
    cmd += ["--n", "200", "--out", str(out), "--workers", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.splitlines()[0])
    assert summary["kept"] == 200 and summary["errors"] == 0
    records = check_wins(out, 200, "games/connect_four-v0", "connect_four")
    assert {r["metadata"]["seat"] for r in records} == {0, 1}  # wins from both seats, each from its own view


def test_workers_do_not_change_the_output_and_draws_need_keep_all(tmp_path):
    cfg = dict(game="tic_tac_toe", n=12, bots=["mcts:sims=200"])
    one = generate(SelfPlayConfig(**cfg), str(tmp_path / "a.jsonl"))
    two = generate(SelfPlayConfig(**cfg, workers=2), str(tmp_path / "b.jsonl"))
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()
    assert one["draws"] > 0 and one["kept"] == two["kept"] == 12
    check_wins(tmp_path / "a.jsonl", 12, "games/tic_tac_toe-v0", "tic_tac_toe")
    every = generate(SelfPlayConfig(**cfg, keep="all"), str(tmp_path / "c.jsonl"))
    scores = [t.score for t in load_trajectories(tmp_path / "c.jsonl")]
    assert every["kept"] == 12 and 0.5 in scores


def test_poker_records_are_the_winners_own_view(tmp_path):
    out = tmp_path / "k.jsonl"
    summary = generate(SelfPlayConfig(game="kuhn_poker", n=30, bots=["cfr:iters=100", "random"]), str(out))
    assert summary["kept"] == 30
    for t in load_trajectories(out):
        state = replay(t.to_record())
        seat = t.metadata["seat"]
        assert state.returns()[seat] > 0
        shown = " ".join(m.get("content") or "" for m in t.messages)
        assert f"Your card: {'JQK'[t.metadata['history'][seat]]}" in shown


def test_bot_lists_and_bad_configs():
    assert split_bots("mcts:sims=200,seed=3,cfr:iters=10") == ["mcts:sims=200,seed=3", "cfr:iters=10"]
    with pytest.raises(ValueError, match="keep must be"):
        SelfPlayConfig(game="tic_tac_toe", n=3, keep="losers")
    with pytest.raises(ValueError, match="3 bots but the game has 2 players"):
        generate(SelfPlayConfig(game="tic_tac_toe", n=3, bots=["random"] * 3), "/dev/null")

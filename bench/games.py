"""Game env speed: agent steps per second on tic-tac-toe against a random opponent.

    .venv/bin/python bench/games.py [--episodes 2000] [--rounds 3]

An instant agent plays random legal moves; one step is one agent move, the opponent's reply
included. Measured in the same run, interleaved round by round:

- ``agentgym``: ``games/tic_tac_toe-v0`` (one env reused, as the rollout runner does), the agent
  calling the ``move`` tool, both as a structured ``tool_calls`` entry and as Hermes text
  (``<tool_call>{...}</tool_call>``, parsed like a model's reply); the agent's reply for each move
  string is built once, so the agent costs nothing.
- ``textarena``: TextArena's ``TicTacToe-v0`` (``pip install textarena``), a fresh env per episode
  (its wrapper keeps history across resets), the agent reading the free cells from the state.
- ``pyspiel``: raw OpenSpiel stepping that renders the agent's observation string and its legal
  move strings each turn: the floor no text env can beat.

Rates are per CPU second of this process (robust to other load on the machine), with wall-clock
rates alongside. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time

import agentgym
from agentgym.types import tool_call


def bench_agentgym(episodes: int, text: bool) -> int:
    env = agentgym.make("games/tic_tac_toe-v0", opponent="random")
    messages: dict[str, dict] = {}  # the instant agent's reply for each move, built once

    def reply(move: str) -> dict:
        if move not in messages:
            if text:
                body = json.dumps({"name": "move", "arguments": {"move": move}})
                messages[move] = {"role": "assistant", "content": f"<tool_call>\n{body}\n</tool_call>"}
            else:
                messages[move] = {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [tool_call("move", {"move": move})],
                }
        return messages[move]

    rng, steps = random.Random(0), 0
    for tid in env.task_ids(episodes):
        env.reset(options={"task_id": tid})
        done = False
        while not done:
            _, _, terminated, truncated, _ = env.step(reply(rng.choice(env.legal_moves())))
            done = terminated or truncated
            steps += 1
    return steps


def bench_textarena(episodes: int) -> int:
    import textarena as ta

    rng, steps = random.Random(0), 0
    for i in range(episodes):
        env = ta.make(env_id="TicTacToe-v0")
        env.reset(num_players=2, seed=i)
        done = False
        while not done:
            player, _observation = env.get_observation()
            board = env.state.game_state["board"]
            free = [r * 3 + c for r in range(3) for c in range(3) if board[r][c] == ""]
            done, _ = env.step(action=f"[{rng.choice(free)}]")
            steps += player == 0  # count the agent's moves; the opponent's are part of each step
        env.close()
    return steps


def bench_pyspiel(episodes: int) -> int:
    import pyspiel

    game = pyspiel.load_game("tic_tac_toe")
    rng, steps = random.Random(0), 0
    for i in range(episodes):
        state, agent = game.new_initial_state(), i % 2
        while not state.is_terminal():
            if state.current_player() == agent:
                _text = state.observation_string(agent)
                moves = [state.action_to_string(agent, a) for a in state.legal_actions()]
                state.apply_action(state.string_to_action(rng.choice(moves)))
                steps += 1
            else:
                state.apply_action(rng.choice(state.legal_actions()))
    return steps


def measure(fn, *args) -> tuple[float, float]:
    cpu0, t0 = time.process_time(), time.perf_counter()
    steps = fn(*args)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    return steps / cpu, steps / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    runs = {
        "agentgym_tool_calls": (bench_agentgym, args.episodes, False),
        "agentgym_hermes_text": (bench_agentgym, args.episodes, True),
        "textarena": (bench_textarena, args.episodes),
        "pyspiel_raw": (bench_pyspiel, args.episodes),
    }
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    wall: dict[str, list[float]] = {k: [] for k in runs}
    for fn, *a in runs.values():  # warm up: imports, game loading, caches
        fn(*[min(x, 50) if isinstance(x, int) and not isinstance(x, bool) else x for x in a])
    for _ in range(args.rounds):
        for name, (fn, *a) in runs.items():
            c, w = measure(fn, *a)
            cpu[name].append(c)
            wall[name].append(w)
    med = {k: statistics.median(v) for k, v in cpu.items()}
    out = {
        "bench": "games",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, python {platform.python_version()}",
        "episodes_per_round": args.episodes,
        "rounds": args.rounds,
        "steps_per_cpu_s": {k: round(v) for k, v in med.items()},
        "steps_per_wall_s": {k: round(statistics.median(v)) for k, v in wall.items()},
        "ratio_vs_textarena": {
            k: round(med[k] / med["textarena"], 2) for k in med if k.startswith("agentgym")
        },
        "ratio_vs_pyspiel_raw": {k: round(med[k] / med["pyspiel_raw"], 3) for k in med if k != "pyspiel_raw"},
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

"""``agentgym generate selfplay``: bots play OpenSpiel games and the winners' transcripts become
teacher demos in the JSONL schema.

    agentgym generate selfplay --game connect_four --n 200 --out wins.jsonl
    agentgym generate selfplay --game kuhn_poker --bots cfr:iters=1000,random --n 100 --out k.jsonl --keep all

Light at import time: pyspiel loads only when the command runs.
"""

from __future__ import annotations

import argparse
import json


def add_generators(subparsers) -> None:
    p = subparsers.add_parser(
        "selfplay",
        help="bots play OpenSpiel games; keep the winning side's transcript",
        description="Play GAME between bots and write the winning side's trajectory of each kept game as JSONL.",
    )
    p.add_argument(
        "--game", required=True, help="OpenSpiel game, e.g. connect_four or 'breakthrough(rows=6)'"
    )
    p.add_argument("--params", default=None, help="game parameters as JSON, e.g. '{\"rows\": 6}'")
    p.add_argument(
        "--bots",
        default="",
        help="one bot spec per seat, comma-separated (e.g. mcts:sims=200,mcts:sims=200), or one for all seats; "
        "default mcts:sims=200, or cfr:iters=1000 for imperfect-information games",
    )
    p.add_argument("--n", type=int, required=True, help="records to write")
    p.add_argument("--out", required=True, help="output JSONL file")
    p.add_argument("--keep", choices=("winners", "all"), default="winners", help="keep draws too with 'all'")
    p.add_argument("--seed", type=int, default=0, help="game k is task GAME-(seed*1000000+k)")
    p.add_argument("--workers", type=int, default=1, help="processes playing in parallel")
    p.add_argument("--max-games", type=int, default=None, help="give up after this many games (default 20*n)")
    p.set_defaults(func=run_selfplay)


def run_selfplay(args: argparse.Namespace) -> int:
    from agentgym.envs.games.selfplay import SelfPlayConfig, generate, split_bots

    try:
        params = json.loads(args.params) if args.params else None
    except json.JSONDecodeError as e:
        raise ValueError(f"--params must be a JSON object, e.g. '{{\"rows\": 6}}': {e.msg}") from None
    if params is not None and not isinstance(params, dict):
        raise ValueError(f"--params must be a JSON object, got {args.params!r}")
    cfg = SelfPlayConfig(
        game=args.game,
        n=args.n,
        bots=split_bots(args.bots),
        keep=args.keep,
        seed=args.seed,
        workers=args.workers,
        params=params,
        max_games=args.max_games,
    )
    summary = generate(cfg, args.out)
    print(json.dumps(summary))
    if summary["kept"] < cfg.n:
        print(f"only {summary['kept']} of {cfg.n} records after {summary['games']} games; raise --max-games")
        return 1
    return 0


def add_commands(subparsers) -> None:
    games = subparsers.add_parser("games", help="OpenSpiel games: which ones games/openspiel-v0 serves")
    sub = games.add_subparsers(dest="games_command", metavar="COMMAND")
    sub.required = True
    p = sub.add_parser("list", help="the games served, then the others with the reason")
    p.add_argument("--json", action="store_true", help="print {served: [...], not_served: {game: reason}}")
    p.set_defaults(func=run_list)


def run_list(args: argparse.Namespace) -> int:
    from agentgym.envs.games.catalog import catalog

    served, others = catalog()
    if args.json:
        print(json.dumps({"served": served, "not_served": others}))
        return 0
    print(f"served by games/openspiel-v0 ({len(served)}): {', '.join(served)}")
    print(f"\nnot served ({len(others)}):")
    for name, reason in others.items():
        print(f"  {name}: {reason}")
    return 0

"""Core commands: ``agentgym list``, ``agentgym rollout``, ``agentgym eval``.

agentgym rollout --env toy/calculator-v0 --policy scripted --n 200 --concurrency 32 --out x.jsonl
agentgym eval --env toy/calculator-v0 --policy scripted --n 50 --json
agentgym eval --env toy/calculator-v0 --policy scripted --n 50 --verifier rm:runs/rm/final

``--verifier SPEC`` scores the episodes with a reward model (``rm:DIR``) or an LLM judge
(``judge:POLICY_SPEC``) in place of the env's verifier (``agentgym.verifiers.make_verifier``).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from typing import Any


def parse_kwargs(items: list[str] | str | None, flag: str = "--env-kwargs") -> dict[str, Any]:
    """``["a=1", "b=x", "c=[1, 2]"]`` -> ``{"a": 1, "b": "x", "c": [1, 2]}``: ``key=value`` pairs,
    each value parsed as YAML (so JSON too); one YAML mapping (``"{a: 1}"``) is read as it is.
    The one syntax of ``--env-kwargs`` in every command and of ``env_kwargs`` overrides."""
    import yaml

    if isinstance(items, str):
        items = [items]
    out: dict[str, Any] = {}
    for item in items or []:
        if item.lstrip().startswith("{"):
            try:
                mapping = yaml.safe_load(item)
            except yaml.YAMLError as e:
                raise ValueError(f"{flag}: {item!r} is not a YAML mapping ({e})") from None
            if not isinstance(mapping, dict):
                raise ValueError(f"{flag}: {item!r} is not a mapping")
            out.update(mapping)
            continue
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"{flag} takes key=value pairs (e.g. difficulty=2 site=shop), got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", required=True, help="env id (see `agentgym list`)")
    p.add_argument(
        "--policy",
        required=True,
        help="policy spec: scripted, random, teacher, mcts:sims=200, hf:PATH, vllm:PATH, openai:URL,model=NAME",
    )
    p.add_argument("--n", type=int, required=True, help="number of tasks")
    p.add_argument("--group", type=int, default=1, help="samples per task (G)")
    p.add_argument("--concurrency", type=int, default=8, help="episodes in flight")
    p.add_argument(
        "--max-turns", type=int, default=None, help="assistant turns before truncation (env default if unset)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--opponent", default=None, help="opponent spec for game envs (passed as env kwarg opponent=)"
    )
    p.add_argument(
        "--env-kwargs", nargs="*", default=None, metavar="KEY=VALUE", help="extra env constructor arguments"
    )
    p.add_argument(
        "--turn-timeout",
        type=float,
        default=600.0,
        help="seconds for one turn: the policy's reply and the env's step (default 600: a real model "
        "on 2 CPU cores writes a 256-token turn at batch 4 in about a minute)",
    )
    p.add_argument(
        "--episode-timeout", type=float, default=3600.0, help="seconds for one episode (default 3600)"
    )
    p.add_argument(
        "--verifier",
        default=None,
        metavar="SPEC",
        help="score each finished episode with this instead of the env's verifier (whose total stays "
        "in the breakdown as env_score): rm:DIR, a reward model from `agentgym train rm`, or "
        "judge:POLICY_SPEC, an LLM judge (e.g. judge:hf:DIR,temperature=0); a verifier error makes "
        "the episode env_error",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    add_ray_flags(p)


def add_ray_flags(p: argparse.ArgumentParser) -> None:
    """``--ray [ADDRESS]``, ``--ray-retries`` and ``--ray-verbose`` (read back by ``runner_of``)."""
    p.add_argument(
        "--ray",
        nargs="?",
        const="auto",
        default=None,
        metavar="ADDRESS",
        help="run the episodes in Ray actors: 'local' starts Ray in this process; 'auto' (the default "
        "with no value), HOST:PORT or ray://HOST:PORT joins a running cluster (needs agentgym[ray])",
    )
    p.add_argument(
        "--ray-retries",
        type=int,
        default=2,
        help="with --ray: times an episode lost with its actor or node runs again before it is "
        "recorded as env_error (default 2)",
    )
    p.add_argument("--ray-verbose", action="store_true", help="with --ray: Ray's own logs on stderr")


def _env_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kwargs = parse_kwargs(args.env_kwargs)
    if args.opponent is not None:
        kwargs["opponent"] = args.opponent
    return kwargs


def runner_of(args: argparse.Namespace):
    """``run_rollouts``, or with ``--ray`` the Ray runner bound to the flags' address and retries
    (the same arguments and return value)."""
    from agentgym.rollout import run_rollouts

    if args.ray is not None:
        try:
            from agentgym import ray_runner
        except ImportError as e:
            raise ImportError(f"--ray needs Ray ({e}); install it with: pip install 'agentgym[ray]'") from e
        return functools.partial(
            ray_runner.rollout_ray, address=args.ray, retries=args.ray_retries, verbose=args.ray_verbose
        )
    if args.ray_retries != 2 or args.ray_verbose:
        raise ValueError("--ray-retries and --ray-verbose need --ray")
    return run_rollouts


def _run(args: argparse.Namespace, out: str | None, resume: bool, group: int):
    run = runner_of(args)
    trajs = run(
        args.env,
        args.policy,
        n=args.n,
        group=group,
        concurrency=args.concurrency,
        seed=args.seed,
        out=out,
        resume=resume,
        env_kwargs=_env_kwargs(args),
        max_turns=args.max_turns,
        turn_timeout=args.turn_timeout,
        episode_timeout=args.episode_timeout,
        progress=False if args.no_progress else None,
        verifier=args.verifier,
    )
    return trajs, dict(trajs.stats)


def _throughput(stats: dict[str, Any]) -> dict[str, Any]:
    secs = max(stats.get("seconds", 0.0), 1e-9)
    return {
        "seconds": round(secs, 3),
        "episodes_per_s": round(stats.get("episodes", 0) / secs, 2),
        "turns_per_s": round(stats.get("turns", 0) / secs, 2),
    }


def cmd_list(args: argparse.Namespace) -> int:
    from agentgym.registry import list_envs, plugin_errors, spec

    for env_id in list_envs():
        entry = spec(env_id)
        extra = f"  [needs agentgym[{entry.requires}]]" if entry.requires else ""
        print(f"{env_id}  {entry.entry_point}{extra}")
    for name, err in plugin_errors.items():
        print(f"(plugin {name} failed to load: {err})", file=sys.stderr)
    return 0


def cmd_rollout(args: argparse.Namespace) -> int:
    from agentgym.rollout import summarize

    trajs, stats = _run(args, args.out, args.resume, args.group)
    summary = {
        **summarize(trajs),
        **_throughput(stats),
        "new_episodes": stats.get("episodes", 0),
        "out": args.out,
    }
    print(json.dumps(summary))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from agentgym.rollout import summarize

    if args.k < 1:
        raise ValueError(f"--k must be at least 1, got {args.k}")
    group = args.k if args.group is None else args.group
    if args.k > group:
        raise ValueError(
            f"pass@{args.k} needs at least {args.k} samples per task, but --group is {group}; "
            f"raise --group to {args.k} or more, or leave it out (eval then runs k samples per task)"
        )
    trajs, stats = _run(args, args.out, False, group)
    summary = {
        "env": args.env,
        "policy": args.policy,
        **summarize(trajs, k=args.k, threshold=args.pass_threshold),
        **_throughput(stats),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        for key, value in summary.items():
            print(f"{key:>18}: {value}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list the registered environments")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("rollout", help="roll a policy out and append trajectories to a JSONL file")
    _add_run_args(p)
    p.add_argument("--out", required=True, help="JSONL file; each finished trajectory is appended at once")
    p.add_argument("--resume", action="store_true", help="skip (task_id, sample) keys already in --out")
    p.set_defaults(func=cmd_rollout)

    p = sub.add_parser(
        "eval", help="evaluate a policy: mean score, pass@k, pass^k, statuses, per-turn rewards, throughput"
    )
    _add_run_args(p)
    p.add_argument(
        "--k",
        type=int,
        default=1,
        help="report pass@k (some of k samples pass) and pass^k (all k pass); runs --group samples "
        "per task (default: k; more samples give a less noisy estimate of both)",
    )
    p.set_defaults(group=None)
    p.add_argument(
        "--pass-threshold", type=float, default=1.0, help="a sample passes when its score is at least this"
    )
    p.add_argument("--out", default=None, help="also write the trajectories to this JSONL file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_eval)

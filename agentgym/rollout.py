"""The async rollout runner: many episodes in flight, G samples per task, timeouts, resumable JSONL.

Each concurrent slot owns one env instance (reused across episodes, replaced after an env
failure) and runs episodes from a shared queue. A finished trajectory is appended to the output
file at once, so a killed run loses nothing it finished; ``resume=True`` skips the
(env, task_id, sample) keys already in the file and drops a last line cut off mid-write.

Failures become statuses, never crashes: an exception from the env is ``env_error``, from the
policy ``policy_error``, and a turn (the policy's reply plus the env's step, tools included) or
an episode over its time limit is ``timeout``; its error names the limit that fired and the
flag that raises it.

A policy given as a spec string is built by the runner and closed by it when the run ends (a
model backend's thread, engine or connections go with it); a policy object passed in stays the
caller's to close.

``verifier`` (``--verifier`` on the command line) scores every finished ``ok`` / ``truncated``
episode with another reward function in place of the env's: a spec (``rm:DIR``, a reward model;
``judge:POLICY_SPEC``, an LLM judge; see ``agentgym.verifiers.make_verifier``) or a function
``(trajectory, task) -> float``. Its value becomes the score and goes into the breakdown under its
name, beside the env's own total as ``env_score``; a verifier error makes the episode
``env_error`` (``metadata["verifier_errors"]``). It runs in a thread, after the episode's time
limits.

    from agentgym.rollout import run_rollouts, summarize
    trajs = run_rollouts("toy/calculator-v0", "scripted", n=100, concurrency=32, out="x.jsonl")
    print(summarize(trajs))
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from agentgym.policy import Policy, PolicySpec, parse_spec, resolve_policy
from agentgym.registry import make, resolve_scheme
from agentgym.types import Trajectory, dump_record_bytes, iter_jsonl, passes, validate_record
from agentgym.verifiers import RewardFn, make_verifier, run_reward


@dataclass(frozen=True)
class Job:
    index: int
    task_id: str
    sample: int
    seed: int


class Rollouts(list):
    """What ``rollout`` returns: its trajectories (a list), and ``stats`` of the episodes this
    call ran (``seconds``, ``turns``, ``episodes``; records found in ``out`` on resume are in the
    list but not in the stats)."""

    def __init__(self, trajectories: Sequence[Trajectory] = (), stats: dict[str, Any] | None = None):
        super().__init__(trajectories)
        self.stats: dict[str, Any] = dict(stats or {})


class PolicyError(RuntimeError):
    pass


_NEVER = math.inf


class _Slot:
    """Deadlines of one worker, enforced by a shared watchdog that cancels the worker when one
    passes. One watchdog tick for all workers is far cheaper than a timer per turn."""

    __slots__ = ("task", "turn_deadline", "episode_deadline", "fired")

    def __init__(self) -> None:
        self.task: asyncio.Task | None = None
        self.turn_deadline = _NEVER
        self.episode_deadline = _NEVER
        self.fired: str | None = None

    def start_episode(self, limit: float | None) -> None:
        self.fired = None
        self.episode_deadline = time.monotonic() + limit if limit is not None else _NEVER

    def start_turn(self, limit: float | None) -> None:
        self.turn_deadline = time.monotonic() + limit if limit is not None else _NEVER

    def end_turn(self) -> None:
        self.turn_deadline = _NEVER

    def end_episode(self) -> None:
        self.turn_deadline = self.episode_deadline = _NEVER

    def check(self, now: float) -> None:
        if self.fired is not None or self.task is None:
            return
        if now >= self.turn_deadline:
            self.fired = "turn"
        elif now >= self.episode_deadline:
            self.fired = "episode"
        else:
            return
        self.task.cancel()


def episode_seed(seed: int, index: int, sample: int, group: int) -> int:
    """A distinct, reproducible seed for each (run seed, task index, sample)."""
    return (seed * 1_000_003 + index * group + sample) % (2**31 - 1)


def _repair_tail(path: str) -> None:
    """Finish a last line left without its newline: a whole record gets its newline; a line cut
    off by a killed writer is cut from the file (kept in ``PATH.rejected``) and reported."""
    with open(path, "rb+") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        pos = size
        chunk = 65536
        start = 0
        while pos > 0:
            begin = max(0, pos - chunk)
            f.seek(begin)
            nl = f.read(pos - begin).rfind(b"\n")
            if nl >= 0:
                start = begin + nl + 1
                break
            pos = begin
        f.seek(start)
        tail = f.read()
        try:
            validate_record(json.loads(tail.decode("utf-8")))
        except (ValueError, RecursionError):
            with open(path + ".rejected", "ab") as rejected:
                rejected.write(tail + b"\n")
            f.truncate(start)
            print(
                f"{path}:{_line_at(path, start)}: dropped an incomplete last line left by an "
                f"interrupted run ({len(tail)} bytes, kept in {path}.rejected)",
                file=sys.stderr,
            )
            return
        f.seek(size)
        f.write(b"\n")


def _line_at(path: str, offset: int) -> int:
    """The 1-based line number at byte ``offset`` of a file."""
    lines, left = 1, offset
    with open(path, "rb") as f:
        while left > 0:
            chunk = f.read(min(left, 1 << 20))
            if not chunk:
                break
            lines += chunk.count(b"\n")
            left -= len(chunk)
    return lines


def _drop_lines(path: str, bad: set[int]) -> None:
    """Rewrite ``path`` without the lines numbered in ``bad``; they are appended to ``PATH.rejected``."""
    tmp = path + ".tmp"
    with open(path, "rb") as src, open(tmp, "wb") as dst, open(path + ".rejected", "ab") as rejected:
        for lineno, raw in enumerate(src, 1):
            (rejected if lineno in bad else dst).write(raw)
    os.replace(tmp, path)


def done_keys(path: str, env_id: str) -> tuple[set[tuple[str, int]], list[Trajectory]]:
    """The (task_id, sample) keys of ``env_id`` already in a results file, and their trajectories.

    The file is repaired first: a partial last line (a killed run) is cut, and malformed lines
    are moved to ``PATH.rejected`` with their line numbers reported, so they are neither counted
    nor left to break the next reader."""
    keys: set[tuple[str, int]] = set()
    trajs: list[Trajectory] = []
    if not os.path.exists(path):
        return keys, trajs
    _repair_tail(path)
    bad: set[int] = set()

    def report(lineno: int, reason: str) -> None:
        bad.add(lineno)
        print(f"{path}:{lineno}: malformed line moved to {path}.rejected: {reason}", file=sys.stderr)

    for _, record in iter_jsonl(path, errors="skip", report=report):
        sample = record.get("metadata", {}).get("sample")
        if record["env"] != env_id or not isinstance(sample, int):
            continue
        key = (str(record["task_id"]), sample)
        if key not in keys:
            keys.add(key)
            trajs.append(Trajectory.from_record(record))
    if bad:
        _drop_lines(path, bad)
    return keys, trajs


class Runner:
    """Runs jobs for one env id with one policy; see ``run_rollouts`` for the arguments."""

    def __init__(
        self,
        env_id: str,
        policy: str | PolicySpec | Policy,
        *,
        concurrency: int = 8,
        env_kwargs: dict[str, Any] | None = None,
        max_turns: int | None = None,
        turn_timeout: float | None = 600.0,
        episode_timeout: float | None = 3600.0,
        on_trajectory: Callable[[Trajectory], None] | None = None,
        verifier: str | RewardFn | None = None,
    ):
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        for name, limit in (("turn_timeout", turn_timeout), ("episode_timeout", episode_timeout)):
            if limit is not None and not (isinstance(limit, int | float) and 0 < limit < math.inf):
                raise ValueError(
                    f"{name} must be a positive number of seconds (or None for no limit), got {limit}"
                )
        # an id written with a scheme (openenv:URL) is recorded as the registered id and its kwargs
        self.env_id, from_scheme = resolve_scheme(env_id)
        self.policy_spec = policy
        self.policy: Policy | None = None if isinstance(policy, str | PolicySpec) else policy
        self.concurrency = concurrency
        self.env_kwargs = {**from_scheme, **(env_kwargs or {})}
        if max_turns is not None:
            self.env_kwargs["max_turns"] = max_turns
        self.turn_timeout = turn_timeout
        self.episode_timeout = episode_timeout
        self.on_trajectory = on_trajectory
        self.verifier_spec = verifier
        self.verifier = make_verifier(verifier) if isinstance(verifier, str) else verifier
        self.turns = 0
        self._spec_str: str | None = None

    def new_env(self):
        return make(self.env_id, **self.env_kwargs)

    def resolve(self, env, seed: int = 0) -> Policy:
        if self.policy is None:
            self.policy = resolve_policy(parse_spec(self.policy_spec), env, seed=seed)
        return self.policy

    async def episode(self, env, job: Job, slot: _Slot) -> tuple[Trajectory, bool]:
        """Run one episode; returns the trajectory and whether the env is still usable."""
        policy = self.policy
        traj = Trajectory(env=self.env_id, task_id=job.task_id)
        healthy = True
        stage = "reset"
        t0 = time.perf_counter()
        slot.start_episode(self.episode_timeout)
        try:
            await env.areset(seed=job.seed, options={"task_id": job.task_id})
            traj = env.trajectory
            while True:
                stage = "policy"
                slot.start_turn(self.turn_timeout)
                try:
                    action = await policy.act(traj, env)
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    raise PolicyError(f"{type(e).__name__}: {e}") from e
                stage = "env"
                _, _, terminated, truncated, _ = await env.astep(action)
                slot.end_turn()
                self.turns += 1
                if terminated or truncated:
                    break
        except asyncio.CancelledError:
            if slot.fired is None:
                raise
            asyncio.current_task().uncancel()
            limit = self.turn_timeout if slot.fired == "turn" else self.episode_timeout
            traj.status = "timeout"
            traj.metadata["error"] = (
                f"{slot.fired} time limit of {limit} s exceeded during {stage}; raise it with "
                f"--{slot.fired}-timeout (Python: {slot.fired}_timeout=)"
            )
            healthy = stage == "policy"
        except PolicyError as e:
            traj.status = "policy_error"
            traj.metadata["error"] = str(e)
        except Exception as e:
            traj.status = "env_error"
            traj.metadata["error"] = f"{stage}: {type(e).__name__}: {e}"
            healthy = False
        finally:
            slot.end_episode()
        finish = getattr(policy, "finish", None)
        if finish is not None and traj.tokens is not None:
            try:
                finish(traj, env)  # e.g. the token-record check of model policies
            except Exception as e:
                traj.metadata["token_check"] = [f"the check itself failed: {type(e).__name__}: {e}"]
        if self.verifier is not None and traj.status in ("ok", "truncated"):
            await self.rescore(traj, env.task)
        if traj.status not in ("ok", "truncated"):
            traj.score = 0.0
        traj.env = self.env_id
        traj.task_id = job.task_id
        traj.metadata.update(sample=job.sample, seed=job.seed, policy=self.policy_spec_str())
        traj.metadata["seconds"] = round(time.perf_counter() - t0, 4)
        return traj, healthy

    async def rescore(self, traj: Trajectory, task) -> None:
        """Score a finished episode with the run's verifier instead of the env's (see the module
        docstring)."""
        name = getattr(self.verifier, "__name__", None) or type(self.verifier).__name__
        value, err = await asyncio.to_thread(run_reward, self.verifier, traj, task)
        breakdown = traj.metadata.setdefault("breakdown", {})
        breakdown["env_score"] = traj.score
        if err is not None:
            traj.status = "env_error"
            traj.metadata.setdefault("verifier_errors", {})[name] = err
            return
        breakdown[name] = value
        traj.score = value

    def unmade(self, job: Job, error: Exception) -> Trajectory:
        """The record of an episode whose env could not be made (``env_error``): the run goes on,
        and each later episode tries to make the env again."""
        traj = Trajectory(env=self.env_id, task_id=job.task_id, status="env_error", env_kwargs=None)
        traj.metadata.update(
            error=f"make: {type(error).__name__}: {error}",
            sample=job.sample,
            seed=job.seed,
            policy=self.policy_spec_str(),
            seconds=0.0,
        )
        return traj

    async def close(self) -> None:
        """Close the policy if this runner built it from a spec string (in a thread: stopping an
        engine can block)."""
        close = getattr(self.policy, "close", None)
        if isinstance(self.policy_spec, str | PolicySpec) and close is not None:
            await asyncio.to_thread(close)
        close = getattr(self.verifier, "close", None)
        if isinstance(self.verifier_spec, str) and close is not None:
            await asyncio.to_thread(close)

    def policy_spec_str(self) -> str:
        if self._spec_str is None:
            spec = self.policy_spec
            self._spec_str = str(spec) if isinstance(spec, str | PolicySpec) else type(spec).__name__
        return self._spec_str

    async def run(
        self, jobs: Sequence[Job], out: str | None = None, progress: bool | None = None, first_env=None
    ) -> list[Trajectory]:
        """Run ``jobs``; ``first_env`` (made by ``new_env``, e.g. to read the task ids) becomes the
        first worker's env instead of being made again."""
        results: list[Trajectory] = []
        if not jobs:
            if first_env is not None:
                await _close_quietly(first_env)
            return results
        queue = list(reversed(jobs))
        sink = open(out, "ab") if out else None  # noqa: SIM115 - closed below
        bar = None
        if progress is None:
            progress = sys.stderr.isatty()
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(jobs), desc=self.env_id, unit="ep", file=sys.stderr)
        first_env = first_env if first_env is not None else self.new_env()
        blocking = type(first_env).blocking
        pool = (
            ThreadPoolExecutor(max_workers=self.concurrency + 2, thread_name_prefix="agentgym-env")
            if blocking
            else None
        )
        self.resolve(first_env, seed=jobs[0].seed)

        def new_env():
            env = self.new_env()
            env.executor = pool
            return env

        first_env.executor = pool

        slots = [_Slot() for _ in range(min(self.concurrency, len(jobs)))]

        async def worker(env, slot: _Slot) -> None:
            slot.task = asyncio.current_task()
            try:
                while queue:
                    job = queue.pop()
                    if env is None:
                        try:
                            env = (
                                await asyncio.get_running_loop().run_in_executor(pool, new_env)
                                if blocking
                                else new_env()
                            )
                        except Exception as e:  # a remote server gone, a browser that did not start
                            env = None
                            traj, healthy = self.unmade(job, e), False
                    if env is not None:
                        traj, healthy = await self.episode(env, job, slot)
                    if sink is not None:
                        sink.write(dump_record_bytes(traj.to_record()))
                        sink.flush()
                    results.append(traj)
                    if self.on_trajectory is not None:
                        self.on_trajectory(traj)
                    if bar is not None:
                        bar.update(1)
                    if not healthy:
                        await _close_quietly(env)
                        env = None
            finally:
                slot.task = None
                if env is not None:
                    await _close_quietly(env)

        limits = [t for t in (self.turn_timeout, self.episode_timeout) if t is not None]
        tick = min([0.5, *(t / 20 for t in limits)])

        async def watchdog() -> None:
            while True:
                await asyncio.sleep(tick)
                now = time.monotonic()
                for slot in slots:
                    slot.check(now)

        dog = asyncio.create_task(watchdog()) if limits else None
        try:
            envs = [first_env] + [None] * (len(slots) - 1)
            await asyncio.gather(*(worker(e, s) for e, s in zip(envs, slots, strict=True)))
        finally:
            if dog is not None:
                dog.cancel()
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
            if sink is not None:
                sink.close()
            if bar is not None:
                bar.close()
        return results


async def _close_quietly(env) -> None:
    try:
        await asyncio.wait_for(env.aclose(), timeout=30)
    except Exception as e:
        print(f"agentgym: closing an env failed: {type(e).__name__}: {e}", file=sys.stderr)


def plan_jobs(
    task_ids: Sequence[str], group: int, seed: int, skip: set[tuple[str, int]] = frozenset()
) -> list[Job]:
    return [
        Job(i, tid, s, episode_seed(seed, i, s, group))
        for i, tid in enumerate(task_ids)
        for s in range(group)
        if (tid, s) not in skip
    ]


async def rollout(
    env_id: str,
    policy: str | PolicySpec | Policy,
    *,
    n: int,
    group: int = 1,
    concurrency: int = 8,
    seed: int = 0,
    out: str | os.PathLike[str] | None = None,
    resume: bool = False,
    env_kwargs: dict[str, Any] | None = None,
    max_turns: int | None = None,
    turn_timeout: float | None = 600.0,
    episode_timeout: float | None = 3600.0,
    task_ids: Sequence[str] | None = None,
    progress: bool | None = None,
    on_trajectory: Callable[[Trajectory], None] | None = None,
    verifier: str | RewardFn | None = None,
) -> Rollouts:
    """Roll ``policy`` out on ``n`` tasks of ``env_id``, ``group`` samples each (scored by the
    env's verifier, or by ``verifier``: see the module docstring).

    Returns the trajectories of this call, plus, with ``resume``, those of the planned
    (task_id, sample) keys already in ``out``; their ``stats`` count this call's episodes.
    """
    if n < 0 or group < 1:
        raise ValueError(f"need n >= 0 and group >= 1, got n={n}, group={group}")
    runner = Runner(
        env_id,
        policy,
        concurrency=concurrency,
        env_kwargs=env_kwargs,
        max_turns=max_turns,
        turn_timeout=turn_timeout,
        episode_timeout=episode_timeout,
        on_trajectory=on_trajectory,
        verifier=verifier,
    )
    first_env = None
    if task_ids is None:  # the env that names the tasks then runs the first worker's episodes
        first_env = runner.new_env()
        try:
            task_ids = first_env.task_ids(n, seed)
        except BaseException:
            await _close_quietly(first_env)
            raise
    try:
        out, skip, previous = prepare_out(out, resume, runner.env_id, task_ids, group)
    except BaseException:
        if first_env is not None:
            await _close_quietly(first_env)
        raise
    jobs = plan_jobs(task_ids, group, seed, skip)
    t0 = time.perf_counter()
    try:
        results = await runner.run(jobs, out=out, progress=progress, first_env=first_env)
        seconds = time.perf_counter() - t0
    finally:
        await runner.close()
    return Rollouts(previous + results, {"seconds": seconds, "turns": runner.turns, "episodes": len(results)})


def prepare_out(
    out: str | os.PathLike[str] | None, resume: bool, env_id: str, task_ids: Sequence[str], group: int
) -> tuple[str | None, set[tuple[str, int]], list[Trajectory]]:
    """Ready the results file of a run: ``(path, keys to skip, their trajectories)``. With
    ``resume`` the planned (task_id, sample) keys of ``env_id`` (the registered id, as records
    carry it) already in the file are skipped and returned; without it the file starts empty."""
    if out is None:
        return None, set(), []
    out = os.fspath(out)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    if not resume:
        open(out, "w").close()
        return out, set(), []
    skip, previous = done_keys(out, env_id)
    planned = {(tid, s) for tid in task_ids for s in range(group)}
    return out, skip, [t for t in previous if (t.task_id, t.metadata["sample"]) in planned]


def run_rollouts(env_id: str, policy: str | PolicySpec | Policy, **kwargs: Any) -> Rollouts:
    """Synchronous wrapper of ``rollout`` (starts its own event loop)."""
    return asyncio.run(rollout(env_id, policy, **kwargs))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c passed (Chen et al., 2021, "Evaluating Large
    Language Models Trained on Code"): 1 - C(n-c, k) / C(n, k).

    >>> pass_at_k(10, 0, 1), pass_at_k(10, 10, 5), round(pass_at_k(4, 1, 2), 4)
    (0.0, 1.0, 0.5)
    """
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per task, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def pass_hat_k(n: int, c: int, k: int) -> float:
    """Unbiased pass^k from n samples of which c passed: the chance that k samples drawn without
    replacement all pass, C(c, k) / C(n, k) (Yao et al., 2024, "tau-bench", section 4: how
    reliably an agent solves a task every time, where pass@k asks whether it solves it once).

    >>> pass_hat_k(4, 2, 2), pass_hat_k(4, 1, 2), pass_hat_k(10, 10, 5), round(pass_hat_k(4, 3, 2), 4)
    (0.16666666666666666, 0.0, 1.0, 0.5)
    """
    if k > n:
        raise ValueError(f"pass^{k} needs at least {k} samples per task, got {n}")
    if not 0 <= c <= n:
        raise ValueError(f"the passes c ({c}) must lie between 0 and the samples n ({n})")
    return math.prod((c - i) / (n - i) for i in range(k))


def summarize(trajs: Sequence[Trajectory], k: int = 1, threshold: float = 1.0) -> dict[str, Any]:
    """Mean score and pass@k (a pass as ``agentgym.types.passes`` has it: status ok, score >=
    threshold) over the trajectories whose status is evidence (ok, truncated); infrastructure
    failures are counted separately, never as zeros.

    pass@k (some of k samples pass) and pass^k (all k pass) are unbiased estimates per task
    averaged over the tasks with at least k evidence samples; ``pass@k_tasks`` says how many
    tasks that is. Where evidence trajectories carry per-turn rewards
    (``metadata["turn_rewards"]``, one number per assistant turn), ``turn_rewards`` summarises
    them (``turn_reward_summary``); without any the key is left out."""
    statuses = Counter(t.status for t in trajs)
    evidence = [t for t in trajs if t.is_evidence]
    by_task: dict[tuple[str, str], list[Trajectory]] = defaultdict(list)
    for t in evidence:
        by_task[(t.env, t.task_id)].append(t)
    scored = [(len(v), sum(passes(t, threshold) for t in v)) for v in by_task.values() if len(v) >= k]
    out: dict[str, Any] = {
        "episodes": len(trajs),
        "evidence_episodes": len(evidence),
        "mean_score": (sum(t.score for t in evidence) / len(evidence)) if evidence else None,
        f"pass@{k}": (sum(pass_at_k(n, c, k) for n, c in scored) / len(scored)) if scored else None,
        f"pass^{k}": (sum(pass_hat_k(n, c, k) for n, c in scored) / len(scored)) if scored else None,
        f"pass@{k}_tasks": len(scored),
        "pass_threshold": threshold,
        "tasks": len(by_task),
        "statuses": {
            s: statuses.get(s, 0) for s in ("ok", "truncated", "env_error", "policy_error", "timeout")
        },
        "mean_turns": (sum(t.num_turns for t in evidence) / len(evidence)) if evidence else None,
    }
    turns = turn_reward_summary(evidence)
    if turns is not None:
        out["turn_rewards"] = turns
    return out


def turn_reward_summary(trajs: Sequence[Trajectory]) -> dict[str, Any] | None:
    """Per-turn (process) rewards of the trajectories that carry them in
    ``metadata["turn_rewards"]``: how many episodes have them, the mean reward of a turn, the
    mean of each episode's sum, and the mean at each turn position over the episodes that
    reached it. None when no trajectory carries any.

    >>> a = Trajectory(metadata={"turn_rewards": [0.0, 1.0]}); b = Trajectory(metadata={"turn_rewards": [0.5]})
    >>> turn_reward_summary([a, b])
    {'episodes': 2, 'turns': 3, 'mean': 0.5, 'mean_total': 0.75, 'mean_by_turn': [0.25, 1.0]}
    """
    rows: list[list[float]] = []
    for t in trajs:
        values = t.metadata.get("turn_rewards")
        if values is None:
            continue
        if not isinstance(values, list | tuple) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values
        ):
            raise ValueError(
                f"trajectory {t.task_id} of {t.env!r}: metadata['turn_rewards'] must be a list of finite "
                f"numbers (one per assistant turn), got {values!r:.80}"
            )
        rows.append([float(v) for v in values])
    if not rows:
        return None
    flat = [v for row in rows for v in row]
    by_turn = [[row[i] for row in rows if len(row) > i] for i in range(max(map(len, rows)))]
    return {
        "episodes": len(rows),
        "turns": len(flat),
        "mean": sum(flat) / len(flat) if flat else None,
        "mean_total": sum(map(sum, rows)) / len(rows),
        "mean_by_turn": [sum(col) / len(col) for col in by_turn],
    }

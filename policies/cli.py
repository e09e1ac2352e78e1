"""Commands of the policies layer: ``agentgym tiny-model`` and ``agentgym serve``.

    agentgym tiny-model /tmp/tiny [--size small] [--seed 0]
    agentgym serve /tmp/tiny [--port 8000] [--lora-rank 8] [--vllm-args "--max-model-len 2048"]

``serve`` prints the base URL once the server is healthy; Ctrl-C or SIGTERM stops it.

Nothing heavy is imported at module level; each command imports what it needs.
"""

from __future__ import annotations

import argparse
import shlex


def _tiny_model(args: argparse.Namespace) -> int:
    from agentgym.policies.tiny import build_tiny_model

    out = build_tiny_model(args.out_dir, size=args.size, seed=args.seed)
    print(out)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from agentgym.policies.server import serve_forever

    extra = shlex.split(args.vllm_args)
    if args.lora_rank:
        extra += ["--enable-lora", "--max-lora-rank", str(args.lora_rank)]
    return serve_forever(args.model, port=args.port, extra_args=extra)


def add_commands(subparsers) -> None:
    p = subparsers.add_parser(
        "tiny-model", help="build a tiny offline Llama model + byte tokenizer for tests"
    )
    p.add_argument("out_dir", help="directory to write the model into")
    p.add_argument(
        "--size", choices=["tiny", "small"], default="tiny", help="tiny (~0.4M params) or small (~3M)"
    )
    p.add_argument("--seed", type=int, default=0, help="weights depend only on size and seed")
    p.set_defaults(func=_tiny_model)

    p = subparsers.add_parser("serve", help="serve a local model with vLLM's OpenAI-compatible server")
    p.add_argument("model", help="model directory (or hub id already in the local cache)")
    p.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (default 8000)")
    p.add_argument(
        "--vllm-args", default="", help="further arguments for vLLM's server, e.g. '--max-model-len 2048'"
    )
    p.add_argument(
        "--lora-rank",
        type=int,
        default=0,
        help="accept LoRA adapters up to this rank at run time (what `train grpo|dpo --sampler server` pushes)",
    )
    p.set_defaults(func=_serve)

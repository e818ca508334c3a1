#!/usr/bin/env bash
# Installs what swucx needs to build and test on Debian 12, if it is missing. Idempotent and quiet
# when everything is already there. Needs root (or sudo) only when something must be installed.
set -euo pipefail

missing=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

# python3-venv: the project-local .venv/ for the tools from PyPI (Go, weed, UCX 1.22; scripts/venv.sh).
for pkg in libucx-dev ucx-utils libclang-dev pkg-config gcc g++ valgrind binutils iproute2 python3-venv; do
  have_pkg "$pkg" || missing+=("$pkg")
done
command -v cargo >/dev/null || { echo "deps: cargo not found; install Rust (rustup) first" >&2; exit 1; }

if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >/dev/null
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! pkg-config --atleast-version=1.13 ucx; then
  echo "deps: UCX >= 1.13 not found by pkg-config (have: $(pkg-config --modversion ucx 2>/dev/null || echo none))" >&2
  exit 1
fi

# cbindgen, pinned, in a project-local root (.tools/, git-ignored): generates include/swucx.h and
# checks it for drift in the tests.
CBINDGEN_VERSION=0.29.4
root="$(cd "$(dirname "$0")/.." && pwd)"
if ! "$root/.tools/bin/cbindgen" --version 2>/dev/null | grep -qx "cbindgen $CBINDGEN_VERSION"; then
  echo "deps: installing cbindgen $CBINDGEN_VERSION into .tools/"
  cargo install --quiet --locked --root "$root/.tools" cbindgen --version "$CBINDGEN_VERSION" >/dev/null 2>&1 \
    || { echo "deps: cargo install cbindgen $CBINDGEN_VERSION failed" >&2; exit 1; }
fi

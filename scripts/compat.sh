#!/usr/bin/env bash
# Builds swucx against another UCX release and runs the Rust and C test suites on it.
#
#   scripts/compat.sh [--build-only] [VERSION]      (default 1.22.0)
#
# --build-only: builds (library, binaries, examples) and prints the UCX prefix as the last line
# of its output, running no test (scripts/bench.sh --ucx uses it).
#
# The UCX comes from the PyPI wheel libucx-cu12 (UCX built by NVIDIA for CUDA 12: no verbs, the
# CUDA modules stay unloaded without a GPU), installed into the project-local venv .venv/. Its
# pkg-config files name the prefix it was built in, so relocated copies go to
# target/ucx-VERSION/pkgconfig; the build goes to target/ucx-VERSION (CARGO_TARGET_DIR) and finds
# that UCX through PKG_CONFIG_PATH, as a UCX outside the system's directories is found
# (README, "Configuration"); LD_LIBRARY_PATH makes the tests load it. Skipped there: the
# valgrind runs of the C tests (valgrind reports uninitialised reads inside this UCX's own
# rendezvous code, proto_multi.inl, which the system UCX does not have; and under valgrind's
# slowdown ops.c's signalled tag receive of a 2 MiB rendezvous over tcp saw no announcement
# within its million tries).
# Exit status: that of the tests; 2 on a setup error.
set -euo pipefail

BUILD_ONLY=0
if [ "${1:-}" = --build-only ]; then BUILD_ONLY=1; shift; fi
VERSION=${1:-1.22.0}
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv"
out="$root/target/ucx-$VERSION"
# shellcheck source=venv.sh
. "$root/scripts/venv.sh"

mkdir -p "$venv"
(
  flock 9
  if ! "$venv/bin/pip" show libucx-cu12 2>/dev/null | grep -qx "Version: $VERSION"; then
    venv_pip_install compat.sh "libucx-cu12==$VERSION" || exit 2
  fi
) 9>"$venv/.install.lock"

# The package's directory, without importing it (its __init__ loads libraries).
ucx=$("$venv/bin/python" -c \
  'import importlib.util; print(importlib.util.find_spec("libucx").submodule_search_locations[0])')
[ -f "$ucx/include/ucp/api/ucp.h" ] || { echo "compat.sh: no UCX headers in $ucx" >&2; exit 2; }

mkdir -p "$out/pkgconfig"
for pc in "$ucx"/lib/pkgconfig/*.pc; do
  sed "s|^prefix *=.*|prefix = $ucx|" "$pc" >"$out/pkgconfig/$(basename "$pc")"
done

export PKG_CONFIG_PATH="$out/pkgconfig" CARGO_TARGET_DIR="$out"
export LD_LIBRARY_PATH="$ucx/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
found=$(pkg-config --modversion ucx)
[ "$found" = "$VERSION" ] || { echo "compat.sh: pkg-config finds UCX $found, not $VERSION" >&2; exit 2; }
echo "compat: swucx against UCX $VERSION ($ucx)" >&2

cd "$root"
# The C tests link target/ucx-VERSION/release/libswucx.{a,so}; `cargo test` builds only the rlib.
cargo build -q --release --lib --bins --examples
if [ "$BUILD_ONLY" = 1 ]; then
  echo "$ucx"
  exit 0
fi
cargo test -q --release --no-fail-fast --lib --tests -- --skip valgrind

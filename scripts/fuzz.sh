#!/usr/bin/env bash
# Runs the cargo-fuzz targets of fuzz/ one after the other, each for a bounded time, from seed
# corpora written here (docs/protocol.md, "Fuzzing", says what each target asserts).
#
#   scripts/fuzz.sh [--seeds-only] [TARGET...]      (default: every target in fuzz/Cargo.toml)
#
# FUZZ_TIME: seconds per target (default 60). FUZZ_ARGS: more libFuzzer arguments.
# cargo-fuzz (pinned) is installed into .tools/ (git-ignored) when missing. It needs
# `-Zsanitizer`, which the stable toolchain accepts under RUSTC_BOOTSTRAP=1. Seeds go to
# fuzz/corpus/TARGET/seed-* (git-ignored; rewritten each time, the rest of a corpus is kept).
# Exit status: 0 when no target found anything; 1 at the first target that failed (a crash or a
# failed assertion: libFuzzer wrote the input to fuzz/artifacts/TARGET/; its log is in
# target/fuzz-TARGET.log); 2 when cargo-fuzz cannot be installed.
set -euo pipefail

CARGO_FUZZ_VERSION=0.13.2
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

SEEDS_ONLY=0
if [ "${1:-}" = --seeds-only ]; then SEEDS_ONLY=1; shift; fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -vx swucx-fuzz)
fi

# Writes the bytes of a hex string (whitespace ignored) to stdout.
hex() { printf "$(tr -d ' \n' <<<"$1" | sed 's/../\\x&/g')"; }
b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }

seed() { # seed TARGET NAME: stdin to fuzz/corpus/TARGET/seed-NAME
  mkdir -p "fuzz/corpus/$1"
  cat >"fuzz/corpus/$1/seed-$2"
}

# File id 3,01637037d6 (volume 3, needle 1, cookie 637037d6), now = 1800000000, exp = now + 60.
FID_BYTES="00000003 0000000000000001 637037d6"
NOW_BYTES="000000006b49d200"
EXP_BYTES="000000006b49d23c"
JWT_KEY=fuzz-read-signing-key-0123456789 # jwt_verify.rs's KEY
write_seeds() {
  # protocol_decode: an empty version-1 request and reply.
  { printf 'SW\001\001'; head -c 44 /dev/zero; } | seed protocol_decode req
  { printf 'SW\001\002'; head -c 44 /dev/zero; } | seed protocol_decode rep
  # jwt_verify: mode, fid, now, then per mode (see the target).
  local header='{"alg":"HS256","typ":"JWT"}' claims='{"exp":1800000060,"fid":"3,01637037d6"}'
  if command -v openssl >/dev/null; then
    local signed sig
    signed="$(printf %s "$header" | b64url).$(printf %s "$claims" | b64url)"
    sig=$(printf %s "$signed" | openssl dgst -sha256 -hmac "$JWT_KEY" -binary | b64url)
    { hex "00 $FID_BYTES $NOW_BYTES"; printf %s "$signed.$sig"; } | seed jwt_verify raw-token
  fi
  { hex "01 $FID_BYTES $NOW_BYTES $EXP_BYTES"; printf 3,01637037d6; } | seed jwt_verify minted
  { hex "02 $FID_BYTES $NOW_BYTES 00"; printf "\\x$(printf %02x ${#header})%s%s" "$header" "$claims"; } |
    seed jwt_verify signed
  # fid_parse: plain, with delta and extension, the largest.
  printf 3,01637037d6 | seed fid_parse plain
  printf 3,01637037d6_2.jpg | seed fid_parse delta-ext
  printf 4294967295,ffffffffffffffffffffffff | seed fid_parse max
  # needle_parse: control (version byte, offset, size, limit/16), then the blob. Two needles weed
  # 4.48 wrote (needle.rs's tests), a gzip stream, and text that the target gzips itself.
  local ctl="02 0000 0008 0100" # v3 (2 % 3 + 1), range [0, 8), limit 4096
  hex "$ctl 79563739 0000000000000003 0000000f 00000001 be 0e 02 7a31 00 006b06b3aa
       4c109ebf 18eb41e39568900b 0000000f00" | seed needle_parse weed-1b
  hex "$ctl e6695ea9 0000000000000002 00000000 00000000 18eb41e38fcde57e 00000000" |
    seed needle_parse weed-0b
  { hex "02 0010 0020 0100"; printf 'compressible %.0s' {1..40} | gzip -c -n; } |
    seed needle_parse gzip
  { hex "06 0010 0020 0100"; printf 'compressible %.0s' {1..40}; } | seed needle_parse to-gzip
  # index_parse: control (width bit, split), then rows (index.rs's tests): 5- and 4-byte offsets.
  hex "01 0011 0000000000000001 0000000100 00001013 0000000000000004 0000000b00 ffffffff
       0000000000000001 0000000500 00000020" | seed index_parse five
  hex "00 0008 0000000000000001 00000001 00001013 0000000000000002 00000003 00000000
       0000000000000001 00000000 00000010" | seed index_parse four
  # superblock_parse: v3 with a TTL; v2 with extra bytes.
  hex "03 00 03 01 0000 0000" | seed superblock_parse v3-ttl
  hex "02 01 00 00 0102 0009 ff" | seed superblock_parse v2-extra
  # vif_parse: a .vif weed 4.48 wrote, a remote one.
  printf '%s' '{"files":[],"version":3,"replication":"","bytesOffset":5,"datFileSize":"0","expireAtSec":"1795601502","readOnly":false,"ecShardConfig":null,"readOnlyCanDelete":false}' |
    seed vif_parse weed
  printf '%s' '{"bytesOffset":"4","files":[{"backendName":"s3"}]}' | seed vif_parse remote
}

write_seeds
[ "$SEEDS_ONLY" = 1 ] && exit 0

if ! .tools/bin/cargo-fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $CARGO_FUZZ_VERSION"; then
  echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION into .tools/"
  cargo install --quiet --locked --root "$root/.tools" cargo-fuzz --version "$CARGO_FUZZ_VERSION" \
    >/dev/null 2>&1 || { echo "fuzz: cargo install cargo-fuzz $CARGO_FUZZ_VERSION failed" >&2; exit 2; }
fi

export RUSTC_BOOTSTRAP=1
mkdir -p target
time="${FUZZ_TIME:-60}"
for t in "${targets[@]}"; do
  echo "fuzz: $t for ${time}s"
  # shellcheck disable=SC2086
  if ! .tools/bin/cargo-fuzz run "$t" -- -max_total_time="$time" ${FUZZ_ARGS:-} \
    2>"target/fuzz-$t.log"; then
    tail -n 40 "target/fuzz-$t.log" >&2
    echo "fuzz: $t FAILED (full log: target/fuzz-$t.log; input in fuzz/artifacts/$t/)" >&2
    exit 1
  fi
  grep -E '^#[0-9]+[[:space:]]+DONE|^Done [0-9]+ runs' "target/fuzz-$t.log" | sed "s/^/fuzz: $t: /"
done

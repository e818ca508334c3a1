#!/usr/bin/env bash
# swucx vs ucx_perftest, measured in the same run with the same UCX environment.
#
#   scripts/bench.sh [--quick] [--reps N] [--no-build] [--ucx VERSION]
#
# --ucx VERSION: the same against another UCX release (the libucx-cu12 wheel, built by
# scripts/compat.sh --build-only): swucx's Rust ping-pong built against it and that release's
# ucx_perftest; the C and Go rows are left out (their binaries link the system UCX's build).
# Written to target/bench/ucx-VERSION/.
#
# For each transport (shm, tcp) it measures, N reps (default 3) of each cell, each comparison's two
# runs back to back; the table shows the medians and the median of the per-rep ratios:
#   - 8 B latency, tag (ucx_perftest -t tag_lat) and AM (-t ucp_am_lat) vs pingpong (inline);
#   - AM bandwidth, window 32, 64 KiB and 1 MiB (-t ucp_am_bw) vs pingpong --mode bw;
# (inline swucx uses Worker::new_serialized, perftest its default single thread mode), plus the
# shm latency cells with MULTI-threaded workers on both sides (Worker::new, perftest -M multi),
# and the Engine front's 8 B tag latency over shm vs inline (and vs the hand-off design it
# replaced). Per transport, the C ping-pong (examples/c/pingpong.c, client and server) is measured
# against the Rust one (inline, client and server) in the same reps: 8 B tag and AM latency
# (target C <= 1.05x Rust) and AM bandwidth 1 MiB window 32 (target C >= 0.97x Rust), and the
# Go ping-pong (examples/go/pingpong, client and server; it always waits through its Engine;
# --cpu binds the thread of the goroutine that drives the run, and in bandwidth runs every
# thread of the process) against the C one in the same reps: 8 B tag and AM latency (target
# Go <= C + 0.5 us over shm, + 1 us over tcp) and AM bandwidth 1 MiB window 32 (target Go >=
# 0.95x C), plus the Go process's idle CPU with an open connection over shm (< 1% of a core).
# Latency is one-way (RTT/2) p50 in us; bandwidth is GB/s (1e9 B/s) at the sender. Servers are
# pinned to CPU 0, clients to CPU 1.
# Both tools use peer error handling (swucx always does; ucx_perftest gets -e) and swucx's
# default UCX settings (exported below so ucx_perftest sees them too).
#
# Prints a markdown table and writes it to target/bench/results.md; logs go to target/bench/logs.
# Exit status: 0 when every measurement ran (targets missed are reported, not fatal), 1 if a
# measurement failed, 2 on a setup error.
set -uo pipefail

cd "$(dirname "$0")/.."
QUICK=0
REPS=3
BUILD=1
UCX_REL=
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1; REPS=1 ;;
    --reps) REPS="$2"; shift ;;
    --no-build) BUILD=0 ;;
    --ucx) UCX_REL="$2"; shift ;;
    -h|--help) sed -n '2,/^set /{/^set /!p}' "$0"; exit 0 ;;
    *) echo "bench: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

PERFTEST=${UCX_PERFTEST:-ucx_perftest}
UCX_INFO=ucx_info
PP=target/release/examples/pingpong
PPC=target/examples/pingpong-c
PPG=target/examples/pingpong-go
OUT=target/bench
# 1 when only the Rust ping-pong is measured (--ucx).
CORE_ONLY=0
if [ -n "$UCX_REL" ]; then
  ucx=$(scripts/compat.sh --build-only "$UCX_REL" | tail -1) && [ -d "$ucx" ] \
    || { echo "bench: building against UCX $UCX_REL failed" >&2; exit 2; }
  export LD_LIBRARY_PATH="$ucx/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  PERFTEST=$ucx/bin/ucx_perftest
  UCX_INFO=$ucx/bin/ucx_info
  PP=target/ucx-$UCX_REL/release/examples/pingpong
  OUT=target/bench/ucx-$UCX_REL
  CORE_ONLY=1
  BUILD=0
fi
# swucx's defaults for UCX >= 1.16 (protocols v2), given to ucx_perftest too (src/context.rs).
V2=0
if [ -n "$UCX_REL" ] && [ "$(printf '1.16\n%s\n' "$UCX_REL" | sort -V | head -1)" = 1.16 ]; then V2=1; fi
LOGS=$OUT/logs
mkdir -p "$LOGS"
rm -f "$LOGS"/*.log "$LOGS/.runs"

command -v "$PERFTEST" >/dev/null || { echo "bench: $PERFTEST not found (apt install ucx-utils)" >&2; exit 2; }
if [ "$BUILD" = 1 ]; then
  cargo build --release --examples -q || { echo "bench: build failed" >&2; exit 2; }
  make -s examples >/dev/null || { echo "bench: C example build failed" >&2; exit 2; }
fi
[ -x "$PP" ] || { echo "bench: $PP missing" >&2; exit 2; }
if [ "$CORE_ONLY" = 0 ]; then
  [ -x "$PPC" ] || { echo "bench: $PPC missing (make examples)" >&2; exit 2; }
  [ -x "$PPG" ] || { echo "bench: $PPG missing (make examples)" >&2; exit 2; }
fi

# Iteration counts (measured / warm-up).
if [ "$QUICK" = 1 ]; then
  LAT_SHM=(20000 2000); LAT_TCP=(5000 500); BW_64K=(5000 500); BW_1M=(500 50)
else
  LAT_SHM=(200000 20000); LAT_TCP=(50000 5000); BW_64K=(50000 5000); BW_1M=(5000 500)
fi

# swucx's default UCX settings (DEFAULT_CONFIG), for both tools.
export UCX_POSIX_ERROR_HANDLING=y UCX_SYSV_ERROR_HANDLING=y UCX_KEEPALIVE_INTERVAL=500ms
# (the shm settings are unused over tcp; do not warn about it in every log)
export UCX_WARN_UNUSED_ENV_VARS=n
unset UCX_TLS UCX_NET_DEVICES UCX_TCP_PUT_ENABLE UCX_ZCOPY_THRESH UCX_RNDV_SCHEME

if [ "$(nproc)" -ge 2 ]; then
  SCPU=(-c 0); CCPU=(-c 1); PSCPU=(--cpu 0); PCCPU=(--cpu 1)
else
  SCPU=(); CCPU=(); PSCPU=(); PCCPU=()
fi

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A TCP port in 20000-40000 that nothing listens on and that can be bound.
free_port() {
  local port
  for _ in $(seq 50); do
    port=$((20000 + RANDOM % 20000))
    if ss -Htln "sport = :$port" 2>/dev/null | grep -q .; then continue; fi
    if python3 -c "import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', int(sys.argv[1])))" "$port" 2>/dev/null; then
      echo "$port"; return 0
    fi
  done
  return 1
}

# Waits until something listens on $1 (and process $2 is alive), up to 10 s.
wait_listen() {
  for _ in $(seq 200); do
    kill -0 "$2" 2>/dev/null || return 1
    ss -Htln "sport = :$1" 2>/dev/null | grep -q . && return 0
    sleep 0.05
  done
  return 1
}

FAILED=0
# Numbers each run's log (the measuring functions run in $(...) subshells, hence a file).
next_run() {
  local n
  n=$(( $(cat "$LOGS/.runs" 2>/dev/null || echo 0) + 1 ))
  echo "$n" >"$LOGS/.runs"
  echo "$n"
}
PT_EXTRA=()
SW_EXTRA=()
SRV_EXTRA=()

# perftest TEST SIZE ITERS WARMUP KIND(lat|bw) -> prints p50 one-way us, or GB/s.
perftest() {
  local test=$1 size=$2 iters=$3 warmup=$4 kind=$5 port spid log
  log="$LOGS/$(next_run)-perftest-$test-$size${PT_EXTRA[*]:+-multi}.log"
  port=$(free_port) || { echo "no free port" >"$log"; echo ERR; return; }
  echo "env: $(env | grep ^UCX_ | sort | tr '\n' ' ')" >"$log"
  timeout 120 "$PERFTEST" -p "$port" "${SCPU[@]}" >"$log.server" 2>&1 &
  spid=$!
  PIDS+=("$spid")
  if ! wait_listen "$port" "$spid"; then
    echo "server did not start" >>"$log"; kill "$spid" 2>/dev/null; echo ERR; return
  fi
  timeout 120 "$PERFTEST" 127.0.0.1 -p "$port" "${CCPU[@]}" -t "$test" -s "$size" -n "$iters" \
    -w "$warmup" -e "${PT_EXTRA[@]}" >>"$log" 2>&1
  local rc=$?
  wait "$spid" 2>/dev/null
  cat "$log.server" >>"$log"; rm -f "$log.server"
  local final
  final=$(grep -E '^Final:' "$log" | tail -1)
  if [ $rc -ne 0 ] || [ -z "$final" ]; then echo ERR; return; fi
  # Final: iters p50_lat avg_lat overall_lat bw_avg bw_overall(MiB/s) rate_avg rate_overall
  if [ "$kind" = lat ]; then
    awk '{print $3}' <<<"$final"
  else
    awk '{printf "%.3f\n", $7 * 1048576 / 1e9}' <<<"$final"
  fi
}

# swucx PORT KIND ARGS... -> prints lat_us_p50 or gbps from the client's RESULT line.
swucx() {
  local port=$1 kind=$2 log line key
  shift 2
  local bin=${CLIENT_BIN:-$PP}
  local name=swucx
  case $bin in "$PPC") name=swucx-c ;; "$PPG") name=swucx-go ;; esac
  log="$LOGS/$(next_run)-$name-$(tr ' ' '_' <<<"${SW_EXTRA[*]} $*" | tr -d -- '-').log"
  echo "env: $(env | grep ^UCX_ | sort | tr '\n' ' ')" >"$log"
  timeout 120 "$bin" --connect "127.0.0.1:$port" "${PCCPU[@]}" "${SW_EXTRA[@]}" "$@" >>"$log" 2>&1
  local rc=$?
  line=$(grep -E '^RESULT ' "$log" | tail -1)
  if [ $rc -ne 0 ] || [ -z "$line" ]; then echo ERR; return; fi
  case $kind in lat) key=lat_us_p50 ;; idle) key=idle_cpu_pct ;; *) key=gbps ;; esac
  tr ' ' '\n' <<<"$line" | sed -n "s/^$key=//p"
}

# other_client BIN PORT KIND ARGS...: `swucx` with the C or Go ping-pong as the client; "-"
# (nothing measured) when only the Rust ping-pong is (--ucx).
other_client() {
  local bin=$1 port=$2
  shift 2
  if [ "$CORE_ONLY" = 1 ]; then echo -; return; fi
  CLIENT_BIN=$bin swucx "$port" "$@"
}

# Starts a pingpong server with the current environment; sets SW_PORT and SW_PID.
start_server() {
  SW_PORT=$(free_port) || { echo "bench: no free port" >&2; exit 2; }
  timeout 1800 "${SERVER_BIN:-$PP}" --server --listen "127.0.0.1:$SW_PORT" "${PSCPU[@]}" "${SRV_EXTRA[@]}" \
    >"$LOGS/server-$1.log" 2>&1 &
  SW_PID=$!
  PIDS+=("$SW_PID")
  wait_listen "$SW_PORT" "$SW_PID" || { echo "bench: pingpong server did not start (see $LOGS/server-$1.log)" >&2; exit 2; }
}

stop_server() {
  kill "$SW_PID" 2>/dev/null || true
  wait "$SW_PID" 2>/dev/null || true
}

median() { # values... (ERR if any failed)
  local v
  for v in "$@"; do [ "$v" = ERR ] && { echo ERR; return; }; done
  printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

ROWS=()
# pairwise OP "REFS" "SUBJECTS" -> the median over reps of subject/ref (OP=ratio) or
# subject-ref (OP=diff), each rep's pair measured back to back (ERR if any failed).
pairwise() {
  local op=$1 v
  for v in $2 $3; do [ "$v" = ERR ] && { echo ERR; return; }; done
  # shellcheck disable=SC2086
  median $(paste -d' ' <(tr ' ' '\n' <<<"$2") <(tr ' ' '\n' <<<"$3") |
    awk -v op="$op" '{printf "%.6f\n", (op == "ratio") ? $2 / $1 : $2 - $1}')
}

# row CELL TRANSPORT "REFS" "SUBJECTS" KIND: one table row. The value columns are the medians
# over reps; the ratio (or difference) and the verdict come from the median of the per-rep
# ratios (differences), so that a rep whose pair ran in one of the VM's slow spells counts as
# one rep, not as a slow reference against a fast subject.
row() {
  local cell=$1 tl=$2 refs=$3 subs=$4 kind=$5 ref sw ratio target verdict cmp lim fmt op=ratio
  # shellcheck disable=SC2086
  ref=$(median $refs)
  # shellcheck disable=SC2086
  sw=$(median $subs)
  case $kind in
    lat) target="<= 1.15x"; cmp="<="; lim=1.15 ;;
    clat) target="<= 1.05x"; cmp="<="; lim=1.05 ;;
    cbw) target=">= 0.97x"; cmp=">="; lim=0.97 ;;
    bw) target=">= 0.95x"; cmp=">="; lim=0.95 ;;
    front|golat1) target="<= +1 us"; cmp="<="; lim=1.0; op=diff ;;
    golat05) target="<= +0.5 us"; cmp="<="; lim=0.5; op=diff ;;
    info) target="(reference, not a target)"; op=diff ;;
    rinfo) target="(reference, not a target)" ;;
  esac
  local r
  r=$(pairwise "$op" "$refs" "$subs")
  if [ "$r" = ERR ]; then
    ratio=-; verdict=ERROR; FAILED=1
  else
    if [ "$op" = ratio ]; then fmt="%.3fx"; else fmt="%+.2f us"; fi
    ratio=$(awk -v a="$r" -v f="$fmt" 'BEGIN{printf f, a}')
    if [ -z "${cmp:-}" ]; then verdict="-"
    else verdict=$(awk -v a="$r" -v c="$cmp" -v l="$lim" 'BEGIN{ok = (c == "<=") ? a <= l : a >= l; print ok ? "pass" : "FAIL"}')
    fi
  fi
  ROWS+=("| $cell | $tl | $ref | $sw | $ratio | $target | $verdict |")
  echo "  $cell [$tl]: ucx_perftest=$ref swucx=$sw ratio=$ratio ($verdict)" >&2
}

# One transport block: the four cells against ucx_perftest.
measure_transport() {
  local tl=$1 lat_n=$2 lat_w=$3
  local r a b c d
  local -a pt_tag sw_tag pt_am sw_am pt_64 sw_64 pt_1m sw_1m c_tag c_am c_1m cf_1m g_tag g_am g_1m
  local c_port c_pid g_port g_pid
  # The C and Go servers next to the Rust one (each client talks to its own language's server).
  if [ "$CORE_ONLY" = 0 ]; then
    SERVER_BIN=$PPC start_server "$tl-c"
    c_port=$SW_PORT; c_pid=$SW_PID
    SERVER_BIN=$PPG start_server "$tl-go"
    g_port=$SW_PORT; g_pid=$SW_PID
  fi
  start_server "$tl"
  echo "== $tl ($(env | grep -E '^UCX_(TLS|NET_DEVICES|TCP_PUT_ENABLE|ZCOPY_THRESH|RNDV_SCHEME)=' | tr '\n' ' '))" >&2
  for r in $(seq "$REPS"); do
    # Each comparison's pair runs back to back (the table takes the median of per-rep ratios).
    pt_tag+=("$(perftest tag_lat 8 "$lat_n" "$lat_w" lat)")
    sw_tag+=("$(swucx "$SW_PORT" lat --api tag --mode lat --size 8 --iters "$lat_n" --warmup "$lat_w")")
    c_tag+=("$(other_client "$PPC" "${c_port:-}" lat --api tag --mode lat --size 8 --iters "$lat_n" --warmup "$lat_w")")
    g_tag+=("$(other_client "$PPG" "${g_port:-}" lat --api tag --mode lat --size 8 --iters "$lat_n" --warmup "$lat_w")")
    pt_am+=("$(perftest ucp_am_lat 8 "$lat_n" "$lat_w" lat)")
    sw_am+=("$(swucx "$SW_PORT" lat --api am --mode lat --size 8 --iters "$lat_n" --warmup "$lat_w")")
    c_am+=("$(other_client "$PPC" "${c_port:-}" lat --api am --mode lat --size 8 --iters "$lat_n" --warmup "$lat_w")")
    g_am+=("$(other_client "$PPG" "${g_port:-}" lat --api am --mode lat --size 8 --iters "$lat_n" --warmup "$lat_w")")
    pt_64+=("$(perftest ucp_am_bw 65536 "${BW_64K[0]}" "${BW_64K[1]}" bw)")
    sw_64+=("$(swucx "$SW_PORT" bw --api am --mode bw --size 65536 --iters "${BW_64K[0]}" --warmup "${BW_64K[1]}" --window 32)")
    pt_1m+=("$(perftest ucp_am_bw 1048576 "${BW_1M[0]}" "${BW_1M[1]}" bw)")
    sw_1m+=("$(swucx "$SW_PORT" bw --api am --mode bw --size 1048576 --iters "${BW_1M[0]}" --warmup "${BW_1M[1]}" --window 32)")
    c_1m+=("$(other_client "$PPC" "${c_port:-}" bw --api am --mode bw --size 1048576 --iters "${BW_1M[0]}" --warmup "${BW_1M[1]}" --window 32)")
    g_1m+=("$(other_client "$PPG" "${g_port:-}" bw --api am --mode bw --size 1048576 --iters "${BW_1M[0]}" --warmup "${BW_1M[1]}" --window 32)")
    # The C client through the Engine (as the Go one always is): splits the Go row's gap into
    # the Engine's part and the Go binding's.
    cf_1m+=("$(other_client "$PPC" "${c_port:-}" bw --api am --mode bw --size 1048576 --iters "${BW_1M[0]}" --warmup "${BW_1M[1]}" --window 32 --front)")
    echo "  rep $r: tag_lat ${pt_tag[-1]}/${sw_tag[-1]} am_lat ${pt_am[-1]}/${sw_am[-1]}" \
      "am_bw64K ${pt_64[-1]}/${sw_64[-1]} am_bw1M ${pt_1m[-1]}/${sw_1m[-1]}" \
      "C: tag_lat ${c_tag[-1]} am_lat ${c_am[-1]} am_bw1M ${c_1m[-1]} (front ${cf_1m[-1]})" \
      "Go: tag_lat ${g_tag[-1]} am_lat ${g_am[-1]} am_bw1M ${g_1m[-1]}" >&2
  done
  if [ "$tl" = shm ] && [ "$CORE_ONLY" = 0 ]; then
    # A Go process with an open connection and nothing to do (two goroutines blocked in
    # cancellable waits on it).
    GO_IDLE=$(CLIENT_BIN=$PPG swucx "$g_port" idle --api am --mode lat --size 8 --iters 1000 --front --idle-secs "$IDLE_SECS")
    echo "  Go idle: ${GO_IDLE}% of a core over ${IDLE_SECS}s" >&2
  fi
  stop_server
  row "tag_lat 8 B (us)" "$tl" "${pt_tag[*]}" "${sw_tag[*]}" lat
  row "am_lat 8 B (us)" "$tl" "${pt_am[*]}" "${sw_am[*]}" lat
  row "am_bw 64 KiB w32 (GB/s)" "$tl" "${pt_64[*]}" "${sw_64[*]}" bw
  row "am_bw 1 MiB w32 (GB/s)" "$tl" "${pt_1m[*]}" "${sw_1m[*]}" bw
  [ "$CORE_ONLY" = 1 ] && return
  SW_PID=$c_pid stop_server
  SW_PID=$g_pid stop_server
  row "C pingpong tag_lat 8 B (us; perftest column = Rust inline)" "$tl" "${sw_tag[*]}" "${c_tag[*]}" clat
  row "C pingpong am_lat 8 B (us; perftest column = Rust inline)" "$tl" "${sw_am[*]}" "${c_am[*]}" clat
  row "C pingpong am_bw 1 MiB w32 (GB/s; perftest column = Rust inline)" "$tl" "${sw_1m[*]}" "${c_1m[*]}" cbw
  local golat=golat1
  [ "$tl" = shm ] && golat=golat05
  row "Go pingpong tag_lat 8 B (us; perftest column = C pingpong)" "$tl" "${c_tag[*]}" "${g_tag[*]}" "$golat"
  row "Go pingpong am_lat 8 B (us; perftest column = C pingpong)" "$tl" "${c_am[*]}" "${g_am[*]}" "$golat"
  row "Go pingpong am_bw 1 MiB w32 (GB/s; perftest column = C pingpong)" "$tl" "${c_1m[*]}" "${g_1m[*]}" bw
  row "C pingpong --front am_bw 1 MiB w32 (GB/s; perftest column = C inline: the Engine's part)" "$tl" "${c_1m[*]}" "${cf_1m[*]}" rinfo
  row "Go pingpong am_bw 1 MiB w32 (GB/s; perftest column = C --front: the Go binding's part)" "$tl" "${cf_1m[*]}" "${g_1m[*]}" rinfo
}

START=$(date +%s)
SHM_TLS=posix,sysv,cma,self,tcp
IDLE_SECS=$([ "$QUICK" = 1 ] && echo 2 || echo 5)
GO_IDLE=ERR

# swucx's shm-only default (tcp put zero-copy off), for both tools.
export UCX_TLS=$SHM_TLS UCX_TCP_PUT_ENABLE=n
if [ "$V2" = 1 ]; then export UCX_ZCOPY_THRESH=8k; fi
measure_transport shm "${LAT_SHM[@]}"

# The Engine front vs inline, 8 B tag latency over shm (both swucx, same server).
start_server shm-front
echo "== shm front vs inline" >&2
inl=(); fr=(); ho=()
for r in $(seq "$REPS"); do
  inl+=("$(swucx "$SW_PORT" lat --api tag --mode lat --size 8 --iters "${LAT_SHM[0]}" --warmup "${LAT_SHM[1]}")")
  fr+=("$(swucx "$SW_PORT" lat --api tag --mode lat --size 8 --iters "${LAT_SHM[0]}" --warmup "${LAT_SHM[1]}" --front)")
  # The design the front replaced: every wait handed to the sleeping progress thread.
  ho+=("$(swucx "$SW_PORT" lat --api tag --mode lat --size 8 --iters "${LAT_TCP[0]}" --warmup "${LAT_TCP[1]}" --front --front-spin-us 0)")
  echo "  rep $r: inline ${inl[-1]} front ${fr[-1]} hand-off ${ho[-1]}" >&2
done
# Idle cost of the front: an open connection and nothing to do.
idle=$(swucx "$SW_PORT" idle --api am --mode lat --size 8 --iters 1000 --front --idle-secs "$IDLE_SECS")
echo "  idle: ${idle}% of a core over ${IDLE_SECS}s" >&2
stop_server
FRONT_ROW=("front tag_lat 8 B (us; perftest column = swucx inline)" shm "${inl[*]}" "${fr[*]}" front)
HANDOFF_ROW=("design alternative: hand-off to progress thread, tag_lat 8 B (us; vs inline)" shm "${inl[*]}" "${ho[*]}" info)

# What UCX's MULTI thread mode costs (swucx's default workers and the Engine use it):
# the same cells with MULTI workers on both sides.
SRV_EXTRA=(--multi)
start_server "shm-multi"
SRV_EXTRA=()
echo "== shm, MULTI-threaded workers on both sides: ucx_perftest -M multi, pingpong --multi" >&2
PT_EXTRA=(-M multi)
SW_EXTRA=(--multi)
pt_tag=(); sw_tag=(); pt_am=(); sw_am=()
for r in $(seq "$REPS"); do
  pt_tag+=("$(perftest tag_lat 8 "${LAT_SHM[@]}" lat)")
  sw_tag+=("$(swucx "$SW_PORT" lat --api tag --mode lat --size 8 --iters "${LAT_SHM[0]}" --warmup "${LAT_SHM[1]}")")
  pt_am+=("$(perftest ucp_am_lat 8 "${LAT_SHM[@]}" lat)")
  sw_am+=("$(swucx "$SW_PORT" lat --api am --mode lat --size 8 --iters "${LAT_SHM[0]}" --warmup "${LAT_SHM[1]}")")
  echo "  rep $r: tag_lat ${pt_tag[-1]}/${sw_tag[-1]} am_lat ${pt_am[-1]}/${sw_am[-1]}" >&2
done
PT_EXTRA=()
SW_EXTRA=()
stop_server
row "tag_lat 8 B (us), MULTI workers (perftest -M multi, swucx Worker::new)" shm "${pt_tag[*]}" "${sw_tag[*]}" lat
row "am_lat 8 B (us), MULTI workers (perftest -M multi, swucx Worker::new)" shm "${pt_am[*]}" "${sw_am[*]}" lat

unset UCX_TCP_PUT_ENABLE
export UCX_TLS=tcp,self UCX_NET_DEVICES=lo
if [ "$V2" = 1 ]; then export UCX_RNDV_SCHEME=put_zcopy; fi
measure_transport tcp "${LAT_TCP[@]}"
unset UCX_TLS UCX_NET_DEVICES

row "${FRONT_ROW[@]}"
row "${HANDOFF_ROW[@]}"
if [ "$idle" = ERR ]; then FAILED=1; fi
ROWS+=("| front idle CPU, open connection, ${IDLE_SECS} s (% of one core) | shm | - | $idle | - | ~0 | $(awk -v a="$idle" 'BEGIN{print (a < 1.0) ? "pass" : "FAIL"}') |")
if [ "$CORE_ONLY" = 0 ]; then
  if [ "$GO_IDLE" = ERR ]; then FAILED=1; fi
  ROWS+=("| Go idle CPU, open connection, 2 goroutines in cancellable waits, ${IDLE_SECS} s (% of one core) | shm | - | $GO_IDLE | - | < 1% | $(awk -v a="$GO_IDLE" 'BEGIN{print (a != "ERR" && a < 1.0) ? "pass" : "FAIL"}') |")
fi
ELAPSED=$(( $(date +%s) - START ))

{
  echo "## swucx vs ucx_perftest ($(date -u +%Y-%m-%dT%H:%MZ), UCX $("$UCX_INFO" -v 2>/dev/null | sed -n -e "s/^# Version //p" -e "s/^# Library version: //p"), $(nproc) CPUs)"
  echo
  echo "Median of $REPS per cell$([ "$QUICK" = 1 ] && echo ' (--quick)'), run in ${ELAPSED}s; the ratio (difference) is the median of the"
  echo "$REPS per-rep ratios (differences), each rep's pair measured back to back. Latency: one-way (RTT/2) p50 in us;"
  echo "bandwidth: GB/s (1e9 B/s) at the sender. shm: UCX_TLS=$SHM_TLS; tcp: UCX_TLS=tcp,self"
  echo "UCX_NET_DEVICES=lo. Both tools: peer error handling (perftest -e), UCX_POSIX_ERROR_HANDLING=y"
  echo "UCX_SYSV_ERROR_HANDLING=y UCX_KEEPALIVE_INTERVAL=500ms (and UCX_TCP_PUT_ENABLE=n over shm), as swucx's"
  if [ "$V2" = 1 ]; then
    echo "defaults, and for UCX >= 1.16 UCX_ZCOPY_THRESH=8k (and UCX_RNDV_SCHEME=put_zcopy over tcp), also swucx's"
  fi
  echo "defaults; servers on CPU 0, clients on CPU 1;"
  if [ "$CORE_ONLY" = 1 ]; then
    echo "swucx (the Rust ping-pong alone) busy-polls inline unless the row says front. Logs: $LOGS."
  else
    echo "swucx busy-polls inline unless the row says front; the Go ping-pong always waits through its Engine"
    echo "and its --cpu binds its driving goroutine's thread, in bandwidth runs every thread of the process"
    echo "(in latency runs the engine's and the runtime's other threads keep every CPU). Logs: $LOGS."
  fi
  echo
  echo "| cell | transport | ucx_perftest | swucx | ratio | target | pass/fail |"
  echo "|---|---|---|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
} >"$OUT/results.md"

echo
cat "$OUT/results.md"
exit "$FAILED"

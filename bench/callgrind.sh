#!/usr/bin/env bash
# User-space instructions per close of `ringlinger serve` (the manager plus serve's own HTTP
# work), counted by callgrind: two runs that differ only in the number of connections, so the
# difference divided by the extra connections leaves out start-up and exit.
#
#   bench/callgrind.sh [BACKEND] [RESPONSE] [BODY]     # defaults: uring 16KiB 64KiB
#   SERVE_ARGS="--head-timeout 0" bench/callgrind.sh   # extra flags for serve
#   EXE=build-cg/cli/ringlinger bench/callgrind.sh      # another build (default build/)
#   FLOOR=/tmp/floorserve bench/callgrind.sh           # the floor server instead of serve
#                                                        # (bench/floor/build.sh builds it)
#   FLOOR=/tmp/floorserve FLOOR_ARGS=mshot-drain bench/callgrind.sh   # one of its variants
#   KEEP=1 TOP=40 bench/callgrind.sh                    # keep the runs; 40 rows in the table
# Prints the total per close, then the instructions per close of each function and the loop
# steps per close (bench/callgrind_table.py, which also compares two kept runs; the total moves
# with the steps, each some 600-700 instructions: compare runs at similar step counts).
# Needs valgrind and a build.
set -euo pipefail
cd "$(dirname "$0")/.."
backend=${1:-uring}
response=${2:-16KiB}
body=${3:-64KiB}
ringlinger=${EXE:-build/cli/ringlinger}
command -v valgrind >/dev/null || { echo "callgrind.sh: apt-get install valgrind" >&2; exit 2; }
command -v ss >/dev/null || { echo "callgrind.sh: apt-get install iproute2" >&2; exit 2; }
[[ -x $ringlinger ]] || { echo "callgrind.sh: build first (tools/test)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
[[ -n ${KEEP:-} ]] && trap - EXIT && echo "keeping $work" >&2

count() {  # CONNECTIONS -> total instructions (Ir) of the server process
  local connections=$1 out=$work/callgrind.$1
  # A free port chosen here, and the listening socket seen in the kernel's table (ss), not in
  # serve's "listening on" line: under valgrind that line can wait minutes. An idle manager
  # thread sits in io_uring_enter, which valgrind does not treat as a blocking call, so the
  # thread keeps valgrind's big lock through each 250 ms wait and takes it straight back, until
  # its scheduling quantum (100000 basic blocks) runs out; the main thread, which prints the
  # line, waits for the lock all that time (--fair-sched=yes does not help: the lock is never
  # released). Traffic makes the manager thread use up its quantum, and the line comes.
  local port
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  local serve_args server_command
  read -ra serve_args <<<"${SERVE_ARGS:-}"  # split on blanks, as the flags are written
  server_command=("$ringlinger" serve --listen "127.0.0.1:$port" --backend "$backend"
                  --response-bytes "$response" --quiet "${serve_args[@]}")
  local floor_args
  read -ra floor_args <<<"${FLOOR_ARGS:-}"
  [[ -n ${FLOOR:-} ]] &&
    server_command=("$FLOOR" "$port" "$(numfmt --from=iec-i "${response%B}")" "${floor_args[@]}")
  valgrind --tool=callgrind --callgrind-out-file="$out" -q "${server_command[@]}" \
    >"$work/serve.$connections" 2>&1 &
  local server=$!
  local address=""
  for _ in $(seq 300); do
    ss -Hltn "sport = :$port" | grep -q LISTEN && address=127.0.0.1:$port && break
    kill -0 "$server" 2>/dev/null || break
    sleep 0.1
  done
  [[ -n $address ]] || { echo "callgrind.sh: serve did not start" >&2; cat "$work/serve.$connections" >&2; kill -9 "$server" 2>/dev/null; exit 1; }
  "$ringlinger" client --connect "$address" --connections "$connections" --concurrency 50 \
    --response-bytes "$response" --body-bytes "$body" --timeout 60s >"$work/client.$connections"
  grep -q " 0 failed" "$work/client.$connections" ||
    { echo "callgrind.sh: connections failed:" >&2; cat "$work/client.$connections" >&2; exit 1; }
  # Under valgrind serve does not see SIGINT while it waits in io_uring_enter (valgrind does not
  # treat the call as blocking), so the counters are dumped on request, then the server killed.
  callgrind_control -d "$server" >/dev/null
  for _ in $(seq 100); do
    [[ -s $out.1 ]] && grep -q '^totals:' "$out.1" && break
    sleep 0.1
  done
  kill -9 "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  grep '^totals:' "$out.1" | awk '{print $2}'
}

small=1000
large=3000
ir_small=$(count $small)
ir_large=$(count $large)
per_close=$(( (ir_large - ir_small) / (large - small) ))
echo "${FLOOR:+$FLOOR (the floor), }backend $backend, response $response, body $body: $ir_small instructions for $small closes, $ir_large for $large"
echo "user-space instructions per close: $per_close"
echo "where they go (self instructions per close: the $large-connection run minus the $small-connection one):"
bench/callgrind_table.py --top "${TOP:-25}" "$work"

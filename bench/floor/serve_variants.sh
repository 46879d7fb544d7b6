#!/usr/bin/env bash
# CPU per close of the floor server's variants (bench/floor/floorserve.c: the close without a
# completion, the shutdown in the ring, direct descriptors) and of `ringlinger serve`, in the same
# run, alternating server by server: each server on CPU 0, `ringlinger client` on CPU 1 (16 KiB
# response, 64 KiB unread body, every byte and a clean EOF checked). CPU = utime + stime of the
# server's process from /proc/PID/stat around each client run; system calls are not counted.
#
#   bench/floor/serve_variants.sh [RUNS] [CONNECTIONS] [CONCURRENCY]   defaults: 3 60000 1000
# SERVERS: which to run (default "serve floor floor:skip-close floor:ring-shutdown floor:direct
# floor:direct,skip-close"); floor:A,B passes the variants A and B; serve:ring-shutdown is serve
# --shutdown ring; EXE: ringlinger binary (default build/cli/ringlinger); SERVE_ARGS: extra flags
# for serve. The client spreads its connections over 127.0.0.2-127.0.0.9 (past one address's
# ephemeral ports). The CPU figure comes in 10 ms ticks: 60000 closes of ~20 us are ~120 ticks.
# Prints one line per run, then the medians and each one's ratio to the first server's median.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-3}
connections=${2:-60000}
concurrency=${3:-1000}
exe=${EXE:-build/cli/ringlinger}
servers=${SERVERS:-serve floor floor:skip-close floor:ring-shutdown floor:direct floor:direct,skip-close}
[[ -x $exe ]] || { echo "serve_variants.sh: build first (tools/test)" >&2; exit 2; }
source bench/proxy_lib.sh  # free_port, wait_port, user_system_ticks
work=$(mktemp -d)
server_pid=""
cleanup() {
  [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
bench/floor/build.sh "$work"
ticks=$(getconf CLK_TCK)

start_server() {  # SERVER PORT: starts it on CPU 0, sets server_pid, waits for its port
  local server=$1 port=$2 serve_args
  read -ra serve_args <<<"${SERVE_ARGS:-}"
  if [[ $server == serve* ]]; then
    [[ $server == serve:ring-shutdown ]] && serve_args+=(--shutdown ring)
    taskset -c 0 "$exe" serve --listen "127.0.0.1:$port" --response-bytes 16KiB --quiet \
      "${serve_args[@]}" >"$work/server.log" 2>&1 &
  else
    local variants=${server#floor} variant_args
    variants=${variants#:}
    IFS=, read -ra variant_args <<<"$variants"
    taskset -c 0 "$work/floorserve" "$port" 16384 "${variant_args[@]}" >"$work/server.log" 2>&1 &
  fi
  server_pid=$!
  wait_port "$server" "$port" || { cat "$work/server.log" >&2; exit 1; }
}

declare -A results
for run in $(seq "$runs"); do
  for server in $servers; do
    port=$(free_port)
    start_server "$server" "$port"
    read -r user_before system_before < <(user_system_ticks "$server_pid")
    taskset -c 1 "$exe" client --connect "127.0.0.1:$port" --connections "$connections" \
      --concurrency "$concurrency" --response-bytes 16KiB --body-bytes 64KiB --timeout 60s \
      --source-addrs 127.0.0.2-127.0.0.9 \
      >"$work/client.log" 2>&1 || true
    read -r user_after system_after < <(user_system_ticks "$server_pid")
    kill "$server_pid"
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
    grep -q " 0 failed" "$work/client.log" ||
      { echo "serve_variants.sh: $server: connections failed:" >&2; cat "$work/client.log" >&2; exit 1; }
    user=$((user_after - user_before))
    total=$((user + system_after - system_before))
    us=$(python3 -c "print(f'{$total * 1e6 / $ticks / $connections:.1f}')")
    echo "run $run  $server: $us us CPU per close, $((100 * user / total)) % of it in user space"
    results[$server]+="$us "
  done
done

echo "medians ($runs runs, $connections connections, $concurrency at once):"
first=""
for server in $servers; do
  read -ra figures <<<"${results[$server]}"
  median=$(python3 -c "import statistics, sys; print(statistics.median(map(float, sys.argv[1:])))" "${figures[@]}")
  [[ -z $first ]] && first=$median
  ratio=$(python3 -c "print(f'{$median / $first:.2f}')")
  printf '  %-28s %7s us per close  %sx the first\n' "$server" "$median" "$ratio"
done

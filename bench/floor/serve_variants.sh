#!/usr/bin/env bash
# CPU per close of the floor server's variants (bench/floor/floorserve.c: the close without a
# completion, the shutdown in the ring, direct descriptors) and of `ringlinger serve`, in the same
# run, alternating server by server: each server on CPU 0, `ringlinger client` on CPU 1 (16 KiB
# response, an unread body of BODY bytes, every byte and a clean EOF checked). CPU = utime + stime
# of the server's process from /proc/PID/stat around each client run; system calls are not counted.
#
#   bench/floor/serve_variants.sh [RUNS] [CONNECTIONS] [CONCURRENCY]   defaults: 3 60000 1000
# SERVERS: which to run (default "serve floor floor:skip-close floor:ring-shutdown floor:direct
# floor:direct,skip-close"); floor:A,B passes the variants A and B, serve:A,B too, where
# ring-shutdown is --shutdown ring, blocking is --backend blocking (the loop that target 1 of
# issue 17 compares with: one connection at a time, blocking calls) and no-defer is
# --defer-accept off (floor's defer-accept is serve's default). BODY: the unread request body (default
# 64KiB; `ringlinger bench` sends 16KiB). EXE: ringlinger binary (default build/cli/ringlinger);
# SERVE_ARGS: extra flags for serve. The client spreads its connections over 127.0.0.2-127.0.0.9
# (past one address's ephemeral ports). The CPU figure comes in 10 ms ticks: 60000 closes of ~20 us
# are ~120 ticks. Prints one line per run, then the medians and each one's ratio to the first
# server's median. PERF=1 also records each server with `perf record -e cpu-clock -g` (4000 Hz,
# which adds its own few percent to the CPU figures) and splits its CPU per close into the TCP
# work every server does and the rest (bench/floor/perf_split.py); the medians then include each
# one's work, and its ratio to the first server's whole CPU: what no cut outside the TCP work can
# go below.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-3}
connections=${2:-60000}
concurrency=${3:-1000}
exe=${EXE:-build/cli/ringlinger}
servers=${SERVERS:-serve floor floor:skip-close floor:ring-shutdown floor:direct floor:direct,skip-close}
body=${BODY:-64KiB}
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
    local variant variants
    IFS=, read -ra variants <<<"${server#serve:}"
    [[ $server == serve ]] && variants=()
    for variant in "${variants[@]}"; do
      case $variant in
        ring-shutdown) serve_args+=(--shutdown ring) ;;
        blocking) serve_args+=(--backend blocking) ;;
        no-defer) serve_args+=(--defer-accept off) ;;
        *) echo "serve_variants.sh: unknown serve variant '$variant'" >&2; exit 2 ;;
      esac
    done
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

perf_hz=4000
declare -A results perf_total perf_work
for run in $(seq "$runs"); do
  for server in $servers; do
    port=$(free_port)
    start_server "$server" "$port"
    if [[ -n ${PERF:-} ]]; then
      perf record -q -e cpu-clock -F "$perf_hz" -g -p "$server_pid" -o "$work/perf.data" \
        2>"$work/perf.log" &
      perf_pid=$!
      sleep 0.5  # perf attaches
    fi
    read -r user_before system_before < <(user_system_ticks "$server_pid")
    taskset -c 1 "$exe" client --connect "127.0.0.1:$port" --connections "$connections" \
      --concurrency "$concurrency" --response-bytes 16KiB --body-bytes "$body" --timeout 60s \
      --source-addrs 127.0.0.2-127.0.0.9 \
      >"$work/client.log" 2>&1 || true
    read -r user_after system_after < <(user_system_ticks "$server_pid")
    if [[ -n ${PERF:-} ]]; then
      kill -INT "$perf_pid"
      wait "$perf_pid" || true  # perf exits on SIGINT
      [[ -s $work/perf.data ]] || { cat "$work/perf.log" >&2; exit 1; }
    fi
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
    if [[ -n ${PERF:-} ]]; then
      split=$(bench/floor/perf_split.py "$connections" "$perf_hz" "$work/perf.data")
      echo "$split" | sed 's/^/      /'
      perf_total[$server]+="$(echo "$split" | awk 'NR == 1 { print $2 }') "
      perf_work[$server]+="$(echo "$split" | awk 'NR == 1 { print $4 }') "
    fi
  done
done

median() { python3 -c "import statistics, sys; print(statistics.median(map(float, sys.argv[1:])))" "$@"; }
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
echo "medians ($runs runs, $connections connections, $concurrency at once):"
first="" first_perf=""
for server in $servers; do
  read -ra figures <<<"${results[$server]}"
  median=$(median "${figures[@]}")
  [[ -z $first ]] && first=$median
  printf '  %-28s %7s us per close  %sx the first' "$server" "$median" "$(ratio "$median" "$first")"
  if [[ -n ${PERF:-} ]]; then  # the work against the first's whole CPU, both from perf's samples
    read -ra figures <<<"${perf_total[$server]}"
    total=$(median "${figures[@]}")
    [[ -z $first_perf ]] && first_perf=$total
    read -ra figures <<<"${perf_work[$server]}"
    work_median=$(median "${figures[@]}")
    printf '; perf: %s us, TCP work %s us = %sx the first' "$total" "$work_median" \
      "$(ratio "$work_median" "$first_perf")"
  fi
  echo
done

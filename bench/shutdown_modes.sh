#!/usr/bin/env bash
# Compares the two ways ringlinger issues SHUT_WR: a direct shutdown(2) ("syscall") and
# IORING_OP_SHUTDOWN through the ring ("ring"), on the same workload, runs alternating so the
# comparison holds on a noisy machine. Server pinned to CPU 0, client to CPU 1, over loopback.
# Prints server CPU per close (user + system, io-wq threads included), io_uring_enter calls,
# context switches and io-wq punts (perf tracepoint io_uring:io_uring_queue_async_work) per close.
#
#   bench/shutdown_modes.sh [RUNS] [CONNECTIONS] [CONCURRENCY] [RESPONSE]
# Needs a build in build/ (tools/test or tools/run make one), python3, and perf for the punts.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
connections=${2:-20000}
concurrency=${3:-1000}
response=${4:-16KiB}
exe=build/cli/ringlinger
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

run_one() {  # mode
  local mode=$1
  taskset -c 0 "$exe" serve --listen 127.0.0.1:0 --quiet --json "$work/server.json" \
    --response-bytes "$response" --shutdown "$mode" >"$work/serve.out" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do grep -q "listening on" "$work/serve.out" && break; sleep 0.05; done
  local address
  address=$(grep -o "listening on [0-9.:]*" "$work/serve.out" | awk '{print $3}')
  local perf_pid=""
  if command -v perf >/dev/null; then
    perf stat -x, -e io_uring:io_uring_queue_async_work -p "$pid" -o "$work/perf.txt" &
    perf_pid=$!
    sleep 0.2
  fi
  taskset -c 1 "$exe" client --connect "$address" --connections "$connections" \
    --concurrency "$concurrency" --response-bytes "$response" --json "$work/client.json" >/dev/null
  [ -n "$perf_pid" ] && kill -INT "$perf_pid" && wait "$perf_pid" || true
  kill -TERM "$pid"
  wait "$pid"
  python3 - "$mode" "$work" <<'PY'
import json, os, sys
mode, work = sys.argv[1], sys.argv[2]
server = json.load(open(f"{work}/server.json"))
client = json.load(open(f"{work}/client.json"))
stats, cpu = server["stats"], server["cpu"]
closes = stats["connections_closed"]
punts = "n/a"
if os.path.exists(f"{work}/perf.txt"):
    for line in open(f"{work}/perf.txt"):
        if "io_uring_queue_async_work" in line:
            punts = f"{int(line.split(',')[0]) / closes:.3f}"
switches = cpu["voluntary_context_switches"] + cpu["involuntary_context_switches"]
print(f"{mode:<8} {client['complete']:>6}/{closes:<6} {cpu['user_us']/closes:7.2f} {cpu['system_us']/closes:7.2f} "
      f"{(cpu['user_us']+cpu['system_us'])/closes:7.2f} {stats['enter_calls']/closes:8.3f} "
      f"{switches/closes:8.3f} {punts:>8} {client['connections_per_second']:9.0f}")
PY
}

echo "workload: $connections connections, $concurrency concurrent, $response responses, $runs runs per mode"
echo "mode     complete/closed  user   system  total us  enter/close csw/close punts/close  conn/s"
for _ in $(seq "$runs"); do
  run_one syscall
  run_one ring
done

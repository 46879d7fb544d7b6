#!/usr/bin/env bash
# Sharding: `serve --threads 1` against `serve --threads 2` on the same workload, runs alternating
# so the comparison holds on a noisy machine; prints each run and the medians: closes per second
# (the client's count of verified connections over its elapsed time), server CPU per close
# (user + system of the whole process), the client's CPU per close, how busy the CPUs were, and
# how the connections were split between the threads.
#
#   bench/threads.sh [RUNS] [CONNECTIONS] [CONCURRENCY] [RESPONSE] [PLACEMENT]
#     defaults: 3 runs, 60000 connections, 1000 concurrent, 16KiB responses, pinned
#   PLACEMENT  pinned: --threads 1 on CPU 0; --threads 2 with thread 0 on CPU 0 and thread 1 on
#                      CPU 1; the client always on CPU 1 (with 2 threads it shares that CPU with
#                      the second server thread)
#              cpu0:   the server (every thread) on CPU 0, the client on CPU 1: what a second
#                      ring costs when it brings no CPU with it
#              free:   nothing pinned, the scheduler places everything
# On a 2-CPU machine the client (one thread, one epoll loop) needs about a CPU of its own, so a
# second server thread competes with it: read the figures with that in mind (docs/PERFORMANCE.md).
# Needs a build in build/ (tools/test or tools/run make one), python3 and taskset.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
connections=${2:-60000}
concurrency=${3:-1000}
response=${4:-16KiB}
placement=${5:-pinned}
case "$placement" in pinned | cpu0 | free) ;; *) echo "PLACEMENT must be pinned, cpu0 or free (got $placement)" >&2; exit 2 ;; esac
exe=build/cli/ringlinger
work=$(mktemp -d)
serve_pid=""
cleanup() {
  [ -n "$serve_pid" ] && kill -KILL "$serve_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

run_one() {  # THREADS RUN
  local threads=$1 run=$2
  local serve_cpus="" client_cpus=""
  case "$placement" in
    pinned) serve_cpus=$([ "$threads" = 1 ] && echo 0 || echo 0,1) client_cpus=1 ;;
    cpu0) serve_cpus=0 client_cpus=1 ;;
  esac
  ${serve_cpus:+taskset -c "$serve_cpus"} "$exe" serve --listen 127.0.0.1:0 --threads "$threads" \
    --quiet --json "$work/server.json" --response-bytes "$response" >"$work/serve.out" 2>&1 &
  serve_pid=$!
  for _ in $(seq 200); do grep -q "listening on" "$work/serve.out" && break; sleep 0.05; done
  local address
  address=$(grep -o "listening on [0-9.:]*" "$work/serve.out" | awk '{print $3}')
  [ -n "$address" ] || { cat "$work/serve.out" >&2; exit 1; }
  if [ "$placement" = pinned ] && [ "$threads" -gt 1 ]; then
    # Each shard thread (named ringlinger-sN) on CPU N.
    for task in /proc/"$serve_pid"/task/*; do
      local name
      name=$(cat "$task/comm")
      case "$name" in ringlinger-s*) taskset -pc "${name#ringlinger-s}" "${task##*/}" >/dev/null ;; esac
    done
  fi
  local TIMEFORMAT="%U %S"
  head -1 /proc/stat >"$work/stat.before"
  { time ${client_cpus:+taskset -c "$client_cpus"} "$exe" client --connect "$address" \
      --source-addrs 127.0.0.2-127.0.0.9 --connections "$connections" \
      --concurrency "$concurrency" --response-bytes "$response" --json "$work/client.json" \
      >"$work/client.out"; } 2>"$work/client.time"
  head -1 /proc/stat >"$work/stat.after"
  kill -TERM "$serve_pid"
  wait "$serve_pid"
  serve_pid=""
  python3 - "$threads" "$run" "$work" <<'PY'
import json, os, sys
threads, run, work = sys.argv[1], sys.argv[2], sys.argv[3]
server = json.load(open(f"{work}/server.json"))
client = json.load(open(f"{work}/client.json"))
client_user, client_system = (float(x) for x in open(f"{work}/client.time").read().split()[-2:])
closes = server["stats"]["connections_closed"]
cpu = server["cpu"]
# The whole machine during the client's run (/proc/stat, in clock ticks): how busy every CPU was,
# and what was busy besides serve and the client: other processes, and ksoftirqd (loopback's TCP
# work done in softirq is charged to the process it interrupted, so mostly to ours). The softirq
# share is shown on its own, for information: it is part of the busy time already counted.
before, after = ([int(x) for x in open(f"{work}/stat.{w}").read().split()[1:]] for w in ("before", "after"))
ticks = [b - a for a, b in zip(before, after)]
total_ticks = sum(ticks[:8])
idle_ticks = ticks[3] + ticks[4]
wall = client["elapsed_seconds"]
ours_s = (cpu["user_us"] + cpu["system_us"]) / 1e6 + client_user + client_system
machine_cpus = os.cpu_count() * (1 - idle_ticks / total_ticks) if total_ticks else 0.0
softirq_cpus = os.cpu_count() * ticks[6] / total_ticks if total_ticks else 0.0
row = {
    "threads": int(threads),
    "run": int(run),
    "complete": client["complete"],
    "failed": client["failed"],
    "closes": closes,
    "closes_per_second": client["connections_per_second"],
    "elapsed_s": client["elapsed_seconds"],
    "server_us_per_close": (cpu["user_us"] + cpu["system_us"]) / closes,
    "client_us_per_close": (client_user + client_system) * 1e6 / closes,
    "busy_cpus": ours_s / wall,
    "machine_cpus": machine_cpus,
    "softirq_cpus": softirq_cpus,
    "other_cpus": max(0.0, machine_cpus - ours_s / wall),
    "per_thread": [t["connections_closed"] for t in server["per_thread"]],
    "enter_per_close": server["stats"]["enter_calls"] / closes,
}
with open(f"{work}/rows.jsonl", "a") as out:
    out.write(json.dumps(row) + "\n")
print(f"{row['threads']:>7} {row['run']:>3} {row['complete']:>6}/{row['closes']:<6} "
      f"{row['closes_per_second']:9.0f} {row['server_us_per_close']:8.1f} "
      f"{row['client_us_per_close']:8.1f} {row['busy_cpus']:5.2f} {row['softirq_cpus']:5.2f} "
      f"{row['other_cpus']:5.2f} {row['enter_per_close']:8.3f}  "
      f"{'/'.join(str(c) for c in row['per_thread'])}", flush=True)
PY
}

echo "workload: $connections connections, $concurrency concurrent, $response responses, $runs runs" \
  "per setting, placement $placement, $(nproc) CPUs"
echo "(cpus: CPUs busy with serve + client; softirq: the part of all busy time spent in softirq;"
echo " others: busy time besides serve and client, i.e. other processes and ksoftirqd)"
echo "threads run complete/closed closes/s server-us client-us  cpus softirq others enter/close per-thread"
for run in $(seq "$runs"); do
  run_one 1 "$run"
  run_one 2 "$run"
done
python3 - "$work/rows.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
medians = {}
for threads in (1, 2):
    mine = [r for r in rows if r["threads"] == threads]
    medians[threads] = {key: statistics.median(r[key] for r in mine)
                        for key in ("closes_per_second", "server_us_per_close", "client_us_per_close",
                                    "busy_cpus", "other_cpus")}
    failed = sum(r["failed"] for r in mine) + sum(r["closes"] - r["complete"] for r in mine)
    m = medians[threads]
    print(f"median --threads {threads}: {m['closes_per_second']:.0f} closes/s, "
          f"{m['server_us_per_close']:.1f} us server CPU per close, "
          f"{m['client_us_per_close']:.1f} us client CPU per close, {m['busy_cpus']:.2f} CPUs busy "
          f"(others {m['other_cpus']:.2f})"
          f"{'' if failed == 0 else f', {failed} NOT COMPLETE'}")
print(f"ratio 2/1: closes/s {medians[2]['closes_per_second'] / medians[1]['closes_per_second']:.2f}x, "
      f"server CPU per close {medians[2]['server_us_per_close'] / medians[1]['server_us_per_close']:.2f}x")
PY

#!/usr/bin/env bash
# Request latency through `ringlinger proxy` and HAProxy 2.6 (mode tcp, nbthread 1), issue 17's
# target 4d: the proxy's p99 at 50 connections within 1.1x HAProxy's. wrk -t1 -c50 --latency ->
# proxy (CPU 0) -> nginx (CPU 1, with wrk), on bench/proxy.sh's workloads. Each ringlinger is
# started fresh for each run and stopped after it (a long-lived process carries its heap's history
# from run to run: docs/PERFORMANCE.md, "the trap") and warmed up with WARMUP seconds of the same
# load (default 1) before the measured run; HAProxy runs once for the whole script, as a deployed
# one does. Runs alternate proxy by proxy, so all see the same machine.
#
#   bench/proxy_latency.sh [RUNS] [SECONDS]        defaults: 7 runs, 4 s
# EXE: ringlinger binary (default build/cli/ringlinger); PROXY_ARGS: extra flags for it;
# PROXIES (default "ringlinger haproxy"): ringlinger-NAME runs another ringlinger, with EXE_NAME
# and ARGS_NAME (NAME with - as _) when set, e.g.
#   PROXIES="ringlinger ringlinger-old haproxy" EXE_old=/tmp/old/build/cli/ringlinger \
#     bench/proxy_latency.sh 7 4
#   PROXIES="ringlinger ringlinger-bw0 haproxy" ARGS_bw0="--batch-wait 0" bench/proxy_latency.sh
# WORKLOADS (default "16k-keepalive 16k-close 1m-keepalive"). Prints one line per run (requests,
# p50 and p99 in ms, CPU us per request), then for each proxy the medians and, run by run, its p99
# against HAProxy's in the same run (median and range). Needs nginx, haproxy and wrk (installed
# when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/proxy_lib.sh
runs=${1:-7}
seconds=${2:-4}
warmup=${WARMUP:-1}
for value in "$runs" "$seconds" "$warmup"; do
  [[ $value =~ ^[0-9]+$ && $value -le 3600 ]] ||
    { echo "proxy_latency.sh: RUNS, SECONDS and WARMUP are whole numbers up to 3600, not '$value'" >&2; exit 2; }
done
[[ $runs -ge 1 && $seconds -ge 1 ]] || { echo "proxy_latency.sh: RUNS and SECONDS start at 1" >&2; exit 2; }
exe=${EXE:-build/cli/ringlinger}
proxies=${PROXIES:-ringlinger haproxy}
workloads=${WORKLOADS:-16k-keepalive 16k-close 1m-keepalive}
[[ " $proxies " == *" haproxy "* ]] || { echo "proxy_latency.sh: PROXIES must include haproxy (the ratios are to it)" >&2; exit 2; }
proxy_bench_setup
start_upstream "$work/upstream"
ha_port=$(free_port)
start_haproxy "$work/haproxy" "$ha_port" "$up_port"

# start_ringlinger NAME: a fresh ringlinger-NAME on a free port; sets port and pid.
start_ringlinger() {
  port=$(free_port)
  start_ringlinger_proxy "$1" "$port"
  pid=$!
  pids+=("$pid")
  wait_port "$1" "$port"
}

# load SECONDS: wrk's 50 connections on the proxy at `port`, for SECONDS; its report in wrk.txt.
load() {
  "${pin_load[@]}" wrk -t1 -c50 -d"$1s" --latency --timeout 10s "${headers[@]}" \
    "http://127.0.0.1:$port/$path" >"$work/wrk.txt" 2>&1 || true
}

# wrk_ms FIELD FILE: wrk's latency percentile (50% or 99%) in milliseconds.
wrk_ms() {
  awk -v field="$1" '$1 == field {
    value = $2; unit = value; sub(/[0-9.]+/, "", unit); sub(/[a-z]+$/, "", value)
    printf "%.3f", value * (unit == "us" ? 0.001 : unit == "s" ? 1000 : 1) }' "$2"
}

echo "workload run proxy requests p50_ms p99_ms cpu_us_per_request" | tee "$work/lines"
for workload in $workloads; do
  workload_request "$workload"
  for run in $(seq "$runs"); do
    for proxy in $proxies; do
      if [ "$proxy" = haproxy ]; then
        port=$ha_port pid=$ha_pid
      else
        start_ringlinger "$proxy"
        [ "$warmup" -eq 0 ] || load "$warmup"
      fi
      before=$(cpu_ticks "$pid")
      load "$seconds"
      after=$(cpu_ticks "$pid")
      [ "$proxy" = haproxy ] || { kill "$pid"; wait "$pid" 2>/dev/null || true; }
      requests=$(grep -o '[0-9]* requests in' "$work/wrk.txt" | awk '{print $1}')
      [[ ${requests:-0} -gt 0 ]] || { echo "proxy_latency.sh: no request went through $proxy:" >&2; cat "$work/wrk.txt" >&2; exit 1; }
      printf "%s %d %s %d %s %s %.1f\n" "$workload" "$run" "$proxy" "$requests" \
        "$(wrk_ms 50% "$work/wrk.txt")" "$(wrk_ms 99% "$work/wrk.txt")" \
        "$(awk -v t=$((after - before)) -v us="$tick_us" -v n="$requests" 'BEGIN { print t * us / n }')" |
        tee -a "$work/lines"
    done
  done
done

python3 - "$work/lines" <<'EOF'
import statistics, sys
from collections import defaultdict
rows = [line.split() for line in open(sys.argv[1]).read().splitlines()[1:]]
by = defaultdict(list)      # (workload, proxy) -> rows
runs = defaultdict(dict)    # (workload, run) -> proxy -> p99
for workload, run, proxy, requests, p50, p99, cpu in rows:
    by[workload, proxy].append((float(p50), float(p99), float(cpu)))
    runs[workload, run][proxy] = float(p99)
print("\nmedians; p99 against HAProxy's in the same run: median (range)")
print(f"{'workload':14} {'proxy':22} {'p50 ms':>8} {'p99 ms':>8} {'us/req':>8}  p99 / HAProxy's")
for (workload, proxy), values in by.items():
    p50, p99, cpu = (statistics.median(v[i] for v in values) for i in range(3))
    ratios = [r[proxy] / r["haproxy"] for (w, _), r in runs.items() if w == workload and r.get("haproxy")]
    ratio = "" if proxy == "haproxy" or not ratios else \
        f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
    print(f"{workload:14} {proxy:22} {p50:8.3f} {p99:8.3f} {cpu:8.1f}  {ratio}")
EOF

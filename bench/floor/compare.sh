#!/usr/bin/env bash
# CPU per request of `ringlinger proxy`, HAProxy 2.6 (mode tcp, nbthread 1) and the floor
# prototypes on bench/proxy.sh's workloads, in the same run, alternating proxy by proxy: wrk -t1
# -c50 -> proxy (CPU 0) -> nginx serving static files (CPU 1, with wrk; no pinning on one CPU).
# The floors: floorproxy.c, epoll with read/write (floor-rw) or splice (floor-splice);
# floorring.c, one io_uring with every send in the ring (floor-ring), sends inline as
# ringlinger's (floor-ring-inline), or the ring with three system calls fewer per connection
# (floor-ring-lean). CPU = utime + stime of the proxy's process from /proc/PID/stat around each
# wrk run. The upstream, HAProxy's configuration and the rest of the setup are bench/proxy.sh's
# (bench/proxy_lib.sh).
#
#   bench/floor/compare.sh [RUNS] [SECONDS]        defaults: 3 runs, 5 s
# EXE: ringlinger binary (default build/cli/ringlinger); PROXY_ARGS: extra flags for it;
# PROXIES: which to run (default "ringlinger haproxy floor-rw floor-splice floor-ring
# floor-ring-inline floor-ring-lean"); ringlinger-NAME runs another ringlinger, with EXE_NAME /
# ARGS_NAME (NAME with - as _) when set; floor-rw-BYTES reads BYTES at a time; HAPROXY_OPTIONS:
# lines for HAProxy's defaults section; WORKLOADS (default "16k-keepalive 16k-close
# 1m-keepalive"); FRESH=1: every ringlinger is started for each run and stopped after it (a
# long-lived process can carry its heap's history from run to run: docs/PERFORMANCE.md, "the
# trap"). Prints one line per run, then each proxy's median CPU per request, then, run by run,
# its CPU and its system time alone against HAProxy's CPU in the same run (median and range).
# Needs nginx, haproxy, wrk (installed when missing) and cc.
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/proxy_lib.sh
runs=${1:-3}
seconds=${2:-5}
exe=${EXE:-build/cli/ringlinger}
proxies=${PROXIES:-ringlinger haproxy floor-rw floor-splice floor-ring floor-ring-inline floor-ring-lean}
workloads=${WORKLOADS:-16k-keepalive 16k-close 1m-keepalive}
proxy_bench_setup
bench/floor/build.sh "$work"
start_upstream "$work/upstream"

declare -A port pid
# start_proxy NAME: starts it on a free port, pinned, and waits until it listens.
start_proxy() {
  local proxy=$1
  port[$proxy]=$(free_port)
  case $proxy in
    haproxy)  # waits for its port and records its pid itself
      start_haproxy "$work/haproxy" "${port[$proxy]}" "$up_port"
      pid[$proxy]=$ha_pid
      return ;;
    ringlinger*) start_ringlinger_proxy "$proxy" "${port[$proxy]}" ;;
    floor-rw) "${pin_proxy[@]}" "$work/floorproxy" rw "${port[$proxy]}" "$up_port" & ;;
    floor-rw-*) "${pin_proxy[@]}" "$work/floorproxy" rw "${port[$proxy]}" "$up_port" "${proxy#floor-rw-}" & ;;
    floor-splice) "${pin_proxy[@]}" "$work/floorproxy" splice "${port[$proxy]}" "$up_port" & ;;
    floor-ring) "${pin_proxy[@]}" "$work/floorring" ring "${port[$proxy]}" "$up_port" & ;;
    floor-ring-inline) "${pin_proxy[@]}" "$work/floorring" inline "${port[$proxy]}" "$up_port" & ;;
    floor-ring-lean) "${pin_proxy[@]}" "$work/floorring" lean "${port[$proxy]}" "$up_port" & ;;
    *) echo "$0: unknown proxy $proxy" >&2; exit 1 ;;
  esac
  pid[$proxy]=$!
  pids+=("${pid[$proxy]}")
  wait_port "$proxy" "${port[$proxy]}"
}
# With FRESH=1 each ringlinger is a new process for every run (see the top).
fresh() { [ "${FRESH:-0}" = 1 ] && [[ $1 == ringlinger* ]]; }
for proxy in $proxies; do
  fresh "$proxy" || start_proxy "$proxy"
done
echo "# $(date -u +%H:%MZ) $(uname -r) load $(cut -d' ' -f1-3 /proc/loadavg); $runs x ${seconds}s, wrk -t1 -c50${FRESH:+, FRESH=$FRESH}; ${PROXY_ARGS:-}${HAPROXY_OPTIONS:+ | haproxy: $HAPROXY_OPTIONS}"
results=$work/results
: >"$results"
for workload in $workloads; do
  workload_request "$workload"
  for _ in $(seq "$runs"); do
    for proxy in $proxies; do
      fresh "$proxy" && start_proxy "$proxy"
      read -r user_before system_before < <(user_system_ticks "${pid[$proxy]}")
      "${pin_load[@]}" wrk -t1 -c50 -d"${seconds}s" --timeout 10s "${headers[@]}" \
        "http://127.0.0.1:${port[$proxy]}/$path" >"$work/wrk.txt" 2>&1 || true
      read -r user_after system_after < <(user_system_ticks "${pid[$proxy]}")
      requests=$(grep -o '[0-9]* requests in' "$work/wrk.txt" | awk '{print $1}')
      errors=$(grep -o 'Socket errors.*\|Non-2xx.*' "$work/wrk.txt" | tr '\n' ' ' || true)
      system_us=$(( (system_after - system_before) * tick_us ))
      us=$(( (user_after - user_before) * tick_us + system_us ))
      if fresh "$proxy"; then kill -TERM "${pid[$proxy]}"; wait "${pid[$proxy]}" 2>/dev/null || true; fi
      echo "$workload $proxy ${requests:-0} $us $system_us" >>"$results"
      printf "  %-14s %-17s %8d req %8.1f us/req (system %.1f) %s\n" "$workload" "$proxy" \
        "${requests:-0}" "$(echo "$us ${requests:-1}" | awk '{print $1/($2?$2:1)}')" \
        "$(echo "$system_us ${requests:-1}" | awk '{print $1/($2?$2:1)}')" "$errors"
    done
  done
done
echo "# load $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$results" <<'PY'
import statistics, sys
t, system = {}, {}  # workload -> proxy -> us per request, one entry per run, in run order
for line in open(sys.argv[1]):
    w, p, r, us, system_us = line.split()
    t.setdefault(w, {}).setdefault(p, []).append(int(us) / max(int(r), 1))
    system.setdefault(w, {}).setdefault(p, []).append(int(system_us) / max(int(r), 1))
names = list(next(iter(t.values())).keys())
others = [p for p in names if p != "haproxy"]
print("CPU (user + system) us per request, median of the runs:")
print("| workload | " + " | ".join(names) + " |")
for w, ps in t.items():
    print(f"| {w} | " + " | ".join(f"{statistics.median(v):.1f}" for v in ps.values()) + " |")
if "haproxy" in names:
    # Each run's figure against HAProxy's CPU in the same run: these hold while the machine's
    # speed drifts between runs, which the medians above do not.
    def ratios(values, w, p):
        rs = [v / h for v, h in zip(values[w][p], t[w]["haproxy"]) if h > 0]
        return f"{statistics.median(rs):.2f} ({min(rs):.2f}-{max(rs):.2f})" if rs else ""
    print("Run by run against HAProxy's CPU in the same run, median (range): the CPU, then the")
    print("system time alone (a proxy whose system time alone passes a ratio cannot reach it by")
    print("cutting user-space work):")
    print("| workload | " + " | ".join(f"{p} CPU | {p} system" for p in others) + " |")
    for w in t:
        print(f"| {w} | " + " | ".join(f"{ratios(t, w, p)} | {ratios(system, w, p)}"
                                       for p in others) + " |")
PY

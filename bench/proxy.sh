#!/usr/bin/env bash
# Throughput, CPU and latency of `ringlinger proxy` against HAProxy (mode tcp) and nginx's own TCP
# proxy (the stream module's proxy_pass) on the same workload in the same run:
# wrk -> proxy -> nginx (HTTP, static files). The three proxies run at once with one worker / one
# thread each, pinned to CPU 0; wrk and the upstream nginx share CPU 1. Workloads: a 16 KiB and a
# 1 MiB file over keep-alive connections, and 16 KiB with "Connection: close" (a new pair per
# request: accept, connect, half-close, both closes).
# Runs alternate among the three proxies (each run starts with the next one); each figure is the
# median of RUNS runs. Prints requests/s, transfer/s, wrk's p50 and p99 latency, socket errors,
# and each proxy's CPU time per request (utime + stime from /proc/PID/stat before and after the
# run: io_uring's io-wq threads are counted in ringlinger's process; HAProxy runs in the
# foreground (-db), one process with one thread; nginx's worker is the stream proxy), then a table
# with ringlinger's ratios to HAProxy and to nginx.
# HAProxy runs with its defaults for mode tcp, as issue 17 asks (`mode tcp`, `nbthread 1`): no
# splicing (its configuration.txt: splicing "is not enabled by default"). strace -c -f -p on it
# during 1 MiB keep-alive: recvfrom and sendto only by default; with "option splice-auto" 8
# splice calls against 102000 recvfrom (its heuristics rarely engage here); with "option
# splice-response" splice carries the responses (57000 splice, 1500 recvfrom).
#
#   bench/proxy.sh [RUNS] [SECONDS] [CONNECTIONS]     defaults: 3 runs, 5 s, 50 connections
# PROXY_ARGS adds flags to `ringlinger proxy` (e.g. PROXY_ARGS="--batch-wait 0"); HAPROXY_OPTIONS
# adds lines to HAProxy's defaults section (e.g. HAPROXY_OPTIONS="option splice-auto"), HAPROXY_BIND
# options to its bind line (e.g. HAPROXY_BIND=defer-accept, with PROXY_ARGS="--defer-accept on").
# Needs a build in build/ (tools/test or tools/run make one; or EXE=path/to/ringlinger), nginx
# with libnginx-mod-stream, haproxy, wrk (tools/lib.sh lists them; installed when missing).
# bench/proxy_lib.sh holds what bench/floor/compare.sh shares: the upstream, HAProxy's
# configuration, pinning, CPU time, the workloads' requests and the cleanup.
# About 3 min.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/proxy_lib.sh
runs=${1:-3}
seconds=${2:-5}
connections=${3:-50}
exe=${EXE:-build/cli/ringlinger}
[ -x "$exe" ] || { echo "bench/proxy.sh: no $exe (build first: tools/test or tools/run)" >&2; exit 1; }
proxy_bench_setup
stream_module=$(dpkg -L libnginx-mod-stream | grep -m1 'ngx_stream_module\.so$')
# The single worker of an nginx master (after the master is up).
worker_of() { awk '{print $1}' "/proc/$1/task/$1/children"; }
start_upstream "$work/upstream"

# nginx's stream proxy in front of it.
st_dir=$work/stream
mkdir -p "$st_dir"
st_port=$(free_port)
{ echo "load_module $stream_module;"; nginx_conf_head "$st_dir"; cat <<EOF
stream {
    server { listen 127.0.0.1:$st_port backlog=4096; proxy_pass 127.0.0.1:$up_port; }
}
EOF
} >"$st_dir/nginx.conf"
"${pin_proxy[@]}" "$nginx" -p "$st_dir" -e "$st_dir/error.log" -c "$st_dir/nginx.conf" &
st_master=$!
pids+=("$st_master")
wait_port "nginx stream" "$st_port"
st_worker=$(worker_of "$st_master")

# HAProxy in front of the same upstream.
ha_port=$(free_port)
start_haproxy "$work/haproxy" "$ha_port" "$up_port"

# ringlinger proxy in front of the same upstream.
# shellcheck disable=SC2086  # PROXY_ARGS: extra flags, split on spaces
"${pin_proxy[@]}" "$exe" proxy --listen 127.0.0.1:0 --upstream "127.0.0.1:$up_port" ${PROXY_ARGS:-} \
  --json "$work/ringlinger.json" >"$work/ringlinger.out" 2>"$work/ringlinger.err" &
rl_pid=$!
pids+=("$rl_pid")
for _ in $(seq 100); do grep -q "listening on" "$work/ringlinger.out" && break; sleep 0.05; done
rl_port=$(grep -o "listening on [0-9.:]*" "$work/ringlinger.out" | awk -F: '{print $NF}' | tr -d ,)
wait_port "ringlinger proxy" "$rl_port"

echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(uname -r), $cpus CPUs, load average $(cut -d" " -f1-3 /proc/loadavg); $("$nginx" -v 2>&1); $("$haproxy" -v | head -1 | cut -d" " -f1-3); $(wrk --version 2>&1 | head -1 | cut -c1-40)"
echo "# $(head -1 "$work/ringlinger.out") ${PROXY_ARGS:-}"
echo "# haproxy: mode tcp, nbthread 1 ${HAPROXY_OPTIONS:-}"
echo "# $runs runs x $seconds s per proxy and workload, wrk -t1 -c$connections --latency, alternating; medians"
results=$work/results.txt
: >"$results"
run_one() {  # PROXY PORT PID WORKLOAD PATH [wrk header args...]
  local proxy=$1 port=$2 pid=$3 workload=$4 path=$5
  shift 5
  local before after
  before=$(cpu_ticks "$pid")
  "${pin_load[@]}" wrk -t1 -c"$connections" -d"${seconds}s" --timeout 10s --latency "$@" \
    "http://127.0.0.1:$port/$path" >"$work/wrk.txt" 2>&1 || true
  after=$(cpu_ticks "$pid")
  python3 - "$proxy" "$workload" $(((after - before) * tick_us)) "$work/wrk.txt" >>"$results" <<'PY'
import re, sys
proxy, workload, cpu_us, path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
text = open(path).read()
def number(pattern, default=0.0):
    m = re.search(pattern, text)
    return m.group(1) if m else default
requests = int(number(r"(\d+) requests in", 0))
rps = float(number(r"Requests/sec:\s+([\d.]+)"))
transfer = number(r"Transfer/sec:\s+([\d.]+\w+)", "0B")
unit = {"B": 1, "KB": 2**10, "MB": 2**20, "GB": 2**30}
m = re.match(r"([\d.]+)(\w+)", transfer)
mib = float(m.group(1)) * unit.get(m.group(2), 1) / 2**20
errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
errors = sum(int(x) for x in errors.groups()) if errors else 0
non2xx = int(number(r"Non-2xx or 3xx responses: (\d+)", 0))
def latency_us(percent):  # from wrk's "Latency Distribution": 99%  1.25ms
    m = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
    return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6, "m": 6e7}[m.group(2)] if m else 0.0
print(proxy, workload, requests, rps, mib, cpu_us, errors + non2xx, latency_us(50), latency_us(99))
PY
  tail -1 "$results" | awk '{printf "  %-12s %-13s %8.0f req/s %7.1f MiB/s %7.1f us CPU/req  p50 %6.2f ms  p99 %6.2f ms  errors %d\n", $1, $2, $4, $5, ($3 ? $6/$3 : 0), $8/1000, $9/1000, $7}'
}

for workload in 16k-keepalive 1m-keepalive 16k-close; do
  workload_request "$workload"
  echo "$workload:"
  for run in $(seq 0 $((runs - 1))); do
    for turn in 0 1 2; do  # each run starts with the next proxy, so none always follows another
      case $(((run + turn) % 3)) in
        0) run_one ringlinger "$rl_port" "$rl_pid" "$workload" "$path" "${headers[@]}" ;;
        1) run_one haproxy "$ha_port" "$ha_pid" "$workload" "$path" "${headers[@]}" ;;
        2) run_one nginx-stream "$st_port" "$st_worker" "$workload" "$path" "${headers[@]}" ;;
      esac
    done
  done
done

kill -TERM "$rl_pid"
wait "$rl_pid" || echo "bench/proxy.sh: ringlinger proxy exited with $?" >&2
python3 - "$work/ringlinger.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
p, s = j["proxy"], j["stats"]
nonzero = lambda counts: {k: v for k, v in counts.items() if v}
print(f"# ringlinger proxy at exit: {p['connections']} connections, {p['upstream_connect_failures']} "
      f"connect failures, {s['live_connections']} live; client legs {nonzero(p['client_outcomes'])}, "
      f"upstream legs {nonzero(p['upstream_outcomes'])}")
PY

python3 - "$results" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
table = {}
for proxy, workload, requests, rps, mib, cpu_us, errors, p50, p99 in rows:
    table.setdefault((workload, proxy), []).append(
        (float(rps), float(mib), int(cpu_us) / max(int(requests), 1), float(p50), float(p99),
         int(errors)))
PROXIES = ("ringlinger", "haproxy", "nginx-stream")
RPS, MIB, CPU, P50, P99, ERRORS = range(6)
def ratio(medians, column, other):
    ours, theirs = medians["ringlinger"][column], medians.get(other, (0,) * 6)[column]
    return f"{ours / theirs:.2f}" if theirs else ""
print()
print("| workload | proxy | requests/s | transfer MiB/s | proxy CPU us/request | p50 ms | p99 ms | errors "
      "| CPU/req vs HAProxy | CPU/req vs nginx | req/s vs HAProxy | req/s vs nginx | p99 vs HAProxy |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for workload in dict.fromkeys(w for w, _ in table):
    medians = {}
    for proxy in PROXIES:
        runs = table.get((workload, proxy), [])
        if runs:
            medians[proxy] = tuple(statistics.median(r[i] for r in runs) for i in range(ERRORS)) + (
                sum(r[ERRORS] for r in runs),)
    for proxy, (rps, mib, cpu, p50, p99, errors) in medians.items():
        ratios = [""] * 5
        if proxy == "ringlinger":
            ratios = [ratio(medians, CPU, "haproxy"), ratio(medians, CPU, "nginx-stream"),
                      ratio(medians, RPS, "haproxy"), ratio(medians, RPS, "nginx-stream"),
                      ratio(medians, P99, "haproxy")]
        print(f"| {workload} | {proxy} | {rps:.0f} | {mib:.1f} | {cpu:.1f} | {p50 / 1000:.2f} | "
              f"{p99 / 1000:.2f} | {errors} | " + " | ".join(ratios) + " |")
PY

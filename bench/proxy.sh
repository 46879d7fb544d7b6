#!/usr/bin/env bash
# Throughput of `ringlinger proxy` against nginx's own TCP proxy (the stream module's
# proxy_pass) on the same workload in the same run: wrk -> proxy -> nginx (HTTP, static files).
# Both proxies run at once with one worker / one thread each, pinned to CPU 0; wrk and the upstream
# nginx share CPU 1. Workloads: a 16 KiB and a 1 MiB file over keep-alive connections, and 16 KiB
# with "Connection: close" (a new pair per request: accept, connect, half-close, both closes).
# Runs alternate between the two proxies; each figure is the median of RUNS runs.
# Prints requests/s, transfer/s, socket errors, and each proxy's CPU time per request (utime +
# stime from /proc/PID/stat before and after the run: io_uring's io-wq threads are counted in
# ringlinger's process; nginx's worker is the stream proxy).
#
#   bench/proxy.sh [RUNS] [SECONDS] [CONNECTIONS]     defaults: 3 runs, 5 s, 50 connections
# PROXY_ARGS adds flags to `ringlinger proxy` (e.g. PROXY_ARGS="--batch-wait 0").
# Needs a build in build/ (tools/test or tools/run make one; or EXE=path/to/ringlinger), nginx
# with libnginx-mod-stream, wrk (tools/lib.sh lists them; installed when missing). About 3 min.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/lib.sh
runs=${1:-3}
seconds=${2:-5}
connections=${3:-50}
exe=${EXE:-build/cli/ringlinger}
[ -x "$exe" ] || { echo "bench/proxy.sh: no $exe (build first: tools/test or tools/run)" >&2; exit 1; }
ensure_packages "${RINGLINGER_NGINX_PACKAGES[@]}" wrk
stream_module=$(dpkg -L libnginx-mod-stream | grep -m1 'ngx_stream_module\.so$')
nginx=$(command -v nginx || echo /usr/sbin/nginx)
cpus=$(nproc)
pin_proxy=(); pin_load=()
if [ "$cpus" -ge 2 ]; then pin_proxy=(taskset -c 0); pin_load=(taskset -c 1); fi

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -QUIT "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 100); do
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),1)" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "bench/proxy.sh: nothing listens on port $1" >&2
  return 1
}
# The single worker of an nginx master (after the master is up).
worker_of() { cat "/proc/$1/task/$1/children" | awk '{print $1}'; }
cpu_ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }  # utime + stime

common_conf() {  # DIR
  cat <<EOF
user root;
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 16384;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { use epoll; worker_connections 8192; multi_accept on; }
EOF
}

# The upstream: nginx serving the files over HTTP/1.1, keep-alive, sendfile.
up_dir=$work/upstream
mkdir -p "$up_dir/www"
head -c 16384 /dev/urandom >"$up_dir/www/16k"
head -c 1048576 /dev/urandom >"$up_dir/www/1m"
up_port=$(free_port)
{ common_conf "$up_dir"; cat <<EOF
http {
    access_log off;
    sendfile on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    client_body_temp_path $up_dir/body; proxy_temp_path $up_dir/proxy; fastcgi_temp_path $up_dir/fastcgi;
    uwsgi_temp_path $up_dir/uwsgi; scgi_temp_path $up_dir/scgi;
    server { listen 127.0.0.1:$up_port backlog=4096; root $up_dir/www; }
}
EOF
} >"$up_dir/nginx.conf"
"${pin_load[@]}" "$nginx" -p "$up_dir" -e "$up_dir/error.log" -c "$up_dir/nginx.conf" &
pids+=($!)
wait_port "$up_port"

# nginx's stream proxy in front of it.
st_dir=$work/stream
mkdir -p "$st_dir"
st_port=$(free_port)
{ echo "load_module $stream_module;"; common_conf "$st_dir"; cat <<EOF
stream {
    server { listen 127.0.0.1:$st_port backlog=4096; proxy_pass 127.0.0.1:$up_port; }
}
EOF
} >"$st_dir/nginx.conf"
"${pin_proxy[@]}" "$nginx" -p "$st_dir" -e "$st_dir/error.log" -c "$st_dir/nginx.conf" &
st_master=$!
pids+=("$st_master")
wait_port "$st_port"
st_worker=$(worker_of "$st_master")

# ringlinger proxy in front of the same upstream.
# shellcheck disable=SC2086  # PROXY_ARGS: extra flags, split on spaces
"${pin_proxy[@]}" "$exe" proxy --listen 127.0.0.1:0 --upstream "127.0.0.1:$up_port" ${PROXY_ARGS:-} \
  --json "$work/ringlinger.json" >"$work/ringlinger.out" 2>"$work/ringlinger.err" &
rl_pid=$!
pids+=("$rl_pid")
for _ in $(seq 100); do grep -q "listening on" "$work/ringlinger.out" && break; sleep 0.05; done
rl_port=$(grep -o "listening on [0-9.:]*" "$work/ringlinger.out" | awk -F: '{print $NF}' | tr -d ,)
wait_port "$rl_port"

echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(uname -r), $cpus CPUs, load average $(cut -d" " -f1-3 /proc/loadavg); $(nginx -v 2>&1); $(wrk --version 2>&1 | head -1 | cut -c1-40)"
echo "# $(head -1 "$work/ringlinger.out") ${PROXY_ARGS:-}"
echo "# $runs runs x $seconds s per proxy and workload, wrk -t1 -c$connections, alternating; medians"
tick_us=$((1000000 / $(getconf CLK_TCK)))
results=$work/results.txt
: >"$results"
run_one() {  # PROXY PORT PID WORKLOAD PATH [wrk header args...]
  local proxy=$1 port=$2 pid=$3 workload=$4 path=$5
  shift 5
  local before after
  before=$(cpu_ticks "$pid")
  "${pin_load[@]}" wrk -t1 -c"$connections" -d"${seconds}s" --timeout 10s "$@" \
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
print(proxy, workload, requests, rps, mib, cpu_us, errors + non2xx)
PY
  tail -1 "$results" | awk '{printf "  %-16s %-12s %9.0f req/s %9.1f MiB/s %7.1f us CPU/req  errors %d\n", $1, $2, $4, $5, ($3 ? $6/$3 : 0), $7}'
}

for workload in 16k-keepalive 1m-keepalive 16k-close; do
  case $workload in
    16k-keepalive) path=16k; headers=() ;;
    1m-keepalive) path=1m; headers=() ;;
    16k-close) path=16k; headers=(-H "Connection: close") ;;
  esac
  echo "$workload:"
  for _ in $(seq "$runs"); do
    run_one ringlinger "$rl_port" "$rl_pid" "$workload" "$path" "${headers[@]}"
    run_one nginx-stream "$st_port" "$st_worker" "$workload" "$path" "${headers[@]}"
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
for proxy, workload, requests, rps, mib, cpu_us, errors in rows:
    table.setdefault((workload, proxy), []).append(
        (float(rps), float(mib), int(cpu_us) / max(int(requests), 1), int(errors)))
print()
print("| workload | proxy | requests/s | transfer MiB/s | proxy CPU us/request | errors | ratio ringlinger/nginx (req/s) | ratio (CPU/req) |")
print("|---|---|---|---|---|---|---|---|")
for workload in dict.fromkeys(w for w, _ in table):
    medians = {}
    for proxy in ("ringlinger", "nginx-stream"):
        runs = table.get((workload, proxy), [])
        if not runs:
            continue
        medians[proxy] = tuple(statistics.median(r[i] for r in runs) for i in range(3)) + (sum(r[3] for r in runs),)
    for proxy, (rps, mib, cpu, errors) in medians.items():
        ratio = cpu_ratio = ""
        if proxy == "ringlinger" and "nginx-stream" in medians:
            ratio = f"{rps / medians['nginx-stream'][0]:.2f}"
            cpu_ratio = f"{cpu / medians['nginx-stream'][2]:.2f}" if medians['nginx-stream'][2] else ""
        print(f"| {workload} | {proxy} | {rps:.0f} | {mib:.1f} | {cpu:.1f} | {errors} | {ratio} | {cpu_ratio} |")
PY

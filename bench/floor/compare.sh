#!/usr/bin/env bash
# CPU per request of `ringlinger proxy`, HAProxy 2.6 (mode tcp, nbthread 1) and the two floor
# prototypes (floorproxy.c: read/write and splice) on bench/proxy.sh's workloads, in the same run,
# alternating proxy by proxy: wrk -t1 -c50 -> proxy (CPU 0) -> nginx serving static files (CPU 1,
# with wrk). CPU = utime + stime of the proxy's process from /proc/PID/stat around each wrk run.
#
#   bench/floor/compare.sh [RUNS] [SECONDS]        defaults: 3 runs, 5 s
# EXE: ringlinger binary (default build/cli/ringlinger); PROXY_ARGS: extra flags for it;
# PROXIES: which to run (default "ringlinger haproxy floor-rw floor-splice"); ringlinger-NAME
# runs another ringlinger, with EXE_NAME / ARGS_NAME (NAME with - as _) when set; floor-rw-BYTES
# reads BYTES at a time;
# WORKLOADS (default "16k-keepalive 16k-close 1m-keepalive"). Prints one line per run, then medians.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-3}
seconds=${2:-5}
exe=${EXE:-build/cli/ringlinger}
proxies=${PROXIES:-ringlinger haproxy floor-rw floor-splice}
workloads=${WORKLOADS:-16k-keepalive 16k-close 1m-keepalive}
work=$(mktemp -d)
bench/floor/build.sh "$work"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
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
    python3 -c "import socket; socket.create_connection(('127.0.0.1',$1),1)" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "compare.sh: nothing listens on port $1" >&2; return 1
}
cpu_ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }

# The upstream, as in bench/proxy.sh: nginx, one worker, keep-alive, sendfile.
up=$work/upstream
mkdir -p "$up/www"
head -c 16384 /dev/urandom >"$up/www/16k"
head -c 1048576 /dev/urandom >"$up/www/1m"
up_port=$(free_port)
cat >"$up/nginx.conf" <<CONF
user root; daemon off; master_process on; worker_processes 1; worker_rlimit_nofile 16384;
pid $up/nginx.pid; error_log $up/error.log warn;
events { use epoll; worker_connections 8192; multi_accept on; }
http {
    access_log off; sendfile on; tcp_nodelay on; keepalive_requests 1000000;
    default_type application/octet-stream;
    client_body_temp_path $up/body; proxy_temp_path $up/proxy; fastcgi_temp_path $up/fastcgi;
    uwsgi_temp_path $up/uwsgi; scgi_temp_path $up/scgi;
    server { listen 127.0.0.1:$up_port backlog=4096; root $up/www; }
}
CONF
taskset -c 1 nginx -p "$up" -e "$up/error.log" -c "$up/nginx.conf" &
pids+=($!)
wait_port "$up_port"

declare -A port pid
for proxy in $proxies; do
  port[$proxy]=$(free_port)
  case $proxy in
    ringlinger*)
      # ringlinger-NAME: EXE_NAME and ARGS_NAME (when set) replace EXE and PROXY_ARGS.
      variant=${proxy#ringlinger}; variant=${variant#-}; variant=${variant//-/_}
      exe_var=EXE_$variant; args_var=ARGS_$variant
      # shellcheck disable=SC2086
      taskset -c 0 "${!exe_var:-$exe}" proxy --listen "127.0.0.1:${port[$proxy]}" \
        --upstream "127.0.0.1:$up_port" ${!args_var:-${PROXY_ARGS:-}} >"$work/$proxy.out" 2>&1 & ;;
    haproxy)
      cat >"$work/haproxy.cfg" <<CONF
global
    nbthread 1
    maxconn 8000
defaults
    mode tcp
    timeout connect 10s
    timeout client 60s
    timeout server 60s
frontend f
    bind 127.0.0.1:${port[$proxy]}
    default_backend b
backend b
    server up 127.0.0.1:$up_port
CONF
      taskset -c 0 haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.out" 2>&1 & ;;
    floor-rw) taskset -c 0 "$work/floorproxy" rw "${port[$proxy]}" "$up_port" & ;;
    floor-rw-*) taskset -c 0 "$work/floorproxy" rw "${port[$proxy]}" "$up_port" "${proxy#floor-rw-}" & ;;
    floor-splice) taskset -c 0 "$work/floorproxy" splice "${port[$proxy]}" "$up_port" & ;;
  esac
  pid[$proxy]=$!
  pids+=("${pid[$proxy]}")
  wait_port "${port[$proxy]}"
done
echo "# $(date -u +%H:%MZ) $(uname -r) load $(cut -d' ' -f1-3 /proc/loadavg); $runs x ${seconds}s, wrk -t1 -c50; ${PROXY_ARGS:-}"
tick_us=$((1000000 / $(getconf CLK_TCK)))
results=$work/results
: >"$results"
for workload in $workloads; do
  case $workload in
    16k-keepalive) path=16k; headers=() ;;
    1m-keepalive) path=1m; headers=() ;;
    16k-close) path=16k; headers=(-H "Connection: close") ;;
  esac
  for _ in $(seq "$runs"); do
    for proxy in $proxies; do
      before=$(cpu_ticks "${pid[$proxy]}")
      taskset -c 1 wrk -t1 -c50 -d"${seconds}s" --timeout 10s "${headers[@]}" \
        "http://127.0.0.1:${port[$proxy]}/$path" >"$work/wrk.txt" 2>&1 || true
      after=$(cpu_ticks "${pid[$proxy]}")
      requests=$(grep -o '[0-9]* requests in' "$work/wrk.txt" | awk '{print $1}')
      errors=$(grep -o 'Socket errors.*\|Non-2xx.*' "$work/wrk.txt" | tr '\n' ' ' || true)
      us=$(( (after - before) * tick_us ))
      echo "$workload $proxy ${requests:-0} $us" >>"$results"
      printf "  %-14s %-13s %8d req %8.1f us/req %s\n" "$workload" "$proxy" "${requests:-0}" \
        "$(echo "$us ${requests:-1}" | awk '{print $1/($2?$2:1)}')" "$errors"
    done
  done
done
echo "# load $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$results" <<'PY'
import statistics, sys
t = {}
for line in open(sys.argv[1]):
    w, p, r, us = line.split()
    t.setdefault(w, {}).setdefault(p, []).append(int(us) / max(int(r), 1))
names = list(next(iter(t.values())).keys())
others = [p for p in names if p != "haproxy"]
print("| workload | " + " | ".join(names) + " | " + " | ".join(f"{p}/haproxy" for p in others) + " |")
for w, ps in t.items():
    med = {p: statistics.median(v) for p, v in ps.items()}
    h = med.get("haproxy")
    ratio = lambda p: f"{med[p] / h:.2f}" if h and p in med else ""
    print(f"| {w} | " + " | ".join(f"{m:.1f}" for m in med.values()) + " | " +
          " | ".join(ratio(p) for p in others) + " |")
PY

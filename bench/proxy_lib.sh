# Shared by bench/proxy.sh and bench/floor/compare.sh, which measure proxies against each other on
# the same workloads: the upstream nginx, HAProxy, pinning, ports, CPU time, and stopping what they
# started; bench/floor/serve_variants.sh takes its ports and CPU time. Sourced from the repository's root (both scripts cd there first).
# shellcheck shell=bash disable=SC2034  # the functions set globals that the scripts read
source tools/lib.sh

# proxy_bench_setup: installs what is missing and sets nginx, haproxy (their paths), cpus,
# pin_proxy and pin_load (the proxy on CPU 0; wrk and the upstream on CPU 1, when there are two),
# tick_us (microseconds per clock tick), work (a temporary directory) and pids (what cleanup stops
# at exit: add every process started).
proxy_bench_setup() {
  ensure_packages "${RINGLINGER_NGINX_PACKAGES[@]}" "${RINGLINGER_HAPROXY_PACKAGES[@]}" wrk
  nginx=$(command -v nginx || echo /usr/sbin/nginx)
  haproxy=$(command -v haproxy || echo /usr/sbin/haproxy)
  cpus=$(nproc)
  pin_proxy=(); pin_load=()
  if [ "$cpus" -ge 2 ]; then pin_proxy=(taskset -c 0); pin_load=(taskset -c 1); fi
  tick_us=$((1000000 / $(getconf CLK_TCK)))
  work=$(mktemp -d)
  pids=()
  trap cleanup EXIT
}

cleanup() {  # SIGTERM: nginx's fast shutdown, HAProxy's hard stop, ringlinger's graceful stop
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {  # NAME PORT: waits up to about 5 s for NAME to listen on PORT
  for _ in $(seq 100); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1',$2),1)" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "$0: $1: nothing listens on port $2" >&2
  return 1
}
cpu_ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }  # PID: utime + stime
user_system_ticks() { awk '{ sub(/.*\) /, ""); print $12, $13 }' "/proc/$1/stat"; }  # PID: "utime stime"

# start_ringlinger_proxy NAME PORT: ringlinger as a proxy on PORT to up_port, pinned, in the
# background ($! is its pid, its output in $work/NAME.out). NAME is ringlinger or ringlinger-X:
# then EXE_X and ARGS_X (X with - as _), when set, replace exe and PROXY_ARGS.
start_ringlinger_proxy() {
  local variant=${1#ringlinger} exe_var args_var
  variant=${variant#-}; variant=${variant//-/_}
  exe_var=EXE_$variant; args_var=ARGS_$variant
  # shellcheck disable=SC2086  # the flags are split on blanks, as written
  "${pin_proxy[@]}" "${!exe_var:-$exe}" proxy --listen "127.0.0.1:$2" \
    --upstream "127.0.0.1:$up_port" ${!args_var:-${PROXY_ARGS:-}} >"$work/$1.out" 2>&1 &
}

# workload_request WORKLOAD: sets path (the file wrk asks for) and headers (wrk's extra arguments).
workload_request() {
  case $1 in
    16k-keepalive) path=16k; headers=() ;;
    1m-keepalive) path=1m; headers=() ;;
    16k-close) path=16k; headers=(-H "Connection: close") ;;
    *) echo "$0: unknown workload $1" >&2; return 1 ;;
  esac
}

nginx_conf_head() {  # DIR: the main context of an nginx with one worker, in the foreground
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

# start_upstream DIR: nginx serving a 16 KiB and a 1 MiB random file over HTTP/1.1, keep-alive,
# sendfile, on CPU 1 with wrk; sets up_port.
start_upstream() {
  local dir=$1
  mkdir -p "$dir/www"
  head -c 16384 /dev/urandom >"$dir/www/16k"
  head -c 1048576 /dev/urandom >"$dir/www/1m"
  up_port=$(free_port)
  { nginx_conf_head "$dir"; cat <<EOF
http {
    access_log off;
    sendfile on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    client_body_temp_path $dir/body; proxy_temp_path $dir/proxy; fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi; scgi_temp_path $dir/scgi;
    server { listen 127.0.0.1:$up_port backlog=4096; root $dir/www; }
}
EOF
  } >"$dir/nginx.conf"
  "${pin_load[@]}" "$nginx" -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" &
  pids+=($!)
  wait_port "upstream nginx" "$up_port"
}

# start_haproxy DIR PORT UPSTREAM_PORT: HAProxy as issue 17 has it (mode tcp, nbthread 1) plus
# HAPROXY_OPTIONS in its defaults section, on CPU 0; sets ha_pid. The foreground process (-db) is
# the one doing the work.
# maxconn 4096: as many pairs as nginx's 8192 worker_connections; HAProxy raises its descriptor
# limit to twice that plus maxconn/4 pipes if splicing is on, which must fit RLIMIT_NOFILE (20000
# here; maxconn 8192 with splicing needs 20494 and HAProxy does not start).
start_haproxy() {
  local dir=$1 port=$2 upstream_port=$3 threads
  mkdir -p "$dir"
  cat >"$dir/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
defaults
    mode tcp
    maxconn 4096
    timeout connect 10s
    timeout client 60s
    timeout server 60s
${HAPROXY_OPTIONS:-}
listen proxy
    bind 127.0.0.1:$port backlog 4096 ${HAPROXY_BIND:-}
    server upstream 127.0.0.1:$upstream_port
EOF
  "${pin_proxy[@]}" "$haproxy" -db -f "$dir/haproxy.cfg" >"$dir/haproxy.out" 2>&1 &
  ha_pid=$!
  pids+=("$ha_pid")
  wait_port haproxy "$port" || { cat "$dir/haproxy.out" >&2; return 1; }
  threads=$(awk '/^Threads:/ {print $2}' "/proc/$ha_pid/status")
  [ "$threads" = 1 ] || echo "$0: haproxy runs $threads threads, not 1" >&2
}

#!/usr/bin/env bash
# Reproduces the tables of docs/PERFORMANCE.md: ringlinger (uring), its epoll backend, the tight
# blocking loop (the kernel floor: accept, recv the head, send, shutdown, recv until 0, close, one
# connection at a time) and nginx (Debian's nginx-light, one worker, lingering_close on), same
# client, same run, alternating, at concurrency 100, 1000 and 19000; then the memory and batching
# measurements. Needs a build in build/ (tools/run or tools/test makes one) and nginx-light.
#
#   bench/performance.sh [OUTPUT_DIR]        # default docs/perf; about 25 minutes on 2 cores
#   RUNS=3 bench/performance.sh /tmp/perf    # quicker, less steady
#   STEPS="large lingering" bench/performance.sh   # some of: body nobody small large lingering batch
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/perf}
runs=${RUNS:-5}
steps=" ${STEPS:-body nobody small large lingering batch} "
ringlinger=build/cli/ringlinger
[[ -x $ringlinger ]] || { echo "performance.sh: build first (tools/test or tools/run)" >&2; exit 2; }
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] ||
  { echo "performance.sh: nginx is missing (apt-get install nginx-light)" >&2; exit 2; }
mkdir -p "$out"

# 19000 client connections need more than one destination's ~28k ephemeral ports over a run.
common=(--runs "$runs" --source-addrs 127.0.0.2-127.0.0.9)

bench() {  # NAME ARGS...: one bench invocation, its table, JSON and plot kept under $out
  local name=$1
  shift
  [[ $steps == *" ${name%%-*} "* ]] || return 0
  echo "== $name: ringlinger bench $*" >&2
  # Exit code 1 means a backend failed connections: that is in the table; go on.
  "$ringlinger" bench "$@" --json "$out/$name.json" --plot "$out/$name.png" | tee "$out/$name.txt" ||
    [[ ${PIPESTATUS[0]} -eq 1 ]]
}

# 1. The body case (what lingering close exists for): 16 KiB response, 64 KiB unread body.
bench body --backend uring,epoll,blocking,nginx --connections 20000 --concurrency 100,1000,19000 \
  --response-bytes 16KiB --body-bytes 64KiB "${common[@]}"
# 2. No body: 16 KiB response to a GET.
bench nobody --backend uring,epoll,blocking,nginx --connections 20000 --concurrency 100,1000,19000 \
  --response-bytes 16KiB --body-bytes 0 "${common[@]}"
# 3. Small responses: 1 KiB, no body.
bench small --backend uring,epoll,blocking,nginx --connections 20000 --concurrency 100,1000 \
  --response-bytes 1KiB --body-bytes 0 "${common[@]}"
# 4. Large responses: 1 MiB, no body. nginx uses sendfile; ringlinger sends from memory, then
#    (large-sendfile) from a file with Manager::send_file. 8000 connections per run: nginx's CPU
#    comes from /proc in 10 ms ticks, and 2000 connections gave it only ~30 ticks per run.
bench large --backend uring,epoll,blocking,nginx --connections 8000 --concurrency 100,1000 \
  --response-bytes 1MiB --body-bytes 0 "${common[@]}"
bench large-sendfile --backend uring,epoll,nginx --connections 8000 --concurrency 100,1000 \
  --response-bytes 1MiB --body-bytes 0 --sendfile "${common[@]}"
# 5. 19000 connections lingering in the server at once (clients read 2 s late): memory per
#    connection from the server's RSS, kernel socket memory from /proc/net/sockstat.
bench lingering --backend uring,epoll,nginx --connections 19000 --concurrency 19000 \
  --response-bytes 16KiB --body-bytes 64KiB --read-delay 2s "${common[@]}"
# 6. Completion batching: io_uring_enter calls per close against added latency (2ms is the
#    default).
for wait in 0 200us 1ms 2ms; do
  bench "batch-$wait" --backend uring --connections 20000 --concurrency 1000 \
    --response-bytes 16KiB --body-bytes 64KiB --batch-wait "$wait" "${common[@]}"
done

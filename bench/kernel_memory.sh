#!/usr/bin/env bash
# Kernel memory per lingering connection, from /proc/slabinfo: `ringlinger serve` holds 19000
# connections at once (the clients read 6 s late), slab bytes are summed per cache before the load
# and while they linger; the delta per connection covers both ends of every loopback connection
# (client and server sockets, their files, the client's epoll). Run it for each backend and
# compare: the difference is what the backend parks per connection in the kernel.
#
#   bench/kernel_memory.sh uring     # or epoll; needs root (slabinfo) and a build
set -euo pipefail
cd "$(dirname "$0")/.."
backend=${1:-uring}
connections=${CONNECTIONS:-19000}
ringlinger=build/cli/ringlinger
[[ -r /proc/slabinfo ]] || { echo "kernel_memory.sh: /proc/slabinfo is not readable (root?)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
snapshot() { awk 'NR > 2 { bytes[$1] = $3 * $4 } END { for (c in bytes) print c, bytes[c] }' /proc/slabinfo | sort; }

taskset -c 0 "$ringlinger" serve --listen 127.0.0.1:0 --backend "$backend" \
  --max-connections $((connections + 500)) >"$work/serve" &
server=$!
for _ in $(seq 100); do grep -q "listening on" "$work/serve" && break; sleep 0.1; done
address=$(grep -o 'listening on [0-9.:]*' "$work/serve" | awk '{print $3}')
snapshot >"$work/before"
taskset -c 1 "$ringlinger" client --connect "$address" --connections "$connections" \
  --concurrency "$connections" --body-bytes 0 --read-delay 6s \
  --source-addrs 127.0.0.2-127.0.0.9 >"$work/client" &
client=$!
sleep 4.5  # all connected and answered; nobody has read yet
snapshot >"$work/during"
wait "$client" || { echo "kernel_memory.sh: the client failed" >&2; cat "$work/client" >&2; }
kill -INT "$server"
wait "$server" || true
echo "backend $backend: slab bytes per lingering connection (both ends), caches moving > 1 B/conn"
join "$work/before" "$work/during" |
  awk -v n="$connections" '{ d = ($3 - $2) / n; t += d; if (d > 1 || d < -1) printf "  %-24s %8.1f\n", $1, d }
                           END { printf "  %-24s %8.1f\n", "total", t }' | sort -k2 -n -r
grep -E "complete|lost" "$work/client"

#!/usr/bin/env bash
# Builds bench/floor/floorproxy and floorring (the epoll and io_uring floors of issue 17 target
# 3), floorserve (the floor of target 2: a graceful close's user-space work on io_uring),
# waitall_trunc (a probe of MSG_WAITALL receives, target 2), mshot_limit (a probe of multishot
# receives with MSG_TRUNC, target 2) and syscall_share (how a system call's time is accounted,
# target 2) into $1 (default /tmp).
set -euo pipefail
out=${1:-/tmp}
cc -O2 -Wall -Wextra -o "$out/floorproxy" "$(dirname "$0")/floorproxy.c"
cc -O2 -Wall -Wextra -o "$out/floorring" "$(dirname "$0")/floorring.c" -luring
cc -O2 -Wall -Wextra -o "$out/floorserve" "$(dirname "$0")/floorserve.c" -luring
cc -O2 -Wall -Wextra -o "$out/waitall_trunc" "$(dirname "$0")/waitall_trunc.c" -luring
cc -O2 -Wall -Wextra -o "$out/mshot_limit" "$(dirname "$0")/mshot_limit.c" -luring
cc -O2 -Wall -Wextra -o "$out/syscall_share" "$(dirname "$0")/syscall_share.c"

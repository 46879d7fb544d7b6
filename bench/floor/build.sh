#!/usr/bin/env bash
# Builds bench/floor/floorproxy (the floor prototypes of issue 17 target 3) and
# bench/floor/waitall_trunc (a probe of MSG_WAITALL receives, target 2) into $1 (default /tmp).
set -euo pipefail
out=${1:-/tmp}
cc -O2 -Wall -Wextra -o "$out/floorproxy" "$(dirname "$0")/floorproxy.c"
cc -O2 -Wall -Wextra -o "$out/waitall_trunc" "$(dirname "$0")/waitall_trunc.c" -luring

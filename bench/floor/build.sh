#!/usr/bin/env bash
# Builds bench/floor/floorproxy (the floor prototypes of issue 17 target 3) into $1 (default /tmp).
set -euo pipefail
out=${1:-/tmp}
cc -O2 -Wall -Wextra -o "$out/floorproxy" "$(dirname "$0")/floorproxy.c"

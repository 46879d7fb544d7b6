#!/usr/bin/env bash
# What libringlinger-preload.so adds to a close() it does not take over (the issue's target: at
# most 1 us per close when nothing is pending). Runs bench/micro/wrap_overhead without and with
# LD_PRELOAD, alternating so that drift on a noisy machine falls on both, pinned to CPU 0, and
# prints per kind of descriptor the median and range of ns per close and the difference of the
# medians (with - without). Builds nothing.
#
#   bench/wrap_overhead.sh [BUILD_DIR, default build] [RUNS, default 5] [CLOSES, default 20000]
# Needs BUILD_DIR/bench/micro/wrap_overhead (-Dbenchmarks) and
# BUILD_DIR/preload/libringlinger-preload.so, and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
runs=${2:-5}
closes=${3:-20000}
exe=$build/bench/micro/wrap_overhead
preload=$(realpath "$build/preload/libringlinger-preload.so")
for file in "$exe" "$preload"; do
  [ -e "$file" ] || { echo "missing $file: build it first (ninja -C $build)" >&2; exit 1; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for run in $(seq "$runs"); do
  taskset -c 0 "$exe" "$closes" >"$work/without.$run"
  # The preload's summary line goes to stderr: kept to show that it was loaded and took nothing.
  LD_PRELOAD=$preload taskset -c 0 "$exe" "$closes" >"$work/with.$run" 2>"$work/with.stderr"
done

echo "wrap_overhead: $runs runs each, $closes closes per kind and run, taskset -c 0, $(uname -r)"
python3 - "$work" "$runs" <<'PY'
import statistics, sys
work, runs = sys.argv[1], int(sys.argv[2])

def read(mode):
    table = {}
    for run in range(1, runs + 1):
        for line in open(f"{work}/{mode}.{run}"):
            fields = line.split()
            if fields[0].startswith("("):
                continue
            table.setdefault(fields[0], []).append(float(fields[3]))
    return table

without, with_ = read("without"), read("with")
print(f"{'kind':<10} {'without (ns/close)':>26} {'with LD_PRELOAD (ns/close)':>28} {'with - without':>15} {'ratio':>6}")
for kind, plain in without.items():
    wrapped = with_[kind]
    a, b = statistics.median(plain), statistics.median(wrapped)
    span = lambda v: f"{min(v):.0f}-{max(v):.0f}"
    print(f"{kind:<10} {a:9.1f} ({span(plain):>13}) {b:11.1f} ({span(wrapped):>13}) "
          f"{b - a:+12.1f} ns {b / a:6.3f}")
PY
echo "preload's stderr (last run):"
sed 's/^/  /' "$work/with.stderr"

#!/usr/bin/env bash
# What libringlinger-preload.so adds to a close() it does not take over (the issue's target: at
# most 1 us per close when nothing is pending). Runs bench/micro/wrap_overhead without and with
# LD_PRELOAD, alternating so that drift on a noisy machine falls on both, pinned to CPU 0, and
# prints per kind of descriptor the median and range of ns per close and the difference of the
# medians (with - without); and, robust to a load that drifts between runs, the same difference
# within each process against the close system call made directly (bench/micro/wrap_overhead.cpp
# says how). Builds nothing.
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
    """kind -> ([median ns of close() per run], [median close() - median raw per run])"""
    table = {}
    for run in range(1, runs + 1):
        for line in open(f"{work}/{mode}.{run}"):
            fields = line.split()
            if fields[0].startswith("("):
                continue
            libc, diff = float(fields[6]), float(fields[10])
            table.setdefault(fields[0], ([], []))
            table[fields[0]][0].append(libc)
            table[fields[0]][1].append(diff)
    return table

def cell(values):
    return f"{statistics.median(values):8.0f} ({min(values):.0f} to {max(values):.0f})"

without, with_ = read("without"), read("with")
print("Median ns per close() over the runs (range). A: the run with LD_PRELOAD - the run without.")
print("B: in each process, close() - the close system call made directly (which no preload sees),")
print("   every other close, so under the same load: with LD_PRELOAD - without (its control).")
print(f"{'kind':<10} {'without':>24} {'with LD_PRELOAD':>24} {'A':>8} {'ratio':>6} "
      f"{'B without':>24} {'B with':>24} {'B':>6}")
for kind, (plain, plain_diff) in without.items():
    wrapped, wrapped_diff = with_[kind]
    a = statistics.median(wrapped) - statistics.median(plain)
    b = statistics.median(wrapped_diff) - statistics.median(plain_diff)
    print(f"{kind:<10} {cell(plain):>24} {cell(wrapped):>24} {a:+8.0f} "
          f"{statistics.median(wrapped) / statistics.median(plain):6.2f} "
          f"{cell(plain_diff):>24} {cell(wrapped_diff):>24} {b:+6.0f}")
PY
echo "preload's stderr (last run):"
sed 's/^/  /' "$work/with.stderr"

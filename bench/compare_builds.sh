#!/usr/bin/env bash
# Two builds of ringlinger, the same `ringlinger bench` workload, runs alternating (A, B, A, B,
# ...), so that both see the same machine: prints the median of each figure for A and B and the
# ratio B / A. What a change to the library costs (or saves) per close.
#
#   bench/compare_builds.sh A_RINGLINGER B_RINGLINGER [RUNS] [-- BENCH_ARGS...]
#   git worktree add /tmp/before HEAD~3 && (cd /tmp/before && meson setup build && ninja -C build)
#   bench/compare_builds.sh /tmp/before/build/cli/ringlinger build/cli/ringlinger 8 \
#     -- --backend uring --connections 20000 --concurrency 1000
#
# RUNS (default 8) invocations of each build, each `bench --runs 1 --json`; the default workload
# is the one above. Every run must complete every connection (else exit 1). JSONs are kept in a
# temporary directory whose name is printed.
set -euo pipefail
usage() { sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
[ $# -ge 2 ] || { usage >&2; exit 2; }
a=$1 b=$2
shift 2
runs=8
if [ $# -gt 0 ] && [ "$1" != -- ]; then runs=$1; shift; fi
[ "${1:-}" = -- ] && shift
bench_args=("$@")
[ ${#bench_args[@]} -eq 0 ] && bench_args=(--backend uring --connections 20000 --concurrency 1000)
for exe in "$a" "$b"; do
  [ -x "$exe" ] || { echo "compare_builds.sh: $exe is not an executable" >&2; exit 2; }
done
[[ $runs =~ ^[1-9][0-9]*$ ]] || { echo "compare_builds.sh: RUNS must be a positive number" >&2; exit 2; }
work=$(mktemp -d)
echo "compare_builds.sh: $runs runs of each, JSONs in $work" >&2
for ((i = 1; i <= runs; i++)); do
  for side in a b; do
    exe=$a
    [ $side = b ] && exe=$b
    timeout 600 "$exe" bench "${bench_args[@]}" --runs 1 --json "$work/$side.$i.json" \
      >"$work/$side.$i.txt" 2>&1 || { echo "compare_builds.sh: run $side.$i failed:" >&2;
                                      tail -5 "$work/$side.$i.txt" >&2; exit 1; }
  done
done
python3 - "$work" "$runs" "$a" "$b" <<'EOF'
import json, statistics, sys
work, runs, a, b = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def figures(side):
    return [json.load(open(f"{work}/{side}.{i}.json"))["runs"][0]["figures"] for i in range(1, runs + 1)]
fa, fb = figures("a"), figures("b")
print(f"A = {a}\nB = {b}\n{runs} runs each, alternating; medians, [min .. max]")
print(f"{'figure':42s} {'A':>24s} {'B':>24s}  B/A")
for key in fa[0]:
    if not isinstance(fa[0][key], (int, float)):
        continue
    va, vb = [f[key] for f in fa], [f[key] for f in fb]
    ma, mb = statistics.median(va), statistics.median(vb)
    ratio = f"{mb / ma:.3f}" if ma else "-"
    print(f"{key:42s} {ma:10.4g} [{min(va):.4g}..{max(va):.4g}] {mb:10.4g} [{min(vb):.4g}..{max(vb):.4g}]  {ratio}")
failed = sum(f["failed"] for f in fa + fb)
sys.exit(1 if failed else 0)
EOF

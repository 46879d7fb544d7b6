#!/usr/bin/env python3
"""Self instructions per close, function by function, from two callgrind runs of one build.

bench/callgrind.sh runs serve under callgrind twice, with 1000 and with 3000 connections; the
difference of the two runs, divided by the 2000 extra connections, is what each close costs,
without start-up and exit (which dominate either run alone: the dynamic linker, the tables).

  bench/callgrind_table.py DIR                      # a folder that KEEP=1 bench/callgrind.sh kept
  bench/callgrind_table.py BEFORE_DIR AFTER_DIR     # two builds side by side, and the change
  bench/callgrind_table.py --top 40 --all DIR       # more rows; --all: every row, however small

The last line gives the manager's loop steps per close: the total moves with them (see
LOOP_STEP), so two runs are compared at similar values.

A function inlined into others is counted where callgrind puts it: in the function it was
inlined into (self cost is by compiled function, whichever source file the lines came from).
Needs callgrind_annotate (valgrind).
"""
import argparse
import collections
import pathlib
import re
import subprocess
import sys

ROW = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*?):(.*?)(?:\s+\[[^\]]*\])?$")
NAMESPACES = ("ringlinger::detail::", "ringlinger::tools::", "ringlinger::")
# The ops in enum order (the op table's rows), to name Engine::complete<(Op)N>. From this checkout:
# a build with another Op enum would be named wrongly.
OP_TABLE = pathlib.Path(__file__).resolve().parent.parent / "src/core/op_table.hpp"
OPS = re.findall(r"\{Op::(\w+),", OP_TABLE.read_text()) if OP_TABLE.exists() else []
# operator(), operator<<, operator new...: set aside while brackets are counted.
OPERATOR = re.compile(r"operator(?:\(\)|\[\]|<=>|<<=?|>>=?|->\*?|&&|\|\||\+\+|--|[-+*/%^&|~!=<>,]=?"
                      r"| new(?:\[\])?| delete(?:\[\])?| [\w:]+)")


def strip_signature(name: str) -> str:
    """`name` without its parameter list (and what follows it) and its return type."""
    angle = paren = 0
    last_space = -1
    for index, char in enumerate(name):
        if char == "<":
            angle += 1
        elif char == ">":
            angle -= 1
        elif char == "(" and angle == 0:
            if paren == 0 and index > 0 and not name[:index].rstrip().endswith("decltype"):
                return name[last_space + 1:index]  # the parameter list starts here
            paren += 1
        elif char == ")" and angle == 0:
            paren -= 1
        elif char == " " and angle == 0 and paren == 0:
            last_space = index  # a return type ends here (none inside <...> or (...))
    return name[last_space + 1:]


def short_name(name: str) -> str:
    """The function's name without its parameters, return type and the project's namespaces."""
    name = re.sub(r" \[clone [^\]]*\]", "", name).replace("(anonymous namespace)::", "")
    lambda_match = re.search(r"([\w:]+)\(.*?\)::\{lambda\(.*?\)#(\d+)\}", name)
    if name.startswith("std::_Function_handler<") and lambda_match:
        name = f"std::function -> {lambda_match.group(1)}()::lambda#{lambda_match.group(2)}"
    elif lambda_match and re.search(r"\}::operator\(\)\(", name):  # a lambda called directly
        name = f"{strip_signature(lambda_match.group(1))}()::lambda#{lambda_match.group(2)}"
    else:
        operators = OPERATOR.findall(name)
        name = strip_signature(OPERATOR.sub("\x00", name))
        for operator in operators:
            name = name.replace("\x00", operator, 1)
        if "{lambda" in name:  # a template instantiated for a lambda: the lambda's name is noise
            name = re.sub(r"<.*>", "<lambda>", name)
    for namespace in NAMESPACES:
        name = name.replace(namespace, "")
    op_name = lambda m: OPS[int(m.group(1))] if int(m.group(1)) < len(OPS) else m.group(0)
    return re.sub(r"\(Op\)(\d+)", op_name, name)


def self_cost(path: pathlib.Path) -> collections.Counter:
    """Self instructions (Ir) by function, of one callgrind output file."""
    try:
        out = subprocess.run(["callgrind_annotate", "--auto=no", "--inclusive=no",
                              "--threshold=100", str(path)],
                             check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as failure:
        sys.exit(f"callgrind_table.py: callgrind_annotate (valgrind) on {path}: {failure}")
    cost = collections.Counter()
    for line in out.splitlines():
        match = ROW.match(line)
        if match and "PROGRAM TOTALS" not in line:
            cost[short_name(match.group(3))] += int(match.group(1).replace(",", ""))
    if not cost:
        sys.exit(f"callgrind_table.py: no function costs in {path} (one Ir column expected)")
    return cost


# A loop step of the manager: its calls, per close, say how well the run batched. Each step costs
# some 600-700 instructions of its own (the wait, the timers, the listeners), shared by the closes
# of its batch; under callgrind the batches vary from run to run (0.14 to 0.32 steps per close),
# and so does the total by up to 100: compare totals at similar step counts.
LOOP_STEP = "ringlinger::Manager::Impl::run_once("


def calls_to(path: pathlib.Path, prefix: str) -> int:
    """How many calls the callgrind output file records to functions whose name starts so."""
    names: dict[str, str] = {}
    count = 0
    target = False
    with path.open(errors="replace") as lines:
        for line in lines:
            if line.startswith("cfn="):
                match = re.match(r"cfn=\((\d+)\)(?: (.*))?", line.rstrip("\n"))
                if match:
                    if match.group(2):
                        names[match.group(1)] = match.group(2)
                    target = names.get(match.group(1), "").startswith(prefix)
            elif line.startswith("fn=("):
                match = re.match(r"fn=\((\d+)\) (.*)", line.rstrip("\n"))
                if match:
                    names[match.group(1)] = match.group(2)
            elif line.startswith("calls=") and target:
                count += int(line[6:].split()[0])
                target = False
    return count


def runs_of(folder: pathlib.Path) -> tuple[tuple[int, pathlib.Path], tuple[int, pathlib.Path]]:
    """The smallest and the largest run in a folder that KEEP=1 bench/callgrind.sh kept."""
    named = ((re.fullmatch(r"callgrind\.(\d+)\.1", p.name), p) for p in folder.glob("callgrind.*.1"))
    runs = sorted((int(match.group(1)), p) for match, p in named if match)
    if len(runs) < 2:
        sys.exit(f"callgrind_table.py: {folder} holds no pair of callgrind.N.1 files "
                 "(KEEP=1 bench/callgrind.sh keeps them)")
    return runs[0], runs[-1]


def per_close(folder: pathlib.Path) -> tuple[collections.Counter, int]:
    """Instructions per close by function: the largest run minus the smallest, per extra close."""
    (small, small_path), (large, large_path) = runs_of(folder)
    before, after = self_cost(small_path), self_cost(large_path)
    closes = large - small
    return collections.Counter({f: (after[f] - before[f]) / closes for f in before | after}), closes


def loop_steps_per_close(folder: pathlib.Path) -> float:
    """The manager's loop steps per close, the same difference as per_close() (0 for the floor)."""
    (small, small_path), (large, large_path) = runs_of(folder)
    return (calls_to(large_path, LOOP_STEP) - calls_to(small_path, LOOP_STEP)) / (large - small)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+", type=pathlib.Path, metavar="DIR")
    parser.add_argument("--top", type=int, default=30, help="rows to show (default 30)")
    parser.add_argument("--all", action="store_true", help="every row of at least 0.5")
    args = parser.parse_args()
    if len(args.folders) > 2:
        parser.error("one folder, or two to compare")
    tables = [per_close(folder)[0] for folder in args.folders]
    functions = set().union(*tables)
    if len(tables) == 2:
        key = lambda f: (-abs(tables[1][f] - tables[0][f]), f)
    else:
        key = lambda f: (-tables[0][f], f)
    rows = sorted(functions, key=key)
    shown = [f for f in rows if max(abs(t[f]) for t in tables) >= 0.5]
    if not args.all:
        shown = shown[:args.top]
    if len(tables) == 1:
        print(f"{'per close':>9}  function")
        for function in shown:
            print(f"{tables[0][function]:9.1f}  {function}")
        print(f"{sum(tables[0].values()):9.0f}  (total, every function)")
        print(f"{loop_steps_per_close(args.folders[0]):9.3f}  loop steps per close (see LOOP_STEP)")
    else:
        print(f"{'before':>8} {'after':>8} {'change':>8}  function")
        for function in shown:
            b, a = tables[0][function], tables[1][function]
            print(f"{b:8.1f} {a:8.1f} {a - b:+8.1f}  {function}")
        b, a = sum(tables[0].values()), sum(tables[1].values())
        print(f"{b:8.0f} {a:8.0f} {a - b:+8.0f}  (total, every function)")
        b, a = (loop_steps_per_close(folder) for folder in args.folders)
        print(f"{b:8.3f} {a:8.3f} {a - b:+8.3f}  loop steps per close (see LOOP_STEP)")


if __name__ == "__main__":
    main()

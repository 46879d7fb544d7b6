#!/usr/bin/env python3
"""The table of `tools/test --repeat N`: how often each test passed over the runs.

    tools/repeat_report.py --runs N LOGDIR            the whole table (also LOGDIR/report.txt)
    tools/repeat_report.py --run K --runs N LOGDIR    one line about run K

LOGDIR holds, for each run K that completed, runK.json (meson's testlog: one JSON object per
line, one line per test), runK.rc (meson test's exit code), runK.seconds, runK.txt (meson's text
log with every test's output) and runK.out (what meson test printed). The table has one line per
meson test (passes/N) and, for gtest programs, one line per test case that failed at least once;
then each failure with its run and the first lines of its message. Exit code 1 if anything failed
in any run (a test that failed, timed out or did not run, meson failing), else 0.
"""
import argparse
import json
import os
import re
import signal
import sys

PASSED = {"OK", "EXPECTEDFAIL"}
SKIPPED = {"SKIP"}
MESSAGE_LINES = 6

RUN_RE = re.compile(r"^\[ RUN      \] (\S+)")
END_RE = re.compile(r"^\[ +(OK|FAILED|SKIPPED) +\] (\S+?)(?:,| \(|$)")
MESSAGE_START_RE = re.compile(
    r"Failure|Traceback|ERROR|Error|error:|FAIL|Assertion|assert|Sanitizer|runtime error")


def short_name(name):
    """'ringlinger:unit / user_data' -> 'user_data'."""
    return name.split(" / ", 1)[1] if " / " in name else name


def gtest_cases(stdout):
    """(ran gtest?, {case: failure lines}, case that never finished or None)."""
    failed = {}
    current, lines = None, []
    ran = False
    for line in stdout.splitlines():
        match = RUN_RE.match(line)
        if match:
            ran = True
            current, lines = match.group(1), []
            continue
        match = END_RE.match(line)
        if match:
            verdict, case = match.groups()
            if verdict == "FAILED":
                if case == current:
                    failed[case] = lines
                else:
                    failed.setdefault(case, [])  # the summary list at the end
            if case == current:
                current, lines = None, []
            continue
        if current is not None:
            lines.append(line)
    unfinished = None
    if current is not None:
        unfinished = current
        failed[current] = lines
    return ran, failed, unfinished


def message(lines, from_end=False):
    """The first lines of a failure message among `lines` (its last lines if none stands out)."""
    lines = [line.rstrip() for line in lines if line.strip()]
    for index, line in enumerate(lines):
        if MESSAGE_START_RE.search(line):
            return lines[index:index + MESSAGE_LINES]
    return lines[-MESSAGE_LINES:] if from_end or len(lines) > MESSAGE_LINES else lines


def read_text(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return None


def load_run(logdir, run):
    """{test: entry} of one run (entry: meson's JSON object), meson's exit code, seconds."""
    tests = {}
    text = read_text(os.path.join(logdir, f"run{run}.json"))
    for line in (text or "").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line cut short when meson was killed
        tests[short_name(entry.get("name", "?"))] = entry
    rc = read_text(os.path.join(logdir, f"run{run}.rc"))
    seconds = read_text(os.path.join(logdir, f"run{run}.seconds"))
    return tests, (int(rc) if rc and rc.strip().lstrip("-").isdigit() else None), \
        (seconds.strip() if seconds else "?")


def run_failures(logdir, run, tests, rc, all_names):
    """[(test, case or None, result, message lines)] of one run."""
    failures = []
    for name in sorted(all_names):
        entry = tests.get(name)
        if entry is None:
            why = "killed by timeout(1)" if rc == 124 else f"meson test exited {rc}"
            failures.append((name, None, "NOT RUN", [f"no result in this run ({why})"]))
            continue
        result = entry.get("result", "?")
        stdout = entry.get("stdout") or ""
        stderr = entry.get("stderr") or ""
        _, cases, unfinished = gtest_cases(stdout)
        if result in PASSED or result in SKIPPED:
            continue
        head = []
        if result == "TIMEOUT":
            head = [f"timed out after {entry.get('duration') or 0:.1f} s"]
        elif (entry.get("returncode") or 0) < 0:
            number = -entry["returncode"]
            try:
                head = [f"killed by signal {number} ({signal.Signals(number).name})"]
            except ValueError:
                head = [f"killed by signal {number}"]
        elif entry.get("returncode") not in (None, 0, 1):
            head = [f"exit code {entry.get('returncode')}"]
        if cases:
            failures.append((name, None, result, head))
            for case, lines in cases.items():
                if case == unfinished:
                    # Aborted, crashed or timed out in this case: its last words, then stderr's.
                    lines = ["(did not finish: running when the test ended)"] + message(
                        lines + stderr.splitlines(), from_end=True)
                else:
                    lines = message(lines)
                failures.append((name, case, result, lines))
        else:
            output = stdout.splitlines() + stderr.splitlines()
            failures.append((name, None, result, head + message(output, from_end=True)))
    if not tests or (rc not in (0, None) and not failures):
        out = (read_text(os.path.join(logdir, f"run{run}.out")) or "").splitlines()
        result = f"exit {rc}" if tests else f"no test ran (exit {rc})"
        failures.append(("(meson test)", None, result, message(out, from_end=True)))
    return failures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logdir")
    parser.add_argument("--runs", type=int, required=True, help="how many runs completed")
    parser.add_argument("--run", type=int, help="only one line about this run")
    parser.add_argument("--note", default="", help="shown in the title (build dir, load)")
    args = parser.parse_args()

    if args.run is not None:
        tests, rc, seconds = load_run(args.logdir, args.run)
        failures = run_failures(args.logdir, args.run, tests, rc, tests.keys())
        failed = sorted({name for name, case, _, _ in failures if case is None})
        passed = sum(1 for entry in tests.values() if entry.get("result") in PASSED)
        skipped = sum(1 for entry in tests.values() if entry.get("result") in SKIPPED)
        line = f"run {args.run}/{args.runs}: {passed} passed"
        if skipped:
            line += f", {skipped} skipped"
        line += f", {len(failed)} failed"
        if failed:
            results = {name: result for name, case, result, _ in failures if case is None}
            line += ": " + ", ".join(f"{name} ({results[name]})" for name in failed)
        print(line + f"  [{seconds} s]", flush=True)
        return 0

    runs = [load_run(args.logdir, run) for run in range(1, args.runs + 1)]
    all_names = set()
    for tests, _, _ in runs:
        all_names.update(tests)
    failures = []  # (run, test, case, result, lines)
    for run, (tests, rc, _) in enumerate(runs, 1):
        for name, case, result, lines in run_failures(args.logdir, run, tests, rc, all_names):
            failures.append((run, name, case, result, lines))

    def label(name, case):
        return name if case is None else f"{name} :: {case}"

    failed_runs = {}  # label -> set of runs
    for run, name, case, _, _ in failures:
        failed_runs.setdefault(label(name, case), set()).add(run)
    rows = []
    for name in sorted(all_names):
        skipped = sum(1 for tests, _, _ in runs if tests.get(name, {}).get("result") in SKIPPED)
        fails = len(failed_runs.get(name, ()))
        note = f"  ({skipped} skipped)" if skipped else ""
        rows.append((name, args.runs - fails - skipped, note + ("  FAILED" if fails else "")))
        cases = sorted({case for _, n, case, _, _ in failures if n == name and case is not None})
        for case in cases:
            rows.append((label(name, case), args.runs - len(failed_runs[label(name, case)]), ""))
    if "(meson test)" in failed_runs:
        rows.append(("(meson test itself)", args.runs - len(failed_runs["(meson test)"]), ""))

    out = []
    title = f"ringlinger: {args.runs} run{'s' if args.runs != 1 else ''}"
    if args.note:
        title += f" ({args.note})"
    out.append(f"{title}; logs in {args.logdir}/")
    width = max([len(row[0]) for row in rows] + [4])
    for text, passes, note in rows:
        out.append(f"  {text:<{width}}  {passes}/{args.runs}{note}")
    if failures:
        out.append("")
        out.append("failures:")
        first_seen = {}  # the same failure again: one line pointing at the first run
        for run, name, case, result, lines in failures:
            log = ""
            if case is None:
                log = f"  (log: {args.logdir}/run{run}.{'out' if name == '(meson test)' else 'txt'})"
            key = (name, case, result, tuple(lines))
            if key in first_seen:
                out.append(f"  run {run}: {label(name, case)}: {result} as in run {first_seen[key]}"
                           + log)
                continue
            first_seen[key] = run
            out.append(f"  run {run}: {label(name, case)}: {result}" + log)
            out.extend(f"      {line}" for line in lines)
        count = sum(1 for failure in failures if failure[2] is None)
        out.append(f"ringlinger: {count} failure{'s' if count != 1 else ''} in "
                   f"{len({failure[0] for failure in failures})} of {args.runs} runs")
    else:
        out.append("ringlinger: every test passed in "
                   + (f"all {args.runs} runs" if args.runs > 1 else "the one run"))
    text = "\n".join(out) + "\n"
    sys.stdout.write(text)
    with open(os.path.join(args.logdir, "report.txt"), "w") as f:
        f.write(text)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Markdown tables for docs/PERFORMANCE.md from the JSON files bench/performance.sh writes.

    bench/perf_tables.py [DIR]      # default docs/perf

For every workload: backend x concurrency -> conn/s, CPU per close (user + system), the ratio
to the blocking loop (the kernel floor) and to nginx, syscalls, io_uring_enter calls, io-wq
punts and context switches per close, close latency p50/p99, manager memory per connection.
Medians over the runs of `ringlinger bench`.
"""
import json
import pathlib
import sys


def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def table(path):
    report = json.loads(path.read_text())
    config = report["configuration"]
    rows = report["summary"]
    by = {(r["backend"], r["concurrency"]): r["medians"] for r in rows}
    out = [
        f"`{path.stem}`: {config['response_bytes']} response, {config['body_bytes']} unread body"
        + (f", clients read {config['read_delay']} late" if config["read_delay"] != "0" else "")
        + f", {config['connections']} connections per run, {config['runs']} runs (medians)",
        "",
        "| concurrency | backend | conn/s | CPU us/close (usr + sys) | usr % | vs blocking | vs nginx "
        "| syscalls | enters | punts | ctxsw | close ms p50 / p99 | mgr B/conn | failed |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for concurrency in config["concurrency"]:
        floor = by.get(("blocking", concurrency), {}).get("cpu_us_per_close")
        nginx = by.get(("nginx", concurrency), {}).get("cpu_us_per_close")
        for backend in config["backends"]:
            m = by.get((backend, concurrency))
            if m is None:
                continue
            cpu = m["cpu_us_per_close"]
            latency = m.get("close_latency_ms")
            out.append(
                "| {} | {} | {:.0f} | {:.1f} + {:.1f} = **{:.1f}** | {:.1f} | {} | {} | {} | {} | {} | {:.2f} | {} | {} | {} |".format(
                    concurrency, backend, m["connections_per_second"],
                    m["cpu_user_us_per_close"], m["cpu_system_us_per_close"], cpu,
                    100 * m["cpu_user_us_per_close"] / cpu if cpu else 0,
                    fmt(cpu / floor if floor else None, ".2f") + "x" if floor else "-",
                    fmt(cpu / nginx if nginx else None, ".2f") + "x" if nginx else "-",
                    fmt(m.get("syscalls_per_close"), ".2f"),
                    fmt(m.get("io_uring_enter_per_close"), ".3f"),
                    fmt(m.get("io_wq_punts_per_close"), ".2f"),
                    m["context_switches_per_close"],
                    "-" if not latency else f"{latency['p50']:.1f} / {latency['p99']:.1f}",
                    # Fixed costs (rings, buffer pool, slot table) spread over the connections
                    # held: meaningful only when many are held at once.
                    fmt(m.get("manager_bytes_per_peak_connection")
                        if m.get("server_peak_live_connections", 0) >= 5000 else None, ".0f"),
                    m["failed"]))
    return "\n".join(out)


def main():
    directory = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "docs/perf")
    files = sorted(directory.glob("*.json"), key=lambda p: p.stat().st_mtime)
    if not files:
        sys.exit(f"perf_tables.py: no JSON in {directory} (run bench/performance.sh)")
    for path in files:
        print(table(path))
        print()


if __name__ == "__main__":
    main()

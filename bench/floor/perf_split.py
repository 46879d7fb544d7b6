#!/usr/bin/env python3
"""Splits a server's CPU per close, from a `perf record -e cpu-clock -g` of it, into the TCP work
every server does and the rest: how the work is asked for (system calls, io_uring), sleeping and
waking, user space.

    bench/floor/perf_split.py CONNECTIONS FREQUENCY PERF_DATA

FREQUENCY is perf record's -F. A sample counts as the TCP work of what its call chain's outermost
operation is: the send (tcp_sendmsg), the receive (tcp_recvmsg), the shutdown (inet_shutdown), the
accept (do_accept), the close (__fput), or, wherever it runs, the loopback's softirq
(net_rx_action: on loopback the peer's half of a segment is received in the sender's softirq).
Samples under schedule() or a socket wait are waiting, whatever operation they are under. The rest
is the machinery: system call entry and exit, io_uring's submission, completion and wait, the
scheduler's wake-ups. Prints one line of figures in us per close, then the work's pieces.
"""
import collections
import subprocess
import sys

WORK = {"tcp_sendmsg": "send", "tcp_recvmsg": "receive", "inet_shutdown": "shutdown",
        "do_accept": "accept", "__fput": "close"}
WAIT = {"schedule", "__schedule", "sk_wait_data", "inet_csk_wait_for_connect"}
SOFTIRQ = "net_rx_action"


def chains(path):
    """Each sample's call chain, leaf first, as function names."""
    script = subprocess.run(["perf", "script", "-i", path, "-F", "ip,sym"], capture_output=True,
                            text=True, check=True).stdout
    for block in script.split("\n\n"):
        frames = [line.split(None, 1) for line in block.strip().split("\n") if line.strip()]
        if frames:
            yield [f[1].split("+")[0] if len(f) > 1 else f[0] for f in frames]


def category(names):
    if WAIT.intersection(names):
        return "waiting"
    if SOFTIRQ in names:
        return "softirq"
    outermost = next((WORK[n] for n in reversed(names) if n in WORK), None)
    if outermost:
        return outermost
    kernel = any(n.startswith(("entry_SYSCALL", "do_syscall")) or n.startswith("io_")
                 for n in names) or names[0].startswith(("_", "io_", "[unknown]"))
    return "machinery" if kernel else "user"


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    connections, frequency, path = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
    counts = collections.Counter(category(names) for names in chains(path))
    us = {k: v * 1e6 / frequency / connections for k, v in counts.items()}
    work = sum(us.get(k, 0.0) for k in ["softirq", *WORK.values()])
    total = sum(us.values())
    print(f"total {total:.2f}  work {work:.2f}  machinery {us.get('machinery', 0):.2f}  "
          f"waiting {us.get('waiting', 0):.2f}  user {us.get('user', 0):.2f}")
    print("  work: " + ", ".join(f"{k} {us.get(k, 0):.2f}" for k in ["softirq", *WORK.values()]))


if __name__ == "__main__":
    main()

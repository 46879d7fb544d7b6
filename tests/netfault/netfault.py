#!/usr/bin/env python3
"""Network faults between `ringlinger serve` and its peers, over real TCP through a veth pair.

Each scenario makes two network namespaces (rl-nf-srv-PID and rl-nf-cli-PID) joined by a veth
pair, runs `ringlinger serve` in one and the verifying `ringlinger client` in the other, injects
a fault while connections are in a known phase, and then checks what the server did:

  10-blackhole-send     every packet from the client is dropped (nftables, in the server's
                        namespace) while the responses are still being sent to slow readers:
                        each connection must end with send_timeout one --send-timeout after
                        the last acknowledgement that reached it before the blackhole, and be
                        reset (on_timeout=reset).
  10-blackhole-drain    the same blackhole once every response and our FIN are acknowledged
                        and the server is draining (FIN_WAIT2), before the clients read: the
                        clients still get every byte and a clean EOF, the server never sees
                        their FIN and must end each connection with drain_idle_timeout one
                        --drain-idle-timeout after the acknowledgement of its FIN.
  10-blackhole-drain-inflight
                        the blackhole while the server drains with part of its response still
                        unacknowledged (FIN_WAIT1): drain_idle_timeout one idle period after
                        the last acknowledgement before the blackhole.
  11-link-down          `ip link set DEV down` on the server's veth during the transfers:
                        send_timeout for every connection, timed as for the blackhole; the
                        link comes back up afterwards.
  11-link-flap          the link goes down for 0.5 s (less than the send timeout) and back up:
                        every connection must still complete with exact bytes and a clean EOF.
  12-slow-link          a tc tbf rate limit on the server's veth makes the link the bottleneck
                        for 1000 connections: every one must complete with exact bytes and a
                        clean EOF (the client's verdict) and none may hit the send timeout.
  12-slow-reader-send-timeout
                        no fault, default buffers: 200 readers of 1 KiB per 10 ms fetch 2 MiB
                        with a 3 s send timeout, above the time a reader's receive window can
                        stay closed while it reads: every one completes, and the send timer
                        was extended by acknowledgements at least once.

The send and drain idle timeouts judge progress (see PROGRESS RULE below): a connection is ended
one timeout after the last acknowledgement of its bytes, so the faulted scenarios read each
server socket's TCP_INFO (`ss -ti` in the server's namespace) before and after the fault, and
check every close against the window the rule gives that socket.

For every scenario: connections OK, bytes lost, serve's outcome counters (`serve --json` after
SIGTERM), serve's fd count and RSS before the load and after the last connection closed, the
server namespace's /proc/net/sockstat and its TCP sockets (from /proc/PID/net/tcp) before and
after, and when the connections were closed compared to the configured timeout. Every
expectation is an explicit check; the exit code is 1 when one fails.

Needs root (namespaces, veth, nftables, tc), the `ip`, `ss`, `tc` and `nft` programs (Debian's
iproute2 and nftables) and the ringlinger binary; builds nothing.

    tests/netfault/netfault.py build/cli/ringlinger [--scenario 10,12] [--connections 200]
        [--slow-link-connections 1000] [--slow-reader-connections 200] [--json netfault.json]
"""
import argparse
import atexit
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

SERVER_IP = "10.213.7.1"  # both addresses exist only inside the two namespaces made here
CLIENT_IP = "10.213.7.2"
PORT = 8080
SERVER_DEV = "rlnf-srv"  # the veth ends, each inside its own namespace
CLIENT_DEV = "rlnf-cli"
PREFIX = "rl-nf-"

# /proc/net/tcp states.
TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
              6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN",
              11: "CLOSING", 12: "NEW_SYN_RECV"}

SCENARIO_NAMES = ["10-blackhole-send", "10-blackhole-drain", "10-blackhole-drain-inflight",
                  "11-link-down", "11-link-flap", "12-slow-link", "12-slow-reader-send-timeout"]


class Interrupted(Exception):
    pass


class ScenarioError(Exception):
    """The scenario could not be carried out (a setup step failed, a process did not start)."""


# ---------------------------------------------------------------------------------------------
# Processes and namespaces: everything made here is registered and undone by cleanup(), which
# runs on every way out (normal end, exception, SIGINT/SIGTERM, atexit).

_processes = []   # Popen objects started here
_namespaces = []  # namespace names created here
_verbose = False


def log(message):
    if _verbose:
        print(f"  [{time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(args, check=True, timeout=30, input_text=None):
    log("$ " + " ".join(args))
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, input=input_text)
    if check and result.returncode != 0:
        raise ScenarioError(f"`{' '.join(args)}` failed ({result.returncode}): "
                            f"{result.stderr.strip() or result.stdout.strip()}")
    return result


def start(args, stdout_path, stderr_path):
    log("& " + " ".join(args))
    with open(stdout_path, "w") as out, open(stderr_path, "w") as err:
        process = subprocess.Popen(args, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
    _processes.append(process)
    return process


def stop_process(process, timeout=5.0, sig=signal.SIGTERM):
    """Sends sig to this process (by its pid) and waits; SIGKILL if it does not end in time."""
    if process.poll() is not None:
        return process.returncode
    try:
        process.send_signal(sig)
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(timeout=5)


def delete_namespace(name):
    subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=30)


def cleanup():
    for process in _processes:
        if process.poll() is None:
            process.kill()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
    _processes.clear()
    for name in list(_namespaces):
        delete_namespace(name)
        _namespaces.remove(name)


def remove_stale_namespaces():
    """Namespaces left by an earlier run of this script that was killed (its pid is gone)."""
    result = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30)
    for line in result.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        match = re.fullmatch(PREFIX + r"(?:srv|cli)-(\d+)", name)
        if match and not os.path.exists(f"/proc/{match.group(1)}"):
            log(f"removing stale namespace {name}")
            delete_namespace(name)


class NamespacePair:
    """Two namespaces joined by a veth pair: SERVER_IP on SERVER_DEV, CLIENT_IP on CLIENT_DEV."""

    def __init__(self):
        pid = os.getpid()
        self.server = f"{PREFIX}srv-{pid}"
        self.client = f"{PREFIX}cli-{pid}"

    def __enter__(self):
        for name in (self.server, self.client):
            run(["ip", "netns", "add", name])
            _namespaces.append(name)
        run(["ip", "-n", self.server, "link", "add", SERVER_DEV, "type", "veth", "peer", "name",
             CLIENT_DEV, "netns", self.client])
        run(["ip", "-n", self.server, "addr", "add", f"{SERVER_IP}/24", "dev", SERVER_DEV])
        run(["ip", "-n", self.client, "addr", "add", f"{CLIENT_IP}/24", "dev", CLIENT_DEV])
        for name, dev in ((self.server, SERVER_DEV), (self.client, CLIENT_DEV)):
            run(["ip", "-n", name, "link", "set", "lo", "up"])
            run(["ip", "-n", name, "link", "set", dev, "up"])
        return self

    def __exit__(self, *exc):
        for process in list(_processes):
            if process.poll() is None:
                process.kill()
                process.wait(timeout=5)
            _processes.remove(process)
        for name in (self.client, self.server):
            if name in _namespaces:
                delete_namespace(name)
                _namespaces.remove(name)
        return False

    def in_server(self, args):
        return ["ip", "netns", "exec", self.server] + args

    def in_client(self, args):
        return ["ip", "netns", "exec", self.client] + args

    # The faults.
    def blackhole_client(self):
        """Drops every packet from the client at the server's input (nftables, server netns)."""
        rules = ("table inet rlnetfault {\n"
                 "  chain input {\n"
                 "    type filter hook input priority -300; policy accept;\n"
                 f"    ip saddr {CLIENT_IP} counter drop\n"
                 "  }\n"
                 "}\n")
        run(self.in_server(["nft", "-f", "-"]), input_text=rules)

    def blackhole_drops(self):
        result = run(self.in_server(["nft", "list", "table", "inet", "rlnetfault"]), check=False)
        match = re.search(r"counter packets (\d+) bytes (\d+) drop", result.stdout)
        return {"packets": int(match.group(1)), "bytes": int(match.group(2))} if match else None

    def set_sysctl(self, namespace, name, value):
        path = "/proc/sys/" + name.replace(".", "/")
        run(["ip", "netns", "exec", namespace, "sh", "-c", f"echo '{value}' > {path}"])

    def small_buffers(self):
        """Server send buffers of at most 128 KiB and client receive buffers of at most 128 KiB
        (per namespace): a send to a slow reader then completes a few times per 100 ms, so when
        sends stop making progress is known to within a fraction of the send timeout."""
        self.set_sysctl(self.server, "net.ipv4.tcp_wmem", "4096 16384 131072")
        self.set_sysctl(self.client, "net.ipv4.tcp_rmem", "4096 65536 131072")

    def set_server_link(self, up):
        run(["ip", "-n", self.server, "link", "set", SERVER_DEV, "up" if up else "down"])

    def limit_rate(self, rate, burst, limit):
        run(["tc", "-n", self.server, "qdisc", "add", "dev", SERVER_DEV, "root", "tbf", "rate",
             rate, "burst", burst, "limit", limit])

    def qdisc_stats(self):
        result = run(["tc", "-s", "-n", self.server, "qdisc", "show", "dev", SERVER_DEV],
                     check=False)
        match = re.search(r"Sent (\d+) bytes (\d+) pkt \(dropped (\d+), overlimits (\d+)",
                          result.stdout)
        if not match:
            return None
        return {"sent_bytes": int(match.group(1)), "sent_packets": int(match.group(2)),
                "dropped": int(match.group(3)), "overlimits": int(match.group(4))}


# ---------------------------------------------------------------------------------------------
# What is measured about the server process and its namespace (through /proc/PID/...).

def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def sockstat(pid):
    """TCP line of /proc/net/sockstat as seen from the server's namespace. inuse and tw are
    counted per namespace; orphan, alloc and mem are machine-wide (every namespace, every
    process on this machine)."""
    with open(f"/proc/{pid}/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                fields = line.split()[1:]
                return {fields[i]: int(fields[i + 1]) for i in range(0, len(fields), 2)}
    return {}


def tcp_sockets(pid):
    """The server namespace's TCP sockets (IPv4), from /proc/PID/net/tcp: state, send queue
    (unacknowledged + unsent bytes), receive queue, and whether an fd holds it (inode != 0)."""
    sockets = []
    with open(f"/proc/{pid}/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            tx, rx = (int(x, 16) for x in fields[4].split(":"))
            sockets.append({"state": TCP_STATES.get(int(fields[3], 16), fields[3]),
                            "send_q": tx, "recv_q": rx, "inode": int(fields[9])})
    return sockets


def socket_summary(sockets):
    """Counts by state; 'lingering' = every socket but the listener and TIME_WAIT buckets;
    'orphans' = lingering sockets no fd refers to (closed by the process, still in the kernel)."""
    states = {}
    for s in sockets:
        states[s["state"]] = states.get(s["state"], 0) + 1
    lingering = [s for s in sockets if s["state"] not in ("LISTEN", "TIME_WAIT")]
    return {
        "states": dict(sorted(states.items())),
        "lingering": len(lingering),
        "orphans": sum(1 for s in lingering if s["inode"] == 0),
        "send_q_bytes": sum(s["send_q"] for s in lingering),
        "recv_q_bytes": sum(s["recv_q"] for s in lingering),
    }


def tcp_counters(pid):
    """The server namespace's TCP counters (Tcp: of /proc/net/snmp and TcpExt: of
    /proc/net/netstat, what `nstat` shows): the namespace is new, so they count this run only."""
    counters = {}
    for name, prefix in (("snmp", "Tcp:"), ("netstat", "TcpExt:")):
        with open(f"/proc/{pid}/net/{name}") as f:
            lines = [line.split() for line in f if line.startswith(prefix)]
        for header, values in zip(lines[0::2], lines[1::2]):
            for key, value in zip(header[1:], values[1:]):
                if int(value):
                    counters[key] = int(value)
    return counters


def stable_fd_count(pid, timeout=2.0):
    """serve opens files for a moment now and then (/proc/self/statm to sample its RSS, e.g. just
    after it says it is listening): the fd count once it has not changed for 50 ms."""
    deadline = time.monotonic() + timeout
    last, same = fd_count(pid), 0
    while same < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
        count = fd_count(pid)
        same = same + 1 if count == last else 0
        last = count
    return last


def snapshot(pid):
    return {"fds": stable_fd_count(pid), "rss_kib": rss_kib(pid), "sockstat": sockstat(pid),
            "sockets": socket_summary(tcp_sockets(pid)), "tcp_counters": tcp_counters(pid)}


class FdSampler(threading.Thread):
    """Samples the server's fd count every 5 ms and keeps the changes: when connections closed."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.samples = []  # (monotonic time, fd count), one per change
        self._stop_event = threading.Event()

    def run(self):
        last = None
        while not self._stop_event.is_set():
            try:
                count = fd_count(self.pid)
            except OSError:
                break
            if count != last:
                self.samples.append((time.monotonic(), count))
                last = count
            time.sleep(0.005)

    def stop(self):
        self._stop_event.set()
        self.join(timeout=2)

    def latest(self):
        return self.samples[-1][1] if self.samples else None

    def close_times(self, since):
        """One time per fd that went away after `since` (seconds after `since`)."""
        return [t - since for t in self.close_moments(since)]

    def close_moments(self, since):
        """One moment (time.monotonic()) per fd that went away after `since`, when it was seen."""
        moments = []
        previous = None
        for t, count in self.samples:
            if previous is not None and count < previous and t >= since:
                moments.extend([t] * (previous - count))
            previous = count
        return moments


# ---------------------------------------------------------------------------------------------
# PROGRESS RULE: when the engine ends a connection whose peer was cut off, and what the kernel says
# of each connection's acknowledgements (the same TCP_INFO the engine reads).
#
# The send and drain idle timeouts end a connection only after a whole period without progress:
# no byte of ours acknowledged (tcpi_bytes_acked, a counter that only grows), none of the peer's
# bytes received and (send phase) no send completed. Input and completed sends re-arm the timer
# as they happen; when it expires the engine reads TCP_INFO, and if the counter moved since it
# last asked (never asked: an acknowledgement came after the period began), the period restarts
# at the last acknowledgement, re-armed to the first multiple of timeout/64 at or after its end;
# otherwise the connection ends. The time of that acknowledgement is an upper bound: now -
# tcpi_last_ack_recv + 10 ms (TCP_INFO's ages count in jiffies), and while the peer's window is
# closed at most our last data segment + tcpi_rto + 10 ms, whichever is earlier. Once a fault
# lets no acknowledgement reach TCP, a connection therefore ends
#   not before  A + timeout, A = its last acknowledgement that moved the counter: a timer never
#               fires early, and the engine never puts that acknowledgement earlier than it was;
#   not after   L + 10 ms + 1 jiffy + timeout + timeout/64 + scheduling, L = its last
#               acknowledgement of any kind (the engine's bound is at most L + 10 ms + the jiffy
#               its own reading of the age may be off; the window-closed bound only lowers it),
#               timeout/64 the re-arming granularity; scheduling is --slack (it also covers
#               progress the loop notes itself after L: a send that completed, or the drain's
#               start, each at the moment the loop handles it).
# A and L are per connection: the script samples TCP_INFO of every server socket (`ss -ti` in the
# server's namespace) until the fault, and once more after it. A is later than the start of the
# last sample that still showed a smaller counter; L is at most the end of the sample after the
# fault minus its lastack age, plus a jiffy. Which close is which connection is not known (the
# fds are counted), but if every close lies in its own window, the k-th earliest close lies
# between the k-th earliest lower and upper bounds: that is what is checked.
JIFFY_S = 0.010           # TCP_INFO's ages count in jiffies of 1-10 ms (HZ 100-1000): the longest
ENGINE_ACK_MARGIN_S = 0.010  # what the engine adds to such an age (kJiffyAtMost, src/kernel/tcp_info.cpp)
TIMER_LANES = 64          # TimerQueue::kLanes: a re-armed deadline fires at most timeout/64 late
# The engine reads its clock once per batch of expiries, before the getsockopt of each, so the
# acknowledgement time it derives can be early by the time the batch took before that socket's
# turn; a deadline set from it then fires early by as much. Bounded by this (a loaded machine).
BATCH_CLOCK_S = 0.05


def read_tcp_info(pair):
    """One reading of TCP_INFO of every connection of serve (`ss -tinO` in the server's
    namespace): (start, end, {client port: fields}). Fields: state, bytes_acked, lastack (ms),
    lastsnd (ms), unacked and notsent (segments, bytes), rto (ms); ss leaves zeros out."""
    t0 = time.monotonic()
    result = subprocess.run(pair.in_server(["ss", "-tinHO", "state", "connected", "sport", "=",
                                            f":{PORT}"]),
                            capture_output=True, text=True, timeout=30)
    t1 = time.monotonic()
    if result.returncode != 0:
        raise ScenarioError(f"ss failed ({result.returncode}): {result.stderr.strip()}")
    sockets = {}
    for line in result.stdout.splitlines():
        fields = line.split()
        if len(fields) <= 5 or fields[0] == "TIME-WAIT":
            continue  # no TCP_INFO
        info = {"state": fields[0]}
        for key in ("bytes_acked", "lastack", "lastsnd", "unacked", "notsent"):
            match = re.search(rf"\b{key}:(\d+)", line)
            info[key] = int(match.group(1)) if match else 0
        match = re.search(r"\brto:([\d.]+)", line)
        info["rto"] = float(match.group(1)) if match else 0.0
        sockets[int(fields[4].rsplit(":", 1)[1])] = info
    return t0, t1, sockets


class AckWatch(threading.Thread):
    """Reads TCP_INFO of serve's connections over and over until stopped (each reading takes a
    few tens of ms): when each connection's acknowledged-byte counter last moved."""

    def __init__(self, pair):
        super().__init__(daemon=True)
        self.pair = pair
        self.samples = []
        self.error = None
        self._stop_event = threading.Event()

    def run(self):
        while not self._stop_event.is_set():
            try:
                self.samples.append(read_tcp_info(self.pair))
            except Exception as error:  # reported by the scenario, which needs the samples
                self.error = error
                return
            self._stop_event.wait(0.01)

    def stop(self):
        self._stop_event.set()
        self.join(timeout=35)


def last_ack_bounds(samples, after, floor, last_ack_moved=False):
    """Per connection in `after` (a reading taken after the fault): (low, high), low < A and
    L <= high (see PROGRESS RULE). low: the start of the last reading in `samples` that showed a
    smaller counter (`floor`, e.g. when the client started, if none did), or, with last_ack_moved
    (the peer sent nothing after its last acknowledgement that moved the counter, so A = L), the
    lastack age read after the fault, a jiffy earlier. high: that age, a jiffy later."""
    t0_after, t1_after, sockets = after
    bounds = {}
    for port, info in sockets.items():
        high = t1_after - info["lastack"] / 1000 + JIFFY_S
        if last_ack_moved:
            low = t0_after - info["lastack"] / 1000 - JIFFY_S
        else:
            low = max([t0 for t0, _, seen in samples
                       if port in seen and seen[port]["bytes_acked"] < info["bytes_acked"]],
                      default=floor)
        bounds[port] = (low, high)
    return bounds


def percentile(values, p):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def wait_until(predicate, timeout, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def fmt_bytes(n):
    if n is None:
        return "-"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


# ---------------------------------------------------------------------------------------------
# The scenarios.

class Scenario:
    """One run: serve in the server namespace, client in the client namespace, a fault, checks."""

    def __init__(self, name, exe, workdir, slack):
        self.name = name
        self.exe = exe
        self.workdir = os.path.join(workdir, name)
        os.makedirs(self.workdir, exist_ok=True)
        self.slack = slack
        self.checks = []
        self.figures = {}

    def check(self, ok, what, detail):
        self.checks.append({"check": what, "ok": bool(ok), "detail": detail})
        log(("PASS " if ok else "FAIL ") + what + ": " + detail)

    # serve and client ---------------------------------------------------------------------------
    def start_serve(self, pair, serve_flags):
        self.serve_json = os.path.join(self.workdir, "serve.json")
        args = pair.in_server([self.exe, "serve", "--listen", f"{SERVER_IP}:{PORT}", "--json",
                               self.serve_json, "--stop-grace", "1s"] + serve_flags)
        self.figures["serve_command"] = " ".join(args[4:])
        out = os.path.join(self.workdir, "serve.out")
        serve = start(args, out, os.path.join(self.workdir, "serve.err"))

        def listening():
            if serve.poll() is not None:
                raise ScenarioError(f"serve exited with {serve.returncode}: "
                                    + open(os.path.join(self.workdir, "serve.err")).read())
            return "listening on" in open(out).read()
        if not wait_until(listening, 10):
            raise ScenarioError("serve did not say it was listening within 10 s")
        return serve  # `ip netns exec` execs: serve.pid is the server's pid

    def start_client(self, pair, client_flags):
        self.client_json = os.path.join(self.workdir, "client.json")
        args = pair.in_client([self.exe, "client", "--connect", f"{SERVER_IP}:{PORT}", "--json",
                               self.client_json] + client_flags)
        self.figures["client_command"] = " ".join(args[4:])
        return start(args, os.path.join(self.workdir, "client.out"),
                     os.path.join(self.workdir, "client.err"))

    def finish_client(self, client, timeout):
        try:
            code = client.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = stop_process(client, sig=signal.SIGKILL)
            self.check(False, "client ended by itself", f"still running {timeout:.0f} s later, killed")
            return None
        if not os.path.exists(self.client_json):
            self.check(False, "client wrote its verdict", f"exit {code}, no {self.client_json}: "
                       + open(os.path.join(self.workdir, "client.err")).read()[-500:])
            return None
        with open(self.client_json) as f:
            verdict = json.load(f)
        verdict["exit_code"] = code
        return verdict

    def stop_serve(self, serve):
        code = stop_process(serve, timeout=10)
        self.check(code == 0, "serve stopped cleanly on SIGTERM", f"exit code {code}")
        if not os.path.exists(self.serve_json):
            self.check(False, "serve wrote its counters", f"no {self.serve_json}")
            return None
        with open(self.serve_json) as f:
            return json.load(f)

    # common measurements and checks ---------------------------------------------------------------
    def wait_for_sockets(self, pid, what, predicate, timeout):
        """Polls the server namespace's sockets until predicate(sockets) holds."""
        found = wait_until(lambda: predicate(tcp_sockets(pid)), timeout, interval=0.01)
        if not found:
            summary = socket_summary(tcp_sockets(pid))
            raise ScenarioError(f"the connections never reached the phase for the fault ({what}) "
                                f"within {timeout} s: server sockets {summary['states']}")
        return time.monotonic()

    def wait_for_release(self, sampler, baseline, timeout):
        """Waits until serve's fd count is back to the baseline; returns when, or None."""
        freed = wait_until(lambda: sampler.latest() is not None and sampler.latest() <= baseline,
                           timeout, interval=0.01)
        return sampler.samples[-1][0] if freed else None

    def settle_sockets(self, pid, before_inuse, timeout=2.0):
        """The kernel frees a socket at its last reference, which can be a moment after close():
        waits (bounded) until the namespace's TCP inuse is back to what it was."""
        wait_until(lambda: sockstat(pid).get("inuse") == before_inuse, timeout, interval=0.02)

    def common_checks(self, n, before, after, server, client):
        self.check(after["fds"] == before["fds"], "serve's fds back to the baseline",
                   f"{before['fds']} before the load, {after['fds']} after")
        self.check(after["sockstat"].get("inuse") == before["sockstat"].get("inuse"),
                   "server namespace's TCP inuse back to the baseline",
                   f"{before['sockstat'].get('inuse')} -> {after['sockstat'].get('inuse')} "
                   "(/proc/net/sockstat in the server namespace)")
        sockets = after["sockets"]
        self.check(sockets["lingering"] == 0 and sockets["send_q_bytes"] == 0,
                   "no socket left in the server namespace (orphans included)",
                   f"{sockets['lingering']} sockets other than LISTEN/TIME_WAIT "
                   f"({sockets['orphans']} orphans), {sockets['send_q_bytes']} B still queued; "
                   f"states {sockets['states']}")
        growth = after["rss_kib"] - before["rss_kib"]
        bound = 16 * 1024 + n * 8  # 16 MiB + 8 KiB per connection: lazily touched tables, not leaks
        self.check(growth <= bound, "serve's RSS growth bounded",
                   f"{before['rss_kib']} KiB -> {after['rss_kib']} KiB (+{growth} KiB, bound {bound} KiB)")
        if server is None:
            return
        stats = server["stats"]
        self.check(stats["connections_accepted"] == n, "serve accepted every connection",
                   f"{stats['connections_accepted']} of {n}")
        self.check(stats["connections_closed"] == stats["connections_accepted"],
                   "serve closed every connection it accepted",
                   f"{stats['connections_closed']} closed of {stats['connections_accepted']}")
        states = {k: v for k, v in stats["connections_in_state"].items() if k != "free" and v}
        self.check(not states, "no connection left in any state but free at exit",
                   f"{states or 'all free'}")
        if client is not None:
            started = client["started"]
            self.check(started == n and client["complete"] + client["failed"] == n,
                       "the client decided every connection",
                       f"{started} started, {client['complete']} complete, {client['failed']} failed")

    def outcome_check(self, server, expected, n):
        if server is None:
            return
        outcomes = {k: v for k, v in server["stats"]["outcomes"].items() if v}
        self.check(outcomes == {expected: n}, f"every connection ended with {expected}",
                   f"serve's outcomes {outcomes}, expected {{'{expected}': {n}}}")

    def record(self, n, before, after, server, client, extra=None):
        self.figures.update({
            "connections": n,
            "before": before,
            "after": after,
            "serve": server,
            "client": client,
        })
        if extra:
            self.figures.update(extra)

    def progress_close_check(self, sampler, t_fault, bounds, timeout, label, what):
        """Each connection cut off by the fault must close within the window the progress rule
        gives it from its last acknowledgement (bounds: last_ack_bounds()), scheduling (--slack)
        allowed on the late side only: see PROGRESS RULE. The closes are fds counted, so the k-th
        earliest close is held against the k-th earliest lower and upper bounds."""
        closes = sorted(sampler.close_moments(t_fault))
        lows = sorted(low + timeout - BATCH_CLOCK_S for low, _ in bounds.values())
        late = ENGINE_ACK_MARGIN_S + JIFFY_S + timeout + timeout / TIMER_LANES
        highs = sorted(high + late + self.slack for _, high in bounds.values())
        n = len(bounds)
        figures = self.timing(sampler, t_fault, timeout, label)
        early = [(c - lo, k) for k, (c, lo) in enumerate(zip(closes, lows))]
        tardy = [(hi - c, k) for k, (c, hi) in enumerate(zip(closes, highs))]
        if n:
            figures.update({
                "window_s": [lows[0] - t_fault, highs[-1] - t_fault],
                "last_ack_before_fault_s": [t_fault - max(h for _, h in bounds.values()),
                                            t_fault - min(lo for lo, _ in bounds.values())],
                "least_margin_early_s": min(early)[0] if early else None,
                "least_margin_late_s": min(tardy)[0] if tardy else None,
                # How late the latest close was beyond its bound without --slack: scheduling.
                "scheduling_used_s": max(self.slack - m for m, _ in tardy) if tardy else None,
            })
        ok = n > 0 and len(closes) == n and all(m >= 0 for m, _ in early + tardy)
        detail = (f"{len(closes)} closes for {n} connections: first {fmt_s(figures['first_s'])}, "
                  f"p50 {fmt_s(figures['p50_s'])}, last {fmt_s(figures['last_s'])} after the "
                  f"fault ({label} timeout {timeout:.2f} s)")
        if n:
            acks, window = figures["last_ack_before_fault_s"], figures["window_s"]
            detail += (f"; last acknowledgements {acks[0]:.3f}-{acks[1]:.3f} s before the fault, "
                       f"windows from {window[0]:.3f} to {window[1]:.3f} s after it (slack "
                       f"{self.slack:.2f} s); least margins "
                       f"{fmt_s(figures['least_margin_early_s'])} early, "
                       f"{fmt_s(figures['least_margin_late_s'])} late (of the slack "
                       f"{fmt_s(figures['scheduling_used_s'])} used)")
        for margin, k in [min(early, default=(0, 0)), min(tardy, default=(0, 0))]:
            if margin < 0:
                detail += (f"; close #{k + 1} at {closes[k] - t_fault:.3f} s, outside "
                           f"[{lows[k] - t_fault:.3f}, {highs[k] - t_fault:.3f}] s")
        self.check(ok, what, detail)
        return figures

    def timing(self, sampler, t_fault, configured_s, label):
        times = sampler.close_times(t_fault)
        figures = {
            "timeout": label,
            "configured_s": configured_s,
            "closes_after_fault": len(times),
            "first_s": percentile(times, 0),
            "p50_s": percentile(times, 50),
            "p99_s": percentile(times, 99),
            "last_s": percentile(times, 100),
        }
        self.figures["timing"] = figures
        return figures


def in_flight_predicate(n):
    """n server sockets with response bytes not yet acknowledged (still sending, or FIN queued
    behind them): transfers in flight."""
    return lambda socks: sum(1 for x in socks if x["state"] in ("ESTABLISHED", "FIN_WAIT1")
                             and x["send_q"] > 1) >= n


def blackhole_or_link_down(s, pair, n, fault, args):
    """10-blackhole-send and 11-link-down: slow readers, 1 MiB responses, a fault during the
    transfer; every connection must end with send_timeout one --send-timeout after its last
    acknowledgement before the fault (see PROGRESS RULE)."""
    send_timeout = 2.0
    serve_flags = ["--response-bytes", "1MiB", "--send-timeout", "2s", "--drain-idle-timeout",
                   "1s", "--drain-timeout", "5s", "--on-timeout", "reset"]
    client_flags = ["--connections", str(n), "--concurrency", str(n), "--response-bytes", "1MiB",
                    "--peers", "slow-reader=100", "--slow-reader-bytes", "4KiB",
                    "--slow-reader-interval", "10ms",
                    # A client behind a link that was down may never hear of the server's reset
                    # (see below): it gives up after 5 s. Behind the blackhole the reset arrives.
                    "--timeout", "15s" if fault == "blackhole" else "6s"]
    pair.small_buffers()
    serve = s.start_serve(pair, serve_flags)
    pid = serve.pid
    before = snapshot(pid)
    sampler = FdSampler(pid)
    sampler.start()
    t_client = time.monotonic()
    client = s.start_client(pair, client_flags)
    # Every connection established and with response bytes still queued: transfers in flight.
    s.wait_for_sockets(pid, f"{n} established with bytes queued", in_flight_predicate(n), 15)
    # The slow readers read for a while: the sends make progress until the fault. Meanwhile
    # TCP_INFO is read over and over: when each connection was last acknowledged.
    watch = AckWatch(pair)
    watch.start()
    try:
        time.sleep(1.0)
    finally:
        watch.stop()
    in_flight = socket_summary(tcp_sockets(pid))
    t_fault = time.monotonic()
    if fault == "blackhole":
        pair.blackhole_client()
    else:
        pair.set_server_link(False)
    t_applied = time.monotonic()
    time.sleep(0.05)  # an acknowledgement already past the fault is taken in by then
    after_fault = read_tcp_info(pair)
    freed_at = s.wait_for_release(sampler, before["fds"], send_timeout + 5 + s.slack)
    extra = {"fault_applied_in_s": t_applied - t_fault,
             "sockets_at_fault": in_flight,
             "tcp_info_readings_before_fault": len(watch.samples),
             "released_after_fault_s": None if freed_at is None else freed_at - t_fault}
    if fault == "blackhole":
        extra["blackhole_drops"] = pair.blackhole_drops()
    else:
        # The link comes back: the clients' next probes find no socket and get a reset.
        pair.set_server_link(True)
        extra["link_down_s"] = time.monotonic() - t_fault
    verdict = s.finish_client(client, 20)
    s.settle_sockets(pid, before["sockstat"].get("inuse"))
    sampler.stop()
    after = snapshot(pid)
    server = s.stop_serve(serve)

    s.outcome_check(server, "send_timeout", n)
    s.check(freed_at is not None, "every connection released after the fault",
            "fds back to the baseline " + ("never" if freed_at is None else
                                          f"{freed_at - t_fault:.2f} s after the fault"))
    s.check(watch.error is None and watch.samples, "TCP_INFO read before the fault",
            f"{len(watch.samples)} readings" + (f", error {watch.error}" if watch.error else ""))
    # No acknowledgement reaches TCP after the fault (the nftables rule drops the clients'
    # packets before TCP sees them; a link that is down carries none), and no send completes
    # without one, so by the progress rule each connection ends between its last
    # counter-moving acknowledgement + 2 s and its last acknowledgement + 2 s + 2 s/64 + 20 ms
    # (+ 10 ms for reading L, + --slack). The readers take 4 KiB per 10 ms, so each frees its
    # 128 KiB receive buffer within about 0.33 s and is acknowledged at least that often: the
    # windows start at most about 0.33 s (+ the readings' spacing) before fault + 2 s and end by
    # fault + 2.06 s + --slack. The old rule's second period (up to 4 s) is gone.
    bounds = last_ack_bounds(watch.samples, after_fault, t_client)
    s.progress_close_check(sampler, t_fault, bounds, send_timeout, "send",
                           "connections closed one --send-timeout after their last "
                           "acknowledgement before the fault")
    if verdict is not None:
        # No client may be told that a truncated response was complete. Behind the blackhole
        # (only the clients' packets are dropped) each must see the server's RST. Behind a link
        # that was down, the RST was lost; once the link is back, a client hears of the dead
        # connection only if it sends something (a window update when its reader frees space),
        # which it may not do: a reset or its own timeout.
        failures = verdict["failures"]
        if fault == "blackhole":
            ok, expected = failures["reset"] == n, "every one reset"
        else:
            ok, expected = failures["reset"] + failures["timeout"] == n, "reset or timeout"
        s.check(verdict["complete"] == 0 and ok,
                "no client was told a truncated response was complete",
                f"{verdict['complete']} complete, failures {nonzero(failures)} ({expected} "
                "expected)")
    s.common_checks(n, before, after, server, verdict)
    s.record(n, before, after, server, verdict, extra)


def blackhole_drain(s, pair, n, args, in_flight):
    """The blackhole starts while the server drains (SHUT_WR done, waiting for the clients' EOF).

    10-blackhole-drain (in_flight=False): once every response and our FIN are acknowledged
    (FIN_WAIT2) and before the clients read (they read 2 s after connecting, earlier than the
    2.5 s drain idle timeout): the clients still get every byte and a clean EOF, but the server
    never sees their FIN and must end each connection with drain_idle_timeout 2.5 s after the
    acknowledgement of its FIN, the last progress it saw.

    10-blackhole-drain-inflight (in_flight=True): slow readers (512 B per 10 ms), so part of each
    96 KiB response is still unacknowledged (FIN_WAIT1) when the blackhole starts. The drain idle
    timer restarts at every acknowledgement that moved the peer's counter (a slow reader is not
    idle); after the blackhole none comes, so each connection ends with drain_idle_timeout 1.5 s
    after its last one, and the clients see the reset."""
    idle = 1.5 if in_flight else 2.5
    read_delay = 2.0  # (in_flight=False)
    response = "96KiB" if in_flight else "16KiB"
    serve_flags = ["--response-bytes", response, "--send-timeout", "5s", "--drain-idle-timeout",
                   f"{int(idle * 1000)}ms", "--drain-timeout", "10s", "--on-timeout", "reset"]
    client_flags = ["--connections", str(n), "--concurrency", str(n), "--response-bytes",
                    response, "--timeout", "10s"]
    if in_flight:
        pair.small_buffers()
        client_flags += ["--peers", "slow-reader=100", "--slow-reader-bytes", "512",
                         "--slow-reader-interval", "10ms"]
        phase = f"{n} in FIN_WAIT1 with bytes unacknowledged (draining, data in flight)"
        ready = lambda socks: sum(1 for x in socks if x["state"] == "FIN_WAIT1"
                                  and x["send_q"] > 1) >= n
    else:
        client_flags += ["--read-delay", f"{int(read_delay * 1000)}ms"]
        phase = f"{n} in FIN_WAIT2 (draining, everything acknowledged)"
        ready = lambda socks: sum(1 for x in socks if x["state"] == "FIN_WAIT2") >= n
    serve = s.start_serve(pair, serve_flags)
    pid = serve.pid
    before = snapshot(pid)
    sampler = FdSampler(pid)
    sampler.start()
    # With data in flight, when each connection was last acknowledged is seen by reading TCP_INFO
    # over and over until the fault; in FIN_WAIT2 the one reading after the fault says it.
    watch = AckWatch(pair)
    t_client = time.monotonic()
    client = s.start_client(pair, client_flags)
    if in_flight:
        watch.start()
    try:
        s.wait_for_sockets(pid, phase, ready, 10)
    finally:
        if in_flight:
            watch.stop()
    at_fault = socket_summary(tcp_sockets(pid))
    t_fault = time.monotonic()
    pair.blackhole_client()
    t_applied = time.monotonic()
    time.sleep(0.05)  # an acknowledgement already past the rule is taken in by then
    after_fault = read_tcp_info(pair)
    freed_at = s.wait_for_release(sampler, before["fds"], idle + 5 + s.slack)
    drops = pair.blackhole_drops()
    verdict = s.finish_client(client, 15)
    s.settle_sockets(pid, before["sockstat"].get("inuse"))
    sampler.stop()
    after = snapshot(pid)
    server = s.stop_serve(serve)

    s.outcome_check(server, "drain_idle_timeout", n)
    if not in_flight:
        s.check(t_applied - t_client < read_delay - 0.1,
                "the blackhole was in place before the clients read",
                f"applied {t_applied - t_client:.2f} s after the client started; clients read "
                f"{read_delay:.0f} s after connecting")
    s.check(freed_at is not None, "every connection released after the fault",
            "fds back to the baseline " + ("never" if freed_at is None else
                                          f"{freed_at - t_fault:.2f} s after the fault"))
    if in_flight:
        s.check(watch.error is None and watch.samples, "TCP_INFO read before the fault",
                f"{len(watch.samples)} readings" + (f", error {watch.error}" if watch.error else ""))
    # By the progress rule (no acknowledgement reaches TCP after the blackhole, the clients'
    # data and FIN are dropped), each connection ends between its last counter-moving
    # acknowledgement + the idle timeout and its last acknowledgement + the idle timeout
    # + timeout/64 + 20 ms (+ 10 ms for reading L, + --slack). In FIN_WAIT2 the last acknowledgement is that of our FIN
    # and the one that moved the counter (the clients, not reading yet, send nothing after it):
    # 2.5 s after it, + 39 ms + 20 ms. With data in flight it is each reader's last before the
    # blackhole: 1.5 s after it, + 23 ms + 20 ms. (The old rule's second period is gone.)
    bounds = last_ack_bounds(watch.samples, after_fault, t_client, last_ack_moved=not in_flight)
    timing = s.progress_close_check(
        sampler, t_fault, bounds, idle, "drain idle",
        "connections closed one --drain-idle-timeout after their last acknowledgement"
        + (" before the fault" if in_flight else " (of our FIN)"))
    if server is not None:
        # serve's own view, from close() (just before SHUT_WR: the response fits in the socket
        # buffer): at least the idle timeout, since the drain starts after close().
        latency = server["close_latency_us"]
        timing["serve_close_latency_s"] = {k: latency[k] / 1e6 for k in ("p50", "p99", "max")}
        s.check(latency["p50"] / 1e6 >= idle, "serve's close latency at least the idle timeout",
                f"close latency p50 {latency['p50'] / 1e6:.3f} s, p99 "
                f"{latency['p99'] / 1e6:.3f} s, max {latency['max'] / 1e6:.3f} s; idle timeout "
                f"{idle:.2f} s")
    if verdict is not None:
        if in_flight:
            s.check(verdict["complete"] == 0 and verdict["failures"]["reset"] == n,
                    "every client saw the reset (none was told a truncated response was complete)",
                    f"{verdict['complete']} complete, failures {nonzero(verdict['failures'])}")
        else:
            s.check(verdict["complete"] == n and verdict["payload_bytes_lost"] == 0,
                    "every client got every byte and a clean EOF (sent before the blackhole)",
                    f"{verdict['complete']}/{n} complete, {verdict['payload_bytes_lost']} B lost, "
                    f"failures {nonzero(verdict['failures'])}")
    s.check(drops is not None and drops["packets"] > 0, "the blackhole dropped the clients' packets",
            f"nftables counter: {drops}")
    s.common_checks(n, before, after, server, verdict)
    s.record(n, before, after, server, verdict,
             {"sockets_at_fault": at_fault, "blackhole_drops": drops,
              "tcp_info_readings_before_fault": len(watch.samples),
              "fault_applied_after_client_start_s": t_applied - t_client,
              "released_after_fault_s": None if freed_at is None else freed_at - t_fault})


def link_flap(s, pair, n, args):
    """11-link-flap: the server's veth goes down for 0.5 s during the transfers, then up. By the
    progress rule a connection survives when an acknowledgement comes within the send timeout
    (4 s) of its last one before the outage: that takes the outage, TCP's retransmission backoff
    after it (the next retransmission can come about 1 s after the link is back) and the
    reader's own interval between acknowledgements (its 128 KiB buffer read at 4 KiB per 10 ms:
    0.33 s), about 2 s in all. So every connection must complete."""
    down_for = 0.5
    serve_flags = ["--response-bytes", "1MiB", "--send-timeout", "4s", "--drain-idle-timeout",
                   "4s", "--drain-timeout", "10s", "--on-timeout", "reset"]
    client_flags = ["--connections", str(n), "--concurrency", str(n), "--response-bytes",
                    "1MiB", "--peers", "slow-reader=100", "--slow-reader-bytes", "4KiB",
                    "--slow-reader-interval", "10ms", "--timeout", "20s"]
    pair.small_buffers()
    serve = s.start_serve(pair, serve_flags)
    pid = serve.pid
    before = snapshot(pid)
    sampler = FdSampler(pid)
    sampler.start()
    t_client = time.monotonic()
    client = s.start_client(pair, client_flags)
    s.wait_for_sockets(pid, f"{n} established with bytes queued", in_flight_predicate(n), 15)
    time.sleep(0.2)
    in_flight = socket_summary(tcp_sockets(pid))
    t_fault = time.monotonic()
    pair.set_server_link(False)
    time.sleep(down_for)
    pair.set_server_link(True)
    t_up = time.monotonic()
    verdict = s.finish_client(client, 30)
    t_done = time.monotonic()
    freed_at = s.wait_for_release(sampler, before["fds"], 10)
    s.settle_sockets(pid, before["sockstat"].get("inuse"))
    sampler.stop()
    after = snapshot(pid)
    server = s.stop_serve(serve)
    s.figures["timing"] = {"timeout": "send", "configured_s": 4.0, "link_down_s": t_up - t_fault,
                           "client_run_s": t_done - t_client}

    s.outcome_check(server, "clean", n)
    if verdict is not None:
        s.check(verdict["complete"] == n and verdict["payload_bytes_lost"] == 0,
                "every client got every byte and a clean EOF despite the outage",
                f"{verdict['complete']}/{n} complete, {verdict['payload_bytes_lost']} B lost, "
                f"failures {nonzero(verdict['failures'])}")
    s.check(freed_at is not None, "every connection released", "fds back to the baseline "
            + ("never" if freed_at is None else f"{freed_at - t_fault:.2f} s after the fault"))
    s.common_checks(n, before, after, server, verdict)
    s.record(n, before, after, server, verdict,
             {"sockets_at_fault": in_flight, "link_down_s": t_up - t_fault})


class LoadRun:
    """What run_load() saw: serve (still running), its snapshots before and after, the client's
    verdict, when the client started and ended, when serve's fds were back (None: never)."""

    def __init__(self, **fields):
        self.__dict__.update(fields)


def run_load(s, pair, serve_flags, client_flags):
    """Starts serve, runs one client to its end, waits for serve to release every connection and
    takes the after snapshot; serve is left running for the caller to read what it needs first."""
    serve = s.start_serve(pair, serve_flags)
    before = snapshot(serve.pid)
    sampler = FdSampler(serve.pid)
    sampler.start()
    t_client = time.monotonic()
    verdict = s.finish_client(s.start_client(pair, client_flags), 90)
    t_done = time.monotonic()
    freed_at = s.wait_for_release(sampler, before["fds"], 10)
    s.settle_sockets(serve.pid, before["sockstat"].get("inuse"))
    sampler.stop()
    return LoadRun(serve=serve, before=before, after=snapshot(serve.pid), verdict=verdict,
                   t_client=t_client, t_done=t_done, freed_at=freed_at)


def slow_link(s, pair, n, args):
    """12-slow-link: tbf limits the server's veth to args.rate; n connections at once each fetch
    args.slow_response bytes, so the link is the bottleneck. Every connection must complete with
    exact bytes and a clean EOF, none may hit the 10 s send timeout: a connection's next
    acknowledgement waits at most for tbf's queue ahead of its segment, and the whole load
    (1000 x 32 KiB at 100 Mbit) crosses the link in about 2.8 s."""
    send_timeout = 10.0
    pair.limit_rate(args.rate, "64kb", args.tbf_limit)
    serve_flags = ["--response-bytes", args.slow_response, "--send-timeout", "10s",
                   "--drain-idle-timeout", "5s", "--drain-timeout", "30s", "--on-timeout", "reset"]
    client_flags = ["--connections", str(n), "--concurrency", str(n), "--response-bytes",
                    args.slow_response, "--timeout", "60s"]
    run = run_load(s, pair, serve_flags, client_flags)
    qdisc = pair.qdisc_stats()
    server = s.stop_serve(run.serve)
    verdict, before, after, freed_at = run.verdict, run.before, run.after, run.freed_at
    t_client, t_done = run.t_client, run.t_done

    rate_bps = parse_rate(args.rate)
    elapsed = verdict["elapsed_seconds"] if verdict else t_done - t_client
    wire_bytes = qdisc["sent_bytes"] if qdisc else None
    link_time = wire_bytes * 8 / rate_bps if wire_bytes else None
    s.figures["timing"] = {"timeout": "send", "configured_s": send_timeout,
                           "client_elapsed_s": elapsed, "rate": args.rate,
                           "wire_bytes": wire_bytes,
                           "wire_time_at_rate_s": link_time,
                           "link_utilisation": (link_time / elapsed) if link_time else None,
                           "tbf_dropped": qdisc["dropped"] if qdisc else None,
                           "latency_us": verdict["latency_us"] if verdict else None}
    s.outcome_check(server, "clean", n)
    if verdict is not None:
        s.check(verdict["complete"] == n and verdict["payload_bytes_lost"] == 0,
                "every client got every byte and a clean EOF through the slow link",
                f"{verdict['complete']}/{n} complete, {verdict['payload_bytes_lost']} B lost, "
                f"failures {nonzero(verdict['failures'])}")
    if link_time:
        # The link was the bottleneck: the run took at least about as long as the bytes that
        # crossed it take at the configured rate (tbf's burst lets a little more through).
        s.check(elapsed >= 0.8 * link_time, "the rate limit was the bottleneck",
                f"{fmt_bytes(wire_bytes)} crossed the link in {elapsed:.2f} s, "
                f"{link_time:.2f} s at {args.rate}: utilisation {link_time / elapsed:.0%}")
    else:
        s.check(False, "the rate limit was the bottleneck", f"no tbf statistics: {qdisc}")
    s.check(freed_at is not None, "every connection released", "fds back to the baseline "
            + ("never" if freed_at is None else f"{freed_at - t_client:.2f} s after the start"))
    s.common_checks(n, before, after, server, verdict)
    s.record(n, before, after, server, verdict, {"qdisc": qdisc})


def slow_reader_send_timeout(s, pair, n, args):
    """12-slow-reader-send-timeout: no fault, default buffers; n slow readers (1 KiB per 10 ms,
    102 KB/s) fetch 2 MiB each with a 3 s send timeout. None may be cut off, and the send timer
    must have been extended by acknowledgements at least once (Stats::send_timeout_extensions):
    a send waited longer than the timeout while the reader kept reading.

    Why 3 s: a reader's progress shows to TCP only when its receive window opens, and the kernel
    frees receive memory only per fully read packet. Over veth a 128 KiB receive queue (the
    default tcp_rmem[1], 131072 B, which autotuning does not raise for a reader this slow) is
    held in one or two very large (GSO/GRO) packets, so the window can stay at zero until the
    reader has read about all of it: 131072 B / 102.4 KB/s = 1.28 s without an acknowledgement
    (measured: about 1.3 s; rmem_alloc 129728 of 131072, less free than one MSS, while Recv-Q
    fell by 92 KB). Under load the readers ran 20% slower (12.2 s instead of 10.2 s for 1 MiB):
    about 1.55 s. With the 1 s timeout the scenario used to have, that was idleness by definition:
    the old rule (which gave a peer with data in flight one more period) cut off 1 of 200 readers
    in about 2 of 12 runs, the new one cuts off all 200. 3 s is about twice the interval under
    load.

    Why 2 MiB: the kernel completes a send waiting for buffer space once the free space is half
    of what is queued (a third of the send buffer). With 1 MiB the only waiting send was released
    by the first acknowledgements, after about 1.4 s (the kernel grows the send buffer on them,
    from about 0.74 to 1.4 MB), so a 3 s timeout never expired during a send. Once the buffer
    stops growing (bound by the congestion window), a waiting send needs about 470 KB
    acknowledged, 4.6 s at 102 KB/s: longer than 3 s. 2 MiB responses reach that (about 1.65 MB
    is queued before it). The run takes about 21 s (2 MiB at 102 KB/s)."""
    send_timeout = 3.0
    response = "2MiB"
    # The drain, from our FIN (after about 1.65 MB were queued) to the reader's, is about 14 s
    # at 102 KB/s: the 60 s drain timeout and the client's 60 s allow a reader 3 x slower.
    serve_flags = ["--response-bytes", response, "--send-timeout", "3s", "--drain-idle-timeout",
                   "5s", "--drain-timeout", "60s", "--on-timeout", "reset"]
    client_flags = ["--connections", str(n), "--concurrency", str(n), "--response-bytes",
                    response, "--peers", "slow-reader=100", "--slow-reader-bytes", "1KiB",
                    "--slow-reader-interval", "10ms", "--timeout", "60s"]
    run = run_load(s, pair, serve_flags, client_flags)
    server = s.stop_serve(run.serve)
    verdict, before, after, freed_at = run.verdict, run.before, run.after, run.freed_at
    t_client, t_done = run.t_client, run.t_done
    extensions = server["stats"].get("send_timeout_extensions", 0) if server else 0
    drain_extensions = server["stats"].get("drain_idle_extensions", 0) if server else 0
    s.figures["timing"] = {"timeout": "send", "configured_s": send_timeout,
                           "client_run_s": t_done - t_client,
                           "send_timeout_extensions": extensions,
                           "drain_idle_extensions": drain_extensions}
    # Every connection clean: neither cut off while sending (send_timeout) nor while draining
    # (drain_idle_timeout, 5 s: while our data is in flight acknowledgements come as above, and
    # after the last one the reader has at most its 128 KiB buffer to read, 1.3-1.6 s, before
    # its FIN).
    s.outcome_check(server, "clean", n)
    if verdict is not None:
        s.check(verdict["complete"] == n and verdict["payload_bytes_lost"] == 0,
                "every slow reader got every byte and a clean EOF",
                f"{verdict['complete']}/{n} complete, {verdict['payload_bytes_lost']} B lost, "
                f"failures {nonzero(verdict['failures'])}")
    s.check(extensions > 0, "a send waited past the send timeout and was let go on (the "
            "scenario shows something)", f"{extensions} send timeout extensions")
    s.check(freed_at is not None, "every connection released", "fds back to the baseline "
            + ("never" if freed_at is None else f"{freed_at - t_client:.2f} s after the start"))
    s.common_checks(n, before, after, server, verdict)
    s.record(n, before, after, server, verdict, {"send_timeout_extensions": extensions,
                                                 "drain_idle_extensions": drain_extensions})


def parse_rate(rate):
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(k|m|g)?bit", rate.lower())
    if not match:
        raise SystemExit(f"--rate: '{rate}' is not a tc rate like 100mbit")
    return float(match.group(1)) * {None: 1, "k": 1e3, "m": 1e6, "g": 1e9}[match.group(2)]


def nonzero(counts):
    return {k: v for k, v in counts.items() if v} or "none"


def fmt_s(value):
    return "-" if value is None else f"{value:.3f} s"


# ---------------------------------------------------------------------------------------------
# Report.

def outcome_text(server):
    if not server:
        return "-"
    return ", ".join(f"{k} {v}" for k, v in server["stats"]["outcomes"].items() if v) or "none"


def timing_text(figures):
    t = figures.get("timing") or {}
    if t.get("p50_s") is not None:
        window = t.get("window_s")
        return (f"after fault: first {t['first_s']:.2f} p50 {t['p50_s']:.2f} last {t['last_s']:.2f} s"
                + (f", windows {window[0]:.2f}-{window[1]:.2f} s" if window else "")
                + f" ({t['timeout']} {t['configured_s']:.2f} s)")
    if "link_down_s" in t:
        return f"link down {t['link_down_s']:.2f} s, run {t['client_run_s']:.2f} s (send {t['configured_s']:.0f} s)"
    if "client_elapsed_s" in t:
        util = t.get("link_utilisation")
        return (f"{t['client_elapsed_s']:.2f} s at {t['rate']}, {t.get('tbf_dropped')} dropped" +
                (f", link {util:.0%} busy" if util else "") +
                (f", max latency {t['latency_us']['max'] / 1e6:.2f} s" if t.get("latency_us") else "")
                + f" (send {t['configured_s']:.0f} s)")
    if "send_timeout_extensions" in t:
        return (f"run {t['client_run_s']:.2f} s, {t['send_timeout_extensions']} send timeout "
                f"extensions (send {t['configured_s']:.0f} s)")
    return "-"


def print_table(results):
    rows = [("scenario", "ok/conns", "lost", "serve outcomes", "fds", "RSS KiB", "inuse(ns)",
             "orphan(ns)", "orphan(all)", "mem(all)", "timing", "result")]
    for name, r in results.items():
        f = r["figures"]
        client = f.get("client")
        before, after = f.get("before"), f.get("after")

        def pair_of(get):
            if not before or not after:
                return "-"
            return f"{get(before)}->{get(after)}"
        rows.append((
            name,
            f"{client['complete']}/{f.get('connections')}" if client else "-",
            fmt_bytes(client["payload_bytes_lost"]) if client else "-",
            outcome_text(f.get("serve")),
            pair_of(lambda x: x["fds"]),
            pair_of(lambda x: x["rss_kib"]),
            pair_of(lambda x: x["sockstat"].get("inuse")),
            pair_of(lambda x: x["sockets"]["orphans"]),
            pair_of(lambda x: x["sockstat"].get("orphan")),
            pair_of(lambda x: x["sockstat"].get("mem")),
            timing_text(f),
            "PASS" if r["passed"] else "FAIL",
        ))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        print("  ".join(str(cell).ljust(widths[j]) for j, cell in enumerate(row)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print("fds, RSS: serve before the load -> after the last close. inuse(ns): /proc/net/sockstat "
          "TCP inuse in the server's namespace (the listener is 1); orphan(ns): its sockets no fd "
          "refers to (/proc/PID/net/tcp); orphan(all), mem(all): sockstat's machine-wide orphan "
          "count and TCP memory in pages (other processes on the machine included)")


# ---------------------------------------------------------------------------------------------

RUNNERS = {
    "10-blackhole-send": lambda s, pair, a: blackhole_or_link_down(s, pair, a.connections, "blackhole", a),
    "10-blackhole-drain": lambda s, pair, a: blackhole_drain(s, pair, a.connections, a, False),
    "10-blackhole-drain-inflight":
        lambda s, pair, a: blackhole_drain(s, pair, a.connections, a, True),
    "11-link-down": lambda s, pair, a: blackhole_or_link_down(s, pair, a.connections, "link-down", a),
    "11-link-flap": lambda s, pair, a: link_flap(s, pair, a.connections, a),
    "12-slow-link": lambda s, pair, a: slow_link(s, pair, a.slow_link_connections, a),
    "12-slow-reader-send-timeout":
        lambda s, pair, a: slow_reader_send_timeout(s, pair, a.slow_reader_connections, a),
}


def pick_scenarios(spec):
    if not spec:
        return list(SCENARIO_NAMES)
    picked = []
    for item in spec.split(","):
        item = item.strip()
        matches = [n for n in SCENARIO_NAMES if n == item or n.startswith(item + "-")]
        if not matches:
            raise SystemExit(f"--scenario: '{item}' is none of {', '.join(SCENARIO_NAMES)} "
                             "(or their numbers 10, 11, 12)")
        picked.extend(m for m in matches if m not in picked)
    return picked


def main():
    global _verbose
    parser = argparse.ArgumentParser(
        description="Network faults (blackhole, link down, slow link) between ringlinger serve "
                    "and its clients, through a veth pair between two network namespaces. "
                    "Needs root.")
    parser.add_argument("ringlinger", help="path to the ringlinger binary (build/cli/ringlinger)")
    parser.add_argument("--scenario", default="",
                        help="comma-separated scenarios or numbers (10, 11, 12, 10-blackhole-drain...); "
                             "default: all")
    parser.add_argument("--connections", type=int, default=200,
                        help="connections of scenarios 10 and 11 (default 200)")
    parser.add_argument("--slow-link-connections", type=int, default=1000,
                        help="connections of scenario 12 (default 1000)")
    parser.add_argument("--slow-reader-connections", type=int, default=200,
                        help="connections of 12-slow-reader-send-timeout (default 200; each holds "
                             "up to ~1.4 MB of send buffer, counted in the machine-wide tcp_mem)")
    parser.add_argument("--slow-response", default="32KiB",
                        help="response size of scenario 12 (default 32KiB)")
    parser.add_argument("--rate", default="100mbit", help="tbf rate of scenario 12 (default 100mbit)")
    parser.add_argument("--tbf-limit", default="32mb",
                        help="tbf queue size of scenario 12 (default 32mb: never full at 5000 "
                             "connections x 32 KiB; see README.md for what a 4mb queue does)")
    parser.add_argument("--slack", type=float, default=1.0,
                        help="seconds a timeout may fire late (scheduling, batching) (default 1.0)")
    parser.add_argument("--json", default="netfault.json", help="where to write every figure")
    parser.add_argument("--keep", action="store_true", help="keep the logs of every run")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each step")
    args = parser.parse_args()
    _verbose = args.verbose

    if os.geteuid() != 0:
        print("netfault.py: must run as root: it creates network namespaces, a veth pair, "
              "nftables rules and tc qdiscs (try: sudo python3 tests/netfault/netfault.py ...)",
              file=sys.stderr)
        return 1
    missing = [tool for tool in ("ip", "ss", "tc", "nft") if shutil.which(tool) is None]
    if missing:
        print(f"netfault.py: missing {', '.join(missing)}: apt-get install iproute2 nftables "
              "(tools/lib.sh installs them)", file=sys.stderr)
        return 1
    exe = os.path.abspath(args.ringlinger)
    if not os.access(exe, os.X_OK):
        print(f"netfault.py: {exe} is not an executable ringlinger", file=sys.stderr)
        return 1
    scenarios = pick_scenarios(args.scenario)
    for value, flag in ((args.connections, "--connections"),
                        (args.slow_link_connections, "--slow-link-connections"),
                        (args.slow_reader_connections, "--slow-reader-connections")):
        if not 1 <= value <= 15000:
            raise SystemExit(f"{flag} must be between 1 and 15000")
    parse_rate(args.rate)

    def on_signal(signum, frame):
        raise Interrupted(signal.Signals(signum).name)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    atexit.register(cleanup)
    remove_stale_namespaces()

    workdir = tempfile.mkdtemp(prefix="ringlinger-netfault-")
    results = {}
    report = {"ringlinger": exe, "kernel": platform.release(), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "settings": {k: v for k, v in vars(args).items() if k not in ("ringlinger", "json")},
              "scenarios": results}
    started = time.monotonic()
    interrupted = None
    try:
        for name in scenarios:
            print(f"netfault: {name} ...", flush=True)
            s = Scenario(name, exe, workdir, args.slack)
            t0 = time.monotonic()
            try:
                with NamespacePair() as pair:
                    RUNNERS[name](s, pair, args)
            except ScenarioError as error:
                s.check(False, "scenario carried out", str(error))
            except Interrupted:
                raise
            except Exception as error:  # a crash of serve (its /proc entry gone), a bug here
                traceback.print_exc()
                s.check(False, "scenario carried out", f"{type(error).__name__}: {error}")
            passed = bool(s.checks) and all(c["ok"] for c in s.checks)
            results[name] = {"passed": passed, "seconds": time.monotonic() - t0,
                             "checks": s.checks, "figures": s.figures}
            for c in s.checks:
                if not c["ok"] or args.verbose:
                    print(f"  {'PASS' if c['ok'] else 'FAIL'} {c['check']}: {c['detail']}")
            print(f"  {name}: {'PASS' if passed else 'FAIL'} "
                  f"({sum(c['ok'] for c in s.checks)}/{len(s.checks)} checks, "
                  f"{time.monotonic() - t0:.1f} s)", flush=True)
    except Interrupted as error:
        interrupted = str(error)
        print(f"netfault: interrupted ({interrupted}); namespaces and processes cleaned up",
              file=sys.stderr)
    finally:
        # A second Ctrl-C must not cut the cleanup short (each of its steps is bounded).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cleanup()

    report["seconds"] = time.monotonic() - started
    report["passed"] = interrupted is None and all(r["passed"] for r in results.values())
    if interrupted:
        report["interrupted"] = interrupted
    with open(args.json, "w") as f:
        json.dump(report, f, indent=2, sort_keys=False)
        f.write("\n")
    print()
    print_table(results)
    failed = [n for n, r in results.items() if not r["passed"]]
    print(f"\nfigures in {os.path.abspath(args.json)} ({report['seconds']:.1f} s)")
    print(f"netfault: {len(results) - len(failed)} passed, {len(failed)} failed")
    if failed or args.keep or interrupted:
        print(f"netfault: logs of every run in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    if interrupted:
        return 130
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""`ringlinger proxy` between real peers over loopback: curl, wrk, nginx, `ringlinger serve`, and
Python clients and servers written here (socket module, sharing no code with ringlinger).

  0-usage              bad flags exit 2 with a message naming the flag; --help exits 0.
  1-curl-1MiB          20 downloads of a random 1 MiB file from nginx through the proxy (4 one
                       after another, 16 at once): every one byte-identical (sha256) to the file.
  2-wrk-keepalive      wrk -t2 -c100 -d3s for a 16 KiB file: requests > 0, no socket error, no
                       non-2xx response.
  2-wrk-close          the same with "Connection: close" (nginx closes first: its FIN is passed
                       on, the close path of every pair).
  2-threads            --threads 2 (two managers on one port, SO_REUSEPORT): 8 downloads at once
                       byte-identical, wrk with "Connection: close" without errors, both threads
                       carried connections, and the counters of both add up.
  3-early-response     upstream `ringlinger serve` answers before reading the body and closes;
                       clients upload 8 MiB with Content-Length through the proxy and must read the
                       exact response and a clean EOF (not a reset), 4 in sequence and 4 at once.
  3-peer-mix           `ringlinger client` (the project's verifying load generator) through the
                       proxy to `serve`: 500 connections uploading 64 KiB, cooperative and hostile
                       or unusual peers (never-fin, flood, reset, slow-reader, half-close); each
                       must get what its type should get from serve itself.
  4-half-close-client  the client sends a request and shutdown(SHUT_WR); a Python upstream reads
                       to EOF (must get every byte), answers 3 MiB and closes: exact bytes + EOF.
  4-half-close-upstream
                       the upstream sends 1 MiB and shutdown(SHUT_WR) first; the client reads it
                       to EOF, then sends 2 MiB and shuts down; the upstream must get all of it.
  4-flow-control       the upstream sends 16 MiB to a client with a small receive buffer that
                       waits before reading: the proxy must pause (counted) and lose nothing.
  5-upstream-refused   --upstream a closed port: 10 clients each get EOF (or a reset) within 5 s;
                       the proxy survives, counts 10 connect failures (ECONNREFUSED).
  5-connect-timeout    an upstream whose accept queue is full drops SYNs: with --connect-timeout
                       1s the client gets EOF, counted as a connect timeout.
  5-table-full         --max-connections 3: a second client finds no slot for its upstream leg
                       and gets EOF (counted); the first pair still works, and a third client is
                       served once that pair is closed.
  6-no-leaks           for every proxy: after the clients are done, SIGUSR1's --json shows 0 live
                       connections and 0 open pairs, the fd count is back to its start, then
                       SIGTERM exits 0 and the final JSON shows 0 live connections.

    tests/proxy/proxy_test.py RINGLINGER_EXE [--only NAME,...] [--proxy-args '--backend epoll']

Needs nginx (nginx-light), curl and wrk (tools/lib.sh installs them). Every wait is bounded;
every process started here is stopped on exit. Exit code 1 when a check fails.
"""
import argparse
import atexit
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

TIMEOUT = 20.0  # seconds: the bound of every single wait below (a healthy run takes far less)
PROXY_ARGS = []  # --proxy-args: given to every `ringlinger proxy` started here (e.g. --backend epoll)
PROCESSES = []
CHECKS = {"passed": 0, "failed": 0}


def log(message):
    print(message, flush=True)


def check(condition, message):
    if condition:
        CHECKS["passed"] += 1
        log(f"  ok    {message}")
    else:
        CHECKS["failed"] += 1
        log(f"  FAIL  {message}")
    return condition


def cleanup():
    for process in PROCESSES:
        if process.poll() is None:
            process.kill()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                pass


def wait_until(predicate, timeout=TIMEOUT, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def pattern(size, seed=0):
    """Deterministic, position-dependent bytes (a shifted or lost chunk does not compare equal)."""
    block = hashlib.sha256(b"%d" % seed).digest() * 2048  # 64 KiB
    whole, rest = divmod(size, len(block))
    return block * whole + block[:rest]


class Nginx:
    """nginx in the foreground (daemon off) with a temporary prefix and configuration."""

    def __init__(self, work, files):
        self.dir = tempfile.mkdtemp(prefix="nginx-", dir=work)
        os.makedirs(f"{self.dir}/www")
        for name, data in files.items():
            with open(f"{self.dir}/www/{name}", "wb") as f:
                f.write(data)
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        for _ in range(3):  # the free port may be taken between the check and nginx's bind
            self.port = free_port()
            with open(f"{self.dir}/nginx.conf", "w") as f:
                f.write(f"""
{"user root;" if os.geteuid() == 0 else ""}
daemon off;
master_process on;
worker_processes 1;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nodelay on;
    default_type application/octet-stream;
    client_body_temp_path {self.dir}/body;
    proxy_temp_path {self.dir}/proxy;
    fastcgi_temp_path {self.dir}/fastcgi;
    uwsgi_temp_path {self.dir}/uwsgi;
    scgi_temp_path {self.dir}/scgi;
    server {{
        listen 127.0.0.1:{self.port} backlog=4096;
        root {self.dir}/www;
    }}
}}
""")
            self.process = subprocess.Popen(
                [binary, "-p", self.dir, "-e", f"{self.dir}/error.log", "-c", f"{self.dir}/nginx.conf"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            PROCESSES.append(self.process)
            if wait_until(lambda: self.process.poll() is not None or self.accepts(), 10):
                if self.process.poll() is None:
                    return
        raise RuntimeError("nginx did not start: " + open(f"{self.dir}/error.log").read())

    def accepts(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), 1).close()
            return True
        except OSError:
            return False

    def stop(self):
        self.process.send_signal(signal.SIGQUIT)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Proxy:
    """`ringlinger proxy` with --json, its counters read after SIGUSR1."""

    def __init__(self, exe, work, upstream, *extra):
        self.json_path = tempfile.mktemp(prefix="proxy-", suffix=".json", dir=work)
        self.stderr_path = self.json_path + ".stderr"
        self.stderr = open(self.stderr_path, "w")
        self.process = subprocess.Popen(
            [exe, "proxy", "--listen", "127.0.0.1:0", "--upstream", upstream, "--json", self.json_path,
             *PROXY_ARGS, *extra],
            stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        PROCESSES.append(self.process)
        line = self.process.stdout.readline()  # bounded: the proxy prints it or exits
        match = re.search(r"listening on ([0-9.]+):(\d+)", line)
        if not match:
            raise RuntimeError(f"proxy did not start: {line!r} {open(self.stderr_path).read()}")
        self.address = (match.group(1), int(match.group(2)))
        self.fds_at_start = fd_count(self.process.pid)

    def stats(self):
        """Counters now: SIGUSR1 makes the proxy (re)write its --json file."""
        if os.path.exists(self.json_path):
            os.unlink(self.json_path)
        self.process.send_signal(signal.SIGUSR1)
        if not wait_until(lambda: os.path.exists(self.json_path), TIMEOUT):
            raise RuntimeError("the proxy wrote no --json after SIGUSR1")
        with open(self.json_path) as f:
            return json.load(f)

    def idle(self):
        """Counters once every connection is closed (bounded wait)."""
        def done():
            stats = self.stats()
            return stats if stats["stats"]["live_connections"] == 0 and stats["proxy"]["pairs_open"] == 0 else None
        return wait_until(done, TIMEOUT, 0.1) or self.stats()

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = "killed after 20 s"
        with open(self.json_path) as f:
            return code, json.load(f)


def check_no_leaks(proxy, name, *, allow=(), client_resets=0):
    """Scenario 6 for one proxy: nothing left open, fds back to the start, exit 0 on SIGTERM.
    Every leg must end clean (or with an outcome in `allow`); up to `client_resets` client legs
    may end with peer_reset (wrk resets the connections it has open when its time is up)."""
    stats = proxy.idle()
    check(stats["stats"]["live_connections"] == 0 and stats["proxy"]["pairs_open"] == 0,
          f"{name}: after the clients, 0 live connections and 0 open pairs "
          f"(live {stats['stats']['live_connections']}, pairs {stats['proxy']['pairs_open']})")
    fds = fd_count(proxy.process.pid)
    check(fds == proxy.fds_at_start, f"{name}: fd count back to its start ({fds} vs {proxy.fds_at_start})")
    check(stats["stats"]["stale_completions"] == 0, f"{name}: no stale completions")
    for role in ("client_outcomes", "upstream_outcomes"):
        counts = stats["proxy"][role]
        bad = {k: v for k, v in counts.items() if v and k != "clean" and k not in allow}
        if role == "client_outcomes" and client_resets and bad.get("peer_reset", 0) <= client_resets:
            bad.pop("peer_reset", None)
        allowed = list(allow) + ([f"at most {client_resets} peer_reset"] if role == "client_outcomes" and client_resets else [])
        check(not bad, f"{name}: {role} all clean{' or ' + ', '.join(allowed) if allowed else ''} "
                       f"({ {k: v for k, v in counts.items() if v} })")
    code, final = proxy.stop()
    check(code == 0, f"{name}: exits 0 on SIGTERM (got {code})")
    check(final["stats"]["live_connections"] == 0, f"{name}: final --json shows 0 live connections")
    return stats


def recv_all(sock, limit, on_chunk=None):
    """Reads until EOF: (bytes, 'eof' | 'reset' | 'timeout')."""
    chunks = []
    total = 0
    try:
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                return b"".join(chunks), "eof"
            total += len(chunk)
            if total > limit:
                return b"".join(chunks) + chunk, "too_much"
            chunks.append(chunk)
            if on_chunk:
                on_chunk(chunk)
    except (ConnectionResetError, BrokenPipeError):
        return b"".join(chunks), "reset"
    except socket.timeout:
        return b"".join(chunks), "timeout"


def run_threads(count, target):
    results = [None] * count
    def run(i):
        try:
            results[i] = target(i)
        except Exception as error:  # noqa: BLE001 - reported as the result
            results[i] = f"exception {error!r}"
    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT * 2)
    return results


# --- 1, 2: curl and wrk through the proxy to nginx ------------------------------------------------

def scenario_nginx(exe, work):
    big = os.urandom(1 << 20)
    big_sha = hashlib.sha256(big).hexdigest()
    nginx = Nginx(work, {"big": big, "small": os.urandom(16 << 10)})
    proxy = Proxy(exe, work, f"127.0.0.1:{nginx.port}")
    host, port = proxy.address
    try:
        log("1-curl-1MiB")
        def download(i):
            out = f"{work}/download-{i}"
            result = subprocess.run(
                ["curl", "-sS", "--max-time", "20", "-o", out, "-w", "%{http_code}",
                 f"http://{host}:{port}/big"], capture_output=True, text=True, timeout=30)
            with open(out, "rb") as f:
                data = f.read()
            os.unlink(out)
            return (result.returncode, result.stdout, hashlib.sha256(data).hexdigest(), len(data),
                    result.stderr.strip())
        results = [download(i) for i in range(4)] + run_threads(16, lambda i: download(100 + i))
        good = [r for r in results if isinstance(r, tuple) and r[0] == 0 and r[1] == "200" and r[2] == big_sha]
        check(len(good) == 20, f"20 downloads of 1 MiB byte-identical ({len(good)} good; "
                               f"bad: {[r for r in results if r not in good][:3]})")

        log("2-wrk-keepalive / 2-wrk-close")
        for name, extra in (("keepalive", []), ("close", ["-H", "Connection: close"])):
            result = subprocess.run(
                ["wrk", "-t2", "-c100", "-d3s", "--timeout", "5s", *extra, f"http://{host}:{port}/small"],
                capture_output=True, text=True, timeout=30)
            out = result.stdout
            requests = re.search(r"(\d+) requests in", out)
            errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
            error_counts = [int(x) for x in errors.groups()] if errors else [0, 0, 0, 0]
            check(result.returncode == 0 and requests and int(requests.group(1)) > 0,
                  f"wrk {name}: {requests.group(1) if requests else 'no'} requests")
            check(sum(error_counts) == 0, f"wrk {name}: no socket errors ({errors.group(0) if errors else 'none'})")
            check("Non-2xx" not in out, f"wrk {name}: no non-2xx responses")
            if not requests or sum(error_counts) or "Non-2xx" in out:
                log(out)
        # wrk resets the connections it has open when its time is up: at most 101 per wrk run (its
        # 100 and one it opens first).
        stats = check_no_leaks(proxy, "nginx proxy", client_resets=202)
        log(f"  (proxy counters: {json.dumps(stats['proxy'])})")
    finally:
        if proxy.process.poll() is None:
            proxy.process.kill()
        nginx.stop()


def scenario_threads(exe, work):
    log("2-threads")
    big = os.urandom(1 << 20)
    big_sha = hashlib.sha256(big).hexdigest()
    nginx = Nginx(work, {"big": big, "small": os.urandom(16 << 10)})
    proxy = Proxy(exe, work, f"127.0.0.1:{nginx.port}", "--threads", "2")
    host, port = proxy.address
    try:
        def download(i):
            result = subprocess.run(["curl", "-sS", "--max-time", "20", f"http://{host}:{port}/big"],
                                    capture_output=True, timeout=30)
            return result.returncode == 0 and hashlib.sha256(result.stdout).hexdigest() == big_sha
        results = run_threads(8, download)
        check(results.count(True) == 8, f"--threads 2: 8 downloads of 1 MiB at once byte-identical ({results})")
        result = subprocess.run(["wrk", "-t2", "-c50", "-d2s", "--timeout", "5s", "-H", "Connection: close",
                                 f"http://{host}:{port}/small"], capture_output=True, text=True, timeout=30)
        requests = re.search(r"(\d+) requests in", result.stdout)
        check(requests and int(requests.group(1)) > 0 and "Socket errors" not in result.stdout
              and "Non-2xx" not in result.stdout,
              f"--threads 2: wrk Connection: close, {requests.group(1) if requests else 'no'} requests, no errors")
        stats = proxy.stats()
        per_thread = [t["connections"] for t in stats["per_thread"]]
        check(len(per_thread) == 2 and min(per_thread) > 0 and sum(per_thread) == stats["proxy"]["connections"],
              f"--threads 2: both threads carried connections (SO_REUSEPORT) and the total adds up ({per_thread})")
        check_no_leaks(proxy, "threads proxy", client_resets=51)
    finally:
        if proxy.process.poll() is None:
            proxy.process.kill()
        nginx.stop()


# --- 3: the early response, `ringlinger serve` upstream -------------------------------------------

def scenario_early_response(exe, work):
    log("3-early-response")
    serve = subprocess.Popen([exe, "serve", "--listen", "127.0.0.1:0", "--response-bytes", "1MiB",
                              "--json", f"{work}/serve.json"], stdout=subprocess.PIPE, text=True)
    PROCESSES.append(serve)
    match = re.search(r"listening on ([0-9.:]+)", serve.stdout.readline())
    if not check(match is not None, "serve started"):
        return
    proxy = Proxy(exe, work, match.group(1))
    upload = 8 << 20

    def client(i):
        sock = socket.create_connection(proxy.address, TIMEOUT)
        sock.settimeout(TIMEOUT)
        head = b"POST /upload HTTP/1.1\r\nHost: proxy-test\r\nContent-Length: %d\r\n\r\n" % upload
        sent = {"bytes": 0, "error": None}

        def send_body():
            body = memoryview(b"x" * (256 << 10))
            try:
                sock.sendall(head)
                while sent["bytes"] < upload:
                    sock.sendall(body[: min(len(body), upload - sent["bytes"])])
                    sent["bytes"] += min(len(body), upload - sent["bytes"])
            except OSError as error:
                sent["error"] = repr(error)

        sender = threading.Thread(target=send_body)
        sender.start()
        data, end = recv_all(sock, 4 << 20)
        sender.join(TIMEOUT)
        sock.close()
        if end != "eof":
            return f"{end} after {len(data)} bytes"
        head_end = data.find(b"\r\n\r\n")
        length = re.search(rb"Content-Length: (\d+)", data[:head_end]) if head_end > 0 else None
        if not data.startswith(b"HTTP/1.1 200") or not length:
            return f"bad head {data[:80]!r}"
        if len(data) != head_end + 4 + int(length.group(1)):
            return f"short: {len(data)} bytes, expected {head_end + 4 + int(length.group(1))}"
        if sender.is_alive() or sent["error"]:
            return f"upload: {sent}"
        return "complete"

    results = [client(i) for i in range(4)] + run_threads(4, client)
    check(results.count("complete") == 8,
          f"8 clients uploading 8 MiB got the whole early response and a clean EOF ({results})")
    check_no_leaks(proxy, "serve proxy")
    serve.send_signal(signal.SIGTERM)
    serve.wait(TIMEOUT)
    with open(f"{work}/serve.json") as f:
        outcomes = json.load(f)["stats"]["outcomes"]
    check(outcomes["clean"] == 8 and sum(outcomes.values()) == 8,
          f"serve closed all 8 cleanly (saw the forwarded EOF): { {k: v for k, v in outcomes.items() if v} }")


def scenario_peer_mix(exe, work):
    log("3-peer-mix")
    serve = subprocess.Popen([exe, "serve", "--listen", "127.0.0.1:0", "--response-bytes", "64KiB"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    PROCESSES.append(serve)
    match = re.search(r"listening on ([0-9.:]+)", serve.stdout.readline())
    if not check(match is not None, "serve started"):
        return
    proxy = Proxy(exe, work, match.group(1))
    result = subprocess.run(
        [exe, "client", "--connect", f"{proxy.address[0]}:{proxy.address[1]}", "--connections", "500",
         "--concurrency", "200", "--response-bytes", "64KiB", "--body-bytes", "64KiB",
         "--peers", "cooperative=80,never-fin=4,flood=4,reset=4,slow-reader=4,half-close=4",
         "--never-fin-hold", "1s", "--flood-limit", "5s", "--json", f"{work}/client.json"],
        capture_output=True, text=True, timeout=120)
    with open(f"{work}/client.json") as f:
        client = json.load(f)
    check(result.returncode == 0 and client["complete"] == 500,
          f"ringlinger client, 500 connections of 6 peer types (never-fin, flood, reset, slow-reader, "
          f"half-close) through the proxy: each got what its type should ({client['complete']} complete)")
    if result.returncode != 0:
        log(result.stdout[-2000:])
    # The reset peers reset their client leg; a never-fin peer resets after its hold; a flood
    # meets serve's drain cap (serve resets the upstream leg, the proxy then caps the client leg).
    check_no_leaks(proxy, "peer-mix proxy", allow=("peer_reset", "drain_byte_cap"))
    serve.send_signal(signal.SIGTERM)
    serve.wait(TIMEOUT)


# --- 4: half-close both ways, flow control (a Python upstream) ------------------------------------

class PythonUpstream:
    """A thread accepting connections and running `handler(sock)` for each, results kept."""

    def __init__(self, handler):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.handler = handler
        self.results = []
        self.lock = threading.Lock()
        self.stopping = False
        self.threads = []
        self.thread = threading.Thread(target=self.accept_loop, daemon=True)
        self.thread.start()

    def accept_loop(self):
        while not self.stopping:
            try:
                sock, _ = self.listener.accept()
            except socket.timeout:
                continue
            sock.settimeout(TIMEOUT)
            t = threading.Thread(target=self.serve_one, args=(sock,), daemon=True)
            t.start()
            self.threads.append(t)

    def serve_one(self, sock):
        try:
            result = self.handler(sock)
        except Exception as error:  # noqa: BLE001 - reported as the result
            result = f"exception {error!r}"
        finally:
            sock.close()
        with self.lock:
            self.results.append(result)

    def stop(self):
        self.stopping = True
        self.thread.join(5)
        for t in self.threads:
            t.join(TIMEOUT)
        self.listener.close()


def scenario_half_close(exe, work):
    log("4-half-close-client")
    request = pattern(100 << 10, seed=1)
    answer = pattern(3 << 20, seed=2)

    def answer_after_eof(sock):
        data, end = recv_all(sock, 1 << 20)
        sock.sendall(answer)
        return (end, data == request, len(data))

    upstream = PythonUpstream(answer_after_eof)
    proxy = Proxy(exe, work, f"127.0.0.1:{upstream.port}")

    def client(_):
        sock = socket.create_connection(proxy.address, TIMEOUT)
        sock.settimeout(TIMEOUT)
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        data, end = recv_all(sock, 8 << 20)
        sock.close()
        return "complete" if end == "eof" and data == answer else f"{end} after {len(data)} bytes"

    results = [client(0)] + run_threads(5, client)
    check(results.count("complete") == 6, f"6 clients sent 100 KiB + FIN, got exactly 3 MiB + clean EOF ({results})")
    wait_until(lambda: len(upstream.results) == 6, TIMEOUT)
    check(upstream.results == [("eof", True, len(request))] * 6,
          f"the upstream got exactly the 100 KiB request and EOF, 6 times ({upstream.results[:2]}...)")
    stats = check_no_leaks(proxy, "half-close proxy (client first)")
    check(stats["proxy"]["half_closes_client_first"] == 6, "6 half-closes by the client first counted")
    upstream.stop()

    log("4-half-close-upstream")
    greeting = pattern(1 << 20, seed=3)
    late = pattern(2 << 20, seed=4)

    def greet_then_read(sock):
        sock.sendall(greeting)
        sock.shutdown(socket.SHUT_WR)
        data, end = recv_all(sock, 4 << 20)
        return (end, data == late, len(data))

    upstream = PythonUpstream(greet_then_read)
    proxy = Proxy(exe, work, f"127.0.0.1:{upstream.port}")

    def late_client(_):
        sock = socket.create_connection(proxy.address, TIMEOUT)
        sock.settimeout(TIMEOUT)
        data, end = recv_all(sock, 4 << 20)
        if end != "eof" or data != greeting:
            sock.close()
            return f"greeting: {end} after {len(data)} bytes"
        sock.sendall(late)  # after the upstream's FIN: the other direction is still open
        sock.shutdown(socket.SHUT_WR)
        rest, end = recv_all(sock, 1)
        sock.close()
        return "complete" if end == "eof" and not rest else f"after sending: {end}, {len(rest)} bytes"

    results = run_threads(4, late_client)
    check(results.count("complete") == 4, f"4 clients got 1 MiB + EOF, then sent 2 MiB + FIN ({results})")
    wait_until(lambda: len(upstream.results) == 4, TIMEOUT)
    check(upstream.results == [("eof", True, len(late))] * 4,
          f"the upstream got exactly 2 MiB and EOF after its own FIN, 4 times ({upstream.results[:2]}...)")
    stats = check_no_leaks(proxy, "half-close proxy (upstream first)")
    check(stats["proxy"]["half_closes_upstream_first"] == 4, "4 half-closes by the upstream first counted")
    upstream.stop()

    log("4-flow-control")
    flood = pattern(16 << 20, seed=5)

    def send_flood(sock):
        sock.sendall(flood)
        sock.shutdown(socket.SHUT_WR)
        data, end = recv_all(sock, 1 << 20)
        return (end, len(data))

    upstream = PythonUpstream(send_flood)
    proxy = Proxy(exe, work, f"127.0.0.1:{upstream.port}", "--max-buffer", "256KiB")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)  # no autotuning: the proxy must queue
    sock.settimeout(TIMEOUT)
    sock.connect(proxy.address)
    time.sleep(0.5)  # read late: 16 MiB is far more than the socket buffers on the way hold
    during = proxy.stats()["proxy"]
    data, end = recv_all(sock, 32 << 20)
    sock.shutdown(socket.SHUT_WR)
    sock.close()
    check(end == "eof" and data == flood, f"a slow reader got exactly 16 MiB + clean EOF ({end}, {len(data)} bytes)")
    check(during["receive_pauses"] >= 1,
          f"the proxy paused reading from the upstream while the client did not read "
          f"({during['receive_pauses']} pauses, {during['bytes_upstream_to_client']} bytes forwarded by then)")
    check(during["bytes_upstream_to_client"] < 12 << 20,
          f"and held at most the socket buffers plus --max-buffer ({during['bytes_upstream_to_client']} bytes "
          f"forwarded while the client slept)")
    wait_until(lambda: len(upstream.results) == 1, TIMEOUT)
    check(upstream.results == [("eof", 0)], f"the flooding upstream saw EOF ({upstream.results})")
    stats = check_no_leaks(proxy, "flow-control proxy")
    check(stats["proxy"]["receive_resumes"] == stats["proxy"]["receive_pauses"],
          f"every pause was resumed ({stats['proxy']['receive_pauses']} pauses)")
    upstream.stop()


# --- 5: upstream down ------------------------------------------------------------------------------

def scenario_upstream_down(exe, work):
    log("5-upstream-refused")
    dead_port = free_port()  # bound and released: nothing listens there
    proxy = Proxy(exe, work, f"127.0.0.1:{dead_port}")

    def client(_):
        sock = socket.create_connection(proxy.address, TIMEOUT)
        sock.settimeout(5)
        start = time.monotonic()
        try:
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        except (ConnectionResetError, BrokenPipeError):
            sock.close()
            return "reset"
        data, end = recv_all(sock, 1 << 20)
        sock.close()
        if end in ("eof", "reset") and not data and time.monotonic() - start < 5:
            return end
        return f"{end} after {len(data)} bytes"

    results = [client(0) for _ in range(5)] + run_threads(5, client)
    check(all(r in ("eof", "reset") for r in results), f"10 clients got EOF or a reset promptly ({results})")
    check(proxy.process.poll() is None, "the proxy is still running")
    stats = check_no_leaks(proxy, "refused proxy", allow=("peer_reset", "send_error", "receive_error"))
    check(stats["proxy"]["upstream_connect_failures"] == 10 and
          stats["proxy"]["connect_errors"].get("ECONNREFUSED") == 10,
          f"10 upstream connect failures counted, ECONNREFUSED ({stats['proxy']['connect_errors']})")

    log("5-connect-timeout")
    # backlog 0 holds one connection in the accept queue; once it is full the kernel drops SYNs
    # (tcp_abort_on_overflow 0), so a connect stays in SYN_SENT.
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    fillers = []
    for _ in range(2):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(full.getsockname())
        fillers.append(s)
    time.sleep(0.2)
    proxy = Proxy(exe, work, f"127.0.0.1:{full.getsockname()[1]}", "--connect-timeout", "1s")
    sock = socket.create_connection(proxy.address, TIMEOUT)
    sock.settimeout(TIMEOUT)
    start = time.monotonic()
    data, end = recv_all(sock, 1)
    elapsed = time.monotonic() - start
    sock.close()
    check(end == "eof" and not data, f"the client got EOF when the upstream connect timed out ({end}, {elapsed:.1f} s)")
    stats = check_no_leaks(proxy, "connect-timeout proxy", allow=("aborted",))
    check(stats["proxy"]["upstream_connect_timeouts"] == 1, f"1 connect timeout counted ({stats['proxy']})")
    for s in fillers:
        s.close()
    full.close()


def scenario_usage(exe, work):
    log("0-usage")
    for args, needle in ((["proxy"], "--upstream is required"),
                         (["proxy", "--upstream", "example.org:80"], "--upstream: 'example.org:80' is not an address"),
                         (["proxy", "--upstream", "127.0.0.1:0"], "--upstream: port 0"),
                         (["proxy", "--upstream", "127.0.0.1:80", "--listen", "nowhere"], "--listen: 'nowhere'"),
                         (["proxy", "--upstream", "127.0.0.1:80", "--threads", "0"], "--threads: must be between 1"),
                         (["proxy", "--upstream", "127.0.0.1:80", "--max-buffer", "0"], "--max-buffer"),
                         (["proxy", "--upstream", "127.0.0.1:80", "--receive-buffer", "8"], "--receive-buffer: must be between"),
                         (["proxy", "--upstream", "127.0.0.1:80", "--receive-buffers", "3"], "--receive-buffers"),
                         (["proxy", "--upstream", "127.0.0.1:80", "--connect-timeout", "5"], "--connect-timeout")):
        result = subprocess.run([exe, *args], capture_output=True, text=True, timeout=TIMEOUT)
        check(result.returncode == 2 and needle in result.stderr,
              f"{' '.join(args[1:]) or '(no flags)'}: exit 2 naming the flag ({result.returncode}, {result.stderr.strip()!r})")
    result = subprocess.run([exe, "proxy", "--help"], capture_output=True, text=True, timeout=TIMEOUT)
    check(result.returncode == 0 and "--upstream" in result.stdout and "--max-buffer" in result.stdout,
          "proxy --help: exit 0, lists the flags")


def scenario_table_full(exe, work):
    log("5-table-full")
    # --max-connections 3: one pair (2 slots) and one more client, whose upstream leg finds the
    # table full: that client is closed (EOF), counted, and the proxy goes on.
    def echo_until_eof(sock):
        data, end = recv_all(sock, 1 << 20)
        sock.sendall(data)
        return (end, len(data))
    upstream = PythonUpstream(echo_until_eof)
    proxy = Proxy(exe, work, f"127.0.0.1:{upstream.port}", "--max-connections", "3")
    first = socket.create_connection(proxy.address, TIMEOUT)
    first.settimeout(TIMEOUT)
    first.sendall(b"first")
    wait_until(lambda: proxy.stats()["stats"]["live_connections"] == 2, TIMEOUT, 0.1)
    second = socket.create_connection(proxy.address, TIMEOUT)
    second.settimeout(TIMEOUT)
    data, end = recv_all(second, 1)
    second.close()
    check(end == "eof" and not data, f"a client without a slot for its upstream leg gets EOF ({end})")
    first.shutdown(socket.SHUT_WR)
    data, end = recv_all(first, 100)
    first.close()
    check(end == "eof" and data == b"first", f"the client with a pair still gets its echo and EOF ({end}, {data!r})")
    third = socket.create_connection(proxy.address, TIMEOUT)
    third.settimeout(TIMEOUT)
    third.sendall(b"third")
    third.shutdown(socket.SHUT_WR)
    data, end = recv_all(third, 100)
    third.close()
    check(end == "eof" and data == b"third", f"once the pair is closed, the next client is served ({end}, {data!r})")
    stats = check_no_leaks(proxy, "table-full proxy")
    check(stats["proxy"]["upstream_unavailable"] == 1 and stats["proxy"]["connections"] == 3,
          f"1 client without an upstream leg counted, of 3 ({stats['proxy']['upstream_unavailable']}, "
          f"{stats['proxy']['connections']})")
    upstream.stop()


SCENARIOS = {"usage": scenario_usage, "nginx": scenario_nginx, "threads": scenario_threads, "early-response": scenario_early_response,
             "peer-mix": scenario_peer_mix,
             "half-close": scenario_half_close, "upstream-down": scenario_upstream_down, "table-full": scenario_table_full}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("exe")
    parser.add_argument("--only", default="", help="comma-separated: " + ", ".join(SCENARIOS))
    parser.add_argument("--proxy-args", default="", help="extra flags for every proxy, e.g. '--backend epoll'")
    args = parser.parse_args()
    PROXY_ARGS.extend(args.proxy_args.split())
    missing = [p for p in ("nginx", "curl", "wrk") if not (shutil.which(p) or os.path.exists(f"/usr/sbin/{p}"))]
    if missing:
        print(f"proxy_test: missing {', '.join(missing)} (tools/lib.sh installs them: tools/test)", file=sys.stderr)
        return 1
    atexit.register(cleanup)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    work = tempfile.mkdtemp(prefix="ringlinger-proxy-test-")
    atexit.register(shutil.rmtree, work, True)
    chosen = [s for s in args.only.split(",") if s] or list(SCENARIOS)
    for name in chosen:
        try:
            SCENARIOS[name](os.path.abspath(args.exe), work)
        except Exception as error:  # noqa: BLE001 - a scenario that could not run is a failure
            check(False, f"{name}: {error!r}")
    print(f"{CHECKS['passed']} passed, {CHECKS['failed']} failed")
    return 1 if CHECKS["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""`ringlinger serve` and `ringlinger proxy` run as daemons: what an operator's tools do to them.

  signals       SIGHUP, SIGUSR1, SIGHUP again while 20 clients are mid-request, on serve and on a
                proxy in front of serve: the process lives on, every client then gets the exact
                response and a clean EOF, the counters on the metrics page and on stdout go on
                from where they were (nothing reset); SIGTERM exits 0 with the final counters.
  reload        serve --config with drain-idle-timeout = 30s; a silent client (reads the response,
                never sends FIN) is draining; the file is changed to 300ms and SIGHUP sent; a
                second silent client ends drain_idle_timeout (log line, metrics) while the first,
                whose timer was armed before, is still draining. A broken file on SIGHUP changes
                nothing and is logged; a changed --max-connections is logged as needing a restart.
  metrics       `ringlinger client` runs 3000 connections against serve (and through a proxy)
                while the page is scraped again and again and parsed by prometheus_client (the
                reference parser): every scrape parses, counters never go back, and at the end
                the closes, the histogram's count and the proxy's connections equal the client's
                connections, and no connection is left in any state.
  log           one JSON (or text) line per connection that did not end clean, for every outcome
                a loopback peer can cause: peer_reset, drain_idle_timeout, drain_timeout,
                drain_byte_cap, send_timeout, stop_deadline, and the proxy's aborted client with
                its "upstream connect failed" ECONNREFUSED line; each with the client's address,
                the byte counts and the phase times. SIGUSR1 reopens a renamed log (logrotate).
  addresses     --listen given three times (localhost:0 resolves to 127.0.0.1 and ::1, plus
                127.0.0.1:0), *:0 (every IPv4 address), a proxy whose --upstream is a hostname.
  errors        every bad flag, value and file: exit 2 and a message naming it, nothing started;
                --check: exit 0 for a good configuration, 2 naming the line for a bad one;
                --json - writes the JSON to standard output (no file named "-").

    tests/daemon/daemon_test.py RINGLINGER_EXE [--only NAME,...]

Needs python3-prometheus-client (tools/lib.sh installs it). Every wait is bounded; every process
started here is stopped on exit. Exit code 1 when a check fails.
"""
import argparse
import atexit
import json
import os
import queue
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:
    # Debian's package is for Debian's python3; a python3 of one's own (pyenv) first on PATH
    # does not see it.
    if os.path.exists("/usr/bin/python3") and os.path.realpath(sys.executable) != os.path.realpath("/usr/bin/python3"):
        os.execv("/usr/bin/python3", ["/usr/bin/python3", *sys.argv])
    sys.exit("daemon_test: python3-prometheus-client is missing (apt-get install python3-prometheus-client)")

TIMEOUT = 20.0
CHECKS = {"passed": 0, "failed": 0}
PROCESSES = []
REQUEST_HEAD = b"GET / HTTP/1.1\r\nHost: daemon-test\r\n\r\n"


def log(message):
    print(message, flush=True)


def check(condition, message):
    CHECKS["passed" if condition else "failed"] += 1
    log(f"  {'ok  ' if condition else 'FAIL'}  {message}")
    return condition


def cleanup():
    for process in PROCESSES:
        if process.poll() is None:
            process.kill()
            process.wait(5)


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


ADDRESS = re.compile(r"(\[[0-9a-fA-F:.]+\]|[0-9.]+):(\d+)")


def addresses_in(text):
    """Every "127.0.0.1:8080" or "[::1]:8080" in `text`, as (host, port)."""
    return [(m.group(1).strip("[]"), int(m.group(2))) for m in ADDRESS.finditer(text)]


class Daemon:
    """`ringlinger serve|proxy ...` with its stdout read line by line on a thread."""

    def __init__(self, exe, *args):
        self.process = subprocess.Popen([exe, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        PROCESSES.append(self.process)
        self.lines = queue.Queue()
        self.stdout = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        ready = self.next_line(lambda line: "listening on" in line)
        if ready is None:
            self.process.kill()
            raise RuntimeError(f"{args[0]} did not start: {self.process.stderr.read()}")
        self.listening = addresses_in(ready.split("listening on ")[1].split(" (")[0].split(", upstream")[0])
        self.address = self.listening[0]
        metrics = self.next_line(lambda line: "metrics on" in line, timeout=2) if "--metrics" in args else None
        self.metrics_url = metrics.split("metrics on ")[1].strip() if metrics else None

    def _read(self):
        for line in self.process.stdout:
            self.stdout.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def next_line(self, predicate, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                return None
            if line is None:
                return None
            if predicate(line):
                return line
        return None

    def signal(self, number):
        self.process.send_signal(number)

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = None
        self.reader.join(TIMEOUT)  # every line it printed is in self.stdout
        return code

    def scrape(self):
        return scrape(self.metrics_url)


def scrape(url):
    """The page parsed by prometheus_client: {(sample name, sorted labels): value}."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
        content_type = response.headers["Content-Type"]
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    samples[("content_type", ())] = content_type
    return samples


def total(samples, name, **labels):
    """The sum of `name`'s samples whose labels include `labels`."""
    return sum(value for (sample, sample_labels), value in samples.items()
               if sample == name and all(dict(sample_labels).get(k) == v for k, v in labels.items()))


def connect(address, **options):
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    if "rcvbuf" in options:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, options["rcvbuf"])
    sock.settimeout(TIMEOUT)
    sock.connect(address)
    return sock


def read_response(sock):
    """Reads to EOF. Returns (head, body length, how it ended: "eof" or the error's name)."""
    data = bytearray()
    try:
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                end = "eof"
                break
            data += chunk
    except OSError as error:
        end = type(error).__name__
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    return head.decode(errors="replace"), len(body), end


def content_length(head):
    match = re.search(r"(?im)^content-length:\s*(\d+)", head)
    return int(match.group(1)) if match else -1


def exchange_ok(sock, expected_bytes):
    head, body, end = read_response(sock)
    return head.startswith("HTTP/1.1 200") and content_length(head) == expected_bytes == body and end == "eof"


def reset(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def expect_usage_error(exe, args, names, message, stdin_file=None):
    """Exit 2, nothing on stdout but the message on stderr naming each of `names`."""
    result = subprocess.run([exe, *args], capture_output=True, text=True, timeout=TIMEOUT)
    named = all(name in result.stderr for name in names)
    return check(result.returncode == 2 and named and "listening" not in result.stdout,
                 f"{message}: exit {result.returncode}, {result.stderr.strip()[:160]!r}")


def partial_clients(address, count):
    """`count` clients that sent half a request head and wait."""
    clients = [connect(address) for _ in range(count)]
    for sock in clients:
        sock.sendall(REQUEST_HEAD[:20])
    return clients


def finish_clients(clients, expected_bytes):
    """The rest of each request; every one must get the exact response and a clean EOF."""
    for sock in clients:
        sock.sendall(REQUEST_HEAD[20:])
    good = sum(exchange_ok(sock, expected_bytes) for sock in clients)
    for sock in clients:
        sock.close()
    return good


def signals_on(name, daemon, address, work):
    """HUP, USR1, HUP while clients wait mid-request; then they finish; then TERM."""
    warmup = connect(address)
    warmup.sendall(REQUEST_HEAD)
    check(exchange_ok(warmup, 4096), f"{name}: a first client is served")
    warmup.close()
    before = wait_until(lambda: (s := daemon.scrape()) and total(s, "ringlinger_closes_total") >= 1 and s)
    clients = partial_clients(address, 20)
    daemon.signal(signal.SIGHUP)
    daemon.signal(signal.SIGUSR1)
    counters = daemon.next_line(lambda line: "connections" in line or "closed" in line, timeout=10)
    daemon.signal(signal.SIGHUP)
    daemon.signal(signal.SIGUSR2)
    daemon.signal(signal.SIGPIPE)
    time.sleep(0.2)  # the signals are handled; the process must still be there
    check(daemon.process.poll() is None, f"{name}: alive after SIGHUP, SIGUSR1, SIGHUP, SIGUSR2, SIGPIPE")
    check(counters is not None, f"{name}: SIGUSR1 printed the counters: {counters!r}")
    good = finish_clients(clients, 4096)
    check(good == 20, f"{name}: {good}/20 clients mid-request got the exact response and a clean EOF")
    after = wait_until(lambda: (s := daemon.scrape()) and
                       total(s, "ringlinger_closes_total") >= total(before, "ringlinger_closes_total") + 20 and s)
    check(bool(after), f"{name}: closes went on from {total(before, 'ringlinger_closes_total')} (not reset)")
    code = daemon.stop()
    check(code == 0, f"{name}: SIGTERM exits 0 (got {code})")


def scenario_signals(exe, work):
    serve = Daemon(exe, "serve", "--listen", "127.0.0.1:0", "--response-bytes", "4096",
                   "--metrics", "127.0.0.1:0", "--log", f"{work}/serve.log")
    signals_on("serve", serve, serve.address, work)
    upstream = Daemon(exe, "serve", "--listen", "127.0.0.1:0", "--response-bytes", "4096", "--quiet")
    proxy = Daemon(exe, "proxy", "--listen", "127.0.0.1:0", "--upstream", "%s:%d" % upstream.address,
                   "--metrics", "127.0.0.1:0")
    signals_on("proxy", proxy, proxy.address, work)
    upstream.stop()
    log_text = open(f"{work}/serve.log").read()
    check("no --config" in log_text or "--config" in log_text,
          "serve: SIGHUP without --config is logged")


def silent_client(address):
    """Sends a request, reads the whole response (so every byte is acknowledged), never FINs."""
    sock = connect(address)
    sock.sendall(REQUEST_HEAD)
    data = bytearray()
    while len(data) < 4096 or b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < 4096:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return sock


def log_lines(path):
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def connection_lines(path, outcome=None):
    return [line for line in log_lines(path) if line.get("msg") == "connection ended"
            and (outcome is None or line.get("outcome") == outcome)]


def scenario_reload(exe, work):
    config = f"{work}/reload.conf"
    logfile = f"{work}/reload.log"
    with open(config, "w") as f:
        f.write("# daemon_test\nlisten = 127.0.0.1:0\nresponse-bytes = 4096\ndrain-idle-timeout = 30s\n")
    serve = Daemon(exe, "serve", "--config", config, "--metrics", "127.0.0.1:0",
                   "--log", logfile, "--log-format", "json")
    first = silent_client(serve.address)
    check(wait_until(lambda: total(serve.scrape(), "ringlinger_connections", state="draining") == 1),
          "reload: the first silent client is draining")
    with open(config, "w") as f:
        f.write("listen = 127.0.0.1:0\nresponse-bytes = 4096\ndrain-idle-timeout = 300ms\n")
    serve.signal(signal.SIGHUP)
    reloaded = wait_until(lambda: [l for l in log_lines(logfile) if "drain-idle-timeout 30s -> 300ms" in l.get("msg", "")])
    check(bool(reloaded), "reload: the log says drain-idle-timeout 30s -> 300ms")
    second = silent_client(serve.address)
    ended = wait_until(lambda: connection_lines(logfile, "drain_idle_timeout"))
    check(len(ended) == 1 and ended[0].get("peer") == "%s:%d" % second.getsockname(),
          f"reload: the client after the reload ended drain_idle_timeout: {ended}")
    samples = serve.scrape()
    check(total(samples, "ringlinger_connections", state="draining") == 1 and
          total(samples, "ringlinger_closes_total", outcome="drain_idle_timeout") == 1,
          "reload: the client from before the reload (30 s timer) is still draining")
    first.shutdown(socket.SHUT_WR)  # its EOF: a clean end
    check(wait_until(lambda: total(serve.scrape(), "ringlinger_closes_total", outcome="clean") == 1),
          "reload: the first client then ends clean")
    second.close()
    first.close()
    with open(config, "w") as f:
        f.write("listen = 127.0.0.1:0\nresponse-bytes = 4096\ndrain-idle-timeout = soon\n")
    serve.signal(signal.SIGHUP)
    check(wait_until(lambda: [l for l in log_lines(logfile) if "stays as it was" in l.get("msg", "")
                              and "drain-idle-timeout" in l.get("msg", "")]),
          "reload: a bad value on SIGHUP is logged and changes nothing")
    with open(config, "w") as f:
        f.write("listen = 127.0.0.1:0\nresponse-bytes = 4096\ndrain-idle-timeout = 300ms\nmax-connections = 100\n")
    serve.signal(signal.SIGHUP)
    check(wait_until(lambda: [l for l in log_lines(logfile) if "max-connections" in l.get("msg", "")
                              and "restart" in l.get("msg", "")]),
          "reload: a changed --max-connections is logged as needing a restart")
    check(serve.stop() == 0, "reload: SIGTERM exits 0")


def metrics_under_load(name, exe, daemon, address, work, proxy=False):
    result = {}
    client = subprocess.Popen([exe, "client", "--connect", "%s:%d" % address, "--connections", "3000",
                               "--concurrency", "100", "--response-bytes", "4096",
                               "--json", f"{work}/{name}-client.json"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    PROCESSES.append(client)
    scrapes, went_back, last = 0, [], {}
    while client.poll() is None and scrapes < 2000:
        samples = daemon.scrape()
        scrapes += 1
        for key, value in samples.items():
            if key[0].endswith("_total") and value < last.get(key, 0):
                went_back.append(key)
        last = samples
        time.sleep(0.01)
    client.wait(120)
    check(client.returncode == 0, f"{name}: the client verified every connection (exit {client.returncode})")
    check(scrapes >= 3 and not went_back, f"{name}: {scrapes} scrapes during the load parsed, no counter went back {went_back[:3]}")
    report = json.load(open(f"{work}/{name}-client.json"))
    connections = report["complete"]  # verified: exact bytes and a clean EOF
    check(connections == 3000 and report["failed"] == 0, f"{name}: the client completed {connections} of 3000")
    final = wait_until(lambda: (s := daemon.scrape()) and total(s, "ringlinger_connections") == 0 and s)
    check(bool(final), f"{name}: no connection left in any state")
    closes = total(final, "ringlinger_closes_total")
    clean = total(final, "ringlinger_closes_total", outcome="clean")
    histogram = total(final, "ringlinger_close_duration_seconds_count")
    check(final[("content_type", ())].startswith("text/plain; version=0.0.4"), f"{name}: content type {final[('content_type', ())]}")
    if proxy:
        pairs = total(final, "ringlinger_proxy_connections_total")
        check(pairs == connections and closes == 2 * connections and clean == closes,
              f"{name}: {pairs} client connections, {closes} legs closed ({clean} clean) for {connections} client connections")
    else:
        check(closes == connections == clean, f"{name}: {closes} closes ({clean} clean) for {connections} client connections")
    check(histogram == closes, f"{name}: the close duration histogram counts {histogram} of {closes}")


def scenario_metrics(exe, work):
    serve = Daemon(exe, "serve", "--listen", "127.0.0.1:0", "--response-bytes", "4096", "--metrics", "127.0.0.1:0",
                   "--quiet")
    metrics_under_load("metrics-serve", exe, serve, serve.address, work)
    proxy = Daemon(exe, "proxy", "--listen", "127.0.0.1:0", "--upstream", "%s:%d" % serve.address,
                   "--metrics", "127.0.0.1:0", "--quiet")
    metrics_under_load("metrics-proxy", exe, proxy, proxy.address, work, proxy=True)
    try:
        urllib.request.urlopen(proxy.metrics_url.replace("/metrics", "/other"), timeout=10)
        status = 200
    except urllib.error.HTTPError as error:
        status = error.code
    check(status == 404, f"metrics: another path is 404 (got {status})")
    check(proxy.stop() == 0 and serve.stop() == 0, "metrics: both exit 0 on SIGTERM")


def check_connection_line(line, outcome, peer):
    fields = ["time", "level", "role", "peer", "outcome", "error", "bytes_sent", "bytes_unsent",
              "bytes_discarded", "open_ms", "flush_ms", "drain_ms", "teardown_ms"]
    missing = [field for field in fields if field not in line]
    return check(line.get("outcome") == outcome and line.get("peer") == peer and not missing,
                 f"log: {outcome} from {peer}: {json.dumps(line)[:200]} (missing {missing})")


def wait_for_outcome(logfile, outcome):
    lines = wait_until(lambda: connection_lines(logfile, outcome))
    return lines[0] if lines else {}


def cause_outcomes(address, logfile):
    """One client per outcome a loopback peer can cause; checks each one's log line."""
    sock = connect(address)  # peer_reset: a reset while the 4 MiB response is still going out
    peer = "%s:%d" % sock.getsockname()
    sock.sendall(REQUEST_HEAD)
    sock.recv(1000)
    reset(sock)
    check_connection_line(wait_for_outcome(logfile, "peer_reset"), "peer_reset", peer)

    for outcome, after in [("drain_idle_timeout", None), ("drain_timeout", b"x"), ("drain_byte_cap", b"y" * 65536)]:
        sock = connect(address, rcvbuf=8 << 20)
        peer = "%s:%d" % sock.getsockname()
        sock.sendall(REQUEST_HEAD)
        head, body, end = b"", 0, None
        while body < 4 << 20:  # the whole response: our side is done, the server drains
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            body += len(chunk)
        deadline = time.monotonic() + TIMEOUT
        while after and not connection_lines(logfile, outcome) and time.monotonic() < deadline:
            try:
                sock.sendall(after)  # progress: never idle, until the drain ends it
            except OSError:
                break
            time.sleep(0.05)
        check_connection_line(wait_for_outcome(logfile, outcome), outcome, peer)
        sock.close()

    sock = connect(address, rcvbuf=4096)  # send_timeout: never reads the response
    peer = "%s:%d" % sock.getsockname()
    sock.sendall(REQUEST_HEAD)
    line = wait_for_outcome(logfile, "send_timeout")
    check_connection_line(line, "send_timeout", peer)
    check(line.get("bytes_unsent", 0) > 0, f"log: send_timeout shows the bytes never sent ({line.get('bytes_unsent')})")
    sock.close()


def scenario_log(exe, work):
    logfile = f"{work}/outcomes.log"
    serve = Daemon(exe, "serve", "--listen", "127.0.0.1:0", "--response-bytes", "4MiB", "--log", logfile,
                   "--log-format", "json", "--drain-idle-timeout", "300ms", "--drain-timeout", "1s",
                   "--drain-max-bytes", "64KiB", "--send-timeout", "500ms", "--stop-grace", "300ms")
    cause_outcomes(serve.address, logfile)
    os.rename(logfile, logfile + ".1")  # logrotate
    serve.signal(signal.SIGUSR1)
    check(wait_until(lambda: os.path.exists(logfile)), "log: SIGUSR1 reopened the log after a rename")
    serve.stop()
    check(not connection_lines(logfile) or all(l.get("outcome") != "clean" for l in connection_lines(logfile)),
          "log: no line for a clean connection")

    # stop_deadline: a silent client still draining when --stop-grace ends.
    serve = Daemon(exe, "serve", "--listen", "127.0.0.1:0", "--response-bytes", "4096", "--log", logfile,
                   "--log-format", "json", "--stop-grace", "200ms")
    sock = silent_client(serve.address)
    peer = "%s:%d" % sock.getsockname()
    check(serve.stop() == 0, "log: SIGTERM with a draining client exits 0")
    check_connection_line(wait_for_outcome(logfile, "stop_deadline"), "stop_deadline", peer)
    sock.close()

    # The proxy: a refused upstream; the client is reset (aborted) and the error named.
    textlog = f"{work}/proxy.log"
    proxy = Daemon(exe, "proxy", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:%d" % free_port(),
                   "--log", textlog)
    # The proxy resets the client as soon as the upstream refuses, which can be before connect()
    # returns here (Python's connect with a timeout reads SO_ERROR after the handshake): the
    # local address is taken before connecting, and a reset during connect is the same reset.
    sock = socket.socket()
    sock.settimeout(TIMEOUT)
    sock.bind(("127.0.0.1", 0))
    peer = "%s:%d" % sock.getsockname()
    try:
        sock.connect(proxy.address)
        head, body, end = read_response(sock)
    except ConnectionResetError:
        end = "ConnectionResetError"
    check(end == "ConnectionResetError", f"log: the proxy's client of a refused upstream is reset ({end})")
    text = wait_until(lambda: (t := open(textlog).read()) and "ECONNREFUSED" in t and "outcome=aborted" in t and t)
    check(bool(text) and "role=upstream peer=127.0.0.1:" in text and "outcome=receive_error" in text,
          "log: the upstream leg's receive_error (its connect refused) with the upstream's address")
    check(bool(text) and f"client={peer}" in text and "upstream connect failed" in text,
          f"log: the proxy's text log names the client, ECONNREFUSED and the aborted client leg: {text[-400:]!r}")
    proxy.stop()


def scenario_addresses(exe, work):
    port = free_port()
    serve = Daemon(exe, "serve", "--listen", f"localhost:{port}", "--listen", "127.0.0.1:0",
                   "--response-bytes", "4096")
    check(len(serve.listening) >= 2 and ("127.0.0.1", port) in serve.listening,
          f"addresses: localhost:{port} and 127.0.0.1:0 listened on {serve.listening}")
    for address in serve.listening:
        sock = connect(address)
        sock.sendall(REQUEST_HEAD)
        check(exchange_ok(sock, 4096), f"addresses: served on {address}")
        sock.close()
    proxy = Daemon(exe, "proxy", "--listen", ":0", "--upstream", f"localhost:{port}")
    check(proxy.listening[0][0] == "0.0.0.0", f"addresses: :0 is every IPv4 address: {proxy.listening}")
    sock = connect(("127.0.0.1", proxy.address[1]))
    sock.sendall(REQUEST_HEAD)
    check(exchange_ok(sock, 4096), f"addresses: a proxy to upstream localhost:{port} forwards")
    sock.close()
    proxy.stop()
    serve.stop()
    serve = Daemon(exe, "serve", "--listen", "*:0", "--response-bytes", "4096")
    check(serve.listening[0][0] == "0.0.0.0", f"addresses: *:0 is every IPv4 address: {serve.listening}")
    serve.stop()


def scenario_errors(exe, work):
    def config(name, text):
        path = f"{work}/{name}.conf"
        with open(path, "w") as f:
            f.write(text)
        return path

    for command in ["serve", "proxy"]:
        base = [command, "--listen", "127.0.0.1:0"] + (["--upstream", "127.0.0.1:9"] if command == "proxy" else [])
        cases = [
            (["--json", "/nonexistent/dir/x.json"], ["--json", "/nonexistent/dir/x.json"], "an unwritable --json"),
            (["--log", "/nonexistent/dir/x.log"], ["--log", "/nonexistent/dir/x.log"], "an unwritable --log"),
            (["--log-format", "xml"], ["--log-format", "xml"], "a bad --log-format"),
            (["--listen", "nowhere"], ["--listen", "nowhere"], "an address without a port"),
            (["--listen", "no-such-host.invalid:80"], ["--listen", "no-such-host.invalid"], "an unresolvable host"),
            (["--listen", "127.0.0.1:0", "--listen", "127.0.0.1:0"], ["--listen"], "a port-0 address twice is fine"),
            (["--metrics", "127.0.0.1"], ["--metrics", "127.0.0.1"], "a --metrics address without a port"),
            (["--config", f"{work}/missing.conf"], ["--config", "missing.conf"], "a missing --config file"),
            (["--config", config("unknown", "# comment\nbogus = 1\n")], ["--config", "unknown.conf:2", "bogus"],
             "an unknown setting, with its line"),
            (["--config", config("value", "drain-idle-timeout = 5 parsecs\n")],
             ["--config", "value.conf:1", "drain-idle-timeout"], "a bad value in the file, with its line"),
            (["--config", config("syntax", "listen 127.0.0.1:0\n")], ["--config", "syntax.conf:1"],
             "a line that is not name = value"),
            (["--drain-timeout", "2h", "--drain-idle-timeout", "nonsense"], ["--drain-idle-timeout", "nonsense"],
             "a bad duration"),
        ]
        for args, names, message in cases:
            if message == "a port-0 address twice is fine":
                result = subprocess.run([exe, *base, *args, "--check"], capture_output=True, text=True, timeout=TIMEOUT)
                check(result.returncode == 0, f"{command}: {message} (exit {result.returncode}, {result.stderr.strip()!r})")
                continue
            expect_usage_error(exe, base + args, names, f"{command}: {message}")
        good = config(f"good-{command}", "# a good one\ndrain-idle-timeout = 2s\nstop-grace = '4s'\nlisten = 127.0.0.1:0\n")
        result = subprocess.run([exe, *base, "--config", good, "--check"], capture_output=True, text=True, timeout=TIMEOUT)
        check(result.returncode == 0 and "valid" in result.stdout,
              f"{command}: --check of a good file exits 0: {result.stdout.strip()!r} {result.stderr.strip()!r}")
    # The second of two addresses is taken: the first one's listener is already open on the
    # thread's ring when the second fails; a clean error, not an abort from tearing the ring
    # down on another thread.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = subprocess.run([exe, "serve", "--listen", "127.0.0.1:0", "--listen", "%s:%d" % taken.getsockname()],
                                capture_output=True, text=True, timeout=TIMEOUT)
    check(result.returncode == 1 and "Address already in use" in result.stderr,
          f"errors: a taken second --listen address exits 1 with the reason ({result.returncode}, {result.stderr.strip()!r})")
    example = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../examples/systemd/proxy.conf")
    result = subprocess.run([exe, "proxy", "--config", example, "--check"], capture_output=True, text=True, timeout=TIMEOUT)
    check(result.returncode == 0, f"errors: examples/systemd/proxy.conf passes --check ({result.returncode}, {result.stderr.strip()!r})")
    expect_usage_error(exe, ["proxy", "--listen", "127.0.0.1:0"], ["--upstream"], "proxy: no --upstream")
    expect_usage_error(exe, ["proxy", "--upstream", "no-such-host.invalid:80"], ["--upstream", "no-such-host.invalid"],
                       "proxy: an unresolvable --upstream")
    cwd = os.getcwd()
    os.chdir(work)  # where a file named "-" would appear
    try:
        serve = Daemon(exe, "serve", "--listen", "127.0.0.1:0", "--json", "-", "--quiet")
        code = serve.stop()
    finally:
        os.chdir(cwd)
    output = "".join(serve.stdout)
    check(code == 0 and '"stats"' in output and not os.path.exists(f"{work}/-"),
          f"errors: --json - writes the JSON to standard output, no file named '-' (exit {code})")


SCENARIOS = {
    "errors": scenario_errors,
    "addresses": scenario_addresses,
    "signals": scenario_signals,
    "reload": scenario_reload,
    "log": scenario_log,
    "metrics": scenario_metrics,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("exe")
    parser.add_argument("--only", default="", help="comma-separated: " + ", ".join(SCENARIOS))
    arguments = parser.parse_args()
    atexit.register(cleanup)
    exe = os.path.abspath(arguments.exe)
    chosen = [name for name in SCENARIOS if not arguments.only or name in arguments.only.split(",")]
    with tempfile.TemporaryDirectory(prefix="daemon-test-") as work:
        for name in chosen:
            log(f"{name}:")
            start = time.monotonic()
            try:
                SCENARIOS[name](exe, work)
            except Exception as error:  # a scenario that breaks is a failed check, with its cause
                check(False, f"{name}: {type(error).__name__}: {error}")
            log(f"  ({time.monotonic() - start:.1f} s)")
    log(f"{CHECKS['passed']} checks passed, {CHECKS['failed']} failed")
    return 1 if CHECKS["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())

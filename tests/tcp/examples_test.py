#!/usr/bin/env python3
"""Runs examples/host_loop (docs/EMBEDDING.md) and checks, with clients of its own, that every
connection got the whole response and a clean EOF, although each client leaves unread input
(a request larger than what the server reads) that a plain close() would answer with a reset."""
import socket
import subprocess
import sys
import threading

EXPECTED = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhello\n"


def client(port, results, index):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nX-Padding: " + b"x" * 8000 + b"\r\n\r\n")
            data = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            results[index] = "ok" if data == EXPECTED else f"got {len(data)} bytes: {data[:60]!r}"
    except OSError as error:
        results[index] = f"error {error}"


def main():
    exe, count = sys.argv[1], 60
    server = subprocess.Popen([exe, str(count)], stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        port = int(line.strip().rsplit(":", 1)[1])
        results = [None] * count
        threads = [threading.Thread(target=client, args=(port, results, i)) for i in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        summary = server.stdout.read()
        code = server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
    bad = [f"client {i}: {r}" for i, r in enumerate(results) if r != "ok"]
    print(summary.strip())
    if bad or code != 0:
        print("\n".join(bad[:10]) or f"exit code {code}")
        return 1
    print(f"{count} clients: whole response and clean EOF each")
    return 0


if __name__ == "__main__":
    sys.exit(main())

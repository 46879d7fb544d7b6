#!/usr/bin/env python3
"""A program that starts another (subprocess: CPython forks with vfork where it can, and the
child closes every descriptor above 2 with close_range before its exec) while it holds a connected
socket with unread input, registered in its own epoll set, then answers and closes that socket.

Under `ringlinger wrap` the vfork child's close_range shares the parent's memory but not its
descriptors: it must neither hand the parent's socket off nor wipe what the parent's library knows
of it (its epoll registration). Prints one line: `result EVENTS BYTES VFORK`, the epoll events seen
after the close (none expected), the bytes the client read to its EOF, and whether subprocess used
vfork."""
import select
import socket
import subprocess
import sys
import time

listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen()
client = socket.create_connection(listener.getsockname())
server, _ = listener.accept()
poller = select.epoll()
poller.register(server.fileno(), select.EPOLLIN)
client.sendall(b"u" * 100_000)  # the request the server never reads
deadline = time.monotonic() + 30
while not poller.poll(0.1) and time.monotonic() < deadline:
    pass
subprocess.run(["true"], check=True, close_fds=True)
server.sendall(b"answer")
server.close()
events = poller.poll(0.3)  # a socket still in the set would report its unread input
client.shutdown(socket.SHUT_WR)
received = b""
client.settimeout(30)
while chunk := client.recv(65536):
    received += chunk
print("result", len(events), received.decode(), getattr(subprocess, "_USE_VFORK", False), flush=True)
sys.exit(0)

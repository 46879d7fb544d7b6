#!/usr/bin/env python3
"""A plain http.server that refuses large uploads early, as many real servers do.

ThreadingHTTPServer, unmodified but for its listen backlog (see Server): a POST whose
Content-Length is over --limit is answered with a 413 page of --page-bytes right after the
request head, and the connection is closed without reading the body (socketserver's
shutdown(SHUT_WR), then close()). Without a graceful close the kernel answers that close() with a
reset, and the client loses the page. Prints "port P" on its first line; exits after --requests
requests.

    early_413_server.py [--page-bytes N] [--limit N] [--requests N]
"""
import argparse
import http.server
import sys
import threading


def page(size):
    """The 413 page: byte i = ALPHABET[(i + i // 4093) % 59], so a shifted or lost chunk shows."""
    alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVW"
    return bytes(alphabet[(i + i // 4093) % len(alphabet)] for i in range(size))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--page-bytes", type=int, default=1 << 20)
    parser.add_argument("--limit", type=int, default=1 << 20)
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    body = page(args.page_bytes)
    served = [0]
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            try:
                self.answer()
            finally:
                # Counted also when the client reset the connection before the page was written
                # (the control run's loss), or the server would wait for a request never coming.
                with lock:
                    served[0] += 1
                    if served[0] == args.requests:
                        # shutdown() waits for serve_forever, which runs on the main thread.
                        threading.Thread(target=server.shutdown).start()

        def answer(self):
            if int(self.headers.get("Content-Length", "0")) > args.limit:
                self.send_response(413)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True
            else:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        def log_message(self, *_):
            pass

    class Server(http.server.ThreadingHTTPServer):
        # socketserver's listen backlog is 5. With 30 clients connecting at once to a server made
        # slow (ASan, a busy machine), the kernel then answers with SYN cookies, whose MSS is 1460
        # instead of loopback's 65483: the send buffer sized from it cannot take the page, and
        # server and client both block writing (the client reads only once its body is sent);
        # or a handshake's request is dropped and the client is reset. Either way a client fails
        # with or without wrap, and the server never counts its request (the wrap suite under
        # ASan and stress-ng: 4 runs in 12 failed so; 30 in 30 passed with 128).
        request_queue_size = 128

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = False  # server_close() joins the handlers: each close happens
    print(f"port {server.server_address[1]}", flush=True)
    server.serve_forever()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

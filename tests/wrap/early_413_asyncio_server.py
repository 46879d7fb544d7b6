#!/usr/bin/env python3
"""The early 413 of early_413_server.py from an asyncio server (asyncio.start_server, unmodified).

Reads the request head, answers a POST whose Content-Length is over --limit with a 413 page of
--page-bytes, then writer.close() without reading the body: the transport's close(), which
unregisters the socket from the event loop's epoll and close()s it. Prints "port P" first; exits
after --requests requests.

    early_413_asyncio_server.py [--page-bytes N] [--limit N] [--requests N]
"""
import argparse
import asyncio
import sys

from early_413_server import page


async def serve(args):
    body = page(args.page_bytes)
    served = 0
    done = asyncio.Event()

    async def handle(reader, writer):
        nonlocal served
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length > args.limit:
                writer.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/octet-stream\r\n"
                             b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
            else:
                await reader.readexactly(length)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            served += 1
            if served == args.requests:
                done.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(f"port {server.sockets[0].getsockname()[1]}", flush=True)
    await done.wait()
    server.close()
    await server.wait_closed()
    await asyncio.sleep(0.1)  # the last transports' close() runs from the loop's next steps


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--page-bytes", type=int, default=1 << 20)
    parser.add_argument("--limit", type=int, default=1 << 20)
    parser.add_argument("--requests", type=int, default=20)
    asyncio.run(serve(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

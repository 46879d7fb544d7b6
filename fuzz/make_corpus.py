#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/<target>/ (committed; run again only to change them).

engine: one input per variant (the first byte picks it), the rest random decisions: libFuzzer
        grows the corpus from there; a fixed seed keeps the files the same on every run.
head:   the input format of head_fuzzer.cpp (split points, padding, text): valid and malformed
        heads, heads split inside the terminator, and heads padded to kMaxHeadBytes exactly and
        one byte past it, which random mutation alone would take long to reach.
"""
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
K_MAX_HEAD_BYTES = 64 * 1024  # bench/harness/http.hpp


def write(target, name, data):
    directory = os.path.join(HERE, "corpus", target)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)


def engine():
    rng = random.Random(20240601)
    for variant in range(8):
        for size in (300, 2000):
            write("engine", f"variant{variant}-{size}",
                  bytes([variant]) + bytes(rng.randrange(256) for _ in range(size)))


def head_input(text, splits=(), pad=None):
    """pad: (byte, length, position) or None."""
    header = len(splits) | (0x10 if pad else 0)
    data = bytes([header])
    for point in splits:
        data += point.to_bytes(3, "big")
    if pad:
        byte, length, position = pad
        data += bytes([byte]) + length.to_bytes(3, "big") + position.to_bytes(2, "big")
    return data + text


def head():
    get = b"GET / HTTP/1.1\r\nHost: ringlinger\r\n\r\n"
    post = b"POST /upload HTTP/1.1\r\nHost: ringlinger\r\nContent-Length: 5\r\n\r\nbbbbb"
    write("head", "get", head_input(get))
    write("head", "get-http10", head_input(b"GET /index.html HTTP/1.0\r\n\r\n"))
    write("head", "post-with-body", head_input(post, splits=(4, 30, 60)))
    end = get.index(b"\r\n\r\n")
    write("head", "split-in-terminator", head_input(get, splits=(end + 1, end + 2, end + 3)))
    write("head", "byte-by-byte", head_input(get[:15], splits=tuple(range(1, 15))))
    write("head", "malformed-no-target", head_input(b"GET  HTTP/1.1\r\n\r\n"))
    write("head", "malformed-lf-only", head_input(b"GET / HTTP/1.1\n\n\r\n\r\n"))
    write("head", "malformed-method", head_input(b"G(T / HTTP/1.1\r\n\r\n"))
    write("head", "incomplete", head_input(b"GET / HTTP/1.1\r\nHost: x\r\n"))
    # A header line padded so that the terminator ends exactly at the limit, then one past it.
    prefix = b"GET / HTTP/1.1\r\nX-Pad: "
    text = prefix + b"\r\n\r\n"
    fill = K_MAX_HEAD_BYTES - len(text)
    write("head", "complete-at-limit", head_input(text, splits=(100,), pad=(ord("a"), fill, len(prefix))))
    write("head", "too-large-by-one", head_input(text, pad=(ord("a"), fill + 1, len(prefix))))
    # No terminator: exactly the limit is still incomplete, one more byte is too large.
    line = b"GET / HTTP/1.1\r\n"
    fill = K_MAX_HEAD_BYTES - len(line)
    write("head", "incomplete-at-limit", head_input(line, pad=(ord("h"), fill, len(line))))
    write("head", "too-large-no-terminator",
          head_input(line, splits=(K_MAX_HEAD_BYTES - 2,), pad=(ord("h"), fill + 1, len(line))))


if __name__ == "__main__":
    engine()
    head()

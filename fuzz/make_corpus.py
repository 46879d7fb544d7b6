#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/<target>/ (committed; run again only to change them).

engine: one input per variant (the first byte picks it), the rest random decisions: libFuzzer
        grows the corpus from there; a fixed seed keeps the files the same on every run.
"""
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))


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


if __name__ == "__main__":
    engine()

"""Keyed pseudo-random functions of integers: the whole sample order is built from these, so it is a
pure function of (seed, indices) with no state beyond counters.

``Permutation(n, key)`` is a bijection of range(n) (a 4-round Feistel network on the next even power
of two, cycle-walking back into range): O(1) memory for any n, so a 400M-sample source needs no
shuffled index array.
"""
from __future__ import annotations

import hashlib

MASK = (1 << 64) - 1


def mix64(x: int) -> int:
    """splitmix64's finaliser: a fast 64-bit avalanche."""
    x = (x + 0x9E3779B97F4A7C15) & MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def hash_ints(*values: int) -> int:
    h = 0x2545F4914F6CDD1D
    for v in values:
        h = mix64(h ^ (v & MASK))
    return h


def uniform(*values: int) -> float:
    """A float in [0, 1) from the integers (53 bits)."""
    return (hash_ints(*values) >> 11) / float(1 << 53)


def name_key(name: str) -> int:
    """A stable 64-bit integer for a string (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")


class Permutation:
    """A keyed bijection of range(n)."""

    def __init__(self, n: int, key: int):
        if n <= 0:
            raise ValueError("Permutation needs n >= 1")
        self.n = n
        self.key = key
        self.half = max(1, ((n - 1).bit_length() + 1) // 2)
        self.mask = (1 << self.half) - 1

    def _feistel(self, x: int) -> int:
        left, right = x >> self.half, x & self.mask
        for rnd in range(4):
            left, right = right, left ^ (hash_ints(self.key, rnd, right) & self.mask)
        return (left << self.half) | right

    def __call__(self, i: int) -> int:
        if not 0 <= i < self.n:
            raise IndexError(i)
        x = self._feistel(i)
        while x >= self.n:  # cycle-walk: the domain is < 4n, so a few steps on average
            x = self._feistel(x)
        return x

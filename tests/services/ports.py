"""Free TCP ports on loopback, so that parallel tests and CI runs never collide on a fixed port.

A port found free can be taken by someone else before our daemon binds it; callers keep that window
short (pick, write the config, start) and the daemons' readiness checks surface the rare collision.
"""
from __future__ import annotations

import contextlib
import os
import random
import socket

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """One TCP port that is free on `host` right now (the kernel picks it: bind to port 0)."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """`count` distinct free TCP ports. All sockets stay open until every port is chosen, so the
    kernel cannot hand out the same port twice."""
    if count < 1:
        raise ValueError(f"free_ports: count must be >= 1, got {count}")
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(sock.getsockname()[1])
    return ports


def is_port_free(port: int, host: str = LOOPBACK) -> bool:
    """True when nothing listens on `port` and it can be bound now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port_block(size: int, host: str = LOOPBACK, low: int = 20000, high: int = 30000,
                    tries: int = 200) -> int:
    """First port of `size` consecutive ports that are all free now, for daemons that take a port
    range (Ray's worker ports). Searches a random start in [low, high) to spread parallel runs, and
    stays below Linux's ephemeral range (32768+) so the kernel's own picks do not land in it."""
    rng = random.Random()
    for _ in range(tries):
        start = rng.randrange(low, high - size)
        if all(is_port_free(p, host) for p in range(start, start + size)):
            return start
    raise RuntimeError(f"no block of {size} free ports in [{low}, {high}) after {tries} tries")


def listening_sockets(pids: set[int] | list[int]) -> list[tuple[str, int, int]]:
    """(address, port, pid) of every TCP socket in LISTEN state held open by one of `pids`. Used to
    prove that a service listens on loopback only. Reads /proc (no `ss` needed): a process's
    fd links name socket inodes, /proc/net/tcp{,6} map inodes to addresses."""
    owner: dict[str, int] = {}
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    owner[target[8:-1]] = pid
        except OSError:
            continue  # exited meanwhile
    found = []
    for table, decode in (("/proc/net/tcp", _ipv4), ("/proc/net/tcp6", _ipv6)):
        with open(table) as f:
            next(f)  # header
            for line in f:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and inode in owner:  # 0A: TCP_LISTEN
                    addr, port = local.split(":")
                    found.append((decode(addr), int(port, 16), owner[inode]))
    return found


def _ipv4(hex_addr: str) -> str:
    # /proc/net/tcp prints the address as one little-endian 32-bit word.
    return socket.inet_ntop(socket.AF_INET, bytes.fromhex(hex_addr)[::-1])


def _ipv6(hex_addr: str) -> str:
    # Four little-endian 32-bit words.
    raw = bytes.fromhex(hex_addr)
    return socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))

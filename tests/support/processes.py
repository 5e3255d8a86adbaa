"""What a process of the cluster holds, read from /proc (Linux): its TCP client ports.

A test that sees a connection at a server (its client port) can tell which worker
process opened it, without asking the worker.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import trio


def socket_inodes(pid: int) -> set[int]:
    inodes: set[int] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        entries = list(fd_dir.iterdir())
    except (FileNotFoundError, PermissionError):
        return inodes
    for fd in entries:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def tcp_local_ports(pid: int) -> set[int]:
    """Local ports of the TCP sockets that ``pid`` has open now."""
    inodes = socket_inodes(pid)
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[9]) in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


async def record_port_owners(
    pids: Callable[[], list[int]], owners: dict[int, int], interval: float = 0.1
) -> None:
    """Until cancelled, note which of ``pids()`` owns each local TCP port (port -> pid).

    Sampled while the test runs, so a connection a worker closes later is still known.
    """
    while True:
        for pid in pids():
            for port in tcp_local_ports(pid):
                owners[port] = pid
        await trio.sleep(interval)

"""Is a loopback port free? The stack never shares a port with a process it did not start."""

from __future__ import annotations

import socket

from local_stack.plan import LOOPBACK


def port_taken(port: int) -> bool:
    """True when something listens on `port` (on 127.0.0.1 or on all addresses).

    SO_REUSEADDR makes sockets lingering in TIME_WAIT from an earlier run not count as taken.
    """
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return True
    with socket.socket() as probe:
        probe.settimeout(0.5)
        # A server bound to another loopback alias or IPv6 only would still answer here.
        return probe.connect_ex((LOOPBACK, port)) == 0


def free_port() -> int:
    """A port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])

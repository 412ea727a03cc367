"""Loopback TCP ports: pick a free one, tell whether one is free or accepting connections."""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A port nobody listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    """Whether a server could bind ``127.0.0.1:port`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def free_ports(
    count: int, preferred: tuple[int | None, ...] = (), avoid: frozenset[int] = frozenset()
) -> tuple[int, ...]:
    """``count`` distinct free ports, keeping each preferred one that is still free.

    ``avoid`` holds ports already promised to a server that has not bound them yet.
    """
    chosen: list[int] = []
    for index in range(count):
        taken = avoid | set(chosen)
        wanted = preferred[index] if index < len(preferred) else None
        if wanted and wanted not in taken and port_is_free(wanted):
            chosen.append(wanted)
            continue
        port = free_port()
        while port in taken:
            port = free_port()
        chosen.append(port)
    return tuple(chosen)


def accepts_connections(port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``127.0.0.1:port``."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout):
            return True
    except OSError:
        return False

"""What every simulator shares: ``start``/``stop``, usable as a context manager, and the listening
TCP socket of those that serve on one."""

from __future__ import annotations

import socket
from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self


class CannotListen(OSError):
    """A simulator cannot serve where it was asked to (a port in use, an address not ours); the
    message names the address and why. ``gated-sim`` prints it as one line and exits 1."""


class Simulator(ABC):
    """A device simulator: ``start`` serves (a second call does nothing), ``stop`` closes everything
    it opened (safe to call twice); ``with simulator:`` does both."""

    @abstractmethod
    def start(self) -> object:
        """Serve; returns once a client can connect."""

    @abstractmethod
    def stop(self) -> None:
        """Close every port and connection."""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def listening_socket(
    host: str, port: int, *, backlog: int = 8, timeout: float | None = None
) -> socket.socket:
    """A TCP socket listening on ``host``:``port`` (0: a free port), with SO_REUSEADDR so a
    simulator stopped and started again gets its port back; ``OSError`` when it cannot listen
    (the socket is closed again)."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        server.bind((host, port))
        server.listen(backlog)
    except OSError:
        server.close()
        raise
    server.settimeout(timeout)
    return server

"""The serial line a simulated reader writes its frames to, on a pty, a tty path or TCP.

Three ways to reach it, like the real thing:

- its own pty (``os.openpty``): a driver opens ``device_path``;
- an existing path, e.g. one end of a ``socat`` pty pair: the driver opens the other end;
- a TCP server on 127.0.0.1, like a serial device server: every connected client gets every byte.

A background thread accepts TCP clients, notices them leaving and sends the reader's heartbeat.
A reader's simulator subclasses ``SerialLineSimulator`` and adds what its protocol says.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import select
import socket
import threading
import time
import tty
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Self

from gated.cli.argtypes import output_file, port
from simulators.lifecycle import CannotListen, Simulator, listening_socket

log = logging.getLogger(__name__)

_WRITE_PATIENCE = 0.5
_SEND_TIMEOUT = 1.0


class SerialLineSimulator(Simulator):
    """One reader on one line. With neither ``path`` nor ``tcp_port`` it makes its own pty.

    ``heartbeat_interval=None`` turns heartbeats off (a reader that has gone quiet)."""

    name: ClassVar[str]  # the reader's name in gated-sim, logs and the thread's name
    heartbeat: ClassVar[bytes]  # the frame sent every ``heartbeat_interval`` s

    def __init__(
        self,
        *,
        path: str | None = None,
        tcp_port: int | None = None,
        heartbeat_interval: float | None = 1.0,
    ) -> None:
        if path is not None and tcp_port is not None:
            raise ValueError("give path or tcp_port, not both")
        if heartbeat_interval is not None and heartbeat_interval <= 0:
            raise ValueError(f"heartbeat_interval {heartbeat_interval} must be positive")
        self._path = path
        self._want_tcp_port = tcp_port
        self.heartbeat_interval = heartbeat_interval
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fd: int | None = None  # where frames are written: pty master or the opened path
        self._pty_slave: int | None = None
        self._device_path: str | None = None
        self._server: socket.socket | None = None
        self._clients: list[socket.socket] = []
        self._write_failed = False
        self.frames_sent = 0

    # Lifecycle

    def start(self) -> Self:
        with self._lock:
            if self._thread is not None:
                return self
            if self._want_tcp_port is not None:
                try:
                    self._server = listening_socket("127.0.0.1", self._want_tcp_port, backlog=4)
                except OSError as error:
                    raise CannotListen(
                        f"cannot listen on 127.0.0.1:{self._want_tcp_port}: {error.strerror or error}"
                    ) from error
            elif self._path is not None:
                fd = os.open(self._path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
                if os.isatty(fd):
                    tty.setraw(fd)
                self._fd = fd
                self._device_path = self._path
            else:
                master, slave = os.openpty()
                tty.setraw(slave)
                os.set_blocking(master, False)
                self._fd, self._pty_slave = master, slave
                self._device_path = os.ttyname(slave)
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"{self.name}-sim", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sending, close every port and connection; safe to call twice."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)
        with self._lock:
            self._thread = None
            for client in self._clients:
                client.close()
            self._clients.clear()
            if self._server is not None:
                self._server.close()
                self._server = None
            for fd in (self._fd, self._pty_slave):
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self._fd = self._pty_slave = None

    # Where it listens

    @property
    def device_path(self) -> str:
        """The tty path a driver opens (the pty's slave, or the path given)."""
        if self._device_path is None:
            raise RuntimeError("this simulator has no device path (TCP mode, or not started)")
        return self._device_path

    @property
    def url(self) -> str:
        """What a driver opens (``serial.serial_for_url``): the tty path, or ``socket://`` in TCP mode."""
        if self._server is not None:
            return f"socket://127.0.0.1:{self.tcp_port}"
        return self.device_path

    @property
    def tcp_port(self) -> int:
        server = self._server
        if server is None:
            raise RuntimeError("this simulator is not listening on TCP")
        port: int = server.getsockname()[1]
        return port

    @property
    def client_count(self) -> int:
        with self._lock:
            return len(self._clients)

    @property
    def running(self) -> bool:
        return self._thread is not None and not self._stop.is_set()

    # What it says

    def send_raw(self, data: bytes) -> None:
        """Any bytes, exactly as given (fault injection)."""
        self._send(bytes(data))

    def _send(self, data: bytes) -> None:
        with self._lock:
            if self._thread is None or self._stop.is_set():
                raise RuntimeError("the simulator is not running")
            if self._fd is not None:
                self._write_fd(self._fd, data)
            for client in list(self._clients):
                try:
                    client.sendall(data)
                except OSError:
                    self._drop_client(client)
            self.frames_sent += 1

    def _write_fd(self, fd: int, data: bytes) -> None:
        """Write without blocking for long: a port nobody reads drops what does not fit."""
        deadline = time.monotonic() + _WRITE_PATIENCE
        view = memoryview(data)
        while view:
            try:
                written = os.write(fd, view)
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([], [fd], [], left)[1]:
                    log.debug("%s sim: port full, %d bytes dropped", self.name, len(view))
                    return
                continue
            except OSError as error:
                if not self._write_failed:
                    log.warning("%s sim: write failed: %s", self.name, error)
                    self._write_failed = True
                return
            self._write_failed = False
            view = view[written:]

    def _drop_client(self, client: socket.socket) -> None:
        if client in self._clients:
            self._clients.remove(client)
        client.close()

    # Background thread: accept clients, notice them leaving, send heartbeats

    def _run(self) -> None:
        interval = self.heartbeat_interval
        next_beat = time.monotonic() + interval if interval is not None else None
        while not self._stop.is_set():
            wait = 0.2 if next_beat is None else max(0.0, min(0.2, next_beat - time.monotonic()))
            with self._lock:
                watched = [sock for sock in (self._server, *self._clients) if sock is not None]
            if watched:
                try:
                    readable = select.select(watched, [], [], wait)[0]
                except (OSError, ValueError):
                    readable = []
                    self._stop.wait(wait)
                for sock in readable:
                    self._service(sock)
            else:
                self._stop.wait(wait)
            if next_beat is not None and interval is not None and time.monotonic() >= next_beat:
                next_beat = time.monotonic() + interval
                with contextlib.suppress(RuntimeError):
                    self._send(self.heartbeat)

    def _service(self, sock: socket.socket) -> None:
        with self._lock:
            if sock is self._server:
                try:
                    client, _ = sock.accept()
                except OSError:
                    return
                client.settimeout(_SEND_TIMEOUT)
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._clients.append(client)
                return
            if sock not in self._clients:
                return
            try:
                gone = not sock.recv(4096)
            except TimeoutError:
                gone = False
            except OSError as error:
                gone = error.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR)
            if gone:
                self._drop_client(sock)


# The gated-sim command


def add_line_options(parser: argparse.ArgumentParser) -> None:
    """``--pty-link`` or ``--tcp-port``: where ``serve_cli`` serves the line."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--pty-link", metavar="PATH", type=output_file, help="make a symlink PATH to the simulator's pty"
    )
    where.add_argument("--tcp-port", metavar="N", type=port, help="listen on 127.0.0.1:N (0 picks a port)")


def serve_cli(
    simulator: SerialLineSimulator, args: argparse.Namespace, present: Callable[[int], None]
) -> int:
    """Call ``present(turn)`` every ``--interval`` s until ``--duration`` has passed or Ctrl-C.

    The simulator serves the line ``add_line_options`` asked for: its own pty (with a symlink to it
    at ``--pty-link``) or TCP."""
    name = simulator.name
    if args.interval <= 0:
        print(f"{name}: --interval must be positive")
        return 2
    link: Path | None = args.pty_link
    if link is not None and os.path.lexists(link) and not os.path.islink(link):
        print(f"{name}: {link} exists and is not a symlink; not replacing it")
        return 2
    deadline = None if args.duration is None else time.monotonic() + args.duration
    with simulator:
        try:
            if args.tcp_port is not None:
                print(f"{name}: listening on tcp 127.0.0.1:{simulator.tcp_port}", flush=True)
            else:
                if link is not None:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(link)
                    os.symlink(simulator.device_path, link)
                shown = simulator.device_path + (f" (link {link})" if link else "")
                print(f"{name}: pty {shown}", flush=True)
            turn = 0
            while deadline is None or time.monotonic() < deadline:
                present(turn)
                turn += 1
                left = args.interval if deadline is None else min(args.interval, deadline - time.monotonic())
                time.sleep(max(0.0, left))
        except KeyboardInterrupt:
            pass
        finally:
            if link is not None and os.path.islink(link):
                os.unlink(link)
    return 0

"""A driver credential (TWIC-style) card reader with a serial output, on a pty, a tty path or TCP.

It speaks the reader's side of the protocol, written from its description::

    STX <payload> ETX <LRC>

with STX 0x02, ETX 0x03 and LRC one byte, the XOR of every payload byte. The payload is ASCII:

    CARD,<card id>,<expiry YYYYMMDD>,<OK|FAIL>   a card presented (id: 8-32 hex digits, printed
                                                 in upper case; OK when the card passed the
                                                 reader's authentication challenge)
    HB                                           heartbeat, every ``heartbeat_interval`` s

``present_card`` sends a card (optionally a few times in a row, as a reader does while a card is
left on it); ``send_raw`` sends any bytes, for fault injection.

Three ways to reach it, like the real thing:

- its own pty (``os.openpty``): a driver opens ``device_path``;
- an existing path, e.g. one end of a ``socat`` pty pair: the driver opens the other end;
- a TCP server on 127.0.0.1, like a serial device server: every connected client gets every byte.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import re
import select
import socket
import threading
import time
import tty
from datetime import date, timedelta
from types import TracebackType

log = logging.getLogger(__name__)

STX = b"\x02"
ETX = b"\x03"
DEFAULT_CARDS = ("4F2A19C0D3E7B85A1122334455667788", "D1A2B3C4E5F60718", "0123456789ABCDEF0123")
_CARD_ID = re.compile(r"[0-9A-Fa-f]{8,32}")
_WRITE_PATIENCE = 0.5
_SEND_TIMEOUT = 1.0


def lrc(payload: bytes) -> int:
    """XOR of every payload byte."""
    value = 0
    for byte in payload:
        value ^= byte
    return value


def frame(payload: str) -> bytes:
    """One complete frame: STX payload ETX LRC."""
    raw = payload.encode("ascii")
    return STX + raw + ETX + bytes([lrc(raw)])


def check_card_id(card_id: str) -> str:
    """The card id in upper case; ``ValueError`` unless it is 8-32 hex digits."""
    if not isinstance(card_id, str) or not _CARD_ID.fullmatch(card_id):
        raise ValueError(f"card id {card_id!r} must be 8-32 hex digits")
    return card_id.upper()


def card_frame(card_id: str, expires: date, authenticated: bool = True) -> bytes:
    """The frame a reader sends for one card."""
    if not isinstance(expires, date):
        raise ValueError(f"expiry {expires!r} must be a date")
    outcome = "OK" if authenticated else "FAIL"
    expiry = f"{expires.year:04d}{expires.month:02d}{expires.day:02d}"  # strftime does not pad years < 1000
    return frame(f"CARD,{check_card_id(card_id)},{expiry},{outcome}")


def heartbeat_frame() -> bytes:
    return frame("HB")


class SerialCredentialSimulator:
    """One card reader. With neither ``path`` nor ``tcp_port`` it makes its own pty.

    ``heartbeat_interval=None`` turns heartbeats off (a reader that has gone quiet)."""

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

    def start(self) -> SerialCredentialSimulator:
        with self._lock:
            if self._thread is not None:
                return self
            if self._want_tcp_port is not None:
                server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                server.bind(("127.0.0.1", self._want_tcp_port))
                server.listen(4)
                self._server = server
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
            self._thread = threading.Thread(target=self._run, name="credential-serial-sim", daemon=True)
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

    def __enter__(self) -> SerialCredentialSimulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # Where it listens

    @property
    def device_path(self) -> str:
        """The tty path a driver opens (the pty's slave, or the path given)."""
        if self._device_path is None:
            raise RuntimeError("this simulator has no device path (TCP mode, or not started)")
        return self._device_path

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

    def present_card(
        self, card_id: str, expires: date, authenticated: bool = True, *, repeats: int = 1
    ) -> None:
        """A card held to the reader: its frame ``repeats`` times back to back."""
        if repeats < 1:
            raise ValueError(f"repeats {repeats} must be at least 1")
        frame = card_frame(card_id, expires, authenticated)
        for _ in range(repeats):
            self._send(frame)

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
                    log.debug("credential-serial sim: port full, %d bytes dropped", len(view))
                    return
                continue
            except OSError as error:
                if not self._write_failed:
                    log.warning("credential-serial sim: write failed: %s", error)
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
                    self._send(heartbeat_frame())

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


def _card_list(text: str) -> list[tuple[str, date, bool]]:
    """``ID[:YYYY-MM-DD[:fail]],...``; a card without a date expires a year from today."""
    cards: list[tuple[str, date, bool]] = []
    for item in text.split(","):
        parts = item.strip().split(":")
        if not parts[0]:
            continue
        try:
            if len(parts) > 3 or (len(parts) == 3 and parts[2].lower() not in ("ok", "fail")):
                raise ValueError(f"{item.strip()!r}: expected ID[:YYYY-MM-DD[:ok|fail]]")
            card_id = check_card_id(parts[0])
            expires = date.fromisoformat(parts[1]) if len(parts) > 1 else date.today() + timedelta(days=365)
            authenticated = len(parts) < 3 or parts[2].lower() == "ok"
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from error
        cards.append((card_id, expires, authenticated))
    return cards


def register_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``gated-sim credential-serial``."""
    parser = subparsers.add_parser(
        "credential-serial",
        help="a driver credential (TWIC-style) card reader with serial output, on a pty or TCP",
        description="Present driver cards in turn, with heartbeats, on a pty or a TCP port.",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--pty-link", metavar="PATH", help="make a symlink PATH to the simulator's pty")
    where.add_argument("--tcp-port", metavar="N", type=int, help="listen on 127.0.0.1:N (0 picks a port)")
    parser.add_argument(
        "--cards",
        metavar="ID[:YYYY-MM-DD[:ok|fail]],...",
        type=_card_list,
        default=_card_list(",".join(DEFAULT_CARDS)),
        help="cards to present in turn (hex id; expiry defaults to a year from today)",
    )
    parser.add_argument("--interval", metavar="SECONDS", type=float, default=10.0, help="between cards")
    parser.add_argument("--duration", metavar="SECONDS", type=float, default=None, help="then stop")
    parser.set_defaults(func=run_cli)


def run_cli(args: argparse.Namespace) -> int:
    """Run until ``--duration`` has passed or Ctrl-C."""
    cards: list[tuple[str, date, bool]] = args.cards
    if not cards:
        print("credential-serial: --cards is empty")
        return 2
    if args.interval <= 0:
        print("credential-serial: --interval must be positive")
        return 2
    link: str | None = args.pty_link
    if link is not None and os.path.lexists(link) and not os.path.islink(link):
        print(f"credential-serial: {link} exists and is not a symlink; not replacing it")
        return 2
    deadline = None if args.duration is None else time.monotonic() + args.duration
    simulator = SerialCredentialSimulator(tcp_port=args.tcp_port)
    with simulator:
        try:
            if args.tcp_port is not None:
                print(f"credential-serial: listening on tcp 127.0.0.1:{simulator.tcp_port}", flush=True)
            else:
                if link is not None:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(link)
                    os.symlink(simulator.device_path, link)
                shown = simulator.device_path + (f" (link {link})" if link else "")
                print(f"credential-serial: pty {shown}", flush=True)
            turn = 0
            while deadline is None or time.monotonic() < deadline:
                card_id, expires, authenticated = cards[turn % len(cards)]
                simulator.present_card(card_id, expires, authenticated)
                turn += 1
                left = args.interval if deadline is None else min(args.interval, deadline - time.monotonic())
                time.sleep(max(0.0, left))
        except KeyboardInterrupt:
            pass
        finally:
            if link is not None and os.path.islink(link):
                os.unlink(link)
    return 0

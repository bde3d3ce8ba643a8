"""Simulator of a "smart" gate OCR camera that pushes what it reads over TCP.

It speaks the camera's side of the protocol: a TCP server whose clients only listen, and to which it
sends UTF-8 JSON objects, one per line (``\\n``): a ``heartbeat`` every ``heartbeat_interval``
seconds, a ``read`` per container number read (``passage``, ``slot``, ``view``, ``code``,
``confidence`` 0..1, ``size_type`` or null) and a ``passage_end`` per truck (``containers``, 0-4). Each
message carries ``event``, ``camera`` and ``ts`` (RFC 3339, UTC). Every message goes to every client
connected at the time; a new client gets a heartbeat at once (unless heartbeats are paused).

Tests script it (``read``, ``passage_end``, ``send_raw`` for malformed frames, ``pause_heartbeats``
for a camera that goes silent); integrators run it with ``gated-sim ocr-camera``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import socket
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

from gated.cli.argtypes import port
from gated.clock import rfc3339
from simulators.lifecycle import Simulator, listening_socket

HOST = "127.0.0.1"
VIEWS = ("rear", "side", "top", "front")
DEFAULT_CODES = ("CSQU3054383", "BICU1234565", "MSKU4135329")
_SEND_TIMEOUT = 2.0
_ACCEPT_POLL = 0.1


class SmartCameraSimulator(Simulator):
    """A threaded TCP server speaking the smart OCR camera protocol on 127.0.0.1."""

    def __init__(self, camera: str = "cam-1", port: int = 0, *, heartbeat_interval: float = 1.0) -> None:
        if not camera:
            raise ValueError("camera id must not be empty")
        if heartbeat_interval <= 0:
            raise ValueError(f"heartbeat_interval {heartbeat_interval} must be positive")
        self.camera = camera
        self.port = port
        self.heartbeat_interval = heartbeat_interval
        self._lock = threading.Lock()
        self._clients: list[socket.socket] = []
        self._server: socket.socket | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._heartbeats_paused = False
        self._passage: str | None = None
        self._passage_numbers = itertools.count(1)

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def clients(self) -> int:
        """How many clients are connected (a client that left counts until the next send fails)."""
        with self._lock:
            return len(self._clients)

    def start(self) -> None:
        """Listen and serve; a second call does nothing. After ``stop()`` it listens on the same port."""
        if self._server is not None:
            return
        server = listening_socket(HOST, self.port, timeout=_ACCEPT_POLL)
        self.port = server.getsockname()[1]
        self._server = server
        self._stop.clear()
        self._threads = [
            threading.Thread(
                target=self._accept_loop, args=(server,), name=f"ocr-camera-accept-{self.port}", daemon=True
            ),
            threading.Thread(target=self._heartbeat_loop, name=f"ocr-camera-beat-{self.port}", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Close the server and every client connection; a second call does nothing."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5.0)
        self._threads = []
        server.close()
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            _close(client)

    def pause_heartbeats(self, paused: bool = True) -> None:
        """Stop (or resume) heartbeats, as a camera that hangs while its TCP port stays open: no
        heartbeat is sent after this returns, not even the greeting to a new client."""
        with self._lock:
            self._heartbeats_paused = paused

    def read(
        self,
        code: str,
        confidence: float = 0.97,
        *,
        slot: int = 1,
        view: str = "rear",
        size_type: str | None = None,
        passage: str | None = None,
    ) -> dict[str, Any]:
        """Send one read of ``code`` (as read, unchecked). Returns the message sent."""
        if not 0.0 <= confidence <= 1.0:
            raise ValueError(f"confidence {confidence} is outside 0..1 (use send_raw for bad frames)")
        if view not in VIEWS:
            raise ValueError(f"view {view!r} is not one of {VIEWS}")
        if not 1 <= slot <= 4:
            raise ValueError(f"slot {slot} is outside 1..4")
        message = self._message(
            "read",
            passage=self._current_passage(passage),
            slot=slot,
            view=view,
            code=code,
            confidence=confidence,
            size_type=size_type,
        )
        self._broadcast(message)
        return message

    def passage_end(self, containers: int, passage: str | None = None) -> dict[str, Any]:
        """End the current passage (or ``passage``); the next read starts a new one."""
        if not 0 <= containers <= 4:
            raise ValueError(f"containers {containers} is outside 0..4 (use send_raw for bad frames)")
        message = self._message("passage_end", passage=self._current_passage(passage), containers=containers)
        with self._lock:
            self._passage = None
        self._broadcast(message)
        return message

    def send_raw(self, data: bytes) -> None:
        """Send ``data`` exactly as given, in one write, to every client."""
        self._send(data)

    def _current_passage(self, passage: str | None) -> str:
        with self._lock:
            if passage is not None:
                self._passage = passage
            elif self._passage is None:
                self._passage = f"{self.camera}-{next(self._passage_numbers):06d}"
            return self._passage

    def _message(self, event: str, **fields: Any) -> dict[str, Any]:
        return {"event": event, "camera": self.camera, "ts": rfc3339(datetime.now(UTC)), **fields}

    @staticmethod
    def _encode(message: dict[str, Any]) -> bytes:
        text = json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return text.encode("utf-8") + b"\n"

    def _broadcast(self, message: dict[str, Any]) -> None:
        self._send(self._encode(message))

    def _send(self, data: bytes) -> None:
        with self._lock:
            self._send_locked(data)

    def _send_locked(self, data: bytes) -> None:
        alive: list[socket.socket] = []
        for client in self._clients:
            try:
                client.sendall(data)
            except OSError:
                _close(client)
            else:
                alive.append(client)
        self._clients = alive

    def _accept_loop(self, server: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                client, _address = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(_SEND_TIMEOUT)
            with self._lock:
                if not self._heartbeats_paused:
                    try:
                        client.sendall(self._encode(self._message("heartbeat")))
                    except OSError:
                        _close(client)
                        continue
                self._clients.append(client)

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat_interval):
            with self._lock:
                if not self._heartbeats_paused:
                    self._send_locked(self._encode(self._message("heartbeat")))


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def register_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``ocr-camera`` subcommand to ``gated-sim``."""
    parser = subparsers.add_parser(
        "ocr-camera",
        help="a smart OCR camera pushing container numbers over TCP",
        description="Serve the smart OCR camera protocol on 127.0.0.1: one passage per code, in turn.",
    )
    parser.add_argument("--port", type=port, default=0, help="TCP port (default: any free port)")
    parser.add_argument(
        "--codes",
        type=_codes,
        default=list(DEFAULT_CODES),
        metavar="CODE[,CODE...]",
        help="container numbers to read, one per passage, in a loop",
    )
    parser.add_argument(
        "--interval", type=_positive, default=5.0, metavar="SECONDS", help="time between passages"
    )
    parser.add_argument(
        "--duration",
        type=_positive,
        default=None,
        metavar="SECONDS",
        help="stop after this long (default: never)",
    )
    parser.add_argument("--camera", default="cam-1", help="camera id in the messages")
    parser.set_defaults(func=run_cli)


def _codes(text: str) -> list[str]:
    codes = [code.strip() for code in text.split(",") if code.strip()]
    if not codes:
        raise argparse.ArgumentTypeError("give at least one code")
    return codes


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} must be positive")
    return value


def run_cli(args: argparse.Namespace) -> int:
    """Run the simulator until ``--duration`` has passed or it is interrupted."""
    simulator = SmartCameraSimulator(args.camera, args.port)
    try:
        simulator.start()
    except OSError as error:
        print(f"ocr-camera: cannot listen on {HOST}:{args.port}: {error}", file=sys.stderr)
        return 1
    print(f"ocr-camera: listening on {HOST}:{simulator.port}", file=sys.stderr, flush=True)
    deadline = None if args.duration is None else time.monotonic() + args.duration
    try:
        for code in itertools.cycle(args.codes):
            if deadline is not None and time.monotonic() + args.interval > deadline:
                time.sleep(max(0.0, deadline - time.monotonic()))
                break
            time.sleep(args.interval)
            simulator.read(code, size_type="42G1")
            simulator.passage_end(1)
            print(f"ocr-camera: passage {code}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        simulator.stop()
    return 0

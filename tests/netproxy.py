"""A TCP proxy on loopback that can cut the network the way a broken switch or a firewall does:
connections stay open, but nothing gets through in either direction (and new connections are
accepted but never answered)."""

from __future__ import annotations

import contextlib
import select
import socket
import threading


class SilentCutProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port: int = self._listener.getsockname()[1]
        self._cut = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self.connections = 0

    def start(self) -> SilentCutProxy:
        thread = threading.Thread(target=self._accept_loop, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def cut(self) -> None:
        """From now on nothing passes; every connection stays open and silent."""
        self._cut.set()

    def heal(self) -> None:
        self._cut.clear()

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                readable, _, _ = select.select([self._listener], [], [], 0.2)
                if not readable:
                    continue
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        with self._lock:
            self._sockets.append(client)
        # While cut, a new connection is accepted but nothing is forwarded (like a black hole).
        while self._cut.is_set() and not self._stop.is_set():
            self._stop.wait(0.1)
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        with self._lock:
            self._sockets.append(upstream)
        pairs = {client: upstream, upstream: client}
        try:
            while not self._stop.is_set():
                if self._cut.is_set():
                    self._stop.wait(0.05)  # hold everything: bytes wait in the kernel buffers
                    continue
                readable, _, _ = select.select(list(pairs), [], [], 0.1)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if self._cut.is_set():
                        continue  # lost on the wire
                    pairs[sock].sendall(data)
        except OSError:
            return
        finally:
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.close()

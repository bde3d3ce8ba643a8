"""An embedded MQTT broker (amqtt) for `gated demo`, so the demo needs no broker installed.

It runs on its own thread and event loop, bound to loopback only. Production and the tests use
mosquitto: amqtt is about three times slower and keeps nothing on disk, so it is an extra
(`pip install 'gated[demo]'`), not a dependency of the daemon.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import socket
import threading
from typing import Any

from gated.errors import GatedError

log = logging.getLogger(__name__)


def require_amqtt() -> None:
    """Raise a one-line ``GatedError`` saying how to install amqtt when it is missing."""
    if importlib.util.find_spec("amqtt") is None:
        raise GatedError(
            "the embedded MQTT broker needs amqtt: pip install 'gated[demo]' "
            "(or give an external broker with --broker mqtt://HOST:PORT)"
        )


class EmbeddedBroker:
    def __init__(self, host: str = "127.0.0.1", port: int = 1883) -> None:
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker: Any = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self, timeout: float = 15.0) -> None:
        require_amqtt()
        with socket.socket() as probe:
            # SO_REUSEADDR as the broker's own listener has: a demo just stopped leaves its port in
            # TIME_WAIT, which must not refuse the next one; a port someone listens on still does.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((self.host, self.port))
                probe.listen(1)
            except OSError as error:
                raise GatedError(
                    f"cannot start the embedded MQTT broker on {self.host}:{self.port}: {error} "
                    "(is another broker running? use --mqtt-port or --broker)"
                ) from None
        self._thread = threading.Thread(target=self._run, name="embedded-broker", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise GatedError("the embedded MQTT broker did not start in time")
        if self._error is not None:
            raise GatedError(f"the embedded MQTT broker failed to start: {self._error}")

    def _run(self) -> None:
        from amqtt.broker import Broker

        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        for noisy in ("amqtt", "transitions"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        try:
            self._broker = Broker(config, loop=loop)
            loop.run_until_complete(self._broker.start())
        except Exception as error:  # noqa: BLE001 - reported to start() through _error
            self._error = error
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    def stop(self) -> None:
        loop = self._loop
        if loop is None or self._broker is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), loop)
        try:
            future.result(timeout=10)
        except Exception as error:  # noqa: BLE001 - shutting down anyway
            log.debug("embedded broker shutdown: %s", error)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._broker = None

"""The console's HTTP(S) server: uvicorn on a thread of the daemon, with its own event loop."""

from __future__ import annotations

import logging
import threading
import time

import uvicorn
from starlette.types import ASGIApp

from gated.errors import ConfigError

log = logging.getLogger(__name__)

START_TIMEOUT = 15.0


class ConsoleServer:
    def __init__(
        self, app: ASGIApp, host: str, port: int, *, cert_file: str | None = None, key_file: str | None = None
    ) -> None:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            ssl_certfile=cert_file,
            ssl_keyfile=key_file,
            lifespan="off",
            server_header=False,
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="console", daemon=True)
        self.scheme = "https" if cert_file else "http"
        self.host = host
        self.port = port

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError([f"console.listen: cannot serve the console on {self.host}:{self.port}"])
            time.sleep(0.02)
        if self.port == 0:
            sockets = self._server.servers[0].sockets if self._server.servers else []
            if sockets:
                self.port = int(sockets[0].getsockname()[1])
        log.info("console on %s", self.url)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}/"

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(5.0)

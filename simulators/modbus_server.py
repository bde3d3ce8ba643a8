"""The Modbus TCP side of a simulated device: one unit's holding registers, served by pymodbus.

pymodbus is asyncio: the server runs on its own event loop in its own thread, next to the device's
own cycle, so a simulator's script methods stay plain, thread-safe calls. pymodbus moves its API
between minor versions (pinned below 4); the simulators reach its server through this module only.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from abc import abstractmethod

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimAction, SimData, SimDevice

from gated.cli.argtypes import int_range
from simulators.lifecycle import CannotListen, Simulator, listening_socket

READ_HOLDING_REGISTERS = 3
MODBUS_UNIT = int_range(1, 247, "a Modbus unit id")
"""The argparse type of ``--unit``: the unit ids a Modbus master may address one device by."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class ModbusTcpSimulator(Simulator):
    """A simulated device on ``host:port`` answering as Modbus unit ``unit``.

    Port 0 picks a free port at construction; ``.port`` keeps it across stop/start. The server
    starts with ``registers()`` and, while it serves, runs the device's ``_cycle()`` on its loop.
    ``on_access`` (a pymodbus ``SimDevice`` action) sees every request of a master.

    ``refuse()`` makes the device answer requests with a Modbus exception instead (a device
    failure, an address it no longer has), as a faulty device or a misconfigured gateway does.
    """

    name = "modbus-sim"  # names the server's thread
    title = "Modbus simulator"  # names the device in errors

    def __init__(self, *, host: str, port: int, unit: int, on_access: SimAction | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.unit = unit
        self._access_action = on_access
        self._refusal: tuple[ExcCodes, int, bool, bool] | None = None  # code, every, reads, writes
        self._requests = 0
        self.refused = 0
        """Requests answered with an exception by ``refuse()``."""
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: ModbusTcpServer | None = None
        self._stopping: asyncio.Event | None = None

    @abstractmethod
    def registers(self) -> list[int]:
        """A copy of all holding registers as the device holds them."""

    @abstractmethod
    async def _cycle(self) -> None:
        """The device's own cycle, run on the server's loop until the server stops."""

    # -- faults ----------------------------------------------------------------------------------

    def refuse(self, code: int | None, *, every: int = 1, reads: bool = True, writes: bool = True) -> None:
        """Answer every ``every``-th read (``reads``) and write (``writes``) request with Modbus
        exception ``code`` (2: illegal data address, 4: server device failure); None answers again."""
        if every < 1:
            raise ValueError(f"every {every} must be at least 1")
        self._requests = 0
        self._refusal = None if code is None else (ExcCodes(code), every, reads, writes)

    async def _access(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        written: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """Every request of a master: refused while ``refuse()`` says so, else the device's own."""
        refusal = self._refusal
        # The device's own updates (``_serve_values``) come this way too, as a "read" with values.
        own_update = written is not None and function_code == READ_HOLDING_REGISTERS
        if refusal is not None and not own_update:
            code, every, reads, writes = refusal
            if writes if written is not None else reads:
                self._requests += 1
                if self._requests % every == 0:
                    self.refused += 1
                    return code
        action = self._access_action
        if action is None:
            return None
        return await action(function_code, start_address, address, count, registers, written)

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def serving(self) -> bool:
        return self._thread is not None

    @property
    def failed(self) -> bool:
        """Started, but its server thread has ended without ``stop()``: nothing answers any more."""
        thread = self._thread
        return thread is not None and not thread.is_alive()

    def start(self) -> None:
        """Start serving; returns when the server accepts connections."""
        if self._thread is not None:
            return
        # Bind first ourselves: a port in use is then one clear error, not pymodbus' log and guess.
        try:
            listening_socket(self.host, self.port).close()
        except OSError as error:
            where = f"{self.host}:{self.port}"
            raise CannotListen(f"{self.title} cannot listen on {where}: {error.strerror or error}") from error
        ready = threading.Event()
        failure: list[BaseException] = []
        thread = threading.Thread(
            target=self._serve, args=(ready, failure), name=f"{self.name}-{self.port}", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + 30
        # A server thread that died before it was ready (a unit id pymodbus refuses) ends the wait.
        while not ready.wait(timeout=0.05) and thread.is_alive() and time.monotonic() < deadline:
            pass
        if failure or not ready.is_set():
            thread.join(timeout=10)
            why = failure[0] if failure else "its server stopped" if not thread.is_alive() else "timed out"
            raise CannotListen(f"{self.title} cannot listen on {self.host}:{self.port}: {why}")
        self._thread = thread

    def stop(self) -> None:
        """Stop serving and close every client connection. Safe to call twice."""
        thread, self._thread = self._thread, None
        loop, stopping = self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout=30)

    def _serve(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main(ready, failure))
        finally:
            self._loop = None
            loop.close()

    async def _main(self, ready: threading.Event, failure: list[BaseException]) -> None:
        try:
            device = SimDevice(
                id=self.unit,
                simdata=[SimData(address=0, values=self.registers(), datatype=DataType.REGISTERS)],
                action=self._access,
            )
            server = ModbusTcpServer(device, address=(self.host, self.port))
            await server.serve_forever(background=True)
        except Exception as error:  # noqa: BLE001  reported to the caller of start()
            failure.append(error)
            ready.set()
            return
        self._server = server
        self._stopping = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        cycle = asyncio.create_task(self._cycle())
        ready.set()
        try:
            await self._stopping.wait()
        finally:
            self._server = None
            cycle.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await cycle
            await server.shutdown()  # type: ignore[no-untyped-call]

    # -- changing what the server serves -------------------------------------------------------

    async def _serve_values(self, address: int, values: list[int]) -> None:
        """On the server's loop: serve ``values`` from ``address`` on, in one step."""
        server = self._server
        if server is not None:
            await server.async_setValues(self.unit, READ_HOLDING_REGISTERS, address, values)

    def _publish(self, blocks: list[tuple[int, list[int]]]) -> None:
        """From any thread: serve each (address, values) block in turn; nothing while stopped.

        Each block reaches the server in one step, so a client never sees half of it."""
        loop = self._loop
        if loop is None or self._thread is None:
            return

        async def publish() -> None:
            for address, values in blocks:
                await self._serve_values(address, values)

        coroutine = publish()
        try:
            future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        except RuntimeError:  # the loop closed meanwhile; the next start() serves the new values
            coroutine.close()
            return
        future.result(timeout=10)

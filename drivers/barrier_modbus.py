"""The gate barrier as a lease: a barrier PLC over Modbus TCP that opens only while gated keeps
renewing a permit with a heartbeat, and closes by itself when the heartbeat stops.

Register map of the PLC (holding registers, 0-based):

====  ==================================================================================
0     heartbeat, written by gated: incremented modulo 65536 every beat; any change is a beat
1     permit, written by gated: 1 = opening permitted, 0 = not
2     permit token, written by gated: 16-bit id of the visit the permit is for
3     barrier state (PLC): 0 closed, 1 opening, 2 open, 3 closing, 4 fault
4     watchdog timeout in ms (PLC setting; read at connect)
5     vehicles passed counter (PLC), counts modulo 65536
6     last cause of closing (PLC): 0 none, 1 permit withdrawn, 2 watchdog expired,
      3 vehicle passed, 4 fault
7, 8  fencing token (PLC): the highest accepted, low and high word
9-13  fenced command, one write of five: fencing token low, high, heartbeat, permit (0, 1, or
      0xFFFF to leave it), permit token (taken with permit 1)
====  ==================================================================================

With a fencing token (``fence()``, the lane lease's token when nodes share lanes: ``gated.leases``)
every write is a fenced command. The PLC takes it only with a token at least the highest it has
seen, takes nothing but fenced commands once it has seen one, and withdraws the permit when a
higher token arrives: a node that lost the lane's lease can no longer open the barrier, even before
it knows (its writes are refused, and it reports the barrier offline).

If gated dies, hangs or loses the network, the heartbeat stops and the PLC withdraws the permit
and closes within its watchdog timeout: safety does not depend on gated closing the barrier.

``ModbusBarrier`` is an actuator, not a reading driver. Its one thread writes the heartbeat (only
while ``healthy()`` says the daemon works), writes the permit that ``grant()`` and ``revoke()``
ask for, reads the PLC's registers every beat and reports changes through ``on_state``. It never
opens on its own: a permit of 1 is written only for a grant, and only while its lease lasts and
no vehicle has passed on it. Once the PLC itself ends a permit (vehicle passed, watchdog, fault)
the grant is spent. After a reconnect a grant whose lease is still valid is written again. Every
pymodbus exception and error response is translated here into ``DeviceUnavailable`` or
``ProtocolError``.

A Modbus exception response is an answer but not a working PLC: a PLC that refuses the heartbeat,
the permit or the read is not under gated's control. When every cycle has failed for
``offline_after`` seconds the barrier is reported offline (while the connection stays open), and
online again with the first cycle that works; the first error is logged, repeats are counted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Literal, Self

from pydantic import Field
from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ExceptionResponse

from gated.clock import Clock, SystemClock
from gated.errors import DeviceUnavailable, ProtocolError
from gated.model import Kind
from gated.settings import DeviceSettings, DriverContext, Host

log = logging.getLogger(__name__)

HEARTBEAT = 0
PERMIT = 1
TOKEN = 2
STATE = 3
WATCHDOG_MS = 4
VEHICLES_PASSED = 5
LAST_CAUSE = 6
REGISTER_COUNT = 7  # read 0..6 each beat
FENCED = 9
LEAVE = 0xFFFF  # a fenced command's permit field: leave the permit as it is

STATE_NAMES = ("closed", "opening", "open", "closing", "fault")
CAUSE_NAMES = ("none", "permit_withdrawn", "watchdog_expired", "vehicle_passed", "fault")
UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class BarrierState:
    """What the PLC shows. Offline, ``state`` is ``"unknown"`` and the rest is the last seen."""

    state: str  # one of STATE_NAMES, or "unknown" while offline
    permit: bool
    token: int
    vehicles_passed: int
    last_cause: str  # one of CAUSE_NAMES
    online: bool
    watchdog_ms: int = 0

    @property
    def is_open(self) -> bool:
        """Opening or open: the lane is not blocked."""
        return self.state in ("opening", "open")


def decode(registers: Sequence[int]) -> BarrierState:
    """The registers of one read (0..6) as a state. Raises ``ProtocolError`` for values out of the map."""
    if len(registers) != REGISTER_COUNT:
        raise ProtocolError(f"expected {REGISTER_COUNT} registers, got {len(registers)}")
    for index, word in enumerate(registers):
        if not isinstance(word, int) or isinstance(word, bool) or not 0 <= word <= 0xFFFF:
            raise ProtocolError(f"register {index}: {word!r} is not a 16-bit value")
    state, cause = registers[STATE], registers[LAST_CAUSE]
    if state >= len(STATE_NAMES):
        raise ProtocolError(f"register {STATE}: unknown barrier state {state}")
    if cause >= len(CAUSE_NAMES):
        raise ProtocolError(f"register {LAST_CAUSE}: unknown cause of closing {cause}")
    return BarrierState(
        state=STATE_NAMES[state],
        permit=registers[PERMIT] == 1,
        token=registers[TOKEN],
        vehicles_passed=registers[VEHICLES_PASSED],
        last_cause=CAUSE_NAMES[cause],
        online=True,
        watchdog_ms=registers[WATCHDOG_MS],
    )


@dataclass(slots=True)
class _Grant:
    token: int
    deadline: float  # on the injected clock's monotonic scale
    written: bool = False  # permit 1 written on this connection
    vehicles_at_start: int | None = None  # the counter when the permit was first written


def _open(client: ModbusTcpClient) -> bool:
    return bool(client.connect())  # type: ignore[no-untyped-call]


def _shut(client: ModbusTcpClient) -> None:
    client.close()  # type: ignore[no-untyped-call]


class BarrierModbusDevice(DeviceSettings):
    driver: Literal["barrier-modbus"]
    host: Host
    port: int = Field(502, ge=1, le=65535)
    unit: int = Field(1, ge=0, le=247)
    lease_seconds: float = Field(
        10.0,
        gt=0,
        le=30,
        description="How long a permit to open lasts if no vehicle passes: seconds, for the truck "
        "at the barrier, never long enough for the next one to use it.",
    )
    release_window_seconds: float = Field(
        5.0,
        gt=0,
        le=60,
        description="A RELEASE opens the barrier only if the truck's newest reading is at most this "
        "old: a decision that comes after its truck has gone grants nothing.",
    )
    heartbeat_interval_seconds: float = Field(
        0.25, gt=0, le=2, description="Keep well below the PLC's watchdog timeout."
    )
    timeout_seconds: float = Field(1.0, gt=0, le=30)


class ModbusBarrier:
    """One barrier PLC on Modbus TCP, held open only by a heartbeat and a leased permit.

    Beats are paced with the real monotonic clock; lease deadlines use the injected ``clock``
    (tests pass a manual clock to expire a lease without waiting)."""

    kind: Final = Kind.BARRIER

    @classmethod
    def from_settings(cls, lane: str, settings: BarrierModbusDevice, context: DriverContext) -> Self:
        return cls(lane, settings, clock=context.clock)

    def __init__(
        self,
        lane: str,
        settings: BarrierModbusDevice,
        *,
        clock: Clock | None = None,
        on_state: Callable[[BarrierState], None] | None = None,
        backoff_initial: float = 0.2,
        backoff_max: float = 2.0,
        offline_after: float = 1.0,
    ) -> None:
        if offline_after <= 0:
            raise ValueError(f"offline_after {offline_after} must be positive")
        self.lane = lane
        self.device = settings.id
        self.host = settings.host
        self.port = settings.port
        self.unit = settings.unit
        self.heartbeat_interval = settings.heartbeat_interval_seconds
        self.timeout = settings.timeout_seconds
        self.clock: Clock = clock or SystemClock()
        self.on_state = on_state
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.healthy: Callable[[], bool] = lambda: True
        self.offline_after = offline_after
        self.frame_errors = 0
        self.connects = 0
        self.watchdog_ms: int | None = None
        self._lock = threading.Lock()
        self._grant: _Grant | None = None
        self._withdraw = False  # a permit of 0 is still to be written
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: ModbusTcpClient | None = None
        self._beat = 0
        self._state: BarrierState | None = None
        self._unhealthy_logged = False
        self._failing_since: float | None = None  # first failed cycle with no good one after it
        self._fence: int | None = None  # the fencing token every write carries (None: plain writes)
        # Lanes shared by nodes: write nothing without a fencing token (a standby only reads).
        self.fenced_only = False
        self._failures = 0  # failed cycles since then

    @property
    def _where(self) -> str:
        return f"{self.lane}/{self.device} {self.host}:{self.port} unit {self.unit}"

    @property
    def state(self) -> BarrierState | None:
        """The last state reported (None before the first report)."""
        with self._lock:
            return self._state

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the heartbeat thread. Safe to call twice."""
        if self._thread is not None:
            return
        self._stop.clear()
        thread = threading.Thread(target=self._run, name=f"barrier-{self.lane}-{self.device}", daemon=True)
        self._thread = thread
        thread.start()

    def stop(self) -> None:
        """Withdraw the permit (best effort), stop heartbeating and close. Safe to call twice."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        with self._lock:
            self._grant = None
            self._withdraw = True
        self._stop.set()
        self._wake.set()
        thread.join(timeout=max(10.0, 3 * self.timeout))

    # -- commands --------------------------------------------------------------------------------

    def grant(self, token: int, lease_seconds: float) -> None:
        """Permit one opening for visit ``token`` until ``lease_seconds`` from now (or one vehicle)."""
        if not 0 <= token <= 0xFFFF:
            raise ValueError(f"token {token} is not a 16-bit value")
        if lease_seconds <= 0:
            raise ValueError(f"lease_seconds {lease_seconds} must be positive")
        with self._lock:
            self._grant = _Grant(token=token, deadline=self.clock.monotonic() + lease_seconds)
            self._withdraw = False
        log.info("%s: permit granted for token %d, lease %.1f s", self._where, token, lease_seconds)
        self._wake.set()

    def fence(self, token: int | None) -> None:
        """Carry fencing ``token`` in every write from now on (None: plain writes, one node)."""
        if token is not None and not 1 <= token <= 0xFFFFFFFF:
            raise ValueError(f"fencing token {token} is not 1..2**32-1")
        with self._lock:
            changed, self._fence = self._fence != token, token
        if changed:
            log.info("%s: fencing token %s", self._where, token)
            self._wake.set()

    def revoke(self, reason: str) -> None:
        """Withdraw the permit now; the PLC closes the barrier."""
        with self._lock:
            self._grant = None
            self._withdraw = True
        log.info("%s: permit revoked: %s", self._where, reason)
        self._wake.set()

    # -- the heartbeat thread --------------------------------------------------------------------

    def _run(self) -> None:
        backoff = self.backoff_initial
        failing_logged = False
        while not self._stop.is_set():
            try:
                self._connect()
            except DeviceUnavailable as error:
                if not failing_logged:
                    log.warning("%s", error)
                    failing_logged = True
                self._report_offline()
                self._expire_lease()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.backoff_max)
                continue
            if failing_logged:
                log.info("%s: connected again", self._where)
                failing_logged = False
            backoff = self.backoff_initial
            try:
                self._serve()
            except DeviceUnavailable as error:
                log.warning("%s", error)
                failing_logged = True
            except Exception as error:  # a bug must not end the thread silently
                log.exception("%s: barrier thread failed: %s", self._where, error)
                failing_logged = True
            self._close()
            if not self._stop.is_set():
                self._report_offline()
                self._stop.wait(backoff)
        self._close()

    def _serve(self) -> None:
        """One connection: beat, write what is asked, read and report, until stop or an error.

        A bad frame is counted and the cycle goes on; a lost connection raises ``DeviceUnavailable``."""
        next_beat = time.monotonic()
        self._failing_since, self._failures = None, 0
        while not self._stop.is_set():
            self._wake.clear()
            try:
                now = time.monotonic()
                if now >= next_beat:
                    next_beat = max(next_beat + self.heartbeat_interval, now)
                    if self._is_healthy():
                        beat = (self._beat + 1) & 0xFFFF
                        self._write(HEARTBEAT, [beat])
                        self._beat = beat
                self._expire_lease()
                self._write_permit()
                self._observe(self._read())
            except ProtocolError as error:
                self._cycle_failed(error)
            else:
                self._cycle_worked()
            self._wake.wait(max(0.0, next_beat - time.monotonic()))
        self._write_permit_best_effort()

    def _connect(self) -> None:
        self._close()
        client = ModbusTcpClient(self.host, port=self.port, timeout=self.timeout, retries=0)
        try:
            connected = _open(client)
        except (ModbusException, OSError) as error:
            _shut(client)
            raise DeviceUnavailable(f"{self._where}: cannot connect: {error}") from error
        if not connected:
            _shut(client)
            raise DeviceUnavailable(f"{self._where}: cannot connect")
        self._client = client
        try:
            registers = self._read()
            self.watchdog_ms = registers[WATCHDOG_MS]
            self._beat = registers[HEARTBEAT]
        except (DeviceUnavailable, ProtocolError) as error:
            self._close()
            raise DeviceUnavailable(f"{self._where}: no usable answer after connecting: {error}") from error
        self.connects += 1
        if self.watchdog_ms and self.heartbeat_interval * 2 > self.watchdog_ms / 1000:
            log.warning(
                "%s: heartbeat every %.2f s is too slow for the PLC's watchdog of %d ms",
                self._where,
                self.heartbeat_interval,
                self.watchdog_ms,
            )
        spent = None
        with self._lock:
            grant = self._grant
            if grant is None:
                self._withdraw = True  # no permit survives a reconnect without a valid lease
            elif grant.vehicles_at_start not in (None, registers[VEHICLES_PASSED]):
                spent, self._grant, self._withdraw = grant, None, True
            else:
                grant.written = False  # write it again on this connection: the lease still holds
        if spent is not None:
            log.info(
                "%s: permit for token %d spent: vehicle passed while disconnected", self._where, spent.token
            )

    def _close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            _shut(client)

    def _is_healthy(self) -> bool:
        try:
            healthy = bool(self.healthy())
        except Exception as error:  # noqa: BLE001  an unhealthy check means no heartbeat
            log.warning("%s: health check failed: %s", self._where, error)
            healthy = False
        if healthy == self._unhealthy_logged:
            self._unhealthy_logged = not healthy
            if healthy:
                log.info("%s: healthy again: heartbeat resumed", self._where)
            else:
                log.warning("%s: not healthy: heartbeat withheld, the PLC will close", self._where)
        return healthy

    def _expire_lease(self) -> None:
        with self._lock:
            grant = self._grant
            if grant is None or self.clock.monotonic() < grant.deadline:
                return
            self._grant = None
            self._withdraw = True
        log.info("%s: lease for token %d ended: permit withdrawn", self._where, grant.token)

    def _write_permit(self) -> None:
        with self._lock:
            grant, withdraw = self._grant, self._withdraw
        if grant is not None and not grant.written:
            token = grant.token
            self._write(PERMIT, [1, token])
            with self._lock:
                if self._grant is grant:
                    grant.written = True
        elif withdraw:
            self._write(PERMIT, [0])
            with self._lock:
                if self._grant is None:
                    self._withdraw = False

    def _write_permit_best_effort(self) -> None:
        try:
            self._write(PERMIT, [0])
        except (DeviceUnavailable, ProtocolError) as error:
            log.warning("%s: could not withdraw the permit on stop: %s", self._where, error)

    def _observe(self, registers: list[int]) -> None:
        """Decode one read, end a grant the PLC ended, and report a change (``ProtocolError`` for a
        read that does not decode)."""
        current = decode(registers)
        spent: str | None = None
        with self._lock:
            grant = self._grant
            if grant is not None and grant.written:
                if grant.vehicles_at_start is None:
                    grant.vehicles_at_start = current.vehicles_passed
                if current.vehicles_passed != grant.vehicles_at_start:
                    spent = "vehicle passed"
                elif not current.permit or current.token != grant.token:
                    spent = f"the PLC ended the permit ({current.last_cause})"
                if spent is not None:
                    self._grant = None
                    self._withdraw = True
        if spent is not None and grant is not None:
            log.info("%s: permit for token %d spent: %s", self._where, grant.token, spent)
            self._wake.set()
        self._report(current)

    # -- Modbus, translated ----------------------------------------------------------------------

    def _call(self, request: Callable[[ModbusTcpClient], object]) -> object:
        """Run one request; raise ``DeviceUnavailable`` or ``ProtocolError`` for any failure."""
        client = self._client
        if client is None:
            raise DeviceUnavailable(f"{self._where}: not connected")
        try:
            response = request(client)
        except ConnectionException as error:
            raise DeviceUnavailable(f"{self._where}: connection lost: {error}") from error
        except ModbusIOException as error:
            # No (matching) answer in time. Over TCP the stream may now be out of step: reconnect.
            raise DeviceUnavailable(f"{self._where}: no answer: {error}") from error
        except ModbusException as error:
            raise ProtocolError(f"{self._where}: {error}") from error
        except OSError as error:
            raise DeviceUnavailable(f"{self._where}: {error}") from error
        if isinstance(response, ExceptionResponse) or getattr(response, "isError", lambda: False)():
            code = getattr(response, "exception_code", None)
            raise ProtocolError(f"{self._where}: Modbus exception {code}")
        return response

    def _write(self, address: int, values: list[int]) -> None:
        with self._lock:
            fence = self._fence
        if fence is None and self.fenced_only:
            return  # not this node's barrier now: not a single write
        if fence is not None:
            # The same command as a fenced block: heartbeat, or permit (and its token), or both.
            beat = values[0] if address == HEARTBEAT else self._beat
            permit = values[0] if address == PERMIT else LEAVE
            token = values[1] if address == PERMIT and len(values) > 1 else LEAVE
            block = [fence & 0xFFFF, fence >> 16, beat, permit, token]
            self._call(lambda c: c.write_registers(FENCED, block, device_id=self.unit))
            return
        if len(values) == 1:
            self._call(lambda c: c.write_register(address, values[0], device_id=self.unit))
        else:
            self._call(lambda c: c.write_registers(address, values, device_id=self.unit))

    def _read(self) -> list[int]:
        response = self._call(
            lambda c: c.read_holding_registers(0, count=REGISTER_COUNT, device_id=self.unit)
        )
        registers = getattr(response, "registers", None)
        if not isinstance(registers, list):
            raise ProtocolError(f"{self._where}: response without registers: {response}")
        return registers

    def _cycle_failed(self, error: ProtocolError) -> None:
        """Count a failed cycle; report the barrier offline once every cycle failed for a while."""
        self.frame_errors += 1
        self._failures += 1
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
            log.warning("%s: %s (repeats are counted until it answers again)", self._where, error)
            return
        if now - self._failing_since < self.offline_after:
            return
        with self._lock:
            reported = self._state is not None and not self._state.online
        if not reported:
            log.warning(
                "%s: every cycle failed for %.1f s (%d times): reported offline",
                self._where,
                now - self._failing_since,
                self._failures,
            )
        self._report_offline()

    def _cycle_worked(self) -> None:
        if self._failing_since is not None:
            log.info("%s: answering again after %d failed cycles", self._where, self._failures)
            self._failing_since, self._failures = None, 0

    # -- reporting -------------------------------------------------------------------------------

    def _report_offline(self) -> None:
        with self._lock:
            last = self._state
        if last is None:
            offline = BarrierState(UNKNOWN, False, 0, 0, CAUSE_NAMES[0], online=False)
        else:
            offline = BarrierState(
                UNKNOWN,
                False,
                last.token,
                last.vehicles_passed,
                last.last_cause,
                online=False,
                watchdog_ms=last.watchdog_ms,
            )
        self._report(offline)

    def _report(self, current: BarrierState) -> None:
        with self._lock:
            if current == self._state:
                return
            self._state = current
        callback = self.on_state
        if callback is None:
            return
        try:
            callback(current)
        except Exception as error:  # a listener's bug must not stop the heartbeat
            log.exception("%s: on_state listener failed: %s", self._where, error)

"""A gate barrier PLC speaking Modbus TCP, whose opening is a lease kept alive by a heartbeat.

Written from the PLC's register map (holding registers, 0-based), not from gated's driver:

====  ==================================================================================
0     heartbeat, written by the master; any change of value is a beat
1     permit, written by the master: 1 = opening permitted, anything else = not
2     permit token, written by the master: the 16-bit id of the visit the permit is for
3     barrier state (PLC): 0 closed, 1 opening, 2 open, 3 closing, 4 fault
4     watchdog timeout in ms (PLC setting, read-only over Modbus)
5     vehicles passed counter (PLC), counts modulo 65536
6     last cause of closing (PLC): 0 none, 1 permit withdrawn, 2 watchdog expired,
      3 vehicle passed, 4 fault
7, 8  fencing token (PLC): the highest accepted, low and high word (0: no fencing yet)
9-13  fenced command, written as one block of five by the master: fencing token low, high,
      heartbeat, permit (0, 1, or 0xFFFF to leave it), permit token (taken with permit 1)
====  ==================================================================================

Fencing: once a master has written a fenced command, only fenced commands are taken (a write to
0..2 is refused with exception 3, illegal data value), and only with a fencing token at least the
highest seen (a lower one: exception 3, nothing applied). A higher token is a new master: the PLC
withdraws the permit the previous one gave before it applies the block. The highest token survives
a power loss.

PLC rules: the barrier opens (opening, then open after ``travel_seconds``) only while permit is 1
and the heartbeat changed within the watchdog timeout. A stale heartbeat makes the PLC drop the
permit itself (cause 2) and close. A withdrawn permit closes with cause 1. A vehicle passing
counts, drops the permit (one permit, one truck) and closes with cause 3. A fault holds state 4
and never opens. Writes to registers 3..6 are refused with exception 2 (illegal data address).

The rules are the pure function ``plc_step``; the simulator feeds it every master write (from a
pymodbus ``SimDevice`` action, on the server's event loop), every scripted event, and a watchdog
tick every 50 ms, and serves the registers the model holds. Stopping the simulator is a power
loss: the barrier falls closed and the permit and heartbeat are cleared; the token, the counter,
the last cause and the watchdog setting are kept.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, cast

from pymodbus.constants import ExcCodes

from gated.cli.argtypes import int_range, port
from simulators.modbus_server import MODBUS_UNIT, ModbusTcpSimulator

HEARTBEAT = 0
PERMIT = 1
TOKEN = 2
STATE = 3
WATCHDOG_MS = 4
VEHICLES_PASSED = 5
LAST_CAUSE = 6
FENCE_LOW = 7
FENCE_HIGH = 8
FENCED = 9  # fenced command block: fence low, fence high, heartbeat, permit, token
FENCED_COUNT = 5
REGISTER_COUNT = FENCED + FENCED_COUNT
WRITABLE = frozenset({HEARTBEAT, PERMIT, TOKEN})
LEAVE = 0xFFFF

CLOSED = 0
OPENING = 1
OPEN = 2
CLOSING = 3
FAULT = 4
STATE_NAMES = {CLOSED: "closed", OPENING: "opening", OPEN: "open", CLOSING: "closing", FAULT: "fault"}

CAUSE_NONE = 0
CAUSE_PERMIT_WITHDRAWN = 1
CAUSE_WATCHDOG = 2
CAUSE_VEHICLE_PASSED = 3
CAUSE_FAULT = 4
CAUSE_NAMES = {
    CAUSE_NONE: "none",
    CAUSE_PERMIT_WITHDRAWN: "permit withdrawn",
    CAUSE_WATCHDOG: "watchdog expired",
    CAUSE_VEHICLE_PASSED: "vehicle passed",
    CAUSE_FAULT: "fault",
}

TICK_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class PlcState:
    """Everything the PLC remembers. ``last_beat`` is None until the first beat after power-up."""

    barrier: int = CLOSED
    permit: int = 0
    token: int = 0
    vehicles_passed: int = 0
    last_cause: int = CAUSE_NONE
    heartbeat: int = 0
    last_beat: float | None = None
    moved_at: float = 0.0  # when the current travel (opening or closing) began
    watchdog_ms: int = 1000
    travel_seconds: float = 0.3
    fence: int = 0  # the highest fencing token accepted (0: none yet)

    def heartbeat_fresh(self, now: float) -> bool:
        return self.last_beat is not None and now - self.last_beat <= self.watchdog_ms / 1000

    def registers(self) -> list[int]:
        values = [0] * REGISTER_COUNT
        values[HEARTBEAT] = self.heartbeat
        values[PERMIT] = self.permit
        values[TOKEN] = self.token
        values[STATE] = self.barrier
        values[WATCHDOG_MS] = self.watchdog_ms
        values[VEHICLES_PASSED] = self.vehicles_passed
        values[LAST_CAUSE] = self.last_cause
        values[FENCE_LOW] = values[FENCED] = self.fence & 0xFFFF
        values[FENCE_HIGH] = values[FENCED + 1] = self.fence >> 16
        values[FENCED + 2 : FENCED + 5] = [self.heartbeat, self.permit, self.token]
        return values


@dataclass(frozen=True, slots=True)
class PlcInputs:
    """What happened since the last step: master writes (None: not written), scripted events."""

    heartbeat: int | None = None
    permit: int | None = None
    token: int | None = None
    fence: int | None = None  # a fenced command's token (checked before: at least the highest)
    vehicle_passed: bool = False
    fault: bool = False  # a level, not an event: the fault input as it is now


def plc_step(state: PlcState, inputs: PlcInputs, now: float) -> PlcState:
    """One scan of the PLC program: apply the inputs at ``now`` and move the barrier."""
    s = state
    if inputs.fence is not None and inputs.fence > s.fence:
        # A new master: nothing the previous one permitted stands.
        s = replace(s, fence=inputs.fence, permit=0)
    if inputs.heartbeat is not None and inputs.heartbeat != s.heartbeat:
        s = replace(s, heartbeat=inputs.heartbeat, last_beat=now)
    if inputs.token is not None:
        s = replace(s, token=inputs.token)
    if inputs.permit is not None:
        s = replace(s, permit=inputs.permit)

    if inputs.vehicle_passed:
        s = replace(s, vehicles_passed=(s.vehicles_passed + 1) & 0xFFFF)

    if inputs.fault:
        if s.barrier != FAULT:
            s = replace(s, barrier=FAULT, moved_at=now, last_cause=CAUSE_FAULT)
        return replace(s, permit=0)

    cause: int | None = None
    if inputs.vehicle_passed and (s.permit == 1 or s.barrier in (OPENING, OPEN)):
        s = replace(s, permit=0)
        cause = CAUSE_VEHICLE_PASSED
    fresh = s.heartbeat_fresh(now)
    if s.permit == 1 and not fresh:
        s = replace(s, permit=0)
        cause = CAUSE_WATCHDOG
    if cause is not None:
        s = replace(s, last_cause=cause)

    if s.permit == 1 and fresh:
        if s.barrier in (CLOSED, CLOSING, FAULT):
            s = replace(s, barrier=OPENING, moved_at=now)
        elif s.barrier == OPENING and now - s.moved_at >= s.travel_seconds:
            s = replace(s, barrier=OPEN, moved_at=now)
    elif s.barrier in (OPENING, OPEN, FAULT):
        if cause is None and s.barrier != FAULT:
            s = replace(s, last_cause=CAUSE_PERMIT_WITHDRAWN)
        s = replace(s, barrier=CLOSING, moved_at=now)
    elif s.barrier == CLOSING and now - s.moved_at >= s.travel_seconds:
        s = replace(s, barrier=CLOSED, moved_at=now)
    return s


def power_loss(state: PlcState, now: float) -> PlcState:
    """What survives a power cycle: the barrier falls closed; permit and heartbeat are cleared."""
    barrier = FAULT if state.barrier == FAULT else CLOSED
    return replace(state, barrier=barrier, permit=0, heartbeat=0, last_beat=None, moved_at=now)


class BarrierPlcSimulator(ModbusTcpSimulator):
    """A barrier PLC on ``host:port`` answering as Modbus unit ``unit``.

    Port 0 picks a free port at construction; ``.port`` keeps it across stop/start. Script and
    inspection methods are thread-safe and take effect at once (the server serves the model)."""

    name = "barrier-plc-sim"
    title = "barrier PLC simulator"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        unit: int = 1,
        watchdog_ms: int = 1000,
        travel_seconds: float = 0.3,
    ) -> None:
        if not 1 <= watchdog_ms <= 0xFFFF:
            raise ValueError(f"watchdog_ms {watchdog_ms} is outside 1..65535")
        super().__init__(host=host, port=port, unit=unit, on_access=self._on_access)
        self._lock = threading.Lock()
        self._model = PlcState(watchdog_ms=watchdog_ms, travel_seconds=travel_seconds)
        self._fault = False
        self._history: list[tuple[float, int]] = [(time.monotonic(), CLOSED)]
        self._beats: list[float] = []
        self.refused_fenced = 0  # fenced commands with a token below the highest
        self.refused_unfenced = 0  # plain writes once fencing is in force

    def stop(self) -> None:
        """Stop serving and close every client connection (a power loss). Safe to call twice."""
        if not self.serving:
            return
        super().stop()
        now = time.monotonic()
        with self._lock:
            self._commit(power_loss(self._model, now), now)

    async def _cycle(self) -> None:
        """The PLC's own cycle: evaluates the watchdog and the barrier's travel every 50 ms."""
        while True:
            self._apply(PlcInputs())
            await asyncio.sleep(TICK_SECONDS)

    async def _on_access(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        written: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """Every request of a master: feed writes to the PLC program, then serve the model."""
        first = address - start_address
        if written is not None:
            targets = range(address, address + count)
            if address == FENCED and count == FENCED_COUNT:
                inputs = self._fenced([int(value) for value in written])
                if inputs is None:
                    return ExcCodes.ILLEGAL_VALUE
            elif any(target not in WRITABLE for target in targets):
                return ExcCodes.ILLEGAL_ADDRESS
            else:
                with self._lock:
                    if self._model.fence:
                        self.refused_unfenced += 1
                        return ExcCodes.ILLEGAL_VALUE  # fenced: only fenced commands now
                by_address = {target: int(value) for target, value in zip(targets, written, strict=False)}
                inputs = PlcInputs(
                    heartbeat=by_address.get(HEARTBEAT),
                    permit=by_address.get(PERMIT),
                    token=by_address.get(TOKEN),
                )
            image = self._apply(inputs)
            # pymodbus stores ``written`` once this returns: make it what the PLC program kept.
            cast(list[int], written)[:] = image[first : first + len(written)]
        else:
            with self._lock:
                image = self._model.registers()
        registers[: len(image)] = image
        return None

    def _fenced(self, block: list[int]) -> PlcInputs | None:
        """A fenced command's inputs, or None (counted) when its token is below the highest."""
        fence = block[0] | block[1] << 16
        with self._lock:
            if fence < self._model.fence or fence == 0:
                self.refused_fenced += 1
                return None
        permit = None if block[3] == LEAVE else block[3]
        return PlcInputs(
            heartbeat=block[2], permit=permit, token=block[4] if permit == 1 else None, fence=fence
        )

    def _apply(self, inputs: PlcInputs) -> list[int]:
        now = time.monotonic()
        with self._lock:
            inputs = replace(inputs, fault=self._fault)
            self._commit(plc_step(self._model, inputs, now), now)
            return self._model.registers()

    def _commit(self, new: PlcState, now: float) -> None:
        """Replace the model (lock held), recording barrier transitions and beats."""
        if new.last_beat is not None and new.last_beat != self._model.last_beat:
            self._beats.append(new.last_beat)
            del self._beats[:-1000]
        if new.barrier != self._model.barrier:
            self._history.append((now, new.barrier))
        self._model = new

    # -- script and inspection -------------------------------------------------------------------

    def state(self) -> int:
        with self._lock:
            return self._model.barrier

    def permit(self) -> int:
        with self._lock:
            return self._model.permit

    def token(self) -> int:
        with self._lock:
            return self._model.token

    def last_cause(self) -> int:
        with self._lock:
            return self._model.last_cause

    def vehicles_passed(self) -> int:
        with self._lock:
            return self._model.vehicles_passed

    def fence(self) -> int:
        """The highest fencing token accepted (0: none)."""
        with self._lock:
            return self._model.fence

    def registers(self) -> list[int]:
        """A copy of all holding registers as the PLC holds them."""
        with self._lock:
            return self._model.registers()

    @property
    def history(self) -> list[tuple[float, int]]:
        """(monotonic time, new state) of every barrier transition, oldest first.

        The first entry is the state at construction (closed)."""
        with self._lock:
            return list(self._history)

    @property
    def heartbeats(self) -> list[float]:
        """Monotonic times at which the PLC saw the heartbeat change (the last 1000)."""
        with self._lock:
            return list(self._beats)

    def last_heartbeat(self) -> float | None:
        """When the PLC last saw the heartbeat change (None: not since power-up)."""
        with self._lock:
            return self._model.last_beat

    def simulate_vehicle_passed(self) -> None:
        """The loop after the barrier saw a vehicle through."""
        self._apply(PlcInputs(vehicle_passed=True))

    def set_fault(self, fault: bool) -> None:
        with self._lock:
            self._fault = fault
        self._apply(PlcInputs())


WATCHDOG_TIMEOUT = int_range(1, 65535, "a watchdog timeout in ms")


def register_cli(subparsers: Any) -> None:
    """Add the ``barrier-plc`` subcommand to ``gated-sim``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "barrier-plc", help="a gate barrier PLC on Modbus TCP that opens only while it gets heartbeats"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=port, default=1503, help="TCP port (0: pick a free one)")
    parser.add_argument("--unit", type=MODBUS_UNIT, default=1, help="Modbus unit id (1-247)")
    parser.add_argument(
        "--watchdog-ms", type=WATCHDOG_TIMEOUT, default=1000, help="heartbeat watchdog timeout (1-65535)"
    )
    parser.add_argument("--travel-seconds", type=float, default=0.3, help="time to open or to close")
    parser.add_argument("--duration", type=float, default=0.0, help="seconds to run (0: until interrupted)")
    parser.set_defaults(func=run_cli)


def run_cli(args: argparse.Namespace) -> int:
    """Serve and print every barrier state change until ``--duration`` ends or the user interrupts."""
    simulator = BarrierPlcSimulator(
        host=args.host,
        port=args.port,
        unit=args.unit,
        watchdog_ms=args.watchdog_ms,
        travel_seconds=args.travel_seconds,
    )
    simulator.start()
    print(
        f"barrier-plc simulator on {simulator.host}:{simulator.port} unit {simulator.unit}, "
        f"watchdog {args.watchdog_ms} ms",
        flush=True,
    )
    started = time.monotonic()
    deadline = started + args.duration if args.duration > 0 else math.inf
    shown = len(simulator.history)
    try:
        while time.monotonic() < deadline:
            if simulator.failed:
                print("barrier-plc: the Modbus server stopped; exiting", file=sys.stderr)
                return 1
            history = simulator.history
            for moment, state in history[shown:]:
                cause = CAUSE_NAMES.get(simulator.last_cause(), "unknown")
                detail = f" (last cause: {cause})" if state in (CLOSING, CLOSED) else ""
                print(f"{moment - started:8.3f} s  {STATE_NAMES[state]}{detail}", flush=True)
            shown = len(history)
            time.sleep(0.02)
    except KeyboardInterrupt:
        pass
    finally:
        simulator.stop()
    return 0

"""A radiation portal monitor speaking Modbus TCP, for tests and for building a lane without hardware.

Written from the register map of the monitor (holding registers, 0-based, 32-bit values high word
first), not from gated's driver:

====  ==================================================================================
0     status bits: 0 occupied, 1 gamma alarm, 2 neutron alarm, 3 gamma high fault,
      4 gamma low fault, 5 neutron high fault, 6 tamper
1     pass counter, incremented when a pass ends, after registers 8..12 hold its result
2-3   gamma gross cps now (32 bit)
4-5   gamma background cps (32 bit)
6     neutron gross cps now x10
7     neutron background cps x10
8-9   last pass: peak gamma cps (32 bit)
10    last pass: peak neutron cps x10
11    last pass: result bits: 0 gamma alarm, 1 neutron alarm, 2 fault, 3 tamper
12    last pass: speed km/h x10
====  ==================================================================================

The server is a real pymodbus Modbus TCP server with its own event loop in its own thread. Live
counts are Poisson draws from a seeded generator, refreshed every 200 ms. Script methods are
thread-safe and return once the server shows the change. ``refuse(code)`` (``--refuse`` on the
command line) answers polls with a Modbus exception instead, as a failing monitor does.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from gated.cli.argtypes import port
from simulators.modbus_server import MODBUS_UNIT, ModbusTcpSimulator

STATUS = 0
PASS_COUNTER = 1
GAMMA_NOW = 2
GAMMA_BACKGROUND = 4
NEUTRON_NOW = 6
NEUTRON_BACKGROUND = 7
LAST_GAMMA_PEAK = 8
LAST_NEUTRON_PEAK = 10
LAST_RESULT = 11
LAST_SPEED = 12
REGISTER_COUNT = 13

OCCUPIED = 1 << 0
GAMMA_ALARM = 1 << 1
NEUTRON_ALARM = 1 << 2
GAMMA_HIGH_FAULT = 1 << 3
GAMMA_LOW_FAULT = 1 << 4
NEUTRON_HIGH_FAULT = 1 << 5
TAMPER = 1 << 6

RESULT_GAMMA_ALARM = 1 << 0
RESULT_NEUTRON_ALARM = 1 << 1
RESULT_FAULT = 1 << 2
RESULT_TAMPER = 1 << 3

UPDATE_INTERVAL = 0.2
SHIELDING = 0.9  # a vehicle in the portal hides part of the background


def uint16(value: float) -> int:
    return max(0, min(0xFFFF, round(value)))


def uint32_words(value: float) -> list[int]:
    raw = max(0, min(0xFFFFFFFF, round(value)))
    return [raw >> 16, raw & 0xFFFF]


def poisson(rng: random.Random, mean: float) -> int:
    """One Poisson draw (Knuth for small means, the normal approximation for large ones)."""
    if mean <= 0:
        return 0
    if mean > 50:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit = math.exp(-mean)
    count, product = 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


class ModbusRpmSimulator(ModbusTcpSimulator):
    """A portal monitor on ``host:port`` answering as Modbus unit ``unit``.

    Port 0 picks a free port at construction; ``.port`` keeps it across stop/start, and so do the
    registers (a restarted monitor shows the same pass counter)."""

    name = "rpm-modbus-sim"
    title = "RPM simulator"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        unit: int = 1,
        seed: int = 0,
        gamma_background_cps: float = 250.0,
        neutron_background_cps: float = 2.0,
        pass_counter: int = 0,
    ) -> None:
        super().__init__(host=host, port=port, unit=unit)
        self.gamma_background_cps = gamma_background_cps
        self.neutron_background_cps = neutron_background_cps
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        registers = [0] * REGISTER_COUNT
        registers[PASS_COUNTER] = pass_counter & 0xFFFF
        registers[GAMMA_NOW : GAMMA_NOW + 2] = uint32_words(gamma_background_cps)
        registers[GAMMA_BACKGROUND : GAMMA_BACKGROUND + 2] = uint32_words(gamma_background_cps)
        registers[NEUTRON_NOW] = uint16(neutron_background_cps * 10)
        registers[NEUTRON_BACKGROUND] = uint16(neutron_background_cps * 10)
        self._registers = registers

    async def _cycle(self) -> None:
        """Fresh live counts every UPDATE_INTERVAL."""
        while True:
            await asyncio.sleep(UPDATE_INTERVAL)
            with self._lock:
                shielding = SHIELDING if self._registers[STATUS] & OCCUPIED else 1.0
                gamma = poisson(self._rng, self.gamma_background_cps * shielding)
                neutron_tenths = poisson(self._rng, self.neutron_background_cps * shielding * 10)
                self._registers[GAMMA_NOW : GAMMA_NOW + 2] = uint32_words(gamma)
                self._registers[NEUTRON_NOW] = uint16(neutron_tenths)
                values = self._registers[GAMMA_NOW : NEUTRON_NOW + 1]
            await self._serve_values(GAMMA_NOW, values)

    def _write(self, change: Callable[[list[int]], list[tuple[int, int]]]) -> None:
        """Apply ``change`` to the registers; it returns the (first, last) ranges to publish, in order."""
        with self._lock:
            ranges = change(self._registers)
            blocks = [(first, self._registers[first : last + 1]) for first, last in ranges]
        self._publish(blocks)

    # -- script ----------------------------------------------------------------------------------

    @property
    def pass_counter(self) -> int:
        with self._lock:
            return self._registers[PASS_COUNTER]

    def registers(self) -> list[int]:
        """A copy of all holding registers as the simulator holds them."""
        with self._lock:
            return list(self._registers)

    def begin_pass(self) -> None:
        """A vehicle enters the portal."""
        self._set_status_bits(OCCUPIED, OCCUPIED)

    def end_pass(
        self,
        *,
        gamma_peak: float | None = None,
        neutron_peak: float | None = None,
        gamma_alarm: bool = False,
        neutron_alarm: bool = False,
        fault: bool = False,
        tamper: bool = False,
        speed_kmh: float = 8.0,
    ) -> None:
        """The vehicle leaves: write the pass result, then count the pass and clear occupancy."""
        if gamma_peak is None:
            background = self.gamma_background_cps
            gamma_peak = background + (12 if gamma_alarm else 1) * math.sqrt(background)
        if neutron_peak is None:
            background = self.neutron_background_cps
            neutron_peak = background + (10 if neutron_alarm else 0.5) * math.sqrt(max(background, 1.0))
        result = (
            (RESULT_GAMMA_ALARM if gamma_alarm else 0)
            | (RESULT_NEUTRON_ALARM if neutron_alarm else 0)
            | (RESULT_FAULT if fault else 0)
            | (RESULT_TAMPER if tamper else 0)
        )
        gamma_words = uint32_words(gamma_peak)
        neutron_tenths = uint16(neutron_peak * 10)
        speed_tenths = uint16(speed_kmh * 10)

        def change(registers: list[int]) -> list[tuple[int, int]]:
            registers[LAST_GAMMA_PEAK : LAST_GAMMA_PEAK + 2] = gamma_words
            registers[LAST_NEUTRON_PEAK] = neutron_tenths
            registers[LAST_RESULT] = result
            registers[LAST_SPEED] = speed_tenths
            registers[STATUS] &= ~(OCCUPIED | GAMMA_ALARM | NEUTRON_ALARM) & 0xFFFF
            registers[PASS_COUNTER] = (registers[PASS_COUNTER] + 1) & 0xFFFF
            return [(LAST_GAMMA_PEAK, LAST_SPEED), (STATUS, PASS_COUNTER)]

        self._write(change)

    def set_alarm(self, *, gamma: bool = False, neutron: bool = False) -> None:
        """Set the live alarm bits (a monitor raises them during a pass; end_pass clears them)."""
        bits = (GAMMA_ALARM if gamma else 0) | (NEUTRON_ALARM if neutron else 0)
        self._set_status_bits(GAMMA_ALARM | NEUTRON_ALARM, bits)

    def set_fault(
        self, *, gamma_high: bool = False, gamma_low: bool = False, neutron_high: bool = False
    ) -> None:
        """Set the fault bits to exactly these (no arguments clears every fault)."""
        bits = (
            (GAMMA_HIGH_FAULT if gamma_high else 0)
            | (GAMMA_LOW_FAULT if gamma_low else 0)
            | (NEUTRON_HIGH_FAULT if neutron_high else 0)
        )
        self._set_status_bits(GAMMA_HIGH_FAULT | GAMMA_LOW_FAULT | NEUTRON_HIGH_FAULT, bits)

    def set_tamper(self, tamper: bool) -> None:
        self._set_status_bits(TAMPER, TAMPER if tamper else 0)

    def _set_status_bits(self, mask: int, bits: int) -> None:
        def change(registers: list[int]) -> list[tuple[int, int]]:
            registers[STATUS] = (registers[STATUS] & ~mask & 0xFFFF) | bits
            return [(STATUS, STATUS)]

        self._write(change)


def register_cli(subparsers: Any) -> None:
    """Add the ``rpm-modbus`` subcommand to ``gated-sim``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "rpm-modbus", help="a radiation portal monitor on Modbus TCP"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=port, default=1502, help="TCP port (0: pick a free one)")
    parser.add_argument("--unit", type=MODBUS_UNIT, default=1, help="Modbus unit id (1-247)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--background-cps", type=float, default=250.0, help="gamma background")
    parser.add_argument(
        "--pass-every", type=float, default=0.0, metavar="SECONDS", help="run a pass this often (0: never)"
    )
    parser.add_argument(
        "--alarm-every", type=int, default=0, metavar="N", help="every Nth pass is a gamma alarm (0: never)"
    )
    parser.add_argument("--duration", type=float, default=0.0, help="seconds to run (0: until interrupted)")
    parser.add_argument(
        "--refuse",
        type=int,
        default=None,
        metavar="CODE",
        help="answer polls with this Modbus exception (2: illegal address, 4: device failure)",
    )
    parser.add_argument(
        "--refuse-every", type=int, default=1, metavar="N", help="with --refuse: only every Nth poll"
    )
    parser.set_defaults(func=run_cli)


def run_cli(args: argparse.Namespace) -> int:
    """Serve, running scripted passes, until ``--duration`` ends or the user interrupts."""
    simulator = ModbusRpmSimulator(
        host=args.host,
        port=args.port,
        unit=args.unit,
        seed=args.seed,
        gamma_background_cps=args.background_cps,
    )
    if args.refuse is not None:
        simulator.refuse(args.refuse, every=args.refuse_every)
    simulator.start()
    print(f"rpm-modbus simulator on {simulator.host}:{simulator.port} unit {simulator.unit}", flush=True)
    occupancy = min(args.pass_every / 2, 2.0)
    started = time.monotonic()
    deadline = started + args.duration if args.duration > 0 else math.inf
    next_pass = started + args.pass_every
    passes = 0
    try:
        while time.monotonic() < deadline:
            if simulator.failed:
                print("rpm-modbus: the Modbus server stopped; exiting", file=sys.stderr)
                return 1
            if args.pass_every <= 0 or time.monotonic() < next_pass:
                time.sleep(0.05)
                continue
            next_pass += args.pass_every
            passes += 1
            alarm = args.alarm_every > 0 and passes % args.alarm_every == 0
            simulator.begin_pass()
            time.sleep(occupancy)
            simulator.end_pass(gamma_alarm=alarm)
            print(f"pass {passes}: {'gamma alarm' if alarm else 'clear'}", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        simulator.stop()
    return 0

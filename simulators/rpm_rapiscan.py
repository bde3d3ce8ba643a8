"""A radiation portal monitor speaking the Rapiscan-style line protocol over TCP.

Written from the protocol as the open-source OSCAR / OpenSensorHub Rapiscan driver reads it
(``MessageHandler``, ``SetupGamma1Output``, ``SetupNeutronOutput``, ``SpeedOutput``) and from
recorded monitor streams published with it, not from gated's driver. Every record is one line of
comma-separated ASCII ended by CR LF; counts are zero-padded to six digits, one per detector:

=========================  ====================================================================
``GB,d1,d2,d3,d4``         gamma background, per detector, in counts per second
``GS,d1,d2,d3,d4``         gamma scan sample while occupied: counts of one 200 ms interval
``GA,d1,d2,d3,d4``         a gamma scan sample the monitor found in alarm (sent instead of GS)
``GH`` / ``GL``            gamma high / low background fault (sent instead of GB)
``NB,d1,d2,d3,d4``         neutron background, per detector, counts of one second
``NS`` / ``NA``            neutron scan sample (counts of one second) / the same in alarm
``NH``                     neutron high background fault (sent instead of NB)
``GX,n,nb,0,0``            occupancy end: occupancy count, neutron background in cps x 1000
``SP,t,mph,kmh,0``         speed: seconds between beams, miles and kilometres per hour
``TT,...`` / ``TC,...``    tamper / tamper cleared
``SG1,hi,lo,iv,hold,n,0``  gamma setup: fault levels, intervals, occupancy hold-in, n sigma
``SG2``, ``SG3``           further gamma setup (numbers; not interpreted)
``SN1,hi,iv,a,z,seq,bt``   neutron setup: fault level, max intervals, alpha, z max (integer n
                           of the neutron rule), sequential intervals, background time
``SN2,lld,uld,lld,uld``    neutron discriminator levels
=========================  ====================================================================

The simulator ticks every 200 ms. While the lane is empty it sends GB each tick (a 20 s rolling
background, as the recorded streams show smooth values) and NB once a second (raw one-second
counts). Recorded monitors send background only every 5 s; this one sends more often so a
listener can tell silence from a quiet lane within a second or two. ``drive_pass`` plays one
occupancy: GS each tick, NS once a second, an SP record after one second, then GX. The monitor's
own alarm rule follows OSCAR's threshold: the sum of the last five gamma samples (one second)
over ``GB total + n * sqrt(GB total)``, n from SG1; neutrons: one second's counts over
``NB total + n * sqrt(max(NB total, 1))``, n from SN1's z max.

Counts are Poisson draws from a seeded ``random.Random`` (Knuth's method below a mean of 10,
Hormann's PTRS transformed rejection above: exact, no normal approximation).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from gated.cli.argtypes import port
from simulators.lifecycle import CannotListen, Simulator, listening_socket

TICK_S = 0.2
TICKS_PER_SECOND = 5
DETECTORS = 4
BACKGROUND_WINDOW_TICKS = 100  # the monitor's gamma background: a 20 s rolling mean
MAX_COUNT = 999_999
TAMPER_REPEAT_TICKS = 25
SOURCE_WIDTH_M = 0.9  # spread (one sigma, along the lane) of a point source's count rate


# -- pure generation (no I/O): also used by `gated bench rpm` -----------------------------------


def poisson(rng: random.Random, mean: float) -> int:
    """One exact Poisson draw: Knuth's product method below 10, PTRS (Hormann 1993) from 10 up."""
    if mean <= 0:
        return 0
    if mean < 10:
        limit = math.exp(-mean)
        count, product = 0, rng.random()
        while product > limit:
            count += 1
            product *= rng.random()
        return count
    root = math.sqrt(mean)
    log_mean = math.log(mean)
    b = 0.931 + 2.53 * root
    a = -0.059 + 0.02483 * b
    log_inv_alpha = math.log(1.1239 + 1.1328 / (b - 3.4))
    vr = 0.9277 - 3.6224 / (b - 2)
    while True:
        u = rng.random() - 0.5
        v = rng.random()
        us = 0.5 - abs(u)
        k = math.floor((2 * a / us + b) * u + mean + 0.43)
        if us >= 0.07 and v <= vr:
            return k
        if k < 0 or (us < 0.013 and v > us):
            continue
        if v > 0 and math.log(v) + log_inv_alpha - math.log(a / (us * us) + b) <= (
            -mean + k * log_mean - math.lgamma(k + 1)
        ):
            return k


def bell(
    duration_s: float, speed_kmh: float, times: Iterable[float], width_m: float = SOURCE_WIDTH_M
) -> list[float]:
    """Relative count rate (1 at closest approach, mid-pass) of a point source at ``times`` seconds."""
    spread_s = width_m / max(speed_kmh / 3.6, 0.1)
    middle = duration_s / 2
    return [math.exp(-((t - middle) ** 2) / (2 * spread_s**2)) for t in times]


def pass_means(
    background_cps: float,
    source_cps: float,
    *,
    duration_s: float = 3.0,
    speed_kmh: float = 8.0,
    baseline_depression: float = 0.1,
    norm_cps: float = 0.0,
    interval_s: float = TICK_S,
) -> list[float]:
    """Expected total counts of each ``interval_s`` sample of one pass.

    The vehicle hides ``baseline_depression`` of the background for the whole pass; a NORM cargo
    adds ``norm_cps`` evenly; a point source adds ``source_cps`` (above background, at closest
    approach) shaped as a bell over the pass."""
    count = max(1, round(duration_s / interval_s))
    centres = [(index + 0.5) * interval_s for index in range(count)]
    shape = bell(duration_s, speed_kmh, centres)
    floor = background_cps * (1.0 - baseline_depression) + norm_cps
    return [(floor + source_cps * weight) * interval_s for weight in shape]


def simulate_occupancy(
    rng: random.Random,
    background_cps: float,
    source_cps: float,
    *,
    duration_s: float = 3.0,
    speed_kmh: float = 8.0,
    baseline_depression: float = 0.1,
    norm_cps: float = 0.0,
    interval_s: float = TICK_S,
) -> list[int]:
    """Gross gamma counts (all detectors summed) of each 200 ms sample of one pass; no I/O."""
    means = pass_means(
        background_cps,
        source_cps,
        duration_s=duration_s,
        speed_kmh=speed_kmh,
        baseline_depression=baseline_depression,
        norm_cps=norm_cps,
        interval_s=interval_s,
    )
    return [poisson(rng, mean) for mean in means]


# -- record encoding ----------------------------------------------------------------------------


def _count(value: float) -> str:
    return f"{max(0, min(MAX_COUNT, round(value))):06d}"


def counts_record(tag: str, counts: Iterable[float]) -> bytes:
    return (",".join([tag, *(_count(value) for value in counts)]) + "\r\n").encode("ascii")


def fields_record(tag: str, fields: Iterable[str]) -> bytes:
    return (",".join([tag, *fields]) + "\r\n").encode("ascii")


def speed_record(speed_kmh: float) -> bytes:
    seconds_per_metre = 1.0 / max(speed_kmh / 3.6, 0.01)
    mph = speed_kmh / 1.609344
    return fields_record("SP", [f"{seconds_per_metre:.4f}", f"{mph:06.3f}", f"{speed_kmh:06.2f}", "000000"])


def _split(total: float) -> list[float]:
    return [total / DETECTORS] * DETECTORS


@dataclass
class PlayedPass:
    """One occupancy being played: the records of each tick, and when it has all been sent."""

    ticks: deque[list[bytes]]
    done: threading.Event
    gamma_alarm: bool
    neutron_alarm: bool


class RapiscanRpmSimulator(Simulator):
    """A portal monitor serving the line protocol on ``host:port`` to every connected client.

    Port 0 picks a free port when started; ``.port`` keeps it across stop/start."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
        background_cps: float = 1500.0,
        neutron_background_cps: float = 2.0,
        gamma_n_sigma: float = 4.0,
        neutron_n_sigma: int = 4,
        occupancy_count: int = 0,
    ) -> None:
        self.host = host
        self.port = port
        self.background_cps = background_cps
        self.neutron_background_cps = neutron_background_cps
        self.gamma_n_sigma = gamma_n_sigma
        self.neutron_n_sigma = neutron_n_sigma
        self.occupancy_count = occupancy_count
        self.passes: list[PlayedPass] = []
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._clients: list[socket.socket] = []
        self._server: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._tick = 0
        self._gamma_window: deque[float] = deque(
            [background_cps * TICK_S] * BACKGROUND_WINDOW_TICKS, maxlen=BACKGROUND_WINDOW_TICKS
        )
        self._faults = {"GH": False, "GL": False, "NH": False}
        self._tamper = False
        self._silent = False
        self._queued: list[bytes] = []
        self._current: PlayedPass | None = None
        self._pending: deque[PlayedPass] = deque()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Listen and start ticking; returns when clients can connect. Safe to call twice."""
        with self._lock:
            if self._server is not None:
                return
            try:
                server = listening_socket(self.host, self.port, timeout=0.1)
            except OSError as error:
                raise CannotListen(
                    f"RPM simulator cannot listen on {self.host}:{self.port}: {error.strerror or error}"
                ) from error
            self.port = server.getsockname()[1]
            self._server = server
            self._stop = threading.Event()
            self._threads = [
                threading.Thread(target=self._accept, args=(server, self._stop), daemon=True),
                threading.Thread(target=self._ticker, args=(self._stop,), daemon=True),
            ]
            for thread in self._threads:
                thread.name = f"rpm-rapiscan-sim-{self.port}"
                thread.start()

    def stop(self) -> None:
        """Stop ticking and close the listener and every client. Safe to call twice."""
        with self._lock:
            server, self._server = self._server, None
            threads, self._threads = self._threads, []
            self._stop.set()
            clients, self._clients = self._clients, []
        for thread in threads:
            thread.join(timeout=10)
        if server is not None:
            server.close()
        for client in clients:
            _close(client)

    @property
    def clients(self) -> int:
        with self._lock:
            return len(self._clients)

    def _accept(self, server: socket.socket, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.settimeout(2.0)
            with self._lock:
                if stop.is_set():
                    _close(client)
                    return
                self._clients.append(client)
                greeting = [
                    *self._setup_records(),
                    fields_record("TT" if self._tamper else "TC", ["000000"] * 4),
                ]
                self._send_to([client], b"".join(greeting))

    def _ticker(self, stop: threading.Event) -> None:
        next_tick = time.monotonic()
        while not stop.is_set():
            next_tick += TICK_S
            delay = next_tick - time.monotonic()
            if delay > 0:
                if stop.wait(delay):
                    return
            else:
                next_tick = time.monotonic()  # late (busy machine): do not burst to catch up
            with self._lock:
                data = b"".join(self._tick_records())
                if not self._silent:
                    self._send_to(list(self._clients), data)

    # -- one tick --------------------------------------------------------------------------------

    def _setup_records(self) -> list[bytes]:
        return [
            fields_record(
                "SG1", ["000600", "000050", "000005", "000002", f"{self.gamma_n_sigma:05.2f}", "000000"]
            ),
            fields_record("SG2", ["000000", "000000", "000000", "000000"]),
            fields_record("SG3", ["000000", "000000", "000000", "000000"]),
            fields_record(
                "SN1", ["000050", "000005", "000000", f"{self.neutron_n_sigma:06d}", "000001", "000020"]
            ),
            fields_record("SN2", ["0.1000", "5.0000", "0.1000", "5.0000"]),
        ]

    def _tick_records(self) -> list[bytes]:
        self._tick += 1
        records, self._queued = self._queued, []
        if self._tamper and self._tick % TAMPER_REPEAT_TICKS == 0:
            records.append(fields_record("TT", ["000000"] * 4))
        if self._current is None and self._pending:
            self._current = self._pending.popleft()
        if self._current is not None:
            records.extend(self._current.ticks.popleft())
            records.extend(self._fault_records())
            if not self._current.ticks:
                self._current.done.set()
                self._current = None
            return records
        gamma = poisson(self._rng, self.background_cps * TICK_S)
        self._gamma_window.append(gamma)
        if self._faults["GH"] or self._faults["GL"]:
            records.extend(self._fault_records())
        else:
            records.append(counts_record("GB", _split(self.gamma_background_estimate())))
        if self._tick % TICKS_PER_SECOND == 0:
            if self._faults["NH"]:
                records.extend(self._fault_records(neutron=True))
            else:
                neutron = [
                    poisson(self._rng, self.neutron_background_cps / DETECTORS) for _ in range(DETECTORS)
                ]
                records.append(counts_record("NB", neutron))
        return records

    def _fault_records(self, *, neutron: bool | None = None) -> list[bytes]:
        records = []
        if neutron is not True:
            if self._faults["GH"]:
                records.append(counts_record("GH", _split(self.background_cps * 20)))
            if self._faults["GL"]:
                records.append(counts_record("GL", _split(self.background_cps * 0.01)))
        if neutron is not False and self._faults["NH"]:
            records.append(counts_record("NH", _split(max(self.neutron_background_cps, 1.0) * 50)))
        return records

    def gamma_background_estimate(self) -> float:
        """The monitor's own gamma background in cps: the rolling mean of its last 20 s."""
        with self._lock:
            return sum(self._gamma_window) / (len(self._gamma_window) * TICK_S)

    def _send_to(self, clients: list[socket.socket], data: bytes) -> None:
        if not data:
            return
        for client in clients:
            try:
                client.sendall(data)
            except OSError:
                with contextlib.suppress(ValueError):
                    self._clients.remove(client)
                _close(client)

    # -- script ----------------------------------------------------------------------------------

    def drive_pass(
        self,
        duration_s: float = 3.0,
        source_cps: float = 0.0,
        neutron_source_cps: float = 0.0,
        norm_cps: float = 0.0,
        speed_kmh: float = 8.0,
        baseline_depression: float = 0.1,
        *,
        wait: bool = True,
        timeout: float = 60.0,
    ) -> PlayedPass:
        """Play one occupancy; with ``wait`` return once its GX record has been sent.

        ``source_cps`` is the gamma rate a point source adds at closest approach, above
        background, all detectors together; ``neutron_source_cps`` likewise for neutrons."""
        with self._lock:
            played = self._plan_pass(
                duration_s, source_cps, neutron_source_cps, norm_cps, speed_kmh, baseline_depression
            )
            self._pending.append(played)
            self.passes.append(played)
        if wait and not played.done.wait(timeout):
            raise TimeoutError(f"the pass was not sent within {timeout} s (is the simulator started?)")
        return played

    def _plan_pass(
        self,
        duration_s: float,
        source_cps: float,
        neutron_source_cps: float,
        norm_cps: float,
        speed_kmh: float,
        baseline_depression: float,
    ) -> PlayedPass:
        gamma_means = pass_means(
            self.background_cps,
            source_cps,
            duration_s=duration_s,
            speed_kmh=speed_kmh,
            baseline_depression=baseline_depression,
            norm_cps=norm_cps,
        )
        ticks = len(gamma_means)
        neutron_shape = bell(duration_s, speed_kmh, [(i + 0.5) * TICK_S for i in range(ticks)])
        background = self.gamma_background_estimate()
        threshold = background + self.gamma_n_sigma * math.sqrt(max(background, 1.0))
        neutron_background = self.neutron_background_cps
        neutron_threshold = neutron_background + self.neutron_n_sigma * math.sqrt(
            max(neutron_background, 1.0)
        )
        totals: list[int] = []
        plan: deque[list[bytes]] = deque()
        gamma_alarm = neutron_alarm = False
        for index, mean in enumerate(gamma_means):
            detectors = [poisson(self._rng, share) for share in _split(mean)]
            totals.append(sum(detectors))
            in_alarm = len(totals) >= TICKS_PER_SECOND and sum(totals[-TICKS_PER_SECOND:]) > threshold
            gamma_alarm |= in_alarm
            records = [counts_record("GA" if in_alarm else "GS", detectors)]
            if index % TICKS_PER_SECOND == 0:
                block = neutron_shape[index : index + TICKS_PER_SECOND]
                neutron_mean = neutron_background * (1.0 - baseline_depression) + neutron_source_cps * (
                    sum(block) / len(block)
                )
                neutrons = [poisson(self._rng, share) for share in _split(neutron_mean)]
                neutron_in_alarm = sum(neutrons) > neutron_threshold
                neutron_alarm |= neutron_in_alarm
                records.insert(0, counts_record("NA" if neutron_in_alarm else "NS", neutrons))
            if index == TICKS_PER_SECOND:
                records.append(speed_record(speed_kmh))
            plan.append(records)
        self.occupancy_count = (self.occupancy_count + 1) % (MAX_COUNT + 1)
        gx = fields_record(
            "GX", [_count(self.occupancy_count), _count(neutron_background * 1000), "000000", "000000"]
        )
        plan[-1].append(gx)
        return PlayedPass(
            ticks=plan, done=threading.Event(), gamma_alarm=gamma_alarm, neutron_alarm=neutron_alarm
        )

    def set_fault(
        self, *, gamma_high: bool = False, gamma_low: bool = False, neutron_high: bool = False
    ) -> None:
        """Set the faults to exactly these (no arguments clears them); GH/GL/NH replace GB/NB."""
        with self._lock:
            self._faults = {"GH": gamma_high, "GL": gamma_low, "NH": neutron_high}

    def set_tamper(self, tamper: bool) -> None:
        """Open (True) or close the cabinet: TT now and every 5 s while open, TC once when closed."""
        with self._lock:
            if tamper != self._tamper:
                self._queued.append(fields_record("TT" if tamper else "TC", ["000000"] * 4))
            self._tamper = tamper

    def set_silent(self, silent: bool) -> None:
        """Keep connections open but send nothing (a hung monitor)."""
        with self._lock:
            self._silent = silent

    def set_gamma_n_sigma(self, n_sigma: float) -> None:
        """Change the monitor's gamma n and announce it with fresh setup records."""
        with self._lock:
            self.gamma_n_sigma = n_sigma
            self._queued.extend(self._setup_records())

    def send_raw(self, data: bytes) -> None:
        """Send these bytes to every client now, as they are (for malformed-input tests)."""
        with self._lock:
            self._send_to(list(self._clients), data)


def _close(client: socket.socket) -> None:
    with contextlib.suppress(OSError):
        client.shutdown(socket.SHUT_RDWR)
    client.close()


def register_cli(subparsers: Any) -> None:
    """Add the ``rpm-rapiscan`` subcommand to ``gated-sim``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "rpm-rapiscan", help="a radiation portal monitor on the Rapiscan line protocol (TCP)"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=port, default=1600, help="TCP port (0: pick a free one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--background-cps", type=float, default=1500.0, help="gamma background, all detectors"
    )
    parser.add_argument(
        "--pass-every", type=float, default=0.0, metavar="SECONDS", help="start a pass this often (0: never)"
    )
    parser.add_argument(
        "--source-every",
        type=int,
        default=0,
        metavar="N",
        help="every Nth pass carries a gamma source (0: never)",
    )
    parser.add_argument(
        "--source-cps", type=float, default=5000.0, help="source strength at closest approach"
    )
    parser.add_argument("--duration", type=float, default=0.0, help="seconds to run (0: until interrupted)")
    parser.set_defaults(func=run_cli)


def run_cli(args: argparse.Namespace) -> int:
    """Serve, running scripted passes, until ``--duration`` ends or the user interrupts."""
    simulator = RapiscanRpmSimulator(
        host=args.host, port=args.port, seed=args.seed, background_cps=args.background_cps
    )
    simulator.start()
    print(f"rpm-rapiscan simulator on {simulator.host}:{simulator.port}", flush=True)
    started = time.monotonic()
    deadline = started + args.duration if args.duration > 0 else math.inf
    next_pass = started + args.pass_every
    passes = 0
    try:
        while time.monotonic() < deadline:
            if args.pass_every <= 0 or time.monotonic() < next_pass:
                time.sleep(0.05)
                continue
            passes += 1
            source = args.source_every > 0 and passes % args.source_every == 0
            played = simulator.drive_pass(
                duration_s=min(3.0, max(args.pass_every / 2, 0.4)),
                source_cps=args.source_cps if source else 0.0,
            )
            verdict = (
                "gamma alarm" if played.gamma_alarm else "neutron alarm" if played.neutron_alarm else "clear"
            )
            print(f"pass {passes}: {'source' if source else 'no source'}, monitor says {verdict}", flush=True)
            next_pass = max(next_pass + args.pass_every, time.monotonic())
    except KeyboardInterrupt:
        pass
    finally:
        simulator.stop()
    return 0

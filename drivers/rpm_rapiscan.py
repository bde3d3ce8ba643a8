"""Radiation portal monitors speaking the Rapiscan-style line protocol over TCP.

The record layout follows the open-source OSCAR / OpenSensorHub Rapiscan driver (its
``MessageHandler`` and setup/speed outputs) and the recorded monitor streams published with it.
One record per line, comma-separated ASCII, ended by CR, LF or both:

=========================  ====================================================================
``GB,d1,d2,d3,d4``         gamma background per detector, counts per second
``GS,d1,d2,d3,d4``         gamma scan sample (occupied): counts of one 200 ms interval
``GA,d1,d2,d3,d4``         a gamma scan sample in alarm (the monitor sends it instead of GS)
``GH`` / ``GL``            gamma high / low background fault, four counts
``NB,d1,d2,d3,d4``         neutron background per detector, counts of one second
``NS`` / ``NA``            neutron scan sample, counts of ``neutron_interval_s`` (one second in
                           the recorded streams) / the same in alarm
``NH``                     neutron high background fault
``GX,n,nb,0,0``            occupancy end: occupancy count, neutron background in cps x 1000
``SP,t,mph,kmh,0``         vehicle speed
``TT`` / ``TC``            tamper / tamper cleared (four fields, not interpreted)
``SG1,hi,lo,iv,hold,n,x``  gamma setup; field 5 is the monitor's n sigma
``SG2``, ``SG3``, ``SN2``  further setup (numbers, kept but not interpreted)
``SN1,hi,iv,a,z,seq,bt``   neutron setup; field 4 (z max) is read as the neutron rule's n
=========================  ====================================================================

Records of other tags (monitors send more, e.g. ``AS``/``AX`` on some models) parse when well
formed and are ignored. Recorded monitors send background only every 5 s while the lane is empty;
``silence_timeout`` must then be set above 5 s.

Three parts: ``parse_record()`` (pure; anything malformed raises ``ProtocolError``), the
``OccupancyTracker`` state machine (pure; records in, readings out), and ``RapiscanRpmDriver``,
the TCP connector.

Besides the monitor's own verdict (``screening``), every pass gets gated's own check
(``screening_check``, from ``gated.radiation``): the one-second sums of the gamma samples and the
neutron samples against the background taken before the pass (a vehicle shields background, so
the pass itself cannot give it). When the two disagree the check is ``uncertain``.
"""

from __future__ import annotations

import logging
import re
import socket
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field

from drivers.base import BoundedQueue, Driver
from gated.clock import Clock
from gated.errors import DeviceUnavailable, ProtocolError
from gated.model import Kind, Quality, Reading, ScreeningVerdict, Source
from gated.radiation import SAMPLE_INTERVAL_S, OccupancyResult, analyse_occupancy
from gated.settings import DeviceSettings, Host

log = logging.getLogger(__name__)

COUNT_TAGS = frozenset({"GB", "GS", "GA", "GH", "GL", "NB", "NS", "NA", "NH", "GX", "TT", "TC"})
DECIMAL_FIELDS = {"SP": (4, 4), "SG1": (6, 6), "SG2": (1, 8), "SG3": (1, 8), "SN1": (6, 6), "SN2": (4, 4)}
FAULT_NAMES = {"GH": "gamma_high_fault", "GL": "gamma_low_fault", "NH": "neutron_high_fault"}
MAX_LINE = 256
READ_CHUNK = 4096
MAX_LINES = READ_CHUNK
"""Most lines held between steps (one read's worth); more are refused and counted."""
MAX_PASS_SAMPLES = 9000
"""Most gamma (and neutron) samples kept for one pass: 30 minutes of 200 ms samples. Later ones are
counted in ``samples_refused`` and the pass goes unchecked by gated (the monitor's verdict stands)."""

_COUNT = re.compile(r"[0-9]{1,9}")
_DECIMAL = re.compile(r" *[-+]?[0-9]{1,9}(\.[0-9]{1,9})?")
_TAG = re.compile(r"[A-Z][A-Z0-9]{1,3}")
_OTHER_FIELD = re.compile(r"[ -+\--~]{0,32}")  # printable ASCII without the comma


@dataclass(frozen=True, slots=True)
class RpmRecord:
    """One line of the protocol. ``values`` are the numbers after the tag (empty for unknown tags)."""

    tag: str
    values: tuple[float, ...]

    @property
    def counts(self) -> tuple[int, ...]:
        return tuple(int(value) for value in self.values)

    @property
    def known(self) -> bool:
        return self.tag in COUNT_TAGS or self.tag in DECIMAL_FIELDS


def parse_record(line: bytes) -> RpmRecord:
    """Decode one record (without or with its line end). Raises ``ProtocolError`` for anything else."""
    if len(line) > MAX_LINE:
        raise ProtocolError(f"record of {len(line)} bytes is longer than {MAX_LINE}")
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError as error:
        raise ProtocolError(f"record is not ASCII: {line[:40]!r}") from error
    text = text.rstrip("\r\n")
    if not text:
        raise ProtocolError("empty record")
    tag, *fields = text.split(",")
    if not _TAG.fullmatch(tag):
        raise ProtocolError(f"bad record tag in {text[:40]!r}")
    if tag in COUNT_TAGS:
        if len(fields) != 4 or not all(_COUNT.fullmatch(item) for item in fields):
            raise ProtocolError(f"{tag} record needs four counts: {text[:60]!r}")
        return RpmRecord(tag, tuple(float(int(item)) for item in fields))
    if tag in DECIMAL_FIELDS:
        least, most = DECIMAL_FIELDS[tag]
        if not least <= len(fields) <= most or not all(_DECIMAL.fullmatch(item) for item in fields):
            raise ProtocolError(f"{tag} record needs {least}..{most} numbers: {text[:60]!r}")
        return RpmRecord(tag, tuple(float(item) for item in fields))
    if len(fields) > 16 or not all(_OTHER_FIELD.fullmatch(item) for item in fields):
        raise ProtocolError(f"malformed {tag} record: {text[:60]!r}")
    return RpmRecord(tag, ())


@dataclass
class _Occupancy:
    gamma: list[int] = field(default_factory=list)
    neutron: list[int] = field(default_factory=list)
    gamma_alarm: bool = False
    neutron_alarm: bool = False
    faults: set[str] = field(default_factory=set)
    tamper: bool = False
    speed_kmh: float | None = None
    gamma_background_cps: float | None = None
    neutron_background_cps: float | None = None
    refused: int = 0  # samples beyond MAX_PASS_SAMPLES


class OccupancyTracker:
    """Turns records into readings: background, occupancy, faults, tamper and the pass result."""

    def __init__(
        self,
        lane: str,
        device: str,
        clock: Clock,
        *,
        n_sigma: float = 5.0,
        window_s: float = 1.0,
        neutron_interval_s: float = 1.0,
        gamma_background_records: int = 5,
        neutron_background_records: int = 30,
    ) -> None:
        self.lane = lane
        self.device = device
        self.clock = clock
        self.n_sigma = n_sigma
        self.window = max(1, round(window_s / SAMPLE_INTERVAL_S))
        self.neutron_interval_s = neutron_interval_s
        self._gamma_background: deque[int] = deque(maxlen=gamma_background_records)
        self._neutron_background: deque[int] = deque(maxlen=neutron_background_records)
        self._occupancy: _Occupancy | None = None
        self._faults: set[str] = set()
        self._reported_faults: tuple[str, ...] | None = None
        self._tamper: bool | None = None
        self.device_gamma_n_sigma: float | None = None
        self.device_neutron_n_sigma: float | None = None
        self.samples_refused = 0

    @property
    def occupied(self) -> bool:
        return self._occupancy is not None

    def reset(self) -> list[Reading]:
        """A new connection: forget the background; a pass cut short ends as not screened."""
        self._gamma_background.clear()
        self._neutron_background.clear()
        occupancy, self._occupancy = self._occupancy, None
        if occupancy is None:
            return []
        out = _Out(self)
        out.add(Source.OCCUPANCY, False)
        out.add(Source.SCREENING, str(ScreeningVerdict.FAULT), Quality.BAD)
        out.add(
            Source.SCREENING_CHECK,
            {
                "verdict": "unchecked",
                "device_verdict": str(ScreeningVerdict.FAULT),
                "agrees": False,
                "detail": "the connection to the monitor broke during the pass",
            },
            Quality.BAD,
        )
        return out.readings

    def feed(self, record: RpmRecord) -> list[Reading]:
        out = _Out(self)
        tag = record.tag
        occupancy = self._occupancy
        if tag == "GB":
            self._faults -= {"GH", "GL"}
            if occupancy is None:
                self._gamma_background.append(sum(record.counts))
        elif tag == "NB":
            self._faults.discard("NH")
            if occupancy is None:
                self._neutron_background.append(sum(record.counts))
        elif tag in FAULT_NAMES:
            self._faults.add(tag)
            if occupancy is not None:
                occupancy.faults.add(tag)
        elif tag in ("GS", "GA", "NS", "NA"):
            if occupancy is None:
                occupancy = self._begin(out)
            samples = occupancy.gamma if tag[0] == "G" else occupancy.neutron
            if len(samples) < MAX_PASS_SAMPLES:
                samples.append(sum(record.counts))
            else:
                self._refuse_sample(occupancy)
            if tag[0] == "G":
                occupancy.gamma_alarm |= tag == "GA"
            else:
                occupancy.neutron_alarm |= tag == "NA"
        elif tag == "GX":
            if occupancy is None:
                log.debug("%s/%s: occupancy end without a pass", self.lane, self.device)
            else:
                self._end(out, occupancy, record)
        elif tag in ("TT", "TC"):
            tamper = tag == "TT"
            if occupancy is not None and tamper:
                occupancy.tamper = True
            if tamper != self._tamper:
                self._tamper = tamper
                out.add(Source.TAMPER, tamper, Quality.BAD if tamper else Quality.GOOD)
        elif tag == "SP":
            if occupancy is not None:
                occupancy.speed_kmh = record.values[2]
        elif tag == "SG1":
            self.device_gamma_n_sigma = record.values[4]
        elif tag == "SN1":
            self.device_neutron_n_sigma = record.values[3]
        faults = tuple(sorted(FAULT_NAMES[tag] for tag in self._faults))
        if faults != self._reported_faults and (faults or self._reported_faults is not None):
            self._reported_faults = faults
            out.add(Source.FAULT, ",".join(faults), Quality.BAD if faults else Quality.GOOD)
        return out.readings

    def _begin(self, out: _Out) -> _Occupancy:
        occupancy = _Occupancy(
            faults=set(self._faults),
            tamper=bool(self._tamper),
            gamma_background_cps=_mean(self._gamma_background),
            neutron_background_cps=_mean(self._neutron_background),
        )
        self._occupancy = occupancy
        out.add(Source.OCCUPANCY, True)
        return occupancy

    def _refuse_sample(self, occupancy: _Occupancy) -> None:
        if not occupancy.refused:
            log.warning(
                "%s/%s: pass longer than %d samples: later samples are not kept and gated does not check it",
                self.lane,
                self.device,
                MAX_PASS_SAMPLES,
            )
        occupancy.refused += 1
        self.samples_refused += 1

    def _end(self, out: _Out, occupancy: _Occupancy, gx: RpmRecord) -> None:
        self._occupancy = None
        if occupancy.neutron_background_cps is None:
            occupancy.neutron_background_cps = gx.values[1] / 1000.0
        if occupancy.faults or occupancy.tamper:
            device = ScreeningVerdict.FAULT
        elif occupancy.gamma_alarm:
            device = ScreeningVerdict.GAMMA_ALARM
        elif occupancy.neutron_alarm:
            device = ScreeningVerdict.NEUTRON_ALARM
        else:
            device = ScreeningVerdict.CLEAR
        quality = Quality.BAD if device is ScreeningVerdict.FAULT else Quality.GOOD
        gamma = neutron = None
        if occupancy.gamma_background_cps is not None:
            gamma = analyse_occupancy(
                occupancy.gamma,
                occupancy.gamma_background_cps * SAMPLE_INTERVAL_S,
                self.n_sigma,
                window=self.window,
            )
        neutron = analyse_occupancy(
            occupancy.neutron, occupancy.neutron_background_cps * self.neutron_interval_s, self.n_sigma
        )
        out.add(Source.OCCUPANCY, False)
        gamma_peak = _peak_cps(gamma, SAMPLE_INTERVAL_S) if gamma else _peak_sample_cps(occupancy.gamma)
        out.add(Source.GAMMA_CPS, gamma_peak, quality, "cps")
        if occupancy.gamma_background_cps is not None:
            out.add(Source.GAMMA_BACKGROUND_CPS, occupancy.gamma_background_cps, quality, "cps")
        out.add(Source.NEUTRON_CPS, _peak_cps(neutron, self.neutron_interval_s), quality, "cps")
        out.add(Source.NEUTRON_BACKGROUND_CPS, occupancy.neutron_background_cps, quality, "cps")
        out.add(
            Source.RPM_PROFILE,
            {
                "gamma": list(occupancy.gamma),
                "neutron": list(occupancy.neutron),
                "interval_s": SAMPLE_INTERVAL_S,
                "neutron_interval_s": self.neutron_interval_s,
                "peak_sigma_gamma": round(gamma.peak_sigma, 3) if gamma else None,
                "peak_sigma_neutron": round(neutron.peak_sigma, 3),
                "n_sigma": self.n_sigma,
                "window_samples": self.window,
                "device_n_sigma_gamma": self.device_gamma_n_sigma,
                "device_n_sigma_neutron": self.device_neutron_n_sigma,
            },
            quality,
        )
        if occupancy.speed_kmh is not None:
            out.add(Source.SPEED_KMH, occupancy.speed_kmh, quality, "km/h")
        out.add(Source.SCREENING, str(device), quality)
        out.add(Source.SCREENING_CHECK, *self._check(device, occupancy, gamma, neutron))

    def _check(
        self,
        device: ScreeningVerdict,
        occupancy: _Occupancy,
        gamma: OccupancyResult | None,
        neutron: OccupancyResult,
    ) -> tuple[dict[str, Any], Quality]:
        value: dict[str, Any] = {"device_verdict": str(device), "n_sigma": self.n_sigma}
        if occupancy.refused:
            detail = f"pass longer than {MAX_PASS_SAMPLES} samples: {occupancy.refused} samples not kept"
            value.update(verdict="unchecked", agrees=False, detail=detail)
            return value, Quality.BAD
        if gamma is None:
            value.update(verdict="unchecked", agrees=False, detail="no gamma background before the pass")
            return value, Quality.BAD
        if gamma.alarm:
            own = ScreeningVerdict.GAMMA_ALARM
        elif neutron.alarm:
            own = ScreeningVerdict.NEUTRON_ALARM
        else:
            own = ScreeningVerdict.CLEAR
        value.update(
            verdict=str(own),
            gamma_alarm=gamma.alarm,
            neutron_alarm=neutron.alarm,
            peak_sigma_gamma=round(gamma.peak_sigma, 3),
            peak_sigma_neutron=round(neutron.peak_sigma, 3),
        )
        if device is ScreeningVerdict.FAULT:
            value.update(
                agrees=False, detail="the monitor reported a fault or tamper: its counts are not trusted"
            )
            return value, Quality.BAD
        disagreements = []
        if gamma.alarm != occupancy.gamma_alarm:
            disagreements.append(
                f"gamma: gated {'alarm' if gamma.alarm else 'clear'} at {gamma.peak_sigma:.1f} sigma "
                f"(n {self.n_sigma:g}), monitor {'alarm' if occupancy.gamma_alarm else 'clear'}"
                + (f" (n {self.device_gamma_n_sigma:g})" if self.device_gamma_n_sigma is not None else "")
            )
        if neutron.alarm != occupancy.neutron_alarm:
            disagreements.append(
                f"neutron: gated {'alarm' if neutron.alarm else 'clear'} at {neutron.peak_sigma:.1f} sigma, "
                f"monitor {'alarm' if occupancy.neutron_alarm else 'clear'}"
            )
        value["agrees"] = not disagreements
        if disagreements:
            value["detail"] = "; ".join(disagreements)
            return value, Quality.UNCERTAIN
        return value, Quality.GOOD


class _Out:
    """Collects the readings of one record, all stamped with the same time."""

    def __init__(self, tracker: OccupancyTracker) -> None:
        self.tracker = tracker
        self.ts = tracker.clock.now()
        self.readings: list[Reading] = []

    def add(
        self, source: Source, value: Any, quality: Quality = Quality.GOOD, units: str | None = None
    ) -> None:
        self.readings.append(
            Reading(
                lane=self.tracker.lane,
                kind=Kind.RPM,
                device=self.tracker.device,
                source=source,
                value=value,
                ts=self.ts,
                quality=quality,
                units=units,
            )
        )


def _mean(values: deque[int]) -> float | None:
    return sum(values) / len(values) if values else None


def _peak_cps(result: OccupancyResult, interval_s: float) -> float:
    if not result.profile:
        return 0.0
    return result.peak_counts / (result.window * interval_s)


def _peak_sample_cps(samples: list[int]) -> float:
    return max(samples, default=0) / SAMPLE_INTERVAL_S


class RpmRapiscanDevice(DeviceSettings):
    driver: Literal["rpm-rapiscan"]
    host: Host
    port: int = Field(ge=1, le=65535)
    n_sigma: float = Field(
        5.0, gt=0, le=50, description="gated's own alarm rule: background + n * sqrt(background)."
    )
    silence_timeout_seconds: float = Field(2.0, gt=0, description="Records come every 200 ms.")


class RapiscanRpmDriver(Driver):
    """Reads one RPM's record stream over TCP and reports passes, faults and tamper.

    ``n_sigma`` is gated's own alarm rule (see ``gated.radiation``); the monitor's verdict is
    reported as it is. Silence for ``silence_timeout`` seconds (records normally come every
    200 ms) makes the monitor unavailable; the loop in ``Driver.run`` reconnects."""

    kind = Kind.RPM

    def __init__(
        self,
        lane: str,
        settings: RpmRapiscanDevice,
        *,
        connect_timeout: float = 2.0,
        window_s: float = 1.0,
        neutron_interval_s: float = 1.0,
        clock: Clock | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(lane, settings.id, clock=clock, **kwargs)
        self.host = settings.host
        self.port = settings.port
        self.silence_timeout = settings.silence_timeout_seconds
        self.connect_timeout = connect_timeout
        self.tracker = OccupancyTracker(
            lane,
            settings.id,
            self.clock,
            n_sigma=settings.n_sigma,
            window_s=window_s,
            neutron_interval_s=neutron_interval_s,
        )
        self._socket: socket.socket | None = None
        self._buffer = b""
        self._lines: BoundedQueue[bytes] = BoundedQueue(MAX_LINES)
        self._pending: list[Reading] = []
        self._last_record = 0.0

    @property
    def _where(self) -> str:
        return f"{self.host}:{self.port}"

    def connect(self) -> None:
        self.close()
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        except OSError as error:
            raise DeviceUnavailable(f"{self._where}: cannot connect: {error}") from error
        self._socket = sock
        self._buffer = b""
        self._lines.clear()
        self._pending.extend(self.tracker.reset())
        self._last_record = time.monotonic()

    def close(self) -> None:
        sock, self._socket = self._socket, None
        if sock is not None:
            sock.close()

    def step(self) -> Sequence[Reading]:
        readings, self._pending = self._pending, []
        if not self._lines:
            self._receive()
        while self._lines:
            line = self._lines.take()
            if not line.strip():
                continue
            try:
                record = parse_record(line)
            except ProtocolError as error:
                if readings:  # hand over what this step produced; the error comes next step
                    self._lines.put_back(line)
                    return readings
                raise ProtocolError(f"{self._where}: {error}") from error
            readings.extend(self.tracker.feed(record))
        return readings

    def _receive(self) -> None:
        sock = self._socket
        if sock is None:
            raise DeviceUnavailable(f"{self._where}: not connected")
        remaining = self._last_record + self.silence_timeout - time.monotonic()
        if remaining <= 0:
            raise DeviceUnavailable(f"{self._where}: no record for {self.silence_timeout:g} s")
        sock.settimeout(min(remaining, 0.2))
        try:
            data = sock.recv(READ_CHUNK)
        except TimeoutError:
            return
        except OSError as error:
            raise DeviceUnavailable(f"{self._where}: connection lost: {error}") from error
        if not data:
            raise DeviceUnavailable(f"{self._where}: the monitor closed the connection")
        self._buffer += data
        *complete, self._buffer = re.split(rb"\r\n|\r|\n", self._buffer)
        if complete:
            self._last_record = time.monotonic()
        for line in complete:
            self._lines.put(line)
        if len(self._buffer) > MAX_LINE:
            self._buffer = b""
            raise ProtocolError(f"{self._where}: no line end within {MAX_LINE} bytes")

"""Gate passes on an ESC/POS thermal printer reached over TCP (port 9100, "raw" printing).

A gate pass tells the truck driver what to do next and carries a QR code that the staff at the
exit, the holding area or the inspection bay scan to bring up the visit. Rendering is pure:
``instructions_for`` turns an outcome into the driver's instruction and ``render_pass`` turns a
visit's decisions into a ``GatePass``, a value that can be tested, logged and reprinted. Only
``EscposPrinter.print_pass`` talks to the printer, through python-escpos, and it translates every
error of that library and of the socket into ``DeviceUnavailable`` (the printer cannot be reached or
the connection broke) or ``PrintError`` (the printer was reached but the pass could not be sent).

The QR code is printed natively by the printer (``GS ( k``), so its payload travels as text and is
never rasterised on our side. Its payload is a URI::

    gated:pass?v=<visit>&l=<lane>&c=<container>,<container>&o=<outcome>

with each value percent-encoded (RFC 3986 unreserved characters and ``,`` between containers left
as they are), an unread container written as ``-`` and the outcome the most severe of the visit's
decisions, e.g. ``gated:pass?v=4f1c&l=lane-1&c=MSKU4135329,CSQU3054383&o=SECONDARY_INSPECTION``.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Final, Literal, Self
from urllib.parse import quote

from pydantic import Field

from gated.errors import DeviceUnavailable, PrintError
from gated.model import Decision, Kind, Outcome, Reason, check_identifier
from gated.policy import RADIATION_ALARM, most_severe
from gated.settings import DeviceSettings, DriverContext, Host

if TYPE_CHECKING:
    from escpos.exceptions import DeviceNotFoundError
    from escpos.printer import Network

TITLE: Final = "GATE PASS"
QR_SCHEME: Final = "gated:pass"
UNREAD: Final = "-"
MAX_QR_PAYLOAD: Final = 1000
QR_MODULE_SIZE: Final = 6

_INSTRUCTIONS: Final[Mapping[Outcome, str]] = {
    Outcome.RELEASE: "proceed to exit",
    Outcome.HOLD: "park in the holding area",
    Outcome.SECONDARY_INSPECTION: "proceed to secondary inspection",
    Outcome.MANUAL_REVIEW: "wait: an operator will call you",
}


@dataclass(frozen=True, slots=True)
class GatePass:
    """One gate pass as printed: a title, text lines and the QR code's payload.

    Every character is printable ASCII, so nothing in a pass (a plate as read, an operator's
    instruction) can smuggle a printer command or depend on the printer's code page."""

    title: str
    lines: tuple[str, ...]
    qr_payload: str

    def __post_init__(self) -> None:
        for what, text in (("title", self.title), ("qr_payload", self.qr_payload)):
            if not text:
                raise ValueError(f"gate pass {what} must not be empty")
        for what, text in (
            ("title", self.title),
            ("qr_payload", self.qr_payload),
            *((f"line {index}", line) for index, line in enumerate(self.lines)),
        ):
            bad = [char for char in text if not " " <= char <= "~"]
            if bad:
                raise ValueError(f"gate pass {what} {text!r} holds a character that is not printable ASCII")
        if len(self.qr_payload) > MAX_QR_PAYLOAD:
            raise ValueError(
                f"gate pass QR payload is {len(self.qr_payload)} characters, over {MAX_QR_PAYLOAD}"
            )


def printable(text: str) -> str:
    """``text`` in printable ASCII: accents dropped (``Zürich`` -> ``Zurich``), anything else ``?``."""
    decomposed = unicodedata.normalize("NFKD", text)
    kept = (char for char in decomposed if not unicodedata.combining(char))
    return "".join(char if " " <= char <= "~" else "?" for char in kept)


def instructions_for(
    outcome: Outcome, reasons: Iterable[Reason] = (), places: Mapping[Outcome, str] | None = None
) -> str:
    """What the truck driver must do next, e.g. ``proceed to secondary inspection, bay 3``.

    ``places`` adds where, per outcome (``{Outcome.HOLD: "bay 7", Outcome.SECONDARY_INSPECTION:
    "bay 3"}``); an outcome missing from it gets the bare instruction. A radiation alarm among the
    reasons sends the truck to secondary inspection whatever the outcome says, because an alarm is
    adjudicated there before anything else happens to the truck."""
    if any(reason.code == RADIATION_ALARM for reason in reasons) and outcome is not Outcome.RELEASE:
        outcome = Outcome.SECONDARY_INSPECTION
    where = (places or {}).get(outcome, "").strip()
    text = _INSTRUCTIONS[outcome]
    return f"{text}, {where}" if where else text


def render_pass(
    decisions: Sequence[Decision],
    *,
    lane: str,
    truck: str | None,
    printed_at: datetime,
    instructions: str,
) -> GatePass:
    """The gate pass for one truck from the decisions on its containers (one visit, one lane)."""
    if not decisions:
        raise ValueError("a gate pass needs at least one decision")
    visits = {decision.visit for decision in decisions}
    if len(visits) != 1:
        raise ValueError(f"a gate pass covers one visit, got {sorted(visits)}")
    lanes = {decision.lane for decision in decisions}
    if lanes != {lane}:
        raise ValueError(f"decisions are for lane(s) {sorted(lanes)}, not lane {lane!r}")
    if printed_at.tzinfo is None:
        raise ValueError("printed_at must be timezone-aware")
    if not instructions.strip():
        raise ValueError("a gate pass needs instructions")
    visit = decisions[0].visit
    outcome = most_severe(decisions)
    lines = [
        f"Lane: {lane}",
        f"Time: {printed_at:%Y-%m-%d %H:%M:%S} {printed_at.tzname()}",
        f"Truck: {truck or 'unknown'}",
        f"Visit: {visit}",
        *(f"Container: {decision.container or '(unread)'} {decision.outcome}" for decision in decisions),
        f"Outcome: {outcome}",
        "",
        f"Instructions: {instructions.strip()}",
    ]
    containers = ",".join(_quote(decision.container or UNREAD) for decision in decisions)
    payload = f"{QR_SCHEME}?v={_quote(visit)}&l={_quote(lane)}&c={containers}&o={_quote(str(outcome))}"
    return GatePass(title=TITLE, lines=tuple(printable(line) for line in lines), qr_payload=payload)


def _quote(value: str) -> str:
    return quote(value, safe="")


class PrinterEscposDevice(DeviceSettings):
    driver: Literal["printer-escpos"]
    host: Host
    port: int = Field(9100, ge=1, le=65535)
    timeout_seconds: float = Field(5.0, gt=0, le=60)
    secondary_inspection_place: str | None = Field(None, description='Where to go, e.g. "bay 3".')
    holding_area_place: str | None = Field(None, description='Where held trucks park, e.g. "area B".')

    def places(self) -> dict[Outcome, str]:
        """Where a pass sends the truck, for the outcomes that have a place here."""
        places = {}
        if self.secondary_inspection_place:
            places[Outcome.SECONDARY_INSPECTION] = self.secondary_inspection_place
        if self.holding_area_place:
            places[Outcome.HOLD] = self.holding_area_place
        return places


class EscposPrinter:
    """A lane's ticket printer: an output device that prints ``GatePass`` values.

    Each pass goes out on its own TCP connection (opened, written, cut, closed), as network
    thermal printers expect; a lock keeps two passes from interleaving on one printer."""

    kind: Final = Kind.PRINTER

    @classmethod
    def from_settings(cls, lane: str, settings: PrinterEscposDevice, context: DriverContext) -> Self:
        return cls(lane, settings)

    def __init__(self, lane: str, settings: PrinterEscposDevice, *, qr_size: int = QR_MODULE_SIZE) -> None:
        self.lane = check_identifier("lane", lane)
        self.device = settings.id
        if not settings.host:
            raise ValueError("printer host must not be empty")
        if not 1 <= qr_size <= 16:
            raise ValueError(f"QR module size {qr_size} is outside 1..16")
        self.host = settings.host
        self.port = settings.port
        self.timeout = settings.timeout_seconds
        self.qr_size = qr_size
        self._lock = threading.Lock()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def __repr__(self) -> str:
        return f"EscposPrinter(lane={self.lane!r}, device={self.device!r}, address={self.address!r})"

    def print_pass(self, gate_pass: GatePass) -> None:
        """Print ``gate_pass`` and cut it off.

        Raises ``DeviceUnavailable`` when the printer cannot be reached or the connection breaks,
        ``PrintError`` when python-escpos refuses the pass."""
        # python-escpos (with its capabilities table) loads on the first pass, not with the config.
        from escpos.exceptions import DeviceNotFoundError
        from escpos.exceptions import Error as EscposError
        from escpos.printer import Network

        with self._lock:
            printer = Network(self.host, self.port, timeout=self.timeout)
            try:
                try:
                    printer.open()
                except DeviceNotFoundError as error:
                    raise DeviceUnavailable(
                        f"printer {self.device} at {self.address}: cannot connect: {_cause(error)}"
                    ) from error
                self._send(printer, gate_pass)
            except OSError as error:
                raise DeviceUnavailable(
                    f"printer {self.device} at {self.address}: connection lost while printing: {error}"
                ) from error
            except (EscposError, ValueError, NotImplementedError) as error:
                raise PrintError(f"printer {self.device} at {self.address}: cannot print: {error}") from error
            finally:
                with contextlib.suppress(OSError):
                    printer.close()

    def _send(self, printer: Network, gate_pass: GatePass) -> None:
        printer.hw("INIT")
        printer.set(align="center", bold=True, double_height=True, double_width=True)
        printer.text(f"{gate_pass.title}\n")
        printer.set(align="left", bold=False, normal_textsize=True)
        for line in gate_pass.lines:
            printer.text(f"{line}\n")
        printer.text("\n")
        printer.set(align="center")
        printer.qr(gate_pass.qr_payload, size=self.qr_size, native=True)
        printer.text("\n")
        printer.set(align="left")
        printer.cut()

    def check(self) -> bool:
        """Whether the printer accepts a TCP connection on its port (opened and closed at once)."""
        try:
            with socket.create_connection((self.host, self.port), timeout=self.timeout):
                return True
        except OSError:
            return False


def _cause(error: DeviceNotFoundError) -> str:
    cause = error.__cause__ or error.__context__
    if cause is not None:
        return str(cause) or type(cause).__name__
    return str(error).replace("\n", " ")

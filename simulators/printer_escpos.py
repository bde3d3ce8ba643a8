"""Simulator of a network ESC/POS thermal printer ("raw" TCP printing, port 9100) that reads back
what it was sent.

It decodes the byte stream the way a receipt printer does, from the ESC/POS command descriptions:
printable bytes are text in the selected code page (PC437 until ``ESC t n`` selects another), ``LF``
prints the line, ``GS V`` cuts the paper and so ends a print job. Styles (``ESC @``, ``ESC a``,
``ESC E``, ``ESC !``, ``GS !``, ``ESC M``, ``GS B`` and the like) are parsed and ignored. Of the 2D
codes (``GS ( k pL pH cn fn ...``, ``cn`` 49 for QR), function 180 (``fn`` 80, store data; ``m`` 48
then the data) keeps the payload and function 181 (``fn`` 81) prints it; 165/167/169 (model, module
size, error correction) are accepted. Images (``GS v 0``, ``ESC *``, ``GS ( L``, ``GS 8 L``) and
barcodes are skipped by their declared length. A byte sequence it does not know is recorded as an
error in the job, never raised: the simulator goes on with the next byte, as a printer would.

``parse_escpos`` is the pure decoder; ``EscposPrinterSimulator`` is the TCP server that uses it, one
decoder per connection; ``gated-sim printer-escpos`` runs it and prints each job as it is cut.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from gated.cli.argtypes import port
from simulators.lifecycle import Simulator, listening_socket

HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 9100
MAX_ERRORS: Final = 50

ESC: Final = 0x1B
GS: Final = 0x1D
FS: Final = 0x1C
DLE: Final = 0x10
LF: Final = 0x0A
CR: Final = 0x0D
HT: Final = 0x09
FF: Final = 0x0C
NUL: Final = 0x00
CAN: Final = 0x18

QR_CODE: Final = 49
QR_STORE: Final = 80
QR_PRINT: Final = 81
QR_FUNCTIONS: Final = frozenset({65, 67, 69, 80, 81, 82})

CODE_PAGES: Final = {
    0: "cp437",
    2: "cp850",
    3: "cp860",
    4: "cp863",
    5: "cp865",
    16: "cp1252",
    17: "cp866",
    18: "cp852",
    19: "cp858",
}

# Commands made of a prefix and a fixed number of parameter bytes.
_ESC_FIXED: Final = {
    ord(" "): 1,
    ord("!"): 1,
    ord("$"): 2,
    ord("%"): 1,
    ord("+"): 1,
    ord("-"): 1,
    ord("2"): 0,
    ord("3"): 1,
    ord("<"): 0,
    ord("="): 1,
    ord("?"): 1,
    ord("A"): 1,
    ord("B"): 2,
    ord("E"): 1,
    ord("G"): 1,
    ord("L"): 0,
    ord("M"): 1,
    ord("R"): 1,
    ord("S"): 0,
    ord("T"): 1,
    ord("U"): 1,
    ord("V"): 1,
    ord("W"): 8,
    ord("\\"): 2,
    ord("a"): 1,
    ord("c"): 2,
    ord("e"): 1,
    ord("p"): 3,
    ord("r"): 1,
    ord("u"): 1,
    ord("v"): 0,
    ord("{"): 1,
}
_GS_FIXED: Final = {
    ord("!"): 1,
    ord("$"): 2,
    ord("/"): 1,
    ord(":"): 0,
    ord("B"): 1,
    ord("H"): 1,
    ord("I"): 1,
    ord("L"): 2,
    ord("P"): 2,
    ord("T"): 1,
    ord("W"): 2,
    ord("\\"): 2,
    ord("^"): 3,
    ord("a"): 1,
    ord("b"): 1,
    ord("f"): 1,
    ord("h"): 1,
    ord("r"): 1,
    ord("w"): 1,
    ord("|"): 1,
}
_FS_FIXED: Final = {
    ord("!"): 1,
    ord("&"): 0,
    ord("-"): 1,
    ord("."): 0,
    ord("C"): 1,
    ord("S"): 2,
    ord("W"): 1,
    ord("p"): 2,
}
_CUT_MODES_SHORT: Final = frozenset({0, 1, 48, 49})
_CUT_MODES_FEED: Final = frozenset({65, 66, 97, 98, 103, 104})
_MAX_TERMINATED: Final = 256


@dataclass(frozen=True, slots=True)
class PrintJob:
    """What came out of the printer between two cuts: text lines in order, QR payloads, errors."""

    lines: tuple[str, ...]
    qr_codes: tuple[str, ...]
    errors: tuple[str, ...]
    cut: bool

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


PrintedPass = PrintJob


class _NeedMore(Exception):
    """The buffer ends inside a command: wait for more bytes."""


class EscposParser:
    """An incremental ESC/POS decoder: ``feed`` bytes as they arrive, ``finish`` at end of stream."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._skip = 0
        self._jobs: list[PrintJob] = []
        self._new_job()

    def _new_job(self) -> None:
        self._lines: list[str] = []
        self._line = ""
        self._qr_codes: list[str] = []
        self._qr_data: bytes | None = None
        self._errors: list[str] = []
        self._code_page = CODE_PAGES[0]

    def feed(self, data: bytes) -> list[PrintJob]:
        """Decode ``data``; returns the jobs that a cut completed."""
        self._buffer += data
        self._consume()
        jobs, self._jobs = self._jobs, []
        return jobs

    def finish(self) -> list[PrintJob]:
        """End of stream: returns the jobs completed so far and the uncut rest, if any was printed."""
        self._consume()
        if self._skip or self._buffer:
            missing = f"{self._skip} byte(s) of image or code data" if self._skip else "parameters"
            self._error(f"stream ended inside a command ({missing} missing)")
            self._skip = 0
            self._buffer.clear()
        if self._line:
            self._end_line()
        if self._lines or self._qr_codes or self._errors:
            self._close_job(cut=False)
        jobs, self._jobs = self._jobs, []
        return jobs

    def _consume(self) -> None:
        buffer = self._buffer
        position = 0
        if self._skip:
            taken = min(self._skip, len(buffer))
            self._skip -= taken
            position = taken
        while position < len(buffer) and not self._skip:
            try:
                position = self._step(buffer, position)
            except _NeedMore:
                break
        if self._skip and position > len(buffer):
            self._skip = position - len(buffer)
            position = len(buffer)
        del buffer[:position]

    def _error(self, text: str) -> None:
        if len(self._errors) < MAX_ERRORS:
            self._errors.append(text)
        elif len(self._errors) == MAX_ERRORS:
            self._errors.append("too many errors: the rest of this job's errors were not recorded")

    def _end_line(self) -> None:
        self._lines.append(self._line)
        self._line = ""

    def _flush_line(self) -> None:
        if self._line:
            self._end_line()

    def _close_job(self, *, cut: bool) -> None:
        self._jobs.append(
            PrintJob(
                lines=tuple(self._lines),
                qr_codes=tuple(self._qr_codes),
                errors=tuple(self._errors),
                cut=cut,
            )
        )
        self._new_job()

    def _step(self, buffer: bytearray, position: int) -> int:
        byte = buffer[position]
        if byte >= 0x20:
            end = position
            while end < len(buffer) and buffer[end] >= 0x20:
                end += 1
            self._line += bytes(buffer[position:end]).decode(self._code_page, errors="replace")
            return end
        if byte == LF:
            self._end_line()
            return position + 1
        if byte == HT:
            self._line += "\t"
            return position + 1
        if byte == FF:
            self._flush_line()
            return position + 1
        if byte in (CR, NUL, CAN):
            return position + 1
        if byte == ESC:
            return self._esc(buffer, position)
        if byte == GS:
            return self._gs(buffer, position)
        if byte == FS:
            return self._fixed(buffer, position, _FS_FIXED, "FS")
        if byte == DLE:
            return self._dle(buffer, position)
        self._error(f"unknown control byte 0x{byte:02x}")
        return position + 1

    @staticmethod
    def _need(buffer: bytearray, end: int) -> None:
        if end > len(buffer):
            raise _NeedMore

    def _fixed(self, buffer: bytearray, position: int, table: dict[int, int], prefix: str) -> int:
        self._need(buffer, position + 2)
        command = buffer[position + 1]
        count = table.get(command)
        if count is None:
            self._error(f"unknown command {prefix} {_show(command)}")
            return position + 1
        self._need(buffer, position + 2 + count)
        return position + 2 + count

    def _esc(self, buffer: bytearray, position: int) -> int:
        self._need(buffer, position + 2)
        command = buffer[position + 1]
        if command == ord("@"):
            self._line = ""
            self._code_page = CODE_PAGES[0]
            return position + 2
        if command in (ord("d"), ord("J")):
            self._need(buffer, position + 3)
            self._flush_line()
            return position + 3
        if command == ord("t"):
            self._need(buffer, position + 3)
            page = buffer[position + 2]
            if page in CODE_PAGES:
                self._code_page = CODE_PAGES[page]
            else:
                self._error(f"code page {page} is not supported: PC437 kept")
            return position + 3
        if command in (ord("i"), ord("m")):
            self._cut()
            return position + 2
        if command == ord("D"):
            return self._terminated(buffer, position + 2, "ESC D")
        if command == ord("*"):
            self._need(buffer, position + 5)
            mode = buffer[position + 2]
            columns = buffer[position + 3] + 256 * buffer[position + 4]
            if mode in (0, 1):
                return self._skip_from(position + 5, columns)
            if mode in (32, 33):
                return self._skip_from(position + 5, 3 * columns)
            self._error(f"ESC * bit image mode {mode} is not one of 0, 1, 32, 33")
            return position + 2
        return self._fixed(buffer, position, _ESC_FIXED, "ESC")

    def _gs(self, buffer: bytearray, position: int) -> int:
        self._need(buffer, position + 2)
        command = buffer[position + 1]
        if command == ord("V"):
            return self._gs_cut(buffer, position)
        if command == ord("("):
            return self._gs_paren(buffer, position)
        if command == ord("v"):
            self._need(buffer, position + 8)
            if buffer[position + 2] != ord("0"):
                self._error(f"unknown command GS v {_show(buffer[position + 2])}")
                return position + 2
            width = buffer[position + 4] + 256 * buffer[position + 5]
            height = buffer[position + 6] + 256 * buffer[position + 7]
            return self._skip_from(position + 8, width * height)
        if command == ord("*"):
            self._need(buffer, position + 4)
            return self._skip_from(position + 4, buffer[position + 2] * buffer[position + 3] * 8)
        if command == ord("8"):
            self._need(buffer, position + 7)
            if buffer[position + 2] != ord("L"):
                self._error(f"unknown command GS 8 {_show(buffer[position + 2])}")
                return position + 2
            size = int.from_bytes(buffer[position + 3 : position + 7], "little")
            return self._skip_from(position + 7, size)
        if command == ord("k"):
            self._need(buffer, position + 3)
            kind = buffer[position + 2]
            if kind <= 6:
                return self._terminated(buffer, position + 3, "GS k")
            if 65 <= kind <= 79:
                self._need(buffer, position + 4)
                return self._skip_from(position + 4, buffer[position + 3])
            self._error(f"GS k barcode system {kind} is unknown")
            return position + 3
        return self._fixed(buffer, position, _GS_FIXED, "GS")

    def _gs_cut(self, buffer: bytearray, position: int) -> int:
        self._need(buffer, position + 3)
        mode = buffer[position + 2]
        if mode in _CUT_MODES_SHORT:
            end = position + 3
        elif mode in _CUT_MODES_FEED:
            self._need(buffer, position + 4)
            end = position + 4
        else:
            self._error(f"GS V cut mode {mode} is unknown: not cut")
            return position + 3
        self._cut()
        return end

    def _gs_paren(self, buffer: bytearray, position: int) -> int:
        self._need(buffer, position + 5)
        function = buffer[position + 2]
        size = buffer[position + 3] + 256 * buffer[position + 4]
        start = position + 5
        if function != ord("k"):
            return self._skip_from(start, size)
        self._need(buffer, start + size)
        payload = bytes(buffer[start : start + size])
        self._two_d_code(payload)
        return start + size

    def _two_d_code(self, payload: bytes) -> None:
        if len(payload) < 2:
            self._error(f"GS ( k with {len(payload)} parameter byte(s): cn and fn missing")
            return
        symbol, function = payload[0], payload[1]
        if symbol != QR_CODE:
            return
        if function not in QR_FUNCTIONS:
            self._error(f"GS ( k QR function {function + 100} is unknown")
        elif function == QR_STORE:
            if len(payload) < 3:
                self._error("GS ( k QR store data (function 180) without m")
            else:
                self._qr_data = payload[3:]
        elif function == QR_PRINT:
            if self._qr_data is None:
                self._error("GS ( k QR print (function 181) with no data stored")
            else:
                self._flush_line()
                self._qr_codes.append(self._qr_data.decode("utf-8", errors="replace"))

    def _dle(self, buffer: bytearray, position: int) -> int:
        self._need(buffer, position + 2)
        command = buffer[position + 1]
        if command in (0x04, 0x05):
            self._need(buffer, position + 3)
            return position + 3
        if command == 0x14:
            self._need(buffer, position + 3)
            count = 7 if buffer[position + 2] == 8 else 3
            self._need(buffer, position + 2 + count)
            return position + 2 + count
        self._error(f"unknown command DLE {_show(command)}")
        return position + 1

    def _terminated(self, buffer: bytearray, start: int, name: str) -> int:
        end = buffer.find(NUL, start, start + _MAX_TERMINATED)
        if end >= 0:
            return end + 1
        if len(buffer) - start < _MAX_TERMINATED:
            raise _NeedMore
        self._error(f"{name} data not ended by NUL within {_MAX_TERMINATED} bytes")
        return start

    def _skip_from(self, start: int, count: int) -> int:
        end = start + count
        if end > len(self._buffer):
            self._skip = end - len(self._buffer)
        return end

    def _cut(self) -> None:
        self._flush_line()
        self._close_job(cut=True)


def _show(byte: int) -> str:
    printable = chr(byte) if 0x21 <= byte <= 0x7E else ""
    return f"0x{byte:02x}" + (f" ({printable!r})" if printable else "")


def parse_escpos(data: bytes) -> list[PrintJob]:
    """Every job in ``data``: those a cut ended and, last, an uncut rest that printed something.

    Never raises: what it cannot decode is in the jobs' ``errors``."""
    parser = EscposParser()
    jobs = parser.feed(data)
    return jobs + parser.finish()


class EscposPrinterSimulator(Simulator):
    """A network thermal printer on 127.0.0.1: accepts raw ESC/POS on TCP and keeps decoded jobs."""

    def __init__(
        self,
        port: int = 0,
        *,
        host: str = HOST,
        on_job: Callable[[PrintJob], None] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.on_job = on_job
        self._condition = threading.Condition()
        self._jobs: list[PrintJob] = []
        self._server: socket.socket | None = None
        self._stop = threading.Event()
        self._accept_thread: threading.Thread | None = None
        self._connections = 0

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def jobs(self) -> list[PrintJob]:
        """The jobs printed so far, oldest first (a copy)."""
        with self._condition:
            return list(self._jobs)

    @property
    def connections(self) -> int:
        """How many connections were accepted since start (status probes included)."""
        with self._condition:
            return self._connections

    def clear(self) -> None:
        with self._condition:
            self._jobs.clear()

    def wait_for_jobs(self, count: int, timeout: float = 5.0) -> list[PrintJob]:
        """The jobs once at least ``count`` were printed; ``TimeoutError`` after ``timeout`` seconds."""
        with self._condition:
            if not self._condition.wait_for(lambda: len(self._jobs) >= count, timeout):
                raise TimeoutError(f"{len(self._jobs)} print job(s) after {timeout} s, expected {count}")
            return list(self._jobs)

    def start(self) -> None:
        """Listen and serve; a second call does nothing. After ``stop()`` it listens on the same port."""
        if self._server is not None:
            return
        server = listening_socket(self.host, self.port, timeout=0.1)
        self.port = server.getsockname()[1]
        self._server = server
        self._stop.clear()
        self._accept_thread = threading.Thread(
            target=self._accept_loop, args=(server,), name=f"escpos-accept-{self.port}", daemon=True
        )
        self._accept_thread.start()

    def stop(self) -> None:
        """Stop listening, finish every open connection's job; a second call does nothing."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stop.set()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5.0)
            self._accept_thread = None
        server.close()

    def _accept_loop(self, server: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                client, _address = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(0.1)
            with self._condition:
                self._connections += 1
            # One connection at a time, like a printer's raw port: the next waits in the backlog,
            # so jobs come out in the order they were sent.
            self._serve(client)

    def _serve(self, client: socket.socket) -> None:
        parser = EscposParser()
        try:
            while not self._stop.is_set():
                try:
                    data = client.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if not data:
                    break
                self._add(parser.feed(data))
        finally:
            with contextlib.suppress(OSError):
                client.close()
            self._add(parser.finish())

    def _add(self, jobs: list[PrintJob]) -> None:
        if not jobs:
            return
        with self._condition:
            self._jobs.extend(jobs)
            self._condition.notify_all()
        if self.on_job is not None:
            for job in jobs:
                self.on_job(job)


def register_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``printer-escpos`` subcommand to ``gated-sim``."""
    parser = subparsers.add_parser(
        "printer-escpos",
        help="a network ESC/POS ticket printer that prints what it receives",
        description="Accept raw ESC/POS on TCP like a network thermal printer; print each job's text.",
    )
    parser.add_argument("--host", default=HOST, help=f"address to listen on (default: {HOST})")
    parser.add_argument(
        "--port", type=port, default=DEFAULT_PORT, help=f"TCP port (default: {DEFAULT_PORT}; 0 for any free)"
    )
    parser.add_argument(
        "--duration",
        type=_positive,
        default=None,
        metavar="SECONDS",
        help="stop after this long (default: never)",
    )
    parser.set_defaults(func=run_cli)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} must be positive")
    return value


def show_job(job: PrintJob) -> str:
    """A job as text for people: its lines, its QR payloads and errors, then a cut mark."""
    parts = [*job.lines]
    parts += [f"[QR] {payload}" for payload in job.qr_codes]
    parts += [f"[error] {error}" for error in job.errors]
    parts.append("-" * 8 + (" cut " if job.cut else " not cut ") + "-" * 8)
    return "\n".join(parts)


def run_cli(args: argparse.Namespace) -> int:
    """Serve until ``--duration`` has passed or the process is interrupted."""

    def on_job(job: PrintJob) -> None:
        print(show_job(job), flush=True)

    simulator = EscposPrinterSimulator(args.port, host=args.host, on_job=on_job)
    try:
        simulator.start()
    except OSError as error:
        print(f"printer-escpos: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    print(f"printer-escpos: listening on {args.host}:{simulator.port}", file=sys.stderr, flush=True)
    try:
        if args.duration is None:
            while True:
                time.sleep(3600)
        else:
            time.sleep(args.duration)
    except KeyboardInterrupt:
        pass
    finally:
        simulator.stop()
    return 0

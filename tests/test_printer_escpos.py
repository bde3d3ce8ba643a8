"""Gate passes: the ESC/POS driver against the printer simulator over real TCP, and the decoder
under fuzzing."""

from __future__ import annotations

import argparse
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.printer_escpos import (
    EscposPrinter,
    GatePass,
    PrinterEscposDevice,
    instructions_for,
    render_pass,
)
from gated.errors import DeviceUnavailable
from gated.model import Decision, Outcome, Reason
from simulators.printer_escpos import (
    EscposParser,
    EscposPrinterSimulator,
    PrintJob,
    parse_escpos,
    register_cli,
)
from tests.system import free_port

PRINTED_AT = datetime(2026, 3, 14, 9, 26, 53, tzinfo=UTC)
PLACES = {Outcome.SECONDARY_INSPECTION: "bay 3", Outcome.HOLD: "bay 7"}


def decision(
    container: str | None,
    outcome: Outcome,
    *reasons: Reason,
    visit: str = "visit-0001",
    lane: str = "lane-1",
) -> Decision:
    return Decision(
        lane=lane,
        visit=visit,
        container=container,
        outcome=outcome,
        reasons=reasons or (Reason("CLEAR", "number read, no active hold, radiation screening clear"),),
        holds=(),
        inputs=(),
        decided_at=PRINTED_AT - timedelta(seconds=2),
    )


@pytest.fixture
def simulator() -> Iterator[EscposPrinterSimulator]:
    with EscposPrinterSimulator() as running:
        yield running


def printer_settings(port: int, timeout: float) -> PrinterEscposDevice:
    return PrinterEscposDevice(
        id="printer-1", driver="printer-escpos", host="127.0.0.1", port=port, timeout_seconds=timeout
    )


def printer_for(simulator: EscposPrinterSimulator, lane: str = "lane-1") -> EscposPrinter:
    return EscposPrinter(lane, printer_settings(simulator.port, 2.0))


def only_job(simulator: EscposPrinterSimulator) -> PrintJob:
    jobs = simulator.wait_for_jobs(1, timeout=5.0)
    assert len(jobs) == 1
    return jobs[0]


@pytest.mark.timeout(20)
def test_release_pass_is_printed_with_lane_time_truck_container_instructions_and_qr(
    simulator: EscposPrinterSimulator,
) -> None:
    decisions = [decision("MSKU4135329", Outcome.RELEASE)]
    instructions = instructions_for(Outcome.RELEASE, decisions[0].reasons, PLACES)
    gate_pass = render_pass(
        decisions, lane="lane-1", truck="WA 12345", printed_at=PRINTED_AT, instructions=instructions
    )

    printer_for(simulator).print_pass(gate_pass)

    job = only_job(simulator)
    assert job.cut
    assert job.errors == ()
    assert job.lines[0] == "GATE PASS"
    assert "Lane: lane-1" in job.lines
    assert "Time: 2026-03-14 09:26:53 UTC" in job.lines
    assert "Truck: WA 12345" in job.lines
    assert "Container: MSKU4135329 RELEASE" in job.lines
    assert "Instructions: proceed to exit" in job.lines
    assert job.qr_codes == ("gated:pass?v=visit-0001&l=lane-1&c=MSKU4135329&o=RELEASE",)
    assert job.qr_codes == (gate_pass.qr_payload,)
    assert [line for line in job.lines if line.strip()] == [
        "GATE PASS",
        *(text for text in gate_pass.lines if text),
    ]


@pytest.mark.timeout(20)
def test_secondary_inspection_pass_names_both_containers_and_the_bay(
    simulator: EscposPrinterSimulator,
) -> None:
    alarm = Reason("RADIATION_ALARM", "radiation portal monitor gamma alarm")
    decisions = [
        decision("MSKU4135329", Outcome.SECONDARY_INSPECTION, alarm, visit="v-7", lane="lane-2"),
        decision("CSQU3054383", Outcome.SECONDARY_INSPECTION, alarm, visit="v-7", lane="lane-2"),
    ]
    instructions = instructions_for(Outcome.SECONDARY_INSPECTION, [alarm], PLACES)
    assert instructions == "proceed to secondary inspection, bay 3"
    gate_pass = render_pass(
        decisions, lane="lane-2", truck="B 4711 XY", printed_at=PRINTED_AT, instructions=instructions
    )

    printer_for(simulator, "lane-2").print_pass(gate_pass)

    job = only_job(simulator)
    text = job.text
    assert job.cut and job.errors == ()
    assert "Lane: lane-2" in text
    assert "2026-03-14 09:26:53" in text
    assert "Truck: B 4711 XY" in text
    assert "MSKU4135329" in text and "CSQU3054383" in text
    assert "Outcome: SECONDARY_INSPECTION" in text
    assert "proceed to secondary inspection, bay 3" in text
    assert job.qr_codes == ("gated:pass?v=v-7&l=lane-2&c=MSKU4135329,CSQU3054383&o=SECONDARY_INSPECTION",)


@pytest.mark.timeout(20)
def test_passes_for_two_trucks_come_out_as_two_jobs_in_order(simulator: EscposPrinterSimulator) -> None:
    printer = printer_for(simulator)
    for visit, container in (("v-1", "MSKU4135329"), ("v-2", "BICU1234565")):
        gate_pass = render_pass(
            [decision(container, Outcome.RELEASE, visit=visit)],
            lane="lane-1",
            truck=None,
            printed_at=PRINTED_AT,
            instructions="proceed to exit",
        )
        printer.print_pass(gate_pass)
    jobs = simulator.wait_for_jobs(2, timeout=5.0)
    assert [job.qr_codes[0].split("&")[0] for job in jobs] == ["gated:pass?v=v-1", "gated:pass?v=v-2"]
    assert all("Truck: unknown" in job.lines for job in jobs)


@pytest.mark.timeout(20)
def test_printer_not_listening_is_device_unavailable_naming_host_and_port() -> None:
    port = free_port()
    printer = EscposPrinter("lane-1", printer_settings(port, 1.0))
    gate_pass = render_pass(
        [decision("MSKU4135329", Outcome.RELEASE)],
        lane="lane-1",
        truck=None,
        printed_at=PRINTED_AT,
        instructions="proceed to exit",
    )
    with pytest.raises(DeviceUnavailable, match=f"127.0.0.1:{port}"):
        printer.print_pass(gate_pass)
    assert printer.check() is False


@pytest.mark.timeout(20)
def test_check_probes_the_port_without_printing(simulator: EscposPrinterSimulator) -> None:
    assert printer_for(simulator).check() is True
    deadline = time.monotonic() + 5
    while simulator.connections < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    assert simulator.connections == 1
    assert simulator.jobs == []


@pytest.mark.timeout(20)
def test_simulator_start_and_stop_are_idempotent() -> None:
    simulator = EscposPrinterSimulator()
    simulator.stop()
    simulator.start()
    port = simulator.port
    simulator.start()
    assert simulator.port == port and simulator.running
    simulator.stop()
    simulator.stop()
    assert not simulator.running
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1.0):
        pass


@pytest.mark.timeout(20)
def test_stream_without_cut_is_kept_when_the_connection_closes(simulator: EscposPrinterSimulator) -> None:
    with socket.create_connection(("127.0.0.1", simulator.port), timeout=2.0) as client:
        client.sendall(b"\x1b@hello\nwor")
        client.sendall(b"ld\n\x1bZ")
    job = only_job(simulator)
    assert job.lines == ("hello", "world", "Z")
    assert not job.cut
    assert job.errors and "ESC 0x5a" in job.errors[0]


def test_instructions_for_every_outcome() -> None:
    assert instructions_for(Outcome.RELEASE) == "proceed to exit"
    assert instructions_for(Outcome.HOLD, (), PLACES) == "park in the holding area, bay 7"
    assert instructions_for(Outcome.SECONDARY_INSPECTION) == "proceed to secondary inspection"
    assert instructions_for(Outcome.MANUAL_REVIEW, (), PLACES) == "wait: an operator will call you"


def test_a_radiation_alarm_sends_a_held_truck_to_secondary_inspection_first() -> None:
    alarm = Reason("RADIATION_ALARM", "radiation portal monitor gamma alarm")
    hold = Reason("HOLD_ACTIVE", "active CBP 1H hold on MSKU4135329")
    assert instructions_for(Outcome.HOLD, [hold, alarm], PLACES) == "proceed to secondary inspection, bay 3"
    assert instructions_for(Outcome.HOLD, [hold], PLACES) == "park in the holding area, bay 7"


def test_render_pass_takes_the_most_severe_outcome_and_marks_unread_containers() -> None:
    decisions = [
        decision("MSKU4135329", Outcome.RELEASE),
        decision(None, Outcome.MANUAL_REVIEW, Reason("OCR_UNREAD", "container number could not be read")),
    ]
    gate_pass = render_pass(
        decisions,
        lane="lane-1",
        truck="ZÜRICH\x1b@1",
        printed_at=datetime(2026, 3, 14, 10, 26, 53, tzinfo=timezone(timedelta(hours=1))),
        instructions="wait: an operator will call you",
    )
    assert gate_pass.qr_payload == "gated:pass?v=visit-0001&l=lane-1&c=MSKU4135329,-&o=MANUAL_REVIEW"
    assert "Container: (unread) MANUAL_REVIEW" in gate_pass.lines
    assert "Outcome: MANUAL_REVIEW" in gate_pass.lines
    assert "Truck: ZURICH?@1" in gate_pass.lines
    assert "Time: 2026-03-14 10:26:53 UTC+01:00" in gate_pass.lines


def test_render_pass_refuses_what_is_not_one_truck() -> None:
    kwargs = {"lane": "lane-1", "truck": None, "printed_at": PRINTED_AT, "instructions": "proceed to exit"}
    with pytest.raises(ValueError, match="at least one"):
        render_pass([], **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one visit"):
        render_pass(
            [decision("MSKU4135329", Outcome.RELEASE), decision("CSQU3054383", Outcome.RELEASE, visit="x")],
            **kwargs,  # type: ignore[arg-type]
        )
    with pytest.raises(ValueError, match="timezone"):
        render_pass(
            [decision("MSKU4135329", Outcome.RELEASE)],
            lane="lane-1",
            truck=None,
            printed_at=datetime(2026, 3, 14, 9, 0),
            instructions="proceed to exit",
        )


def test_gate_pass_refuses_printer_control_characters() -> None:
    with pytest.raises(ValueError, match="printable ASCII"):
        GatePass(title="GATE PASS", lines=("Truck: \x1bd\x09",), qr_payload="gated:pass?v=1")


@given(st.binary(max_size=2000), st.integers(1, 64))
@settings(max_examples=300, deadline=None)
def test_parse_escpos_never_raises_and_does_not_depend_on_how_bytes_arrive(data: bytes, chunk: int) -> None:
    whole = parse_escpos(data)
    parser = EscposParser()
    pieces: list[PrintJob] = []
    for start in range(0, len(data), chunk):
        pieces += parser.feed(data[start : start + chunk])
    pieces += parser.finish()
    assert pieces == whole


_TEXT = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
_BYTE = st.integers(0, 255)


@st.composite
def _style_command(draw: st.DrawFn) -> bytes:
    n = draw(_BYTE)
    return draw(
        st.sampled_from(
            [
                b"\x1b@",
                b"\x1ba" + bytes([n % 3]),
                b"\x1bE" + bytes([n % 2]),
                b"\x1b!" + bytes([n]),
                b"\x1d!" + bytes([n]),
                b"\x1bd" + bytes([n % 10]),
                b"\x1bt\x00",
                b"\x1bM" + bytes([n % 2]),
                b"\x1dB" + bytes([n % 2]),
                b"\x1b-" + bytes([n % 3]),
                b"\x1b3" + bytes([n]),
                b"\x1b2",
                b"\r",
            ]
        )
    )


@st.composite
def _raster(draw: st.DrawFn) -> bytes:
    width = draw(st.integers(1, 6))
    height = draw(st.integers(1, 6))
    data = draw(st.binary(min_size=width * height, max_size=width * height))
    return b"\x1dv0\x00" + bytes([width, 0, height, 0]) + data


def _qr(payload: str) -> bytes:
    data = payload.encode("utf-8")

    def k(fn: int, params: bytes) -> bytes:
        size = len(params) + 2
        return b"\x1d(k" + bytes([size % 256, size // 256, 49, fn]) + params

    return k(65, b"2\x00") + k(67, b"\x06") + k(69, b"0") + k(80, b"0" + data) + k(81, b"0")


_ITEM = st.one_of(
    _TEXT.map(lambda text: ("line", text)),
    _style_command().map(lambda command: ("command", command)),
    _raster().map(lambda command: ("command", command)),
    st.text(max_size=60).map(lambda payload: ("qr", payload)),
    st.just(("cut", "")),
)


@given(st.lists(_ITEM, max_size=30))
@settings(max_examples=200, deadline=None)
def test_parse_escpos_recovers_text_lines_and_qr_payloads_between_valid_commands(
    items: list[tuple[str, str | bytes]],
) -> None:
    stream = b""
    lines: list[str] = []
    payloads: list[str] = []
    cuts = 0
    for kind, value in items:
        if kind == "line":
            assert isinstance(value, str)
            stream += value.encode("ascii") + b"\n"
            lines.append(value)
        elif kind == "command":
            assert isinstance(value, bytes)
            stream += value
        elif kind == "qr":
            assert isinstance(value, str)
            stream += _qr(value)
            payloads.append(value)
        else:
            stream += b"\x1dV\x00"
            cuts += 1
    jobs = parse_escpos(stream)
    assert [line for job in jobs for line in job.lines] == lines
    assert [payload for job in jobs for payload in job.qr_codes] == payloads
    assert all(job.errors == () for job in jobs)
    assert sum(job.cut for job in jobs) == cuts


@pytest.mark.timeout(30)
def test_gated_sim_printer_escpos_cli_prints_each_job(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="gated-sim")
    register_cli(parser.add_subparsers(dest="device", required=True))
    port = free_port()
    args = parser.parse_args(["printer-escpos", "--port", str(port), "--duration", "2"])
    assert args.port == port
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(args.func(args)))
    runner.start()
    printer = EscposPrinter("lane-1", printer_settings(port, 1.0))
    deadline = time.monotonic() + 5
    while not printer.check():
        assert time.monotonic() < deadline, "the simulator never listened"
        time.sleep(0.05)
    gate_pass = render_pass(
        [decision("MSKU4135329", Outcome.RELEASE)],
        lane="lane-1",
        truck="WA 12345",
        printed_at=PRINTED_AT,
        instructions="proceed to exit",
    )
    printer.print_pass(gate_pass)
    runner.join(timeout=10)
    assert not runner.is_alive()
    assert result == [0]
    out = capsys.readouterr().out
    assert "Truck: WA 12345" in out
    assert f"[QR] {gate_pass.qr_payload}" in out
    assert "cut" in out
    assert parser.parse_args(["printer-escpos"]).port == 9100

"""`gated-sim` as a newcomer meets it: a wrong value or a busy port is one line and an exit code,
never a traceback, and a simulator stops when it said it would. Each test runs the command in a
child process, as a user types it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulators.lifecycle import CannotListen
from simulators.rpm_modbus import ModbusRpmSimulator
from tests.system import free_port

pytestmark = [pytest.mark.subprocess, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parent.parent


def gated_sim(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``gated-sim ARGS`` (through ``python -m``, so the test uses this checkout's code)."""
    return subprocess.run(
        [sys.executable, "-m", "simulators.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def assert_one_line(done: subprocess.CompletedProcess[str], code: int, *expected: str) -> None:
    """Exit ``code``, no traceback, and the last line of stderr says each of ``expected``."""
    output = done.stdout + done.stderr
    assert done.returncode == code, output
    assert "Traceback" not in output, output
    last = done.stderr.strip().splitlines()[-1]
    for text in expected:
        assert text in last, output


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize(
    ("device", "option"),
    [
        ("camera-frames", "--port"),
        ("rfid-serial", "--tcp-port"),
        ("credential-serial", "--tcp-port"),
        ("rpm-modbus", "--port"),
        ("rpm-rapiscan", "--port"),
        ("barrier-plc", "--port"),
        ("rfid-llrp", "--port"),
    ],
)
def test_a_port_in_use_is_one_line_and_exit_1(busy_port: int, device: str, option: str) -> None:
    done = gated_sim(device, option, str(busy_port), "--duration", "1")
    assert_one_line(done, 1, device, f"127.0.0.1:{busy_port}", "in use")


@pytest.mark.parametrize(
    "args",
    [
        ("camera-frames", "--port", "70000"),
        ("rfid-serial", "--tcp-port", "70000"),
        ("credential-serial", "--tcp-port", "-1"),
        ("rpm-modbus", "--port", "65536"),
        ("rpm-rapiscan", "--port", "70000"),
        ("barrier-plc", "--port", "70000"),
        ("rfid-llrp", "--port", "70000"),
        ("printer-escpos", "--port", "70000"),
        ("ocr-camera", "--port", "70000"),
        ("lane", "--scenario", "x.toml", "--mqtt-port", "70000"),
        ("lane", "--scenario", "x.toml", "--rfid-tcp-port", "70000"),
    ],
)
def test_a_port_out_of_range_is_a_usage_error_naming_the_option(args: tuple[str, ...]) -> None:
    done = gated_sim(*args)
    assert_one_line(done, 2, f"argument {args[-2]}", args[-1], "not a TCP port")


@pytest.mark.parametrize(
    "args",
    [
        ("rpm-modbus", "--unit", "300"),
        ("rpm-modbus", "--unit", "0"),
        ("barrier-plc", "--unit", "248"),
        ("barrier-plc", "--watchdog-ms", "0"),
        ("barrier-plc", "--watchdog-ms", "70000"),
    ],
)
def test_a_value_the_device_cannot_take_is_a_usage_error(args: tuple[str, ...]) -> None:
    done = gated_sim(*args, "--port", "0", "--duration", "1")
    assert_one_line(done, 2, f"argument {args[1]}", args[2])


def test_a_modbus_server_that_cannot_start_is_reported_at_once() -> None:
    # pymodbus refuses this unit id inside the server thread: start() must not wait 30 s for it.
    simulator = ModbusRpmSimulator(port=0, unit=300)
    began = time.monotonic()
    with pytest.raises(CannotListen, match="cannot listen"):
        simulator.start()
    assert time.monotonic() - began < 5


def test_camera_frames_stops_within_a_second_of_its_duration() -> None:
    began = time.monotonic()
    idle = gated_sim("camera-frames", "--port", "0", "--duration", "0")
    startup = time.monotonic() - began  # interpreter, imports and the empty lane's first frame
    assert idle.returncode == 0, idle.stderr
    began = time.monotonic()
    done = gated_sim("camera-frames", "--port", "0", "--duration", "3", timeout=30)
    took = time.monotonic() - began
    assert done.returncode == 0, done.stderr
    assert "truck with" in done.stdout
    assert took < startup + 3 + 1.5, f"took {took:.1f} s for --duration 3 (start-up {startup:.1f} s)"


def output_path_cases(tmp: Path) -> list[tuple[tuple[str, ...], str]]:
    """(command, what its last line must say) for output paths a command cannot use."""
    a_file = tmp / "a-file"
    a_file.write_text("mine\n", encoding="utf-8")
    a_folder = tmp / "a-folder"
    a_folder.mkdir()
    missing = tmp / "missing" / "out"
    scenario = str(ROOT / "config" / "scenarios" / "lane-with-faults.toml")
    return [
        (("camera-frames", "--write-dataset", str(a_file), "--count", "1"), "not a folder"),
        (("camera-frames", "--write-dataset", str(a_file / "sub"), "--count", "1"), "not a folder"),
        (("nii-scanner", "--outbox", str(a_file), "--duration", "1"), "not a folder"),
        (("rfid-serial", "--pty-link", str(a_folder), "--duration", "1"), "is a folder"),
        (("rfid-serial", "--pty-link", str(missing), "--duration", "1"), "does not exist"),
        (("credential-serial", "--pty-link", str(a_file), "--duration", "1"), "not a symlink"),
        (("lane", "--scenario", scenario, "--write-config", str(a_folder)), "is a folder"),
        (("lane", "--scenario", scenario, "--write-config", str(missing)), "does not exist"),
        (("lane", "--scenario", scenario, "--write-config", str(a_file)), "not replacing it"),
    ]


def test_an_output_path_that_cannot_be_used_is_one_line_naming_the_option(tmp_path: Path) -> None:
    for args, problem in output_path_cases(tmp_path):
        done = gated_sim(*args)
        output = done.stdout + done.stderr
        assert done.returncode == 2, (args, output)
        assert "Traceback" not in output, (args, output)
        last = output.strip().splitlines()[-1]
        option = next(
            arg for arg in args if arg in ("--write-dataset", "--outbox", "--pty-link", "--write-config")
        )
        assert option in last or args[args.index(option) + 1] in last, (args, output)
        assert problem in last, (args, output)
    assert (tmp_path / "a-file").read_text(encoding="utf-8") == "mine\n"


def test_the_lane_runs_with_its_rfid_reader_on_tcp(tmp_path: Path) -> None:
    rfid_port = free_port()
    config = tmp_path / "gated.toml"
    lane = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulators.cli",
            "lane",
            "--scenario",
            str(ROOT / "config" / "scenarios" / "lane-with-faults.toml"),
            "--rfid-tcp-port",
            str(rfid_port),
            "--write-config",
            str(config),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert lane.stdout is not None
        first = lane.stdout.readline()
        assert "daemon config written" in first, first + lane.stdout.read()
        assert f'url = "socket://127.0.0.1:{rfid_port}"' in config.read_text(encoding="utf-8")
        with socket.create_connection(("127.0.0.1", rfid_port), timeout=5) as reader:
            reader.settimeout(5)
            assert reader.recv(64), "the RFID simulator sent nothing (not even a heartbeat)"
        assert lane.poll() is None, lane.stdout.read()
        # Its own earlier config may be replaced (the run then stops at the missing scenario).
        again = gated_sim("lane", "--scenario", "missing.toml", "--write-config", str(config))
        assert again.returncode == 78, again.stdout + again.stderr
        assert "not replacing" not in again.stdout
    finally:
        lane.terminate()
        lane.wait(timeout=20)


def gated_demo(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``gated demo ARGS``, as a user types it."""
    return subprocess.run(
        [sys.executable, "-m", "gated", "demo", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_demo_refuses_a_port_out_of_range_and_a_data_dir_that_is_a_file(tmp_path: Path) -> None:
    for option in ("--mqtt-port", "--console-port"):
        assert_one_line(gated_demo(option, "70000"), 2, f"argument {option}", "70000", "not a TCP port")
    a_file = tmp_path / "gated.db"
    a_file.write_text("not a folder\n", encoding="utf-8")
    assert_one_line(gated_demo("--data-dir", str(a_file)), 2, "argument --data-dir", "not a folder")
    assert_one_line(gated_demo("--data-dir", str(a_file / "sub")), 2, "argument --data-dir", "not a folder")

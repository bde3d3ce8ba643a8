"""The barrier as a lease: the PLC simulator's pure program, the driver against the simulator over
real Modbus TCP (grant, revoke, lease, vehicle, health, network cut, restart, a killed process),
and mbpoll as an outside master that cannot open the barrier without heartbeats.

Watchdog closing times are measured with the simulator's own timestamps (when it saw the last
heartbeat change, when the barrier reached closed), never with the test's sleeps."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.barrier_modbus import BarrierModbusDevice, BarrierState, ModbusBarrier, decode
from gated.clock import ManualClock
from gated.errors import ProtocolError
from simulators.barrier_plc import (
    CAUSE_FAULT,
    CAUSE_PERMIT_WITHDRAWN,
    CAUSE_VEHICLE_PASSED,
    CAUSE_WATCHDOG,
    CLOSED,
    CLOSING,
    FAULT,
    OPEN,
    OPENING,
    BarrierPlcSimulator,
    PlcInputs,
    PlcState,
    plc_step,
    register_cli,
)
from tests.system import free_port, require_tool

LANE, DEVICE = "lane-1", "barrier-1"
WAIT = 20.0  # generous: the machine may be busy
WATCHDOG_LIMIT = 2.0  # the requirement: closed within 2 s of the last heartbeat the PLC received
ROOT = Path(__file__).resolve().parents[1]


# -- helpers ---------------------------------------------------------------------------------------


def wait_until(what: str, condition: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def stays(condition: Callable[[], bool], seconds: float) -> bool:
    """True when ``condition`` holds at every check for ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not condition():
            return False
        time.sleep(0.02)
    return condition()


def opened_at(sim: BarrierPlcSimulator) -> float:
    """When the barrier last reached open, by the simulator's clock."""
    return [moment for moment, state in sim.history if state == OPEN][-1]


def openings_since(sim: BarrierPlcSimulator, since: float) -> int:
    return sum(1 for moment, state in sim.history if moment > since and state == OPENING)


def watchdog_close_delay(sim: BarrierPlcSimulator, since: float) -> float:
    """Seconds from the last heartbeat the PLC received to the barrier being closed, after ``since``."""
    history = sim.history
    closing = next(moment for moment, state in history if moment > since and state == CLOSING)
    closed = next(moment for moment, state in history if moment > closing and state == CLOSED)
    beats = [beat for beat in sim.heartbeats if beat <= closing]
    assert beats, "the PLC never received a heartbeat"
    delay = closed - beats[-1]
    print(f"watchdog close delay: {delay:.3f} s")
    return delay


NOTHING_YET = BarrierState("nothing yet", False, 0, 0, "none", online=False)


class StateLog:
    """Collects what the driver reports through ``on_state``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.states: list[BarrierState] = []

    def __call__(self, state: BarrierState) -> None:
        with self._lock:
            self.states.append(state)

    def snapshot(self) -> list[BarrierState]:
        with self._lock:
            return list(self.states)

    def last(self) -> BarrierState:
        """The latest report (a placeholder before the first one)."""
        with self._lock:
            return self.states[-1] if self.states else NOTHING_YET

    def online(self) -> list[bool]:
        """Online flags as they changed, consecutive repeats collapsed."""
        flags: list[bool] = []
        for state in self.snapshot():
            if not flags or flags[-1] != state.online:
                flags.append(state.online)
        return flags


def make_barrier(
    port: int, log: StateLog, *, clock: ManualClock | None = None, unit: int = 1
) -> ModbusBarrier:
    settings = BarrierModbusDevice(
        id=DEVICE, driver="barrier-modbus", host="127.0.0.1", port=port, unit=unit, timeout_seconds=1.0
    )
    return ModbusBarrier(
        LANE,
        settings,
        clock=clock,
        on_state=log,
        backoff_initial=0.05,
        backoff_max=0.5,
    )


@contextmanager
def running(barrier: ModbusBarrier) -> Iterator[ModbusBarrier]:
    barrier.start()
    try:
        yield barrier
    finally:
        barrier.stop()


@contextmanager
def rig(clock: ManualClock | None = None) -> Iterator[tuple[BarrierPlcSimulator, ModbusBarrier, StateLog]]:
    log = StateLog()
    with BarrierPlcSimulator() as sim, running(make_barrier(sim.port, log, clock=clock)) as barrier:
        wait_until("online", lambda: log.last().online)
        yield sim, barrier, log


def open_for(sim: BarrierPlcSimulator, barrier: ModbusBarrier, token: int, lease: float = 60.0) -> float:
    barrier.grant(token, lease)
    wait_until("open", lambda: sim.state() == OPEN)
    return opened_at(sim)


# -- the PLC program, pure -------------------------------------------------------------------------

EVENTS = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=0.7),  # time since the previous event
        st.sampled_from(["tick", "beat", "permit1", "permit0", "vehicle", "fault", "repair", "same-beat"]),
    ),
    max_size=80,
)


@pytest.mark.timeout(120)
@settings(max_examples=400, deadline=None)
@given(events=EVENTS, watchdog_ms=st.integers(min_value=100, max_value=2000))
def test_plc_never_opens_without_permit_and_fresh_heartbeat(
    events: list[tuple[float, str]], watchdog_ms: int
) -> None:
    state = PlcState(watchdog_ms=watchdog_ms, travel_seconds=0.3)
    now, beat, fault = 0.0, 0, False
    for gap, event in events:
        now += gap
        inputs = PlcInputs()
        if event == "beat":
            beat = (beat + 1) & 0xFFFF
            inputs = PlcInputs(heartbeat=beat)
        elif event == "same-beat":
            inputs = PlcInputs(heartbeat=beat)  # a write without a change is not a beat
        elif event in ("permit1", "permit0"):
            inputs = PlcInputs(permit=int(event[-1]), token=7)
        elif event == "vehicle":
            inputs = PlcInputs(vehicle_passed=True)
        elif event in ("fault", "repair"):
            fault = event == "fault"
        before = state
        state = plc_step(state, replace(inputs, fault=fault), now)
        if state.barrier in (OPENING, OPEN):
            assert state.permit == 1
            assert state.last_beat is not None and now - state.last_beat <= watchdog_ms / 1000
        if fault:
            assert state.barrier == FAULT and state.permit == 0
        if event == "vehicle" and before.barrier in (OPENING, OPEN) and not fault:
            assert state.permit == 0 and state.last_cause == CAUSE_VEHICLE_PASSED
        if before.permit == 1 and state.permit == 0 and inputs.permit is None and not fault:
            assert state.last_cause in (CAUSE_WATCHDOG, CAUSE_VEHICLE_PASSED)


@pytest.mark.timeout(60)
@settings(max_examples=200, deadline=None)
@given(beats=st.integers(min_value=1, max_value=20), watchdog_ms=st.integers(min_value=100, max_value=2000))
def test_plc_closes_by_itself_when_beats_stop(beats: int, watchdog_ms: int) -> None:
    """Scanned every 50 ms, an open barrier is closed within watchdog + travel + one scan."""
    state = PlcState(watchdog_ms=watchdog_ms, travel_seconds=0.3)
    now = 0.0
    state = plc_step(state, PlcInputs(heartbeat=1, permit=1, token=3), now)
    for beat in range(2, beats + 2):
        for _ in range(max(1, watchdog_ms // 100)):  # a beat every half watchdog period
            now += 0.05
            state = plc_step(state, PlcInputs(), now)
        state = plc_step(state, PlcInputs(heartbeat=beat), now)
    assert state.barrier in (OPENING, OPEN)
    last_beat = now
    while state.barrier != CLOSED:
        now += 0.05
        state = plc_step(state, PlcInputs(), now)
        assert now - last_beat <= watchdog_ms / 1000 + 0.3 + 0.1
    assert state.permit == 0 and state.last_cause == CAUSE_WATCHDOG


def test_plc_fault_holds_and_clears_to_closed() -> None:
    state = plc_step(PlcState(), PlcInputs(heartbeat=1, permit=1), 0.0)
    assert state.barrier == OPENING
    state = plc_step(state, PlcInputs(fault=True), 0.1)
    assert (state.barrier, state.permit, state.last_cause) == (FAULT, 0, CAUSE_FAULT)
    state = plc_step(state, PlcInputs(heartbeat=2, permit=1, fault=True), 0.2)
    assert (state.barrier, state.permit) == (FAULT, 0)
    state = plc_step(state, PlcInputs(), 0.3)
    assert state.barrier == CLOSING
    state = plc_step(state, PlcInputs(), 0.7)
    assert state.barrier == CLOSED


# -- the driver's decoder ----------------------------------------------------------------------------


def test_decode_names_states_and_causes() -> None:
    state = decode([9, 1, 4242, 2, 1000, 17, 3])
    assert state == BarrierState("open", True, 4242, 17, "vehicle_passed", online=True, watchdog_ms=1000)
    assert state.is_open
    for bad in ([0] * 6, [0, 0, 0, 5, 1000, 0, 0], [0, 0, 0, 0, 1000, 0, 9], [0, 0, 0, 0, 70000, 0, 0]):
        with pytest.raises(ProtocolError):
            decode(bad)


# -- the driver against the simulator ------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_grant_opens_and_revoke_closes() -> None:
    with rig() as (sim, barrier, log):
        assert sim.state() == CLOSED and stays(lambda: sim.state() == CLOSED, 0.6)  # beats alone do not open
        open_for(sim, barrier, 4242)
        assert sim.token() == 4242 and sim.permit() == 1
        wait_until("open reported", lambda: log.last().state == "open")
        reported = log.last()
        assert reported.permit and reported.token == 4242 and reported.online
        assert [s.state for s in log.snapshot()][-3:] == ["closed", "opening", "open"]
        barrier.revoke("operator pressed stop")
        wait_until("closed", lambda: sim.state() == CLOSED)
        assert sim.last_cause() == CAUSE_PERMIT_WITHDRAWN and sim.permit() == 0
        wait_until("closed reported", lambda: log.last().state == "closed")
        assert log.last().last_cause == "permit_withdrawn"
        assert stays(lambda: sim.state() == CLOSED, 1.0)


@pytest.mark.timeout(90)
def test_lease_expiry_withdraws_the_permit() -> None:
    clock = ManualClock()
    with rig(clock=clock) as (sim, barrier, _log):
        since = open_for(sim, barrier, 11, lease=30.0)
        assert stays(lambda: sim.state() == OPEN, 1.0)  # beats keep it open while the lease lasts
        clock.advance(31.0)
        wait_until("closed", lambda: sim.state() == CLOSED)
        assert sim.last_cause() == CAUSE_PERMIT_WITHDRAWN and sim.permit() == 0
        assert stays(lambda: sim.state() == CLOSED, 1.0)
        assert openings_since(sim, since) == 0


@pytest.mark.timeout(90)
def test_vehicle_passed_closes_and_the_grant_is_spent() -> None:
    with rig() as (sim, barrier, log):
        since = open_for(sim, barrier, 12)
        sim.simulate_vehicle_passed()
        wait_until("closed", lambda: sim.state() == CLOSED)
        assert sim.last_cause() == CAUSE_VEHICLE_PASSED and sim.vehicles_passed() == 1
        assert stays(lambda: sim.state() == CLOSED and sim.permit() == 0, 1.5)  # lease still valid
        assert openings_since(sim, since) == 0
        wait_until("reported", lambda: log.last().vehicles_passed == 1)
        assert not log.last().permit
        open_for(sim, barrier, 13)  # a new grant is a new truck
        assert sim.token() == 13


@pytest.mark.timeout(90)
def test_unhealthy_daemon_stops_beating_and_the_plc_closes_by_watchdog() -> None:
    healthy = threading.Event()
    healthy.set()
    with rig() as (sim, barrier, _log):
        barrier.healthy = healthy.is_set
        since = open_for(sim, barrier, 21)
        healthy.clear()
        wait_until("closed", lambda: sim.state() == CLOSED)
        assert sim.last_cause() == CAUSE_WATCHDOG and sim.permit() == 0
        assert watchdog_close_delay(sim, since) <= WATCHDOG_LIMIT
        healthy.set()
        beats = len(sim.heartbeats)
        wait_until("beats again", lambda: len(sim.heartbeats) > beats + 2)
        assert stays(lambda: sim.state() == CLOSED, 1.0)  # healthy again does not reopen on its own
        assert openings_since(sim, since) == 0


@pytest.mark.timeout(90)
def test_stop_withdraws_the_permit_and_stops_beating() -> None:
    log = StateLog()
    with BarrierPlcSimulator() as sim:
        barrier = make_barrier(sim.port, log)
        barrier.start()
        try:
            open_for(sim, barrier, 22)
        finally:
            barrier.stop()
        barrier.stop()  # idempotent
        wait_until("closed", lambda: sim.state() == CLOSED, timeout=WATCHDOG_LIMIT + 1.0)
        assert sim.last_cause() == CAUSE_PERMIT_WITHDRAWN and sim.permit() == 0
        beats = len(sim.heartbeats)
        assert stays(lambda: len(sim.heartbeats) == beats and sim.state() == CLOSED, 1.0)


class Link:
    """A TCP forwarder between the driver and the PLC that can be cut: bytes are swallowed while
    every connection stays open, as when a cable is pulled between switches."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.cut = threading.Event()
        self._closing = threading.Event()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                near, _ = self._listener.accept()
                far = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                continue
            far.settimeout(None)
            self._sockets += [near, far]
            for source, sink in ((near, far), (far, near)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with suppress(OSError):
            while data := source.recv(4096):
                if not self.cut.is_set():
                    sink.sendall(data)
        for end in (source, sink):
            with suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closing.set()
        with suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for end in self._sockets:
            with suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()
        self._accepting.join(timeout=5)


@pytest.mark.timeout(120)
def test_network_cut_closes_by_watchdog_and_a_valid_lease_reopens_after() -> None:
    log = StateLog()
    with BarrierPlcSimulator() as sim:
        link = Link(sim.port)
        try:
            with running(make_barrier(link.port, log)) as barrier:
                wait_until("online", lambda: log.online() == [True])
                since = open_for(sim, barrier, 31, lease=120.0)
                link.cut.set()
                wait_until("closed", lambda: sim.state() == CLOSED)
                assert sim.last_cause() == CAUSE_WATCHDOG
                assert watchdog_close_delay(sim, since) <= WATCHDOG_LIMIT
                wait_until("offline reported", lambda: log.online() == [True, False])
                assert log.last().state == "unknown"
                link.cut.clear()
                wait_until("online again", lambda: log.online() == [True, False, True])
                wait_until("open again", lambda: sim.state() == OPEN)  # the lease still holds
                assert sim.token() == 31
        finally:
            link.close()


DRIVER_SCRIPT = """
import sys, time
from drivers.barrier_modbus import BarrierModbusDevice, ModbusBarrier
settings = BarrierModbusDevice(id="barrier-1", driver="barrier-modbus", host="127.0.0.1", port=int(sys.argv[1]))
barrier = ModbusBarrier("lane-1", settings)
barrier.start()
barrier.grant(77, 600.0)
print("granted", flush=True)
time.sleep(600)
"""


@pytest.mark.timeout(120)
def test_killed_daemon_process_the_plc_closes_by_watchdog() -> None:
    with BarrierPlcSimulator() as sim:
        process = subprocess.Popen(
            [sys.executable, "-c", DRIVER_SCRIPT, str(sim.port)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_until("open", lambda: sim.state() == OPEN or process.poll() is not None, timeout=60)
            assert process.poll() is None, process.communicate()
            since = opened_at(sim)
            beats = len(sim.heartbeats)
            wait_until("steady beats", lambda: len(sim.heartbeats) >= beats + 2)
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
            assert process.returncode == -signal.SIGKILL
            wait_until("closed", lambda: sim.state() == CLOSED)
            assert sim.last_cause() == CAUSE_WATCHDOG and sim.permit() == 0
            assert sim.token() == 77
            assert watchdog_close_delay(sim, since) <= WATCHDOG_LIMIT
            assert stays(lambda: sim.state() == CLOSED, 1.0)
        finally:
            if process.poll() is None:
                process.kill()
            process.communicate(timeout=30)


@pytest.mark.timeout(90)
def test_fault_never_opens_and_the_grant_is_spent() -> None:
    with rig() as (sim, barrier, log):
        since = time.monotonic()
        sim.set_fault(True)
        wait_until("fault reported", lambda: log.last().state == "fault")
        barrier.grant(41, 60.0)
        assert stays(lambda: sim.state() == FAULT, 1.5)
        assert openings_since(sim, since) == 0 and sim.last_cause() == CAUSE_FAULT
        sim.set_fault(False)
        wait_until("closed", lambda: sim.state() == CLOSED)
        assert stays(lambda: sim.state() == CLOSED and sim.permit() == 0, 1.0)
        assert openings_since(sim, since) == 0
        assert not log.last().permit


@pytest.mark.timeout(120)
def test_simulator_restart_offline_then_online_and_a_valid_lease_reopens() -> None:
    with rig() as (sim, barrier, log):
        open_for(sim, barrier, 51, lease=120.0)
        sim.stop()
        assert sim.state() == CLOSED  # a PLC without power drops the barrier
        wait_until("offline", lambda: log.online() == [True, False])
        sim.stop()  # idempotent
        sim.start()
        wait_until("online again", lambda: log.online() == [True, False, True])
        wait_until("open again", lambda: sim.state() == OPEN)
        assert sim.token() == 51


@pytest.mark.timeout(90)
@pytest.mark.parametrize("reads", [True, False], ids=["every-request", "writes-only"])
def test_a_plc_answering_with_exceptions_is_offline_until_it_answers_again(
    reads: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="drivers.barrier_modbus")
    with rig() as (sim, barrier, log):
        sim.refuse(4, reads=reads)  # server device failure: the heartbeat no longer reaches the PLC
        wait_until("offline", lambda: log.online() == [True, False])
        # The driver counts a refusal once it has read it, a moment after the simulator sent it.
        wait_until("more refusals", lambda: sim.refused >= 20 and barrier.frame_errors >= 20)
        assert barrier.connects == 1  # still connected: the PLC answers, but not as a working PLC
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 2, warnings  # the first error, then going offline; repeats counted
        assert "exception 4" in warnings[0]
        sim.refuse(None)
        wait_until("online again", lambda: log.online() == [True, False, True])
        assert any("answering again" in r.getMessage() for r in caplog.records)
        open_for(sim, barrier, 71)


@pytest.mark.timeout(120)
def test_no_permit_survives_a_reconnect_after_its_lease_ended() -> None:
    clock = ManualClock()
    with rig(clock=clock) as (sim, barrier, log):
        open_for(sim, barrier, 61, lease=20.0)
        sim.stop()
        wait_until("offline", lambda: log.online() == [True, False])
        clock.advance(25.0)
        barrier.grant(62, 10.0)  # granted while offline, and its lease too ends before the PLC is back
        clock.advance(11.0)
        time.sleep(0.3)
        since = time.monotonic()
        sim.start()
        wait_until("online again", lambda: log.online() == [True, False, True])
        assert stays(lambda: sim.state() == CLOSED and sim.permit() == 0, 1.5)
        assert openings_since(sim, since) == 0


@pytest.mark.timeout(120)
def test_a_grant_made_while_offline_opens_when_the_plc_is_back_within_its_lease() -> None:
    log = StateLog()
    sim = BarrierPlcSimulator()
    with running(make_barrier(sim.port, log)) as barrier:
        wait_until("offline", lambda: log.online() == [False])
        barrier.grant(71, 120.0)
        with sim:
            wait_until("open", lambda: sim.state() == OPEN)
            assert sim.token() == 71 and log.online() == [False, True]


# -- an outside master --------------------------------------------------------------------------------


def mbpoll(
    port: int, *args: str, write: tuple[int, ...] = (), check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run mbpoll once against unit 1, 0-based references; ``write`` values go after the host."""
    tool = require_tool("mbpoll")
    command = [tool, "-m", "tcp", "-a", "1", "-p", str(port), "-o", "5", "-1", "-0", *args, "127.0.0.1"]
    done = subprocess.run([*command, *map(str, write)], capture_output=True, text=True, timeout=30)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def mbpoll_read(port: int, first: int, count: int) -> dict[int, int]:
    done = mbpoll(port, "-t", "4", "-r", str(first), "-c", str(count))
    values = {}
    for line in done.stdout.splitlines():
        if line.startswith("[") and "]:" in line:
            reference, value = line.split("]:", 1)
            values[int(reference[1:])] = int(value.split()[0])
    return values


@pytest.mark.timeout(90)
def test_a_stray_master_cannot_hold_the_barrier_open() -> None:
    require_tool("mbpoll")
    with BarrierPlcSimulator(watchdog_ms=1000) as sim:
        assert mbpoll_read(sim.port, 0, 7) == {0: 0, 1: 0, 2: 0, 3: CLOSED, 4: 1000, 5: 0, 6: 0}
        since = time.monotonic()
        mbpoll(sim.port, "-t", "4", "-r", "1", write=(1,))  # permit = 1, with no heartbeat ever
        wait_until("permit dropped", lambda: sim.permit() == 0)
        assert sim.last_cause() == CAUSE_WATCHDOG
        assert stays(lambda: sim.state() == CLOSED, 1.0)
        assert openings_since(sim, since) == 0
        assert mbpoll_read(sim.port, 1, 1) == {1: 0}

        mbpoll(sim.port, "-t", "4", "-r", "0", write=(5, 1))  # one heartbeat and the permit, then silence
        wait_until("open", lambda: sim.state() == OPEN)
        assert mbpoll_read(sim.port, 3, 1) == {3: OPEN}
        since = opened_at(sim)
        wait_until("closed", lambda: sim.state() == CLOSED)
        assert sim.last_cause() == CAUSE_WATCHDOG
        assert watchdog_close_delay(sim, since) <= WATCHDOG_LIMIT
        assert mbpoll_read(sim.port, 3, 4) == {3: CLOSED, 4: 1000, 5: 0, 6: CAUSE_WATCHDOG}

        refused = mbpoll(sim.port, "-t", "4", "-r", "3", write=(2,), check=False)  # state is the PLC's
        assert refused.returncode != 0 and sim.state() == CLOSED


# -- gated-sim barrier-plc -------------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_cli_prints_state_changes(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="gated-sim")
    register_cli(parser.add_subparsers(dest="command", required=True))
    port = free_port()
    args = parser.parse_args(["barrier-plc", "--port", str(port), "--unit", "3", "--duration", "6"])
    result: list[int] = []
    worker = threading.Thread(target=lambda: result.append(args.func(args)), daemon=True)
    worker.start()
    log = StateLog()
    with running(make_barrier(port, log, unit=3)) as barrier:
        wait_until("online", lambda: log.online()[-1:] == [True])
        barrier.grant(5, 60.0)
        wait_until("open", lambda: log.last().state == "open")
        barrier.revoke("done")
        wait_until("closed", lambda: log.last().state == "closed")
    worker.join(timeout=45)
    assert result == [0]
    out = capsys.readouterr().out
    assert f"127.0.0.1:{port} unit 3" in out
    lines = [line.split()[-1] for line in out.splitlines() if " s  " in line and "(" not in line]
    assert "opening" in lines and "open" in lines
    assert "closed (last cause: permit withdrawn)" in out

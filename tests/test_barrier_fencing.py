"""Fencing at the barrier PLC, on the real simulator over Modbus TCP with two real drivers, as two
nodes would drive one lane's barrier: the node holding the newer lease token takes the barrier
over, the old one's permit is withdrawn, and the old one (paused, then resumed still believing it
owns the lane) can no longer open it, whatever it writes."""

from __future__ import annotations

import time

import pytest
from pymodbus.client import ModbusTcpClient

from simulators.barrier_plc import CLOSED, FENCE_HIGH, FENCE_LOW, OPEN, BarrierPlcSimulator
from tests.test_barrier import StateLog, make_barrier, running, stays, wait_until

pytestmark = pytest.mark.timeout(90)


def test_a_newer_token_takes_the_barrier_and_the_old_holder_cannot_open_it() -> None:
    old_log, new_log = StateLog(), StateLog()
    with BarrierPlcSimulator(watchdog_ms=1000) as sim, running(make_barrier(sim.port, old_log)) as old:
        old.fence(7)
        wait_until("online", lambda: old_log.last().online)
        old.grant(0x1234, 60.0)
        wait_until("open for the old holder", lambda: sim.state() == OPEN)
        assert sim.fence() == 7
        registers = sim.registers()
        assert (registers[FENCE_LOW], registers[FENCE_HIGH]) == (7, 0)
        # The old node stops renewing its lease (paused); a standby takes the lane: token 8.
        with running(make_barrier(sim.port, new_log)) as new:
            new.fence(8)
            wait_until("the new holder online", lambda: new_log.last().online)
            wait_until("fenced: taken over", lambda: sim.fence() == 8)
            # The old holder's permit is withdrawn at once by the PLC itself.
            wait_until("closed", lambda: sim.state() == CLOSED and sim.permit() == 0)
            # The old node wakes up and grants again with its old token: refused, nothing opens.
            refused = sim.refused_fenced
            old.grant(0x1235, 60.0)
            wait_until("refused", lambda: sim.refused_fenced > refused + 3)
            assert stays(lambda: sim.state() == CLOSED and sim.permit() == 0, 1.5)
            wait_until("the old holder sees the barrier out of its hands", lambda: not old_log.last().online)
            # The new holder still works the barrier.
            new.grant(0x2000, 60.0)
            wait_until("open for the new holder", lambda: sim.state() == OPEN and sim.token() == 0x2000)
            new.revoke("truck gone")
            wait_until("closed again", lambda: sim.state() == CLOSED)


def test_plain_writes_are_refused_once_fencing_is_in_force_and_it_survives_a_power_loss() -> None:
    log = StateLog()
    with BarrierPlcSimulator() as sim:
        with running(make_barrier(sim.port, log)) as barrier:
            barrier.fence(3)
            wait_until("fenced", lambda: sim.fence() == 3)
        port = sim.port
        sim.stop()
        sim.start()  # power cycled
        assert sim.fence() == 3
        client = ModbusTcpClient("127.0.0.1", port=port, timeout=2)
        assert client.connect()
        try:
            # A plain permit write (an old gated, a tool) and a lower token: both refused.
            plain = client.write_registers(0, [1, 1, 0x4242], device_id=1)
            assert plain.isError() and plain.exception_code == 3
            stale = client.write_registers(9, [2, 0, 5, 1, 0x4242], device_id=1)
            assert stale.isError() and stale.exception_code == 3
            odd = client.write_registers(10, [0, 5, 1, 0x4242], device_id=1)  # not the whole block
            assert odd.isError()
            time.sleep(0.2)
            assert sim.permit() == 0 and sim.state() == CLOSED
            # The same token goes on working (a reconnect of the holder).
            accepted = client.write_registers(9, [3, 0, 6, 1, 0x4243], device_id=1)
            assert not accepted.isError()
            assert sim.permit() == 1 and sim.token() == 0x4243
        finally:
            client.close()

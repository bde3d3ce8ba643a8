"""Lane leases on real SQLite and a real PostgreSQL: one holder at a time, renewals keep the
fencing token, every change of holder raises it, and nodes racing for an ended lease never both
win."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from gated.clock import ManualClock
from gated.db import open_engine
from gated.leases import LaneLeases
from tests.postgres import database as database
from tests.postgres import server as server

LEASE = 5.0


def nodes(database: str, clock: ManualClock, *names: str) -> list[LaneLeases]:
    return [LaneLeases(open_engine(database), clock, node=name, lease_seconds=LEASE) for name in names]


def test_one_holder_renewals_keep_the_token_takeovers_raise_it(database: str) -> None:
    clock = ManualClock(datetime(2026, 12, 5, tzinfo=UTC))
    active, standby = nodes(database, clock, "gate-1", "gate-2")
    first = active.acquire("lane-1")
    assert first is not None and (first.node, first.token) == ("gate-1", 1)
    assert standby.acquire("lane-1") is None
    for _ in range(5):
        clock.advance(LEASE / 2)
        renewed = active.acquire("lane-1")
        assert renewed is not None and renewed.token == 1  # renewed in time: same token
        assert standby.acquire("lane-1") is None
    # The active node stops renewing (killed, paused): the standby takes the lane once it ends.
    clock.advance(LEASE - 0.1)
    assert standby.acquire("lane-1") is None
    clock.advance(0.2)
    taken = standby.acquire("lane-1")
    assert taken is not None and (taken.node, taken.token) == ("gate-2", 2)
    assert active.acquire("lane-1") is None  # back from its pause: the lane is not its own
    current = active.current("lane-1")
    assert current is not None and (current.node, current.token) == ("gate-2", 2)
    # An orderly stop gives the lane up at once; the other node takes it with the next token.
    standby.release("lane-1")
    back = active.acquire("lane-1")
    assert back is not None and (back.node, back.token) == ("gate-1", 3)
    # A holder whose own lease ended gets a new token too: something may have happened meanwhile.
    clock.advance(LEASE + 1)
    again = active.acquire("lane-1")
    assert again is not None and again.token == 4
    # Lanes are leased one by one.
    other = standby.acquire("lane-2")
    assert other is not None and (other.node, other.token) == ("gate-2", 1)
    for leases in (active, standby):
        leases.engine.dispose()


def race(
    leases: LaneLeases, start: threading.Barrier, won: list[tuple[str, int]], failures: list[BaseException]
) -> None:
    try:
        start.wait(10)
        lease = leases.acquire("lane-1")
        if lease is not None:
            won.append((lease.node, lease.token))
    except BaseException as error:
        failures.append(error)


def test_nodes_racing_for_an_ended_lease_never_both_win(database: str) -> None:
    clock = ManualClock(datetime(2026, 12, 5, tzinfo=UTC))
    racers = nodes(database, clock, *(f"gate-{index}" for index in range(1, 7)))
    for round_number in range(8):
        start = threading.Barrier(len(racers))
        won: list[tuple[str, int]] = []
        failures: list[BaseException] = []

        threads = [threading.Thread(target=race, args=(leases, start, won, failures)) for leases in racers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert failures == []
        assert len(won) == 1, won  # exactly one node drives the lane
        assert won[0][1] == round_number + 1  # and its token is the next one
        clock.advance(LEASE + 0.5)  # the winner dies: the lease ends before the next round
    for leases in racers:
        leases.engine.dispose()

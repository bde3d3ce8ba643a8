"""Which lanes this node drives, kept by their leases (``gated.leases``) when nodes share lanes.

Every third of the lease this node tries to take or renew the lease of each lane of its config.
A lane it gets is handed to the pipeline (its readings are taken, the visit the previous holder
left open is decided as interrupted) and its barrier is fenced with the lease's token. A lane it
loses, or cannot renew for lack of the database, is given up before the lease can end: the
pipeline leaves it and its barrier gets no more heartbeats (``holds``), so at no moment do two nodes
beat one barrier; and the PLC refuses the old token anyway.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from gated.clock import Clock
from gated.errors import GatedError
from gated.leases import LaneLeases

log = logging.getLogger(__name__)


class LaneOwnership:
    def __init__(
        self,
        leases: LaneLeases,
        lanes: list[str],
        clock: Clock,
        *,
        on_taken: Callable[[str, int], None],
        on_lost: Callable[[str, str], None],
    ) -> None:
        self.leases = leases
        self.lanes = lanes
        self.clock = clock
        self.on_taken = on_taken
        self.on_lost = on_lost
        self.renew_every = leases.length.total_seconds() / 3
        # Given up this long before the lease ends when it could not be renewed: room for the clock
        # between the nodes and for the last heartbeat in flight.
        self.margin = timedelta(seconds=self.renew_every)
        self._lock = threading.Lock()
        self._held: dict[str, tuple[int, datetime]] = {}  # lane -> (token, lease end)
        self.keep_through_outage = False  # with a local replica, lanes go on deciding from it

    def holds(self, lane: str) -> bool:
        """This node drives ``lane`` now (the barrier's heartbeat asks, every beat)."""
        with self._lock:
            held = self._held.get(lane)
        return held is not None and self.clock.now() < held[1] - self.margin

    def token(self, lane: str) -> int | None:
        with self._lock:
            held = self._held.get(lane)
        return None if held is None else held[0]

    def step(self) -> None:
        for lane in self.lanes:
            try:
                lease = self.leases.acquire(lane)
            except GatedError as error:
                self._unreachable(lane, error)
                continue
            with self._lock:
                before = self._held.get(lane)
                if lease is None:
                    self._held.pop(lane, None)
                else:
                    self._held[lane] = (lease.token, lease.expires_at)
            if lease is not None and (before is None or before[0] != lease.token):
                self.on_taken(lane, lease.token)
            elif lease is None and before is not None:
                holder = self.leases.current(lane)
                self.on_lost(lane, f"node {holder.node if holder else '?'} holds its lease")

    def _unreachable(self, lane: str, error: GatedError) -> None:
        """The database does not answer. Nobody can take a lease without it, so a lane held goes
        on being held (and decided from the local replica, with a local replica: gated.failover);
        should another node reach the database and take the lane meanwhile, its newer fencing token
        makes the barrier PLC refuse this node. Without a replica the lane is given up in time."""
        if self.keep_through_outage:
            with self._lock:
                held = self._held.get(lane)
                if held is not None:
                    self._held[lane] = (held[0], max(held[1], self.clock.now() + self.leases.length))
            log.warning("lane %s: lease not renewed (database unreachable), kept: %s", lane, error)
            return
        log.warning("lane %s: lease not renewed: %s", lane, error)
        self._check_expiry(lane)

    def _check_expiry(self, lane: str) -> None:
        with self._lock:
            held = self._held.get(lane)
            lost = held is not None and self.clock.now() >= held[1] - self.margin
            if lost:
                self._held.pop(lane, None)
        if lost:
            self.on_lost(lane, "its lease could not be renewed (database unreachable)")

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.step()
            except Exception:
                log.exception("lane ownership: unexpected error (trying again)")
                for lane in self.lanes:
                    self._check_expiry(lane)  # not renewed: given up in time all the same
            stop.wait(self.renew_every)

    def release_all(self) -> None:
        """An orderly stop: every lane given up at once, so a standby takes it at its next try."""
        with self._lock:
            lanes, self._held = list(self._held), {}
        for lane in lanes:
            try:
                self.leases.release(lane)
            except GatedError as error:
                log.warning("lane %s: lease not given up (it ends by itself): %s", lane, error)

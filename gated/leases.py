"""Lanes owned by leases: one node at a time drives a lane, and a fencing token says which.

A lease is a row per lane in the shared database: the node holding it, until when, and a fencing
token that grows by one on every change of holder (never on a renewal). The holder renews well
before the lease ends; a node that stops renewing (dead, paused, cut off) loses it once it ends,
and a standby node takes it with the next token. Every actuator command carries the holder's
token and the device refuses a token lower than the highest it has seen (``drivers.barrier_modbus``),
so a node that lost its lease can no longer open anything, even if it does not know yet.

Each step is one short transaction whose UPDATE is conditional (compare-and-set), so two nodes
racing for a lane cannot both win: on PostgreSQL the row lock orders them, on SQLite the file lock.
Times are the nodes' clocks: keep them synchronised (NTP) to well under the lease's length.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import BigInteger, Column, Engine, String, Table, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from gated.clock import Clock
from gated.db import UTCDateTime, metadata
from gated.errors import StorageError
from gated.redact import error_text, url_secrets

log = logging.getLogger(__name__)

lane_leases = Table(
    "lane_leases",
    metadata,
    Column("lane", String(64), primary_key=True),
    Column("node", String(64), nullable=False),
    Column("token", BigInteger, nullable=False),
    Column("acquired_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)


@dataclass(frozen=True, slots=True)
class Lease:
    lane: str
    node: str
    token: int
    acquired_at: datetime
    expires_at: datetime

    def held_by(self, node: str, now: datetime) -> bool:
        return self.node == node and now < self.expires_at


class LaneLeases:
    """This node's side of the lanes' leases."""

    def __init__(self, engine: Engine, clock: Clock, *, node: str, lease_seconds: float) -> None:
        if lease_seconds <= 0:
            raise ValueError("a lease lasts more than 0 s")
        self.engine = engine
        self.clock = clock
        self.node = node
        self.length = timedelta(seconds=lease_seconds)

    def acquire(self, lane: str) -> Lease | None:
        """Take or renew the lease of ``lane``: the lease when this node holds it now, else None
        (another node holds it and it has not ended)."""
        now = self.clock.now()
        until = now + self.length
        try:
            with self.engine.begin() as conn:
                renewed = conn.execute(
                    update(lane_leases)
                    .where(
                        (lane_leases.c.lane == lane)
                        & (lane_leases.c.node == self.node)
                        & (lane_leases.c.expires_at > now)
                    )
                    .values(expires_at=until)
                ).rowcount
                if not renewed:
                    current = conn.execute(
                        select(lane_leases.c.token, lane_leases.c.node, lane_leases.c.expires_at).where(
                            lane_leases.c.lane == lane
                        )
                    ).one_or_none()
                    if current is None:
                        conn.execute(
                            insert(lane_leases).values(
                                lane=lane, node=self.node, token=1, acquired_at=now, expires_at=until
                            )
                        )
                    elif current.expires_at > now:
                        return None
                    else:
                        # Ended (or this node's own, ended): taken with the next token, if nobody
                        # else took it since it was read.
                        taken = conn.execute(
                            update(lane_leases)
                            .where((lane_leases.c.lane == lane) & (lane_leases.c.token == current.token))
                            .values(
                                node=self.node, token=current.token + 1, acquired_at=now, expires_at=until
                            )
                        ).rowcount
                        if not taken:
                            return None
                        log.warning(
                            "lane %s: lease taken over from %s (fencing token %d)",
                            lane,
                            current.node,
                            current.token + 1,
                        )
                row = conn.execute(select(lane_leases).where(lane_leases.c.lane == lane)).one()
        except IntegrityError:
            return None  # another node made the lane's first lease at the same moment
        except SQLAlchemyError as error:
            raise StorageError(
                f"cannot take the lease of lane {lane}: {error_text(error, url_secrets(self.engine.url))}"
            ) from error
        lease = Lease(row.lane, row.node, int(row.token), row.acquired_at, row.expires_at)
        return lease if lease.held_by(self.node, now) else None

    def release(self, lane: str) -> None:
        """Give the lane up at once (an orderly stop): a standby takes it at its next try."""
        now = self.clock.now()
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    update(lane_leases)
                    .where((lane_leases.c.lane == lane) & (lane_leases.c.node == self.node))
                    .values(expires_at=now)
                )
        except SQLAlchemyError as error:
            raise StorageError(
                f"cannot give up the lease of lane {lane}: {error_text(error, url_secrets(self.engine.url))}"
            ) from error

    def current(self, lane: str) -> Lease | None:
        """Who holds ``lane`` (its lease may have ended), or None when nobody ever did."""
        with self.engine.connect() as conn:
            row = conn.execute(select(lane_leases).where(lane_leases.c.lane == lane)).one_or_none()
        return (
            None
            if row is None
            else Lease(row.lane, row.node, int(row.token), row.acquired_at, row.expires_at)
        )

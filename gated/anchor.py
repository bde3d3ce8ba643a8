"""Publishes the head of the audit chain (``gated.audit``) on MQTT, so a copy lives outside the
database: ``{prefix}/node/{node}/audit``, retained, through the outbox like every message.

Once at start, then every ``interval`` seconds when the trail has grown. A customs system or a
log archive that keeps these heads can later check the database against any of them
(``gated audit verify --anchor SEQ:HASH``): a chain rewritten after an edit no longer holds them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from gated.audit import head
from gated.errors import StorageError
from gated.messages import AUDIT, Message, Topics
from gated.store import Batch, Store

log = logging.getLogger(__name__)

INTERVAL = 60.0


class AuditAnchor:
    def __init__(
        self,
        engine: Engine,
        store: Store,
        topics: Topics,
        node: str,
        *,
        interval: float = INTERVAL,
        on_stored: Callable[[], None] = lambda: None,
    ) -> None:
        self.engine = engine
        self.store = store
        self.topic = topics.node_audit(node)
        self.interval = interval
        self.on_stored = on_stored
        self.published: tuple[int, str] | None = None
        """The last head stored for publishing."""

    def step(self) -> bool:
        """Store the head for publishing when it moved; True when it did."""
        try:
            with self.engine.connect() as conn:
                current = head(conn)
        except SQLAlchemyError as error:
            log.warning("audit anchor: cannot read the chain's head: %s", error)
            return False
        if current == self.published:
            return False
        seq, digest = current
        body = {"head_seq": seq, "head_hash": digest, "anchor": f"{seq}:{digest}"}
        try:
            self.store.write(Batch(messages=[Message(self.topic, AUDIT, body, retain=True)]))
        except StorageError as error:
            log.warning("audit anchor: cannot store the head for publishing: %s", error)
            return False
        self.published = current
        self.on_stored()
        return True

    def run(self, stop: threading.Event) -> None:
        while True:
            self.step()
            if stop.wait(self.interval):
                return

"""A console on real parts for tests: the real app served by uvicorn on a free port, real accounts
on a SQLite file, and the clock in the test's hands (for the idle lock and the lockout)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from sqlalchemy import Engine

from gated.alerts import AlertDesk
from gated.clock import ManualClock
from gated.config import AlertsConfig
from gated.console.app import Console
from gated.console.board import LaneBoard
from gated.console.server import ConsoleServer
from gated.db import open_engine
from gated.model import DeviceState, Visit
from gated.store import Store
from gated.users import Accounts, Role

PASSWORDS = {
    "viewer": "viewer-password",
    "operator": "operator-password",
    "supervisor": "supervisor-password",
}
QUICK_HASHES = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


class NoLanes:
    """A node without lanes: the board's source when a test is about sessions, not lanes."""

    def lane_ids(self) -> list[str]:
        return []

    def lane_status(self, lane: str) -> dict[str, Any]:
        raise KeyError(lane)

    def device_states(self, lane: str) -> dict[str, tuple[str, DeviceState, str]]:
        raise KeyError(lane)

    def open_visit(self, lane: str) -> Visit | None:
        return None


@dataclass
class RunningConsole:
    url: str
    clock: ManualClock
    accounts: Accounts
    engine: Engine
    database: Path
    alerts: AlertDesk
    store: Store


@contextmanager
def running_console(folder: Path) -> Iterator[RunningConsole]:
    database = folder / "gated.db"
    engine = open_engine(database)
    # Now, to the second: the CLI run against the same database (users unlock) uses the real clock.
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    accounts = Accounts(engine, clock, QUICK_HASHES)
    for name, password in PASSWORDS.items():
        accounts.add(name, Role(name), password, actor="operator:test")
    store = Store(engine, site="test", node="gate-1", clock=clock)
    alerts = AlertDesk(engine, clock, AlertsConfig(), site="test", node="gate-1")
    store.alarm_listeners.append(alerts.changed)
    console = Console(accounts, LaneBoard(NoLanes()), engine, secure_cookies=False, alerts=alerts)
    server = ConsoleServer(console.app, "127.0.0.1", 0)
    server.start()
    try:
        yield RunningConsole(server.url.rstrip("/"), clock, accounts, engine, database, alerts, store)
    finally:
        server.stop()
        engine.dispose()

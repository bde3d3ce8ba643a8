"""The console's sessions, kept in the daemon's memory (a restart logs everyone out).

A session is a random token in an HttpOnly, SameSite=Strict cookie, and a second random token the
page sends back in the ``X-CSRF-Token`` header of every change (a page of another site can make
the browser send the cookie, but cannot read the token). After ``IDLE`` without a request from the
user the session locks: it answers 401 ``session locked`` until the user gives the password again.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from gated.clock import Clock
from gated.users import Role

IDLE = timedelta(minutes=10)
MAX_SESSIONS = 1000
"""Beyond this many the oldest is dropped: logins from a script cannot fill the memory."""


@dataclass
class Session:
    token: str
    username: str
    role: Role
    csrf: str
    last_seen: datetime
    locked: bool = False
    created: datetime = field(default_factory=lambda: datetime.min)


class Sessions:
    """Thread-safe: the console's handlers run on the server's event loop, tests on others."""

    def __init__(self, clock: Clock, idle: timedelta = IDLE) -> None:
        self.clock = clock
        self.idle = idle
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def open(self, username: str, role: Role) -> Session:
        now = self.clock.now()
        session = Session(
            secrets.token_urlsafe(32), username, role, secrets.token_urlsafe(32), now, created=now
        )
        with self._lock:
            self._sessions[session.token] = session
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        return session

    def get(self, token: str | None, *, touch: bool = True) -> Session | None:
        """The session of ``token`` (locked once idle too long), or None. ``touch``: the user did
        something (a page's periodic refresh is not the user, and does not keep it open)."""
        if not token:
            return None
        now = self.clock.now()
        with self._lock:
            session = self._sessions.get(token)
            if session is None:
                return None
            if not session.locked and now - session.last_seen >= self.idle:
                session.locked = True
            if touch and not session.locked:
                session.last_seen = now
            return session

    def unlock(self, session: Session) -> None:
        with self._lock:
            session.locked = False
            session.last_seen = self.clock.now()

    def close(self, token: str | None) -> None:
        if token:
            with self._lock:
                self._sessions.pop(token, None)

    def close_user(self, username: str) -> int:
        """End every session of ``username`` (its account was locked, or its password changed)."""
        with self._lock:
            gone = [token for token, session in self._sessions.items() if session.username == username]
            for token in gone:
                del self._sessions[token]
        return len(gone)

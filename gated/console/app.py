"""The console's web application (Starlette): the page, its assets, and the JSON API of CONTRACT
section 7.

- ``POST /api/login`` ``{"username", "password"}``: 200 with the session cookie and the CSRF token;
  401 for a wrong name or password; 423 while the account is locked (``gated.users``). Only a JSON
  body is taken, so a form on another site cannot log a browser in.
- ``GET /api/session``: who is logged in; ``POST /api/session/unlock`` ``{"password"}``: the password
  again after the idle lock; ``POST /api/logout``.
- ``GET /api/lanes``: the lane tiles and the exception queue; ``GET /api/events``: the same as a
  server-sent event (``board``) whenever it changes.
- ``GET /api/containers/{number}``: everything ``gated query --json`` knows about a container.
- ``GET /api/alerts`` and ``POST /api/alerts/{id}/ack`` ``{"note"}`` (operator and above): the
  alerts before the officers (``gated.alerts``), also sent as the ``alerts`` server-sent event.

Every API answer but the login's needs a session (401 without one, or once it is locked); every
``POST`` but the login also needs the session's token in ``X-CSRF-Token`` (403 without it). The
page's own script and style come from the package: the Content-Security-Policy allows nothing else.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from concurrent.futures import Future
from importlib import resources
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs

from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gated.alerts import AlertDesk, AlertError
from gated.clock import rfc3339
from gated.console.board import LaneBoard
from gated.console.sessions import Session, Sessions
from gated.errors import GatedError, OverrideRefused
from gated.model import Decision, Outcome
from gated.store import AuditRecord, insert_audit
from gated.users import Accounts, LoginOutcome, Role

COOKIE = "gated_session"
HOLDS_SHOWN = 500
HOLDS_ROLE = Role.SUPERVISOR
"""Who may place and release holds from the console (anyone logged in may look)."""
OVERRIDE_TIMEOUT = 15.0
RESOLUTIONS = ("INSPECTED_CLEAR", "SENT_TO_INSPECTION", "TURNED_AWAY", "REFERRED_TO_CUSTOMS", "OTHER")
"""How an operator may close an exception without a new decision (a number entered makes one)."""


class DecisionPath(Protocol):
    """The daemon's way to a decision (the pipeline): the console never decides by itself."""

    def override(
        self, decision_id: str, outcome: Outcome, *, actor: str, reason: str
    ) -> Future[Decision]: ...

    def enter_number(self, decision_id: str, number: str, *, actor: str, note: str) -> Future[Decision]: ...


MAX_BODY = 8192
EVENT_POLL = 0.5
"""Seconds between looks at the board for the event stream."""
KEEPALIVE = 15.0
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


class ApiError(Exception):
    def __init__(self, status: int, text: str, **more: Any) -> None:
        super().__init__(text)
        self.status = status
        self.body = {"error": text, **more}


class _Headers:
    """Adds the security headers to every answer, and no-store to the API's."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        api = str(scope.get("path", "")).startswith("/api/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend((k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items())
                if api:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


class Console:
    """The console for one daemon: its accounts, sessions, board and database."""

    def __init__(
        self,
        accounts: Accounts,
        board: LaneBoard,
        engine: Engine,
        *,
        secure_cookies: bool,
        evidence_root: Path | None = None,
        sessions: Sessions | None = None,
        decisions: DecisionPath | None = None,
        alerts: AlertDesk | None = None,
    ) -> None:
        self.accounts = accounts
        self.board = board
        self.engine = engine
        self.secure_cookies = secure_cookies
        self.evidence_root = evidence_root
        self.sessions = sessions or Sessions(accounts.clock)
        self.decisions = decisions
        self.alerts = alerts
        self.app = Starlette(
            routes=[
                Route("/", self.page),
                Route("/api/login", self.login, methods=["POST"]),
                Route("/api/logout", self.logout, methods=["POST"]),
                Route("/api/session", self.session, methods=["GET"]),
                Route("/api/session/unlock", self.unlock, methods=["POST"]),
                Route("/api/lanes", self.lanes, methods=["GET"]),
                Route("/api/events", self.events, methods=["GET"]),
                Route("/api/containers/{number}", self.container, methods=["GET"]),
                Route("/api/decisions/{decision}/override", self.override, methods=["POST"]),
                Route("/api/evidence/{sha256}", self.evidence, methods=["GET"]),
                Route("/api/visits/{visit}", self.visit, methods=["GET"]),
                Route("/api/pass", self.gate_pass, methods=["GET"]),
                Route("/api/holds", self.holds, methods=["GET"]),
                Route("/api/holds", self.place_hold, methods=["POST"]),
                Route("/api/holds/{hold}/release", self.release_hold, methods=["POST"]),
                Route("/api/decisions/{decision}/resolve", self.resolve, methods=["POST"]),
                Route("/api/alerts", self.alert_list, methods=["GET"]),
                Route("/api/alerts/{alert}/ack", self.acknowledge, methods=["POST"]),
                Mount("/static", StaticFiles(packages=[("gated.console", "static")]), name="static"),
            ],
            middleware=[Middleware(_Headers)],
            exception_handlers={ApiError: _api_error},
        )

    # -- the page --------------------------------------------------------------------------------
    async def page(self, _request: Request) -> Response:
        html = resources.files("gated.console").joinpath("static/index.html").read_text(encoding="utf-8")
        return HTMLResponse(html)

    # -- sessions --------------------------------------------------------------------------------
    async def login(self, request: Request) -> Response:
        body = await _json(request)
        username, password = body.get("username"), body.get("password")
        if not isinstance(username, str) or not isinstance(password, str):
            raise ApiError(400, "give username and password as strings")
        source = _source(request)
        result = await run_in_threadpool(self.accounts.login, username, password, source=source)
        if result.outcome is LoginOutcome.LOCKED:
            self.sessions.close_user(username)
            until = None if result.locked_until is None else rfc3339(result.locked_until)
            raise ApiError(423, "account locked after failed logins", locked_until=until)
        if result.outcome is not LoginOutcome.OK or result.account is None:
            raise ApiError(401, "wrong user name or password")
        session = self.sessions.open(result.account.username, result.account.role)
        response = JSONResponse(self._who(session))
        response.set_cookie(
            COOKIE,
            session.token,
            httponly=True,
            samesite="strict",
            secure=self.secure_cookies,
            path="/",
        )
        return response

    async def logout(self, request: Request) -> Response:
        session = self._session(request, allow_locked=True)
        self._check_csrf(request, session)
        self.sessions.close(session.token)
        response = JSONResponse({"logged_out": session.username})
        response.delete_cookie(COOKIE, path="/")
        return response

    async def session(self, request: Request) -> Response:
        return JSONResponse(self._who(self._session(request, touch=False)))

    async def unlock(self, request: Request) -> Response:
        session = self._session(request, allow_locked=True)
        self._check_csrf(request, session)
        body = await _json(request)
        password = body.get("password")
        if not isinstance(password, str):
            raise ApiError(400, "give the password as a string")
        result = await run_in_threadpool(
            self.accounts.login, session.username, password, source=_source(request), action="unlock_session"
        )
        if result.outcome is LoginOutcome.LOCKED:
            self.sessions.close_user(session.username)
            raise ApiError(423, "account locked after failed logins")
        if result.outcome is not LoginOutcome.OK:
            raise ApiError(401, "wrong password", locked=True)
        self.sessions.unlock(session)
        return JSONResponse(self._who(session))

    # -- what the console shows ------------------------------------------------------------------
    async def lanes(self, request: Request) -> Response:
        self._session(request, touch=False)
        return JSONResponse(self.board.snapshot())

    async def events(self, request: Request) -> Response:
        session = self._session(request, touch=False)

        async def stream() -> AsyncIterator[str]:
            sent = ""
            alerts_sent = -1
            quiet = 0.0
            while True:
                current = self.sessions.get(session.token, touch=False)
                if current is None or current.locked or await request.is_disconnected():
                    yield "event: ended\ndata: {}\n\n"
                    return
                # Device states change without telling the board: compare what would be sent.
                board = json.dumps(self.board.snapshot())
                if board != sent:
                    sent = board
                    yield f"event: board\ndata: {board}\n\n"
                    quiet = 0.0
                if self.alerts is not None and self.alerts.version != alerts_sent:
                    alerts_sent = self.alerts.version
                    shown = await run_in_threadpool(self.alerts.snapshot)
                    yield f"event: alerts\ndata: {json.dumps({'alerts': shown})}\n\n"
                    quiet = 0.0
                elif quiet >= KEEPALIVE:
                    yield ": still here\n\n"
                    quiet = 0.0
                await asyncio.sleep(EVENT_POLL)
                quiet += EVENT_POLL

        return StreamingResponse(stream(), media_type="text/event-stream")

    async def container(self, request: Request) -> Response:
        self._session(request)
        from gated.query import query_container

        number = request.path_params["number"]
        try:
            report = await run_in_threadpool(
                query_container, self.engine, number, evidence_root=self.evidence_root
            )
        except GatedError as error:
            raise ApiError(400, str(error)) from None
        return JSONResponse(report)

    async def override(self, request: Request) -> Response:
        """A supervisor's decision in place of one the daemon made: the password again and a
        reason; refused (and audited as refused) otherwise. It goes the daemon's decision path."""
        session = self._session(request)
        self._check_csrf(request, session)
        body = await _json(request)
        decision = request.path_params["decision"][:40]
        actor = f"user:{session.username}"
        source = _source(request)

        async def refuse(status: int, why: str, **more: Any) -> ApiError:
            detail = {
                "decision": decision,
                "why": why,
                "source": source,
                "outcome": str(body.get("outcome"))[:40],
            }
            await run_in_threadpool(self._audit, actor, "override_refused", decision, detail)
            return ApiError(status, why, **more)

        if not session.role.allows(Role.SUPERVISOR):
            raise await refuse(403, "an override needs the supervisor role")
        reason, password, outcome = body.get("reason"), body.get("password"), body.get("outcome")
        if not isinstance(reason, str) or not reason.strip():
            raise await refuse(400, "an override needs a reason")
        if len(reason) > 500:
            raise await refuse(400, "a reason of at most 500 characters")
        if outcome not in {str(o) for o in Outcome}:
            raise await refuse(400, f"outcome must be one of {', '.join(str(o) for o in Outcome)}")
        if not isinstance(password, str) or not password:
            raise await refuse(401, "an override needs your password again")
        check = await run_in_threadpool(
            self.accounts.login, session.username, password, source=source, action="reauth"
        )
        if check.outcome is LoginOutcome.LOCKED:
            self.sessions.close_user(session.username)
            raise await refuse(423, "account locked after failed logins")
        if check.outcome is not LoginOutcome.OK:
            raise await refuse(401, "wrong password")
        if self.decisions is None:
            raise await refuse(503, "this console has no lanes to decide for")
        future = self.decisions.override(decision, Outcome(outcome), actor=actor, reason=reason.strip())
        try:
            made = await asyncio.wait_for(asyncio.wrap_future(future), OVERRIDE_TIMEOUT)
        except OverrideRefused as error:
            raise await refuse(409, str(error)) from None
        except TimeoutError:
            raise await refuse(504, "the daemon did not take the override in time: nothing changed") from None
        return JSONResponse(made.body())

    # -- alerts ----------------------------------------------------------------------------------
    async def alert_list(self, request: Request) -> Response:
        """Open alerts, newest first, then those acknowledged within the hour."""
        self._session(request, touch=False)
        shown = [] if self.alerts is None else await run_in_threadpool(self.alerts.snapshot)
        return JSONResponse({"alerts": shown})

    async def acknowledge(self, request: Request) -> Response:
        """An officer (operator and above) takes an alert: audited before it takes effect."""
        session = self._session(request)
        self._check_csrf(request, session)
        if not session.role.allows(Role.OPERATOR):
            raise ApiError(403, "acknowledging an alert needs the operator role")
        if self.alerts is None:
            raise ApiError(404, "this console has no alerts")
        body = await _json(request)
        note = _text(body, "note") or ""
        try:
            taken = await run_in_threadpool(
                self.alerts.acknowledge,
                request.path_params["alert"],
                actor=f"user:{session.username}",
                note=note,
            )
        except AlertError as error:
            raise ApiError(409, str(error)) from None
        except GatedError as error:
            raise ApiError(503, str(error)) from None
        return JSONResponse(taken.to_json())

    async def visit(self, request: Request) -> Response:
        self._session(request)
        return await self._visit_report(request.path_params["visit"])

    async def gate_pass(self, request: Request) -> Response:
        """The visit a gate pass's QR code names (``gated:pass?v=<visit>&...``, as scanned)."""
        self._session(request)
        text = request.query_params.get("qr", "").strip()
        if not text.startswith("gated:pass?") or len(text) > 1000:
            raise ApiError(400, "not a gate pass: its QR code reads gated:pass?v=...")
        visit = parse_qs(text.removeprefix("gated:pass?")).get("v", [""])[0]
        if not visit:
            raise ApiError(400, "the gate pass names no visit")
        return await self._visit_report(visit)

    async def _visit_report(self, visit: str) -> Response:
        from gated.query import query_visit

        report = await run_in_threadpool(query_visit, self.engine, visit, evidence_root=self.evidence_root)
        if report is None:
            raise ApiError(404, f"no visit {visit[:40]!r}")
        return JSONResponse(report)

    # -- the hold list ---------------------------------------------------------------------------
    async def holds(self, request: Request) -> Response:
        """The hold list: active holds (``?all=1``: their history too), on one container or B/L."""
        self._session(request)
        from gated.holds import HoldStore

        query = request.query_params
        container, bill = query.get("container") or None, query.get("bl") or None
        try:
            found = await run_in_threadpool(
                HoldStore(self.engine, self.accounts.clock).list_holds,
                active_only=query.get("all") != "1",
                container=container,
                bill_of_lading=bill,
            )
        except GatedError as error:
            raise ApiError(400, str(error)) from None
        return JSONResponse({"holds": [hold.to_json() for hold in found[-HOLDS_SHOWN:]], "total": len(found)})

    async def place_hold(self, request: Request) -> Response:
        session = self._holds_session(request)
        body = await _json(request)
        from gated.holds import HoldStore

        reason = _text(body, "reason", required=True)
        fields = {
            name: _text(body, name) for name in ("container", "bill_of_lading", "agency", "hold_type", "code")
        }
        if not fields["agency"] or not fields["hold_type"]:
            raise ApiError(400, "a hold needs agency and hold_type")
        try:
            placed = await run_in_threadpool(
                HoldStore(self.engine, self.accounts.clock).add,
                container=fields["container"],
                bill_of_lading=fields["bill_of_lading"],
                agency=fields["agency"],
                hold_type=fields["hold_type"],
                code=fields["code"],
                actor=f"user:{session.username}",
                reason=reason,
            )
        except GatedError as error:
            raise ApiError(400, str(error)) from None
        return JSONResponse(_placed(placed))

    async def release_hold(self, request: Request) -> Response:
        session = self._holds_session(request)
        body = await _json(request)
        from gated.holds import HoldStore

        reason = _text(body, "reason", required=True)
        try:
            hold_id = int(request.path_params["hold"])
            released = await run_in_threadpool(
                HoldStore(self.engine, self.accounts.clock).release,
                hold_id=hold_id,
                code=_text(body, "code"),
                actor=f"user:{session.username}",
                reason=reason,
            )
        except ValueError:
            raise ApiError(400, "a hold id is a number") from None
        except GatedError as error:
            raise ApiError(409, str(error)) from None
        return JSONResponse({"released": [hold.to_json() for hold in released]})

    def _holds_session(self, request: Request) -> Session:
        session = self._session(request)
        self._check_csrf(request, session)
        if not session.role.allows(HOLDS_ROLE):
            raise ApiError(403, f"placing and releasing holds needs the {HOLDS_ROLE} role")
        return session

    async def evidence(self, request: Request) -> Response:
        """A piece of evidence (an OCR crop, a scan image) by its sha256, for a logged-in user."""
        self._session(request, touch=False)
        digest = request.path_params["sha256"]
        if self.evidence_root is None or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ApiError(404, "no such evidence")
        from gated.evidence import EvidenceStore

        path = EvidenceStore(self.evidence_root).path_for(digest)
        if not path.is_file():
            raise ApiError(404, "no such evidence")
        return FileResponse(path, media_type=_media_type(path))

    async def resolve(self, request: Request) -> Response:
        """An operator closes an exception: a resolution code and a note (kept in the audit trail,
        never over a device's record), or the number the camera could not read, with which the
        daemon decides the visit again by the same policy."""
        session = self._session(request)
        self._check_csrf(request, session)
        if not session.role.allows(Role.OPERATOR):
            raise ApiError(403, "working the queue needs the operator role")
        body = await _json(request)
        decision = request.path_params["decision"][:40]
        actor = f"user:{session.username}"
        note, number, code = body.get("note", ""), body.get("container"), body.get("code")
        if not isinstance(note, str) or len(note) > 500:
            raise ApiError(400, "a note is text of at most 500 characters")
        if number is not None:
            if not isinstance(number, str) or len(number) > 20:
                raise ApiError(400, "container must be a container number")
            if self.decisions is None:
                raise ApiError(503, "this console has no lanes to decide for")
            future = self.decisions.enter_number(decision, number, actor=actor, note=note.strip())
            try:
                made = await asyncio.wait_for(asyncio.wrap_future(future), OVERRIDE_TIMEOUT)
            except OverrideRefused as error:
                raise ApiError(409, str(error)) from None
            except TimeoutError:
                raise ApiError(504, "the daemon did not take the number in time: nothing changed") from None
            return JSONResponse(made.body())
        if code not in RESOLUTIONS:
            raise ApiError(
                400, f"code must be one of {', '.join(RESOLUTIONS)} (or give the container number)"
            )
        detail = {"decision": decision, "code": code, "note": note.strip(), "source": _source(request)}
        await run_in_threadpool(self._audit, actor, "resolution", decision, detail)
        self.board.resolve(decision)
        return JSONResponse({"resolved": decision, "code": code})

    def _audit(self, actor: str, action: str, subject: str, detail: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            record = AuditRecord(
                actor=actor[:64],
                action=action,
                subject=subject[:128],
                detail=detail,
                ts=self.accounts.clock.now(),
            )
            insert_audit(conn, [record])

    # -- helpers ---------------------------------------------------------------------------------
    def _session(self, request: Request, *, touch: bool = True, allow_locked: bool = False) -> Session:
        session = self.sessions.get(request.cookies.get(COOKIE), touch=touch)
        if session is None:
            raise ApiError(401, "not logged in")
        if session.locked and not allow_locked:
            raise ApiError(401, "session locked after 10 idle minutes: give the password again", locked=True)
        return session

    @staticmethod
    def _check_csrf(request: Request, session: Session) -> None:
        if request.headers.get("x-csrf-token") != session.csrf:
            raise ApiError(403, "missing or wrong X-CSRF-Token")

    @staticmethod
    def _who(session: Session) -> dict[str, Any]:
        return {
            "username": session.username,
            "role": str(session.role),
            "csrf": session.csrf,
            "locked": session.locked,
        }


async def _json(request: Request) -> dict[str, Any]:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise ApiError(415, "send JSON (Content-Type: application/json)")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise ApiError(413, f"a request body of more than {MAX_BODY} bytes")
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the body is not JSON") from None
    if not isinstance(parsed, dict):
        raise ApiError(400, "the body must be a JSON object")
    return parsed


def _text(body: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise ApiError(400, f"{name} is required")
        return None
    if not isinstance(value, str) or len(value) > 500:
        raise ApiError(400, f"{name} must be text of at most 500 characters")
    return value.strip()


def _placed(placed: tuple[Any, bool]) -> dict[str, Any]:
    """``HoldStore.add``'s answer: the hold placed, or the identical one already active."""
    record, created = placed
    return {"hold": record.to_json(), "placed": created}


def _media_type(path: Path) -> str:
    """What an evidence file holds, by its first bytes (stored files have no extension)."""
    with path.open("rb") as file:
        head = file.read(8)
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    return "application/octet-stream"  # offered for download, never shown inline


def _source(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


async def _api_error(_request: Request, error: Exception) -> Response:
    assert isinstance(error, ApiError)
    return JSONResponse(error.body, status_code=error.status)

"""`gated query CONTAINER`: everything gated knows about one container number.

A number is found through its own OCR reads (``readings.container``, indexed) as well as through the
decisions about it, so a read in a visit that was superseded, timed out, never decided, or decided
for another number is there too. Each lookup goes through an index: the time grows with what is
known about the number, not with the size of the database.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from gated.clock import rfc3339
from gated.errors import StorageError
from gated.holds import HoldStore, normalise_container
from gated.redact import error_text, printable, url_secrets
from gated.store import decisions, readings, visits

# SQL parameters per IN (...) list: SQLite allows 32,766, PostgreSQL 65,535 per statement.
IN_CHUNK = 500


def query_container(engine: Engine, text: str, *, evidence_root: Path | None = None) -> dict[str, Any]:
    """Holds (active and past, direct and through B/Ls), the number's reads, the visits they and
    the decisions about it belong to, those visits' readings, decisions and evidence, oldest first.
    With ``evidence_root`` (the daemon's evidence folder) each evidence item names its file."""
    container = normalise_container(text)
    try:
        return _query(engine, container, evidence_root)
    except SQLAlchemyError as error:
        # The driver's own text (a refused connection) goes to stderr: without the password.
        detail = error_text(error, url_secrets(engine.url))
        raise StorageError(f"cannot query {container}: {detail}") from None


def _query(engine: Engine, container: str, evidence_root: Path | None) -> dict[str, Any]:
    holds = HoldStore(engine)
    bills = holds.bills_for(container)
    history = holds.list_holds(active_only=False, container=container)
    for bill in bills:
        history.extend(holds.list_holds(active_only=False, bill_of_lading=bill))
    active = holds.active_holds_for(container)
    hold_list = holds.state()
    with engine.connect() as conn:
        reads = conn.execute(
            select(readings.c.id, readings.c.visit)
            .where(readings.c.container == container)
            .order_by(readings.c.ts)
        ).all()
        read_ids = {reading_id for reading_id, _ in reads}
        read_visits = {visit for _, visit in reads if visit is not None}
        about = conn.execute(select(decisions.c.visit).where(decisions.c.container == container)).scalars()
        visit_ids = sorted(read_visits | set(about))
        visit_rows = _visits(conn, visit_ids)
        # Every decision of these visits, told apart below: about this number, or about the truck
        # that carried it when no number could be given (an unread slot).
        all_decisions = _decisions(conn, visit_ids)
        reading_rows = _readings(conn, visit_ids, read_ids)
    decision_rows = [
        d
        for d in all_decisions
        if d["container"] == container or (d["container"] is None and d["visit"] in read_visits)
    ]
    for row in visit_rows:
        for key in ("opened_at", "closed_at"):
            if row[key] is not None:
                row[key] = rfc3339(row[key])
        row["read_here"] = row["id"] in read_visits
        row["decisions"] = [
            {"id": d["id"], "container": d["container"], "outcome": d["outcome"]}
            for d in all_decisions
            if d["visit"] == row["id"]
        ]
    for reading in reading_rows:
        reading["of_container"] = reading["id"] in read_ids
    return {
        "container": container,
        # Eligible as far as holds go: a hold list that was never loaded clears nobody.
        "eligible": hold_list.loaded and not active,
        "hold_list": hold_list.to_json(),
        "bills_of_lading": bills,
        "active_holds": [h.to_json() for h in active],
        "hold_history": [h.to_json() for h in history],
        "visits": visit_rows,
        "decisions": decision_rows,
        "readings": reading_rows,
        "evidence": _evidence(reading_rows, evidence_root),
    }


def query_visit(engine: Engine, visit_id: str, *, evidence_root: Path | None = None) -> dict[str, Any] | None:
    """One visit (what a gate pass's QR code names): its readings and every decision about it,
    overrides included, oldest first; None when there is no such visit."""
    try:
        with engine.connect() as conn:
            found = _visits(conn, [visit_id[:40]])
            if not found:
                return None
            visit = {
                key: rfc3339(value) if isinstance(value, datetime) else value
                for key, value in found[0].items()
            }
            reading_rows = _readings(conn, [visit_id], set())
            return {
                "visit": visit,
                "decisions": _decisions(conn, [visit_id]),
                "readings": reading_rows,
                "evidence": _evidence(reading_rows, evidence_root),
            }
    except SQLAlchemyError as error:
        raise StorageError(
            f"cannot read visit {visit_id[:40]!r}: {error_text(error, url_secrets(engine.url))}"
        ) from None


def _chunks(values: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(values), IN_CHUNK):
        yield values[start : start + IN_CHUNK]


def _visits(conn: Connection, ids: list[str]) -> list[dict[str, Any]]:
    rows = [
        dict(row._mapping)
        for chunk in _chunks(ids)
        for row in conn.execute(select(visits).where(visits.c.id.in_(chunk)))
    ]
    return sorted(rows, key=lambda row: (row["opened_at"], row["id"]))


def _decisions(conn: Connection, visit_ids: list[str]) -> list[dict[str, Any]]:
    found = [
        (decided_at, slot, json.loads(body))
        for chunk in _chunks(visit_ids)
        for decided_at, slot, body in conn.execute(
            select(decisions.c.decided_at, decisions.c.slot, decisions.c.body).where(
                decisions.c.visit.in_(chunk)
            )
        )
    ]
    return [body for _, _, body in sorted(found, key=lambda item: (item[0], item[1]))]


def _readings(conn: Connection, visit_ids: list[str], read_ids: set[str]) -> list[dict[str, Any]]:
    """The readings of these visits and the number's own reads (some belong to no visit)."""
    by_id: dict[str, tuple[Any, dict[str, Any]]] = {}
    wanted = [("visit", chunk) for chunk in _chunks(visit_ids)]
    wanted += [("id", chunk) for chunk in _chunks(sorted(read_ids))]
    for column, chunk in wanted:
        condition = readings.c.visit.in_(chunk) if column == "visit" else readings.c.id.in_(chunk)
        for reading_id, ts, body in conn.execute(
            select(readings.c.id, readings.c.ts, readings.c.body).where(condition)
        ):
            by_id.setdefault(reading_id, (ts, json.loads(body)))
    return [body for _, body in sorted(by_id.values(), key=lambda item: (item[0], item[1]["id"]))]


def _evidence(reading_rows: list[dict[str, Any]], root: Path | None) -> list[dict[str, Any]]:
    """Each evidence item of the readings as stored (URI, sha256, size), with the reading it backs
    and, when the evidence folder is known, the file's path and whether it is there."""
    found = []
    for reading in reading_rows:
        for item in reading.get("evidence") or []:
            entry = {
                "reading": reading["id"],
                "ts": reading["ts"],
                "device": reading["device"],
                "source": reading["source"],
                # A read of another number in the same truck's visit is evidence of that visit.
                "of_container": reading.get("of_container", False),
                **item,
            }
            if root is not None:
                path = _path_for(root, item.get("sha256"))
                entry["path"] = None if path is None else str(path)
                entry["present"] = path is not None and path.is_file()
            found.append(entry)
    return found


def _path_for(root: Path, sha256: object) -> Path | None:
    """Where the evidence store keeps this content (``gated.evidence``'s layout); None for a hash
    that is not one (a file could never be stored under it)."""
    from gated.evidence import EvidenceStore

    if not isinstance(sha256, str):
        return None
    try:
        return EvidenceStore(root).path_for(sha256)
    except ValueError:
        return None


def render_text(report: dict[str, Any]) -> str:
    """The report for a person: holds, then one line per visit, read, decision and evidence file,
    in time order."""
    if report["active_holds"]:
        summary = "HELD"
    elif report["eligible"]:
        summary = "no active hold"
    else:
        summary = "no hold list loaded: cannot be cleared"
    lines = [f"container {report['container']}: {summary}"]
    if report["bills_of_lading"]:
        lines.append("  bills of lading: " + ", ".join(report["bills_of_lading"]))
    for hold in report["hold_history"]:
        state = "active" if hold["active"] else f"released {hold.get('released_at')}"
        target = hold["container"] or f"B/L {hold['bill_of_lading']}"
        lines.append(f"  hold #{hold['id']} {hold['agency']} {hold['hold_type']} on {target}: {state}")
    lines.extend(line for _, line in sorted(_timeline(report), key=lambda item: item[0]))
    reads = sum(1 for r in report["readings"] if r.get("of_container"))
    lines.append(
        f"  {len(report['visits'])} visits, {reads} reads of the number, {len(report['readings'])} "
        f"readings, {len(report['decisions'])} decisions, {len(report['evidence'])} evidence files"
    )
    # Fields came from customs and devices: a line break in one must not fake a line of the report.
    return "\n".join(printable(line, None) for line in lines)


def _timeline(report: dict[str, Any]) -> list[tuple[datetime, str]]:
    """(time, line) for every visit, read of the number, decision and evidence file."""
    events: list[tuple[datetime, str]] = []
    for visit in report["visits"]:
        if visit["closed_at"] is None:
            state = "still open"
        else:
            state = f"closed {visit['closed_at']} ({visit['close_cause']})"
        decided = ", ".join(f"{d['container'] or 'unread'} {d['outcome']}" for d in visit["decisions"])
        events.append(
            (
                _sortable(visit["opened_at"]),
                f"  {visit['opened_at']} visit {visit['id']} on {visit['lane']}: {state}; "
                f"decided: {decided or 'nothing'}",
            )
        )
    closed = {visit["id"]: visit["closed_at"] for visit in report["visits"]}
    for reading in report["readings"]:
        if reading.get("of_container"):
            confidence = reading.get("confidence")
            shown = "" if confidence is None else f" confidence {confidence:.2f}"
            visit = reading.get("visit")
            end = closed.get(visit) if visit else None
            late = end is not None and _sortable(reading["ts"]) > _sortable(end)
            events.append(
                (
                    _sortable(reading["ts"]),
                    f"  {reading['ts']} read by {reading['device']} on {reading['lane']} "
                    f"({reading['quality']}{shown}) in visit {visit or 'none'}"
                    + (" after it had closed" if late else ""),
                )
            )
    for decision in report["decisions"]:
        reasons = ", ".join(r["code"] for r in decision["reasons"])
        events.append(
            (
                _sortable(decision["decided_at"]),
                f"  {decision['decided_at']} {decision['lane']} {decision['outcome']} ({reasons}) "
                f"visit {decision['visit']}",
            )
        )
    for item in report["evidence"]:
        where = item.get("path") or item["uri"]
        missing = "" if item.get("present", True) else ", missing"
        whose = "" if item["of_container"] else ", another reading of the same truck"
        events.append(
            (
                _sortable(item["ts"]),
                # The path and the URI both end in the stored sha256: not repeated.
                f"  {item['ts']} evidence {where} ({item['media_type']}, {item['bytes']} bytes from "
                f"{item['device']}{whose}{missing})",
            )
        )
    return events


def _sortable(text: str) -> datetime:
    """Readings say ``...Z`` and stored visit times ``...+00:00``, with or without fractions: as
    text they would not sort by time."""
    return datetime.fromisoformat(text)

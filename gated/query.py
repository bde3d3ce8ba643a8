"""`gated query CONTAINER`: everything gated knows about one container number."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError

from gated.errors import StorageError
from gated.holds import HoldStore, normalise_container
from gated.redact import error_text, printable, url_secrets
from gated.store import decisions, readings, visits


def query_container(engine: Engine, text: str) -> dict[str, Any]:
    """Holds (active and past, direct and through B/Ls), visits, decisions and their readings."""
    container = normalise_container(text)
    try:
        return _query(engine, container)
    except SQLAlchemyError as error:
        # The driver's own text (a refused connection) goes to stderr: without the password.
        detail = error_text(error, url_secrets(engine.url))
        raise StorageError(f"cannot query {container}: {detail}") from None


def _query(engine: Engine, container: str) -> dict[str, Any]:
    holds = HoldStore(engine)
    bills = holds.bills_for(container)
    history = holds.list_holds(active_only=False, container=container)
    for bill in bills:
        history.extend(holds.list_holds(active_only=False, bill_of_lading=bill))
    active = holds.active_holds_for(container)
    hold_list = holds.state()
    with engine.connect() as conn:
        decision_rows = [
            json.loads(body)
            for (body,) in conn.execute(
                select(decisions.c.body)
                .where(decisions.c.container == container)
                .order_by(decisions.c.decided_at)
            )
        ]
        visit_ids = sorted({d["visit"] for d in decision_rows})
        visit_rows = [
            dict(row._mapping)
            for row in conn.execute(
                select(visits).where(visits.c.id.in_(visit_ids)).order_by(visits.c.opened_at)
            )
        ]
        reading_rows = [
            json.loads(body)
            for (body,) in conn.execute(
                select(readings.c.body).where(readings.c.visit.in_(visit_ids)).order_by(readings.c.ts)
            )
        ]
    for row in visit_rows:
        for key in ("opened_at", "closed_at"):
            if row[key] is not None:
                row[key] = row[key].isoformat()
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
        "evidence": [e for r in reading_rows for e in r.get("evidence", [])],
    }


def render_text(report: dict[str, Any]) -> str:
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
    for decision in report["decisions"]:
        reasons = ", ".join(r["code"] for r in decision["reasons"])
        lines.append(f"  {decision['decided_at']} {decision['lane']} {decision['outcome']} ({reasons})")
    lines.append(f"  {len(report['visits'])} visits, {len(report['readings'])} readings")
    # Fields came from customs and devices: a line break in one must not fake a line of the report.
    return "\n".join(printable(line, None) for line in lines)

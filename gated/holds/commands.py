"""Customs' signed hold commands (``gated.hold/1``): the rules a command's fields follow
(``parse_command``) and applying one inside the caller's transaction (``apply_command_in``).
The signature was verified before a command gets here (``gated.hold_commands``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, insert, select

from gated.clock import rfc3339
from gated.errors import ContainerNumberError, HoldListError
from gated.holds.model import (
    MAX_REASON,
    SCHEMA,
    HoldCommandResult,
    Place,
    Release,
    Sync,
    VerifiedCommand,
    check_agency,
    check_message_id,
    check_place,
    check_release,
    describe,
    source_id,
)
from gated.holds.store import HoldStore, Transaction, hold_commands, holds, holds_digest


def apply_command_in(tx: Transaction, command: VerifiedCommand) -> HoldCommandResult:
    """Validate and apply one command whose signature verified, inside ``tx``
    (the caller stores the acknowledgement and the audit record in the same one). Its id is
    spent for its key whatever the outcome, so a replay changes nothing; invalid commands come
    back with ``applied=False`` and the reason. Only a storage failure raises."""
    payload = command.payload
    key = command.key_id
    raw_action = payload.get("action")
    action = raw_action if raw_action in ("place", "release", "sync") else None
    try:
        command_id = check_message_id(payload.get("id"))
    except HoldListError as error:
        return HoldCommandResult(None, action, False, False, str(error), key=key)
    HoldStore.lock(tx.conn)
    source = source_id(f"{key}:{command_id}")
    earlier = tx.conn.execute(
        select(hold_commands.c.applied, hold_commands.c.reason).where(
            hold_commands.c.key_id == key, hold_commands.c.command_id == command_id
        )
    ).first()
    if earlier is not None:
        if earlier.applied:
            placed = tx.placed_by(source)
            done = (placed,) if placed is not None else tuple(tx.released_by(source))
            return HoldCommandResult(
                command_id, action, True, True, f"already applied: {earlier.reason}", done, key
            )
        reason = f"command id {command_id!r} of key {key!r} was used before (rejected: {earlier.reason})"
        return HoldCommandResult(command_id, action, False, False, reason[:MAX_REASON], key=key)
    newest = tx.conn.execute(
        select(func.max(hold_commands.c.issued_at)).where(hold_commands.c.key_id == key)
    ).scalar()
    if newest is not None and command.issued_at < newest:
        # A key's commands take effect in the order they were made: an older release arriving
        # late must not end a newer hold, nor an older sync vouch for the list again.
        reason = (
            f"made {rfc3339(command.issued_at)}, before key {key!r}'s newest command "
            f"({rfc3339(newest)}): out of order; send it again with a new ts"
        )
        return HoldCommandResult(command_id, action, False, False, reason, key=key)
    try:
        spec = parse_command(payload)
        if spec.agency not in command.agencies:
            raise HoldListError(f"key {key!r} may not act for agency {spec.agency}")
        result = _apply(tx, spec, command, command_id, source)
    except (HoldListError, ContainerNumberError) as error:
        result = HoldCommandResult(command_id, action, False, False, str(error), key=key)
    tx.conn.execute(
        insert(hold_commands).values(
            key_id=key,
            command_id=command_id,
            action=action,
            issued_at=command.issued_at,
            received_at=tx.now(),
            applied=result.applied,
            reason=result.reason[:MAX_REASON],
        )
    )
    return result


def _apply(
    tx: Transaction,
    spec: Place | Release | Sync,
    command: VerifiedCommand,
    command_id: str,
    source: str,
) -> HoldCommandResult:
    key = command.key_id
    if isinstance(spec, Place):
        record = tx.insert(spec, source)
        tx.changed(changed=True)
        return HoldCommandResult(command_id, "place", True, False, "hold placed", (record,), key)
    if isinstance(spec, Release):
        released = tx.release(spec, source)
        if not released:
            raise HoldListError(f"no active hold matches ({describe(spec)})")
        tx.changed(changed=True)
        return HoldCommandResult(
            command_id, "release", True, False, f"{len(released)} hold(s) released", tuple(released), key
        )
    active = tx.conn.execute(
        select(holds.c.container, holds.c.bill_of_lading, holds.c.hold_type).where(
            holds.c.released_at.is_(None), holds.c.agency == spec.agency
        )
    ).all()
    mine = [(row.container, row.bill_of_lading, row.hold_type) for row in active]
    if len(mine) != spec.count or (spec.digest is not None and spec.digest != holds_digest(mine)):
        # Customs' own word that the list is out of step: it is stale until a sync matches.
        tx.mark_out_of_step()
        what = "count" if len(mine) != spec.count else "digest"
        reason = (
            f"out of step with customs ({what}): {spec.agency} has {spec.count} active holds, "
            f"gated has {len(mine)}; the hold list is stale until a sync matches"
        )
        return HoldCommandResult(command_id, "sync", False, False, reason, key=key, out_of_step=True)
    tx.confirm(min(command.issued_at, tx.now()), f"key:{key}")
    return HoldCommandResult(
        command_id,
        "sync",
        True,
        False,
        f"hold list confirmed: {len(mine)} active {spec.agency} holds",
        (),
        key,
    )


_COMMAND_KEYS = frozenset(
    {
        "schema",
        "id",
        "action",
        "container",
        "bill_of_lading",
        "agency",
        "hold_type",
        "code",
        "reference",
        "note",
        "count",
        "digest",
        # the signature and its key (checked before the command gets here)
        "key",
        "sig",
        # envelope fields a sender may add
        "site",
        "node",
        "seq",
        "ts",
    }
)
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
MAX_SYNC_COUNT = 100_000_000


def parse_command(payload: Mapping[Any, Any]) -> Place | Release | Sync:
    """The command's fields, checked (``HoldListError`` naming the first problem)."""
    unknown = sorted(str(key) for key in payload if key not in _COMMAND_KEYS)
    if unknown:
        shown = ", ".join(repr(key[:40]) for key in unknown[:5])
        raise HoldListError(f"unknown field(s) {shown}")
    if payload.get("schema") != SCHEMA:
        raise HoldListError(f"schema must be {SCHEMA!r}")
    action = payload.get("action")
    if action == "place":
        return check_place(
            container=payload.get("container"),
            bill_of_lading=payload.get("bill_of_lading"),
            agency=payload.get("agency"),
            hold_type=payload.get("hold_type"),
            code=payload.get("code"),
            reference=payload.get("reference"),
            note=payload.get("note"),
        )
    if action == "release":
        release = check_release(
            hold_id=None,
            container=payload.get("container"),
            bill_of_lading=payload.get("bill_of_lading"),
            agency=_required("agency", payload),
            hold_type=_required("hold_type", payload),
            code=payload.get("code"),
            reference=payload.get("reference"),
        )
        assert release.agency is not None  # required above
        return release
    if action == "sync":
        count = payload.get("count")
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_SYNC_COUNT:
            raise HoldListError("count must be a whole number of active holds, 0 or more")
        digest = payload.get("digest")
        if digest is not None and (not isinstance(digest, str) or not _DIGEST.fullmatch(digest)):
            raise HoldListError("digest must be 'sha256:' and 64 lower-case hex digits")
        extra = sorted(
            {"container", "bill_of_lading", "hold_type", "code", "reference", "note"} & set(payload)
        )
        if extra:
            raise HoldListError(f"a sync names an agency and a count, not {', '.join(extra)}")
        return Sync(agency=check_agency(_required("agency", payload)), count=count, digest=digest)
    raise HoldListError("action must be 'place', 'release' or 'sync'")


def _required(key: str, payload: Mapping[Any, Any]) -> object:
    if payload.get(key) is None:
        raise HoldListError(f"{key} is required")
    return payload[key]

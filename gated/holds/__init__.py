"""The customs hold list: holds per container and per bill of lading, the manifest that links them.

A container is gate-eligible only when no active hold exists on it or on any bill of lading (B/L) the
manifest says it carries. History is kept: a release stamps ``released_at`` on the hold, nothing is
deleted or overwritten. Holds arrive three ways: an operator's imported files (CSV or JSON lines),
customs' signed MQTT commands (``gated.hold/1`` on ``holds/cmd``, verified in
``gated.hold_commands``) and the operator's ``gated holds`` commands; every change names its actor.

The list counts as loaded and fresh only from an authenticated full view: an operator's import or
customs' signed ``sync`` statement (so many active holds of that agency, as of then) that matches
what gated holds. A single command never makes it so: anyone who could forge one could otherwise
switch the freshness guard off.

The modules: ``model`` (records, results, the checks on every value), ``store`` (``HoldStore``, the
tables, the list's state, the sync digest), ``commands`` (customs' signed commands), ``imports``
(the operator's files).
"""

from gated.holds.commands import MAX_SYNC_COUNT, parse_command
from gated.holds.imports import MAX_FUTURE, MAX_IMPORT_AGE, SHRINK_FLOOR
from gated.holds.model import (
    MAX_ACTOR,
    MAX_AGENCY,
    MAX_BILL_OF_LADING,
    MAX_CODE,
    MAX_DIGEST,
    MAX_HOLD_TYPE,
    MAX_KEY_ID,
    MAX_MESSAGE_ID,
    MAX_NOTE,
    MAX_REASON,
    MAX_REFERENCE,
    MAX_SOURCE_ID,
    SCHEMA,
    CommandAction,
    HoldCommandResult,
    HoldListState,
    HoldRecord,
    ImportKind,
    ImportResult,
    VerifiedCommand,
    normalise_bill_of_lading,
    normalise_container,
)
from gated.holds.store import HoldStore, hold_commands, holdlist_state, holds, holds_digest, manifest

__all__ = [
    "MAX_ACTOR",
    "MAX_AGENCY",
    "MAX_BILL_OF_LADING",
    "MAX_CODE",
    "MAX_DIGEST",
    "MAX_FUTURE",
    "MAX_HOLD_TYPE",
    "MAX_IMPORT_AGE",
    "MAX_KEY_ID",
    "MAX_MESSAGE_ID",
    "MAX_NOTE",
    "MAX_REASON",
    "MAX_REFERENCE",
    "MAX_SOURCE_ID",
    "MAX_SYNC_COUNT",
    "SCHEMA",
    "SHRINK_FLOOR",
    "CommandAction",
    "HoldCommandResult",
    "HoldListState",
    "HoldRecord",
    "HoldStore",
    "ImportKind",
    "ImportResult",
    "VerifiedCommand",
    "hold_commands",
    "holdlist_state",
    "holds",
    "holds_digest",
    "manifest",
    "normalise_bill_of_lading",
    "normalise_container",
    "parse_command",
]

"""A customs system for tests: its signing key (made here, never committed), signed commands, and
the config block that makes gated trust it."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from gated.clock import rfc3339
from gated.holds import SCHEMA, HoldStore, VerifiedCommand
from gated.signing import public_key_text, sign_command

KEY_ID = "cbp-test"
AGENCIES = ("CBP", "USDA")
# A fixed seed, so every test run signs the same way (the key only exists inside the tests).
PRIVATE_KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"gated tests: customs key").digest())
PUBLIC_KEY = public_key_text(PRIVATE_KEY.public_key())
# Another key customs does not own: what an attacker can sign with.
ROGUE_KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"gated tests: rogue key").digest())
_ids = itertools.count(1)


def keys_toml(key_id: str = KEY_ID, agencies: Iterable[str] = AGENCIES) -> str:
    """The ``[[holds.customs_keys]]`` block of a gated config that trusts the test key."""
    listed = ", ".join(f'"{agency}"' for agency in agencies)
    return f'[[holds.customs_keys]]\nid = "{key_id}"\npublic_key = "{PUBLIC_KEY}"\nagencies = [{listed}]\n'


def keys_config(key_id: str = KEY_ID, agencies: Iterable[str] = AGENCIES) -> list[dict[str, Any]]:
    """The same as a config dict's ``holds.customs_keys``."""
    return [{"id": key_id, "public_key": PUBLIC_KEY, "agencies": list(agencies)}]


def write_private_key(path: Path) -> Path:
    """The test key as the PEM file ``gated holds send --key`` takes (mode 0600)."""
    path.write_bytes(PRIVATE_KEY.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    path.chmod(0o600)
    return path


def command(action: str, *, id: str | None = None, **fields: Any) -> dict[str, Any]:
    """An unsigned ``gated.hold/1`` command (a fresh id unless given)."""
    return {"schema": SCHEMA, "id": id or f"cmd-{next(_ids)}", "action": action, **fields}


def signed(
    payload: Mapping[str, Any],
    *,
    ts: datetime | None = None,
    key: Ed25519PrivateKey = PRIVATE_KEY,
    key_id: str = KEY_ID,
) -> dict[str, Any]:
    """``payload`` made now (or at ``ts``) and signed as customs signs it."""
    return sign_command({**payload, "ts": rfc3339(ts or datetime.now(UTC))}, key, key_id)


def sync(count: int, agency: str = "CBP", **fields: Any) -> dict[str, Any]:
    """A signed sync: ``agency`` has ``count`` active holds."""
    return signed(command("sync", agency=agency, count=count, **fields))


def verified(
    payload: Mapping[str, Any],
    *,
    key_id: str = KEY_ID,
    agencies: Iterable[str] = AGENCIES,
    issued_at: datetime | None = None,
) -> VerifiedCommand:
    """``payload`` as the daemon hands it to the hold list once its signature verified."""
    when = issued_at or datetime.now(UTC) - timedelta(seconds=1)
    return VerifiedCommand(key_id=key_id, agencies=frozenset(agencies), issued_at=when, payload=payload)


def confirm_hold_list(holds: HoldStore, folder: Path) -> None:
    """An operator confirms the hold list as it stands, as of now (an import without new holds)."""
    empty = folder / "confirm-holds.csv"
    empty.write_text("container,agency,hold_type\n", encoding="utf-8")
    holds.import_file(empty, "holds", allow_empty=True, reason="tests: the list as it stands is complete")

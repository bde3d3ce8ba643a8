"""Signed hold commands: what a signature covers, what breaks it, and how key files are guarded."""

from __future__ import annotations

import base64
import json
import math
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    NoEncryption,
    PrivateFormat,
)
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gated.errors import SignatureError
from gated.signing import (
    canonical_bytes,
    generate_private_key_file,
    load_private_key,
    public_key_from_text,
    public_key_text,
    sign_command,
    verify_command,
)

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
PUBLIC = KEY.public_key()

COMMAND: dict[str, Any] = {
    "schema": "gated.hold/1",
    "id": "cbp-20261204-0001",
    "action": "place",
    "container": "MSKU4135329",
    "agency": "CBP",
    "hold_type": "customs",
    "code": "1H",
    "note": "Zürich → exam",
    "ts": "2026-12-04T15:00:00Z",
}

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
commands = st.dictionaries(st.text(max_size=12).filter(lambda k: k != "sig"), json_values, max_size=6)


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def test_canonical_form_is_sorted_compact_utf8_without_sig() -> None:
    # Written out by hand: another implementation (customs' own) must produce exactly these bytes.
    expected = (
        '{"action":"place","agency":"CBP","code":"1H","container":"MSKU4135329",'
        '"hold_type":"customs","id":"cbp-20261204-0001","note":"Zürich → exam",'
        '"schema":"gated.hold/1","ts":"2026-12-04T15:00:00Z"}'
    ).encode()
    assert canonical_bytes({**COMMAND, "sig": "anything"}) == expected
    # The key id is signed too, in its sorted place.
    signed = sign_command(COMMAND, KEY, "cbp-2026")
    covered = expected.replace(b'"id":"cbp-20261204-0001",', b'"id":"cbp-20261204-0001","key":"cbp-2026",')
    PUBLIC.verify(base64.b64decode(signed["sig"]), covered)


def test_sign_and_verify_round_trip() -> None:
    signed = sign_command({**COMMAND, "key": "stale", "sig": "stale"}, KEY, "cbp-2026")
    assert signed["key"] == "cbp-2026"
    assert len(base64.b64decode(signed["sig"], validate=True)) == 64
    assert {k: v for k, v in signed.items() if k not in ("key", "sig")} == COMMAND
    assert "key" not in COMMAND and "sig" not in COMMAND  # the input is not changed
    verify_command(signed, PUBLIC)


def test_received_json_layout_does_not_matter() -> None:
    signed = sign_command(COMMAND, KEY, "cbp-2026")
    for text in (
        json.dumps(dict(reversed(list(signed.items())))),  # other key order, ASCII escapes
        json.dumps(signed, indent=3, ensure_ascii=False),
        json.dumps(signed, separators=(" , ", " :  ")),
    ):
        verify_command(json.loads(text), PUBLIC)


def test_another_key_does_not_verify() -> None:
    signed = sign_command(COMMAND, OTHER_KEY, "cbp-2026")
    with pytest.raises(SignatureError, match="does not verify"):
        verify_command(signed, PUBLIC)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("key", "usda-2026"),
        ("ts", "2026-12-04T15:00:01Z"),
        ("id", "cbp-20261204-0002"),
        ("action", "release"),
        ("container", "MSKU4135330"),
        ("count", 3),
        ("note", "Zurich -> exam"),
    ],
)
def test_changing_a_signed_field_breaks_the_signature(field: str, value: Any) -> None:
    signed = sign_command(COMMAND, KEY, "cbp-2026")
    with pytest.raises(SignatureError, match="does not verify"):
        verify_command({**signed, field: value}, PUBLIC)


@pytest.mark.parametrize("dropped", ["key", "ts", "id", "note"])
def test_dropping_a_signed_field_breaks_the_signature(dropped: str) -> None:
    signed = sign_command(COMMAND, KEY, "cbp-2026")
    del signed[dropped]
    with pytest.raises(SignatureError):
        verify_command(signed, PUBLIC)


@settings(max_examples=150, deadline=None)
@given(command=commands, key_id=st.text(min_size=1, max_size=10))
def test_any_command_round_trips_through_json(command: dict[str, Any], key_id: str) -> None:
    signed = sign_command(command, KEY, key_id)
    verify_command(json.loads(json.dumps(signed, indent=1)), PUBLIC)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(command=commands, field=st.text(max_size=12), value=json_values)
def test_any_change_of_a_field_breaks_the_signature(command: dict[str, Any], field: str, value: Any) -> None:
    """Adding a field, or giving one another value or another type (1 vs 1.0 vs true vs "1")."""
    signed = sign_command(command, KEY, "k1")
    field = field if field != "sig" else "sig2"
    assume(field not in signed or canonical(signed[field]) != canonical(value))
    changed = {**signed, field: value}
    with pytest.raises(SignatureError, match="does not verify"):
        verify_command(json.loads(json.dumps(changed)), PUBLIC)


@pytest.mark.parametrize(
    "sig",
    [
        None,
        64,
        ["a"],
        {"sig": "x"},
        "",
        "not base64 at all!",
        base64.b64encode(bytes(63)).decode(),
        base64.b64encode(bytes(65)).decode(),
        base64.b64encode(bytes(64)).decode().rstrip("="),  # padding missing
        base64.urlsafe_b64encode(b"\xff" * 64).decode(),  # the URL-safe alphabet
        base64.b64encode(bytes(64)).decode()[:40] + "\n" + base64.b64encode(bytes(64)).decode()[40:],
        "ä" * 88,
        "\ud800" * 88,
    ],
)
def test_malformed_signatures_are_refused(sig: Any) -> None:
    signed = sign_command(COMMAND, KEY, "cbp-2026")
    with pytest.raises(SignatureError):
        verify_command({**signed, "sig": sig}, PUBLIC)


def test_a_valid_signature_spelled_another_way_is_refused() -> None:
    """64 bytes leave 4 unused bits in the last base64 digit: only the spelling with zeros counts."""
    signed = sign_command(COMMAND, KEY, "cbp-2026")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(signed["sig"][-3])
    respelled = signed["sig"][:-3] + alphabet[last | 1] + "=="
    assert base64.b64decode(respelled) == base64.b64decode(signed["sig"])
    with pytest.raises(SignatureError, match="canonical"):
        verify_command({**signed, "sig": respelled}, PUBLIC)


def test_a_missing_signature_is_refused() -> None:
    with pytest.raises(SignatureError, match="unsigned"):
        verify_command({**COMMAND, "key": "cbp-2026"}, PUBLIC)


def test_values_without_one_json_form_are_refused() -> None:
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    looped: list[Any] = []
    looped.append(looped)
    for bad in (
        {"count": math.nan},
        {"count": math.inf},
        {"note": "\udc80"},
        {"note": b"bytes"},
        {"note": {1: "x"}},  # would sign alike with {"1": "x"}
        {"note": {1: "x", "1": "y"}},
        {"note": deep},
        {"note": looped},
        {"note": object()},
    ):
        with pytest.raises(SignatureError):
            canonical_bytes(bad)
        with pytest.raises(SignatureError):
            sign_command(bad, KEY, "k")
        with pytest.raises(SignatureError):
            verify_command({**bad, "sig": base64.b64encode(bytes(64)).decode()}, PUBLIC)


hostile_keys = st.text(max_size=6) | st.integers() | st.none() | st.booleans() | st.floats()
hostile_scalars = (
    json_scalars
    | st.floats()
    | st.sampled_from(["\ud800", "a\udfff", b"raw", (1, 2), frozenset({1})])
    | st.binary(max_size=8)
)
hostile_values = st.recursive(
    hostile_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(hostile_keys, children, max_size=3),
    max_leaves=8,
)
signatures = (
    hostile_values
    | st.binary(min_size=60, max_size=68).map(lambda raw: base64.b64encode(raw).decode())
    | st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=", max_size=90)
)


@settings(max_examples=300, deadline=None)
@given(
    command=st.dictionaries(hostile_keys, hostile_values, max_size=5) | hostile_values,
    sig=signatures,
    with_sig=st.booleans(),
)
def test_arbitrary_input_raises_nothing_but_signature_error(command: Any, sig: Any, with_sig: bool) -> None:
    if with_sig and isinstance(command, dict):
        command = {**command, "sig": sig}
    with pytest.raises(SignatureError):
        verify_command(command, PUBLIC)
    try:
        canonical_bytes(command)
        sign_command(command, KEY, "k")
    except SignatureError:
        pass


def test_public_key_text_round_trip() -> None:
    text = public_key_text(PUBLIC)
    assert len(base64.b64decode(text)) == 32
    restored = public_key_from_text(text)
    verify_command(sign_command(COMMAND, KEY, "k"), restored)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "abc",
        base64.b64encode(bytes(31)).decode(),
        base64.b64encode(bytes(33)).decode(),
        " " * 44,
        5,
        None,
    ],
)
def test_bad_public_key_text_is_refused(text: Any) -> None:
    with pytest.raises(SignatureError):
        public_key_from_text(text)


def test_generated_key_file_is_private_and_loads(tmp_path: Path) -> None:
    path = tmp_path / "cbp-2026.pem"
    old_umask = os.umask(0)  # the mode must not depend on the caller's umask
    try:
        public = generate_private_key_file(path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith("-----BEGIN PRIVATE KEY-----\n")  # PKCS8, unencrypted
    loaded = load_private_key(str(path))
    assert public_key_text(loaded.public_key()) == public_key_text(public)


def test_an_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "cbp-2026.pem"
    generate_private_key_file(path)
    before = path.read_bytes()
    with pytest.raises(SignatureError, match="exists"):
        generate_private_key_file(path)
    assert path.read_bytes() == before


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cbp-2026.pem"
    generate_private_key_file(path)
    for mode in (0o644, 0o640, 0o604, 0o620):
        path.chmod(mode)
        with pytest.raises(SignatureError, match=f"chmod 600 {path}"):
            load_private_key(path)


def write_private(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def test_unusable_key_files_are_refused_by_name(tmp_path: Path) -> None:
    p256 = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
    )
    encrypted = KEY.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(b"secret"))
    raw = KEY.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    cases = {
        tmp_path / "missing.pem": "cannot read",
        write_private(tmp_path / "p256.pem", p256): "not an Ed25519 key",
        write_private(tmp_path / "encrypted.pem", encrypted): "encrypted",
        write_private(tmp_path / "raw.key", raw): "not a PEM",
        write_private(tmp_path / "garbage.pem", b"-----BEGIN PRIVATE KEY-----\nxx\n"): "not a PEM PKCS8",
        write_private(tmp_path / "empty.pem", b""): "not a PEM",
        tmp_path: "not a regular file",
    }
    for path, message in cases.items():
        with pytest.raises(SignatureError, match=message) as error:
            load_private_key(path)
        assert str(path) in str(error.value)

"""Ed25519 signatures on customs hold commands, shared by gated (verifying) and customs' tools (signing).

A command is signed over its canonical form: the JSON object without ``sig`` (so ``key`` is signed
too), keys sorted, no spaces, UTF-8. Key order and whitespace of the JSON as sent therefore do not
matter, while any change to a field's name, value or type does. Every failure, for any input, is a
``SignatureError`` with a short message saying what is wrong.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)

from gated.errors import SignatureError

SIGNATURE_FIELD = "sig"
KEY_FIELD = "key"
SIGNATURE_BYTES = 64
PUBLIC_KEY_BYTES = 32
MAX_KEY_FILE_BYTES = 16384


def canonical_bytes(command: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: ``command`` without ``sig`` as sorted, compact UTF-8 JSON.

    Raises ``SignatureError`` for anything with no single JSON form: a key that is not a string,
    NaN or Infinity, a lone surrogate, a value JSON cannot hold, nesting too deep to encode.
    """
    if not isinstance(command, Mapping):
        raise SignatureError(f"a signed command must be a JSON object, not {type(command).__name__}")
    unsigned = {key: value for key, value in command.items() if key != SIGNATURE_FIELD}
    try:
        text = json.dumps(
            unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
        data = text.encode("utf-8")
    except (ValueError, TypeError, RecursionError) as error:
        # ValueError covers NaN/Infinity, circular references and lone surrogates (UnicodeEncodeError).
        raise SignatureError(f"command has no canonical JSON form: {_short(str(error))}") from None
    _require_string_keys(unsigned)  # after dumps, which has refused circular references
    return data


def sign_command(command: Mapping[str, Any], private_key: Ed25519PrivateKey, key_id: str) -> dict[str, Any]:
    """A copy of ``command`` with ``key`` set to ``key_id`` and ``sig`` the base64 Ed25519 signature."""
    if not isinstance(command, Mapping):
        raise SignatureError(f"a signed command must be a JSON object, not {type(command).__name__}")
    if not isinstance(key_id, str) or not key_id:
        raise SignatureError("a key id must be a non-empty string")
    signed = {key: value for key, value in command.items() if key != SIGNATURE_FIELD}
    signed[KEY_FIELD] = key_id
    signature = private_key.sign(canonical_bytes(signed))
    signed[SIGNATURE_FIELD] = base64.b64encode(signature).decode("ascii")
    return signed


def verify_command(command: Mapping[str, Any], public_key: Ed25519PublicKey) -> None:
    """Return when ``command``'s ``sig`` is ``public_key``'s signature over its canonical form;
    raise ``SignatureError`` (and nothing else) otherwise."""
    if not isinstance(command, Mapping):
        raise SignatureError(f"a signed command must be a JSON object, not {type(command).__name__}")
    if SIGNATURE_FIELD not in command:
        raise SignatureError("unsigned command (no 'sig')")
    encoded = command[SIGNATURE_FIELD]
    if not isinstance(encoded, str):
        raise SignatureError(f"'sig' must be a base64 string, not {type(encoded).__name__}")
    signature = _strict_base64("'sig'", encoded)
    if len(signature) != SIGNATURE_BYTES:
        raise SignatureError(f"'sig' is {len(signature)} bytes, an Ed25519 signature is {SIGNATURE_BYTES}")
    message = canonical_bytes(command)
    try:
        public_key.verify(signature, message)
    except InvalidSignature:
        raise SignatureError("signature does not verify") from None


def public_key_from_text(text: str) -> Ed25519PublicKey:
    """The public key from its config form: base64 of the 32 raw bytes."""
    if not isinstance(text, str):
        raise SignatureError(f"a public key must be a base64 string, not {type(text).__name__}")
    raw = _strict_base64("public key", text)
    if len(raw) != PUBLIC_KEY_BYTES:
        raise SignatureError(
            f"public key is {len(raw)} bytes, an Ed25519 public key is {PUBLIC_KEY_BYTES} "
            "(base64 of the raw key, as printed by 'gated holds keygen')"
        )
    try:
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as error:
        raise SignatureError(f"not an Ed25519 public key: {error}") from None


def public_key_text(key: Ed25519PublicKey) -> str:
    """The config form of a public key: base64 of its 32 raw bytes."""
    return base64.b64encode(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode("ascii")


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """Read an unencrypted PEM PKCS8 Ed25519 private key that only its owner may read."""
    name = str(path)
    try:
        descriptor = os.open(name, os.O_RDONLY)
    except OSError as error:
        raise SignatureError(f"{name}: cannot read the key file: {error.strerror}") from None
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise SignatureError(f"{name}: not a regular file")
        if mode & 0o077:
            raise SignatureError(
                f"{name}: the private key is accessible by group or others (mode {mode & 0o777:o}); "
                f"chmod 600 {name}"
            )
        with os.fdopen(descriptor, "rb", closefd=False) as handle:
            data = handle.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as error:
        raise SignatureError(f"{name}: cannot read the key file: {error.strerror}") from None
    finally:
        os.close(descriptor)
    if len(data) > MAX_KEY_FILE_BYTES or b"-----BEGIN " not in data:
        raise SignatureError(f"{name}: not a PEM private key file")
    try:
        key = load_pem_private_key(data, password=None)
    except TypeError:
        raise SignatureError(f"{name}: the key is encrypted; gated needs an unencrypted key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise SignatureError(f"{name}: not a PEM PKCS8 private key gated can read") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{name}: not an Ed25519 key ({type(key).__name__})")
    return key


def generate_private_key_file(path: str | Path) -> Ed25519PublicKey:
    """Write a new Ed25519 private key to ``path`` (PEM PKCS8, mode 0600, never over an existing
    file) and return its public half."""
    name = str(path)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    try:
        # Created with mode 0600 in one step: the key is never readable by others, even briefly.
        descriptor = os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        raise SignatureError(f"{name}: exists; refusing to overwrite a key file") from None
    except OSError as error:
        raise SignatureError(f"{name}: cannot create the key file: {error.strerror}") from None
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        Path(name).unlink(missing_ok=True)
        raise SignatureError(f"{name}: cannot write the key file: {error.strerror}") from None
    return key.public_key()


def _strict_base64(what: str, text: str) -> bytes:
    """Standard base64 with padding, no whitespace, and only its one canonical spelling."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"{what} is not valid base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise SignatureError(f"{what} is not canonical base64")
    return raw


def _require_string_keys(value: Any) -> None:
    """Refuse non-string object keys: json.dumps would turn 1 into "1" and so sign two objects alike."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, Mapping):
            for key in item:
                if not isinstance(key, str):
                    raise SignatureError(f"object key {_short(repr(key))} is not a string")
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."

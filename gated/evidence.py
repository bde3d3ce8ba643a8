"""A content-addressed store for evidence files (NII scan images, OCR crops).

Readings never carry images inline: they carry an ``Evidence`` reference (URI, media type, sha256,
size) and the bytes live here, once per distinct content::

    <root>/<first two hex digits of the sha256>/<sha256>

The URI of a stored file is ``evidence://sha256/<64 lower-case hex digits>``: it names the content,
not a place, so any node holding the same store (or a copy of it) resolves it with ``path_for``.

A file is written under a temporary name in its final folder, flushed with ``fsync``, renamed into
place and the folder synced, so a reader never sees a half-written object and a crash leaves at most
a stray ``.*.tmp`` file. Storing content that is already present is a no-op. Files are copied and
hashed in chunks of ``CHUNK`` bytes: a 500 MB scan never sits in memory.

Sources come from outside (a scanner's drop folder), so a source is opened only when it is a regular
file reached without following a symbolic link (``open_regular``): a link to a secret, a FIFO that
would block, a device or a folder is refused with ``NotRegularFile``. Stored objects are ``0640``
and the store's folders ``0750``: scan images are not for every local account.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from gated.errors import EvidenceRejected, NotRegularFile, StorageError
from gated.model import Evidence

URI_PREFIX = "evidence://sha256/"
CHUNK = 1 << 20
"""Bytes read or written at a time."""

FILE_MODE = 0o640
"""Mode of a stored object: the daemon's account reads and writes it, its group reads it."""

FOLDER_MODE = 0o750
"""Mode of the store's folders it creates."""

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_KINDS = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a folder"),
)


@dataclass(frozen=True, slots=True)
class Digest:
    """The sha256 (lower-case hex) and size in bytes of some content."""

    sha256: str
    bytes: int


def uri_for(sha256: str) -> str:
    """The evidence URI of the content with this sha256."""
    return URI_PREFIX + _check_sha256(sha256)


def sha256_from_uri(uri: str) -> str:
    """The sha256 an evidence URI names; ``ValueError`` for anything else."""
    if not uri.startswith(URI_PREFIX):
        raise ValueError(f"{uri!r} is not an evidence URI ({URI_PREFIX}<hex>)")
    return _check_sha256(uri[len(URI_PREFIX) :])


def _kind(mode: int) -> str:
    for test, kind in _KINDS:
        if test(mode):
            return kind
    return "not a regular file"


def open_regular(path: Path, *, refuse_hard_links: bool = False) -> BinaryIO:
    """Open ``path`` for reading, only if it is a regular file and not a symbolic link.

    The type is taken from the opened descriptor (``fstat``), so a file swapped for a link after
    any earlier look is still refused. ``NotRegularFile`` otherwise (and, with
    ``refuse_hard_links``, for a file with a second name elsewhere); ``OSError`` as the system
    raised it (``FileNotFoundError`` for a file not there)."""
    shown = repr(str(path))
    # Looked at first only so that a device is never opened: opening one can have effects.
    mode = os.lstat(path).st_mode
    if not stat.S_ISREG(mode):
        raise NotRegularFile(f"{shown} is {_kind(mode)}, not a regular file")
    try:
        descriptor = os.open(path, _OPEN_FLAGS)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise NotRegularFile(f"{shown} is a symbolic link, not a regular file") from error
        raise
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFile(f"{shown} is {_kind(info.st_mode)}, not a regular file")
        if refuse_hard_links and info.st_nlink > 1:
            raise NotRegularFile(f"{shown} has {info.st_nlink} hard links, expected 1")
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def _digest(source: BinaryIO, shown: str, max_bytes: int | None) -> Digest:
    hasher = hashlib.sha256()
    size = 0
    if max_bytes is not None and os.fstat(source.fileno()).st_size > max_bytes:
        raise EvidenceRejected(f"{shown}: larger than {max_bytes} bytes")
    while chunk := source.read(CHUNK):
        size += len(chunk)
        if max_bytes is not None and size > max_bytes:
            raise EvidenceRejected(f"{shown}: larger than {max_bytes} bytes")
        hasher.update(chunk)
    return Digest(hasher.hexdigest(), size)


def digest_file(path: Path, *, max_bytes: int | None = None) -> Digest:
    """Hash a regular file in chunks. ``EvidenceRejected`` once it grows past ``max_bytes`` or when
    it is not a regular file (``NotRegularFile``); ``StorageError`` when it cannot be read."""
    shown = repr(str(path))
    try:
        with open_regular(path) as source:
            return _digest(source, shown, max_bytes)
    except OSError as error:
        raise StorageError(f"{shown}: cannot read: {error}") from error


def _check_sha256(sha256: str) -> str:
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise ValueError(f"{sha256!r} is not a sha256 in lower-case hex (64 digits)")
    return sha256


def _sync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class EvidenceStore:
    """Evidence files under ``root``, addressed by their sha256."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path_for(self, sha256: str) -> Path:
        """Where the content with this sha256 lives (whether or not it is stored yet).

        ``ValueError`` unless ``sha256`` is 64 lower-case hex digits."""
        _check_sha256(sha256)
        return self.root / sha256[:2] / sha256

    def contains(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def open(self, sha256: str) -> BinaryIO:
        """The stored content, opened for reading in binary; ``StorageError`` when absent."""
        path = self.path_for(sha256)
        try:
            return path.open("rb")
        except OSError as error:
            raise StorageError(f"{path}: cannot open evidence: {error}") from error

    def put_bytes(self, data: bytes, media_type: str) -> Evidence:
        """Store ``data`` (already in memory) and return its reference."""
        sha256 = hashlib.sha256(data).hexdigest()
        evidence = Evidence(uri_for(sha256), media_type, sha256, len(data))
        if self._present(evidence):
            return evidence
        with self._staging(sha256) as (target, temp):
            try:
                view = memoryview(data)
                for start in range(0, len(view), CHUNK):
                    target.write(view[start : start + CHUNK])
            except OSError as error:
                raise StorageError(f"{temp}: cannot write evidence: {error}") from error
        return evidence

    def put_file(
        self,
        path: Path,
        media_type: str,
        *,
        expected_sha256: str | None = None,
        max_bytes: int | None = None,
    ) -> Evidence:
        """Copy the regular file at ``path`` into the store (the source is left where it is).

        ``NotRegularFile`` (an ``EvidenceRejected``) when ``path`` is a symbolic link, a FIFO, a
        device or anything else but a regular file; otherwise as ``put_opened``."""
        shown = repr(str(path))
        try:
            source = open_regular(Path(path))
        except OSError as error:
            raise StorageError(f"{shown}: cannot read: {error}") from error
        with source:
            return self.put_opened(
                source, media_type, name=str(path), expected_sha256=expected_sha256, max_bytes=max_bytes
            )

    def put_opened(
        self,
        source: BinaryIO,
        media_type: str,
        *,
        name: str,
        expected_sha256: str | None = None,
        max_bytes: int | None = None,
    ) -> Evidence:
        """Copy an opened, seekable file (from ``open_regular``) into the store; ``name`` is only
        for messages.

        The file is hashed first, then copied while being hashed again, both through the same
        descriptor: the stored object is verified to be exactly what was hashed, and a source that
        changed in between is refused. ``EvidenceRejected`` when the content does not hash to
        ``expected_sha256`` (compared case-insensitively) or is larger than ``max_bytes``;
        ``StorageError`` for any I/O failure.
        """
        shown = repr(name)
        try:
            digest = _digest(source, shown, max_bytes)
            source.seek(0)
        except OSError as error:
            raise StorageError(f"{shown}: cannot read: {error}") from error
        if expected_sha256 is not None and expected_sha256.lower() != digest.sha256:
            raise EvidenceRejected(f"{shown}: sha256 is {digest.sha256}, expected {expected_sha256.lower()}")
        evidence = Evidence(uri_for(digest.sha256), media_type, digest.sha256, digest.bytes)
        if self._present(evidence):
            return evidence
        with self._staging(digest.sha256) as (target, temp):
            hasher = hashlib.sha256()
            size = 0
            try:
                while chunk := source.read(CHUNK):
                    hasher.update(chunk)
                    size += len(chunk)
                    target.write(chunk)
            except OSError as error:
                raise StorageError(f"{shown} -> {temp}: cannot copy evidence: {error}") from error
            if (hasher.hexdigest(), size) != (digest.sha256, digest.bytes):
                raise StorageError(f"{shown}: changed while being stored")
        return evidence

    def _present(self, evidence: Evidence) -> bool:
        """True when the content is already stored (a file of the right size at its path)."""
        path = self.path_for(evidence.sha256)
        try:
            return path.stat().st_size == evidence.bytes
        except FileNotFoundError:
            return False
        except OSError as error:
            raise StorageError(f"{path}: cannot inspect evidence: {error}") from error

    @contextlib.contextmanager
    def _staging(self, sha256: str) -> Iterator[tuple[BinaryIO, Path]]:
        """A temporary file in the object's folder, renamed into place when the block succeeds."""
        final = self.path_for(sha256)
        folder = final.parent
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=FOLDER_MODE)
            folder.mkdir(exist_ok=True, mode=FOLDER_MODE)
            # mkstemp opens with O_CREAT | O_EXCL | O_NOFOLLOW: never an existing file or a planted link.
            descriptor, name = tempfile.mkstemp(dir=folder, prefix=f".{sha256[:12]}.", suffix=".tmp")
        except OSError as error:
            raise StorageError(f"{folder}: cannot create evidence file: {error}") from error
        temp = Path(name)
        done = False
        try:
            with os.fdopen(descriptor, "wb") as target:
                os.fchmod(target.fileno(), FILE_MODE)
                yield target, temp
                target.flush()
                os.fsync(target.fileno())
            os.replace(temp, final)
            _sync_folder(folder)
            done = True
        except OSError as error:
            raise StorageError(f"{final}: cannot store evidence: {error}") from error
        finally:
            if not done:
                with contextlib.suppress(OSError):
                    temp.unlink()

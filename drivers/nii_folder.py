"""VACIS / NII scanners that hand over each scan through a drop folder.

The scanner writes, for every scan, an image file and a metadata file into the inbox folder. Each
is written under a temporary name (``*.tmp``, ``*.part`` or a name starting with ``.``, all ignored
here) and then renamed: the image first, the metadata last, so a metadata file that is present is
complete. The metadata file is a UTF-8 JSON object named ``<scan id>.json`` by convention::

    {
      "scan_id": "vacis-1-20260101T120000Z-0001",   1-128 characters of A-Z a-z 0-9 . _ -
      "container": "CSQU3054383",                    ISO 6346 number, or null when not known
      "scanner": "vacis-1",                          the scanner's own id, non-empty text
      "started_at": "2026-01-01T12:00:00Z",          RFC 3339 with an offset
      "finished_at": "2026-01-01T12:00:14.5Z",       RFC 3339, not before started_at
      "verdict": "clear",                            clear | suspect | inconclusive | not_scanned
      "image": "vacis-1-20260101T120000Z-0001.png",  a file name in the inbox (no folders), or
                                                     null only when the verdict is not_scanned
      "media_type": "image/png",                     e.g. image/png, image/tiff, application/dicom
      "sha256": "9f86d0...",                         optional: the image's sha256 as the scanner
                                                     computed it (hex, either case), or null
      "notes": "operator: dense area at the rear"    optional: text or null
    }

Other keys are ignored. A container number with a check digit that does not fit is kept as
printed and the reading's quality is ``uncertain`` (DOMAIN: flag, never correct).

What the driver does with a complete pair:

1. copies the image into the ``EvidenceStore`` (verifying the scanner's sha256 when given);
2. emits one ``Reading`` with source ``scan_result``, value ``{"scan_id", "container", "verdict",
   "scanner", "finished_at"}`` and the stored image attached as evidence; its quality is ``good``,
   ``uncertain`` for an inconclusive verdict or a doubtful container number, ``bad`` for
   ``not_scanned``; its id is derived from lane, device, scan id and image hash, so a scan handed
   over twice (e.g. after a crash) carries the same id and consumers drop the duplicate;
3. moves both files into ``inbox/done`` on the next step, once the reading has been handed to the
   sink: a crash in between hands the scan over again rather than losing it.

A metadata file whose image has not arrived waits ``image_grace`` seconds. Anything malformed (not
JSON, missing or mistyped fields, an image that never came, a hash mismatch, an image over
``max_bytes``) is moved, with its image when there is one, into the quarantine folder with a
``<metadata file name>.reason.txt`` next to it, and reported as a ``ProtocolError`` (counted and
logged by the driver loop). Nothing is ever deleted; a name already taken in ``done`` or the
quarantine gets a ``.1``, ``.2``... suffix. A missing inbox is ``DeviceUnavailable``.

Whatever is in the inbox is hostile until proven otherwise. A file is read only when it is a regular
file with one name, opened without following a symbolic link and checked on the opened descriptor
(``open_regular``): a metadata or image entry that is a symbolic link (to a secret, to
``/proc/self/environ``), a hard link, a FIFO (a read would block), a device, a socket or a folder is
never read. It is refused: counted in ``refused``, logged once as a warning, and moved (the entry
itself, never what a link points to) into the quarantine with its pair and a reason file. Names and
other text from the inbox appear in logs and errors only as ``repr()``, so a file name holding a
line break cannot forge a log line.
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import re
import stat
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field

from drivers.base import Driver
from gated.clock import Clock, rfc3339
from gated.errors import (
    ContainerNumberError,
    DeviceUnavailable,
    EvidenceRejected,
    NotRegularFile,
    ProtocolError,
    StorageError,
)
from gated.evidence import EvidenceStore, open_regular
from gated.iso6346 import ContainerNumber
from gated.model import Evidence, Kind, Quality, Reading, Source
from gated.settings import DeviceSettings, DriverContext

SOURCE = Source.SCAN_RESULT
"""The reading source of one scan's outcome."""

VERDICTS = frozenset({"clear", "suspect", "inconclusive", "not_scanned"})
MAX_METADATA_BYTES = 64 * 1024
"""A metadata file larger than this is malformed."""

MAX_PER_STEP = 16
MAX_LISTED = 10_000  # inbox names looked at per step (the first, in name order)
"""Most metadata files handled by one step, so a full inbox does not stall the loop."""

MAX_NAME_BYTES = 255
"""Longest image file name accepted, in UTF-8 bytes."""

TEMP_SUFFIXES = (".tmp", ".part", "~")
DONE = "done"
QUARANTINE = "quarantine"

_SCAN_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_MEDIA_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")
_READING_IDS = uuid.UUID("3f1f8a52-6b0e-4c8e-9d57-7a4c1b1e0c2a")
_SHOWN = 80
_REASON_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ScanMetadata:
    """One scan as the scanner described it, checked."""

    scan_id: str
    container: str | None
    container_check_digit_valid: bool
    scanner: str
    started_at: datetime
    finished_at: datetime
    verdict: str
    image: str | None
    media_type: str
    sha256: str | None
    notes: str | None


def is_temporary(name: str) -> bool:
    """True for names a writer uses before renaming (dotfiles, ``*.tmp``, ``*.part``, ``*~``)."""
    return name.startswith(".") or name.endswith(TEMP_SUFFIXES)


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


def _text(body: dict[str, Any], key: str, *, optional: bool = False, nullable: bool = False) -> str | None:
    """A text field. ``optional``: may be absent or null; ``nullable``: present, may be null."""
    if key not in body:
        if optional:
            return None
        raise ProtocolError(f"missing field {key!r}")
    value = body[key]
    if value is None and (optional or nullable):
        return None
    if not isinstance(value, str):
        raise ProtocolError(f"field {key!r} must be text, got {_show(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ProtocolError(f"field {key!r} is not valid Unicode text") from error
    return value


def _required(body: dict[str, Any], key: str) -> str:
    value = _text(body, key)
    assert value is not None
    return value


def _moment(body: dict[str, Any], key: str) -> datetime:
    text = _required(body, key)
    if not _RFC3339.fullmatch(text):
        raise ProtocolError(f"field {key!r} is not an RFC 3339 time with an offset: {_show(text)}")
    try:
        moment = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    except ValueError as error:
        raise ProtocolError(f"field {key!r} is not a valid time: {_show(text)}") from error
    return moment


def parse_metadata(raw: bytes) -> ScanMetadata:
    """Decode and check one metadata file; ``ProtocolError`` for anything wrong, nothing else."""
    if len(raw) > MAX_METADATA_BYTES:
        raise ProtocolError(f"metadata is {len(raw)} bytes, more than {MAX_METADATA_BYTES}")
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise ProtocolError(f"metadata is not UTF-8 JSON: {error}") from error
    if not isinstance(body, dict):
        raise ProtocolError(f"metadata must be a JSON object, got {type(body).__name__}")

    scan_id = _required(body, "scan_id")
    if not _SCAN_ID.fullmatch(scan_id):
        raise ProtocolError(f"scan_id {_show(scan_id)} must be 1-128 of A-Z a-z 0-9 . _ -")

    container = _text(body, "container", nullable=True)
    valid_check_digit = True
    if container is not None:
        try:
            number = ContainerNumber.parse(container, require_valid_check_digit=False)
        except ContainerNumberError as error:
            raise ProtocolError(f"field 'container': {error}") from error
        container = str(number)
        valid_check_digit = number.check_digit_valid

    scanner = _required(body, "scanner")
    if not scanner.strip() or len(scanner) > 128:
        raise ProtocolError(f"field 'scanner' must be 1-128 characters of text, got {_show(scanner)}")

    started_at = _moment(body, "started_at")
    finished_at = _moment(body, "finished_at")
    if finished_at < started_at:
        raise ProtocolError("finished_at is before started_at")

    verdict = _required(body, "verdict")
    if verdict not in VERDICTS:
        raise ProtocolError(f"verdict {_show(verdict)} is not one of {', '.join(sorted(VERDICTS))}")

    image = _text(body, "image", nullable=verdict == "not_scanned")
    if image is not None and (
        not image
        or len(image.encode("utf-8")) > MAX_NAME_BYTES
        or "/" in image
        or "\\" in image
        or "\x00" in image
        or is_temporary(image)
    ):
        raise ProtocolError(f"image {_show(image)} must be a plain file name in the inbox")
    if image is not None and image.endswith(".json"):
        raise ProtocolError(f"image {_show(image)} must not be a .json file")

    media_type = _required(body, "media_type")
    if not _MEDIA_TYPE.fullmatch(media_type):
        raise ProtocolError(f"media_type {_show(media_type)} is not a media type (type/subtype)")

    sha256 = _text(body, "sha256", optional=True)
    if sha256 is not None:
        if not _SHA256.fullmatch(sha256):
            raise ProtocolError(f"sha256 {_show(sha256)} is not 64 hex digits")
        sha256 = sha256.lower()

    notes = _text(body, "notes", optional=True)
    return ScanMetadata(
        scan_id=scan_id,
        container=container,
        container_check_digit_valid=valid_check_digit,
        scanner=scanner,
        started_at=started_at,
        finished_at=finished_at,
        verdict=verdict,
        image=image,
        media_type=media_type,
        sha256=sha256,
        notes=notes,
    )


def _free_name(folder: Path, name: str) -> Path:
    """``folder/name``, or ``folder/name.1``, ``.2``... when that is taken (by anything, even a
    dangling symbolic link)."""
    candidate = folder / name
    counter = 0
    while os.path.lexists(candidate) or os.path.lexists(folder / f"{candidate.name}.reason.txt"):
        counter += 1
        candidate = folder / f"{name}.{counter}"
    return candidate


def _move(source: Path, folder: Path) -> Path:
    """Move ``source`` (the entry itself, a link is not followed) into ``folder`` without replacing
    anything there."""
    folder.mkdir(parents=True, exist_ok=True)
    target = _free_name(folder, source.name)
    os.rename(source, target)
    return target


def _write_new(path: Path, text: str) -> None:
    """Create ``path`` with ``text``; a name already there, even as a planted link, is an error."""
    descriptor = os.open(path, _REASON_FLAGS, 0o640)
    with os.fdopen(descriptor, "w", encoding="utf-8") as target:
        target.write(text)


class NiiFolderDevice(DeviceSettings):
    driver: Literal["nii-folder"]
    inbox: str = Field(description="Where the scanner drops image + metadata pairs (relative to the config).")
    poll_interval_seconds: float = Field(0.5, gt=0, le=60)
    image_grace_seconds: float = Field(10.0, gt=0, description="How long metadata may wait for its image.")
    max_bytes: int = Field(2 * 1024**3, gt=0, description="Larger images are quarantined.")

    def with_paths(self, resolve: Callable[[str], str]) -> Self:
        return self.model_copy(update={"inbox": resolve(self.inbox)})


class NiiFolderDriver(Driver):
    """Picks up finished NII scans from a drop folder and reports each with its image as evidence."""

    kind = Kind.NII

    @classmethod
    def from_settings(cls, lane: str, settings: NiiFolderDevice, context: DriverContext) -> Self:
        return cls(lane, settings, evidence=context.evidence, clock=context.clock)

    def __init__(
        self,
        lane: str,
        settings: NiiFolderDevice,
        *,
        evidence: EvidenceStore,
        quarantine: Path | None = None,
        done: Path | None = None,
        clock: Clock | None = None,
        **kwargs: float,
    ) -> None:
        super().__init__(lane, settings.id, clock=clock, **kwargs)
        self.inbox = Path(settings.inbox)
        self.evidence = evidence
        self.quarantine = Path(quarantine) if quarantine is not None else self.inbox / QUARANTINE
        self.done = Path(done) if done is not None else self.inbox / DONE
        self.poll_interval = settings.poll_interval_seconds
        self.image_grace = settings.image_grace_seconds
        self.max_bytes = settings.max_bytes
        self._queue: deque[tuple[Reading, tuple[Path, ...]] | ProtocolError] = deque()
        self._handed_over: list[Path] = []
        self._waiting_since: dict[str, float] = {}
        self.refused = 0
        """Inbox entries refused unread (links, hard links, FIFOs, devices, folders) since the start."""

    def connect(self) -> None:
        if not self.inbox.is_dir():
            raise DeviceUnavailable(f"inbox {str(self.inbox)!r} is not a folder")
        for folder in (self.done, self.quarantine):
            try:
                folder.mkdir(parents=True, exist_ok=True)
                is_folder = stat.S_ISDIR(os.lstat(folder).st_mode)
            except OSError as error:
                raise DeviceUnavailable(f"cannot create {str(folder)!r}: {error}") from error
            # A link here would let whoever writes the inbox choose where files are moved to.
            if not is_folder:
                raise DeviceUnavailable(f"{str(folder)!r} is not a folder (a symbolic link?)")

    def step(self) -> Sequence[Reading]:
        """Scans found earlier first; a quarantined pair is raised in its place, in order."""
        self._finish_handed_over()
        if not self._queue:
            self._scan_inbox()
            if not self._queue:
                time.sleep(self.poll_interval)
                return []
        readings: list[Reading] = []
        while self._queue:
            item = self._queue[0]
            if isinstance(item, ProtocolError):
                if readings:
                    break
                self._queue.popleft()
                raise item
            reading, files = item
            readings.append(reading)
            self._handed_over.extend(files)
            self._queue.popleft()
        return readings

    def close(self) -> None:
        """Nothing to release; scans handed over but not yet moved are moved by the next step."""

    def _finish_handed_over(self) -> None:
        while self._handed_over:
            path = self._handed_over[0]
            try:
                if os.path.lexists(path):
                    _move(path, self.done)
            except OSError as error:
                raise DeviceUnavailable(
                    f"cannot move {str(path)!r} into {str(self.done)!r}: {error}"
                ) from error
            self._handed_over.pop(0)

    def _scan_inbox(self) -> None:
        try:
            # Every kind of entry, not only regular files: a link or FIFO named *.json is refused.
            # Only the first names are kept, so a flooded inbox costs time, not memory.
            with os.scandir(self.inbox) as entries:
                names = heapq.nsmallest(
                    MAX_LISTED,
                    (
                        entry.name
                        for entry in entries
                        if entry.name.endswith(".json") and not is_temporary(entry.name)
                    ),
                )
        except OSError as error:
            raise DeviceUnavailable(f"cannot list inbox {str(self.inbox)!r}: {error}") from error
        handled = 0
        for name in names:
            if handled >= MAX_PER_STEP:
                break
            if self._take(name):
                handled += 1
        self._waiting_since = {
            name: since for name, since in self._waiting_since.items() if os.path.lexists(self.inbox / name)
        }

    def _take(self, name: str) -> bool:
        """Handle one metadata file; False when it is left waiting for its image."""
        meta_path = self.inbox / name
        try:
            with open_regular(meta_path, refuse_hard_links=True) as source:
                raw = source.read(MAX_METADATA_BYTES + 1)
        except FileNotFoundError:
            return False
        except NotRegularFile as error:
            self._refuse(meta_path, None, str(error))
            return True
        except OSError as error:
            raise DeviceUnavailable(f"cannot read {str(meta_path)!r}: {error}") from error
        try:
            metadata = parse_metadata(raw)
        except ProtocolError as error:
            self._reject(meta_path, None, str(error))
            return True
        if metadata.image is None:
            self._waiting_since.pop(name, None)
            self._queue.append((self._reading(metadata, ()), (meta_path,)))
            return True
        image_path = self.inbox / metadata.image
        try:
            image = open_regular(image_path, refuse_hard_links=True)
        except FileNotFoundError:
            now = self.clock.monotonic()
            since = self._waiting_since.setdefault(name, now)
            if now - since < self.image_grace:
                return False
            self._reject(
                meta_path, None, f"image {metadata.image!r} did not arrive within {self.image_grace:g} s"
            )
            return True
        except NotRegularFile as error:
            self._refuse(meta_path, image_path, str(error))
            return True
        except OSError as error:
            raise DeviceUnavailable(f"cannot read {str(image_path)!r}: {error}") from error
        self._waiting_since.pop(name, None)
        try:
            with image:
                stored = self.evidence.put_opened(
                    image,
                    metadata.media_type,
                    name=str(image_path),
                    expected_sha256=metadata.sha256,
                    max_bytes=self.max_bytes,
                )
        except EvidenceRejected as error:
            self._reject(meta_path, image_path, str(error))
            return True
        except StorageError as error:
            raise DeviceUnavailable(f"cannot store the image of {name!r}: {error}") from error
        self._queue.append((self._reading(metadata, (stored,)), (image_path, meta_path)))
        return True

    def _reject(self, meta_path: Path, image_path: Path | None, reason: str) -> None:
        """Move a bad pair into the quarantine with a reason file; queue the error."""
        self._quarantine(meta_path, image_path, reason)
        self._queue.append(ProtocolError(f"NII scan {meta_path.name!r} quarantined: {reason}"))

    def _refuse(self, meta_path: Path, image_path: Path | None, reason: str) -> None:
        """Count, log and quarantine a pair with an entry that must not be read.

        Logged here, once, rather than queued as a ``ProtocolError``: the entry is moved away, so
        it is never seen again, and a refusal is a warning about the folder, not a bad frame."""
        self.refused += 1
        log.warning(
            "%s/%s: NII scan %r refused unread and quarantined: %s",
            self.lane,
            self.device,
            meta_path.name,
            reason,
        )
        self._quarantine(meta_path, image_path, reason)

    def _quarantine(self, meta_path: Path, image_path: Path | None, reason: str) -> None:
        """Move the pair's entries themselves (never a link's target) into the quarantine, with a
        reason file."""
        moved: list[str] = []
        try:
            if image_path is not None and os.path.lexists(image_path):
                moved.append(_move(image_path, self.quarantine).name)
            meta_target = _move(meta_path, self.quarantine)
            moved.append(meta_target.name)
            _write_new(
                self.quarantine / f"{meta_target.name}.reason.txt",
                f"{reason}\nfiles: {', '.join(map(repr, moved))}\n"
                f"quarantined at: {rfc3339(self.clock.now())}\n",
            )
        except OSError as error:
            raise DeviceUnavailable(
                f"cannot quarantine {str(meta_path)!r} into {str(self.quarantine)!r}: {error}"
            ) from error

    def _reading(self, metadata: ScanMetadata, evidence: tuple[Evidence, ...]) -> Reading:
        if metadata.verdict == "not_scanned":
            quality = Quality.BAD
        elif metadata.verdict == "inconclusive" or not metadata.container_check_digit_valid:
            quality = Quality.UNCERTAIN
        else:
            quality = Quality.GOOD
        content = evidence[0].sha256 if evidence else ""
        reading_id = uuid.uuid5(_READING_IDS, f"{self.lane}/{self.device}/{metadata.scan_id}/{content}").hex
        return Reading(
            lane=self.lane,
            kind=Kind.NII,
            device=self.device,
            source=SOURCE,
            value={
                "scan_id": metadata.scan_id,
                "container": metadata.container,
                "verdict": metadata.verdict,
                "scanner": metadata.scanner,
                "finished_at": rfc3339(metadata.finished_at),
            },
            ts=self.clock.now(),
            quality=quality,
            evidence=evidence,
            id=reading_id,
        )

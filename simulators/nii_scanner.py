"""A VACIS / NII scanner that hands its scans over through a drop folder (its outbox).

Written from the hand-over description, not from the driver. For each scan the scanner writes:

- the image, a synthetic grayscale transmission picture (8-bit PNG, or binary PGM with
  ``media_type="image/x-portable-graymap"``): bright air around a darker container body with
  corrugation ribs, noise, and for a ``suspect`` verdict a dense (dark) blob in the cargo;
- a UTF-8 JSON metadata file ``<scan id>.json`` with ``scan_id``, ``container`` (or null),
  ``scanner``, ``started_at`` and ``finished_at`` (RFC 3339, UTC), ``verdict`` (``clear``,
  ``suspect``, ``inconclusive`` or ``not_scanned``), ``image`` (the image's file name),
  ``media_type``, ``sha256`` (of the image, hex) and ``notes``.

Each file is written under a temporary name (``.<name>.part``) and renamed into place, the image
first and the metadata last, so whoever watches the folder never sees half a scan. Pixels come
only from ``seed`` and the scan counter: the same seed draws the same images.

Fault injection: ``drop_half_written`` (files cut short under their final names, as a scanner that
writes in place and crashed would leave them), ``drop_garbage_metadata``,
``drop_metadata_without_image``, ``drop_wrong_hash`` and ``drop_in_progress`` (temporary names
only, which must be left alone).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import struct
import time
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gated.cli.argtypes import output_folder

PNG = "image/png"
PGM = "image/x-portable-graymap"
VERDICTS = ("clear", "suspect", "inconclusive", "not_scanned")
SCAN_SECONDS = 14.0
"""How long a simulated scan takes (finished_at - started_at)."""

_AIR = 228
_STEEL = 150
_CARGO = 105
_DENSE = 28
_RIB = 18
_NOISE = 24
_EXTENSION = {PNG: "png", PGM: "pgm"}
_OWNERS = ("CSQ", "BIC", "MSK", "HLX", "TGH", "CAI")


def container_check_digit(first_ten: str) -> int:
    """ISO 6346 check digit: letters 10..38 skipping multiples of 11, weights 2**i, mod 11, 10->0."""
    values: dict[str, int] = {}
    value = 10
    for letter in "ABCDEFGHIJKLMNOPQRSTUVWXYZ":
        if value % 11 == 0:
            value += 1
        values[letter] = value
        value += 1
    total = sum((int(c) if c.isdigit() else values[c]) << i for i, c in enumerate(first_ten))
    return total % 11 % 10


def random_container(rng: random.Random) -> str:
    first_ten = rng.choice(_OWNERS) + "U" + f"{rng.randrange(1_000_000):06d}"
    return first_ten + str(container_check_digit(first_ten))


def png_gray8(width: int, height: int, rows: list[bytes]) -> bytes:
    """An 8-bit grayscale PNG (colour type 0, no interlace) from its rows of pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    raw = b"".join(b"\x00" + row for row in rows)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


def pgm_gray8(width: int, height: int, rows: list[bytes]) -> bytes:
    """A binary (P5) 8-bit PGM."""
    return f"P5\n{width} {height}\n255\n".encode("ascii") + b"".join(rows)


def _shade_table(level: int) -> bytes:
    """Maps a noise byte to ``level`` plus noise, clamped to 0..255."""
    return bytes(max(0, min(255, level + (n * _NOISE) // 256 - _NOISE // 2)) for n in range(256))


def xray_rows(rng: random.Random, width: int, height: int, *, dense_blob: bool) -> list[bytes]:
    """A synthetic transmission image: air, a container body with ribs, cargo, maybe a dense blob."""
    tables: dict[int, bytes] = {}

    def shade(level: int, noise: bytes) -> bytes:
        table = tables.get(level)
        if table is None:
            table = tables[level] = _shade_table(level)
        return noise.translate(table)

    left, right = int(width * rng.uniform(0.04, 0.08)), int(width * rng.uniform(0.92, 0.96))
    top, bottom = int(height * rng.uniform(0.08, 0.14)), int(height * rng.uniform(0.86, 0.92))
    wall = max(1, width // 200)
    pitch = max(4, width // 40)
    blob: tuple[int, int, int, int] | None = None
    if dense_blob:
        bw, bh = max(2, width // 10), max(2, height // 5)
        bx = rng.randrange(left + wall, max(left + wall + 1, right - wall - bw))
        by = rng.randrange(top + wall, max(top + wall + 1, bottom - wall - bh))
        blob = (bx, by, bx + bw, by + bh)
    body_profile: list[int] = []
    for x in range(width):
        if x < left or x >= right:
            body_profile.append(_AIR)
        elif x < left + wall or x >= right - wall:
            body_profile.append(_STEEL - 60)
        else:
            body_profile.append(_CARGO - (_RIB if (x - left) % pitch == 0 else 0))
    segments: list[tuple[int, int, int]] = []
    start = 0
    for x in range(1, width + 1):
        if x == width or body_profile[x] != body_profile[start]:
            segments.append((start, x, body_profile[start]))
            start = x
    rows: list[bytes] = []
    for y in range(height):
        noise = rng.randbytes(width)
        if y < top or y >= bottom:
            rows.append(shade(_AIR, noise))
            continue
        if y < top + wall or y >= bottom - wall:
            row = bytearray(shade(_AIR, noise[:left]))
            row += shade(_STEEL - 60, noise[left:right])
            row += shade(_AIR, noise[right:])
            rows.append(bytes(row))
            continue
        row = bytearray(width)
        for start, end, level in segments:
            row[start:end] = shade(level, noise[start:end])
        if blob is not None and blob[1] <= y < blob[3]:
            row[blob[0] : blob[2]] = shade(_DENSE, noise[blob[0] : blob[2]])
        rows.append(bytes(row))
    return rows


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class NiiScannerSimulator:
    """Writes scans (image + metadata) into ``outbox`` the way a drop-folder scanner does."""

    def __init__(self, outbox: Path, *, seed: int = 0, scanner: str = "vacis-sim") -> None:
        self.outbox = Path(outbox)
        self.scanner = scanner
        self.seed = seed
        self._rng = random.Random(seed)
        self._count = 0
        self.outbox.mkdir(parents=True, exist_ok=True)

    def scan(
        self,
        container: str | None,
        verdict: str,
        *,
        width: int = 1024,
        height: int = 512,
        media_type: str = PNG,
        notes: str | None = None,
    ) -> str:
        """Scan one container and hand the result over; returns the scan id."""
        if verdict not in VERDICTS:
            raise ValueError(f"verdict {verdict!r} is not one of {', '.join(VERDICTS)}")
        image = self.render(verdict, width=width, height=height, media_type=media_type)
        scan_id, started, finished = self._next_scan()
        image_name = f"{scan_id}.{_EXTENSION[media_type]}"
        self._write(image_name, image)
        metadata = self.metadata(
            scan_id,
            container,
            verdict,
            image_name,
            media_type,
            hashlib.sha256(image).hexdigest(),
            started=started,
            finished=finished,
            notes=notes,
        )
        self._write(f"{scan_id}.json", json.dumps(metadata, indent=2).encode("utf-8"))
        return scan_id

    def render(self, verdict: str, *, width: int = 1024, height: int = 512, media_type: str = PNG) -> bytes:
        """One synthetic image, drawn from the simulator's seeded generator."""
        if media_type not in _EXTENSION:
            raise ValueError(f"media type {media_type!r} is not one of {', '.join(_EXTENSION)}")
        if width < 16 or height < 16:
            raise ValueError("width and height must be at least 16 pixels")
        rows = xray_rows(self._rng, width, height, dense_blob=verdict == "suspect")
        encode = png_gray8 if media_type == PNG else pgm_gray8
        return encode(width, height, rows)

    def metadata(
        self,
        scan_id: str,
        container: str | None,
        verdict: str,
        image: str | None,
        media_type: str,
        sha256: str | None,
        *,
        started: datetime,
        finished: datetime,
        notes: str | None = None,
    ) -> dict[str, Any]:
        """The metadata object of one scan."""
        return {
            "scan_id": scan_id,
            "container": container,
            "scanner": self.scanner,
            "started_at": _rfc3339(started),
            "finished_at": _rfc3339(finished),
            "verdict": verdict,
            "image": image,
            "media_type": media_type,
            "sha256": sha256,
            "notes": notes,
        }

    # Fault injection

    def drop_half_written(self) -> str:
        """An image and a metadata file both cut short, under their final names."""
        scan_id, started, finished = self._next_scan()
        image = self.render("clear", width=16, height=16)
        name = f"{scan_id}.png"
        text = json.dumps(
            self.metadata(scan_id, None, "clear", name, PNG, None, started=started, finished=finished)
        ).encode("utf-8")
        (self.outbox / name).write_bytes(image[: len(image) // 2])
        (self.outbox / f"{scan_id}.json").write_bytes(text[: len(text) // 2])
        return scan_id

    def drop_garbage_metadata(self) -> str:
        """A metadata file that is not JSON at all."""
        scan_id, _, _ = self._next_scan()
        self._write(f"{scan_id}.json", b"\x89\xfe garbage " + self._rng.randbytes(40))
        return scan_id

    def drop_metadata_without_image(self) -> str:
        """Well-formed metadata naming an image that never arrives."""
        scan_id, started, finished = self._next_scan()
        body = self.metadata(
            scan_id, None, "clear", f"{scan_id}.png", PNG, None, started=started, finished=finished
        )
        self._write(f"{scan_id}.json", json.dumps(body).encode("utf-8"))
        return scan_id

    def drop_wrong_hash(self) -> str:
        """A complete pair whose metadata gives a sha256 the image does not have."""
        scan_id, started, finished = self._next_scan()
        image = self.render("clear", width=16, height=16)
        name = f"{scan_id}.png"
        self._write(name, image)
        wrong = hashlib.sha256(image + b"tampered").hexdigest()
        body = self.metadata(scan_id, None, "clear", name, PNG, wrong, started=started, finished=finished)
        self._write(f"{scan_id}.json", json.dumps(body).encode("utf-8"))
        return scan_id

    def drop_in_progress(self) -> str:
        """Files still being written: ``*.part``, ``*.tmp`` and a dotfile, nothing final."""
        scan_id, started, finished = self._next_scan()
        body = self.metadata(
            scan_id, None, "clear", f"{scan_id}.png", PNG, None, started=started, finished=finished
        )
        text = json.dumps(body).encode("utf-8")
        (self.outbox / f"{scan_id}.png.part").write_bytes(b"\x89PNG\r\n")
        (self.outbox / f"{scan_id}.json.tmp").write_bytes(text)
        (self.outbox / f".{scan_id}.json").write_bytes(text)
        return scan_id

    def _next_scan(self) -> tuple[str, datetime, datetime]:
        self._count += 1
        finished = datetime.now(UTC)
        started = finished - timedelta(seconds=SCAN_SECONDS)
        scan_id = f"{self.scanner}-{finished:%Y%m%dT%H%M%S}Z-{self.seed}-{self._count:04d}"
        return scan_id, started, finished

    def _write(self, name: str, data: bytes) -> None:
        """Write under a temporary name, flush, then rename into place."""
        temp = self.outbox / f".{name}.part"
        with temp.open("wb") as target:
            target.write(data)
            target.flush()
            os.fsync(target.fileno())
        os.replace(temp, self.outbox / name)


def register_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``gated-sim nii-scanner``."""
    parser = subparsers.add_parser(
        "nii-scanner",
        help="a VACIS/NII scanner dropping images and metadata into a folder",
        description="Scan random containers and drop each image + metadata pair into a folder.",
    )
    parser.add_argument("--outbox", metavar="DIR", type=output_folder, required=True, help="the drop folder")
    parser.add_argument("--every", metavar="SECONDS", type=float, default=10.0, help="between scans")
    parser.add_argument(
        "--suspect-every", metavar="N", type=int, default=5, help="every Nth scan is suspect (0: never)"
    )
    parser.add_argument("--duration", metavar="SECONDS", type=float, default=None, help="then stop")
    parser.add_argument("--seed", type=int, default=0, help="for images and container numbers")
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--height", type=int, default=512)
    parser.set_defaults(func=run_cli)


def run_cli(args: argparse.Namespace) -> int:
    """Scan until ``--duration`` has passed or Ctrl-C."""
    if args.every <= 0:
        print("nii-scanner: --every must be positive")
        return 2
    if args.suspect_every < 0:
        print("nii-scanner: --suspect-every must not be negative")
        return 2
    if args.width < 16 or args.height < 16:
        print("nii-scanner: --width and --height must be at least 16")
        return 2
    simulator = NiiScannerSimulator(args.outbox, seed=args.seed)
    rng = random.Random(args.seed)
    deadline = None if args.duration is None else time.monotonic() + args.duration
    turn = 0
    try:
        while deadline is None or time.monotonic() < deadline:
            turn += 1
            suspect = args.suspect_every > 0 and turn % args.suspect_every == 0
            verdict = "suspect" if suspect else "clear"
            container = random_container(rng)
            scan_id = simulator.scan(container, verdict, width=args.width, height=args.height)
            print(f"nii-scanner: {scan_id} {container} {verdict}", flush=True)
            left = args.every if deadline is None else min(args.every, deadline - time.monotonic())
            time.sleep(max(0.0, left))
    except KeyboardInterrupt:
        pass
    return 0

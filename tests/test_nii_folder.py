"""NII scans through a drop folder: the evidence store, the driver against its simulator in real
folders, the fault cases ending in quarantine, and memory use on large images."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import struct
import tempfile
import tracemalloc
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.nii_folder import SOURCE, NiiFolderDevice, NiiFolderDriver, ScanMetadata, parse_metadata
from gated.clock import ManualClock
from gated.errors import DeviceUnavailable, ProtocolError, StorageError
from gated.evidence import EvidenceRejected, EvidenceStore, sha256_from_uri
from gated.model import DeviceState, Kind, Quality
from simulators.nii_scanner import NiiScannerSimulator, register_cli
from tests.sinks import RecordingSink, driver_running, wait_until

WAIT = 15.0
LANE, DEVICE = "lane-1", "nii-1"


@contextmanager
def running(driver: NiiFolderDriver) -> Iterator[RecordingSink]:
    sink = RecordingSink(LANE, DEVICE, timeout=WAIT)
    with driver_running(driver, sink):
        yield sink


def make_driver(
    inbox: Path, store: EvidenceStore, *, settings_check: bool = True, **options: Any
) -> NiiFolderDriver:
    """A fast-polling driver; ``settings_check=False`` lets a test use values the config refuses."""
    values: dict[str, Any] = {
        "id": DEVICE,
        "driver": "nii-folder",
        "inbox": str(inbox),
        "poll_interval_seconds": options.pop("poll_interval", 0.02),
        "image_grace_seconds": options.pop("image_grace", 0.3),
    }
    if "max_bytes" in options:
        values["max_bytes"] = options.pop("max_bytes")
    settings_ = (
        NiiFolderDevice.model_validate(values)
        if settings_check
        else NiiFolderDevice.model_construct(**values)
    )
    options = {"backoff_initial": 0.05, "backoff_max": 0.2, **options}
    return NiiFolderDriver(LANE, settings_, evidence=store, **options)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def names(folder: Path) -> set[str]:
    return {path.name for path in folder.iterdir() if path.is_file()} if folder.is_dir() else set()


def store_objects(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file() and not path.name.startswith(".")]


def metadata_body(scan_id: str, image_name: str | None, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "scan_id": scan_id,
        "container": "CSQU3054383",
        "scanner": "vacis-test",
        "started_at": "2026-01-01T12:00:00Z",
        "finished_at": "2026-01-01T12:00:14.250+00:00",
        "verdict": "clear",
        "image": image_name,
        "media_type": "image/tiff",
        "sha256": None,
        "notes": None,
    }
    body.update(changes)
    return body


def drop_pair(inbox: Path, scan_id: str, content: bytes | None, **changes: Any) -> None:
    """The test's own writer: image first, metadata last, each renamed into place."""
    image_name = f"{scan_id}.tif" if content is not None else None
    if content is not None:
        (inbox / f".{scan_id}.tif.part").write_bytes(content)
        os.replace(inbox / f".{scan_id}.tif.part", inbox / f"{scan_id}.tif")
    body = metadata_body(scan_id, image_name, **changes)
    (inbox / f"{scan_id}.json.tmp").write_text(json.dumps(body), encoding="utf-8")
    os.replace(inbox / f"{scan_id}.json.tmp", inbox / f"{scan_id}.json")


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """An independent PNG reader for 8-bit grayscale, filter type 0, checking every CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, idat, header = 8, b"", b""
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        assert zlib.crc32(kind + body) == crc, kind
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        position += 12 + length
        if kind == b"IEND":
            break
    assert position == len(data)
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert (depth, colour, interlace) == (8, 0, 0)
    raw = zlib.decompress(idat)
    assert len(raw) == height * (width + 1)
    rows = [raw[y * (width + 1) : (y + 1) * (width + 1)] for y in range(height)]
    assert all(row[0] == 0 for row in rows)
    return width, height, [row[1:] for row in rows]


# The evidence store


def test_store_is_content_addressed_and_idempotent(tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path / "evidence")
    data = b"an x-ray image" * 1000
    first = store.put_bytes(data, "image/png")
    sha = hashlib.sha256(data).hexdigest()
    assert first.sha256 == sha
    assert first.bytes == len(data)
    assert first.media_type == "image/png"
    assert first.uri == f"evidence://sha256/{sha}"
    assert sha256_from_uri(first.uri) == sha
    assert store.path_for(sha) == tmp_path / "evidence" / sha[:2] / sha
    with store.open(sha) as stored:
        assert stored.read() == data
    source = tmp_path / "scan.png"
    source.write_bytes(data)
    again = store.put_file(source, "image/png")
    assert again == first
    assert store.put_bytes(data, "image/png") == first
    assert store_objects(tmp_path / "evidence") == [store.path_for(sha)]
    assert source.read_bytes() == data, "the source is copied, not moved"


def test_store_refuses_a_wrong_hash_and_an_oversized_file(tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path / "evidence")
    source = tmp_path / "scan.png"
    source.write_bytes(b"x" * 5000)
    with pytest.raises(EvidenceRejected, match="expected"):
        store.put_file(source, "image/png", expected_sha256="0" * 64)
    with pytest.raises(EvidenceRejected, match="larger than 4999 bytes"):
        store.put_file(source, "image/png", max_bytes=4999)
    assert store_objects(tmp_path / "evidence") == []
    upper = hashlib.sha256(source.read_bytes()).hexdigest().upper()
    assert store.put_file(source, "image/png", expected_sha256=upper).sha256 == upper.lower()


def test_store_errors_name_the_path(tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path / "evidence")
    with pytest.raises(StorageError, match=r"missing\.png"):
        store.put_file(tmp_path / "missing.png", "image/png")
    with pytest.raises(StorageError, match="cannot open evidence"):
        store.open("a" * 64)
    with pytest.raises(ValueError, match="sha256"):
        store.path_for("../../etc/passwd")
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the store's root should be")
    with pytest.raises(StorageError, match="blocked"):
        EvidenceStore(blocked).put_bytes(b"data", "image/png")


def test_a_50_mb_image_is_streamed(tmp_path: Path) -> None:
    size = 50 * 1024 * 1024
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    image = inbox / "big.tif"
    hasher = hashlib.sha256()
    with image.open("wb") as target:
        for _ in range(size // (1024 * 1024)):
            block = os.urandom(1024 * 1024)
            hasher.update(block)
            target.write(block)
    body = metadata_body("big", "big.tif", sha256=hasher.hexdigest())
    (inbox / "big.json").write_text(json.dumps(body), encoding="utf-8")
    store = EvidenceStore(tmp_path / "evidence")
    driver = make_driver(inbox, store)
    driver.connect()
    tracemalloc.start()
    try:
        readings = driver.step()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(readings) == 1
    (evidence,) = readings[0].evidence
    assert (evidence.sha256, evidence.bytes) == (hasher.hexdigest(), size)
    assert store.path_for(evidence.sha256).stat().st_size == size
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes while storing a {size}-byte image"


# The simulator's images


def test_simulator_draws_real_deterministic_png_images(tmp_path: Path) -> None:
    one = NiiScannerSimulator(tmp_path / "a", seed=7)
    two = NiiScannerSimulator(tmp_path / "b", seed=7)
    clear = one.render("clear", width=200, height=100)
    assert clear == two.render("clear", width=200, height=100)
    suspect = one.render("suspect", width=200, height=100)
    width, height, rows = decode_png(clear)
    assert (width, height) == (200, 100)
    assert all(len(row) == 200 for row in rows)
    assert min(rows[0]) > 180, "air is bright"
    assert min(rows[50][40:160]) < 140, "the container body absorbs"
    _, _, suspect_rows = decode_png(suspect)
    darkest = min(min(row) for row in suspect_rows)
    assert darkest < 60 < min(min(row) for row in rows), "a suspect scan shows a dense blob"
    assert NiiScannerSimulator(tmp_path / "c", seed=8).render("clear", width=200, height=100) != clear
    pgm = one.render("clear", width=20, height=16, media_type="image/x-portable-graymap")
    assert pgm.startswith(b"P5\n20 16\n255\n") and len(pgm) == len(b"P5\n20 16\n255\n") + 320


# The driver against the simulator


def test_clear_and_suspect_scans_become_readings_with_evidence(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    scanner = NiiScannerSimulator(inbox, seed=3, scanner="vacis-2")
    store = EvidenceStore(tmp_path / "evidence")
    with running(make_driver(inbox, store)) as sink:
        sink.wait_for("the driver to come online", lambda: sink.state is DeviceState.ONLINE)
        clear_id = scanner.scan("CSQU3054383", "clear", width=256, height=128)
        suspect_id = scanner.scan("BICU1234565", "suspect", width=256, height=128, notes="dense, rear")
        sink.wait_for("two readings", lambda: len(sink.readings) >= 2)
        wait_until("both pairs moved to done/", lambda: len(names(inbox / "done")) == 4)
    readings = sink.readings
    assert [reading.value["verdict"] for reading in readings] == ["clear", "suspect"]  # type: ignore[index]
    assert sink.errors == []
    assert names(inbox) == set()
    for reading, scan_id, container in zip(
        readings, (clear_id, suspect_id), ("CSQU3054383", "BICU1234565"), strict=True
    ):
        assert reading.kind is Kind.NII
        assert reading.source == SOURCE == "scan_result"
        assert (reading.lane, reading.device) == (LANE, DEVICE)
        assert reading.quality is Quality.GOOD
        assert isinstance(reading.value, dict)
        assert reading.value["scan_id"] == scan_id
        assert reading.value["container"] == container
        assert reading.value["scanner"] == "vacis-2"
        assert reading.value["finished_at"].endswith("Z")
        assert set(reading.value) == {"scan_id", "container", "verdict", "scanner", "finished_at"}
        (evidence,) = reading.evidence
        stored = store.path_for(evidence.sha256)
        done_image = inbox / "done" / f"{scan_id}.png"
        assert sha256_of(stored) == evidence.sha256 == sha256_of(done_image)
        assert evidence.bytes == stored.stat().st_size == done_image.stat().st_size
        assert evidence.media_type == "image/png"
        assert evidence.uri == f"evidence://sha256/{evidence.sha256}"
        meta = json.loads((inbox / "done" / f"{scan_id}.json").read_text())
        assert meta["sha256"] == evidence.sha256
        assert reading.body()["evidence"] == [evidence.to_json()]


def test_every_fault_ends_in_quarantine_and_later_scans_still_arrive(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    scanner = NiiScannerSimulator(inbox, seed=5)
    store = EvidenceStore(tmp_path / "evidence")
    in_progress = scanner.drop_in_progress()
    wrong_hash = scanner.drop_wrong_hash()
    faults = {
        scanner.drop_half_written(): "not UTF-8 JSON",
        scanner.drop_garbage_metadata(): "not UTF-8 JSON",
        scanner.drop_metadata_without_image(): "did not arrive within",
        wrong_hash: "expected",
    }
    drop_pair(inbox, "missing-field", b"img", scanner=None)
    drop_pair(inbox, "wrong-type", b"img2", verdict=3)
    drop_pair(inbox, "bad-verdict", b"img3", verdict="probably fine")
    drop_pair(inbox, "bad-time", b"img4", finished_at="yesterday")
    drop_pair(inbox, "too-big", b"x" * 2000)
    drop_pair(inbox, "escape", None, image="../../etc/passwd")
    faults.update(
        {
            "missing-field": "field 'scanner' must be text",
            "wrong-type": "field 'verdict' must be text",
            "bad-verdict": "is not one of",
            "bad-time": "not an RFC 3339 time",
            "too-big": "larger than 1500 bytes",
            "escape": "plain file name",
        }
    )
    quarantine = tmp_path / "held"
    with running(make_driver(inbox, store, quarantine=quarantine, max_bytes=1500)) as sink:
        sink.wait_for("an error per fault", lambda: len(sink.errors) >= len(faults))
        good = scanner.scan("CSQU3054383", "clear", width=16, height=16)
        sink.wait_for("the good scan after the faults", lambda: len(sink.readings) == 1)
    assert sink.readings[0].value["scan_id"] == good  # type: ignore[index]
    assert len(sink.errors) == len(faults)
    held = names(quarantine)
    for scan_id, complaint in faults.items():
        assert f"{scan_id}.json" in held, scan_id
        reason = (quarantine / f"{scan_id}.json.reason.txt").read_text()
        assert complaint in reason, (scan_id, reason)
        assert any(scan_id in error and "quarantined" in error for error in sink.errors), scan_id
    assert {"too-big.tif", f"{wrong_hash}.png"} <= held, "a rejected image goes with its metadata"
    assert names(inbox) >= {f"{in_progress}.png.part", f"{in_progress}.json.tmp", f".{in_progress}.json"}
    assert all(not name.endswith(".json") or name.startswith(".") for name in names(inbox))
    assert len(store_objects(tmp_path / "evidence")) == 1, "only the good image is stored"


def test_an_image_arriving_within_the_grace_period_is_waited_for(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    clock = ManualClock()
    driver = make_driver(inbox, EvidenceStore(tmp_path / "evidence"), clock=clock, image_grace=10.0)
    driver.connect()
    body = metadata_body("late", "late.tif")
    (inbox / "late.json").write_text(json.dumps(body))
    (inbox / "never.json").write_text(json.dumps(metadata_body("never", "never.tif")))
    assert driver.step() == []
    clock.advance(9.0)
    assert driver.step() == []
    (inbox / "late.tif").write_bytes(b"late image")
    (reading,) = driver.step()
    assert reading.value["scan_id"] == "late"  # type: ignore[index]
    clock.advance(1.5)
    with pytest.raises(ProtocolError, match=r"'never\.json' quarantined: image 'never\.tif' did not arrive"):
        driver.step()
    assert driver.step() == []
    assert names(inbox / "done") == {"late.json", "late.tif"}
    assert names(inbox / "quarantine") == {"never.json", "never.json.reason.txt"}


def test_the_same_image_twice_is_stored_once(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    store = EvidenceStore(tmp_path / "evidence")
    image = b"\x89PNG same picture" * 500
    drop_pair(inbox, "first", image)
    drop_pair(inbox, "second", image)
    with running(make_driver(inbox, store)) as sink:
        sink.wait_for("two readings", lambda: len(sink.readings) == 2)
        wait_until("both pairs moved", lambda: len(names(inbox / "done")) == 4)
    one, two = sink.readings
    assert one.evidence == two.evidence
    assert one.id != two.id
    assert store_objects(tmp_path / "evidence") == [store.path_for(one.evidence[0].sha256)]


def test_a_restart_before_the_files_moved_hands_the_same_scan_over_again(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    store = EvidenceStore(tmp_path / "evidence")
    drop_pair(inbox, "crash", b"image", container="ABCU1234569", verdict="inconclusive")
    first = make_driver(inbox, store)
    first.connect()
    (before,) = first.step()
    assert names(inbox) == {"crash.json", "crash.tif"}, "files stay until the reading was handed over"
    second = make_driver(inbox, store)
    second.connect()
    (after,) = second.step()
    assert after.id == before.id, "consumers drop the duplicate by id"
    assert after.value == before.value
    assert after.quality is Quality.UNCERTAIN
    assert after.value["container"] == "ABCU1234569"  # type: ignore[index]
    assert second.step() == []
    assert names(inbox / "done") == {"crash.json", "crash.tif"}
    first.step()
    assert names(inbox / "done") == {"crash.json", "crash.tif"}, "moving twice is harmless"


def test_not_scanned_needs_no_image_and_is_bad_quality(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    drop_pair(inbox, "skipped", None, verdict="not_scanned", container=None, notes="scanner fault")
    driver = make_driver(inbox, EvidenceStore(tmp_path / "evidence"))
    driver.connect()
    (reading,) = driver.step()
    assert reading.quality is Quality.BAD
    assert reading.evidence == ()
    assert reading.value == {
        "scan_id": "skipped",
        "container": None,
        "verdict": "not_scanned",
        "scanner": "vacis-test",
        "finished_at": "2026-01-01T12:00:14.250Z",
    }


def test_a_missing_inbox_is_device_unavailable_until_it_appears(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    store = EvidenceStore(tmp_path / "evidence")
    with pytest.raises(DeviceUnavailable, match="inbox"):
        make_driver(inbox, store).connect()
    with running(make_driver(inbox, store)) as sink:
        sink.wait_for("offline", lambda: sink.state is DeviceState.OFFLINE)
        scanner = NiiScannerSimulator(inbox)
        sink.wait_for("online once the folder exists", lambda: sink.state is DeviceState.ONLINE)
        scanner.scan(None, "clear", width=32, height=16)
        sink.wait_for("a reading", lambda: len(sink.readings) == 1)
        os.rename(inbox, tmp_path / "gone")
        sink.wait_for("offline when the folder goes", lambda: sink.state is DeviceState.OFFLINE)


def test_cli_drops_pairs(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers(dest="device"))
    outbox = tmp_path / "outbox"
    args = parser.parse_args(
        [
            *("nii-scanner", "--outbox", str(outbox), "--every", "0.05", "--suspect-every", "2"),
            *("--duration", "0.3", "--width", "32", "--height", "16"),
        ]
    )
    assert args.func(args) == 0
    metadata = [json.loads(path.read_text()) for path in sorted(outbox.glob("*.json"))]
    assert len(metadata) >= 2
    assert {body["verdict"] for body in metadata} == {"clear", "suspect"}
    for body in metadata:
        assert sha256_of(outbox / body["image"]) == body["sha256"]
        assert parse_metadata(json.dumps(body).encode()).container == body["container"]


# Arbitrary metadata


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
field_values = st.one_of(
    json_values,
    st.sampled_from(["clear", "suspect", "CSQU3054383", "2026-01-01T00:00:00Z", "image/png", "a" * 64]),
)
metadata_objects = st.fixed_dictionaries(
    {},
    optional={
        key: field_values
        for key in (
            "scan_id",
            "container",
            "scanner",
            "started_at",
            "finished_at",
            "verdict",
            "image",
            "media_type",
            "sha256",
            "notes",
        )
    },
)


@given(st.one_of(json_values, metadata_objects).map(json.dumps).map(str.encode) | st.binary(max_size=64))
def test_parse_metadata_raises_nothing_but_protocol_error(raw: bytes) -> None:
    try:
        result = parse_metadata(raw)
    except ProtocolError:
        return
    assert isinstance(result, ScanMetadata)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(metadata_objects, json_values), st.booleans())
def test_arbitrary_metadata_is_either_a_reading_or_quarantined(body: Any, with_image: bool) -> None:
    with tempfile.TemporaryDirectory() as folder:
        inbox = Path(folder) / "inbox"
        inbox.mkdir()
        if isinstance(body, dict) and with_image and isinstance(body.get("image"), str):
            image = body["image"]
            if image and "/" not in image and "\x00" not in image and image not in {".", ".."}:
                with suppress(OSError):
                    (inbox / image).write_bytes(b"pixels")
        (inbox / "scan.json").write_text(json.dumps(body), encoding="utf-8")
        # No grace at all (the config asks for some): a missing image is quarantined at once.
        driver = make_driver(
            inbox, EvidenceStore(Path(folder) / "evidence"), settings_check=False, image_grace=0.0
        )
        driver.connect()
        try:
            readings = driver.step()
        except ProtocolError as error:
            assert "quarantined" in str(error)
            assert {"scan.json", "scan.json.reason.txt"} <= names(inbox / "quarantine")
            return
        assert len(readings) == 1
        driver.step()
        assert "scan.json" in names(inbox / "done")

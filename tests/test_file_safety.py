"""Files from outside are hostile: the NII drop folder's links, FIFOs, devices and file names, and
the modes of what gated itself writes (evidence objects, the SQLite database)."""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from drivers.nii_folder import NiiFolderDriver
from gated.db import open_engine
from gated.evidence import EvidenceStore, NotRegularFile, open_regular
from tests.sinks import RecordingSink, wait_until
from tests.test_nii_folder import make_driver, metadata_body, running, store_objects

SECRET = b"db_password=correct-horse-battery-staple\n"
FORGED = "\n2026-12-04 INFO gated.pipeline outcome=RELEASE"
FAKE_LINE = re.compile(r"\n\d{4}-\d{2}-\d{2} (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual login umask, under which files come out world-readable unless made otherwise."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def write_metadata(inbox: Path, scan_id: str, image: str | None, **changes: object) -> None:
    (inbox / f"{scan_id}.json").write_text(json.dumps(metadata_body(scan_id, image, **changes)))


def stored_contents(root: Path) -> list[bytes]:
    return [path.read_bytes() for path in store_objects(root)]


def secret_file(tmp_path: Path) -> Path:
    secret = tmp_path / "private" / "gated.secret"
    secret.parent.mkdir()
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    return secret


def wait_refused(driver: NiiFolderDriver, count: int, sink: RecordingSink) -> None:
    wait_until(f"{count} refused entries", lambda: driver.refused >= count)
    assert driver.refused == count, sink.errors


# Links, hard links, FIFOs and devices in the inbox are never read


def test_a_link_to_a_secret_file_is_refused_not_stored(tmp_path: Path) -> None:
    inbox, evidence = tmp_path / "inbox", tmp_path / "evidence"
    inbox.mkdir()
    secret = secret_file(tmp_path)
    (inbox / "leak.tif").symlink_to(secret)
    write_metadata(inbox, "leak", "leak.tif")
    # A link named like metadata, pointing at metadata that names a real image.
    (tmp_path / "private" / "meta.json").write_text(json.dumps(metadata_body("linked", "linked.tif")))
    (inbox / "linked.tif").write_bytes(b"pixels")
    (inbox / "linked.json").symlink_to(tmp_path / "private" / "meta.json")
    (inbox / "hard.tif").hardlink_to(secret)
    write_metadata(inbox, "hard", "hard.tif")
    driver = make_driver(inbox, EvidenceStore(evidence))
    with running(driver) as sink:
        wait_refused(driver, 3, sink)
    assert sink.readings == [] and sink.errors == []
    assert SECRET not in stored_contents(evidence)
    assert stored_contents(evidence) == []
    quarantine = inbox / "quarantine"
    assert (quarantine / "leak.tif").is_symlink(), "the link itself is moved, not its target"
    assert (quarantine / "linked.json").is_symlink()
    assert "symbolic link" in (quarantine / "leak.json.reason.txt").read_text()
    assert "hard links" in (quarantine / "hard.json.reason.txt").read_text()
    assert secret.read_bytes() == SECRET and stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert not (inbox / "leak.tif").exists() and not (inbox / "linked.json").exists()


def test_a_link_to_proc_self_environ_is_refused(tmp_path: Path) -> None:
    inbox, evidence = tmp_path / "inbox", tmp_path / "evidence"
    inbox.mkdir()
    (inbox / "env.tif").symlink_to("/proc/self/environ")
    write_metadata(inbox, "env", "env.tif", media_type="image/tiff")
    driver = make_driver(inbox, EvidenceStore(evidence))
    with running(driver) as sink:
        wait_refused(driver, 1, sink)
    assert store_objects(evidence) == [], "names only: a failure must not print the environment"
    assert (inbox / "quarantine" / "env.tif").is_symlink()


def test_a_fifo_does_not_hang_the_driver_and_later_scans_arrive(tmp_path: Path) -> None:
    inbox, evidence = tmp_path / "inbox", tmp_path / "evidence"
    inbox.mkdir()
    os.mkfifo(inbox / "pipe.tif")
    write_metadata(inbox, "pipe", "pipe.tif")
    os.mkfifo(inbox / "pipe2.json")
    driver = make_driver(inbox, EvidenceStore(evidence))
    with running(driver) as sink:
        wait_refused(driver, 2, sink)
        (inbox / "good.tif").write_bytes(b"a real image")
        write_metadata(inbox, "good", "good.tif")
        sink.wait_for("the good scan after the FIFOs", lambda: len(sink.readings) == 1)
    assert stat.S_ISFIFO((inbox / "quarantine" / "pipe.tif").lstat().st_mode)
    assert stat.S_ISFIFO((inbox / "quarantine" / "pipe2.json").lstat().st_mode)
    assert stored_contents(evidence) == [b"a real image"]


@pytest.mark.timeout(20)
def test_the_store_refuses_a_fifo_a_device_and_a_link(tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path / "evidence")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(NotRegularFile, match="a FIFO"):
        store.put_file(fifo, "image/png")  # opening a FIFO to read blocks until a writer comes
    link = tmp_path / "link"
    link.symlink_to(secret_file(tmp_path))
    with pytest.raises(NotRegularFile, match="a symbolic link"):
        store.put_file(link, "image/png")
    with pytest.raises(NotRegularFile, match="a folder"):
        store.put_file(tmp_path, "image/png")
    device = tmp_path / "null"
    try:
        os.mknod(device, stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except PermissionError:
        device = Path("/dev/null")  # not root: the system's own device does as well
    with pytest.raises(NotRegularFile, match="a character device"):
        store.put_file(device, "image/png")
    assert store_objects(tmp_path / "evidence") == []


def test_a_file_swapped_for_a_link_while_opened_never_yields_the_target(tmp_path: Path) -> None:
    """The type is checked on the opened descriptor, so a swap between a look and the open is
    refused rather than read."""
    secret = secret_file(tmp_path)
    name = tmp_path / "scan.tif"
    regular, link = tmp_path / "regular", tmp_path / "link"
    stop = threading.Event()

    def swap() -> None:
        while not stop.is_set():
            regular.write_bytes(b"image")
            os.replace(regular, name)
            link.unlink(missing_ok=True)
            link.symlink_to(secret)
            os.replace(link, name)

    thread = threading.Thread(target=swap, daemon=True)
    thread.start()
    seen: set[bytes] = set()
    refused = 0
    try:
        for _ in range(3000):
            try:
                with open_regular(name) as source:
                    seen.add(source.read())
            except NotRegularFile:
                refused += 1
            except FileNotFoundError:
                pass
    finally:
        stop.set()
        thread.join(timeout=5)
    assert SECRET not in seen
    assert refused > 0 and seen <= {b"image"}


# Names from outside are logged escaped


def test_a_file_name_with_a_line_break_cannot_forge_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inbox, evidence = tmp_path / "inbox", tmp_path / "evidence"
    inbox.mkdir()
    # A refused entry (logged by the driver), a malformed metadata file and an image whose hash does
    # not fit (both reported as errors, which the pipeline logs): each with a forged line in its name.
    (inbox / f"link{FORGED}.json").symlink_to(secret_file(tmp_path))
    (inbox / f"bad{FORGED}.json").write_bytes(b"not json")
    (inbox / f"img{FORGED}.tif").write_bytes(b"pixels")
    (inbox / "hash.json").write_text(
        json.dumps(metadata_body("hash", f"img{FORGED}.tif", sha256="0" * 64)), encoding="utf-8"
    )
    driver = make_driver(inbox, EvidenceStore(evidence))
    with caplog.at_level(logging.DEBUG), running(driver) as sink:
        sink.wait_for("two errors", lambda: len(sink.errors) >= 2)
        wait_refused(driver, 1, sink)
    messages = [record.getMessage() for record in caplog.records]
    escaped = repr(f"link{FORGED}.json")
    assert any(escaped in message for message in messages), messages
    for message in messages + sink.errors:
        assert "\n" not in message and not FAKE_LINE.search(message), message
    assert any(repr(f"bad{FORGED}.json") in error for error in sink.errors), sink.errors
    assert any("\\n2026-12-04 INFO" in error and "hash.json" in error for error in sink.errors)


# What gated writes is not for every local account


def test_evidence_objects_are_0640_in_0750_folders(tmp_path: Path, umask_022: None) -> None:
    root = tmp_path / "evidence"
    store = EvidenceStore(root)
    from_bytes = store.put_bytes(b"an x-ray", "image/png")
    source = tmp_path / "scan.png"
    source.write_bytes(b"another x-ray")
    from_file = store.put_file(source, "image/png")
    for evidence in (from_bytes, from_file):
        path = store.path_for(evidence.sha256)
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, oct(path.stat().st_mode)
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o750
    assert stat.S_IMODE(root.stat().st_mode) == 0o750


def test_a_new_sqlite_database_and_its_wal_are_0640(tmp_path: Path, umask_022: None) -> None:
    path = tmp_path / "data" / "gated.db"
    engine = open_engine(path)
    try:
        with engine.connect() as connection:  # held open, so the -wal and -shm files exist
            connection.execute(text("SELECT count(*) FROM outbox")).scalar()
            files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
            assert all(file.exists() for file in files)
            for file in files:
                assert stat.S_IMODE(file.stat().st_mode) & 0o137 == 0, (file, oct(file.stat().st_mode))
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o750
    finally:
        engine.dispose()


def test_an_existing_world_readable_database_is_narrowed(tmp_path: Path, umask_022: None) -> None:
    path = tmp_path / "gated.db"
    open_engine(path).dispose()
    path.chmod(0o644)
    open_engine(path).dispose()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_opening_a_database_again_keeps_the_locks_of_its_open_connections(tmp_path: Path) -> None:
    """Closing any descriptor of a file drops every POSIX lock the process holds on it: opening the
    same database again (as a second engine in one process does) must not let another process in."""
    path = tmp_path / "gated.db"
    engine = open_engine(path)
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock, held
            open_engine(path, create=False).dispose()
            probe = (
                "import sqlite3, sys\n"
                "connection = sqlite3.connect(sys.argv[1], timeout=0)\n"
                "try:\n"
                "    connection.execute('BEGIN IMMEDIATE')\n"
                "except sqlite3.OperationalError as error:\n"
                "    print(error)\n"
                "else:\n"
                "    print('got the write lock')\n"
            )
            done = subprocess.run(
                [sys.executable, "-c", probe, str(path)], capture_output=True, text=True, timeout=60
            )
            assert done.stdout.strip() == "database is locked", done.stdout + done.stderr
            connection.exec_driver_sql("ROLLBACK")
    finally:
        engine.dispose()


def test_the_gated_command_sets_a_restrictive_umask(tmp_path: Path) -> None:
    """Everything the command creates without naming a mode (here the database's parent folders)."""
    database = tmp_path / "made" / "by" / "gated.db"
    done = subprocess.run(
        [sys.executable, "-m", "gated", "preadvice", "list", "--db", str(database)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        umask=0o022,
    )
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE((tmp_path / "made").stat().st_mode) == 0o750
    assert stat.S_IMODE(database.stat().st_mode) == 0o640

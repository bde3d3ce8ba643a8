"""Passwords stay secret: the database's and the cameras' never reach stdout, stderr, a log line, an
exception or a device's status, whether written in a URL or kept in a password file; the password
files work against a real PostgreSQL server and a camera that asks for Basic authentication."""

from __future__ import annotations

import ast
import base64
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import URL, text

from drivers.ocr_frames import FramesCameraDriver
from gated.clock import SystemClock
from gated.config import OcrFramesDevice, load_config, validate
from gated.db import open_engine
from gated.devices import build_driver
from gated.errors import ConfigError, DeviceUnavailable, StorageError
from gated.evidence import EvidenceStore
from gated.model import DeviceState
from gated.redact import HIDDEN, redact, redact_url, shown
from gated.settings import DriverContext
from ocr.pool import OcrPool
from simulators.camera_frames import encode_jpeg, render_empty_lane
from tests.postgres import postgres_server
from tests.sinks import RecordingSink, driver_running
from tests.system import free_port

pytestmark = pytest.mark.timeout(120)

DB_PASSWORD = "S3cretPassw0rd"
CAMERA_PASSWORD = "S3cretCam"
TOKEN = "T0kenS3cret"


# -- the helper, property-tested ---------------------------------------------------------------

users = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-.", min_size=1, max_size=12)
hosts = st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z][a-z0-9-]{0,8}){0,3}", fullmatch=True)
schemes = st.sampled_from(["postgresql+psycopg", "postgresql", "rtsp", "rtsps", "http", "https", "mqtt"])
# Any text as a password, percent-encoded as a URL needs it; and passwords written unencoded, from
# the characters a user may well type into a URL that way (':' and '@' among them).
passwords = st.text(min_size=3, max_size=24)
raw_passwords = st.text(alphabet="abcXYZ0189!$%&'()*+,;=:@~^._-", min_size=3, max_size=24)


def _visible(secret: str, *texts: str) -> bool:
    return any(form in text for text in texts for form in (secret, quote(secret, safe="")))


def _check_hidden(scheme: str, user: str, password: str, written: str, host: str) -> None:
    url = f"{scheme}://{user}:{written}@{host}:5432/path"
    rest = f"{scheme}://{user}:{HIDDEN}@{host}:5432/path cannot open database {{}}: connection refused {HIDDEN}"  # what a redacted message is made of: a password that is part of it cannot be told apart
    assume(not _visible(password, rest) and written not in rest)
    for message in (
        redact_url(url),
        redact(f"cannot open database {url}: connection refused"),
        redact(f"cannot open {url!r}: connection refused"),
        redact(f"(psycopg.OperationalError) at {url}\n[SQL: SELECT 1]"),
    ):
        assert written not in message and password not in message, message
        assert host in message and user in message


@settings(max_examples=300, deadline=None)
@given(scheme=schemes, user=users, password=passwords, host=hosts)
def test_no_encoded_password_survives(scheme: str, user: str, password: str, host: str) -> None:
    _check_hidden(scheme, user, password, quote(password, safe=""), host)


@settings(max_examples=300, deadline=None)
@given(scheme=schemes, user=users, password=raw_passwords, host=hosts)
def test_no_password_written_unencoded_survives(scheme: str, user: str, password: str, host: str) -> None:
    _check_hidden(scheme, user, password, password, host)


@settings(max_examples=200, deadline=None)
@given(user=users, password=passwords, host=hosts)
def test_an_sqlalchemy_url_is_shown_without_its_password(user: str, password: str, host: str) -> None:
    url = URL.create("postgresql+psycopg", username=user, password=password, host=host, database="gated")
    assume(not _visible(password, f"postgresql+psycopg://{user}:{HIDDEN}@{host}/gated"))
    assert not _visible(password, redact_url(url))
    assert host in redact_url(url)


@settings(max_examples=200, deadline=None)
@given(host=hosts, token=st.text(alphabet="abcdefXYZ0123456789-_.~", min_size=4, max_size=30))
def test_tokens_in_a_query_string_are_hidden(host: str, token: str) -> None:
    assume(token not in f"http://{host}/video?token=&password=&key=&channel=1")
    for name in ("token", "password", "key", "PWD", "api_key"):
        url = f"http://{host}/video?channel=1&{name}={token}"
        assert token not in redact_url(url) and token not in redact(f"cannot open {url}: refused")
        assert "channel=1" in redact_url(url) and host in redact_url(url)


@settings(max_examples=300, deadline=None)
@given(value=st.text(max_size=400))
def test_a_shown_value_is_one_printable_bounded_line(value: str) -> None:
    line = shown(value)
    assert line.isprintable() and len(line) <= 200 + 2 + len("...(+400)")
    if len(value) <= 200:
        assert ast.literal_eval(line) == value


def test_known_secrets_are_hidden_as_written_and_encoded() -> None:
    assert (
        redact("auth failed for 'p@ss w0rd' (p%40ss%20w0rd)", ["p@ss w0rd"]) == "auth failed for '***' (***)"
    )
    assert redact("host=db user=gated password=hunter22 dbname=gated") == (
        "host=db user=gated password=*** dbname=gated"
    )


# -- the database: CLI commands, as an operator runs them -------------------------------------------


def run_gated(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gated", *args], capture_output=True, text=True, timeout=60, check=False
    )


SMART_CAMERA = '[[lanes.devices]]\nid = "ocr-1"\ndriver = "ocr-camera"\nhost = "127.0.0.1"\nport = 9'


def write_config(folder: Path, storage: str, devices: str = SMART_CAMERA) -> Path:
    config = folder / "gate.toml"
    config.write_text(
        f"""site = "sec"
[storage]
{storage}
evidence = "{folder / "evidence"}"
[holds]
max_age_seconds = 900
[[lanes]]
id = "lane-1"
require = ["ocr"]
{devices}
""",
        encoding="utf-8",
    )
    return config


@pytest.mark.parametrize(
    "command",
    [
        ("holds", "list", "--config"),
        ("query", "MSKU4135329", "--config"),
        ("preadvice", "list", "--config"),
        ("credentials", "status", "--config"),
        ("run", "--config"),
        ("check-config", "--config"),
    ],
)
def test_a_database_that_refuses_never_shows_its_password(tmp_path: Path, command: tuple[str, ...]) -> None:
    port = free_port()  # nothing listens there
    config = write_config(
        tmp_path, f'database = "postgresql+psycopg://gated:{DB_PASSWORD}@127.0.0.1:{port}/gated"'
    )
    result = run_gated(*command, str(config))
    output = result.stdout + result.stderr
    assert DB_PASSWORD not in output, output
    if command[0] != "check-config":  # check-config does not connect; the others say where they tried
        assert result.returncode == 1 and f"127.0.0.1:{port}" in result.stderr, output
        assert "Traceback" not in output


def test_a_database_url_given_with_db_never_shows_its_password() -> None:
    url = f"postgresql+psycopg://gated:{DB_PASSWORD}@127.0.0.1:{free_port()}/gated"
    result = run_gated("holds", "list", "--db", url)
    assert result.returncode == 1 and DB_PASSWORD not in result.stdout + result.stderr
    assert "gated:***@127.0.0.1" in result.stderr


def test_a_malformed_database_url_is_a_config_error_without_its_password(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, f'database = "postgresql+psycopg://gated:{DB_PASSWORD}@db.example:54x32/gated"'
    )
    result = run_gated("check-config", "--config", str(config))
    assert result.returncode == 78, result.stdout + result.stderr
    assert "storage.database" in result.stderr and "db.example" in result.stderr
    assert DB_PASSWORD not in result.stdout + result.stderr
    listed = run_gated(
        "holds", "list", "--db", f"postgresql+psycopg://gated:{DB_PASSWORD}@db.example:54x32/g"
    )
    assert listed.returncode == 1 and "Traceback" not in listed.stderr
    assert DB_PASSWORD not in listed.stdout + listed.stderr


@pytest.mark.parametrize(
    ("storage", "problem"),
    [
        ('database = "g.db"\ndatabase_password_file = "pw"', "SQLite has no password"),
        (
            'database = "postgresql+psycopg://gated:inline@db/gated"\ndatabase_password_file = "pw"',
            "has a password too",
        ),
        (
            'database = "postgresql+psycopg://gated@db/gated"\ndatabase_password_file = "missing"',
            "cannot read",
        ),
    ],
)
def test_a_database_password_file_that_cannot_work_is_a_config_error(
    tmp_path: Path, storage: str, problem: str
) -> None:
    (tmp_path / "pw").write_text("secret\n", encoding="utf-8")
    result = run_gated("check-config", "--config", str(write_config(tmp_path, storage)))
    assert result.returncode == 78 and "database_password_file" in result.stderr, result.stderr
    assert problem in result.stderr


@pytest.fixture(scope="module")
def password_database() -> Iterator[str]:
    """A database on a real server that asks for gated's password (the URL names none)."""
    with postgres_server() as server:
        url = server.new_database()
        engine = open_engine(url, create=False)
        with engine.begin() as conn:
            conn.execute(text(f"ALTER ROLE gated PASSWORD '{DB_PASSWORD}:p@ss/w0rd'"))
            hba = Path(str(conn.execute(text("SHOW hba_file")).scalar()))
        hba.write_text("local all all scram-sha-256\n", encoding="utf-8")
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_reload_conf()"))
        engine.dispose()
        deadline = time.monotonic() + 10
        while True:  # the server reads its pg_hba.conf again a moment after the signal
            try:
                open_engine(url, create=False).connect().close()
            except Exception:
                break
            assert time.monotonic() < deadline, "the server kept trusting connections without a password"
            time.sleep(0.05)
        yield url


def test_the_database_password_comes_from_its_file(tmp_path: Path, password_database: str) -> None:
    password = f"{DB_PASSWORD}:p@ss/w0rd"  # characters a URL would need encoded: never written into one
    with pytest.raises(StorageError) as refused:
        open_engine(password_database)
    assert "password" in str(refused.value)  # the server's reason: no password was given

    good = tmp_path / "db-password"
    good.write_text(password + "\n", encoding="utf-8")  # one trailing newline, as editors leave it
    engine = open_engine(password_database, password_file=good)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT current_user")).scalar() == "gated"
    engine.dispose()

    wrong = tmp_path / "wrong-password"
    wrong.write_text("Wr0ngPassw0rd-123\n", encoding="utf-8")
    with pytest.raises(StorageError) as failed:
        open_engine(password_database, password_file=wrong)
    assert "Wr0ngPassw0rd-123" not in str(failed.value) and "authentication failed" in str(failed.value)

    config = write_config(
        tmp_path, f'database = "{password_database}"\ndatabase_password_file = "{good.name}"'
    )
    listed = run_gated("holds", "list", "--config", str(config))
    assert listed.returncode == 0, listed.stderr
    assert "the hold list has never been loaded" in listed.stdout
    assert password not in listed.stdout + listed.stderr


# -- cameras ------------------------------------------------------------------------------------


def frames_device(views: list[str], **more: Any) -> dict[str, Any]:
    return {"id": "cam-1", "driver": "ocr-frames", "views": views, **more}


def gate_with(device: dict[str, Any]) -> dict[str, Any]:
    return {
        "site": "sec",
        "holds": {"max_age_seconds": 900},
        "lanes": [{"id": "lane-1", "require": ["ocr"], "devices": [device]}],
    }


@pytest.mark.parametrize(
    "view",
    [
        f"rtsp://admin:{CAMERA_PASSWORD}@cam.example:99999/stream",  # a port out of range
        f"http://admin:{CAMERA_PASSWORD}@cam.example:80x/video",  # a port that is no number
        f"rtsp:/admin:{CAMERA_PASSWORD}@cam.example/stream",  # '//' forgotten: no file path either
        f"rtps://admin:{CAMERA_PASSWORD}@cam.example/stream",  # an unknown scheme
        f"rtsp://admin:{CAMERA_PASSWORD} @cam.example/stream",  # a space where none can be
    ],
)
def test_a_bad_camera_view_is_a_config_error_without_its_password(view: str) -> None:
    with pytest.raises(ConfigError) as refused:
        validate(gate_with(frames_device([view])))
    message = str(refused.value)
    assert CAMERA_PASSWORD not in message and "views" in message and "cam.example" in message


def test_a_smart_camera_host_with_credentials_is_refused_unshown() -> None:
    device = {
        "id": "cam-1",
        "driver": "ocr-camera",
        "host": f"admin:{CAMERA_PASSWORD}@192.0.2.20",
        "port": 5300,
    }
    with pytest.raises(ConfigError) as refused:
        validate(gate_with(device))
    assert CAMERA_PASSWORD not in str(refused.value) and "host" in str(refused.value)


def test_check_config_shows_a_bad_camera_view_without_its_password(tmp_path: Path) -> None:
    devices = (
        '[[lanes.devices]]\nid = "cam-1"\ndriver = "ocr-frames"\n'
        f'views = ["rtsp://admin:{CAMERA_PASSWORD}@cam.example:99999/stream"]'
    )
    result = run_gated("check-config", "--config", str(write_config(tmp_path, 'database = "g.db"', devices)))
    assert result.returncode == 78 and "views" in result.stderr, result.stderr
    assert CAMERA_PASSWORD not in result.stdout + result.stderr


def status_details(sink: RecordingSink) -> list[str]:
    return [detail for _state, detail in sink.statuses]


def test_a_camera_that_cannot_be_reached_shows_no_password_or_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    views = [
        f"http://admin:{CAMERA_PASSWORD}@127.0.0.1:{port}/video?channel=1&token={TOKEN}",
        f"http://admin:{CAMERA_PASSWORD}@127.0.0.1:99999/video",  # past the config's checks
    ]
    settings = OcrFramesDevice.model_construct(id="cam-1", driver="ocr-frames", views=views)  # unchecked
    driver = FramesCameraDriver(
        "lane-1", settings, pool=OcrPool(), evidence=EvidenceStore(tmp_path), backoff_max=0.2
    )
    sink = RecordingSink("lane-1", "cam-1")
    with caplog.at_level(logging.DEBUG), driver_running(driver, sink):
        sink.wait_for("the camera offline", lambda: DeviceState.OFFLINE in sink.states)
        time.sleep(0.5)  # a retry or two
    said = status_details(sink) + [record.getMessage() for record in caplog.records]
    assert any(f"127.0.0.1:{port}" in line for line in status_details(sink)), said
    for line in said:
        assert CAMERA_PASSWORD not in line and TOKEN not in line, line


class _BasicAuthCamera(ThreadingHTTPServer):
    """An MJPEG camera that wants user ``gated`` and ``password`` (Basic authentication)."""

    def __init__(self, password: str) -> None:
        self.expected = "Basic " + base64.b64encode(f"gated:{password}".encode()).decode()
        self.refused = 0
        self.jpeg = encode_jpeg(render_empty_lane(np.random.default_rng(1)))
        self.stopping = threading.Event()
        super().__init__(("127.0.0.1", 0), _CameraHandler)
        self.daemon_threads = True

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _CameraHandler(BaseHTTPRequestHandler):
    server: _BasicAuthCamera

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != self.server.expected:
            self.server.refused += 1
            self.send_response(401, "Unauthorized")
            self.send_header("WWW-Authenticate", 'Basic realm="camera"')
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        try:
            while not self.server.stopping.is_set():
                part = self.server.jpeg
                self.wfile.write(
                    b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(part)
                    + part
                    + b"\r\n"
                )
                time.sleep(0.1)
        except OSError:
            pass


@pytest.fixture
def auth_camera() -> Iterator[_BasicAuthCamera]:
    camera = _BasicAuthCamera("c@m p:ss/#1")
    thread = threading.Thread(target=camera.serve_forever, daemon=True)
    thread.start()
    yield camera
    camera.stopping.set()
    camera.shutdown()
    camera.server_close()


def camera_config(tmp_path: Path, port: int, password: str) -> Path:
    (tmp_path / "camera-password").write_text(password + "\n", encoding="utf-8")
    devices = (
        '[[lanes.devices]]\nid = "cam-1"\ndriver = "ocr-frames"\n'
        f'views = ["http://gated@127.0.0.1:{port}/video"]\n'
        'view_password_file = "camera-password"'
    )
    return write_config(tmp_path, 'database = "g.db"', devices)


def run_camera(config: Path, caplog: pytest.LogCaptureFixture, state: DeviceState) -> list[str]:
    device = load_config(config).lanes[0].devices[0]
    assert isinstance(device, OcrFramesDevice)
    context = DriverContext(SystemClock(), EvidenceStore(config.parent / "ev"), OcrPool)
    driver = build_driver("lane-1", device, context)
    sink = RecordingSink("lane-1", "cam-1")
    with caplog.at_level(logging.DEBUG), driver_running(driver, sink):
        sink.wait_for(f"the camera {state}", lambda: state in sink.states)
    return status_details(sink) + [record.getMessage() for record in caplog.records]


def test_a_camera_password_comes_from_its_file(
    tmp_path: Path, auth_camera: _BasicAuthCamera, caplog: pytest.LogCaptureFixture
) -> None:
    said = run_camera(camera_config(tmp_path, auth_camera.port, "c@m p:ss/#1"), caplog, DeviceState.ONLINE)
    assert auth_camera.refused == 0
    assert not any("c@m p:ss" in line or quote("c@m p:ss/#1", safe="") in line for line in said)


def test_a_wrong_camera_password_is_reported_without_it(
    tmp_path: Path, auth_camera: _BasicAuthCamera, caplog: pytest.LogCaptureFixture
) -> None:
    said = run_camera(camera_config(tmp_path, auth_camera.port, "Wr0ngCamPass"), caplog, DeviceState.OFFLINE)
    assert auth_camera.refused >= 1
    assert any("401" in line for line in said), said
    assert not any("Wr0ngCamPass" in line for line in said)


def test_a_camera_password_file_that_cannot_work_is_a_config_error(tmp_path: Path) -> None:
    unread = (
        '[[lanes.devices]]\nid = "cam-1"\ndriver = "ocr-frames"\n'
        'views = ["rtsp://gated@cam.example/stream"]\nview_password_file = "missing"'
    )
    result = run_gated("check-config", "--config", str(write_config(tmp_path, 'database = "g.db"', unread)))
    assert result.returncode == 78 and "view_password_file: cannot read" in result.stderr, result.stderr
    with pytest.raises(ConfigError, match="view_password_file needs a view that names a user"):
        validate(gate_with(frames_device(["rtsp://cam.example/stream"], view_password_file="pw")))


def test_a_view_with_its_own_password_keeps_it(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("from-file\n", encoding="utf-8")
    devices = (
        '[[lanes.devices]]\nid = "cam-1"\ndriver = "ocr-frames"\n'
        'views = ["rtsp://gated@cam-1.example/s", "rtsp://other:own@cam-2.example/s", "frames/"]\n'
        'view_password_file = "pw"'
    )
    device = load_config(write_config(tmp_path, 'database = "g.db"', devices)).lanes[0].devices[0]
    assert isinstance(device, OcrFramesDevice)
    assert device.views == [
        "rtsp://gated:from-file@cam-1.example/s",
        "rtsp://other:own@cam-2.example/s",
        str(tmp_path / "frames"),
    ]


def test_a_view_error_from_the_frame_source_is_redacted(tmp_path: Path) -> None:
    views = [f"http://admin:{CAMERA_PASSWORD}@127.0.0.1:99999/v"]  # past the config's checks
    settings = OcrFramesDevice.model_construct(id="cam-1", driver="ocr-frames", views=views)
    driver = FramesCameraDriver("lane-1", settings, pool=OcrPool(), evidence=EvidenceStore(tmp_path))
    with pytest.raises(DeviceUnavailable) as down:
        driver.connect()
    assert CAMERA_PASSWORD not in str(down.value) and "127.0.0.1:99999" in str(down.value)

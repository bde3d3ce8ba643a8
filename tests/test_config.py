"""Configuration: the examples are valid; every problem is refused with the key that is wrong."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gated.config import OcrFramesDevice, json_schema, load_config
from gated.errors import ConfigError
from ocr.plate import DEFAULT_FORMATS
from tests.tls import Pki

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "config").glob("*.toml"))


def gated(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gated", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_there_are_one_lane_and_multi_lane_examples() -> None:
    names = {path.name for path in EXAMPLES}
    assert {"one-lane.toml", "multi-lane.toml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid(path: Path, tmp_path: Path) -> None:
    config = load_config(path)
    assert config.lanes
    assert config.mqtt.tls is not None and config.mqtt.tls.cert_file and not config.mqtt.lab_cleartext
    # Installed beside its certificates (tls/, made here: none ship), the example checks out.
    installed = tmp_path / path.name
    installed.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    for entry in (ROOT / "config").iterdir():
        if entry.is_dir():
            (tmp_path / entry.name).symlink_to(entry)
    pki = Pki(tmp_path / "tls")
    identity = pki.client(config.mqtt.client_id or "gated")
    tls = config.mqtt.tls
    for made, wanted in ((identity.cert, tls.cert_file), (identity.key, tls.key_file)):
        made.rename(tmp_path / "tls" / Path(str(wanted)).name)
    result = gated("check-config", "--config", str(installed))
    assert result.returncode == 0, result.stderr
    # Without them, check-config says which file is missing.
    (tmp_path / "tls" / Path(str(tls.key_file)).name).unlink()
    result = gated("check-config", "--config", str(installed))
    assert result.returncode == 78 and "mqtt.tls" in result.stderr, result.stderr


def test_shipped_json_schema_is_current() -> None:
    shipped = (ROOT / "config" / "gated.schema.json").read_text(encoding="utf-8")
    assert json.loads(shipped) == json.loads(json_schema()), "run: make schema"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gate.toml"
    path.write_text(text, encoding="utf-8")
    return path


BROKEN = """
site = "Bad Site"
colour = "blue"
[mqtt]
port = "1883"
[[lanes]]
id = "node"
[[lanes.devices]]
id = "rfid-1"
driver = "rfid-serial"
url = "/dev/ttyUSB0"
baud = 9600
[[lanes.devices]]
id = "rpm-1"
driver = "rpm-modbus"
host = "10.0.0.5"
"""


def test_every_problem_is_one_line_naming_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, BROKEN)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    problems = caught.value.problems
    text = "\n".join(problems)
    for key in (
        "site",
        "colour: unknown key",
        "mqtt.port",
        "lanes[0:node].id",
        "lanes[0:node].devices[0:rfid-1].baud: unknown key",
        "lanes[0:node].devices[1:rpm-1].profile",
    ):
        assert key in text, text
    assert all(line.startswith(str(path)) for line in problems)


def test_check_config_exits_78_with_the_problems(tmp_path: Path) -> None:
    result = gated("check-config", "--config", str(write(tmp_path, BROKEN)))
    assert result.returncode == 78
    assert "colour: unknown key" in result.stderr
    assert len(result.stderr.strip().splitlines()) >= 6


def test_unreadable_and_non_toml_files(tmp_path: Path) -> None:
    assert gated("check-config", "--config", str(tmp_path / "missing.toml")).returncode == 78
    result = gated("check-config", "--config", str(write(tmp_path, "site = [unclosed")))
    assert result.returncode == 78 and "not valid TOML" in result.stderr


def test_missing_profile_file_is_a_config_error(tmp_path: Path) -> None:
    text = """
site = "s"
[holds]
max_age_seconds = 900
[[lanes]]
id = "lane-1"
require = ["rpm"]
[[lanes.devices]]
id = "rpm-1"
driver = "rpm-modbus"
host = "127.0.0.1"
profile = "nowhere.toml"
"""
    config = write(tmp_path, text)
    checked = gated("check-config", "--config", str(config))
    assert checked.returncode == 78 and "nowhere.toml" in checked.stderr
    # gated run refuses with the same line, key path included, before it starts anything.
    refused = gated("run", "--config", str(config))
    assert refused.returncode == 78
    assert "lanes[0:lane-1].devices[0:rpm-1].profile" in refused.stderr
    assert refused.stderr.strip() == checked.stderr.strip()


def test_required_kind_without_device_is_refused(tmp_path: Path) -> None:
    text = """
site = "s"
[holds]
max_age_seconds = 900
[[lanes]]
id = "lane-1"
require = ["rfid", "ocr"]
[[lanes.devices]]
id = "cam"
driver = "ocr-camera"
host = "127.0.0.1"
port = 5000
"""
    with pytest.raises(ConfigError, match="require lists rfid"):
        load_config(write(tmp_path, text))


FRAMES_LANE = """
site = "s"
[holds]
max_age_seconds = 900
[[lanes]]
id = "lane-1"
require = ["ocr"]
[[lanes.devices]]
id = "cam"
driver = "ocr-frames"
views = ["http://127.0.0.1:8081/video"]
"""


def test_plate_views_and_formats_become_the_drivers_plate_settings(tmp_path: Path) -> None:
    text = (
        FRAMES_LANE
        + """plate_views = ["plates/"]
plate_min_confidence = 0.95
plate_formats = [{ name = "eu-dash", pattern = "LL-DDD-LL", letters = "ABCDEFGHJKLMNPQRSTVWXYZ" }]
"""
    )
    [device] = load_config(write(tmp_path, text)).lanes[0].devices
    assert isinstance(device, OcrFramesDevice)
    assert device.plate_views == [str(tmp_path / "plates")]  # relative to the config, like views
    [plate_format] = device.plate_format_list()
    assert (plate_format.name, plate_format.classes, "I" in plate_format.letters) == (
        "eu-dash",
        "LLDDDLL",
        False,
    )
    assert device.plate_min_confidence == 0.95


def test_without_plate_formats_the_generic_shapes_are_read(tmp_path: Path) -> None:
    [device] = (
        load_config(write(tmp_path, FRAMES_LANE + 'plate_views = ["rtsp://10.0.0.9/front"]\n'))
        .lanes[0]
        .devices
    )
    assert isinstance(device, OcrFramesDevice) and device.plate_format_list() == DEFAULT_FORMATS


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        (
            'plate_formats = [{ name = "nl", pattern = "LL-99-XX" }]',
            "devices[0:cam].plate_formats[0]: plate format 'nl': pattern 'LL-99-XX' is not groups",
        ),
        (
            'plate_formats = [{ name = "x", pattern = "LD" }]',
            "plate_formats[0]: plate format 'x': a plate has 4 to 10 characters",
        ),
        (
            'plate_formats = [{ name = "x", pattern = "LL DDD", letters = "abc" }]',
            "plate format 'x': letters must be capital A-Z",
        ),
        ('plate_formats = [{ pattern = "LL DDD" }]', "plate_formats[0].name: required key is missing"),
        ('plate_formats = [{ name = "x", pattern = "LL DDD", colour = "white" }]', "colour: unknown key"),
        (
            'plate_formats = [{ name = "x", pattern = "LL DDD" }, { name = "x", pattern = "LLDDDD" }]',
            "plate format names must be unique: x",
        ),
        ("plate_formats = []", "plate_formats: List should have at least 1 item"),
        (
            'plate_formats = [{ name = "x", pattern = 7 }]',
            "plate_formats[0].pattern: Input should be a valid string",
        ),
        ('plate_views = ["ftp://10.0.0.9/front"]', "plate_views: view 'ftp://10.0.0.9/front'"),
        ("plate_min_confidence = 1.5", "plate_min_confidence: Input should be less than or equal to 1"),
    ],
)
def test_bad_plate_settings_are_refused_naming_the_key(tmp_path: Path, settings: str, problem: str) -> None:
    with_view = 'plate_views = ["http://127.0.0.1:8082/video"]\n' if "plate_views" not in settings else ""
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, FRAMES_LANE + with_view + settings + "\n"))
    assert problem in str(caught.value), caught.value.problems


def test_plate_settings_without_a_plate_view_are_refused_not_ignored(tmp_path: Path) -> None:
    text = FRAMES_LANE + 'plate_formats = [{ name = "x", pattern = "LL DDD" }]\nplate_min_confidence = 0.95\n'
    with pytest.raises(ConfigError, match="plate_formats and plate_min_confidence need plate_views"):
        load_config(write(tmp_path, text))


MQTT_BASE = """
site = "s"
[holds]
max_age_seconds = 900
[[lanes]]
id = "lane-1"
require = ["rfid"]
[[lanes.devices]]
id = "rfid-1"
driver = "rfid-serial"
url = "/dev/ttyS0"
"""


@pytest.mark.parametrize(
    ("mqtt", "wanted"),
    [
        ('host = "mqtt.terminal.example"\nport = 1883', "TLS is required"),
        ('host = "10.0.0.5"', "TLS is required"),
        (
            'host = "127.0.0.1"\nusername = ""\npassword_file = "p"\n[mqtt.tls]\ncert_file = "c.pem"',
            "key_file",
        ),
        ('host = "127.0.0.1"\npassword_file = "secret"', "password_file needs username"),
        ('host = "mqtt.terminal.example"\ntls = true', "mqtt.tls"),
    ],
)
def test_an_unsafe_broker_link_is_refused(tmp_path: Path, mqtt: str, wanted: str) -> None:
    result = gated("check-config", "--config", str(write(tmp_path, MQTT_BASE + "\n[mqtt]\n" + mqtt + "\n")))
    assert result.returncode == 78, result.stderr
    assert wanted in result.stderr, result.stderr


def test_clear_text_is_allowed_on_loopback_and_in_a_declared_lab(tmp_path: Path) -> None:
    for mqtt in (
        'host = "127.0.0.1"',
        'host = "localhost"',
        'host = "::1"',
        'host = "10.0.0.5"\nlab_cleartext = true',
    ):
        result = gated(
            "check-config", "--config", str(write(tmp_path, MQTT_BASE + "\n[mqtt]\n" + mqtt + "\n"))
        )
        assert result.returncode == 0, (mqtt, result.stderr)


def test_tls_files_are_checked(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "tls")
    node = pki.client("gated-s-node")
    settings = (
        f'[mqtt]\nhost = "mqtt.example"\nport = 8883\n[mqtt.tls]\nca_file = "{pki.ca}"\n'
        f'cert_file = "{node.cert}"\nkey_file = "{node.key}"\n'
    )
    assert gated("check-config", "--config", str(write(tmp_path, MQTT_BASE + settings))).returncode == 0
    node.key.chmod(0o644)
    result = gated("check-config", "--config", str(write(tmp_path, MQTT_BASE + settings)))
    assert (
        result.returncode == 78 and "key_file" in result.stderr and "readable by every user" in result.stderr
    )
    node.key.chmod(0o600)
    (tmp_path / "tls" / "ca.pem").write_text("not a certificate", encoding="utf-8")
    result = gated("check-config", "--config", str(write(tmp_path, MQTT_BASE + settings)))
    assert result.returncode == 78 and "ca_file" in result.stderr, result.stderr


def test_a_password_file_is_read_and_must_be_private(tmp_path: Path) -> None:
    secret = tmp_path / "mqtt-password"
    secret.write_text("S3cret\n", encoding="utf-8")
    secret.chmod(0o644)
    settings = f'[mqtt]\nhost = "127.0.0.1"\nusername = "gated"\npassword_file = "{secret}"\n'
    result = gated("check-config", "--config", str(write(tmp_path, MQTT_BASE + settings)))
    assert result.returncode == 78 and "password_file" in result.stderr and "S3cret" not in result.stderr
    secret.chmod(0o640)
    assert gated("check-config", "--config", str(write(tmp_path, MQTT_BASE + settings))).returncode == 0

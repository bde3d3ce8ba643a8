"""Configuration: the examples are valid; every problem is refused with the key that is wrong."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gated.config import json_schema, load_config
from gated.errors import ConfigError

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
def test_examples_are_valid(path: Path) -> None:
    config = load_config(path)
    assert config.lanes
    result = gated("check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr


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
[[lanes]]
id = "lane-1"
require = ["rpm"]
[[lanes.devices]]
id = "rpm-1"
driver = "rpm-modbus"
host = "127.0.0.1"
profile = "nowhere.toml"
"""
    result = gated("check-config", "--config", str(write(tmp_path, text)))
    assert result.returncode == 78 and "nowhere.toml" in result.stderr


def test_required_kind_without_device_is_refused(tmp_path: Path) -> None:
    text = """
site = "s"
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

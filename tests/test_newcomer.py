"""What a newcomer meets first, run as they would run it: ``python -m gated ...`` in a child process.

Each test fails on the behaviour it replaced: migration chatter before every answer, an example
config naming a file that does not exist, "1 lanes", pydantic's "Value error, " wording, problems
between fields held back until every field is right, empty hosts accepted, help without examples,
read-only commands creating databases, a daemon silent about an unreachable broker, ``gated ocr``
quiet about an empty folder and about Ctrl-C, ``holds check`` exiting 0 for a held container and
``holds add`` duplicating an active hold.
"""

from __future__ import annotations

import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gate import ROOT, gated

pytestmark = pytest.mark.subprocess

HELD = "MSKU4135329"
CLEAR = "TGHU1234563"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def config_text(
    *, mqtt_host: str = "127.0.0.1", port: int = 1883, lanes: str = "", database: str = "gated.db"
) -> str:
    return f"""
site = "s"
[mqtt]
host = "{mqtt_host}"
port = {port}
[storage]
database = "{database}"
evidence = "evidence"
[holds]
max_age_seconds = 900
{lanes or RFID_LANE}
"""


RFID_LANE = """
[[lanes]]
id = "lane-1"
require = ["rfid"]
  [[lanes.devices]]
  id = "rfid-1"
  driver = "rfid-serial"
  url = "loop://"
"""


def rpm_lane(lane: str, profile: str = "nope.toml", *, port: int = 502, host: str = "127.0.0.1") -> str:
    return f"""
[[lanes]]
id = "{lane}"
require = ["rpm"]
  [[lanes.devices]]
  id = "rfid-1"
  driver = "rfid-serial"
  url = "loop://"
  [[lanes.devices]]
  id = "rpm-1"
  driver = "rpm-modbus"
  host = "{host}"
  port = {port}
  profile = "{profile}"
"""


def problems(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 78, result.stderr
    return result.stderr.strip().splitlines()


# -- 1. database commands answer without alembic's chatter ----------------------------------------


def test_a_database_command_prints_its_answer_only(tmp_path: Path) -> None:
    database = str(tmp_path / "new.db")
    result = gated(
        "holds", "import", "/dev/null", "--kind", "holds", "--allow-empty", "--reason", "r", "--db", database
    )
    assert result.stderr == ""
    assert result.stdout.startswith("imported holds")
    # With --log-level DEBUG the migrations are shown (the log level is the command line's, not a
    # library's that configured logging when it was imported).
    debug = gated("--log-level", "DEBUG", "holds", "list", "--db", str(tmp_path / "new.db"))
    assert "alembic.runtime.migration" in debug.stderr, debug.stderr
    fresh = gated(
        "--log-level",
        "DEBUG",
        "holds",
        "import",
        "/dev/null",
        "--kind",
        "holds",
        "--allow-empty",
        "--reason",
        "r",
        "--db",
        str(tmp_path / "other.db"),
    )
    assert "Running upgrade" in fresh.stderr, fresh.stderr


# -- 2. the example configs say what the README says -----------------------------------------------


def test_example_configs_name_themselves_and_the_readmes_ocr_time() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    [readme_seconds] = re.findall(r"OCR costs about ([\d.]+) s a 1280x720 frame", readme)
    for config in sorted((ROOT / "config").glob("*.toml")):
        text = config.read_text(encoding="utf-8")
        for named in re.findall(r"gated check-config --config (\S+)", text):
            assert named == f"config/{config.name}", f"{config.name} says to validate {named}"
        for seconds in re.findall(r"~([\d.]+) s a 1280x720 frame", text):
            assert seconds == readme_seconds, f"{config.name}: {seconds} s, README: {readme_seconds} s"


# -- 3. to 6. check-config -------------------------------------------------------------------------


def test_check_config_counts_in_the_singular_and_plural(tmp_path: Path) -> None:
    one = write(tmp_path / "one.toml", config_text())
    assert gated("check-config", "--config", str(one)).stdout.strip() == f"{one}: valid (1 lane, 1 device)"
    two = write(tmp_path / "two.toml", config_text(lanes=RFID_LANE + RFID_LANE.replace("lane-1", "lane-2")))
    assert gated("check-config", "--config", str(two)).stdout.strip() == f"{two}: valid (2 lanes, 2 devices)"


def test_problems_are_in_the_configs_words_and_come_all_at_once(tmp_path: Path) -> None:
    lanes = rpm_lane("lane-1", port=0) + rpm_lane("lane-1")
    result = gated(
        "check-config", "--config", str(write(tmp_path / "g.toml", config_text(lanes=lanes))), check=False
    )
    lines = problems(result)
    assert not any("Value error" in line for line in lines), lines
    # A field error and the duplicate lane id, in one run.
    assert any(
        line.endswith("lanes[0:lane-1].devices[1:rpm-1].port: Input should be greater than or equal to 1")
        for line in lines
    ), lines
    assert any(line.endswith("lanes: lane ids must be unique: lane-1") for line in lines), lines


def test_a_missing_profile_is_reported_once_with_its_key_path(tmp_path: Path) -> None:
    lanes = rpm_lane("lane-1") + rpm_lane("lane-2")
    lines = problems(
        gated(
            "check-config", "--config", str(write(tmp_path / "g.toml", config_text(lanes=lanes))), check=False
        )
    )
    [line] = [line for line in lines if "nope.toml" in line]
    assert "lanes[0:lane-1].devices[1:rpm-1].profile: " in line and "cannot read" in line, line
    assert "lanes[1:lane-2].devices[1:rpm-1]" in line, "the other device that uses it is named"


def test_empty_hosts_are_refused_naming_the_key(tmp_path: Path) -> None:
    barrier = """
  [[lanes.devices]]
  id = "barrier-1"
  driver = "barrier-modbus"
  host = ""
"""
    text = config_text(mqtt_host="", lanes=RFID_LANE + barrier)
    lines = problems(gated("check-config", "--config", str(write(tmp_path / "g.toml", text)), check=False))
    assert any(
        line.endswith("mqtt.host: must not be empty: give a host name or address")
        or line.endswith("mqtt.host: must not be empty")
        for line in lines
    ), lines
    assert any("lanes[0:lane-1].devices[1:barrier-1].host: must not be empty" in line for line in lines), (
        lines
    )
    blank = config_text(mqtt_host="  ")
    lines = problems(gated("check-config", "--config", str(write(tmp_path / "b.toml", blank)), check=False))
    assert any("mqtt.host: must not be empty" in line for line in lines), lines


# -- 7. help with examples ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        (),
        ("run",),
        ("check-config",),
        ("holds",),
        ("holds", "import"),
        ("holds", "add"),
        ("holds", "release"),
        ("holds", "list"),
        ("holds", "check"),
        ("holds", "send"),
        ("query",),
        ("ocr",),
        ("bench",),
        ("demo",),
    ],
    ids=lambda command: " ".join(command) or "gated",
)
def test_help_shows_examples(command: tuple[str, ...]) -> None:
    text = gated(*command, "--help").stdout
    examples = text.split("examples:\n", 1)[-1].splitlines() if "examples:\n" in text else []
    lines = [line for line in examples if line.strip().startswith(("gated ", "make ", "systemctl "))]
    assert 2 <= len(lines) <= 4, text
    assert any(line.strip().startswith(" ".join(("gated", *command))) for line in lines), text


# -- 8. read-only commands create nothing ----------------------------------------------------------


@pytest.mark.parametrize(
    "command", [("query", HELD), ("holds", "list"), ("holds", "check", HELD)], ids=lambda c: " ".join(c)
)
def test_read_only_commands_refuse_a_missing_database(tmp_path: Path, command: tuple[str, ...]) -> None:
    missing = tmp_path / "typo" / "gated.db"
    result = gated(*command, "--db", str(missing), check=False)
    assert result.returncode == 1 and result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert str(missing) in line
    assert not (tmp_path / "typo").exists()
    config = write(tmp_path / "g.toml", config_text(database="typo/gated.db"))
    result = gated(*command, "--config", str(config), check=False)
    assert result.returncode == 1 and str(missing) in result.stderr
    assert not (tmp_path / "typo").exists()


# -- 9. gated run says when it cannot reach the broker ---------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_until(config: Path, wanted: str, seconds: float) -> str:
    """Start ``gated run``, wait for ``wanted`` on stderr at most ``seconds``; stop it; its stderr."""
    log = config.with_suffix(".log")
    with log.open("w") as sink:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "gated", "run", "--config", str(config)],
            stderr=sink,
            stdout=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and wanted not in log.read_text():
                time.sleep(0.2)
        finally:
            daemon.terminate()
            daemon.wait(30)
    return log.read_text()


def test_run_warns_when_nothing_listens_at_the_broker_address(tmp_path: Path) -> None:
    port = free_port()
    config = write(tmp_path / "g.toml", config_text(port=port))
    wanted = f"MQTT broker at 127.0.0.1:{port}"
    assert wanted in run_until(config, wanted, 10)


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A TCP port that takes connections and never answers (a firewall, a wrong service)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield int(server.getsockname()[1])


def test_run_warns_when_the_broker_never_answers(tmp_path: Path, silent_listener: int) -> None:
    config = write(tmp_path / "g.toml", config_text(port=silent_listener))
    wanted = f"no answer from the MQTT broker at 127.0.0.1:{silent_listener}"
    log = run_until(config, wanted, 12)
    assert wanted in log, log


# -- 10. gated ocr: an empty folder, Ctrl-C ---------------------------------------------------------


def test_ocr_on_an_empty_folder_says_so(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no images here", encoding="utf-8")
    result = gated("ocr", str(tmp_path), check=False)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip() == f"gated ocr: no images in {tmp_path}"


@pytest.mark.ocr
def test_ctrl_c_says_interrupted_and_exits_130(tmp_path: Path) -> None:
    frame = (ROOT / "tests" / "frames" / "rod-across-boxed-3.jpg").read_bytes()
    for index in range(40):  # more than it reads before the signal comes
        (tmp_path / f"{index:02d}.jpg").write_bytes(frame)
    command = subprocess.Popen(
        [sys.executable, "-m", "gated", "ocr", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert command.stdout is not None
        first = command.stdout.readline()  # one image read: it is mid-folder now
        assert first.startswith(str(tmp_path)), first
        command.send_signal(signal.SIGINT)
        out, err = command.communicate(timeout=30)
    finally:
        command.kill()
    assert command.returncode == 130, (out, err)
    assert err.strip().splitlines()[-1] == "interrupted", err


# -- 11. holds check's exit status, holds add of a hold already active ----------------------------


def test_holds_check_exits_3_for_a_held_container_and_add_does_not_duplicate(tmp_path: Path) -> None:
    db = str(tmp_path / "gated.db")
    gated("holds", "import", "/dev/null", "--kind", "holds", "--allow-empty", "--reason", "r", "--db", db)
    assert gated("holds", "check", CLEAR, "--db", db).returncode == 0
    add = (
        "holds",
        "add",
        "--container",
        HELD,
        "--agency",
        "CBP",
        "--type",
        "exam",
        "--reason",
        "r",
        "--db",
        db,
    )
    assert gated(*add).stdout.startswith("placed hold 1:")
    again = gated(*add)
    assert again.stdout.startswith("already active, nothing changed: hold 1:"), again.stdout
    listed = gated("holds", "list", "--db", db).stdout
    assert "1 active hold(s) shown; hold list version 1" in listed, listed
    held = gated("holds", "check", HELD, "--db", db, check=False)
    assert held.returncode == 3 and "HELD by 1 active hold" in held.stdout
    assert "3 held" in " ".join(gated("holds", "check", "--help").stdout.split())


# -- 12. gated-sim lane says how to confirm a hold list ---------------------------------------------


def test_sim_lane_prints_how_to_confirm_a_hold_list(tmp_path: Path) -> None:
    scenario = write(tmp_path / "s.toml", 'lane = "lane-1"\n[[steps]]\nwait = 0.1\n')
    config = tmp_path / "sim.toml"
    sim = Path(sys.executable).parent / "gated-sim"
    done = subprocess.run(
        [str(sim), "lane", "--scenario", str(scenario), "--write-config", str(config), "--start-delay", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    [hint] = [line for line in done.stdout.splitlines() if "gated holds import" in line]
    words = shlex.split(hint.split(": ", 1)[1])
    assert words[0] == "gated" and words[-2:] == ["--config", str(config)], hint
    gated(*words[1:])
    assert "never been loaded" not in gated("holds", "list", "--config", str(config)).stdout

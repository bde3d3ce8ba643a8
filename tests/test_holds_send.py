"""``gated holds keygen`` and ``gated holds send`` against a real mosquitto, with a small responder
in gated's place that checks each signature on its own (not with gated's code) and answers."""

from __future__ import annotations

import argparse
import base64
import json
import re
import stat
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from paho.mqtt.enums import CallbackAPIVersion

from gated.errors import ConfigError
from gated.holds_send import register
from tests.conftest import Mosquitto

pytestmark = pytest.mark.timeout(60)

SITE = "test"
PLACE = [
    "--action", "place", "--container", "MSKU4135329", "--agency", "CBP", "--type", "customs",
    "--code", "1H",
]  # fmt: skip


def run(argv: list[str]) -> int:
    """Run ``gated holds ARGV`` as gated.cli.main would: the handler's code, or 78 for a ConfigError."""
    parser = argparse.ArgumentParser(prog="gated holds")
    register(parser.add_subparsers(dest="holds_command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except ConfigError:
        return 78


class Responder:
    """Stands in for gated: takes commands from holds/cmd, checks the Ed25519 signature over the
    sorted compact UTF-8 JSON of the command without ``sig``, and acks as told."""

    def __init__(self, port: int, public_key: str, verdict: str = "applied") -> None:
        self.public_key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key))
        self.verdict = verdict
        self.received: list[tuple[dict[str, Any], bool]] = []
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, *_: c.subscribe(f"gated/v1/{SITE}/holds/cmd", qos=1)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "responder could not subscribe"

    def _verified(self, command: dict[str, Any]) -> bool:
        unsigned = {key: value for key, value in command.items() if key != "sig"}
        message = json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        try:
            self.public_key.verify(base64.b64decode(command["sig"], validate=True), message.encode())
        except (InvalidSignature, KeyError, ValueError):
            return False
        return True

    def _on_message(self, client: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        command = json.loads(message.payload)
        verified = self._verified(command)
        self.received.append((command, verified))
        ack_topic = f"gated/v1/{SITE}/holds/ack"
        # Noise first: acks a sender must not take as its own.
        client.publish(ack_topic, b"not json", qos=1)
        other = {"command": command["id"], "key": "someone-else", "applied": False, "reason": "not yours"}
        client.publish(ack_topic, json.dumps(other), qos=1)
        applied = verified and self.verdict in ("applied", "duplicate")
        reason = {"applied": "hold placed", "duplicate": "already applied", "rejected": "no such agency"}
        ack = {
            "command": command["id"],
            "key": command.get("key"),
            "action": command.get("action"),
            "applied": applied and self.verdict == "applied",
            "duplicate": self.verdict == "duplicate",
            "reason": reason[self.verdict] if verified else "signature does not verify",
        }
        client.publish(ack_topic, json.dumps(ack), qos=1)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def customs_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, str]:
    """A key made by keygen: its file and the public key from the printed config block."""
    path = tmp_path / "cbp-2026.pem"
    assert run(["keygen", "--key-id", "cbp-2026", "--out", str(path), "--agency", "CBP"]) == 0
    block = tomllib.loads(capsys.readouterr().out)
    return path, str(block["holds"]["customs_keys"][0]["public_key"])


@pytest.fixture
def responders(mosquitto: Mosquitto, customs_key: tuple[Path, str]) -> Iterator[Any]:
    made: list[Responder] = []

    def make(verdict: str = "applied") -> Responder:
        made.append(Responder(mosquitto.port, customs_key[1], verdict))
        return made[-1]

    yield make
    for responder in made:
        responder.stop()


def send_args(mosquitto: Mosquitto, key: Path, *extra: str) -> list[str]:
    return [
        "send",
        "--broker",
        f"mqtt://127.0.0.1:{mosquitto.port}",
        "--site",
        SITE,
        "--key",
        str(key),
        *extra,
    ]


def test_keygen_prints_the_config_block_and_keeps_the_key_private(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "keys" / "cbp-2026.pem"
    out.parent.mkdir()
    argv = ["keygen", "--key-id", "cbp-2026", "--out", str(out), "--agency", "cbp", "--agency", "USDA"]
    assert run(argv) == 0
    printed = capsys.readouterr()
    assert printed.out.startswith("[[holds.customs_keys]]\n")
    entry = tomllib.loads(printed.out)["holds"]["customs_keys"][0]
    assert entry["id"] == "cbp-2026"
    assert entry["agencies"] == ["CBP", "USDA"]
    assert len(base64.b64decode(entry["public_key"], validate=True)) == 32
    assert str(out) in printed.err and "must stay with the customs system" in printed.err
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert "PRIVATE KEY" not in printed.out + printed.err

    before = out.read_bytes()
    assert run(argv) == 1  # never over an existing key
    assert "exists" in capsys.readouterr().err
    assert out.read_bytes() == before


def test_send_place_applied(
    mosquitto: Mosquitto, customs_key: tuple[Path, str], responders: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    responder = responders("applied")
    started = datetime.now(UTC)
    assert run(send_args(mosquitto, customs_key[0], *PLACE, "--reference", "E-1")) == 0
    out = capsys.readouterr().out
    assert re.fullmatch(r"applied cbp-2026-[0-9a-f]{16}: hold placed\n", out), out
    [(command, verified)] = responder.received
    assert verified
    assert out.split()[1].rstrip(":") == command["id"]
    ts = datetime.fromisoformat(command.pop("ts").replace("Z", "+00:00"))
    assert abs((ts - started).total_seconds()) < 30
    assert {k: v for k, v in command.items() if k not in ("id", "sig")} == {
        "schema": "gated.hold/1",
        "action": "place",
        "container": "MSKU4135329",
        "agency": "CBP",
        "hold_type": "customs",
        "code": "1H",
        "reference": "E-1",
        "key": "cbp-2026",  # the key file's stem
    }


def test_send_rejected_exits_1(
    mosquitto: Mosquitto, customs_key: tuple[Path, str], responders: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    responders("rejected")
    assert run(send_args(mosquitto, customs_key[0], *PLACE, "--id", "cbp-1")) == 1
    assert capsys.readouterr().out == "REJECTED cbp-1: no such agency\n"


def test_a_duplicate_counts_as_applied(
    mosquitto: Mosquitto, customs_key: tuple[Path, str], responders: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    responders("duplicate")
    assert run(send_args(mosquitto, customs_key[0], *PLACE, "--id", "cbp-1")) == 0
    assert capsys.readouterr().out.startswith("applied cbp-1")


def test_a_signature_by_another_key_is_answered_as_bad(
    tmp_path: Path,
    mosquitto: Mosquitto,
    customs_key: tuple[Path, str],
    responders: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    responder = responders("applied")
    other = tmp_path / "cbp-2026b.pem"
    assert run(["keygen", "--key-id", "x", "--out", str(other), "--agency", "CBP"]) == 0
    capsys.readouterr()
    argv = send_args(mosquitto, other, *PLACE, "--id", "cbp-2", "--key-id", "cbp-2026")
    assert run(argv) == 1
    assert capsys.readouterr().out == "REJECTED cbp-2: signature does not verify\n"
    assert [verified for _, verified in responder.received] == [False]


def test_no_answer_exits_1_after_the_timeout(
    mosquitto: Mosquitto, customs_key: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    assert run(send_args(mosquitto, customs_key[0], *PLACE, "--id", "cbp-3", "--timeout", "2")) == 1
    elapsed = time.monotonic() - started
    assert capsys.readouterr().out == "no answer to cbp-3 within 2 s\n"
    assert 2 <= elapsed < 8


def test_send_file_signs_and_sends_every_line(
    tmp_path: Path,
    mosquitto: Mosquitto,
    customs_key: tuple[Path, str],
    responders: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    responder = responders("applied")
    lines = tmp_path / "commands.jsonl"
    lines.write_text(
        '{"id": "cbp-10", "action": "sync", "agency": "CBP", "count": 0}\n'
        "\n"
        '{"action": "place", "bill_of_lading": "MAEU123456789", "agency": "CBP", "hold_type": "exam"}\n',
        encoding="utf-8",
    )
    assert run(send_args(mosquitto, customs_key[0], "--file", str(lines), "--json")) == 0
    acks = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    commands = [command for command, _ in responder.received]
    assert [verified for _, verified in responder.received] == [True, True]
    assert [ack["command"] for ack in acks] == [command["id"] for command in commands]
    assert commands[0]["id"] == "cbp-10"
    assert commands[0]["count"] == 0 and commands[0]["action"] == "sync"
    assert re.fullmatch(r"cbp-2026-[0-9a-f]{16}", commands[1]["id"])
    assert all(ack["applied"] is True and ack["key"] == "cbp-2026" for ack in acks)


def test_a_bad_file_line_sends_nothing(
    tmp_path: Path,
    mosquitto: Mosquitto,
    customs_key: tuple[Path, str],
    responders: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    responder = responders("applied")
    for bad in ("[1, 2]", '{"action": "place", "count": NaN}', '{"id": 1, "id": 2}', "{"):
        lines = tmp_path / "commands.jsonl"
        lines.write_text('{"action": "sync", "agency": "CBP", "count": 0}\n' + bad + "\n", encoding="utf-8")
        assert run(send_args(mosquitto, customs_key[0], "--file", str(lines))) == 1
        assert f"{lines}:2: " in capsys.readouterr().err
    time.sleep(0.3)
    assert responder.received == []


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:1883", "mqtt://", "mqtt://host:port", "mqtt://host:99999", "127.0.0.1:1883"]
)
def test_a_bad_broker_url_is_a_config_error(url: str, customs_key: tuple[Path, str]) -> None:
    argv = ["send", "--broker", url, "--site", SITE, "--key", str(customs_key[0]), *PLACE]
    assert run(argv) == 78


def test_a_key_file_others_can_read_is_a_config_error(
    mosquitto: Mosquitto, customs_key: tuple[Path, str]
) -> None:
    customs_key[0].chmod(0o644)
    assert run(send_args(mosquitto, customs_key[0], *PLACE)) == 78
    assert run(send_args(mosquitto, customs_key[0].with_name("missing.pem"), *PLACE)) == 78


def test_an_unreachable_broker_exits_1(
    customs_key: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.system import free_port

    argv = [
        "send",
        "--broker",
        f"mqtt://127.0.0.1:{free_port()}",
        "--site",
        SITE,
        "--key",
        str(customs_key[0]),
    ]
    assert run([*argv, *PLACE]) == 1
    assert "cannot reach the broker" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra",
    [
        [],  # neither --action nor --file
        ["--agency", "CBP"],  # options without --action
        ["--action", "place", "--agency", "CBP", "--type", "customs"],  # no target
        ["--action", "release", "--container", "MSKU4135329", "--type", "customs"],  # no agency
        ["--action", "sync", "--agency", "CBP"],  # no count
        ["--action", "sync", "--agency", "CBP", "--count", "-1"],
        ["--action", "sync", "--agency", "CBP", "--count", "1", "--container", "MSKU4135329"],
        ["--action", "place", "--container", "C", "--bl", "B", "--agency", "CBP", "--type", "customs"],
        ["--file", "x.jsonl", *PLACE],
        ["--timeout", "0", *PLACE],
    ],
)
def test_usage_errors_exit_2(extra: list[str], customs_key: tuple[Path, str]) -> None:
    argv = ["send", "--broker", "mqtt://127.0.0.1:1", "--site", SITE, "--key", str(customs_key[0]), *extra]
    with pytest.raises(SystemExit) as exit_:
        run(argv)
    assert exit_.value.code == 2


def test_the_gated_command_runs_keygen_and_send(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """The same through ``python -m gated holds``: its exit codes come from gated.cli.main."""

    def gated(*argv: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "gated", "holds", *argv]
        return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)

    key = tmp_path / "usda-1.pem"
    made = gated("keygen", "--key-id", "usda-1", "--out", str(key), "--agency", "USDA")
    assert made.returncode == 0, made.stderr
    public_key = tomllib.loads(made.stdout)["holds"]["customs_keys"][0]["public_key"]
    responder = Responder(mosquitto.port, public_key)
    try:
        sent = gated(*send_args(mosquitto, key, "--action", "sync", "--agency", "USDA", "--count", "2"))
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert sent.stdout.startswith("applied usda-1-")
        assert [(c["action"], c["count"], ok) for c, ok in responder.received] == [("sync", 2, True)]
    finally:
        responder.stop()
    refused = gated("send", "--broker", "tcp://x", "--site", SITE, "--key", str(key), *PLACE)
    assert refused.returncode == 78
    assert "--broker" in refused.stderr


@pytest.mark.parametrize(
    ("broker", "extra", "wanted"),
    [
        ("mqtt://10.0.0.5", [], "TLS is required"),
        ("mqtt://mqtt.terminal.example:1883", [], "TLS is required"),
        ("mqtt://127.0.0.1:1", ["--ca", "ca.pem"], "mqtts://"),
        ("mqtts://127.0.0.1:1", ["--cert", "c.pem"], "go together"),
        ("mqtts://127.0.0.1:1", ["--ca", "/nowhere/ca.pem"], "ca_file"),
        ("mqtts://u:S3cret@127.0.0.1:1", [], "--password-file"),
        ("mqtt://127.0.0.1:1", ["--password-file", "p"], "password_file needs username"),
    ],
)
def test_an_unsafe_or_broken_broker_link_exits_78(
    broker: str,
    extra: list[str],
    wanted: str,
    customs_key: tuple[Path, str],
) -> None:
    argv = ["send", "--broker", broker, *extra, "--site", SITE, "--key", str(customs_key[0]), *PLACE]
    parser = argparse.ArgumentParser(prog="gated holds")
    register(parser.add_subparsers(dest="holds_command", required=True))
    args = parser.parse_args(argv)
    with pytest.raises(ConfigError) as refused:
        args.handler(args)
    assert any(wanted in problem for problem in refused.value.problems), refused.value.problems
    assert not any("S3cret" in problem for problem in refused.value.problems)


def test_clear_text_to_a_remote_broker_only_in_a_declared_lab(customs_key: tuple[Path, str]) -> None:
    # 192.0.2.1 (TEST-NET) answers nobody: the lab flag gets past the TLS rule to the connection.
    argv = ["send", "--broker", "mqtt://192.0.2.1:1", "--lab-cleartext", "--timeout", "1"]
    assert run([*argv, "--site", SITE, "--key", str(customs_key[0]), *PLACE]) == 1

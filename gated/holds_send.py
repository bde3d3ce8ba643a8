"""``gated holds keygen`` and ``gated holds send``: the customs side of signed hold commands.

``keygen`` makes a customs signing key and prints the block the gate operator adds to gated's
config; ``send`` signs hold commands with it, publishes them on ``holds/cmd`` and reports gated's
answer to each from ``holds/ack``. Neither touches gated's database. Exit codes: 0 every command
applied, 1 a command rejected or unanswered (or a bad command file), 2 usage, 78 bad broker or key.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import ValidationError

from gated.cli.common import examples
from gated.clock import rfc3339
from gated.config import MqttConfig, MqttTlsConfig
from gated.errors import ConfigError, GatedError, PayloadError, PublishError, SignatureError
from gated.holds import SCHEMA
from gated.jsonsafe import parse_json
from gated.messages import Topics
from gated.mqtt_link import connect, new_client
from gated.redact import printable, redact_url
from gated.signing import (
    canonical_bytes,
    generate_private_key_file,
    load_private_key,
    public_key_text,
    sign_command,
)

DEFAULT_PORT = 1883
DEFAULT_TLS_PORT = 8883
DEFAULT_TIMEOUT = 10.0
MAX_ACK_BYTES = 1 << 20
ACTIONS = ("place", "release", "sync")
_SITE = re.compile(r"[a-z0-9][a-z0-9_-]*")
_KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_AGENCY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def register(commands: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> None:
    """Add ``keygen`` and ``send`` to the ``gated holds`` sub-parsers. Each sets ``handler(args)``,
    not ``func(args, engine)``: they need no database. ``parents`` are added to both."""
    inherited = list(parents)
    keygen = commands.add_parser(
        "keygen",
        parents=inherited,
        help="make a customs signing key; print the config block for gated",
        description="Write a new Ed25519 private key (PEM, mode 0600) for a customs system and print "
        "the [[holds.customs_keys]] block the gate operator adds to gated's config.",
    )
    keygen.add_argument("--key-id", required=True, type=_key_id, metavar="ID", help="e.g. cbp-2026")
    keygen.add_argument("--out", required=True, metavar="FILE", help="where to write the private key")
    keygen.add_argument(
        "--agency",
        required=True,
        action="append",
        type=_agency,
        dest="agencies",
        metavar="A",
        help="an agency this key may act for (repeat for more); upper-cased as the hold list does",
    )
    keygen.set_defaults(handler=_keygen)

    send = commands.add_parser(
        "send",
        parents=inherited,
        help="sign hold commands and send them to gated over MQTT",
        description="Sign hold commands (one from the options, or JSON lines from --file), publish "
        "them on gated/v1/SITE/holds/cmd and print gated's answer to each. Exit 0 when every "
        "command was applied, 1 when any was rejected or not answered in time.",
        **examples(
            "gated holds send --broker mqtts://gate.example --ca ca.pem --site terminal-a --key cbp-2026.pem "
            "--action place --container MSKU4135329 --agency CBP --type exam",
            "gated holds send --broker mqtt://127.0.0.1 --site demo --key demo.pem --file cmds.jsonl",
        ),
    )
    send.add_argument(
        "--broker",
        required=True,
        metavar="URL",
        help="mqtts://HOST[:PORT] (TLS, port 8883 by default), or mqtt://HOST[:PORT] in clear text "
        "(loopback only, unless --lab-cleartext)",
    )
    send.add_argument(
        "--ca", metavar="FILE", help="CA certificate that signed the broker's (default: the system's)"
    )
    send.add_argument("--cert", metavar="FILE", help="this client's certificate (PEM) for mqtts://")
    send.add_argument("--cert-key", metavar="FILE", help="the private key of --cert (PEM)")
    send.add_argument("--username", help="MQTT user name")
    send.add_argument("--password-file", metavar="FILE", help="file holding the MQTT password")
    send.add_argument(
        "--lab-cleartext",
        action="store_true",
        help="allow mqtt:// in clear text to a broker not on this machine",
    )
    send.add_argument("--mqtt-protocol", choices=("5", "3.1.1"), default="5", help="MQTT version (default 5)")
    send.add_argument("--site", required=True, type=_site, help="gated's site id")
    send.add_argument("--key", required=True, metavar="FILE", help="the customs private key (PEM)")
    send.add_argument("--key-id", type=_key_id, metavar="ID", help="default: the key file's name stem")
    send.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"how long to wait for gated's answers (default {DEFAULT_TIMEOUT:g})",
    )
    send.add_argument("--json", action="store_true", help="print each answer as one JSON line")
    send.add_argument("--file", metavar="F", help="JSON lines, one unsigned command object per line")
    send.add_argument("--action", choices=ACTIONS)
    target = send.add_mutually_exclusive_group()
    target.add_argument("--container", metavar="C")
    target.add_argument("--bl", metavar="B", dest="bill_of_lading", help="bill of lading")
    send.add_argument("--agency", metavar="A")
    send.add_argument("--type", dest="hold_type", metavar="T", help="hold type, e.g. customs, exam")
    send.add_argument("--code", help="disposition code, e.g. 1H")
    send.add_argument("--reference")
    send.add_argument("--note")
    send.add_argument("--count", type=_count, metavar="N", help="sync: the agency's active holds")
    send.add_argument("--digest", help="sync: digest of the agency's active holds")
    send.add_argument("--id", dest="command_id", metavar="ID", help="the command id (default: made up)")
    send.set_defaults(handler=_send_handler(send))


def make_command(
    action: str,
    *,
    container: str | None = None,
    bill_of_lading: str | None = None,
    agency: str | None = None,
    hold_type: str | None = None,
    code: str | None = None,
    reference: str | None = None,
    note: str | None = None,
    count: int | None = None,
    digest: str | None = None,
    command_id: str | None = None,
) -> dict[str, Any]:
    """An unsigned command with the given fields (those left None are left out)."""
    fields: dict[str, Any] = {
        "id": command_id,
        "action": action,
        "container": container,
        "bill_of_lading": bill_of_lading,
        "agency": agency,
        "hold_type": hold_type,
        "code": code,
        "reference": reference,
        "note": note,
        "count": count,
        "digest": digest,
    }
    return {key: value for key, value in fields.items() if value is not None}


def prepare(command: Mapping[str, Any], key_id: str, now: datetime | None = None) -> dict[str, Any]:
    """A copy ready to sign: ``schema``, ``id`` (``KEYID-`` and 16 hex digits) and ``ts`` (now)
    added where absent, ``key`` set to ``key_id``, any old ``sig`` dropped."""
    ready = {key: value for key, value in command.items() if key != "sig"}
    ready.setdefault("schema", SCHEMA)
    ready.setdefault("id", f"{key_id}-{uuid.uuid4().hex[:16]}")
    ready.setdefault("ts", rfc3339(now or datetime.now(UTC)))
    ready["key"] = key_id
    return ready


def send_commands(
    broker: MqttConfig,
    site: str,
    commands: list[dict[str, Any]],
    private_key: Ed25519PrivateKey,
    key_id: str,
    timeout: float,
) -> list[dict[str, Any] | None]:
    """Prepare, sign and publish ``commands`` (QoS 1) to ``gated/v1/{site}/holds/cmd``; return
    gated's ack of each, in order, None where none came within ``timeout`` seconds.

    Raises ``PublishError`` when the broker cannot be reached or refuses the ack subscription, and
    ``SignatureError`` for a command that cannot be signed (nothing is sent then).
    """
    topics = Topics(site)
    signed = [sign_command(prepare(command, key_id), private_key, key_id) for command in commands]
    payloads = [json.dumps(command, ensure_ascii=False, allow_nan=False).encode() for command in signed]
    acks = _Acks([str(command["id"]) for command in signed], key_id)
    session = _Session(broker, topics.holds_ack, acks)
    deadline = time.monotonic() + timeout
    session.open(deadline)
    where = f"{broker.host}:{broker.port}"
    try:
        for payload in payloads:
            info = session.client.publish(topics.holds_cmd, payload, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise PublishError(f"could not publish to {where}: {mqtt.error_string(info.rc)}")
        acks.wait(time.monotonic() + timeout)
        if session.refused:
            raise PublishError(
                f"the broker at {where} refused {session.refused} command(s): {session.refusal}"
            )
    finally:
        session.close()
    return acks.results


class _Acks:
    """gated's acks matched to the commands sent, by command id (and key, when the ack names one)."""

    def __init__(self, ids: list[str], key_id: str) -> None:
        self._key_id = key_id
        self._changed = threading.Condition()
        self._waiting: dict[str, list[int]] = {}
        for index, command_id in enumerate(ids):
            self._waiting.setdefault(command_id, []).append(index)
        self._missing = len(ids)
        self.results: list[dict[str, Any] | None] = [None] * len(ids)

    def offer(self, payload: bytes) -> None:
        """Take one message from ``holds/ack``; acks of other senders' commands are ignored."""
        try:
            ack = parse_json(payload, max_bytes=MAX_ACK_BYTES)
        except PayloadError:
            return
        if not isinstance(ack, dict) or not isinstance(ack.get("command"), str):
            return
        if ack.get("key") not in (None, self._key_id):
            return
        with self._changed:
            indexes = self._waiting.get(ack["command"])
            if indexes:
                self.results[indexes.pop(0)] = ack
                self._missing -= 1
                self._changed.notify_all()

    def wait(self, deadline: float) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self._missing == 0, timeout=max(0.0, deadline - time.monotonic()))


class _Session:
    """One MQTT connection subscribed to ``holds/ack`` (confirmed by the SUBACK) before publishing."""

    def __init__(self, broker: MqttConfig, ack_topic: str, acks: _Acks) -> None:
        self._broker = broker
        self._ack_topic = ack_topic
        self._acks = acks
        self._ready = threading.Event()
        self._problem: str | None = None
        self.refused = 0
        self.refusal = ""
        self.client = new_client(broker, f"gated-send-{uuid.uuid4().hex[:12]}", persistent=False)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish

    def open(self, deadline: float) -> None:
        where = f"{self._broker.host}:{self._broker.port}"
        try:
            connect(self.client, self._broker, persistent=False)
        except (OSError, ValueError) as error:
            # ssl.SSLError is an OSError: a broker certificate that does not check out lands here.
            raise PublishError(f"cannot reach the broker at {where}: {error}") from None
        self.client.loop_start()
        self._ready.wait(max(0.0, deadline - time.monotonic()))
        if self._problem is None and not self._ready.is_set():
            self._problem = "no subscription confirmed in time"
        if self._problem is not None:
            self.close()
            raise PublishError(f"broker at {where}: {self._problem}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        if reason.is_failure:
            self._problem = f"connection refused ({reason})"
            self._ready.set()
            return
        # Subscribed again on every (re)connect: acks come only to a live subscription.
        client.subscribe(self._ack_topic, qos=1)

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, reasons: list[ReasonCode], _p: Any) -> None:
        if any(reason.is_failure for reason in reasons):
            self._problem = f"subscription to {self._ack_topic} refused"
        self._ready.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        self._acks.offer(bytes(message.payload))

    def _on_publish(self, _c: mqtt.Client, _u: Any, _mid: int, reason: ReasonCode, _p: Any) -> None:
        if reason.is_failure:  # MQTT 5 only: the broker's ACL refused the command
            self.refused += 1
            self.refusal = str(reason)


def _keygen(args: argparse.Namespace) -> int:
    try:
        public_key = generate_private_key_file(args.out)
    except SignatureError as error:
        print(f"gated holds keygen: {error}", file=sys.stderr)
        return 1
    agencies = ", ".join(json.dumps(agency) for agency in dict.fromkeys(args.agencies))
    print("[[holds.customs_keys]]")
    print(f"id = {json.dumps(args.key_id)}")
    print(f"public_key = {json.dumps(public_key_text(public_key))}")
    print(f"agencies = [{agencies}]")
    print(
        f"private key written to {args.out} (mode 0600); it must stay with the customs system: "
        "give gated only the block above",
        file=sys.stderr,
    )
    return 0


def _send_handler(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        return _send(args, parser)

    return handler


def _send(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    commands = _command_from_options(args, parser)
    broker = _broker_settings(args)
    try:
        private_key = load_private_key(args.key)
    except SignatureError as error:
        raise ConfigError([f"--key: {error}"]) from None
    key_id = args.key_id or Path(args.key).stem
    if not _KEY_ID.fullmatch(key_id):
        raise ConfigError([f"--key-id: {key_id!r} (from the key file's name) is not a usable key id"])
    try:
        if commands is None:
            commands = _commands_from_file(args.file)
        prepared = [prepare(command, key_id) for command in commands]
        acks = send_commands(broker, args.site, prepared, private_key, key_id, args.timeout)
    except ConfigError:
        raise
    except GatedError as error:
        print(f"gated holds send: {error}", file=sys.stderr)
        return 1
    all_applied = True
    for command, ack in zip(prepared, acks, strict=True):
        all_applied = _report(command["id"], ack, args) and all_applied
    return 0 if all_applied else 1


def _report(command_id: str, ack: dict[str, Any] | None, args: argparse.Namespace) -> bool:
    """Print one line about one command; True when gated applied it (or had already)."""
    if ack is None:
        wait = f"{args.timeout:g} s"
        if args.json:
            answer = {"command": command_id, "applied": False, "duplicate": False, "answered": False}
            print(json.dumps({**answer, "reason": f"no answer within {wait}"}, ensure_ascii=False))
        else:
            print(f"no answer to {command_id} within {wait}")
        return False
    applied = ack.get("applied") is True or ack.get("duplicate") is True
    if args.json:
        print(json.dumps(ack, ensure_ascii=False))
    else:
        reason = str(ack.get("reason", ""))
        if not applied:
            print(f"REJECTED {printable(command_id)}: {printable(reason)}")
        elif ack.get("duplicate") is True:
            print(f"applied {printable(command_id)} (already, a duplicate): {printable(reason)}")
        else:
            print(f"applied {printable(command_id)}: {printable(reason)}")
    return applied


def _command_from_options(
    args: argparse.Namespace, parser: argparse.ArgumentParser
) -> list[dict[str, Any]] | None:
    """The one command the options describe (None with --file); a usage error (exit 2) for a set
    that cannot be one."""
    options = {
        "--container": args.container,
        "--bl": args.bill_of_lading,
        "--agency": args.agency,
        "--type": args.hold_type,
        "--code": args.code,
        "--reference": args.reference,
        "--note": args.note,
        "--count": args.count,
        "--digest": args.digest,
        "--id": args.command_id,
    }
    given = [name for name, value in options.items() if value is not None]
    if args.file is not None:
        if args.action is not None or given:
            parser.error(f"--file does not go with {'--action' if args.action else given[0]}")
        return None
    if args.action is None:
        if given:
            parser.error(f"{given[0]} needs --action")
        parser.error("give --action place|release|sync (and its options) or --file F")
    if args.action == "sync":
        allowed = {"--agency", "--count", "--digest", "--id"}
        required = ["--agency", "--count"]
    else:
        allowed = set(options) - {"--count", "--digest"}
        required = ["--agency", "--type"]
        if args.container is None and args.bill_of_lading is None:
            parser.error(f"--action {args.action} needs --container or --bl")
    for name in given:
        if name not in allowed:
            parser.error(f"{name} does not go with --action {args.action}")
    for name in required:
        if options[name] is None:
            parser.error(f"--action {args.action} needs {name}")
    return [
        make_command(
            args.action,
            container=args.container,
            bill_of_lading=args.bill_of_lading,
            agency=args.agency,
            hold_type=args.hold_type,
            code=args.code,
            reference=args.reference,
            note=args.note,
            count=args.count,
            digest=args.digest,
            command_id=args.command_id,
        )
    ]


def _commands_from_file(path: str) -> list[dict[str, Any]]:
    """Every command in a JSON lines file; any bad line fails the whole file before anything is sent."""
    try:
        lines = Path(path).read_bytes().split(b"\n")
    except OSError as error:
        raise PayloadError(f"{path}: cannot read: {error.strerror}") from None
    commands: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            command = parse_json(line)
        except PayloadError as error:
            raise PayloadError(f"{path}:{number}: {error}") from None
        if not isinstance(command, dict):
            raise PayloadError(f"{path}:{number}: not a JSON object")
        try:
            canonical_bytes(command)
        except SignatureError as error:
            raise PayloadError(f"{path}:{number}: {error}") from None
        commands.append(command)
    if not commands:
        raise PayloadError(f"{path}: no commands in the file")
    return commands


def _broker_settings(args: argparse.Namespace) -> MqttConfig:
    """The broker link from ``--broker`` and the TLS and credential options."""
    url = args.broker
    usage = f"--broker: {redact_url(url)!r} is not mqtts://HOST[:PORT] or mqtt://HOST[:PORT]"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigError([usage]) from None
    if (
        parts.scheme not in ("mqtt", "mqtts")
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
    ):
        raise ConfigError([usage])
    if parts.username is not None:
        raise ConfigError(
            [f"--broker: {redact_url(url)!r}: give the user with --username, the password in --password-file"]
        )
    secure = parts.scheme == "mqtts"
    if not secure and (args.ca or args.cert or args.cert_key):
        raise ConfigError(["--ca, --cert and --cert-key need an mqtts:// broker"])
    tls = None
    if secure:
        try:
            tls = MqttTlsConfig(ca_file=args.ca, cert_file=args.cert, key_file=args.cert_key)
        except ValidationError:
            raise ConfigError(["--cert and --cert-key go together: give both or neither"]) from None
    try:
        return MqttConfig(
            host=parts.hostname,
            port=port or (DEFAULT_TLS_PORT if secure else DEFAULT_PORT),
            tls=tls,
            username=args.username,
            password_file=args.password_file,
            lab_cleartext=args.lab_cleartext,
            protocol=args.mqtt_protocol,
        )
    except ValidationError as error:
        raise ConfigError(
            [f"--broker: {problem['msg'].removeprefix('Value error, ')}" for problem in error.errors()]
        ) from None


def _site(text: str) -> str:
    if not _SITE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a site id ([a-z0-9][a-z0-9_-]*)")
    return text


def _key_id(text: str) -> str:
    if not _KEY_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a key id (letters, digits, . _ -; at most 64)")
    return text


def _agency(text: str) -> str:
    if not _AGENCY.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an agency (letters, digits, _ -; at most 64)")
    return text.upper()


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds between 0 and 3600")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return value

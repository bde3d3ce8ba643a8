"""The shipped JSON Schemas and the AsyncAPI document hold the code to CONTRACT section 4: every
payload the real code builds validates, broken payloads do not, and the AsyncAPI document names
every channel and every schema file."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from gated.anchor import AuditAnchor
from gated.clock import ManualClock
from gated.config import GateConfig, MqttConfig, validate
from gated.db import open_engine
from gated.hold_commands import HoldCommandWorker
from gated.holds import HoldStore
from gated.messages import Topics
from gated.model import DeviceState, Evidence, Kind, Quality, Reading, ScreeningVerdict, Source
from gated.payload_schemas import SCHEMA_NAMES, load_schema, validate_payload, validator_for
from gated.pipeline import Pipeline
from gated.publisher import MqttPublisher
from gated.store import Batch, Message, OutboxRow, Store
from tests.conftest import Mosquitto, Received
from tests.customs import keys_config, signed, verified

ROOT = Path(__file__).resolve().parent.parent
ASYNCAPI = ROOT / "docs" / "asyncapi.yaml"
SITE = "terminal-a"
PREFIX = f"gated/v1/{SITE}"
LANE = "lane-1"

CLEAN = "ABCU1234560"
OTHER = "BICU1234565"
HELD = "CSQU3054383"

# CONTRACT section 4: topic (below the prefix) -> (QoS, retained, direction seen from gated).
CONTRACT_CHANNELS = {
    "{lane}/reading/{kind}/{device}": (1, False, "send"),
    "{lane}/decision": (1, False, "send"),
    "{lane}/alarm": (1, False, "send"),
    "node/{node}/status": (1, True, "send"),
    "node/{node}/audit": (1, True, "send"),
    "{lane}/status": (1, True, "send"),
    "{lane}/device/{device}/status": (1, True, "send"),
    "{lane}/scan/request": (1, False, "send"),
    "holds/cmd": (1, False, "receive"),
    "holds/ack": (1, False, "send"),
    "holds/state": (1, True, "send"),
}


def gate_config(*, max_age_seconds: int | None = 3600) -> GateConfig:
    return validate(
        {
            "site": SITE,
            "node": "gate-1",
            "holds": {"customs_keys": keys_config()}
            | ({} if max_age_seconds is None else {"max_age_seconds": max_age_seconds}),
            "lanes": [
                {
                    "id": LANE,
                    "require": ["rfid", "ocr", "rpm"],
                    "settle_seconds": 1.0,
                    "visit_timeout_seconds": 60.0,
                    "devices": [
                        {"id": "rfid-1", "driver": "rfid-serial", "url": "/dev/ttyUSB0"},
                        {
                            "id": "rpm-1",
                            "driver": "rpm-modbus",
                            "host": "192.0.2.10",
                            "profile": str(ROOT / "config" / "profiles" / "rpm-modbus.toml"),
                        },
                        {"id": "ocr-1", "driver": "ocr-camera", "host": "192.0.2.20", "port": 5300},
                    ],
                }
            ],
        }
    )


@dataclass
class Gate:
    config: GateConfig
    clock: ManualClock
    store: Store
    holds: HoldStore
    pipeline: Pipeline
    commands: HoldCommandWorker

    def command(self, body: dict[str, Any]) -> None:
        """Customs signs ``body`` and sends it; the daemon handles it."""
        self.commands.offer(json.dumps(signed(body, ts=self.clock.now())).encode())
        self.commands.drain()

    def reading(
        self,
        kind: Kind,
        device: str,
        source: str,
        value: Any,
        quality: Quality = Quality.GOOD,
        **extra: Any,
    ) -> None:
        self.pipeline.reading(Reading(LANE, kind, device, source, value, self.clock.now(), quality, **extra))

    def truck(self, epc: str, container: str | None, screening: ScreeningVerdict) -> None:
        """One truck through the lane: tag, occupancy, camera, monitor; then the visit settles."""
        self.reading(Kind.RFID, "rfid-1", Source.EPC, epc)
        self.reading(Kind.RPM, "rpm-1", Source.OCCUPANCY, True)
        self.reading(Kind.RPM, "rpm-1", Source.GAMMA_CPS, 251.5, units="cps")
        evidence = Evidence("file:///var/lib/gated/evidence/crop.jpg", "image/jpeg", "ab" * 32, 48213)
        if container is None:
            self.reading(Kind.OCR, "ocr-1", Source.CONTAINER_NUMBER, None, Quality.BAD, confidence=0.2)
        else:
            self.reading(
                Kind.OCR,
                "ocr-1",
                Source.CONTAINER_NUMBER,
                container,
                confidence=0.97,
                evidence=(evidence,),
            )
        self.reading(Kind.OCR, "ocr-1", Source.PASSAGE_END, 1)
        self.reading(Kind.RPM, "rpm-1", Source.OCCUPANCY, False)
        self.reading(Kind.RPM, "rpm-1", Source.SCREENING, screening)
        self.pipeline.step()
        self.clock.advance(2.0)
        self.pipeline.step()

    def published(self) -> list[OutboxRow]:
        return self.store.pending(0, 100_000)


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Gate]:
    config = gate_config()
    clock = ManualClock()
    engine = open_engine(tmp_path / "g.db")
    store = Store(engine, site=config.site, node=config.node, clock=clock)
    holds = HoldStore(engine, clock)
    commands = HoldCommandWorker(holds, store, config.holds, Topics(SITE), [LANE], clock)
    yield Gate(config, clock, store, holds, Pipeline(config, store, holds, clock), commands)
    engine.dispose()


def place_command(command_id: str, container: str = HELD) -> dict[str, Any]:
    return {
        "schema": "gated.hold/1",
        "id": command_id,
        "action": "place",
        "container": container,
        "agency": "CBP",
        "hold_type": "vacis",  # a hold that also selects the box for a scan
        "code": "H1",
        "reference": "ENTRY-2026-0001",
        "note": "examine before release\nsecond line",
    }


def release_command(command_id: str, container: str = HELD) -> dict[str, Any]:
    return {
        "schema": "gated.hold/1",
        "id": command_id,
        "action": "release",
        "container": container,
        "agency": "CBP",
        "hold_type": "vacis",
        "code": "R1",
    }


def sync_command(command_id: str, count: int) -> dict[str, Any]:
    return {"schema": "gated.hold/1", "id": command_id, "action": "sync", "agency": "CBP", "count": count}


def payload_of(row: OutboxRow) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(row.payload)
    return payload


def run_a_shift(gate: Gate) -> list[OutboxRow]:
    """Everything the gate publishes in a busy few minutes, as stored for publishing."""
    for device in ("rfid-1", "rpm-1", "ocr-1"):
        gate.pipeline.device_status(LANE, device, DeviceState.ONLINE, "connected")
    gate.pipeline.step()
    gate.command(place_command("cmd-1"))
    gate.command(sync_command("cmd-s", 1))
    gate.truck("e2801100000000000000a001", HELD, ScreeningVerdict.CLEAR)
    gate.truck("e2801100000000000000a002", OTHER, ScreeningVerdict.GAMMA_ALARM)
    gate.truck("e2801100000000000000a003", None, ScreeningVerdict.CLEAR)
    gate.truck("e2801100000000000000a004", CLEAN, ScreeningVerdict.CLEAR)
    gate.reading(Kind.RPM, "rpm-1", "tamper", True, Quality.BAD)
    gate.reading(Kind.RPM, "rpm-1", "fault", "gamma_high_fault", Quality.BAD)
    gate.pipeline.device_status(LANE, "rpm-1", DeviceState.OFFLINE, "no answer for 3 s")
    gate.pipeline.device_status(LANE, "ocr-1", DeviceState.DEGRADED, "slow heartbeat")
    gate.pipeline.step()
    gate.command(release_command("cmd-2"))
    gate.command(release_command("cmd-2"))  # repeated: acknowledged as a duplicate
    gate.command({"schema": "gated.hold/1", "id": "cmd-3", "action": "place", "container": CLEAN})
    gate.command({"schema": "gated.hold/1", "id": "cmd-4", "action": "seize", "container": CLEAN})
    gate.store.write(Batch(messages=gate.pipeline.status_snapshot()))
    AuditAnchor(gate.store.engine, gate.store, Topics(SITE), gate.config.node).step()
    return gate.published()


# -- the schema files -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*SCHEMA_NAMES, "common"])
def test_every_schema_is_a_valid_draft_2020_12_schema(name: str) -> None:
    schema = load_schema(name)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_the_package_ships_exactly_the_listed_schema_files() -> None:
    shipped = {
        item.name for item in files("gated").joinpath("schemas").iterdir() if item.name.endswith(".json")
    }
    assert shipped == {f"{name}.json" for name in (*SCHEMA_NAMES, "common")}


def test_load_schema_refuses_unknown_names() -> None:
    with pytest.raises(ValueError, match="no payload schema"):
        load_schema("../pyproject")


@pytest.mark.parametrize(
    ("topic", "name"),
    [
        (f"{PREFIX}/{LANE}/reading/rfid/rfid-1", "reading"),
        (f"{PREFIX}/{LANE}/decision", "decision"),
        (f"{PREFIX}/{LANE}/alarm", "alarm"),
        (f"{PREFIX}/node/gate-1/status", "status-node"),
        (f"{PREFIX}/node/gate-1/audit", "audit-head"),
        (f"{PREFIX}/{LANE}/status", "status-lane"),
        (f"{PREFIX}/{LANE}/device/rpm-1/status", "status-device"),
        (f"{PREFIX}/holds/cmd", "hold-command"),
        (f"{PREFIX}/holds/ack", "hold-ack"),
        (f"{PREFIX}/holds/state", "holds-state"),
    ],
)
def test_validator_for_maps_each_topic_to_its_schema(topic: str, name: str) -> None:
    assert validator_for(topic) == name


@pytest.mark.parametrize(
    "topic",
    [
        "gated/v2/demo/lane-1/decision",
        "gated/v1/Demo/lane-1/decision",
        "gated/v1/demo/lane-1/unknown",
        "gated/v1/demo/holds/status",
        "gated/v1/demo/node/status",
    ],
)
def test_validator_for_refuses_topics_without_a_schema(topic: str) -> None:
    with pytest.raises(ValueError, match=re.escape(topic)):
        validator_for(topic)
    assert validate_payload(topic, {}) != []


# -- what the real code builds ----------------------------------------------------------------------


def test_every_payload_of_a_busy_gate_is_valid(gate: Gate) -> None:
    rows = run_a_shift(gate)
    problems = {f"{row.seq} {row.topic}": validate_payload(row.topic, row.payload) for row in rows}
    assert {key: found for key, found in problems.items() if found} == {}

    # The shift really produced every kind of message, so the check above covered them all.
    by_schema: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_schema.setdefault(validator_for(row.topic), []).append(payload_of(row))
    assert set(by_schema) == set(SCHEMA_NAMES) - {"hold-command", "status-node"}
    assert {d["outcome"] for d in by_schema["decision"]} == {
        "RELEASE",
        "HOLD",
        "SECONDARY_INSPECTION",
        "MANUAL_REVIEW",
    }
    assert {a["alarm"] for a in by_schema["alarm"]} == {
        "hold_hit",
        "radiation_alarm",
        "device_fault",
        "tamper",
    }
    assert {r["value_type"] for r in by_schema["reading"]} >= {"string", "int", "float", "bool", "null"}
    assert any(r["evidence"] for r in by_schema["reading"])
    acks = by_schema["hold-ack"]
    assert [(a["command"], a["applied"], a["duplicate"]) for a in acks] == [
        ("cmd-1", True, False),
        ("cmd-s", True, False),
        ("cmd-2", True, False),
        ("cmd-2", True, True),
        ("cmd-3", False, False),
        ("cmd-4", False, False),
    ]
    assert any(hold["released_at"] for ack in acks for hold in ack["holds"])
    assert {s["state"] for s in by_schema["status-device"]} == {"online", "offline", "degraded"}
    assert {s["state"] for s in by_schema["status-lane"]} >= {"open", "degraded"}


def test_a_never_loaded_hold_list_state_is_valid(gate: Gate) -> None:
    message = gate.pipeline.holds_state_message()
    payload = gate.store.envelope(message, 1)
    assert payload["loaded"] is False
    assert validate_payload(message.topic, payload) == []


def test_a_closed_lane_status_is_valid(gate: Gate) -> None:
    gate.pipeline.storage_ok = False
    for message in gate.pipeline.status_snapshot():
        payload = gate.store.envelope(message, 7)
        assert validate_payload(message.topic, payload) == []
        if validator_for(message.topic) == "status-lane":
            assert payload["state"] == "closed"


def test_the_ack_of_a_hold_on_a_bill_of_lading_is_valid(gate: Gate) -> None:
    bill_command = place_command("cmd-bl")
    del bill_command["container"]
    bill_command["bill_of_lading"] = "MAEU240512345"
    result = gate.holds.apply_command(verified(bill_command))
    assert result.applied
    ack = gate.store.envelope(Message(f"{PREFIX}/holds/ack", "gated.hold/1", result.to_json()), 3)
    assert ack["holds"][0]["container"] is None
    assert validate_payload(f"{PREFIX}/holds/ack", ack) == []


def test_hold_commands_the_schema_accepts_are_applied(gate: Gate) -> None:
    commands = [
        place_command("a-1"),
        {
            **place_command("a-2", OTHER),
            "site": SITE,
            "node": "customs-1",
            "seq": 4,
            "ts": "2026-01-01T10:00:00+01:00",
        },
        {**release_command("a-3"), "code": None, "reference": None},
    ]
    for command in commands:
        assert validate_payload(f"{PREFIX}/holds/cmd", signed(command)) == []
        result = gate.holds.apply_command(verified(command))
        assert result.applied, result.reason
    assert validate_payload(f"{PREFIX}/holds/cmd", signed(sync_command("a-4", 1))) == []
    assert gate.holds.apply_command(verified(sync_command("a-4", 1))).applied
    assert validate_payload(f"{PREFIX}/holds/cmd", place_command("a-5"))  # unsigned


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"agency": None}, "agency"),
        ({"action": "seize"}, "action"),
        ({"container": None}, "container"),
        ({"hold_type": "no spaces allowed"}, "hold_type"),
        ({"schema": "gated.hold/2"}, "schema"),
        ({"priority": "high"}, "priority"),
        ({"id": ""}, "id"),
        ({"note": "bell\a"}, "note"),
    ],
)
def test_hold_commands_the_schema_refuses_are_rejected(
    gate: Gate, change: dict[str, Any], where: str
) -> None:
    command = {**place_command("r-1"), **change}
    problems = validate_payload(f"{PREFIX}/holds/cmd", signed(command))
    assert problems
    assert any(where in problem for problem in problems), problems
    result = gate.holds.apply_command(verified(command))
    assert not result.applied


def test_node_birth_graceful_offline_and_will_are_valid(
    gate: Gate, mosquitto: Mosquitto, subscriber_factory: Any
) -> None:
    customs = subscriber_factory(mosquitto.port)
    topic = f"{PREFIX}/node/gate-1/status"
    config = MqttConfig(host="127.0.0.1", port=mosquitto.port, keepalive=5)

    def publisher(boot: int) -> MqttPublisher:
        return MqttPublisher(
            gate.store,
            config,
            topics=Topics(SITE),
            boot=boot,
            subscriptions=[f"{PREFIX}/holds/cmd"],
            on_message=lambda _topic, payload: gate.commands.offer(payload),
            status_snapshot=gate.pipeline.status_snapshot,
        )

    def node_status(state: str, boot: int) -> list[Received]:
        found: list[Received] = customs.wait_for(
            lambda m: m.topic == topic and m.payload["state"] == state and m.payload["boot"] == boot,
            timeout=15,
            what=f"node {state} (boot {boot})",
        )
        return found

    first = publisher(gate.store.next_boot())
    first.start()
    birth = node_status("online", first.boot)[0]
    first.stop(graceful_offline=True, timeout=5)
    offline = node_status("offline", first.boot)[0]

    second = publisher(gate.store.next_boot())
    second.start()
    node_status("online", second.boot)
    # Cut the connection without a DISCONNECT, as a crash would: the broker sends the Will.
    second.client.loop_stop()
    sock = second.client.socket()
    assert sock is not None
    sock.close()
    will = node_status("offline", second.boot)[0]

    assert isinstance(birth.payload["seq"], int)
    assert isinstance(offline.payload["seq"], int)
    assert will.payload["seq"] is None
    for message in (birth, offline, will):
        assert validate_payload(message.topic, message.payload) == []
    everything = customs.snapshot()
    assert {validator_for(m.topic) for m in everything} >= {"status-node", "status-lane", "status-device"}
    assert [m.topic for m in everything if validate_payload(m.topic, m.payload)] == []


# -- what the schemas refuse ------------------------------------------------------------------------


@pytest.fixture
def decision(gate: Gate) -> tuple[str, dict[str, Any]]:
    gate.command(place_command("cmd-1"))
    gate.command(sync_command("cmd-s", 1))
    gate.truck("e2801100000000000000a001", HELD, ScreeningVerdict.CLEAR)
    for row in gate.published():
        if validator_for(row.topic) == "decision":
            return row.topic, payload_of(row)
    raise AssertionError("no decision was published")


def test_the_decision_fixture_is_valid(decision: tuple[str, dict[str, Any]]) -> None:
    topic, payload = decision
    assert payload["outcome"] == "HOLD"
    assert validate_payload(topic, payload) == []
    assert validate_payload(topic, json.dumps(payload).encode()) == []


def _drop_id(p: dict[str, Any]) -> None:
    del p["id"]


def _bad_outcome(p: dict[str, Any]) -> None:
    p["outcome"] = "MAYBE"


def _extra_field(p: dict[str, Any]) -> None:
    p["priority"] = "high"


def _seq_as_text(p: dict[str, Any]) -> None:
    p["seq"] = str(p["seq"])


def _seq_null(p: dict[str, Any]) -> None:
    p["seq"] = None


def _bad_container(p: dict[str, Any]) -> None:
    p["container"] = "CSQU305438"


def _local_time(p: dict[str, Any]) -> None:
    p["ts"] = "2026-01-01T12:00:00"


def _other_lane(p: dict[str, Any]) -> None:
    p["lane"] = "lane-2"


def _held_but_released(p: dict[str, Any]) -> None:
    p["outcome"] = "RELEASE"


def _hold_record_extra(p: dict[str, Any]) -> None:
    p["holds"][0]["secret"] = "x"


@pytest.mark.parametrize(
    ("breaks", "where"),
    [
        (_drop_id, "'id' is a required property"),
        (_bad_outcome, "$.outcome"),
        (_extra_field, "'priority' was unexpected"),
        (_seq_as_text, "$.seq"),
        (_seq_null, "$.seq"),
        (_bad_container, "$.container"),
        (_local_time, "$.ts"),
        (_other_lane, "$.lane"),
        (_held_but_released, "$.holds"),
        (_hold_record_extra, "$.holds[0]"),
    ],
)
def test_broken_decisions_are_refused(
    decision: tuple[str, dict[str, Any]], breaks: Callable[[dict[str, Any]], None], where: str
) -> None:
    topic, payload = decision
    broken = copy.deepcopy(payload)
    breaks(broken)
    problems = validate_payload(topic, broken)
    assert any(where in problem for problem in problems), problems


def test_broken_readings_and_statuses_are_refused(gate: Gate) -> None:
    rows = run_a_shift(gate)
    reading = next(row for row in rows if row.topic == f"{PREFIX}/{LANE}/reading/rfid/rfid-1")
    payload = payload_of(reading)
    assert validate_payload(reading.topic, {**payload, "quality": "excellent"})
    assert validate_payload(reading.topic, {**payload, "kind": "radar"})
    assert validate_payload(reading.topic, {**payload, "value_type": "bool", "value": "yes"})
    assert validate_payload(reading.topic, {**payload, "device": "RFID 1"})
    assert validate_payload(reading.topic.replace("/rfid-1", "/rfid-9"), payload)
    assert validate_payload(reading.topic, {**payload, "confidence": 1.5})
    assert validate_payload(reading.topic, {**payload, "evidence": [{"uri": "x"}]})
    status = next(row for row in rows if validator_for(row.topic) == "status-device")
    assert validate_payload(status.topic, {**payload_of(status), "state": "sleeping"})
    assert validate_payload(status.topic, {**payload_of(status), "seq": None})
    state = next(row for row in rows if validator_for(row.topic) == "holds-state")
    assert validate_payload(state.topic, {**payload_of(state), "loaded": False, "fresh": True})
    assert validate_payload(state.topic, b"{not json")


def test_an_online_node_status_needs_a_seq_and_since(gate: Gate) -> None:
    topic = f"{PREFIX}/node/gate-1/status"
    online = {
        "schema": "gated.status/1",
        "id": "b1",
        "site": SITE,
        "node": "gate-1",
        "seq": 12,
        "ts": "2026-01-01T00:00:00.000Z",
        "state": "online",
        "boot": 3,
        "since": "2026-01-01T00:00:00.000Z",
    }
    assert validate_payload(topic, online) == []
    assert validate_payload(topic, {**online, "seq": None})
    assert validate_payload(topic, {key: value for key, value in online.items() if key != "since"})
    assert validate_payload(topic, {**online, "node": "gate-2"})
    will = {key: value for key, value in online.items() if key != "since"}
    assert validate_payload(topic, {**will, "state": "offline", "seq": None}) == []


def test_the_ack_of_a_command_that_is_not_json_is_valid(gate: Gate) -> None:
    gate.commands.offer(b"{not json")
    gate.commands.drain()
    acks = [row for row in gate.published() if validator_for(row.topic) == "hold-ack"]
    assert len(acks) == 1
    assert validate_payload(acks[0].topic, acks[0].payload) == []


def test_a_stale_hold_list_state_is_valid(tmp_path: Path) -> None:
    config = gate_config(max_age_seconds=60)
    clock = ManualClock()
    engine = open_engine(tmp_path / "g.db")
    store = Store(engine, site=config.site, node=config.node, clock=clock)
    holds = HoldStore(engine, clock)
    pipeline = Pipeline(config, store, holds, clock)
    holds.apply_command(verified(sync_command("cmd-1", 0), issued_at=clock.now()))
    clock.advance(timedelta(minutes=5).total_seconds())
    message = pipeline.holds_state_message()
    payload = store.envelope(message, 1)
    assert payload["loaded"] is True
    assert payload["fresh"] is False
    assert validate_payload(message.topic, payload) == []
    engine.dispose()


# -- the AsyncAPI document --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def asyncapi() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(ASYNCAPI.read_text(encoding="utf-8"))
    return document


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _resolve(document: dict[str, Any], pointer: str) -> Any:
    node: Any = document
    for part in pointer.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def test_asyncapi_is_version_3_with_an_mqtt_server(asyncapi: dict[str, Any]) -> None:
    assert asyncapi["asyncapi"] == "3.0.0"
    assert asyncapi["info"]["title"]
    assert [server["protocol"] for server in asyncapi["servers"].values()] == ["mqtt"] * len(
        asyncapi["servers"]
    )


def test_asyncapi_names_every_channel_of_the_contract(asyncapi: dict[str, Any]) -> None:
    addresses = {channel["address"] for channel in asyncapi["channels"].values()}
    assert addresses == {f"gated/v1/{{site}}/{topic}" for topic in CONTRACT_CHANNELS}
    for channel in asyncapi["channels"].values():
        named = set(re.findall(r"\{(\w+)\}", channel["address"]))
        assert named == set(channel.get("parameters", {})), channel["address"]


def test_asyncapi_operations_match_the_contract(asyncapi: dict[str, Any]) -> None:
    channels = {f"#/channels/{key}": channel for key, channel in asyncapi["channels"].items()}
    seen: dict[str, tuple[int, bool, str]] = {}
    for operation in asyncapi["operations"].values():
        channel = channels[operation["channel"]["$ref"]]
        topic = channel["address"].removeprefix("gated/v1/{site}/")
        binding = operation["bindings"]["mqtt"]
        seen[topic] = (binding["qos"], binding.get("retain", False), operation["action"])
        for message in operation.get("messages", []):
            assert message["$ref"].startswith(operation["channel"]["$ref"] + "/messages/")
    assert seen == CONTRACT_CHANNELS


def test_asyncapi_references_resolve(asyncapi: dict[str, Any]) -> None:
    referenced_files: set[str] = set()
    for ref in _refs(asyncapi):
        if ref.startswith("#/"):
            _resolve(asyncapi, ref)
        else:
            path, _, fragment = ref.partition("#")
            target = (ASYNCAPI.parent / path).resolve()
            assert target.is_file(), ref
            assert target.parent == ROOT / "gated" / "schemas", ref
            if fragment:
                _resolve(json.loads(target.read_text(encoding="utf-8")), fragment)
            referenced_files.add(target.stem)
    assert referenced_files >= set(SCHEMA_NAMES)


def test_asyncapi_examples_are_valid_payloads(asyncapi: dict[str, Any]) -> None:
    checked = 0
    for channel in asyncapi["channels"].values():
        topic = channel["address"].format(site=SITE, lane=LANE, kind="rfid", device="rfid-1", node="gate-1")
        for ref in channel["messages"].values():
            message = _resolve(asyncapi, ref["$ref"])
            for example in message.get("examples", []):
                assert validate_payload(topic, example["payload"]) == [], example["name"]
                checked += 1
    assert checked

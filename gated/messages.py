"""The MQTT messages gated publishes, built in one place so topics and payloads match CONTRACT
section 4 everywhere. The envelope (schema, id, site, node, seq, ts) is added by the store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gated.clock import rfc3339
from gated.model import Decision, DeviceState, Reading, new_id

# Every topic is below ROOT/{site}; payload schema ids are "gated.<name>/<major version>".
ROOT = "gated/v1"
READING = "gated.reading/1"
DECISION = "gated.decision/1"
ALARM = "gated.alarm/1"
STATUS = "gated.status/1"
HOLD = "gated.hold/1"
SCAN = "gated.scan/1"
AUDIT = "gated.audit/1"
# Hold types that mean "scan this container" (the NII station takes the request from MQTT).
SCAN_HOLD_TYPES = frozenset({"vacis", "exam", "nii", "xray"})


@dataclass(frozen=True, slots=True)
class Message:
    """A message to publish: its topic, schema and body; the envelope is added when stored."""

    topic: str
    schema: str
    body: dict[str, Any]
    retain: bool = False
    qos: int = 1


class Topics:
    """Every topic of one site."""

    def __init__(self, site: str) -> None:
        self.prefix = f"{ROOT}/{site}"

    def reading(self, reading: Reading) -> str:
        return f"{self.prefix}/{reading.lane}/reading/{reading.kind}/{reading.device}"

    def decision(self, lane: str) -> str:
        return f"{self.prefix}/{lane}/decision"

    def alarm(self, lane: str) -> str:
        return f"{self.prefix}/{lane}/alarm"

    def lane_status(self, lane: str) -> str:
        return f"{self.prefix}/{lane}/status"

    def device_status(self, lane: str, device: str) -> str:
        return f"{self.prefix}/{lane}/device/{device}/status"

    def node_status(self, node: str) -> str:
        return f"{self.prefix}/node/{node}/status"

    def node_audit(self, node: str) -> str:
        return f"{self.prefix}/node/{node}/audit"

    def scan_request(self, lane: str) -> str:
        return f"{self.prefix}/{lane}/scan/request"

    @property
    def holds_cmd(self) -> str:
        return f"{self.prefix}/holds/cmd"

    @property
    def holds_ack(self) -> str:
        return f"{self.prefix}/holds/ack"

    @property
    def holds_state(self) -> str:
        return f"{self.prefix}/holds/state"


def reading_message(topics: Topics, reading: Reading) -> Message:
    return Message(topics.reading(reading), READING, reading.body())


def decision_message(topics: Topics, decision: Decision) -> Message:
    return Message(topics.decision(decision.lane), DECISION, decision.body())


def alarm_message(
    topics: Topics,
    *,
    lane: str,
    alarm: str,
    text: str,
    ts: Any,
    severity: str = "high",
    visit: str | None = None,
    container: str | None = None,
    device: str | None = None,
    detail: dict[str, Any] | None = None,
) -> Message:
    body = {
        "id": new_id(),
        "ts": rfc3339(ts),
        "lane": lane,
        "alarm": alarm,
        "severity": severity,
        "text": text,
        "visit": visit,
        "container": container,
        "device": device,
        "detail": detail or {},
    }
    return Message(topics.alarm(lane), ALARM, body)


def device_status_message(
    topics: Topics, lane: str, device: str, kind: str, state: DeviceState, detail: str, ts: Any
) -> Message:
    body = {
        "id": new_id(),
        "ts": rfc3339(ts),
        "lane": lane,
        "device": device,
        "kind": kind,
        "state": str(state),
        "detail": detail,
    }
    return Message(topics.device_status(lane, device), STATUS, body, retain=True)


def lane_status_message(
    topics: Topics, lane: str, state: str, devices: dict[str, str], reason: str, ts: Any
) -> Message:
    body = {
        "id": new_id(),
        "ts": rfc3339(ts),
        "lane": lane,
        "state": state,
        "reason": reason,
        "devices": devices,
    }
    return Message(topics.lane_status(lane), STATUS, body, retain=True)

"""The JSON Schemas of every MQTT payload (CONTRACT section 4), and a check of a payload against them.

The schema files ship in ``gated/schemas`` (JSON Schema draft 2020-12); ``docs/asyncapi.yaml`` refers
to the same files. ``validate_payload`` is for tests and integrators: it names every problem of one
message, including a payload that disagrees with its own topic (another site, lane or device).
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib.resources import files
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from gated.messages import ROOT

PREFIX = ROOT
COMMON = "common"
SCHEMA_NAMES = (
    "reading",
    "decision",
    "alarm",
    "status-node",
    "status-lane",
    "status-device",
    "hold-command",
    "hold-ack",
    "holds-state",
    "scan-request",
    "audit-head",
)

_ID = r"[a-z0-9][a-z0-9_-]*"
_LANE = rf"(?!(?:holds|node)/){_ID}"
# Topic below gated/v1/{site}/ -> schema name; named groups must match the payload's fields.
_TOPICS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), name)
    for pattern, name in (
        (rf"(?P<lane>{_LANE})/reading/(?P<kind>{_ID})/(?P<device>{_ID})", "reading"),
        (rf"(?P<lane>{_LANE})/decision", "decision"),
        (rf"(?P<lane>{_LANE})/alarm", "alarm"),
        (rf"node/(?P<node>{_ID})/status", "status-node"),
        (rf"node/(?P<node>{_ID})/audit", "audit-head"),
        (rf"(?P<lane>{_LANE})/status", "status-lane"),
        (rf"(?P<lane>{_LANE})/device/(?P<device>{_ID})/status", "status-device"),
        (r"holds/cmd", "hold-command"),
        (r"holds/ack", "hold-ack"),
        (r"holds/state", "holds-state"),
        (rf"(?P<lane>{_LANE})/scan/request", "scan-request"),
    )
)
_SITE_TOPIC = re.compile(rf"^{re.escape(PREFIX)}/(?P<site>{_ID})/(?P<rest>.+)$")


def load_schema(name: str) -> dict[str, Any]:
    """One schema file by name (``"reading"`` or ``"reading.json"``), as a fresh dict."""
    stem = name.removesuffix(".json")
    if stem not in (*SCHEMA_NAMES, COMMON):
        raise ValueError(f"no payload schema named {name!r}")
    text = files("gated").joinpath("schemas", f"{stem}.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _registry() -> Registry[Any]:
    resources = [
        (f"{stem}.json", Resource.from_contents(load_schema(stem), default_specification=DRAFT202012))
        for stem in (*SCHEMA_NAMES, COMMON)
    ]
    registry: Registry[Any] = Registry().with_resources(resources)
    return registry


@cache
def _validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(load_schema(name), registry=_registry())


def _match(topic: str) -> tuple[str, dict[str, str]]:
    site_match = _SITE_TOPIC.fullmatch(topic)
    if site_match is None:
        raise ValueError(f"topic {topic!r} is not under {PREFIX}/{{site}}/")
    for pattern, name in _TOPICS:
        match = pattern.fullmatch(site_match["rest"])
        if match is not None:
            return name, {"site": site_match["site"], **match.groupdict()}
    raise ValueError(f"topic {topic!r} has no payload schema")


def validator_for(topic: str) -> str:
    """The schema name for a topic under ``gated/v1/{site}/``; ``ValueError`` if it has none."""
    return _match(topic)[0]


def validate_payload(topic: str, payload: Any) -> list[str]:
    """Every problem of one message (empty when valid). ``payload`` is the decoded JSON value, or
    the raw MQTT payload as ``bytes``."""
    try:
        name, fields = _match(topic)
    except ValueError as error:
        return [str(error)]
    if isinstance(payload, bytes | bytearray):
        try:
            payload = json.loads(bytes(payload).decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as error:
            return [f"payload is not UTF-8 JSON: {error}"]
    errors = sorted(_validator(name).iter_errors(payload), key=lambda error: list(map(str, error.path)))
    problems = [f"{error.json_path}: {error.message}" for error in errors]
    if isinstance(payload, dict) and name != "hold-command":
        for key, expected in fields.items():
            if key in payload and payload[key] != expected:
                problems.append(f"$.{key}: {payload[key]!r} does not match the topic's {key} {expected!r}")
    return problems

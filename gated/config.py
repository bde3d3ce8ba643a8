"""The configuration schema (TOML), validated with pydantic.

Unknown keys and wrong types are errors that name the file and the key path; nothing is silently
fixed or dropped. ``load_config`` is the only way the daemon reads a config.
"""

from __future__ import annotations

import ipaddress
import json
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import Field, ValidationError, field_validator, model_validator

from drivers.barrier_modbus import BarrierModbusDevice as BarrierModbusDevice  # re-exported
from drivers.ocr_frames import OcrFramesDevice as OcrFramesDevice  # re-exported
from drivers.registry import DEVICE_TYPES
from gated.errors import ConfigError, GatedError
from gated.model import RESERVED_LANE_IDS
from gated.redact import redact_url
from gated.settings import DeviceSettings, Host, Identifier, Strict
from gated.settings import read_password_file as read_password_file  # re-exported


class MqttTlsConfig(Strict):
    """TLS to the broker: its certificate is checked against ``ca_file`` and the host name."""

    ca_file: str | None = Field(
        None,
        description="CA certificate(s) that signed the broker's certificate (PEM); the system's if unset.",
    )
    cert_file: str | None = Field(
        None, description="This client's certificate (PEM), for brokers that want one."
    )
    key_file: str | None = Field(
        None, description="The private key of cert_file (PEM); must not be readable by others."
    )

    @model_validator(mode="after")
    def _pair(self) -> MqttTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together: give both or neither")
        return self


class MqttConfig(Strict):
    host: Host = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    keepalive: int = Field(30, ge=5, le=3600, description="Seconds between MQTT keepalive pings.")
    client_id: str | None = Field(
        None,
        description="Defaults to gated-{site}-{node}. With the broker configuration in config/mosquitto/, "
        "it must be the common name of the client certificate.",
    )
    username: str | None = None
    password_file: str | None = Field(None, description="File holding the MQTT password (needs username).")
    tls: MqttTlsConfig | None = Field(
        None, description="TLS to the broker. Required unless host is loopback."
    )
    lab_cleartext: bool = Field(
        False,
        description="Only in a lab: allow MQTT in clear text to a broker that is not on this machine "
        "(passwords and hold commands then cross the network readable by anyone on it).",
    )
    protocol: Literal["5", "3.1.1"] = Field(
        "5",
        description="MQTT version. 5 tells gated when its session is taken over or a publish is "
        "refused; 3.1.1 only for brokers that lack 5.",
    )
    max_inflight: int = Field(100, ge=1, le=65535, description="Unacknowledged QoS 1 messages at once.")
    replay_seconds: int = Field(
        60,
        ge=0,
        le=86_400,
        description="Messages acknowledged this recently are sent again when the broker comes back "
        "without our session (it restarted and may have lost them). Keep above the broker's "
        "persistence autosave interval.",
    )

    @model_validator(mode="after")
    def _secure(self) -> MqttConfig:
        if self.password_file is not None and self.username is None:
            raise ValueError("password_file needs username: without it the password would never be sent")
        problem = cleartext_problem(self.host, self.tls is not None, self.lab_cleartext)
        if problem:
            raise ValueError(problem)
        return self


LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """True for a name or address that never leaves this machine."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def cleartext_problem(host: str, tls: bool, lab: bool) -> str | None:
    """Why a broker link may not be used as configured, or None: clear text only on loopback."""
    if tls or lab or is_loopback(host):
        return None
    return (
        f"TLS is required for the broker at {host!r} (not loopback): add [mqtt.tls], or set "
        "lab_cleartext = true for a lab where clear text is acceptable"
    )


class StorageConfig(Strict):
    database: str = Field(
        "/var/lib/gated/gated.db",
        description="SQLite file path (relative to the config file) or an SQLAlchemy URL; give a "
        "PostgreSQL password in database_password_file rather than in the URL.",
    )
    database_password_file: str | None = Field(
        None,
        description="File holding the database password (relative to the config file), for a database "
        "URL without a password of its own, e.g. postgresql+psycopg://gated@db.example/gated. Read at "
        "start; one trailing newline is stripped; the password goes to the driver, never into the "
        "URL's text, so no message shows it.",
    )
    local_replica: str | None = Field(
        None,
        description="A SQLite file of this node's own beside a shared PostgreSQL: the hold list is "
        "copied into it every few seconds, and while the shared database is unreachable the lanes "
        "decide from it (failing closed once it is older than holds.max_age_seconds), records are kept "
        "in it, and they are copied over when the shared database is back. Unset: the lanes close to "
        "automatic release while the database is unreachable.",
    )
    evidence: str = Field(
        "/var/lib/gated/evidence",
        description="Folder of the content-addressed evidence store (scan images, crops).",
    )
    max_pending_readings: int = Field(
        1_000_000,
        ge=1000,
        description="Reading messages waiting for the broker beyond this are dropped, oldest first, "
        "and counted (a warning comes at 80%). Decisions, alarms and audit records are never dropped.",
    )

    @field_validator("database")
    @classmethod
    def _database_url(cls, value: str) -> str:
        if "://" in value:
            from sqlalchemy.engine import make_url  # SQLAlchemy only when a URL is given
            from sqlalchemy.exc import ArgumentError

            try:
                make_url(value)
            except (ArgumentError, ValueError):
                raise ValueError(f"not a database URL: {redact_url(value)}") from None
        return value

    @model_validator(mode="after")
    def _password_file_fits(self) -> StorageConfig:
        if self.database_password_file is None:
            return self
        if "://" not in self.database or self.database.startswith("sqlite"):
            raise ValueError("database_password_file needs a database URL; SQLite has no password")
        from sqlalchemy.engine import make_url

        if make_url(self.database).password is not None:
            raise ValueError(
                "database_password_file is set and the database URL has a password too: keep one"
            )
        return self


class CredentialsConfig(Strict):
    security_level: Literal["normal", "raised"] = Field(
        "normal", description="The cancelled-card list may be 7 days old at normal level, 1 day at raised."
    )


KEY_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class CustomsKeyConfig(Strict):
    """A customs signing key whose hold commands gated trusts (``gated holds keygen`` prints one)."""

    id: str = Field(pattern=KEY_ID_PATTERN, max_length=64, description="The key id commands name in 'key'.")
    public_key: str = Field(description="The Ed25519 public key: base64 of its 32 bytes.")
    agencies: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        min_length=1, description="The agencies this key may place and release holds for, e.g. CBP."
    )

    @field_validator("public_key")
    @classmethod
    def _usable_key(cls, value: str) -> str:
        from gated.signing import public_key_from_text  # the cryptography import only when keys are given

        try:
            public_key_from_text(value)
        except GatedError as error:
            raise ValueError(str(error)) from None
        return value


class HoldsConfig(Strict):
    max_age_seconds: int = Field(
        ge=1,
        description="Required. A hold list not confirmed by an authenticated full view (customs' signed "
        "sync, or an operator's import) for longer than this is stale: no automatic release.",
    )
    customs_keys: list[CustomsKeyConfig] = Field(
        default_factory=list,
        description="The keys customs signs hold commands with. None: every command on holds/cmd is "
        "rejected.",
    )
    command_max_age_seconds: int = Field(
        300, ge=10, le=3600, description="A signed command made longer ago than this is refused (replay)."
    )
    command_queue: int = Field(
        5000, ge=10, le=100_000, description="Hold commands waiting at most; more are dropped and alarmed."
    )
    commands_per_second: float = Field(
        20.0, gt=0, le=10_000, description="Authentic hold commands applied per second at most."
    )

    @model_validator(mode="after")
    def _unique_keys(self) -> HoldsConfig:
        ids = [key.id for key in self.customs_keys]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"customs key ids must be unique: {', '.join(duplicates)}")
        return self


class OcrConfig(Strict):
    workers: int | None = Field(
        None,
        ge=1,
        le=16,
        description="OCR worker processes shared by every ocr-frames camera (each reads one frame at a "
        "time on one core, at a lower CPU priority than the daemon); default: one per core.",
    )


def listen_address(text: str) -> tuple[str, int]:
    """``host:port`` (``[v6 address]:port``) split; ``ValueError`` saying what is wrong."""
    host, colon, port = text.rpartition(":")
    if not colon or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not host:port with a port from 1 to 65535 (e.g. 127.0.0.1:9108)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{text!r}: put an IPv6 address in brackets, e.g. [::1]:9108")
    if not host.strip():
        raise ValueError(f"{text!r} has no host: name the address to listen on (0.0.0.0 for every one)")
    return host, int(port)


class MetricsConfig(Strict):
    listen: str | None = Field(
        None,
        description="Serve Prometheus metrics over HTTP on this host:port, e.g. 127.0.0.1:9108 "
        "(unset: no endpoint). No authentication: anyone who reaches it sees the lanes' traffic and "
        "device health, so keep it on loopback or a management network.",
    )

    @field_validator("listen")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None:
            listen_address(value)
        return value


class ConsoleConfig(Strict):
    listen: str | None = Field(
        None,
        description="Serve the control-room console on this host:port, e.g. 0.0.0.0:8443 (unset: no "
        "console). Without TLS only a loopback address is allowed, unless lab_cleartext.",
    )
    tls_cert_file: str | None = Field(
        None, description="PEM certificate (chain) the console serves HTTPS with"
    )
    tls_key_file: str | None = Field(
        None, description="PEM private key of tls_cert_file (readable only by gated)"
    )
    lab_cleartext: bool = Field(
        False, description="Serve plain HTTP on a non-loopback address (a lab only: passwords cross in clear)"
    )

    @field_validator("listen")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None:
            listen_address(value)
        return value

    @model_validator(mode="after")
    def _tls_or_loopback(self) -> ConsoleConfig:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("give both tls_cert_file and tls_key_file, or neither")
        if self.listen is not None and self.tls_cert_file is None and not self.lab_cleartext:
            host, _ = listen_address(self.listen)
            if not _loopback(host):
                raise ValueError(
                    f"TLS is required for the console on {self.listen} (tls_cert_file, tls_key_file), "
                    "or lab_cleartext = true"
                )
        return self


class ClusterConfig(Strict):
    """Several nodes for the same lanes (active and standby) on one shared database."""

    lease_seconds: float | None = Field(
        None,
        ge=1,
        le=60,
        description="Drive a lane only while holding its lease in the shared database (renewed every "
        "third of this); a node that stops renewing loses its lanes to a standby after this long, and "
        "the barrier PLCs take commands only with the newest holder's fencing token. Unset: this node "
        "drives every lane of its config, alone.",
    )


class AlertsConfig(Strict):
    """Alarms put before the officers on duty: in the console until acknowledged, escalated when
    nobody does, and sent to a webhook for other systems."""

    acknowledge_seconds: float = Field(
        120.0,
        gt=0,
        le=86_400,
        description="An alert nobody acknowledged within this long is escalated (to the supervisors, "
        "then to everyone and the webhook again), once per period up to escalation_levels.",
    )
    escalation_levels: int = Field(2, ge=0, le=5, description="How many times an alert is escalated.")
    webhook_url: str | None = Field(
        None,
        description="POST every alert raised, escalated and acknowledged (gated.alert-event/1 JSON) to "
        "this http(s) URL; delivered at least once, retried with backoff, each event with its own id.",
    )
    webhook_secret_file: str | None = Field(
        None,
        description="File holding the key the webhook's body is signed with (HMAC-SHA256, header "
        "X-Gated-Signature: sha256=<hex>).",
    )
    webhook_timeout_seconds: float = Field(
        5.0, gt=0, le=60, description="Give up one webhook attempt after this."
    )

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from urllib.parse import urlsplit

        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{redact_url(value)!r} is not an http:// or https:// URL with a host")
        return value


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


DEVICE_KINDS: dict[str, str] = {name: device.kind.value for name, device in DEVICE_TYPES.items()}
"""The lane role (rfid, ocr, rpm, ...) of each ``driver = "..."`` name."""

if TYPE_CHECKING:
    DeviceConfig = DeviceSettings
else:
    # The union of every registered settings model, told apart by its driver name.
    DeviceConfig = Annotated[
        Union[tuple(device.settings for device in DEVICE_TYPES.values())],  # noqa: UP007
        Field(discriminator="driver"),
    ]

RequiredKind = Literal["rfid", "ocr", "rpm", "credential"]
DEFAULT_REQUIRE: tuple[RequiredKind, ...] = ("ocr", "rpm")


class LaneConfig(Strict):
    id: Identifier
    visit_timeout_seconds: float = Field(
        60.0, gt=0, description="A visit closes after this long even if incomplete (and cannot release)."
    )
    settle_seconds: float = Field(
        1.0, ge=0, description="After the last expected reading, wait this long for late ones."
    )
    ocr_wait_seconds: float = Field(
        20.0,
        ge=0,
        le=300,
        description="When the next truck arrives while an ocr-frames camera is still reading the visit "
        "before it, that visit waits up to this long for the read (only readings naming it join it), then "
        "is decided; 0 closes it at once, unread. A late decision never opens the barrier for the next "
        "truck.",
    )
    require: list[RequiredKind] = Field(
        default_factory=lambda: list(DEFAULT_REQUIRE),
        description="Device kinds whose report completes a visit; a missing one means no release.",
    )
    devices: list[DeviceConfig] = Field(min_length=1)

    @field_validator("id")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_LANE_IDS:
            raise ValueError(f"a lane may not be named {value!r} (reserved topic level)")
        return value

    @model_validator(mode="after")
    def _devices_fit(self) -> LaneConfig:
        ids = [device.id for device in self.devices]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"device ids must be unique within a lane: {', '.join(duplicates)}")
        barriers = [device.id for device in self.devices if DEVICE_KINDS[device.driver] == "barrier"]
        if len(barriers) > 1:
            raise ValueError(f"a lane has one barrier, not {len(barriers)}: {', '.join(barriers)}")
        kinds = {DEVICE_KINDS[device.driver] for device in self.devices}
        missing = [kind for kind in self.require if kind not in kinds]
        if missing:
            raise ValueError(f"require lists {', '.join(missing)} but the lane has no such device")
        return self


class GateConfig(Strict):
    site: Identifier
    node: Identifier = "gate-1"
    mqtt: MqttConfig = Field(default_factory=lambda: MqttConfig())
    storage: StorageConfig = Field(default_factory=lambda: StorageConfig())
    holds: HoldsConfig
    credentials: CredentialsConfig = Field(default_factory=lambda: CredentialsConfig())
    ocr: OcrConfig = Field(default_factory=lambda: OcrConfig())
    metrics: MetricsConfig = Field(default_factory=lambda: MetricsConfig())
    console: ConsoleConfig = Field(default_factory=lambda: ConsoleConfig())
    alerts: AlertsConfig = Field(default_factory=lambda: AlertsConfig())
    cluster: ClusterConfig = Field(default_factory=lambda: ClusterConfig())
    lanes: list[LaneConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _lanes_unique(self) -> GateConfig:
        ids = [lane.id for lane in self.lanes]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"lane ids must be unique: {', '.join(duplicates)}")
        return self

    @property
    def topic_prefix(self) -> str:
        return f"gated/v1/{self.site}"


def _key_path(location: tuple[int | str, ...], data: Any) -> str:
    """A readable key path: lanes[0].devices[1].port, naming the list item by its id when known."""
    parts: list[str] = []
    node = data
    for item in location:
        if isinstance(item, int):
            label = f"[{item}]"
            if isinstance(node, list) and 0 <= item < len(node) and isinstance(node[item], dict):
                ident = node[item].get("id")
                if isinstance(ident, str):
                    label = f"[{item}:{ident}]"
            parts.append(label)
            node = node[item] if isinstance(node, list) and 0 <= item < len(node) else None
        else:
            # Discriminated unions put the tag into the location; it is not a key the user wrote.
            if isinstance(node, dict) and item not in node and item in DEVICE_KINDS:
                continue
            parts.append(("." if parts else "") + item)
            node = node.get(item) if isinstance(node, dict) else None
    return "".join(parts) or "(top level)"


def validate(data: Any, *, source: str = "<config>") -> GateConfig:
    """Validate parsed TOML; raises ``ConfigError`` with one line per problem.

    Checks between entries (duplicate lane or device ids) run on the raw data too, so they are
    reported together with the field errors rather than only once those are fixed."""
    try:
        return GateConfig.model_validate(data)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            problems.append(f"{source}: {_key_path(tuple(item['loc']), data)}: {_message(item)}")
        for location, message in _duplicate_ids(data):
            line = f"{source}: {_key_path(location, data)}: {message}"
            if line not in problems:
                problems.append(line)
        raise ConfigError(problems) from None


def _message(item: Any) -> str:
    """pydantic's message in the config's words: no "Value error, " prefix, plain wording for the
    common cases."""
    kind = item["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind == "string_too_short" and item.get("ctx", {}).get("min_length") == 1:
        return "must not be empty"
    return str(item["msg"]).removeprefix("Value error, ")


def _duplicate_ids(data: Any) -> list[tuple[tuple[int | str, ...], str]]:
    """Duplicate lane ids, and device ids within a lane, read from the raw data (the key path and
    the message the models' own checks give)."""
    found: list[tuple[tuple[int | str, ...], str]] = []
    lanes = data.get("lanes") if isinstance(data, dict) else None
    if not isinstance(lanes, list):
        return found
    duplicates = _duplicates(lanes)
    if duplicates:
        found.append((("lanes",), f"lane ids must be unique: {', '.join(duplicates)}"))
    for index, lane in enumerate(lanes):
        devices = lane.get("devices") if isinstance(lane, dict) else None
        if isinstance(devices, list) and (duplicates := _duplicates(devices)):
            message = f"device ids must be unique within a lane: {', '.join(duplicates)}"
            found.append((("lanes", index), message))
    return found


def _duplicates(entries: list[Any]) -> list[str]:
    ids = [entry.get("id") for entry in entries if isinstance(entry, dict)]
    return sorted({i for i in ids if isinstance(i, str) and ids.count(i) > 1})


def device_problems(config: GateConfig, source: str) -> list[str]:
    """What is wrong with the devices beyond the schema (a profile file that does not load), one
    line per problem naming the key path; a problem several devices share (one missing profile)
    is reported once, naming the others too."""
    lines: dict[str, list[str]] = {}
    for lane_index, lane in enumerate(config.lanes):
        for index, device in enumerate(lane.devices):
            where = f"lanes[{lane_index}:{lane.id}].devices[{index}:{device.id}]"
            for problem in device.problems():
                # Name the setting whose value (a file path) the problem starts with.
                key = next(
                    (
                        name
                        for name, value in device
                        if isinstance(value, str) and problem.startswith(f"{value}:")
                    ),
                    None,
                )
                lines.setdefault(problem, []).append(where if key is None else f"{where}.{key}")
    problems = []
    for problem, paths in lines.items():
        also = f" (also {', '.join(paths[1:])})" if len(paths) > 1 else ""
        problems.append(f"{source}: {paths[0]}: {problem}{also}")
    return problems


def load_config(path: str | Path) -> GateConfig:
    """Read and validate a TOML config file; file paths in it are resolved against its folder."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError([f"{file}: cannot read: {error}"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([f"{file}: not valid TOML: {error}"]) from None
    config = validate(data, source=str(file))
    return _read_password_files(_resolve_paths(config, file.parent), str(file))


def _resolve_paths(config: GateConfig, base: Path) -> GateConfig:
    def resolve(value: str) -> str:
        if "://" in value or Path(value).is_absolute():
            return value
        return str((base / value).resolve())

    lanes = []
    for lane in config.lanes:
        devices = [device.with_paths(resolve) for device in lane.devices]
        lanes.append(lane.model_copy(update={"devices": devices}))
    storage = config.storage.model_copy(
        update={
            "database": resolve(config.storage.database),
            "evidence": resolve(config.storage.evidence),
            "database_password_file": _maybe(resolve, config.storage.database_password_file),
        }
    )
    return config.model_copy(
        update={"lanes": lanes, "storage": storage, "mqtt": _resolve_mqtt(config.mqtt, resolve)}
    )


def _maybe(resolve: Callable[[str], str], value: str | None) -> str | None:
    return None if value is None else resolve(value)


def _read_password_files(config: GateConfig, source: str) -> GateConfig:
    """Check that the password files can be read (a failure names the key), and give each device
    the passwords its own password files hold (``DeviceSettings.with_passwords``)."""
    if config.storage.database_password_file is not None:
        # Read again when the database is opened: here only so check-config finds an unreadable file.
        read_password_file(config.storage.database_password_file, f"{source}: storage.database_password_file")
    lanes = []
    for lane_index, lane in enumerate(config.lanes):
        devices = [
            device.with_passwords(f"{source}: lanes[{lane_index}:{lane.id}].devices[{index}:{device.id}]")
            for index, device in enumerate(lane.devices)
        ]
        lanes.append(lane.model_copy(update={"devices": devices}))
    return config.model_copy(update={"lanes": lanes})


def _resolve_mqtt(mqtt: MqttConfig, resolve: Any) -> MqttConfig:
    def maybe(value: str | None) -> str | None:
        return None if value is None else resolve(value)

    tls = mqtt.tls
    if tls is not None:
        tls = tls.model_copy(
            update={
                "ca_file": maybe(tls.ca_file),
                "cert_file": maybe(tls.cert_file),
                "key_file": maybe(tls.key_file),
            }
        )
    return mqtt.model_copy(update={"tls": tls, "password_file": maybe(mqtt.password_file)})


def json_schema() -> str:
    """The JSON Schema of the config file, as shipped in config/gated.schema.json."""
    schema = GateConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "gated configuration"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"

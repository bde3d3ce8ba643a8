"""The configuration schema (TOML), validated with pydantic.

Unknown keys and wrong types are errors that name the file and the key path; nothing is silently
fixed or dropped. ``load_config`` is the only way the daemon reads a config.
"""

from __future__ import annotations

import ipaddress
import json
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gated.errors import ConfigError, GatedError
from gated.model import IDENTIFIER, RESERVED_LANE_IDS
from gated.redact import redact_url
from ocr.plate import DEFAULT_FORMATS, DEFAULT_MIN_CONFIDENCE, PlateFormat

Identifier = Annotated[str, Field(pattern=IDENTIFIER.pattern, max_length=64)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class MqttTlsConfig(_Strict):
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


class MqttConfig(_Strict):
    host: str = "127.0.0.1"
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


class StorageConfig(_Strict):
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


class CredentialsConfig(_Strict):
    security_level: Literal["normal", "raised"] = Field(
        "normal", description="The cancelled-card list may be 7 days old at normal level, 1 day at raised."
    )


KEY_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class CustomsKeyConfig(_Strict):
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


class HoldsConfig(_Strict):
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


class RfidSerialDevice(_Strict):
    id: Identifier
    driver: Literal["rfid-serial"]
    url: str = Field(description="A tty path, or socket://host:port for a serial device server.")
    baudrate: int = Field(9600, gt=0)
    repeat_window_seconds: float = Field(5.0, gt=0, description="Report one tag once per window.")


class RfidLlrpDevice(_Strict):
    id: Identifier
    driver: Literal["rfid-llrp"]
    host: str
    port: int = Field(5084, ge=1, le=65535)
    repeat_window_seconds: float = Field(5.0, gt=0, description="Report one tag once per window.")
    silence_timeout_seconds: float = Field(3.0, gt=0, description="No keepalive for this long: offline.")


class RpmModbusDevice(_Strict):
    id: Identifier
    driver: Literal["rpm-modbus"]
    host: str
    port: int = Field(502, ge=1, le=65535)
    unit: int = Field(1, ge=0, le=247)
    profile: str = Field(description="Register map profile (TOML), relative to the config file.")
    poll_interval_seconds: float = Field(0.2, gt=0, le=10)
    timeout_seconds: float = Field(1.0, gt=0, le=30)


class RpmRapiscanDevice(_Strict):
    id: Identifier
    driver: Literal["rpm-rapiscan"]
    host: str
    port: int = Field(ge=1, le=65535)
    n_sigma: float = Field(
        5.0, gt=0, le=50, description="gated's own alarm rule: background + n * sqrt(background)."
    )
    silence_timeout_seconds: float = Field(2.0, gt=0, description="Records come every 200 ms.")


class OcrCameraDevice(_Strict):
    id: Identifier
    driver: Literal["ocr-camera"]
    host: str = Field(description="The camera's name or address only (no user, password or path).")
    port: int = Field(ge=1, le=65535)
    min_confidence: float = Field(0.9, ge=0, le=1)
    silence_timeout_seconds: float = Field(3.0, gt=0)

    @field_validator("host")
    @classmethod
    def _plain_host(cls, value: str) -> str:
        # A user:password@ written here would be shown in every connection error: refuse it unshown.
        if not value or any(char in value for char in "@/") or not value.isprintable() or " " in value:
            raise ValueError("a host is a name or an address, without a user, password, scheme or path")
        return value


FRAME_SOURCE_SCHEMES = frozenset({"", "http", "https", "rtsp", "rtsps", "file"})
LIVE_SCHEMES = frozenset({"http", "https", "rtsp", "rtsps"})
_SCHEME_WITHOUT_SLASHES = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:/")
PLATE_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class PlateFormatConfig(_Strict):
    """One licence plate layout a plate view may see (``ocr.plate.PlateFormat``)."""

    name: str = Field(min_length=1, max_length=64)
    pattern: str = Field(
        description='L a letter, D a digit, a space or a dash between groups, e.g. "LL-DDD-LL"; 4 to 10 '
        "characters."
    )
    letters: str = Field(
        PLATE_LETTERS, description="The letters the format issues (capitals); others are never read into it."
    )

    @model_validator(mode="after")
    def _valid_format(self) -> PlateFormatConfig:
        self.to_format()
        return self

    def to_format(self) -> PlateFormat:
        try:
            return PlateFormat(self.name, self.pattern, self.letters)
        except ConfigError as error:
            # pydantic reports a ValueError with the key path in front of it.
            raise ValueError("; ".join(error.problems)) from None


class OcrFramesDevice(_Strict):
    """A plain IP camera (or several, one per view) whose frames gated reads itself."""

    id: Identifier
    driver: Literal["ocr-frames"]
    views: list[str] = Field(
        min_length=1,
        max_length=4,
        description="One frame source per camera view: http(s):// MJPEG, rtsp(s)://, a video file or "
        "a folder of images (relative to the config file). A camera's user goes in the URL "
        "(rtsp://gated@cam-1/stream), its password in view_password_file.",
    )
    view_password_file: str | None = Field(
        None,
        description="File holding the password of the views and plate_views that name a user without a "
        "password (rtsp://gated@cam-1/stream); relative to the config file, read at start, one trailing "
        "newline stripped. A view with user:password@ keeps its own. Keeps the password out of the "
        "config and out of every message.",
    )
    engine: Literal["rapidocr", "easyocr"] = Field("rapidocr", description="The OCR engine.")
    min_confidence: float = Field(
        0.8, ge=0, le=1, description="Below this the number is reported as uncertain (goes to a clerk)."
    )
    pre_trigger_seconds: float = Field(
        1.0,
        ge=0,
        le=10,
        description="Frames this long before the visit's trigger are considered (never as far back as "
        "the previous truck).",
    )
    post_trigger_seconds: float = Field(
        1.5,
        ge=0,
        le=10,
        description="Frames up to this long after the trigger are considered; the read starts then.",
    )
    frames_per_view: int = Field(
        2, ge=1, le=10, description="The sharpest frames of each view that are read (each costs OCR time)."
    )
    sample_fps: float = Field(
        5.0, gt=0, le=30, description="Frames per second kept from each view (the rest are dropped)."
    )
    silence_timeout_seconds: float = Field(
        5.0, gt=0, description="A live view without a frame for this long is offline."
    )
    plate_views: list[str] = Field(
        default_factory=list,
        max_length=4,
        description="Frame sources aimed at the truck's front (same kinds as views): their sharpest "
        "frames_per_view frames are read for the licence plate, reported as a licence_plate reading "
        "that never decides anything.",
    )
    plate_formats: list[PlateFormatConfig] | None = Field(
        None,
        min_length=1,
        description="The plate layouts the lane sees; default: generic shapes (ABC 1234, 7ABC123, "
        "AB-123-CD, AB 123CD, AB12 CDE, 1234 BCD).",
    )
    plate_min_confidence: float = Field(
        DEFAULT_MIN_CONFIDENCE,
        ge=0,
        le=1,
        description="Below this the plate is reported as uncertain (a plate has no check digit: keep it "
        "high).",
    )

    @field_validator("views", "plate_views")
    @classmethod
    def _known_sources(cls, views: list[str]) -> list[str]:
        for view in views:
            problem = _view_problem(view)
            if problem:
                # The view as written may hold a password: the message shows it without.
                raise ValueError(f"view {redact_url(view)!r}: {problem}")
        return views

    @model_validator(mode="after")
    def _password_file_used(self) -> OcrFramesDevice:
        # A password file no view can use would be ignored: refuse it rather than drop it.
        if self.view_password_file is not None and not any(
            _names_user_only(view) for view in (*self.views, *self.plate_views)
        ):
            raise ValueError(
                "view_password_file needs a view that names a user without a password (rtsp://USER@host/path)"
            )
        return self

    @field_validator("plate_formats")
    @classmethod
    def _unique_format_names(cls, formats: list[PlateFormatConfig] | None) -> list[PlateFormatConfig] | None:
        names = [plate_format.name for plate_format in formats or []]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"plate format names must be unique: {', '.join(duplicates)}")
        return formats

    @model_validator(mode="after")
    def _plate_settings_need_plate_views(self) -> OcrFramesDevice:
        # Plate settings without a plate view would be ignored: refuse them rather than drop them.
        unused = sorted({"plate_formats", "plate_min_confidence"} & self.model_fields_set)
        if unused and not self.plate_views:
            raise ValueError(f"{' and '.join(unused)} need plate_views")
        return self

    def plate_format_list(self) -> tuple[PlateFormat, ...]:
        """The configured plate formats, or the defaults."""
        if self.plate_formats is None:
            return DEFAULT_FORMATS
        return tuple(plate_format.to_format() for plate_format in self.plate_formats)


def _view_problem(view: str) -> str | None:
    """What is wrong with a frame source as written, or None."""
    scheme = view.partition("://")[0].lower() if "://" in view else ""
    if scheme not in FRAME_SOURCE_SCHEMES or not view.strip():
        return "use http(s)://, rtsp(s)://, file://, or a path to a video file or an image folder"
    if not scheme and _SCHEME_WITHOUT_SLASHES.match(view):
        return "a URL needs '://' after its scheme"
    if scheme in LIVE_SCHEMES:
        if not view.isprintable() or " " in view:
            return "a URL has no spaces or control characters (percent-encode them)"
        parts = urlsplit(view)
        try:
            parts.port  # noqa: B018 (parsing it is the check)
        except ValueError:
            return "the port is not a number from 1 to 65535"
        if not parts.hostname:
            return "the URL names no host"
    return None


def _names_user_only(view: str) -> bool:
    """A live view with a user and no password: the one view_password_file completes."""
    if "://" not in view or view.partition("://")[0].lower() not in LIVE_SCHEMES:
        return False
    parts = urlsplit(view)
    return parts.username is not None and parts.password is None


def _with_password(view: str, password: str) -> str:
    """``view`` with ``password`` for its user, when it names a user without one."""
    if not _names_user_only(view):
        return view
    parts = urlsplit(view)
    user, _, host = parts.netloc.rpartition("@")
    return parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}").geturl()


class OcrConfig(_Strict):
    workers: int = Field(
        1,
        ge=1,
        le=16,
        description="OCR worker processes shared by every ocr-frames camera (each reads one frame at a "
        "time and uses the machine's cores: one is right for a 2-core PC).",
    )


class BarrierModbusDevice(_Strict):
    id: Identifier
    driver: Literal["barrier-modbus"]
    host: str
    port: int = Field(502, ge=1, le=65535)
    unit: int = Field(1, ge=0, le=247)
    lease_seconds: float = Field(
        10.0,
        gt=0,
        le=30,
        description="How long a permit to open lasts if no vehicle passes: seconds, for the truck "
        "at the barrier, never long enough for the next one to use it.",
    )
    release_window_seconds: float = Field(
        5.0,
        gt=0,
        le=60,
        description="A RELEASE opens the barrier only if the truck's newest reading is at most this "
        "old: a decision that comes after its truck has gone grants nothing.",
    )
    heartbeat_interval_seconds: float = Field(
        0.25, gt=0, le=2, description="Keep well below the PLC's watchdog timeout."
    )
    timeout_seconds: float = Field(1.0, gt=0, le=30)


class PrinterEscposDevice(_Strict):
    id: Identifier
    driver: Literal["printer-escpos"]
    host: str
    port: int = Field(9100, ge=1, le=65535)
    timeout_seconds: float = Field(5.0, gt=0, le=60)
    secondary_inspection_place: str | None = Field(None, description='Where to go, e.g. "bay 3".')
    holding_area_place: str | None = Field(None, description='Where held trucks park, e.g. "area B".')


class CredentialSerialDevice(_Strict):
    id: Identifier
    driver: Literal["credential-serial"]
    url: str = Field(description="A tty path, or socket://host:port for a serial device server.")
    baudrate: int = Field(9600, gt=0)
    repeat_window_seconds: float = Field(5.0, gt=0)


class NiiFolderDevice(_Strict):
    id: Identifier
    driver: Literal["nii-folder"]
    inbox: str = Field(description="Where the scanner drops image + metadata pairs (relative to the config).")
    poll_interval_seconds: float = Field(0.5, gt=0, le=60)
    image_grace_seconds: float = Field(10.0, gt=0, description="How long metadata may wait for its image.")
    max_bytes: int = Field(2 * 1024**3, gt=0, description="Larger images are quarantined.")


DeviceConfig = Annotated[
    RfidSerialDevice
    | RfidLlrpDevice
    | RpmModbusDevice
    | RpmRapiscanDevice
    | OcrCameraDevice
    | OcrFramesDevice
    | BarrierModbusDevice
    | PrinterEscposDevice
    | CredentialSerialDevice
    | NiiFolderDevice,
    Field(discriminator="driver"),
]

RequiredKind = Literal["rfid", "ocr", "rpm", "credential"]
DEFAULT_REQUIRE: tuple[RequiredKind, ...] = ("ocr", "rpm")

DEVICE_KINDS = {
    "rfid-serial": "rfid",
    "rfid-llrp": "rfid",
    "rpm-modbus": "rpm",
    "rpm-rapiscan": "rpm",
    "ocr-camera": "ocr",
    "ocr-frames": "ocr",
    "barrier-modbus": "barrier",
    "printer-escpos": "printer",
    "credential-serial": "credential",
    "nii-folder": "nii",
}


class LaneConfig(_Strict):
    id: Identifier
    visit_timeout_seconds: float = Field(
        60.0, gt=0, description="A visit closes after this long even if incomplete (and cannot release)."
    )
    settle_seconds: float = Field(
        1.0, ge=0, description="After the last expected reading, wait this long for late ones."
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
        barriers = [device.id for device in self.devices if isinstance(device, BarrierModbusDevice)]
        if len(barriers) > 1:
            raise ValueError(f"a lane has one barrier, not {len(barriers)}: {', '.join(barriers)}")
        kinds = {DEVICE_KINDS[device.driver] for device in self.devices}
        missing = [kind for kind in self.require if kind not in kinds]
        if missing:
            raise ValueError(f"require lists {', '.join(missing)} but the lane has no such device")
        return self


class GateConfig(_Strict):
    site: Identifier
    node: Identifier = "gate-1"
    mqtt: MqttConfig = Field(default_factory=lambda: MqttConfig())
    storage: StorageConfig = Field(default_factory=lambda: StorageConfig())
    holds: HoldsConfig
    credentials: CredentialsConfig = Field(default_factory=lambda: CredentialsConfig())
    ocr: OcrConfig = Field(default_factory=lambda: OcrConfig())
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
    """Validate parsed TOML; raises ``ConfigError`` with one line per problem."""
    try:
        return GateConfig.model_validate(data)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            path = _key_path(tuple(item["loc"]), data)
            message = item["msg"]
            if item["type"] == "extra_forbidden":
                message = "unknown key"
            elif item["type"] == "missing":
                message = "required key is missing"
            problems.append(f"{source}: {path}: {message}")
        raise ConfigError(problems) from None


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
        devices: list[DeviceConfig] = []
        for device in lane.devices:
            if isinstance(device, RpmModbusDevice):
                device = device.model_copy(update={"profile": resolve(device.profile)})
            elif isinstance(device, NiiFolderDevice):
                device = device.model_copy(update={"inbox": resolve(device.inbox)})
            elif isinstance(device, OcrFramesDevice):
                device = device.model_copy(
                    update={
                        "views": [resolve(view) for view in device.views],
                        "plate_views": [resolve(view) for view in device.plate_views],
                        "view_password_file": _maybe(resolve, device.view_password_file),
                    }
                )
            devices.append(device)
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


def read_password_file(path: str | Path, key: str) -> str:
    """The password in ``path`` without one trailing newline; ``ConfigError`` naming ``key`` when
    the file cannot be read or holds no password."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError([f"{key}: cannot read {path}: {error.strerror or error}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{key}: {path} is not UTF-8 text"]) from None
    password = text.removesuffix("\n").removesuffix("\r")
    if not password:
        raise ConfigError([f"{key}: {path} is empty"])
    return password


def _read_password_files(config: GateConfig, source: str) -> GateConfig:
    """Check that the password files can be read (a failure names the key), and give each frames
    camera's views that name a user without a password the one in its ``view_password_file``."""
    if config.storage.database_password_file is not None:
        # Read again when the database is opened: here only so check-config finds an unreadable file.
        read_password_file(config.storage.database_password_file, f"{source}: storage.database_password_file")
    lanes = []
    for lane_index, lane in enumerate(config.lanes):
        devices: list[DeviceConfig] = []
        for index, device in enumerate(lane.devices):
            if isinstance(device, OcrFramesDevice) and device.view_password_file is not None:
                key = (
                    f"{source}: lanes[{lane_index}:{lane.id}].devices[{index}:{device.id}].view_password_file"
                )
                password = read_password_file(device.view_password_file, key)
                device = device.model_copy(
                    update={
                        "views": [_with_password(view, password) for view in device.views],
                        "plate_views": [_with_password(view, password) for view in device.plate_views],
                    }
                )
            devices.append(device)
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

"""How every gated MQTT client reaches its broker: TLS, credentials, protocol, one clear-text rule.

The daemon, `gated holds send` and the demo's customs all build their paho client here, so a
setting (a CA, a client certificate, MQTT 5) means the same thing in each of them.
"""

from __future__ import annotations

import os
import ssl
import stat
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gated.config import MqttConfig, MqttTlsConfig, cleartext_problem
from gated.errors import ConfigError

# MQTT 5 reason codes a client acts on (OASIS MQTT 5.0, section 2.4).
SESSION_TAKEN_OVER = 142
NOT_AUTHORIZED = 135
# How long the broker keeps gated's session while it is away; hold commands wait there meanwhile.
SESSION_EXPIRY_SECONDS = 86_400


def tls_context(tls: MqttTlsConfig, where: str = "mqtt.tls") -> ssl.SSLContext:
    """A client TLS context that checks the broker's certificate and host name (TLS 1.2 or later)."""
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file)
    except (OSError, ssl.SSLError) as error:
        raise ConfigError([f"{where}.ca_file: cannot use {tls.ca_file!r}: {_reason(error)}"]) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.cert_file is not None and tls.key_file is not None:
        _check_private(tls.key_file, f"{where}.key_file")
        try:
            context.load_cert_chain(tls.cert_file, tls.key_file)
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(
                [f"{where}.cert_file: cannot use {tls.cert_file!r} with its key: {_reason(error)}"]
            ) from None
    return context


def read_password(path: str, where: str) -> str:
    """The password in ``path`` (one trailing newline dropped); a file others may read is refused."""
    _check_private(path, where)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError([f"{where}: cannot read {path!r}: {_reason(error)}"]) from None
    return text.removesuffix("\n")


def check_broker_link(config: MqttConfig) -> list[str]:
    """What would stop the daemon from reaching its broker as configured (files, keys), one line each."""
    problems: list[str] = []
    try:
        if config.tls is not None:
            tls_context(config.tls)
        if config.password_file is not None:
            read_password(config.password_file, "mqtt.password_file")
    except ConfigError as error:
        problems.extend(error.problems)
    return problems


def new_client(config: MqttConfig, client_id: str, *, persistent: bool) -> mqtt.Client:
    """A paho client set up for ``config``'s broker (not yet connected).

    ``persistent``: the broker keeps the session (subscriptions, queued QoS 1 messages) while the
    client is away; the daemon wants that, a one-shot sender does not.
    """
    problem = cleartext_problem(config.host, config.tls is not None, config.lab_cleartext)
    if problem:
        raise ConfigError([f"mqtt: {problem}"])
    if config.protocol == "5":
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    else:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=not persistent,
            protocol=mqtt.MQTTv311,
        )
    if config.tls is not None:
        client.tls_set_context(tls_context(config.tls))
    if config.username is not None:
        password = None
        if config.password_file is not None:
            password = read_password(config.password_file, "mqtt.password_file")
        client.username_pw_set(config.username, password)
    return client


def connect_async(client: mqtt.Client, config: MqttConfig, *, persistent: bool) -> None:
    """Start connecting (paho retries on its own once its loop runs)."""
    client.connect_async(config.host, config.port, keepalive=config.keepalive, **_session(config, persistent))


def connect(client: mqtt.Client, config: MqttConfig, *, persistent: bool) -> None:
    """Connect now; raises OSError, ssl.SSLError or ValueError as paho does."""
    client.connect(config.host, config.port, keepalive=config.keepalive, **_session(config, persistent))


def _session(config: MqttConfig, persistent: bool) -> dict[str, Any]:
    if config.protocol != "5":
        return {}
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = SESSION_EXPIRY_SECONDS if persistent else 0
    return {"clean_start": not persistent, "properties": properties}


def reason_value(reason: Any) -> int:
    """The numeric reason code paho hands a callback (a ReasonCode, or an int in older paths)."""
    value = getattr(reason, "value", reason)
    return value if isinstance(value, int) else -1


def _check_private(path: str, where: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        raise ConfigError([f"{where}: cannot read {path!r}: {_reason(error)}"]) from None
    if mode & stat.S_IROTH:
        raise ConfigError([f"{where}: {path!r} is readable by every user: chmod o-rwx {path}"])


def _reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__

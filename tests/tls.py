"""Certificates made in the test (never committed): a CA, a broker certificate and client ones."""

from __future__ import annotations

import ipaddress
import os
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from paho.mqtt.enums import CallbackAPIVersion

if TYPE_CHECKING:
    from tests.conftest import Mosquitto


@dataclass(frozen=True)
class Identity:
    cert: Path
    key: Path


class Pki:
    """One CA in ``folder``; ``server()`` and ``client(name)`` issue PEM files signed by it."""

    def __init__(self, folder: Path, name: str = "gated test CA") -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.now(UTC)
        self._name = subject
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )
        self.ca = folder / "ca.pem"
        self.ca.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def server(self, name: str = "broker", hosts: tuple[str, ...] = ("localhost", "127.0.0.1")) -> Identity:
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        return self._issue(name, ExtendedKeyUsageOID.SERVER_AUTH, names)

    def client(self, common_name: str) -> Identity:
        return self._issue(common_name, ExtendedKeyUsageOID.CLIENT_AUTH, [])

    def _issue(
        self, common_name: str, usage: x509.ObjectIdentifier, names: list[x509.GeneralName]
    ) -> Identity:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        cert_path = self.folder / f"{common_name}.pem"
        key_path = self.folder / f"{common_name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        os.chmod(key_path, 0o600)
        return Identity(cert_path, key_path)


class Client:
    """A paho client over TLS (or not) as a test peer: records what it receives, how its publishes
    and subscriptions were answered, and how its connection ended."""

    def __init__(
        self,
        port: int,
        *,
        ca: Path | None,
        identity: Identity | None,
        client_id: str = "",
        protocol: int = mqtt.MQTTv5,
    ) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
        if ca is not None:
            context = ssl.create_default_context(cafile=str(ca))
            if identity is not None:
                context.load_cert_chain(str(identity.cert), str(identity.key))
            self.client.tls_set_context(context)
        self.port = port
        self.connected = threading.Event()
        self.ended = threading.Event()
        self.connect_reason: str | None = None
        self.disconnect_reason: int | None = None
        self.messages: list[tuple[str, bytes]] = []
        self.published: dict[int, int] = {}  # mid -> reason code
        self.subscribed: dict[int, list[int]] = {}
        self._changed = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe

    def open(self, timeout: float = 10.0) -> bool:
        """True when the broker accepted the connection."""
        try:
            self.client.connect("localhost", self.port, keepalive=30)
        except (OSError, ssl.SSLError) as error:
            self.connect_reason = f"{type(error).__name__}: {error}"
            return False
        self.client.loop_start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.connected.is_set() and not self.ended.is_set():
            time.sleep(0.02)
        return self.connected.is_set() and not self.ended.is_set()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, topic: str, payload: bytes, timeout: float = 10.0) -> int:
        """Publish at QoS 1; the broker's reason code in its PUBACK (0 = accepted)."""
        info = self.client.publish(topic, payload, qos=1)
        with self._changed:
            self._changed.wait_for(lambda: info.mid in self.published, timeout)
        return self.published[info.mid]

    def subscribe(self, topic: str, timeout: float = 10.0) -> int:
        """Subscribe at QoS 1; the reason code of the SUBACK (0 or 1 = granted, >= 0x80 refused)."""
        _, mid = self.client.subscribe(topic, qos=1)
        with self._changed:
            self._changed.wait_for(lambda: mid in self.subscribed, timeout)
        return self.subscribed[mid][0]

    def wait_for(self, predicate: Callable[[str, bytes], bool], timeout: float = 15.0) -> tuple[str, bytes]:
        with self._changed:
            found: list[tuple[str, bytes]] = []

            def seen() -> bool:
                found[:] = [m for m in self.messages if predicate(*m)]
                return bool(found)

            if not self._changed.wait_for(seen, timeout):
                raise AssertionError(
                    f"not received in {timeout} s; got {[t for t, _ in self.messages][-20:]}"
                )
            return found[0]

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.connect_reason = str(reason)
        if reason.is_failure:
            self.ended.set()
        else:
            self.connected.set()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.disconnect_reason = getattr(reason, "value", None)
        self.ended.set()

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        with self._changed:
            self.messages.append((message.topic, bytes(message.payload)))
            self._changed.notify_all()

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        with self._changed:
            self.published[mid] = reason.value
            self._changed.notify_all()

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, reasons: list[Any], _p: Any) -> None:
        with self._changed:
            self.subscribed[mid] = [reason.value for reason in reasons]
            self._changed.notify_all()


SHIPPED = Path(__file__).resolve().parent.parent / "config" / "mosquitto"


def secure_broker(folder: Path, pki: Pki, *, acl: str | None = None) -> Mosquitto:
    """A mosquitto running the shipped production configuration (config/mosquitto/) with
    certificates from ``pki``. What differs from production, and only that: the files' folder, a
    free loopback port, and `user root` (as root mosquitto would switch to a user who cannot read
    the test's folder). ``acl`` replaces the shipped ACL's text, for a broker that grants less."""
    from tests.conftest import Mosquitto

    folder.mkdir(parents=True, exist_ok=True)
    broker = Mosquitto(folder)
    files = folder / "broker-files"
    files.mkdir()
    server = pki.server("broker")
    for source, name in ((pki.ca, "ca.pem"), (server.cert, "broker.pem"), (server.key, "broker.key")):
        (files / name).write_bytes(source.read_bytes())
    (files / "acl").write_text(acl if acl is not None else (SHIPPED / "acl").read_text(), encoding="utf-8")
    (folder / "data").mkdir()
    text = (SHIPPED / "gated.conf").read_text(encoding="utf-8")
    assert "listener 8883\n" in text and "/etc/mosquitto/gated/" in text
    text = (
        text.replace("listener 8883\n", f"listener {broker.port} 127.0.0.1\n")
        .replace("/etc/mosquitto/gated/", f"{files}/")
        .replace("/var/lib/mosquitto/", f"{folder}/data/")
    )
    broker.conf.write_text(text + "\nuser root\nlog_dest stderr\n", encoding="utf-8")
    broker.start()
    return broker

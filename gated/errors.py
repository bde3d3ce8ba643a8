"""The one exception tree of gated.

Every error gated raises on purpose is a ``GatedError``. Library exceptions (pyserial, pymodbus,
paho, SQLAlchemy) are translated into one of these at the boundary of the module that calls the
library, so callers never need to know which library sits underneath.
"""

from __future__ import annotations


class GatedError(Exception):
    """Root of every error gated raises on purpose."""


class ConfigError(GatedError):
    """A configuration file or value is wrong; carries one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class ContainerNumberError(GatedError, ValueError):
    """Text that is not an ISO 6346 container number (or whose check digit does not fit)."""


class ProtocolError(GatedError):
    """A malformed frame or message from a device: counted, logged, never fatal."""


class DeviceUnavailable(GatedError):
    """A device cannot be reached (connection refused, port gone, timeout)."""


class StorageError(GatedError):
    """The database could not store or read what was asked (disk full, corrupt, locked)."""


class HoldListError(GatedError):
    """A hold, manifest or hold command is invalid or cannot be applied."""


class PublishError(GatedError):
    """The MQTT broker could not be reached or refused a message."""


class PayloadError(GatedError):
    """Bytes from outside (an MQTT payload, a file line) that are not acceptable JSON: too large,
    too deep, not UTF-8, NaN/Infinity, lone surrogates, duplicate keys."""


class SignatureError(GatedError):
    """A signed command whose signature is missing, malformed, or does not verify, or a key that
    cannot be used (unknown, wrong type, unreadable, too widely readable)."""

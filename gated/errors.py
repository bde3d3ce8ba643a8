"""The one exception tree of gated.

Every error gated raises on purpose is a ``GatedError``. Library exceptions (pyserial, pymodbus,
paho, SQLAlchemy) are translated into one of these at the boundary of the module that calls the
library, so callers never need to know which library sits underneath. Every class is defined
here, so the whole tree can be read in one place.
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


class EvidenceRejected(StorageError):
    """Evidence content is not what the caller said it is (a hash mismatch, over the size limit)."""


class NotRegularFile(EvidenceRejected):
    """A source that is not a regular file reached directly: a symbolic link, a FIFO, a device,
    a socket, a folder, or (when asked) a file with more than one hard link."""


class HoldListError(GatedError):
    """A hold, manifest or hold command is invalid or cannot be applied."""


class CancelledListError(GatedError, ValueError):
    """A cancelled-card list file is invalid; carries one "file:line: problem" per line."""


class PublishError(GatedError):
    """The MQTT broker could not be reached or refused a message, where the caller must know now
    (``gated holds send``). The daemon's publisher never raises it: what it cannot publish waits
    in the durable outbox and is sent once the broker takes it."""


class PrintError(GatedError):
    """The printer was reached but refused or could not take a gate pass."""


class OcrError(GatedError):
    """An OCR engine could not be loaded or could not read a frame."""


class EngineUnavailable(OcrError):
    """The OCR engine asked for is unknown or not installed in this environment."""


class PayloadError(GatedError):
    """Bytes from outside (an MQTT payload, a file line) that are not acceptable JSON: too large,
    too deep, not UTF-8, NaN/Infinity, lone surrogates, duplicate keys."""


class SignatureError(GatedError):
    """A signed command whose signature is missing, malformed, or does not verify, or a key that
    cannot be used (unknown, wrong type, unreadable, too widely readable)."""


class AccountError(GatedError):
    """A console account command that cannot be done (unknown user, weak password, taken name ...)."""


class OverrideRefused(GatedError):
    """A supervisor's override that was not made, and why (a held container, no reason ...)."""

"""What the config schema and the drivers share: the strict base of every settings model, and what
a driver is built with besides its own settings.

It imports no driver and nothing of ``gated.config``: each driver module declares its settings model
on this base, and ``gated.config`` assembles the device union from the drivers' models."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from gated.clock import Clock
from gated.errors import ConfigError
from gated.model import IDENTIFIER

if TYPE_CHECKING:  # the OCR pool pulls in OpenCV: only for type checking here
    from gated.evidence import EvidenceStore
    from ocr.pool import OcrPool

Identifier = Annotated[str, Field(pattern=IDENTIFIER.pattern, max_length=64)]


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty: give a host name or address")
    return value


Host = Annotated[str, Field(min_length=1), AfterValidator(_not_blank)]
"""A host name or address (the broker, a device): an empty one would only fail at connect time."""


class Strict(BaseModel):
    """A config section: unknown keys and wrong types are errors, values never change after load."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DeviceSettings(Strict):
    """One ``[[lanes.devices]]`` entry; each driver module derives its own with a ``driver`` literal."""

    id: Identifier
    driver: str

    def with_paths(self, resolve: Callable[[str], str]) -> Self:
        """These settings with their file paths made absolute by ``resolve`` (none by default)."""
        return self

    def with_passwords(self, key: str) -> Self:
        """These settings with the passwords their password files hold put in place (none by
        default); ``key`` names the device in a ``ConfigError`` when a file cannot be read."""
        return self

    def problems(self) -> list[str]:
        """What is wrong beyond the schema (a file that does not load), one line each."""
        return []


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


@dataclass(frozen=True)
class DriverContext:
    """What the daemon lends every driver it builds: its clock, the evidence store, and the OCR
    worker pool for an engine name (one per engine, shared by every camera)."""

    clock: Clock
    evidence: EvidenceStore
    ocr_pools: Callable[[str], OcrPool]

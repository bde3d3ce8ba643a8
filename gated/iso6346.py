"""ISO 6346 container numbers: parse, normalise and check.

A number is 3 owner letters, a category letter (U, J or Z), a 6-digit serial and a check digit.
The check digit is the weighted sum of the first ten characters modulo 11 (10 counts as 0), with
letters valued 10..38 skipping multiples of 11.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gated.errors import ContainerNumberError

_LETTER_VALUES: dict[str, int] = {}
_value = 10
for _letter in "ABCDEFGHIJKLMNOPQRSTUVWXYZ":
    if _value % 11 == 0:
        _value += 1
    _LETTER_VALUES[_letter] = _value
    _value += 1

CATEGORIES = frozenset("UJZ")
_SHAPE = re.compile(r"^[A-Z]{3}[UJZ][0-9]{6}[0-9]$")
_SEPARATORS = re.compile(r"[\s\-./]+")


def _char_value(char: str) -> int:
    if char.isdigit():
        return int(char)
    return _LETTER_VALUES[char]


def check_digit(first_ten: str) -> int:
    """The check digit for owner code + category + serial (10 characters)."""
    text = first_ten.upper()
    if len(text) != 10 or not re.fullmatch(r"[A-Z]{4}[0-9]{6}", text):
        raise ContainerNumberError(f"need 4 letters and 6 digits to compute a check digit, got {first_ten!r}")
    total = sum(_char_value(char) << position for position, char in enumerate(text))
    return total % 11 % 10


def normalise(text: str) -> str:
    """Upper-case and strip the spaces, dashes and dots people and cameras put in numbers."""
    return _SEPARATORS.sub("", text.strip().upper())


@dataclass(frozen=True, slots=True)
class ContainerNumber:
    """A well-formed ISO 6346 number. ``check_digit_valid`` is False for numbers read as printed
    whose check digit does not fit (some shipper-owned boxes): they are kept, flagged, and never
    "corrected" into another number."""

    owner: str
    category: str
    serial: str
    check: int
    check_digit_valid: bool

    @classmethod
    def parse(cls, text: str, *, require_valid_check_digit: bool = True) -> ContainerNumber:
        """Parse ``text``; raises ``ContainerNumberError`` when it is not a container number."""
        if not isinstance(text, str):
            raise ContainerNumberError(f"container number must be text, got {type(text).__name__}")
        number = normalise(text)
        if not _SHAPE.fullmatch(number):
            raise ContainerNumberError(
                f"{text!r} is not an ISO 6346 number (3 letters, U/J/Z, 6 digits, check digit)"
            )
        expected = check_digit(number[:10])
        printed = int(number[10])
        if require_valid_check_digit and expected != printed:
            raise ContainerNumberError(f"{number}: check digit is {printed}, ISO 6346 gives {expected}")
        return cls(number[:3], number[3], number[4:10], printed, expected == printed)

    def __str__(self) -> str:
        return f"{self.owner}{self.category}{self.serial}{self.check}"


def is_valid(text: str) -> bool:
    """True when ``text`` is a container number with a fitting check digit."""
    try:
        ContainerNumber.parse(text)
    except ContainerNumberError:
        return False
    return True

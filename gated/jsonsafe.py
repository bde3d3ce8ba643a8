"""The one strict JSON parser for bytes that come from outside (MQTT payloads, file lines).

``json.loads`` alone accepts NaN and Infinity, lone surrogates and duplicate keys, and can be made to
recurse or to convert a huge integer until it raises something other than a ``ValueError`` we expect.
``parse_json`` bounds size and depth before parsing, refuses everything two JSON readers could read
differently, and raises nothing but ``PayloadError`` with a short message saying what is wrong.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from gated.errors import PayloadError

DEFAULT_MAX_BYTES = 8192
DEFAULT_MAX_DEPTH = 16
MAX_INT_DIGITS = 100

_BOM = b"\xef\xbb\xbf"
_JSON_WHITESPACE = " \t\n\r"
_SURROGATE = re.compile("[\ud800-\udfff]")


def parse_json(
    data: bytes | str, *, max_bytes: int = DEFAULT_MAX_BYTES, max_depth: int = DEFAULT_MAX_DEPTH
) -> Any:
    """Parse one JSON document from outside into dict, list, str, int, float, bool or None.

    Raises ``PayloadError`` (and nothing else) when the payload is larger than ``max_bytes`` (as
    UTF-8), not strict UTF-8 or starts with a BOM, nested deeper than ``max_depth``, holds NaN,
    Infinity, a float that overflows, an integer of more than 100 digits, a lone surrogate or a
    duplicate key, or is not exactly one JSON value.
    """
    text = _text(data, max_bytes)
    if not text.strip(_JSON_WHITESPACE):
        raise PayloadError("empty payload")
    _check_depth(text, max_depth)
    try:
        value = json.loads(
            text,
            parse_constant=_reject_constant,
            parse_float=_parse_float,
            parse_int=_parse_int,
            object_pairs_hook=_object,
        )
    except json.JSONDecodeError as error:
        raise PayloadError(f"not JSON: {error.msg} at line {error.lineno} column {error.colno}") from None
    except RecursionError:
        # Only reachable when a caller raised max_depth beyond what the interpreter's stack allows.
        raise PayloadError(f"nested too deep to parse (max_depth {max_depth} is too high)") from None
    _check_strings(value)
    return value


def _text(data: bytes | str, max_bytes: int) -> str:
    """The payload as text, after the size, UTF-8 and BOM checks on its bytes."""
    if isinstance(data, str):
        # Every character is at least one byte: refuse a huge str before encoding it.
        if len(data) > max_bytes:
            raise PayloadError(f"payload is at least {len(data)} bytes, more than {max_bytes}")
        try:
            raw = data.encode("utf-8")
        except UnicodeEncodeError as error:
            raise PayloadError(f"lone surrogate in the text (character {error.start})") from None
    else:
        raw = data
    if len(raw) > max_bytes:
        raise PayloadError(f"payload is {len(raw)} bytes, more than {max_bytes}")
    if raw.startswith(_BOM):
        raise PayloadError("starts with a UTF-8 byte order mark (BOM), which JSON does not allow")
    if isinstance(data, str):
        return data
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise PayloadError(f"not UTF-8 (byte {error.start})") from None


def _check_depth(text: str, max_depth: int) -> None:
    """Refuse nesting deeper than ``max_depth`` in one pass, before json.loads could recurse."""
    depth = 0
    in_string = False
    escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > max_depth:
                raise PayloadError(f"nested deeper than {max_depth} levels")
        elif char in "]}":
            # Unbalanced closers are json.loads's to report; clamping keeps later openers counted.
            depth = max(depth - 1, 0)


def _reject_constant(name: str) -> Any:
    raise PayloadError(f"{name} is not a JSON number")


def _parse_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise PayloadError(f"number {_short(literal)} is out of range")
    return value


def _parse_int(literal: str) -> int:
    digits = len(literal.lstrip("-"))
    # Checked before int(): converting is quadratic, and beyond sys.int_max_str_digits a ValueError.
    if digits > MAX_INT_DIGITS:
        raise PayloadError(f"integer has {digits} digits, more than {MAX_INT_DIGITS}")
    return int(literal)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        # Two readers must never see two different objects in one payload.
        if key in result:
            raise PayloadError(f"duplicate key {_short(key)!r}")
        result[key] = value
    return result


def _check_strings(value: Any) -> None:
    """Refuse a lone surrogate (from a ``\\u`` escape) in any string or key: it cannot be encoded."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise PayloadError("lone surrogate in a string")
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())


def _short(text: str, limit: int = 40) -> str:
    """A piece of the payload short enough for an error message."""
    return text if len(text) <= limit else text[:limit] + "..."

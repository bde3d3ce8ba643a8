from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gated.errors import GatedError, PayloadError
from gated.jsonsafe import DEFAULT_MAX_BYTES, DEFAULT_MAX_DEPTH, parse_json

COMMAND = {
    "schema": "gated.hold/1",
    "id": "cmd-0001",
    "action": "place",
    "container": "CSQU3054383",
    "agency": "customs",
    "hold_type": "inspection",
    "code": 42,
    "note": "Prüfung: 検査 🚚",
    "refs": [["BL-1", 1], ["BL-2", 2]],
}
COMMAND_BYTES = json.dumps(COMMAND).encode()


def _rejected(data: bytes | str, match: str, **limits: int) -> None:
    with pytest.raises(PayloadError, match=match):
        parse_json(data, **limits)


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# -- acceptance


def test_accepts_an_ordinary_hold_command_as_bytes_and_as_text() -> None:
    assert parse_json(COMMAND_BYTES) == COMMAND
    assert parse_json(json.dumps(COMMAND, ensure_ascii=False)) == COMMAND


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('"\\ud83d\\ude00"', "\U0001f600"),  # a valid surrogate pair is one character
        ('{"\\ud83d\\ude9a":"\\u00e9"}', {"\U0001f69a": "é"}),
        ('"Zoll ✓ 税関"', "Zoll ✓ 税関"),
        (' [1, -2.5e3, true, false, null, "", {}] \n', [1, -2500.0, True, False, None, "", {}]),
        ("1" * 100, int("1" * 100)),
        ("1e-400", 0.0),  # underflow is harmless: it is still a finite number
    ],
)
def test_accepts_ordinary_values(text: str, value: Any) -> None:
    assert parse_json(text) == value
    assert parse_json(text.encode()) == value


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    assert parse_json(json.dumps(["[" * 500, '\\"{' * 500])) == ["[" * 500, '\\"{' * 500]


def test_nesting_up_to_the_limit_is_accepted() -> None:
    assert parse_json(_nested(DEFAULT_MAX_DEPTH)) is not None
    assert parse_json('{"a":' * DEFAULT_MAX_DEPTH + "1" + "}" * DEFAULT_MAX_DEPTH) is not None


def test_payload_of_exactly_the_limit_is_accepted() -> None:
    payload = json.dumps("x" * (DEFAULT_MAX_BYTES - 2)).encode()
    assert len(payload) == DEFAULT_MAX_BYTES
    assert parse_json(payload) == "x" * (DEFAULT_MAX_BYTES - 2)


# -- one test per rejection rule


def test_rejects_a_payload_one_byte_over_the_limit() -> None:
    payload = json.dumps("x" * (DEFAULT_MAX_BYTES - 1)).encode()
    _rejected(payload, "payload is 8193 bytes, more than 8192")
    _rejected(b"[1, 2]", "payload is 6 bytes, more than 5", max_bytes=5)


def test_measures_text_as_its_utf8_bytes() -> None:
    text = json.dumps("é" * 4096, ensure_ascii=False)  # 4098 characters, 8194 bytes
    _rejected(text, "payload is 8194 bytes, more than 8192")
    _rejected("x" * 100_000, "more than 8192")


@pytest.mark.parametrize(
    ("payload", "where"),
    [(b'{"a":"\xff"}', 6), (b'"\xc0\xaf"', 1), (b'"\xed\xa0\x80"', 1), (b'"abc\xe2\x82"', 4)],
)
def test_rejects_bytes_that_are_not_utf8(payload: bytes, where: int) -> None:
    _rejected(payload, rf"not UTF-8 \(byte {where}\)")


@pytest.mark.parametrize("payload", [b"\xef\xbb\xbf{}", "\ufeff{}"])
def test_rejects_a_byte_order_mark(payload: bytes | str) -> None:
    _rejected(payload, "byte order mark")


@pytest.mark.parametrize("depth", [DEFAULT_MAX_DEPTH + 1, 988, 100_000])
def test_rejects_deep_nesting_without_recursing(depth: int) -> None:
    started = time.monotonic()
    _rejected(_nested(depth), "nested deeper than 16 levels", max_bytes=1_000_000)
    _rejected('{"a":' * depth, "nested deeper than 16 levels", max_bytes=1_000_000)
    assert time.monotonic() - started < 2.0


def test_stray_closers_do_not_hide_openers() -> None:
    _rejected("]" * 50 + "[" * 50, "nested deeper than 16 levels")


def test_an_unwise_depth_limit_still_ends_in_payload_error() -> None:
    _rejected(_nested(100_000), "nested too deep", max_bytes=1_000_000, max_depth=1_000_000)


@pytest.mark.parametrize(
    ("payload", "name"),
    [("NaN", "NaN"), ("Infinity", "Infinity"), ("-Infinity", "-Infinity"), ('{"dose": [1, NaN]}', "NaN")],
)
def test_rejects_nan_and_infinity(payload: str, name: str) -> None:
    _rejected(payload, f"^{name} is not a JSON number$")
    _rejected(payload.encode(), f"^{name} is not a JSON number$")


@pytest.mark.parametrize("payload", ["1e400", "-1e400", '{"t": 1.5e999}', "[0.1E+99999999999999]"])
def test_rejects_floats_that_overflow(payload: str) -> None:
    _rejected(payload, r"^number .* is out of range$")


def test_message_names_the_overflowing_number() -> None:
    _rejected("1e400", r"^number 1e400 is out of range$")


@pytest.mark.parametrize("digits", [101, 5000, DEFAULT_MAX_BYTES - 1])
def test_rejects_integers_too_long_to_convert(digits: int) -> None:
    # 5000 digits is beyond sys.int_max_str_digits, where int() itself raises ValueError.
    _rejected("-" + "9" * digits, f"integer has {digits} digits, more than 100")


@pytest.mark.parametrize(
    "payload",
    ['{"a":"\\ud800"}', '{"\\udfff":1}', '"\\udc00"', '["ok", "x\\ud83d"]', '"\\ude00\\ud83d"'],
)
def test_rejects_lone_surrogates(payload: str) -> None:
    _rejected(payload, "^lone surrogate in a string$")
    _rejected(payload.encode(), "^lone surrogate in a string$")


def test_rejects_text_that_holds_a_lone_surrogate_itself() -> None:
    _rejected('{"a":"\ud800"}', "lone surrogate")


@pytest.mark.parametrize(
    "payload", ['{"id":"a","id":"b"}', '{"a":{"id":1,"id":1}}', '[{"x":1},{"id":1,"y":2,"id":1}]']
)
def test_rejects_duplicate_keys(payload: str) -> None:
    _rejected(payload, "^duplicate key 'id'$")


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("", "empty payload"),
        (" \n\t\r", "empty payload"),
        ("{} x", "not JSON: Extra data at line 1 column 4"),
        ("{}{}", "not JSON: Extra data"),
        ("{'a': 1}", "not JSON: Expecting property name enclosed in double quotes"),
        ("[1,]", "not JSON: "),
        ('"\x00"', "not JSON: Invalid control character"),
        ("\u3000", "not JSON: Expecting value at line 1 column 1"),
    ],
)
def test_rejects_what_is_not_exactly_one_json_value(payload: str, message: str) -> None:
    _rejected(payload, message)


def test_payload_error_is_a_gated_error() -> None:
    with pytest.raises(GatedError):
        parse_json(b"NaN")


# -- properties


def _only_payload_errors(data: bytes | str, **limits: int) -> None:
    with contextlib.suppress(PayloadError):
        parse_json(data, **limits)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_nothing_but_payload_error(data: bytes) -> None:
    _only_payload_errors(data)
    _only_payload_errors(data, max_bytes=50, max_depth=2)


JSONISH = st.characters() | st.sampled_from('[]{}",:-+.0123456789eE\\utrfalsnI \ud800\udfff\ufeff')


@settings(max_examples=300)
@given(st.text() | st.text(alphabet=JSONISH, max_size=200))
def test_arbitrary_text_raises_nothing_but_payload_error(text: str) -> None:
    _only_payload_errors(text)
    _only_payload_errors(text, max_bytes=50, max_depth=2)


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**99), max_value=10**99)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
).filter(lambda value: _depth(value) <= DEFAULT_MAX_DEPTH)


@settings(max_examples=200)
@given(VALUES, st.booleans(), st.booleans())
def test_json_dumps_output_round_trips(value: Any, ensure_ascii: bool, as_bytes: bool) -> None:
    text = json.dumps(value, ensure_ascii=ensure_ascii)
    assume(len(text.encode()) <= DEFAULT_MAX_BYTES)
    assert parse_json(text.encode() if as_bytes else text) == value


MUTATIONS = st.lists(
    st.tuples(st.sampled_from(["flip", "insert", "delete"]), st.integers(0, 10_000), st.integers(0, 255)),
    min_size=1,
    max_size=4,
)


@settings(max_examples=300)
@given(MUTATIONS)
def test_mutated_commands_raise_nothing_but_payload_error(mutations: list[tuple[str, int, int]]) -> None:
    payload = bytearray(COMMAND_BYTES)
    for kind, position, byte in mutations:
        at = position % (len(payload) + 1)
        if kind == "insert":
            payload.insert(at, byte)
        elif payload and at < len(payload):
            if kind == "flip":
                payload[at] ^= 1 << (byte % 8)
            else:
                del payload[at]
    _only_payload_errors(bytes(payload))

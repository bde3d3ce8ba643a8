from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gated.errors import ContainerNumberError
from gated.iso6346 import ContainerNumber, check_digit, is_valid, normalise

OWNER = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=3, max_size=3)
CATEGORY = st.sampled_from("UJZ")
SERIAL = st.text(alphabet="0123456789", min_size=6, max_size=6)


@pytest.mark.parametrize("number", ["CSQU3054383", "BICU1234565", "ABCU1234560", "MSKU4135329"])
def test_known_vectors_are_valid(number: str) -> None:
    parsed = ContainerNumber.parse(number)
    assert str(parsed) == number
    assert parsed.check_digit_valid


def test_check_digit_of_known_vector() -> None:
    assert check_digit("CSQU305438") == 3
    assert check_digit("ABCU123456") == 0  # remainder 10 counts as 0


@pytest.mark.parametrize("text", ["csqu 305438-3", " CSQU.305438.3 ", "CSQU-3054383"])
def test_normalises_what_people_and_cameras_write(text: str) -> None:
    assert str(ContainerNumber.parse(text)) == "CSQU3054383"


@pytest.mark.parametrize(
    "text", ["", "CSQU305438", "CSQX3054383", "C5QU3054383", "CSQU30543833", "CSQU3054384", "ÄSQU3054383"]
)
def test_rejects_non_numbers_and_wrong_check_digits(text: str) -> None:
    with pytest.raises(ContainerNumberError):
        ContainerNumber.parse(text)


def test_wrong_check_digit_is_kept_as_printed_when_asked() -> None:
    parsed = ContainerNumber.parse("CSQU3054384", require_valid_check_digit=False)
    assert str(parsed) == "CSQU3054384"
    assert not parsed.check_digit_valid


@given(OWNER, CATEGORY, SERIAL)
def test_computed_check_digit_always_validates(owner: str, category: str, serial: str) -> None:
    first_ten = owner + category + serial
    number = first_ten + str(check_digit(first_ten))
    assert is_valid(number)
    assert str(ContainerNumber.parse(number.lower())) == number


@given(OWNER, CATEGORY, SERIAL, st.integers(0, 9))
def test_exactly_one_check_digit_fits(owner: str, category: str, serial: str, digit: int) -> None:
    first_ten = owner + category + serial
    assert is_valid(first_ten + str(digit)) == (digit == check_digit(first_ten))


@given(st.text(max_size=30))
def test_arbitrary_text_raises_only_our_error(text: str) -> None:
    with contextlib.suppress(ContainerNumberError):
        ContainerNumber.parse(text)


@given(OWNER, CATEGORY, SERIAL)
def test_normalise_is_idempotent(owner: str, category: str, serial: str) -> None:
    text = f" {owner.lower()} {category}-{serial} "
    assert normalise(normalise(text)) == normalise(text)

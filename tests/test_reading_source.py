"""A reading's source is a ``Source`` member, and the payload still carries it as plain text."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from gated.model import Kind, Reading, Source

NOW = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize("source", list(Source))
def test_every_source_goes_out_as_its_text_and_comes_back_as_its_member(source: Source) -> None:
    reading = Reading("lane-1", Kind.RPM, "rpm-1", source, True, NOW)
    body = json.loads(json.dumps(reading.body()))
    assert body["source"] == source.value
    back = Reading.from_body(body)
    assert back.source is source
    assert back == reading


def test_a_plain_string_becomes_its_member() -> None:
    reading = Reading("lane-1", Kind.RPM, "rpm-1", "tamper", True, NOW)  # type: ignore[arg-type]
    assert reading.source is Source.TAMPER


def test_an_unknown_source_is_refused_where_the_reading_is_made() -> None:
    with pytest.raises(ValueError, match="unknown reading source 'temperature'"):
        Reading("lane-1", Kind.RPM, "rpm-1", "temperature", 21.5, NOW)  # type: ignore[arg-type]

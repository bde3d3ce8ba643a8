"""The driver's credential in the gate decision: checked against a fresh cancelled-card list;
a lane that requires one never releases without it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from gated.clock import ManualClock
from gated.config import validate
from gated.credentials import CancelledCardList
from gated.db import open_engine
from gated.holds import HoldStore
from gated.model import Decision, DeviceState, Kind, Reading, Source
from gated.pipeline import Pipeline
from gated.store import Store
from tests.customs import confirm_hold_list

BOX = "MSKU4135329"
GOOD_CARD = {"card_id": "0123456789abcdef", "expires": "2030-01-01", "authenticated": True}
CANCELLED_CARD = {"card_id": "fedcba9876543210", "expires": "2030-01-01", "authenticated": True}


def gate(
    tmp_path: Path, clock: ManualClock, *, list_age: timedelta | None
) -> tuple[Pipeline, list[Decision]]:
    config = validate(
        {
            "site": "cred",
            "credentials": {"security_level": "raised"},
            "holds": {"max_age_seconds": 3600},
            "storage": {"database": str(tmp_path / "g.db")},
            "lanes": [
                {
                    "id": "lane-1",
                    "require": ["ocr", "rpm", "credential"],
                    "settle_seconds": 0.5,
                    "devices": [
                        {"id": "ocr-1", "driver": "ocr-camera", "host": "127.0.0.1", "port": 9},
                        {"id": "rpm-1", "driver": "rpm-modbus", "host": "127.0.0.1", "profile": "x.toml"},
                        {"id": "card-1", "driver": "credential-serial", "url": "/dev/null"},
                    ],
                }
            ],
        }
    )
    engine = open_engine(tmp_path / "g.db")
    holds = HoldStore(engine, clock)
    confirm_hold_list(holds, tmp_path)
    cards = CancelledCardList(engine, clock)
    if list_age is not None:
        listing = tmp_path / "cancelled.csv"
        listing.write_text(f"{CANCELLED_CARD['card_id']},revoked\n", encoding="utf-8")
        cards.import_file(listing, list_date=clock.now() - list_age)
    pipeline = Pipeline(
        config, Store(engine, site="cred", node="n", clock=clock), holds, clock, credentials=cards
    )
    decided: list[Decision] = []
    pipeline.listeners.append(lambda _visit, decisions: decided.extend(decisions))
    for device in ("ocr-1", "rpm-1", "card-1"):
        pipeline.device_status("lane-1", device, DeviceState.ONLINE, "connected")
    pipeline.step()
    return pipeline, decided


def truck(pipeline: Pipeline, clock: ManualClock, card: dict[str, Any] | None) -> None:
    now = clock.now()
    if card is not None:
        pipeline.reading(Reading("lane-1", Kind.CREDENTIAL, "card-1", Source.CARD, card, now))
    pipeline.reading(Reading("lane-1", Kind.OCR, "ocr-1", Source.CONTAINER_NUMBER, BOX, now, confidence=0.97))
    pipeline.reading(Reading("lane-1", Kind.OCR, "ocr-1", Source.PASSAGE_END, 1, now))
    pipeline.reading(Reading("lane-1", Kind.RPM, "rpm-1", Source.SCREENING, "clear", now))
    pipeline.step()
    clock.advance(61.0 if card is None else 1.0)  # without a card the visit can only time out
    pipeline.step()


@pytest.mark.parametrize(
    ("card", "list_age", "outcome", "code"),
    [
        (GOOD_CARD, timedelta(hours=2), "RELEASE", "CLEAR"),
        (CANCELLED_CARD, timedelta(hours=2), "MANUAL_REVIEW", "CARD_CANCELLED"),
        (GOOD_CARD, timedelta(days=2), "MANUAL_REVIEW", "CANCELLED_LIST_STALE"),  # raised level: 1 day
        (GOOD_CARD, None, "MANUAL_REVIEW", "CANCELLED_LIST_MISSING"),
        (
            {**GOOD_CARD, "authenticated": False},
            timedelta(hours=2),
            "MANUAL_REVIEW",
            "CARD_NOT_AUTHENTICATED",
        ),
        (None, timedelta(hours=2), "MANUAL_REVIEW", "CREDENTIAL_MISSING"),
    ],
)
def test_credential_in_the_decision(
    tmp_path: Path, card: dict[str, Any] | None, list_age: timedelta | None, outcome: str, code: str
) -> None:
    clock = ManualClock()
    pipeline, decided = gate(tmp_path, clock, list_age=list_age)
    truck(pipeline, clock, card)
    [decision] = decided
    assert str(decision.outcome) == outcome
    assert code in {reason.code for reason in decision.reasons}


def test_the_visit_waits_for_the_credential(tmp_path: Path) -> None:
    clock = ManualClock()
    pipeline, decided = gate(tmp_path, clock, list_age=timedelta(hours=1))
    now = clock.now()
    pipeline.reading(Reading("lane-1", Kind.OCR, "ocr-1", Source.CONTAINER_NUMBER, BOX, now, confidence=0.97))
    pipeline.reading(Reading("lane-1", Kind.OCR, "ocr-1", Source.PASSAGE_END, 1, now))
    pipeline.reading(Reading("lane-1", Kind.RPM, "rpm-1", Source.SCREENING, "clear", now))
    clock.advance(5.0)
    pipeline.step()
    assert decided == []  # the lane requires a credential: not complete yet
    pipeline.reading(Reading("lane-1", Kind.CREDENTIAL, "card-1", Source.CARD, GOOD_CARD, clock.now()))
    pipeline.step()
    clock.advance(1.0)
    pipeline.step()
    assert [str(d.outcome) for d in decided] == ["RELEASE"]

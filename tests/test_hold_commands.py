"""Customs' commands from MQTT, on real SQLite: what verifies, what is refused before it reaches the
hold list, and how a flood is paced, counted and kept apart from everything else."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from gated.clock import ManualClock
from gated.config import HoldsConfig
from gated.db import open_engine
from gated.hold_commands import MAX_COMMAND_BYTES, CommandVerifier, HoldCommandWorker, customs_keys
from gated.holds import HoldCommandResult, HoldStore, VerifiedCommand
from gated.messages import Topics
from gated.payload_schemas import validate_payload
from gated.signing import sign_command
from gated.store import Store, audit
from tests.customs import KEY_ID, PRIVATE_KEY, ROGUE_KEY, command, keys_config, signed

HELD = "CSQU3054383"


def holds_config(**extra: Any) -> HoldsConfig:
    return HoldsConfig.model_validate({"max_age_seconds": 600, "customs_keys": keys_config(), **extra})


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def verifier(clock: ManualClock) -> CommandVerifier:
    return CommandVerifier(customs_keys(holds_config()), clock, max_age_seconds=300)


def raw(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def test_a_signed_current_command_verifies(verifier: CommandVerifier, clock: ManualClock) -> None:
    payload = signed(
        command("place", id="c-1", container=HELD, agency="CBP", hold_type="customs"), ts=clock.now()
    )
    outcome = verifier.verify(raw(payload))
    assert isinstance(outcome, VerifiedCommand)
    assert (outcome.key_id, outcome.issued_at, outcome.agencies) == ("cbp-test", clock.now(), {"CBP", "USDA"})


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda now: command("place", id="c", container=HELD, agency="CBP", hold_type="x"), "unsigned"),
        (
            lambda now: {**signed(command("sync", id="c", agency="CBP", count=0), ts=now), "key": "other"},
            "unknown key",
        ),
        (
            lambda now: signed(command("sync", id="c", agency="CBP", count=0), ts=now, key=ROGUE_KEY),
            "does not verify",
        ),
        (
            lambda now: {**signed(command("sync", id="c", agency="CBP", count=0), ts=now), "count": 1},
            "does not verify",
        ),
        (
            lambda now: signed(
                command("sync", id="c", agency="CBP", count=0), ts=now - timedelta(seconds=301)
            ),
            "too old",
        ),
        (
            lambda now: signed(command("sync", id="c", agency="CBP", count=0), ts=now + timedelta(minutes=5)),
            "future",
        ),
        (
            lambda now: {**command("sync", id="c"), "ts": "yesterday", "key": "cbp-test", "sig": "x"},
            "does not verify",
        ),
    ],
)
def test_what_is_refused_before_the_hold_list(
    verifier: CommandVerifier, clock: ManualClock, make: Any, reason: str
) -> None:
    outcome = verifier.verify(raw(make(clock.now())))
    assert isinstance(outcome, HoldCommandResult)
    assert not outcome.applied and reason in outcome.reason


def test_a_hostile_id_is_never_echoed(verifier: CommandVerifier) -> None:
    for hostile in ("x\nINFO decision outcome=RELEASE", "y" * 500, 7):
        outcome = verifier.verify(raw({"id": hostile, "action": "place"}))
        assert isinstance(outcome, HoldCommandResult) and outcome.command_id is None


@settings(max_examples=400, deadline=None)
@given(payload=st.binary(max_size=400) | st.text(max_size=200).map(str.encode))
def test_arbitrary_bytes_are_answered_never_raised(payload: bytes) -> None:
    verifier = CommandVerifier(customs_keys(holds_config()), ManualClock(), max_age_seconds=300)
    outcome = verifier.verify(payload)
    assert isinstance(outcome, HoldCommandResult) and not outcome.applied and outcome.reason
    json.dumps(outcome.to_json(), allow_nan=False).encode()


# -- the worker: one transaction per command, paced, counted ---------------------------------------


@pytest.fixture
def world(tmp_path: Path, clock: ManualClock) -> Iterator[tuple[HoldStore, Store]]:
    engine = open_engine(tmp_path / "g.db")
    yield HoldStore(engine, clock), Store(engine, site="s", node="n", clock=clock)
    engine.dispose()


def worker(world: tuple[HoldStore, Store], clock: ManualClock, **extra: Any) -> HoldCommandWorker:
    holds, store = world
    return HoldCommandWorker(holds, store, holds_config(**extra), Topics("s"), ["lane-1"], clock)


def published(store: Store) -> list[tuple[str, dict[str, Any]]]:
    return [(row.topic, json.loads(row.payload)) for row in store.pending(0, 100_000)]


def test_an_applied_command_its_ack_and_its_audit_are_stored_together(
    world: tuple[HoldStore, Store], clock: ManualClock
) -> None:
    holds, store = world
    commands = worker(world, clock)
    commands.offer(
        raw(
            signed(
                command("place", id="c-1", container=HELD, agency="CBP", hold_type="customs"), ts=clock.now()
            )
        )
    )
    commands.drain()
    topics = [topic for topic, _ in published(store)]
    assert topics == ["gated/v1/s/holds/ack", "gated/v1/s/holds/state"]
    ack = published(store)[0][1]
    assert (ack["command"], ack["key"], ack["applied"]) == ("c-1", "cbp-test", True)
    with store.engine.connect() as conn:
        assert list(conn.execute(select(audit.c.actor, audit.c.subject))) == [("key:cbp-test", "c-1")]
    assert len(holds.active_holds_for(HELD)) == 1


def test_an_oversized_command_is_answered_without_being_read(
    world: tuple[HoldStore, Store], clock: ManualClock
) -> None:
    _holds, store = world
    commands = worker(world, clock)
    commands.offer(b'{"id": "' + b"x" * (10 * MAX_COMMAND_BYTES) + b'"}')
    commands.drain()
    [(_topic, ack)] = published(store)
    assert ack["applied"] is False and "more than 8192" in ack["reason"]


def test_a_flood_is_paced_counted_and_cannot_crowd_out_authentic_commands(
    world: tuple[HoldStore, Store], clock: ManualClock
) -> None:
    holds, store = world
    commands = worker(world, clock, command_queue=50, commands_per_second=5)
    for index in range(200):  # junk, far more than the inbox holds
        commands.offer(raw(command("release", id=f"junk-{index}", container=HELD)))
    assert commands.stats.dropped == 150
    while commands.step():
        pass
    assert commands.stats.rejected == 50
    alarms = [body for topic, body in published(store) if topic.endswith("/alarm")]
    assert [a["alarm"] for a in alarms] == ["hold_command_flood"] and "150 dropped" in alarms[0]["text"]
    answered = [ack for topic, ack in published(store) if topic.endswith("/holds/ack")]
    assert len(answered) == 50 - commands.stats.unanswered == 20  # rejections are answered at a pace
    # Authentic commands are applied at their own pace, at most a burst at once.
    for index in range(40):
        commands.offer(
            raw(
                signed(
                    command("place", id=f"p-{index}", container=HELD, agency="CBP", hold_type=f"t{index}"),
                    ts=clock.now(),
                )
            )
        )
    while commands.step():
        pass
    assert commands.stats.applied == 25  # a burst of 25, then 5 a second (the clock stands still)
    commands.drain()
    assert commands.stats.applied == 40 and len(holds.active_holds_for(HELD)) == 40
    for topic, body in published(store):
        assert validate_payload(topic, body) == [], topic


def test_a_sync_that_does_not_match_raises_an_alarm_on_every_lane(
    world: tuple[HoldStore, Store], clock: ManualClock
) -> None:
    holds, store = world
    commands = worker(world, clock)
    commands.offer(raw(signed(command("sync", id="s-1", agency="CBP", count=3), ts=clock.now())))
    commands.drain()
    alarms = [body for topic, body in published(store) if topic.endswith("/alarm")]
    assert [(a["lane"], a["alarm"]) for a in alarms] == [("lane-1", "hold_list_out_of_sync")]
    for topic, body in published(store):
        assert validate_payload(topic, body) == [], topic
    assert holds.state().confirmed_at is None


@pytest.mark.parametrize(
    "ts", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2026-12-04T15:00:00", "yesterday", ""]
)
def test_a_signed_command_with_an_impossible_time_is_refused(verifier: CommandVerifier, ts: str) -> None:
    payload = _resign({**command("sync", id="c", agency="CBP", count=0), "ts": ts})
    outcome = verifier.verify(raw(payload))
    assert isinstance(outcome, HoldCommandResult) and "ts must be" in outcome.reason


def _resign(payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` signed as it is, its ``ts`` included (``signed`` would set a fresh one)."""
    return sign_command({k: v for k, v in payload.items() if k not in ("sig", "key")}, PRIVATE_KEY, KEY_ID)

"""What the pipeline keeps about one lane between readings: its open visit, its devices' state,
and the facts of the open visit that the decision needs but the readings do not carry (a device
that went offline or reported tamper meanwhile, readings that were dropped).

A visit set aside to wait for its OCR (``gated.correlator``) keeps its own facts: what went
offline or reported tamper while it was open, and anything more that does while it waits; the next
truck's visit starts afresh.

One ``LaneState`` per lane, owned by the pipeline thread (not thread-safe).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from drivers.ocr_frames import VISIT_TRIGGERS
from gated.clock import Clock
from gated.config import DEVICE_KINDS, LaneConfig
from gated.correlator import LaneCorrelator, LaneRules
from gated.model import DeviceState
from gated.policy import PolicySettings


@dataclass(slots=True)
class LaneState:
    """One lane's state in the pipeline."""

    correlator: LaneCorrelator
    policy: PolicySettings
    require_credential: bool
    device_kinds: dict[str, str]
    """Each device of the lane (config order) and its kind."""
    device_states: dict[str, tuple[DeviceState, str]]
    """Each device's last reported state and detail (config order)."""
    offline_seen: set[str] = field(default_factory=set)
    """Devices that were not online at some point of the open visit."""
    tampered: set[str] = field(default_factory=set)
    """Devices reporting tamper now."""
    tamper_seen: set[str] = field(default_factory=set)
    """Devices that reported tamper at some point of the open visit."""
    dropped_until: datetime | None = None
    """Readings of the lane were dropped: visits opened before this are not released."""
    waiting_facts: dict[str, tuple[set[str], set[str]]] = field(default_factory=dict)
    """Each visit waiting for its OCR: the devices offline and those that reported tamper during it."""

    @classmethod
    def for_lane(
        cls, lane: LaneConfig, clock: Clock, *, hold_list_max_age_seconds: float | None
    ) -> LaneState:
        rules = LaneRules(
            lane=lane.id,
            require=frozenset(lane.require),
            visit_timeout=lane.visit_timeout_seconds,
            settle=lane.settle_seconds,
            ocr_wait=lane.ocr_wait_seconds,
            named_readers=frozenset(device.id for device in lane.devices if device.driver == "ocr-frames"),
            named_triggers=VISIT_TRIGGERS,
        )
        policy = PolicySettings(
            hold_list_max_age_seconds=hold_list_max_age_seconds, require_rfid="rfid" in lane.require
        )
        return cls(
            correlator=LaneCorrelator(rules, clock),
            policy=policy,
            require_credential="credential" in lane.require,
            device_kinds={device.id: DEVICE_KINDS[device.driver] for device in lane.devices},
            device_states={device.id: (DeviceState.OFFLINE, "not connected yet") for device in lane.devices},
        )

    def offline(self) -> list[str]:
        """The lane's devices that are offline. A degraded device (a camera with one of its views
        down) still reports what it sees, each reading with its own quality, so it is not one."""
        return sorted(
            device for device, (state, _) in self.device_states.items() if state is DeviceState.OFFLINE
        )

    def visit_opened(self) -> None:
        """A visit opened: what is wrong now is what is wrong during it, so far. A visit the
        correlator has just set aside to wait for its OCR keeps what was wrong during it."""
        waiting = self.correlator.waiting
        for visit in waiting:
            if visit not in self.waiting_facts:
                self.waiting_facts[visit] = (set(self.offline_seen), set(self.tamper_seen))
        self.waiting_facts = {visit: facts for visit, facts in self.waiting_facts.items() if visit in waiting}
        self.offline_seen = set(self.offline())
        self.tamper_seen = set(self.tampered)

    def went_offline(self, device: str) -> None:
        """``device`` reported offline: the open visit and every waiting one saw it."""
        self.offline_seen.add(device)
        for offline, _ in self.waiting_facts.values():
            offline.add(device)

    def tamper(self, device: str, on: bool) -> None:
        if on:
            self.tampered.add(device)
            self.tamper_seen.add(device)
            for _, tampered in self.waiting_facts.values():
                tampered.add(device)
        else:
            self.tampered.discard(device)

    def offline_during(self, visit: str | None = None) -> set[str]:
        """Devices offline at some point of ``visit`` (default: the open one), or now."""
        seen = self.waiting_facts[visit][0] if visit in self.waiting_facts else self.offline_seen
        return seen | set(self.offline())

    def tampered_during(self, visit: str | None = None) -> list[str]:
        """Devices that reported tamper at some point of ``visit`` (default: the open one), or do now."""
        seen = self.waiting_facts[visit][1] if visit in self.waiting_facts else self.tamper_seen
        return sorted(seen | self.tampered)

    def readings_dropped_before(self, opened_at: datetime) -> bool:
        """Were readings dropped in the window that taints a visit opened at ``opened_at``?"""
        return self.dropped_until is not None and opened_at < self.dropped_until

"""What the pipeline keeps about one lane between readings: its open visit, its devices' state,
and the facts of the open visit that the decision needs but the readings do not carry (a device
that went offline or reported tamper meanwhile, readings that were dropped).

One ``LaneState`` per lane, owned by the pipeline thread (not thread-safe).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

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

    @classmethod
    def for_lane(
        cls, lane: LaneConfig, clock: Clock, *, hold_list_max_age_seconds: float | None
    ) -> LaneState:
        rules = LaneRules(
            lane=lane.id,
            require=frozenset(lane.require),
            visit_timeout=lane.visit_timeout_seconds,
            settle=lane.settle_seconds,
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
        """A visit opened: what is wrong now is what is wrong during it, so far."""
        self.offline_seen = set(self.offline())
        self.tamper_seen = set(self.tampered)

    def tamper(self, device: str, on: bool) -> None:
        if on:
            self.tampered.add(device)
            self.tamper_seen.add(device)
        else:
            self.tampered.discard(device)

    def offline_during(self) -> set[str]:
        """Devices offline at some point of the open visit, or now."""
        return self.offline_seen | set(self.offline())

    def tampered_during(self) -> list[str]:
        """Devices that reported tamper at some point of the open visit, or do now."""
        return sorted(self.tamper_seen | self.tampered)

    def readings_dropped_before(self, opened_at: datetime) -> bool:
        """Were readings dropped in the window that taints a visit opened at ``opened_at``?"""
        return self.dropped_until is not None and opened_at < self.dropped_until

"""Prometheus metrics of the daemon, served over HTTP when ``[metrics] listen`` is set.

One registry per daemon (not prometheus_client's global one), so several daemons or tests in one
process never share a number. Events are counted where they happen, one labelled update each (O(1),
no I/O). What is state rather than an event (the outbox backlog, device states, the hold list's age,
the bad-input counters the parts already keep) is read only when Prometheus scrapes, by
``StateCollector``, on the HTTP server's thread: the pipeline pays nothing for it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError

from gated.config import listen_address
from gated.errors import ConfigError, GatedError
from gated.model import DeviceState

if TYPE_CHECKING:
    from gated.clock import Clock
    from gated.hold_commands import HoldCommandWorker
    from gated.holds import HoldStore
    from gated.pipeline import Pipeline
    from gated.publisher import MqttPublisher
    from gated.store import Store

log = logging.getLogger(__name__)

# From a visit's last reading to its decision stored: the settle time (1 s by default) and more.
DECISION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 120.0)
# One frame through OCR on a gate PC: RapidOCR ~0.3 s, EasyOCR ~3.4 s, large photos slower.
OCR_FRAME_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0)


class Metrics:
    """The metric objects of one daemon and the functions that record them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._readings = Counter(
            "gated_readings",
            "Readings the pipeline took in, per device.",
            ("lane", "device", "kind"),
            registry=self.registry,
        )
        self._decision_latency = Histogram(
            "gated_decision_latency_seconds",
            "Seconds from a visit's last reading to its decision stored, per lane and outcome.",
            ("lane", "outcome"),
            buckets=DECISION_BUCKETS,
            registry=self.registry,
        )
        self._reading_counters: dict[tuple[str, str, str], Counter] = {}
        self._ocr_queue = Gauge(
            "gated_ocr_queue_depth",
            "Frames of a camera waiting for OCR.",
            ("lane", "device"),
            registry=self.registry,
        )
        self._ocr_frame = Histogram(
            "gated_ocr_frame_seconds",
            "Seconds to read one frame with OCR, per camera.",
            ("lane", "device"),
            buckets=OCR_FRAME_BUCKETS,
            registry=self.registry,
        )

    def reading(self, lane: str, device: str, kind: str) -> None:
        """One reading taken in by the pipeline."""
        key = (lane, device, kind)
        child = self._reading_counters.get(key)
        if child is None:
            # labels() takes a lock and checks its arguments: once per device, not per reading.
            child = self._reading_counters[key] = self._readings.labels(lane, device, kind)
        child.inc()

    def decision(self, lane: str, outcome: str, seconds: float) -> None:
        """One decision stored, ``seconds`` after the last reading of its visit."""
        self._decision_latency.labels(lane, outcome).observe(max(0.0, seconds))

    def ocr_queue_depth(self, lane: str, device: str, frames: int) -> None:
        """How many frames of this camera wait for OCR now."""
        self._ocr_queue.labels(lane, device).set(frames)

    def ocr_frame(self, lane: str, device: str, seconds: float) -> None:
        """One frame of this camera read by OCR in ``seconds``."""
        self._ocr_frame.labels(lane, device).observe(seconds)

    def watch(self, state: DaemonState) -> None:
        """Export the daemon's state (read at each scrape)."""
        self.registry.register(StateCollector(state))


@dataclass(frozen=True, slots=True)
class DaemonState:
    """The parts of a daemon whose state is exported."""

    pipeline: Pipeline
    store: Store
    holds: HoldStore
    publisher: MqttPublisher
    commands: HoldCommandWorker
    clock: Clock


class StateCollector(Collector):
    """Reads the daemon's state when scraped. The database parts (outbox, hold list) are left out
    of a scrape when the database cannot be read; ``gated_storage_ok`` tells that anyway."""

    def __init__(self, state: DaemonState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        yield from self._devices()
        yield from self._bad_input()
        pipeline, publisher = self.state.pipeline, self.state.publisher
        yield _gauge(
            "gated_storage_ok", "1 while the database stores the pipeline's work.", pipeline.storage_ok
        )
        yield _gauge("gated_mqtt_connected", "1 while connected to the MQTT broker.", publisher.connected)
        try:
            yield from self._outbox()
            yield from self._hold_list()
        except (GatedError, SQLAlchemyError) as error:
            log.debug("metrics: cannot read the database: %s", error)

    def _devices(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "gated_device_state",
            "1 for the state each device is in (online, degraded, offline), 0 for the others.",
            labels=("lane", "device", "state"),
        )
        for lane_id, lane in self.state.pipeline.lanes.items():
            # Keys are fixed at start and values replaced whole: safe to read from this thread.
            for device, (state, _) in list(lane.device_states.items()):
                for each in DeviceState:
                    family.add_metric((lane_id, device, str(each)), 1.0 if state is each else 0.0)
        yield family

    def _bad_input(self) -> Iterator[Metric]:
        pipeline, publisher, commands = self.state.pipeline, self.state.publisher, self.state.commands
        frames = CounterMetricFamily(
            "gated_bad_frames",
            "Malformed frames or payloads from a device, dropped by its driver.",
            labels=("lane", "device"),
        )
        for key, count in list(pipeline.stats.frame_errors.items()):
            lane, _, device = key.partition("/")
            frames.add_metric((lane, device), count)
        yield frames
        yield _counter(
            "gated_dropped_inputs",
            "Readings and frame errors dropped because the pipeline was too far behind.",
            pipeline.stats.dropped_inputs,
        )
        yield _counter(
            "gated_hold_commands_rejected",
            "Hold commands refused (signature, age, content).",
            commands.stats.rejected,
        )
        yield _counter(
            "gated_hold_commands_dropped",
            "Hold commands dropped: their queue was full.",
            commands.stats.dropped,
        )
        yield _counter(
            "gated_publish_refused", "Messages the MQTT broker refused (its ACL).", publisher.stats.refused
        )
        yield _counter(
            "gated_dropped_reading_messages",
            "Reading messages dropped from the outbox beyond its cap (the broker was away too long).",
            publisher.stats.dropped_readings,
        )
        yield _counter(
            "gated_storage_failures",
            "Pipeline batches the database failed to store.",
            pipeline.stats.storage_failures,
        )

    def _outbox(self) -> Iterator[Metric]:
        depth, oldest = self.state.store.outbox_backlog()
        age = 0.0 if oldest is None else max(0.0, (self.state.clock.now() - oldest).total_seconds())
        yield _gauge("gated_outbox_backlog", "Messages stored but not yet acknowledged by the broker.", depth)
        yield _gauge(
            "gated_outbox_oldest_age_seconds", "Age of the oldest unacknowledged message (0: none).", age
        )

    def _hold_list(self) -> Iterator[Metric]:
        hold_list = self.state.holds.state()
        yield _gauge(
            "gated_hold_list_loaded", "1 once an authenticated full hold list was loaded.", hold_list.loaded
        )
        yield _gauge("gated_hold_list_active_holds", "Active holds in the list.", hold_list.active)
        if hold_list.confirmed_at is not None:
            age = (self.state.clock.now() - hold_list.confirmed_at).total_seconds()
            yield _gauge(
                "gated_hold_list_age_seconds",
                "Seconds since customs' sync or an import last confirmed the hold list (absent: never).",
                age,
            )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=float(value))


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=float(value))


class MetricsServer:
    """The HTTP endpoint Prometheus scrapes (any path answers with the metrics, ``/metrics`` too)."""

    def __init__(self, registry: CollectorRegistry, listen: str) -> None:
        host, port = listen_address(listen)
        try:
            self._httpd, self._thread = start_http_server(port, addr=host, registry=registry)
        except OSError as error:
            # A bind that fails is the config's fault (address not on this machine, port taken).
            reason = error.strerror or str(error)
            raise ConfigError([f"metrics.listen: cannot listen on {listen}: {reason}"]) from None
        log.info("metrics on http://%s/metrics", listen)

    @property
    def server(self) -> WSGIServer:
        return self._httpd

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not threading.current_thread():
            self._thread.join(5.0)

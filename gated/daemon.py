"""The daemon: builds the pipeline, the drivers and the publisher from a config and runs them.

Threads: one per driver, the pipeline thread, the hold commands' thread, and the publisher (plus
paho's network thread). Stopping is orderly: drivers stop, the pipeline decides what is still open
and stores it, the publisher flushes the outbox and announces the node offline. An unexpected error
in the pipeline or the hold commands' thread closes every lane and ends ``gated run`` with exit 1.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from drivers.barrier_modbus import BarrierModbusDevice, BarrierState
from drivers.base import Driver
from drivers.ocr_frames import FramesCameraDriver
from drivers.printer_escpos import PrinterEscposDevice
from gated.alerts import AlertDesk, WebhookSender
from gated.anchor import AuditAnchor
from gated.barrier_control import BarrierControl, PassPrinter
from gated.clock import Clock, SystemClock
from gated.config import GateConfig, device_problems, read_password_file
from gated.credentials import CancelledCardList
from gated.db import open_engine
from gated.devices import build_barrier, build_driver, build_printer, is_reader
from gated.errors import ConfigError
from gated.evidence import EvidenceStore
from gated.failover import FailoverHolds, FailoverStore, HoldReplica
from gated.hold_commands import HoldCommandWorker
from gated.holds import HoldStore
from gated.leases import LaneLeases
from gated.messages import ALARM, Topics, alarm_message, lane_status_message
from gated.metrics import DaemonState, Metrics, MetricsServer
from gated.model import Decision, Visit
from gated.ownership import LaneOwnership
from gated.pipeline import Pipeline
from gated.preadvice import PreadviceStore
from gated.publisher import MqttPublisher
from gated.settings import DriverContext
from gated.store import Store
from ocr.pool import OcrPool

if TYPE_CHECKING:
    from gated.console.app import Console
    from gated.console.server import ConsoleServer

log = logging.getLogger(__name__)

STALL_SECONDS = 15.0
"""A loop that has not turned for this long is stuck: the watchdog is no longer pinged."""


class Daemon:
    def __init__(self, config: GateConfig, *, clock: Clock | None = None) -> None:
        # gated run has checked already; the demo and tests hand over a config of their own.
        problems = device_problems(config, "config")
        if problems:
            raise ConfigError(problems)
        self.config = config
        self.clock: Clock = clock or SystemClock()
        storage = config.storage
        self.engine = open_engine(storage.database, password_file=storage.database_password_file)
        self.failover: FailoverStore | None = None
        self.replica: HoldReplica | None = None
        if storage.local_replica is not None:
            local_engine = open_engine(storage.local_replica)
            local = Store(local_engine, site=config.site, node=config.node, clock=self.clock)
            self.failover = FailoverStore(
                self.engine, local, site=config.site, node=config.node, clock=self.clock
            )
            self.store: Store = self.failover
            self.replica = HoldReplica(self.engine, local_engine, self.clock)
            self.replica.refresh()  # the whole list now: the replica is ready before any truck
            self.holds: HoldStore = FailoverHolds(
                self.engine, self.clock, HoldStore(local_engine, self.clock), self.failover
            )
        else:
            self.store = Store(self.engine, site=config.site, node=config.node, clock=self.clock)
            self.holds = HoldStore(self.engine, self.clock)
        self.boot = self.store.next_boot()
        self.metrics = Metrics()
        self.metrics_server: MetricsServer | None = None
        lane_ids = [lane.id for lane in config.lanes]
        self.ownership: LaneOwnership | None = None
        if config.cluster.lease_seconds is not None:
            leases = LaneLeases(
                self.engine, self.clock, node=config.node, lease_seconds=config.cluster.lease_seconds
            )
            self.ownership = LaneOwnership(
                leases, lane_ids, self.clock, on_taken=self._lane_taken, on_lost=self._lane_lost
            )
        self.pipeline = Pipeline(
            config,
            self.store,
            self.holds,
            self.clock,
            preadvice=PreadviceStore(
                self.engine,
                fallback=None if self.replica is None else PreadviceStore(self.replica.local),
            ),
            credentials=CancelledCardList(self.engine, self.clock),
            metrics=self.metrics,
            # With leases every lane waits for its lease; without, this node drives them all.
            standby=lane_ids if self.ownership is not None else (),
        )
        self.topics = topics = Topics(config.site)
        self.commands = HoldCommandWorker(
            self.holds, self.store, config.holds, topics, [lane.id for lane in config.lanes], self.clock
        )
        self.publisher = MqttPublisher(
            self.store,
            config.mqtt,
            topics=topics,
            boot=self.boot,
            subscriptions=[topics.holds_cmd],
            on_message=self._inbound,
            status_snapshot=self.pipeline.status_snapshot,
            max_pending_readings=config.storage.max_pending_readings,
            on_backlog_warning=lambda waiting, cap: self.pipeline.node_alarm(
                "backlog",
                f"{waiting} reading messages wait for the broker; beyond {cap} the oldest are dropped",
            ),
            on_link_alarm=lambda alarm, text: self.pipeline.node_alarm(alarm, text, severity="high"),
        )
        self.pipeline.on_stored = self.publisher.wake
        if self.failover is not None:
            self.failover.on_outage = self._shared_store
        self.commands.on_stored = self.publisher.wake
        self.pipeline.on_fatal = self.fatal
        self.pipeline.storage_listeners.append(self._on_storage)
        self.metrics.watch(
            DaemonState(self.pipeline, self.store, self.holds, self.publisher, self.commands, self.clock)
        )
        self.evidence = EvidenceStore(Path(config.storage.evidence))
        # OCR worker processes, one pool per engine, shared by every frames camera.
        self.ocr_pools: dict[str, OcrPool] = {}
        context = DriverContext(self.clock, self.evidence, self._ocr_pool)
        self.drivers: list[Driver] = [
            build_driver(lane.id, device, context)
            for lane in config.lanes
            for device in lane.devices
            if is_reader(device)
        ]
        # A visit opening on a lane (tag read, portal occupancy) is what its frames cameras read.
        for driver in self.drivers:
            if isinstance(driver, FramesCameraDriver):
                self.pipeline.visit_listeners.append(driver.visit_opened)
                # A decided visit's frames still waiting for OCR are not worth a worker's time.
                self.pipeline.listeners.append(driver.visit_decided)
                driver.metrics = self.metrics
        self.printers = [
            PassPrinter(
                self.pipeline,
                build_printer(lane.id, device, context),
                self.clock,
                device.places(),
                lane_ok=self.ownership.holds if self.ownership is not None else (lambda _lane: True),
            )
            for lane in config.lanes
            for device in lane.devices
            if isinstance(device, PrinterEscposDevice)
        ]
        self.barriers = BarrierControl(
            self.pipeline,
            {
                lane.id: (
                    build_barrier(lane.id, device, context),
                    device.lease_seconds,
                    device.release_window_seconds,
                )
                for lane in config.lanes
                for device in lane.devices
                if isinstance(device, BarrierModbusDevice)
            },
            self.clock,
            alive=self._pipeline_alive,
            lane_ok=self.ownership.holds if self.ownership is not None else (lambda _lane: True),
        )
        self.alerts = AlertDesk(self.engine, self.clock, config.alerts, site=config.site, node=config.node)
        self.store.alarm_listeners.append(self.alerts.changed)
        self.webhook: WebhookSender | None = None
        if config.alerts.webhook_url is not None:
            secret_file = config.alerts.webhook_secret_file
            secret = (
                None
                if secret_file is None
                else read_password_file(secret_file, "alerts.webhook_secret_file").encode()
            )
            self.webhook = WebhookSender(
                self.engine, self.clock, config.alerts, node=config.node, secret=secret
            )
        if self.ownership is not None:
            self.ownership.keep_through_outage = self.failover is not None
            for entry in self.barriers.lanes.values():
                entry.barrier.fenced_only = True  # a standby never writes to the lane's PLC
        self.anchor = AuditAnchor(self.engine, self.store, topics, config.node, on_stored=self.publisher.wake)
        self._anchor_thread: threading.Thread | None = None
        self._helper_threads: list[threading.Thread] = []
        self.console: ConsoleServer | None = None
        self.console_app: Console | None = None
        if config.console.listen is not None:
            self.console_app = self._console()
        self._stop = threading.Event()
        self._driver_stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pipeline_thread: threading.Thread | None = None
        self._commands_thread: threading.Thread | None = None
        self._stopped = False
        self.failed: str | None = None  # why the daemon must exit (an unexpected error), once set
        self._done = threading.Event()

    def _console(self) -> Console:
        from gated.console.app import Console
        from gated.console.board import LaneBoard
        from gated.users import Accounts

        board = LaneBoard(self.pipeline)
        self.pipeline.visit_listeners.append(board.visit_opened)
        self.pipeline.listeners.append(board.decided)
        self.pipeline.scan_listeners.append(board.scanned)
        for lane, entry in self.barriers.lanes.items():
            entry.barrier.on_state = _also(entry.barrier.on_state, partial(board.barrier, lane))
        settings = self.config.console
        return Console(
            Accounts(self.engine, self.clock),
            board,
            self.engine,
            secure_cookies=settings.tls_cert_file is not None,
            evidence_root=Path(self.config.storage.evidence),
            decisions=self.pipeline,
            alerts=self.alerts,
        )

    def _ocr_pool(self, engine: str) -> OcrPool:
        if engine not in self.ocr_pools:
            self.ocr_pools[engine] = OcrPool(engine, self.config.ocr.workers)
        return self.ocr_pools[engine]

    def _pipeline_alive(self) -> bool:
        return (
            self._pipeline_thread is not None
            and self._pipeline_thread.is_alive()
            and not self._stop.is_set()
            and self.failed is None
        )

    def _inbound(self, topic: str, payload: bytes) -> None:
        """An MQTT message for the node (on paho's thread: hand over and return)."""
        if topic == self.topics.holds_cmd:
            self.commands.offer(payload)

    def healthy(self) -> bool:
        """What the systemd watchdog is told: every part of the daemon works and keeps turning."""
        now = time.monotonic()
        return (
            self._pipeline_alive()
            and now - self.pipeline.beat < STALL_SECONDS
            and self._commands_thread is not None
            and self._commands_thread.is_alive()
            and now - self.commands.beat < STALL_SECONDS
            and self.publisher.alive(STALL_SECONDS)
            and all(thread.is_alive() for thread in self._threads)
        )

    def fatal(self, detail: str) -> None:
        """An unexpected error in a part the gate cannot decide without: close every lane (its
        retained status says so, an alarm goes out, the barriers lose their heartbeat and permits)
        and make ``run_forever`` exit non-zero, so the supervisor starts a fresh daemon."""
        if self.failed is not None:
            return
        self.failed = detail
        log.critical("closing every lane and exiting: %s", detail)
        for entry in self.barriers.lanes.values():
            entry.barrier.revoke(detail)
        self._close_lanes(
            f"gated failed: no automatic release ({detail})",
            "node_failure",
            f"gated failed and restarts: lane closed to automatic release: {detail}",
        )
        self._done.set()

    def _supervised(self, name: str, target: Callable[[threading.Event], None]) -> threading.Thread:
        def run() -> None:
            try:
                target(self._stop)
            except Exception as error:
                log.critical("%s failed: %r", name, error, exc_info=True)
                self.fatal(f"{name} failed: {error!r}")

        supervised = threading.Thread(target=run, name=name, daemon=True)
        supervised.start()
        return supervised

    def on_decision(self, listener: Callable[[Visit, list[Decision]], None]) -> None:
        self.pipeline.listeners.append(listener)

    def _on_storage(self, ok: bool, detail: str) -> None:
        """Storage failed: nothing can be stored, so say so directly (seq null) on every lane."""
        if not ok:
            self._close_lanes(
                f"storage failure: no automatic release ({detail})",
                "storage_failure",
                f"gated cannot store decisions: lane closed to automatic release: {detail}",
            )

    def _shared_store(self, down: bool, detail: str) -> None:
        if down:
            self.pipeline.node_alarm(
                "shared_store_down",
                f"the shared database is unreachable: deciding from the local hold replica, records kept "
                f"locally until it is back ({detail})",
                severity="high",
            )
        self.publisher.wake()

    def _lane_taken(self, lane: str, token: int) -> None:
        entry = self.barriers.lanes.get(lane)
        if entry is not None:
            entry.barrier.fence(token)
        self.pipeline.set_ownership(lane, True, f"lease taken, fencing token {token}")

    def _lane_lost(self, lane: str, why: str) -> None:
        self.pipeline.set_ownership(lane, False, why)
        entry = self.barriers.lanes.get(lane)
        if entry is not None:
            # No more writes at all: the new holder's token has withdrawn any permit already, and
            # without a holder the PLC closes when the heartbeats stop.
            entry.barrier.revoke(f"lane lost: {why}")
            entry.barrier.fence(None)

    def _close_lanes(self, reason: str, alarm: str, text: str) -> None:
        """Every lane's status ``closed`` and a high alarm, published directly (``seq`` null): sent
        when the daemon can no longer trust itself to store or decide."""
        now = self.clock.now()
        messages = []
        for lane in self.config.lanes:
            if lane.id in self.pipeline.standby:
                continue  # another node drives it and says how it is
            messages.append(lane_status_message(self.topics, lane.id, "closed", {}, reason, now))
            messages.append(
                alarm_message(self.topics, lane=lane.id, alarm=alarm, text=text, ts=now, severity="high")
            )
        self.publisher.publish_volatile(messages)
        # The officers' alerts too, if the database still takes them (a failing one will not).
        self.alerts.record_direct([m for m in messages if m.schema == ALARM])

    def start(self) -> None:
        log.info(
            "gated node %s of site %s starting (boot %d), %d lanes, %d devices",
            self.config.node,
            self.config.site,
            self.boot,
            len(self.config.lanes),
            len(self.drivers),
        )
        if self.config.metrics.listen is not None:
            # First: an address that cannot be bound stops the start before anything runs.
            self.metrics_server = MetricsServer(self.metrics.registry, self.config.metrics.listen)
        if self.console_app is not None and self.config.console.listen is not None:
            from gated.config import listen_address
            from gated.console.server import ConsoleServer

            host, port = listen_address(self.config.console.listen)
            settings = self.config.console
            self.console = ConsoleServer(
                self.console_app.app,
                host,
                port,
                cert_file=settings.tls_cert_file,
                key_file=settings.tls_key_file,
            )
            self.console.start()
        for pool in self.ocr_pools.values():
            pool.start()  # the workers load their engine while the rest starts
        self.pipeline.recover()
        self.publisher.start()
        self._pipeline_thread = self._supervised("gated-pipeline", self.pipeline.run)
        self._commands_thread = self._supervised("gated-hold-commands", self.commands.run)
        anchor = threading.Thread(
            target=self.anchor.run, args=(self._stop,), name="audit-anchor", daemon=True
        )
        anchor.start()
        self._anchor_thread = anchor
        # Alerts and the webhook: not needed to decide, so a failure there is logged, never fatal.
        helpers: list[tuple[str, Callable[[threading.Event], None]]] = [("alerts", self.alerts.run)]
        if self.webhook is not None:
            helpers.append(("alerts-webhook", self.webhook.run))
        if self.ownership is not None:
            helpers.append(("lane-ownership", self.ownership.run))
        if self.failover is not None and self.replica is not None:
            helpers.append(("store-catch-up", self.failover.run))
            helpers.append(("holds-replica", self.replica.run))
        for name, target in helpers:
            helper = threading.Thread(target=target, args=(self._stop,), name=name, daemon=True)
            helper.start()
            self._helper_threads.append(helper)
        for driver in self.drivers:
            thread = threading.Thread(
                target=driver.run,
                args=(self.pipeline, self._driver_stop),
                name=f"driver-{driver.lane}-{driver.device}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        self.barriers.start()
        for printer in self.printers:
            printer.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop in order; safe to call more than once."""
        if self._stopped:
            return
        self._stopped = True
        self.barriers.stop()
        for printer in self.printers:
            printer.stop()
        self._driver_stop.set()
        for thread in self._threads:
            thread.join(timeout)
        for pool in self.ocr_pools.values():
            pool.close()
        self._stop.set()
        self.alerts.wake.set()
        for worker in (
            self._pipeline_thread,
            self._commands_thread,
            self._anchor_thread,
            *self._helper_threads,
        ):
            if worker is not None:
                worker.join(timeout)
        if self.ownership is not None:
            self.ownership.release_all()  # after the open visits are decided: a standby goes on
        self.publisher.stop(graceful_offline=True, timeout=timeout)
        if self.metrics_server is not None:
            self.metrics_server.close()
        if self.console is not None:
            self.console.stop()
        self.engine.dispose()

    def run_forever(self) -> int:
        """``gated run``: until SIGTERM or SIGINT (exit 0) or an unexpected error (exit 1); tells
        systemd when ready (Type=notify) and pings its watchdog only while ``healthy``."""

        def _signal(signum: int, _frame: FrameType | None) -> None:
            log.info("signal %d: stopping", signum)
            self._done.set()

        signal.signal(signal.SIGTERM, _signal)
        signal.signal(signal.SIGINT, _signal)
        self.start()
        self.publisher.wait_connected(10.0)
        sd_notify("READY=1")
        interval = watchdog_interval()
        next_ping = time.monotonic() + interval
        # Woken every second: a SIGTERM the kernel gave another thread (it does when the main thread
        # cannot take it, e.g. right after SIGCONT) is only handled when the main thread runs again.
        while not self._done.wait(1.0):
            if interval and time.monotonic() >= next_ping:
                next_ping = time.monotonic() + interval
                if self.healthy():
                    sd_notify("WATCHDOG=1")
                else:
                    log.error("not healthy: the systemd watchdog is not pinged")
        sd_notify("STOPPING=1")
        if self.failed is not None:
            time.sleep(1.0)  # the closed lanes and the alarm leave before the connection does
        self.stop()
        return 1 if self.failed is not None else 0


def watchdog_interval() -> float:
    """Half the systemd watchdog's timeout (``WATCHDOG_USEC``), or 0 when there is none."""
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", "0"))
    except ValueError:
        return 0.0
    return usec / 2e6 if usec > 0 else 0.0


def sd_notify(state: str) -> None:
    """Tell systemd our state when started with Type=notify; a no-op otherwise."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as error:
        log.warning("cannot notify systemd: %s", error)


def _also(
    first: Callable[[BarrierState], None] | None, then: Callable[[BarrierState], None]
) -> Callable[[BarrierState], None]:
    """``first`` (when set) and then ``then``, each called with the same state."""

    def both(value: BarrierState) -> None:
        if first is not None:
            first(value)
        then(value)

    return both

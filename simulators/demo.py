"""`gated demo`: a whole gate on one machine with nothing installed beyond the project.

An embedded MQTT broker (or an external one with ``--broker``), the simulators of N lanes on real
transports (the RFID reader on a pty, the radiation portal monitor on Modbus TCP, an IP camera
streaming MJPEG over HTTP whose frames gated reads with its own OCR), the real daemon, and scripted
trucks that cover the four outcomes: a clean container, held containers (by number and by bill of
lading), a radiation alarm, and a number nobody can read.

OCR takes about half a second a frame on a 2-core PC, so the demo's cameras read two frames per
truck, in the OCR pool every lane shares (one worker per core, each on one core).
Each truck waits at the barrier for its own decision (told apart by its tag), so the trucks keep
the pace OCR allows rather than leave while their frames are still being read.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import multiprocessing.forkserver
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlparse

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gated.broker import EmbeddedBroker
from gated.config import MqttConfig, validate
from gated.daemon import Daemon
from gated.errors import ConfigError, GatedError
from gated.holds import HoldStore, holds_digest
from gated.holds_send import make_command, send_commands
from gated.iso6346 import check_digit
from gated.model import Decision, Source, Visit
from gated.signing import generate_private_key_file, load_private_key, public_key_text
from gated.users import Role
from simulators.barrier_plc import BarrierPlcSimulator
from simulators.lane import (
    ContainerSighting,
    LaneDevices,
    ScriptedLane,
    Truck,
    stop_all,
    truck_frames,
    truck_front_frames,
)
from simulators.lane_camera import LaneCamera
from simulators.rfid_serial import SerialRfidSimulator
from simulators.rpm_modbus import ModbusRpmSimulator

log = logging.getLogger(__name__)

PROFILE = Path(__file__).resolve().parent.parent / "config" / "profiles" / "rpm-modbus.toml"
HELD_BL = "MAEU240512345"
CUSTOMS_KEY_ID = "demo-customs"
HEARTBEAT_SECONDS = 60.0
OCR_WAIT_SECONDS = 60.0
OCR_READY_SECONDS = 120.0
"""How long the demo waits for the OCR workers to load their engine before the first truck."""


def numbered(first_ten: str) -> str:
    """A container number with its ISO 6346 check digit."""
    return f"{first_ten}{check_digit(first_ten)}"


def demo_trucks(lane_index: int) -> list[Truck]:
    """The script: every lane cycles through the four outcomes (numbers differ per lane)."""
    base = 100_000 + lane_index * 10_000
    clean = numbered(f"MSKU{base + 1:06d}")
    held = numbered(f"TGHU{base + 2:06d}")
    on_held_bl = numbered(f"CSQU{base + 3:06d}")
    hot = numbered(f"HLXU{base + 4:06d}")
    trucks = [
        Truck(
            "clean container",
            f"e2801160600002{lane_index:02d}0001",
            (ContainerSighting(clean),),
        ),
        Truck(
            "container on the hold list",
            f"e2801160600002{lane_index:02d}0002",
            (ContainerSighting(held, size_type="42G1"),),
        ),
        Truck(
            "radiation alarm",
            f"e2801160600002{lane_index:02d}0003",
            (ContainerSighting(hot),),
            radiation="gamma",
        ),
        Truck(
            "unreadable number",
            f"e2801160600002{lane_index:02d}0004",
            (ContainerSighting("M?K 4#", confidence=0.21, size_type=None),),
        ),
        Truck(
            "two 20 ft boxes, one on a held bill of lading",
            f"e2801160600002{lane_index:02d}0005",
            (ContainerSighting(numbered(f"MSKU{base + 5:06d}")), ContainerSighting(on_held_bl)),
        ),
    ]
    # Each truck's front carries its plate, read by the lane's plate camera (us-style: ABC 1234).
    fleet = "ABCDEFGH"[lane_index]
    return [
        replace(truck, plate=f"GT{fleet} {lane_index + 1}{number:03d}")
        for number, truck in enumerate(trucks, start=1)
    ]


def _import_manifest(holds: HoldStore, lanes: int, data_dir: Path) -> None:
    """The shipping line's manifest, imported by the operator: which box carries the held B/L."""
    manifest = data_dir / "manifest.csv"
    rows = ["container,bill_of_lading"]
    rows.extend(f"{demo_trucks(index)[4].containers[1].code},{HELD_BL}" for index in range(lanes))
    manifest.write_text("\n".join(rows) + "\n", encoding="utf-8")
    holds.import_manifest(manifest, actor="operator:demo", reason="the demo line's manifest")


def _customs_key(data_dir: Path) -> tuple[Ed25519PrivateKey, str]:
    """The demo customs system's signing key (made once per data folder) and its public half."""
    path = data_dir / f"{CUSTOMS_KEY_ID}.key"
    if not path.exists():
        generate_private_key_file(path)
    key = load_private_key(path)
    return key, public_key_text(key.public_key())


def _customs_holds(lanes: int) -> list[dict[str, Any]]:
    """What the demo's customs holds: a box per lane for a VACIS exam, and one bill of lading.
    Fixed command ids, so a demo run again on the same data folder places nothing twice."""
    commands = [
        make_command(
            "place",
            container=demo_trucks(index)[1].containers[0].code,
            agency="CBP",
            hold_type="vacis",
            code="1H",
            reference="DEMO-EXAM-1",
            note="selected for a VACIS exam",
            command_id=f"demo-exam-lane-{index + 1}",
        )
        for index in range(lanes)
    ]
    commands.append(
        make_command(
            "place",
            bill_of_lading=HELD_BL,
            agency="CBP",
            hold_type="customs",
            code="1H",
            reference="DEMO-BL-1",
            note="B/L held pending documents",
            command_id="demo-bl-hold",
        )
    )
    return commands


class _Customs:
    """The demo's customs system: signs its holds and a sync (its heartbeat) and sends them."""

    def __init__(self, broker: MqttConfig, lanes: int, key: Ed25519PrivateKey) -> None:
        self.broker, self.key = broker, key
        self.holds = _customs_holds(lanes)

    def send(self, commands: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
        return send_commands(self.broker, "demo", commands, self.key, CUSTOMS_KEY_ID, timeout=20.0)

    def sync(self) -> dict[str, Any] | None:
        """Customs' statement of its whole list: how many holds, and their digest (so a lost place
        and a lost release cannot cancel out)."""
        active = [
            (hold.get("container"), hold.get("bill_of_lading"), str(hold["hold_type"])) for hold in self.holds
        ]
        digest = holds_digest(active)
        return self.send([make_command("sync", agency="CBP", count=len(self.holds), digest=digest)])[0]

    def heartbeat(self, stop: threading.Event) -> None:
        while not stop.wait(HEARTBEAT_SECONDS):
            try:
                ack = self.sync()
            except GatedError as error:
                log.warning("demo customs: sync not sent: %s", error)
                continue
            if ack is None or not ack.get("applied"):
                print(f"customs: sync not applied: {ack and ack.get('reason')}", flush=True)


def _print_decision(visit: Visit, decisions: list[Decision]) -> None:
    stamp = time.strftime("%H:%M:%S")
    for decision in decisions:
        reasons = "; ".join(f"{r.code}: {r.text}" for r in decision.reasons)
        number = decision.container or "(unread)"
        print(f"{stamp} {decision.lane:<7} {number:<12} {decision.outcome:<21} {reasons}", flush=True)


def _workers_ignore_ctrl_c() -> None:
    """Start the fork server the OCR pool's workers come from (``ocr.pool``) with Ctrl-C ignored.

    A Ctrl-C at the terminal reaches every process of the demo. A worker it interrupts dies
    mid-read; the pool then starts another and waits for it to load its engine before it can
    stop (seconds). Workers forked from a server started this way ignore Ctrl-C and leave
    stopping to the demo."""
    if threading.current_thread() is not threading.main_thread():
        return
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, previous)


DEFAULT_CONSOLE_PORT = 8080
DEMO_ACCOUNTS = {
    Role.OPERATOR: ("operator", "operator-demo"),
    Role.SUPERVISOR: ("supervisor", "supervisor-demo"),
}
"""The demo's console accounts (printed at start; a lab's, never a real gate's)."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _demo_accounts(daemon: Daemon) -> None:
    """The demo's accounts, with their printed passwords (again, when a --data-dir is reused)."""
    from gated.users import Accounts

    accounts = Accounts(daemon.engine, daemon.clock)
    for role, (username, password) in DEMO_ACCOUNTS.items():
        known = accounts.get(username)
        if known is None:
            accounts.add(username, role, password, actor="gated:demo")
        else:
            accounts.passwd(username, password, actor="gated:demo")
            if known.locked(accounts.clock.now()):
                accounts.unlock(username, actor="gated:demo")


def run_demo(
    *,
    lanes: int = 2,
    duration: float | None = None,
    mqtt_port: int = 1883,
    broker: str | None = None,
    data_dir: str | None = None,
    console_port: int = DEFAULT_CONSOLE_PORT,
) -> int:
    if not 1 <= lanes <= 8:
        raise ConfigError([f"--lanes: {lanes} is not between 1 and 8"])
    if logging.getLogger().getEffectiveLevel() >= logging.INFO:
        # The demo's own lines tell the story; the daemon's routine log lines would drown them.
        for name in ("gated", "drivers", "ocr", "simulators"):
            logging.getLogger(name).setLevel(logging.WARNING)
    _workers_ignore_ctrl_c()
    folder = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="gated-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    embedded: EmbeddedBroker | None = None
    if broker:
        url = urlparse(broker)
        if url.scheme != "mqtt" or not url.hostname:
            raise ConfigError([f"--broker: {broker!r} is not mqtt://host:port"])
        host, port = url.hostname, url.port or 1883
    else:
        host, port = "127.0.0.1", mqtt_port
        embedded = EmbeddedBroker(host, port)
        embedded.start()
    # The demo is a lab: an external broker may be reached in clear text; the embedded one speaks 3.1.1.
    broker_settings: dict[str, Any] = {"host": host, "port": port, "keepalive": 15, "lab_cleartext": True}
    if embedded is not None:
        broker_settings["protocol"] = "3.1.1"

    stop = threading.Event()
    interrupted = threading.Event()  # Ctrl-C: no truck finishes its pass, nothing is waited for
    devices: list[LaneDevices] = []
    daemon: Daemon | None = None
    customs_key, customs_public_key = _customs_key(folder)
    try:
        cameras: list[tuple[LaneCamera, LaneCamera]] = []
        for index in range(lanes):
            camera, plate_camera = LaneCamera(seed=index), LaneCamera(seed=100 + index)
            lane_devices = LaneDevices(
                SerialRfidSimulator(),
                ModbusRpmSimulator(port=0),
                camera,
                BarrierPlcSimulator(),
                plate_camera=plate_camera,
            )
            lane_devices.start()
            camera.prepare(truck_frames(truck) for truck in demo_trucks(index))
            plate_camera.prepare(truck_front_frames(truck) for truck in demo_trucks(index))
            devices.append(lane_devices)
            cameras.append((camera, plate_camera))
        config = validate(
            {
                "site": "demo",
                "node": "demo-gate",
                "mqtt": broker_settings,
                "storage": {"database": str(folder / "gated.db"), "evidence": str(folder / "evidence")},
                "console": {"listen": f"127.0.0.1:{console_port or _free_port()}"},
                "holds": {
                    "max_age_seconds": 300,
                    "customs_keys": [
                        {"id": CUSTOMS_KEY_ID, "public_key": customs_public_key, "agencies": ["CBP"]}
                    ],
                },
                "lanes": [
                    {
                        "id": f"lane-{index + 1}",
                        "require": ["rfid", "ocr", "rpm"],
                        "settle_seconds": 0.5,
                        "visit_timeout_seconds": 20.0,
                        # A truck whose frames a busy PC is still reading when the next one comes
                        # waits for its number this long, rather than go to a clerk unread.
                        "ocr_wait_seconds": OCR_WAIT_SECONDS,
                        "devices": [
                            {"id": "rfid-1", "driver": "rfid-serial", "url": lane.rfid.device_path},
                            {
                                "id": "rpm-1",
                                "driver": "rpm-modbus",
                                "host": "127.0.0.1",
                                "port": lane.rpm.port,
                                "profile": str(PROFILE),
                            },
                            {
                                "id": "ocr-1",
                                "driver": "ocr-frames",
                                "views": [camera.url],
                                "plate_views": [plate_camera.url],
                                "pre_trigger_seconds": 0.5,
                                "post_trigger_seconds": 1.0,
                                "frames_per_view": 2,
                            },
                            {
                                "id": "barrier-1",
                                "driver": "barrier-modbus",
                                "host": "127.0.0.1",
                                "port": lane.barrier.port if lane.barrier else 0,
                                "lease_seconds": 10.0,
                                # OCR on a busy 2-core PC may take several seconds after the frames.
                                "release_window_seconds": 20.0,
                            },
                        ],
                    }
                    for index, (lane, (camera, plate_camera)) in enumerate(zip(devices, cameras, strict=True))
                ],
            },
            source="demo",
        )
        daemon = Daemon(config)
        _import_manifest(daemon.holds, lanes, folder)
        _demo_accounts(daemon)
        daemon.on_decision(_print_decision)
        # This run's decisions: a reused --data-dir holds earlier runs' too.
        outcomes: Counter[str] = Counter()
        daemon.on_decision(lambda _visit, made: outcomes.update(str(d.outcome) for d in made))
        # Each lane's trucks wait at the barrier until the lane's decision is out (OCR takes time).
        decided = {f"lane-{index + 1}": threading.Event() for index in range(lanes)}
        # The truck at the barrier, by its tag: an older truck's late decision must not send it on.
        at_barrier: dict[str, str | None] = dict.fromkeys(decided)

        def truck_decided(visit: Visit, _decisions: list[Decision]) -> None:
            if at_barrier[visit.lane] in {r.value for r in visit.of_source(Source.EPC)}:
                decided[visit.lane].set()

        daemon.on_decision(truck_decided)
        daemon.start()
        _wait_for_ocr(daemon)
        if not daemon.publisher.wait_connected(15):
            print(f"gated demo: MQTT broker {host}:{port} is not answering", file=sys.stderr)
            return 1
        print(
            f"gated demo: {lanes} lanes, broker mqtt://{host}:{port} "
            f"({'embedded' if embedded else 'external'}), database {folder / 'gated.db'}",
            flush=True,
        )
        print(f"  watch the traffic: mosquitto_sub -h {host} -p {port} -t 'gated/#' -v", flush=True)
        if daemon.console is not None:
            print(f"  operator console: {daemon.console.url}", flush=True)
            for username, password in DEMO_ACCOUNTS.values():
                print(f"  login: {username} / {password}", flush=True)
        # Customs places its holds and confirms the list with signed commands, as a real one would.
        customs = _Customs(config.mqtt, lanes, customs_key)
        acks = [*customs.send(customs.holds), customs.sync()]
        refused = [
            ack.get("reason") if ack else "no answer" for ack in acks if not (ack and ack.get("applied"))
        ]
        if refused:
            print(f"gated demo: customs' signed commands were not applied: {refused}", file=sys.stderr)
            return 1
        # Fixed command ids: on a reused --data-dir, gated answers "already applied" and adds nothing.
        again = all(ack and ack.get("duplicate") for ack in acks[: len(customs.holds)])
        placed = "already in place from an earlier run" if again else "placed"
        print(
            f"  customs: {len(customs.holds)} holds {placed} and the hold list confirmed by commands signed "
            f"with key {CUSTOMS_KEY_ID} ({folder / (CUSTOMS_KEY_ID + '.key')}); a signed sync every "
            f"{HEARTBEAT_SECONDS:.0f} s keeps it fresh",
            flush=True,
        )
        threading.Thread(target=customs.heartbeat, args=(stop,), name="demo-customs", daemon=True).start()
        print(f"{'time':<8} {'lane':<7} {'container':<12} {'outcome':<21} reasons", flush=True)

        def _signal(_signum: int, _frame: FrameType | None) -> None:
            interrupted.set()
            stop.set()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, _signal)
            signal.signal(signal.SIGTERM, _signal)
        time.sleep(1.0)  # let every driver connect before the first truck
        drivers = [
            threading.Thread(
                target=_drive_lane,
                args=(
                    f"lane-{index + 1}",
                    ScriptedLane(lane, decided=decided[f"lane-{index + 1}"]),
                    demo_trucks(index),
                    at_barrier,
                    stop,
                    interrupted,
                ),
                daemon=True,
            )
            for index, lane in enumerate(devices)
        ]
        for thread in drivers:
            thread.start()
        deadline = None if duration is None else time.monotonic() + duration
        while not stop.wait(0.5):
            if daemon.failed is not None:
                print(f"gated demo: gated failed: {daemon.failed}", file=sys.stderr)
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
        stop.set()
        for thread in drivers:
            thread.join(10)
        if not interrupted.is_set():
            interrupted.wait(1.5)  # let the last visits settle and be decided
        stopped = threading.Event()
        if interrupted.is_set():
            threading.Thread(target=_end_ocr_workers, args=(stopped,), daemon=True).start()
        daemon.stop()
        stopped.set()
        summary = ", ".join(f"{outcome} {count}" for outcome, count in sorted(outcomes.items())) or "none"
        print(f"gated demo: done; decisions: {summary}", flush=True)
        return 1 if daemon.failed is not None else 0
    finally:
        if daemon is not None:
            daemon.stop()
        stop_all([device for lane in devices for device in lane.all()])
        if embedded is not None:
            embedded.stop()


def _wait_for_ocr(daemon: Daemon) -> None:
    """Until every OCR pool has a worker with its engine loaded (seconds on a busy PC): the first
    trucks' frames would otherwise wait for it and keep the first decisions back."""
    for engine, pool in daemon.ocr_pools.items():
        try:
            pool.ping().result(timeout=OCR_READY_SECONDS)
        except (GatedError, OSError, TimeoutError, BrokenProcessPool) as error:
            # The lanes still run: their cameras report the engine's failure, and trucks go to a clerk.
            print(f"gated demo: OCR engine {engine} not ready: {error}", file=sys.stderr, flush=True)


def _end_ocr_workers(stopped: threading.Event) -> None:
    """After Ctrl-C: end the OCR workers (the demo's only child processes) until gated has stopped.

    A frame being read may take seconds on a busy PC, and gated's stop waits for it; nobody wants
    that reading any more. The pool reports the workers' end as a fault: it is expected here."""
    if logging.getLogger("ocr").getEffectiveLevel() >= logging.WARNING:
        logging.getLogger("ocr").setLevel(logging.CRITICAL)
    while not stopped.is_set():
        for child in multiprocessing.active_children():
            child.terminate()
        stopped.wait(0.1)


def _drive_lane(
    name: str,
    lane: ScriptedLane,
    trucks: list[Truck],
    at_barrier: dict[str, str | None],
    stop: threading.Event,
    interrupted: threading.Event,
) -> None:
    # At the end of --duration a truck that has started its pass finishes it; Ctrl-C cuts it short.
    for truck in itertools.cycle(trucks):
        if stop.is_set():
            return
        at_barrier[name] = truck.tag
        if lane.drive(truck, interrupted):
            print(f"{time.strftime('%H:%M:%S')} {name:<7} barrier opened, truck drove through", flush=True)
        if stop.wait(1.5):
            return
